//! Argument checks shared by every family: each returns the typed error naming the
//! argument, so validation reads as a list of facts about the inputs.

use crate::core::device::Device;
use crate::core::error::{Error, Result};
use crate::core::tensor::Tensor;

/// `t` lives where `expected` does.
pub(crate) fn same_device(arg: &'static str, expected: &Device, t: &Tensor) -> Result<()> {
    if expected.same_memory(&t.device()) {
        Ok(())
    } else {
        Err(Error::Device { arg, expected: expected.to_string(), got: t.device().to_string() })
    }
}

/// `t` is stored as f32, f16 or bf16.
pub(crate) fn float(arg: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::DType { arg, expected: "f32, f16 or bf16".into(), got: t.dtype() })
    }
}

/// `t` is stored as f32, f16, bf16 or f64 (the families with f64 kernels: equivariant).
pub(crate) fn float_or_f64(arg: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_floating() {
        Ok(())
    } else {
        Err(Error::DType { arg, expected: "f32, f16, bf16 or f64".into(), got: t.dtype() })
    }
}

/// `t` has x's device, dtype and shape (outputs and gradients laid out like x).
pub(crate) fn like_x(arg: &'static str, x: &Tensor, t: &Tensor) -> Result<()> {
    same_device(arg, &x.device(), t)?;
    if t.dtype() != x.dtype() {
        return Err(Error::DType { arg, expected: format!("{} (the dtype of x)", x.dtype()), got: t.dtype() });
    }
    if t.shape() != x.shape() {
        return Err(Error::Shape {
            arg,
            expected: format!("{:?} (the shape of x)", x.shape()),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}
