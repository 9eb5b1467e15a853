//! Storage dtypes. Kernels compute in f32 whatever the 32- or 16-bit floating storage, and in
//! f64 for f64 storage (the equivariant family only); references in f64. Integer dtypes carry
//! indices, lengths and masks.

use std::fmt;

/// The storage type of a tensor's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (`half::f16`).
    F16,
    /// bfloat16 (`half::bf16`).
    BF16,
    /// IEEE binary64: the equivariant family only (f64 storage, f64 math), for checks that
    /// need more than f32 resolves (finite differences, force-field Hessians). Every other
    /// family rejects it with its typed dtype error.
    F64,
    /// 32-bit signed integers (indices, sequence lengths, masks).
    I32,
    /// Bytes (boolean masks: nonzero is true).
    U8,
}

impl DType {
    /// The floating storage dtypes every family runs in, in the order the CLI lists them
    /// (f64, which only the equivariant family takes, is not among them).
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
    /// Every dtype.
    pub const ALL: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::F64, DType::I32, DType::U8];

    /// True for f32, f16 and bf16: the floating storage every family takes (not f64).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// True for every floating storage, f64 included.
    pub const fn is_floating(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Bytes per element.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// The short name used by the CLI and in file names (`f32`, `f16`, `bf16`, `f64`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }

    /// Parses a short name (`f32`, `f16`, `bf16`, `f64`, `i32`, `u8`).
    pub fn parse(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Elementwise tolerance (rtol, atol) against an f64 reference computed from the
    /// already-rounded inputs (DESIGN.md, testing rule 3); integers must match exactly.
    pub const fn tolerance(self) -> (f64, f64) {
        match self {
            DType::F32 => (1.3e-6, 1e-5),
            DType::F16 => (1e-3, 1e-5),
            DType::BF16 => (1.6e-2, 1e-5),
            // An f64 kernel against the f64 reference: both round every operation at 2^-53,
            // so they differ by the reassociation of sums of a few hundred terms at most
            // (~1e-14 relative); rtol 1e-12 leaves two orders of margin and still fails at
            // any f32 step inside the kernel (≥ 6e-8). The atol covers the cancellation of
            // terms of size ~1 whose exact sum is 0 (a few hundred ulps of 1).
            DType::F64 => (1e-12, 1e-13),
            DType::I32 | DType::U8 => (0.0, 0.0),
        }
    }

    /// Unit roundoff of the storage format (half an ulp at 1).
    pub const fn unit_roundoff(self) -> f64 {
        match self {
            DType::F32 => 5.960464477539063e-8,
            DType::F16 => 4.8828125e-4,
            DType::BF16 => 3.90625e-3,
            DType::F64 => 1.1102230246251565e-16,
            DType::I32 | DType::U8 => 0.0,
        }
    }

    /// Storage dtypes of the families with f64 kernels (equivariant): [`DType::FLOATS`] and f64.
    pub const FLOATS_AND_F64: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::F64];

    /// Unit roundoff of the type kernels compute in for this storage: f32's for f32, f16 and
    /// bf16 storage, f64's for f64.
    pub const fn compute_roundoff(self) -> f64 {
        match self {
            DType::F64 => DType::F64.unit_roundoff(),
            _ => DType::F32.unit_roundoff(),
        }
    }

    /// Rounds an f64 to the type kernels compute in for this storage (f32, or f64 for f64):
    /// one f64 operation on such values followed by this rounding gives the f32 operation's
    /// result exactly (+, −, ×, ÷: 53 ≥ 2·24 + 2 bits), so naive yardsticks are written once.
    pub fn round_compute(self, v: f64) -> f64 {
        match self {
            DType::F64 => v,
            _ => v as f32 as f64,
        }
    }

    /// Rounds an f64 to this storage format and back (round to nearest even; integers round
    /// to nearest and saturate).
    pub fn round(self, v: f64) -> f64 {
        match self {
            DType::F32 => v as f32 as f64,
            DType::F16 => half::f16::from_f64(v).to_f64(),
            DType::BF16 => half::bf16::from_f64(v).to_f64(),
            DType::F64 => v,
            DType::I32 => v.round() as i32 as f64,
            DType::U8 => v.round() as u8 as f64,
        }
    }

    /// The matching C ABI enum value.
    pub fn to_ffi(self) -> crate::bindings::ffi::kiln_dtype {
        match self {
            DType::F32 => crate::bindings::ffi::kiln_dtype::KILN_DTYPE_F32,
            DType::F16 => crate::bindings::ffi::kiln_dtype::KILN_DTYPE_F16,
            DType::BF16 => crate::bindings::ffi::kiln_dtype::KILN_DTYPE_BF16,
            DType::F64 => crate::bindings::ffi::kiln_dtype::KILN_DTYPE_F64,
            DType::I32 => crate::bindings::ffi::kiln_dtype::KILN_DTYPE_I32,
            DType::U8 => crate::bindings::ffi::kiln_dtype::KILN_DTYPE_U8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}
