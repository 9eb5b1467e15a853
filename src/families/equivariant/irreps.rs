//! Irreducible representations of O(3) in e3nn's notation: `"128x0e+64x1o+32x2e"`.
//!
//! An [`Irrep`] is a degree `l` and a parity (`e` even, `o` odd); an [`Irreps`] is a list of
//! `(mul, irrep)` blocks. Data laid out "mul_ir" stores each block as a row-major
//! `[mul, 2l+1]` matrix (m = −l..l), blocks one after another.

use std::fmt;
use std::str::FromStr;

use crate::core::error::Error;

/// Why an irreps string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IrrepsError {
    /// A block is empty (`"0e++1o"`, a trailing `+`).
    #[error("empty block in {0:?}")]
    EmptyBlock(String),
    /// The multiplicity before `x` is not a non-negative integer.
    #[error("bad multiplicity {mul:?} in {text:?}")]
    BadMultiplicity {
        /// The offending multiplicity.
        mul: String,
        /// The whole string.
        text: String,
    },
    /// The irrep is not `<l><e|o|y>` with `l` a non-negative integer.
    #[error("bad irrep {irrep:?} in {text:?}: expected <l><e|o|y>, e.g. 2e")]
    BadIrrep {
        /// The offending irrep.
        irrep: String,
        /// The whole string.
        text: String,
    },
}

impl From<IrrepsError> for Error {
    fn from(e: IrrepsError) -> Self {
        Error::InvalidValue { arg: "irreps", reason: e.to_string() }
    }
}

/// Parity: how an irrep transforms under inversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Parity {
    /// −1 (`o`); ordered before even, as e3nn's `(l, p)` tuples are.
    Odd,
    /// +1 (`e`).
    Even,
}

impl Parity {
    /// ±1.
    pub const fn sign(self) -> i32 {
        match self {
            Parity::Even => 1,
            Parity::Odd => -1,
        }
    }

    /// The parity of a product.
    pub const fn mul(self, other: Parity) -> Parity {
        if self.sign() * other.sign() == 1 { Parity::Even } else { Parity::Odd }
    }

    /// The parity of the spherical harmonics of degree `l`: (−1)^l.
    pub const fn of_sh(l: u32) -> Parity {
        if l % 2 == 0 { Parity::Even } else { Parity::Odd }
    }
}

/// One irreducible representation of O(3): degree `l`, parity `p`. Ordered as e3nn orders
/// them, by `(l, p)` with odd before even.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Irrep {
    /// The degree.
    pub l: u32,
    /// The parity.
    pub p: Parity,
}

impl Irrep {
    /// `l` with parity `p`.
    pub const fn new(l: u32, p: Parity) -> Irrep {
        Irrep { l, p }
    }

    /// 2l + 1.
    pub const fn dim(self) -> usize {
        2 * self.l as usize + 1
    }

    /// True when `out` appears in `self ⊗ other`: |l1 − l2| ≤ l ≤ l1 + l2, p = p1·p2.
    pub fn couples_to(self, other: Irrep, out: Irrep) -> bool {
        self.l.abs_diff(other.l) <= out.l && out.l <= self.l + other.l && out.p == self.p.mul(other.p)
    }

    fn parse(text: &str, whole: &str) -> Result<Irrep, IrrepsError> {
        let bad = || IrrepsError::BadIrrep { irrep: text.to_string(), text: whole.to_string() };
        let last = text.chars().last().ok_or_else(bad)?;
        let digits = &text[..text.len() - last.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let l: u32 = digits.parse().map_err(|_| bad())?;
        let p = match last {
            'e' => Parity::Even,
            'o' => Parity::Odd,
            'y' => Parity::of_sh(l),
            _ => return Err(bad()),
        };
        Ok(Irrep { l, p })
    }
}

impl fmt::Display for Irrep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.l, if self.p == Parity::Even { 'e' } else { 'o' })
    }
}

impl FromStr for Irrep {
    type Err = IrrepsError;
    fn from_str(s: &str) -> Result<Irrep, IrrepsError> {
        Irrep::parse(s.trim(), s)
    }
}

/// `mul` copies of one irrep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MulIr {
    /// The multiplicity (may be 0).
    pub mul: usize,
    /// The irrep.
    pub ir: Irrep,
}

impl MulIr {
    /// mul·(2l+1).
    pub const fn dim(self) -> usize {
        self.mul * self.ir.dim()
    }
}

impl fmt::Display for MulIr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.mul, self.ir)
    }
}

/// A direct sum of irreps, in order: e3nn's `Irreps`.
///
/// ```
/// use kiln::equivariant::Irreps;
///
/// let irreps: Irreps = "128x0e+64x1o+32x2e".parse()?;
/// assert_eq!(irreps.dim(), 128 + 64 * 3 + 32 * 5);
/// assert_eq!(irreps.offsets(), vec![0, 128, 320, 480]);
/// assert_eq!(irreps.to_string(), "128x0e+64x1o+32x2e");
/// # Ok::<(), kiln::equivariant::IrrepsError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Irreps(pub Vec<MulIr>);

/// What [`Irreps::sort`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sorted {
    /// The blocks sorted by irrep (stable: equal irreps keep their order).
    pub irreps: Irreps,
    /// `p[i]`: where block `i` of the original went.
    pub p: Vec<usize>,
    /// `inv[j]`: which original block is block `j` of the sorted list.
    pub inv: Vec<usize>,
}

impl Irreps {
    /// The blocks.
    pub fn blocks(&self) -> &[MulIr] {
        &self.0
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Σ mul·(2l+1).
    pub fn dim(&self) -> usize {
        self.0.iter().map(|b| b.dim()).sum()
    }

    /// Σ mul.
    pub fn num_irreps(&self) -> usize {
        self.0.iter().map(|b| b.mul).sum()
    }

    /// The largest l (None for no blocks).
    pub fn lmax(&self) -> Option<u32> {
        self.0.iter().map(|b| b.ir.l).max()
    }

    /// The start of each block and, last, the total dimension: block i is
    /// `offsets[i]..offsets[i+1]`.
    pub fn offsets(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut at = 0;
        out.push(0);
        for b in &self.0 {
            at += b.dim();
            out.push(at);
        }
        out
    }

    /// The index range of each block (e3nn's `slices()`).
    pub fn slices(&self) -> Vec<std::ops::Range<usize>> {
        self.offsets().windows(2).map(|w| w[0]..w[1]).collect()
    }

    /// The spherical harmonics 0..=lmax with parity `p^l` (p odd: 1x0e+1x1o+1x2e+…).
    pub fn spherical_harmonics(lmax: u32, p: Parity) -> Irreps {
        Irreps(
            (0..=lmax)
                .map(|l| {
                    let parity = if p == Parity::Odd { Parity::of_sh(l) } else { Parity::Even };
                    MulIr { mul: 1, ir: Irrep::new(l, parity) }
                })
                .collect(),
        )
    }

    /// Merge neighbouring blocks of the same irrep and drop empty ones (no sorting, as e3nn).
    pub fn simplify(&self) -> Irreps {
        let mut out: Vec<MulIr> = Vec::new();
        for b in &self.0 {
            match out.last_mut() {
                Some(last) if last.ir == b.ir => last.mul += b.mul,
                _ if b.mul > 0 => out.push(*b),
                _ => {}
            }
        }
        Irreps(out)
    }

    /// Drop blocks of multiplicity 0.
    pub fn remove_zero_multiplicities(&self) -> Irreps {
        Irreps(self.0.iter().copied().filter(|b| b.mul > 0).collect())
    }

    /// Sort the blocks by irrep, stably, with the permutation (e3nn's `sort()`).
    pub fn sort(&self) -> Sorted {
        let mut inv: Vec<usize> = (0..self.0.len()).collect();
        inv.sort_by_key(|&i| (self.0[i].ir, i));
        let mut p = vec![0; inv.len()];
        for (j, &i) in inv.iter().enumerate() {
            p[i] = j;
        }
        let irreps = Irreps(inv.iter().map(|&i| self.0[i]).collect());
        Sorted { irreps, p, inv }
    }
}

impl fmt::Display for Irreps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

impl FromStr for Irreps {
    type Err = IrrepsError;

    /// e3nn's grammar: blocks joined by `+`, each `<mul>x<l><e|o|y>` or `<l><e|o|y>` (mul 1),
    /// spaces around blocks and around `x` allowed; the empty string is no blocks.
    fn from_str(s: &str) -> Result<Irreps, IrrepsError> {
        if s.trim().is_empty() {
            return Ok(Irreps::default());
        }
        let mut blocks = Vec::new();
        for part in s.split('+') {
            let part = part.trim();
            if part.is_empty() {
                return Err(IrrepsError::EmptyBlock(s.to_string()));
            }
            let (mul, ir) = match part.split_once('x') {
                Some((mul, ir)) => {
                    let (mul, ir) = (mul.trim(), ir.trim());
                    let bad = || IrrepsError::BadMultiplicity { mul: mul.to_string(), text: s.to_string() };
                    if mul.is_empty() || !mul.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    (mul.parse::<usize>().map_err(|_| bad())?, ir)
                }
                None => (1, part),
            };
            blocks.push(MulIr { mul, ir: Irrep::parse(ir, s)? });
        }
        Ok(Irreps(blocks))
    }
}
