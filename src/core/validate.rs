//! Argument validation in one pass. An op declares each tensor argument's rules once (an
//! [`Arg`]: its dtype, its shape, alone or relative to another argument) and [`check`] walks
//! the list in order, checking each argument's device, then its dtype, then its shape, and
//! returns the first failure as the typed error naming that argument. Families keep only what
//! is not a property of a tensor's description (the values in cu_seqlens, index ranges,
//! scalar domains), and read dimensions out of shapes that [`check`] has already accepted.
//!
//! Layer: core. Imports device, dtype, error and tensor.

use super::device::Device;
use super::dtype::DType;
use super::error::{Error, Result};
use super::tensor::Tensor;

/// The dtype an argument must have.
#[derive(Clone, Copy, Debug)]
enum DTypeRule<'a> {
    /// Any dtype.
    Any,
    /// f32, f16 or bf16.
    Float,
    /// f32, f16, bf16 or f64 (the families with f64 kernels).
    FloatOrF64,
    /// Exactly this one.
    Is(DType),
    /// One of these, described as `expected` in the error.
    OneOf(&'static [DType], &'static str),
    /// The dtype of another argument (named for the error).
    Of(&'static str, &'a Tensor),
}

/// The shape an argument must have.
#[derive(Clone, Debug)]
enum ShapeRule<'a> {
    /// Any shape.
    Any,
    /// Exactly this one; the error's `expected` is `described` or the shape itself.
    Is(Vec<usize>, Option<String>),
    /// One of these, described as `expected` in the error.
    OneOf(Vec<Vec<usize>>, String),
    /// The shape of another argument (named for the error).
    Of(&'static str, &'a Tensor),
}

/// One tensor argument and the rules it obeys. Built with `Arg::new(name, tensor)` and the
/// rule methods; every argument must live on the device [`check`] is given.
#[derive(Clone, Debug)]
pub(crate) struct Arg<'a> {
    name: &'static str,
    tensor: &'a Tensor,
    dtype: DTypeRule<'a>,
    shape: ShapeRule<'a>,
}

impl<'a> Arg<'a> {
    /// `tensor`, called `name` in errors: any dtype and shape until a rule says otherwise.
    pub(crate) fn new(name: &'static str, tensor: &'a Tensor) -> Arg<'a> {
        Arg { name, tensor, dtype: DTypeRule::Any, shape: ShapeRule::Any }
    }

    /// Stored as f32, f16 or bf16.
    pub(crate) fn float(mut self) -> Self {
        self.dtype = DTypeRule::Float;
        self
    }

    /// Stored as f32, f16, bf16 or f64.
    pub(crate) fn float_or_f64(mut self) -> Self {
        self.dtype = DTypeRule::FloatOrF64;
        self
    }

    /// Stored as exactly `dtype`.
    pub(crate) fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = DTypeRule::Is(dtype);
        self
    }

    /// Stored as one of `dtypes` (`expected` says which in the error, e.g. "f16 or bf16").
    pub(crate) fn dtype_in(mut self, dtypes: &'static [DType], expected: &'static str) -> Self {
        self.dtype = DTypeRule::OneOf(dtypes, expected);
        self
    }

    /// Stored in the dtype of `other` (called `name`).
    pub(crate) fn dtype_of(mut self, name: &'static str, other: &'a Tensor) -> Self {
        self.dtype = DTypeRule::Of(name, other);
        self
    }

    /// Exactly `shape`.
    pub(crate) fn shape(mut self, shape: Vec<usize>) -> Self {
        self.shape = ShapeRule::Is(shape, None);
        self
    }

    /// Exactly `shape`, described as `expected` in the error (e.g. "[4] (the rows of x)").
    pub(crate) fn shape_described(mut self, shape: Vec<usize>, expected: String) -> Self {
        self.shape = ShapeRule::Is(shape, Some(expected));
        self
    }

    /// One of `shapes`, described as `expected` in the error.
    pub(crate) fn shape_in(mut self, shapes: Vec<Vec<usize>>, expected: String) -> Self {
        self.shape = ShapeRule::OneOf(shapes, expected);
        self
    }

    /// The shape of `other` (called `name`).
    pub(crate) fn shape_of(mut self, name: &'static str, other: &'a Tensor) -> Self {
        self.shape = ShapeRule::Of(name, other);
        self
    }

    /// The dtype and shape of `other` (called `name`): outputs and gradients laid out like it.
    pub(crate) fn like(self, name: &'static str, other: &'a Tensor) -> Self {
        self.dtype_of(name, other).shape_of(name, other)
    }

    /// The first rule `self` breaks on `device`, as the typed error naming it.
    fn check(&self, device: &Device) -> Result<()> {
        let (arg, t) = (self.name, self.tensor);
        let got_device = t.device();
        if !device.same_memory(&got_device) {
            return Err(Error::Device { arg, expected: device.to_string(), got: got_device.to_string() });
        }
        let dtype = t.dtype();
        let expected_dtype = match self.dtype {
            DTypeRule::Any => None,
            DTypeRule::Float => (!dtype.is_float()).then(|| "f32, f16 or bf16".to_string()),
            DTypeRule::FloatOrF64 => (!dtype.is_floating()).then(|| "f32, f16, bf16 or f64".to_string()),
            DTypeRule::Is(want) => (dtype != want).then(|| want.to_string()),
            DTypeRule::OneOf(want, described) => (!want.contains(&dtype)).then(|| described.to_string()),
            DTypeRule::Of(name, other) => {
                (dtype != other.dtype()).then(|| format!("{} (the dtype of {name})", other.dtype()))
            }
        };
        if let Some(expected) = expected_dtype {
            return Err(Error::DType { arg, expected, got: dtype });
        }
        let shape = t.shape();
        let expected_shape = match &self.shape {
            ShapeRule::Any => None,
            ShapeRule::Is(want, described) => {
                (shape != want.as_slice()).then(|| described.clone().unwrap_or_else(|| format!("{want:?}")))
            }
            ShapeRule::OneOf(want, described) => (!want.iter().any(|w| w == shape)).then(|| described.clone()),
            ShapeRule::Of(name, other) => {
                (shape != other.shape()).then(|| format!("{:?} (the shape of {name})", other.shape()))
            }
        };
        match expected_shape {
            Some(expected) => Err(Error::Shape { arg, expected, got: shape.to_vec() }),
            None => Ok(()),
        }
    }
}

/// Checks `args` in order, each one's device (it must be `device`), dtype and shape; the
/// first rule broken is the error, naming its argument.
pub(crate) fn check(device: &Device, args: &[Arg]) -> Result<()> {
    args.iter().try_for_each(|a| a.check(device))
}

/// That a host matrix of a reference (`rows` × `cols`, row-major f64) has its length: a typed
/// error naming `arg` otherwise, or when the size overflows.
pub fn check_host_matrix(arg: &'static str, v: &[f64], rows: usize, cols: usize) -> Result<()> {
    let want = rows
        .checked_mul(cols)
        .ok_or_else(|| Error::InvalidValue { arg, reason: format!("[{rows}, {cols}] overflows") })?;
    if v.len() != want {
        return Err(Error::Shape { arg, expected: format!("[{rows}, {cols}] ({want} values)"), got: vec![v.len()] });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::zeros(shape, dtype, &Device::Cpu).expect("host tensor")
    }

    #[test]
    fn each_rule_names_its_argument_and_what_it_expected() {
        let x = t(&[2, 3], DType::BF16);
        let (i, wide, short) = (t(&[2, 3], DType::I32), t(&[2, 4], DType::BF16), t(&[3], DType::F32));
        let err = |args: &[Arg]| check(&Device::Cpu, args).unwrap_err().to_string();
        assert!(check(&Device::Cpu, &[Arg::new("x", &x).float(), Arg::new("y", &wide).dtype_of("x", &x)]).is_ok());
        let e = err(&[Arg::new("x", &x).float(), Arg::new("i", &i).float()]);
        assert!(e.contains("`i`") && e.contains("f32, f16 or bf16"), "{e}");
        let e = err(&[Arg::new("dy", &i).like("x", &x)]);
        assert!(e.contains("`dy`") && e.contains("bf16 (the dtype of x)"), "{e}");
        let e = err(&[Arg::new("dy", &wide).like("x", &x)]);
        assert!(e.contains("`dy`") && e.contains("[2, 3] (the shape of x)"), "{e}");
        let e = err(&[Arg::new("rstd", &short).dtype(DType::F32).shape(vec![2])]);
        assert!(e.contains("`rstd`") && e.contains("[2]"), "{e}");
        let e = err(&[Arg::new("q", &short).dtype_in(&[DType::F16, DType::BF16], "f16 or bf16")]);
        assert!(e.contains("`q`") && e.contains("f16 or bf16"), "{e}");
        let e = err(&[Arg::new("s", &short).shape_in(vec![vec![1], vec![2]], "[1] or [2]".into())]);
        assert!(e.contains("`s`") && e.contains("[1] or [2]"), "{e}");
    }

    #[test]
    fn the_first_broken_rule_in_declared_order_wins() {
        let (x, bad) = (t(&[4], DType::F32), t(&[5], DType::F16));
        let e = check(&Device::Cpu, &[Arg::new("a", &bad).shape_of("x", &x), Arg::new("b", &bad).float()]).unwrap_err();
        assert!(e.to_string().contains("`a`"), "{e}");
        // Within one argument: the dtype before the shape.
        let e = check(&Device::Cpu, &[Arg::new("a", &bad).like("x", &x)]).unwrap_err();
        assert!(matches!(e, Error::DType { arg: "a", .. }), "{e}");
    }
}
