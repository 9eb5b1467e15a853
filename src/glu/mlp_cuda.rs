//! The GLU MLP block on a GPU: GEMMs in cuBLASLt (row-major operands mapped onto its
//! column-major API), the gate in the fused GLU kernel.

use super::{Dims, Mlp, MlpGrads, MlpOutput, Mode};
use crate::device::CudaDevice;
use crate::error::Result;
use crate::tensor::Tensor;

#[cfg(not(feature = "cuda"))]
pub(super) fn forward(_: &Mlp, _: &Tensor, _: Mode, _: &Dims, _: &CudaDevice) -> Result<MlpOutput> {
    Err(crate::Error::CudaNotCompiled)
}

#[cfg(not(feature = "cuda"))]
pub(super) fn backward(_: &Mlp, _: &Tensor, _: &Tensor, _: &Tensor, _: &Dims, _: &CudaDevice) -> Result<MlpGrads> {
    Err(crate::Error::CudaNotCompiled)
}

#[cfg(feature = "cuda")]
pub(super) use imp::{backward, forward};

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
    use cudarc::driver::{CudaView, CudaViewMut};
    use half::{bf16, f16};

    use super::*;
    use crate::device::Device;
    use crate::dtype::DType;
    use crate::glu::mlp::{GateUp, GateUpGrads, Saved, gate_backward, gate_forward};
    use crate::tensor::Element;

    /// A row-major operand: a tensor, the element where the matrix starts, its row stride,
    /// and whether it is used transposed (stored `[K, M]` for A, `[N, K]` for B).
    #[derive(Clone, Copy)]
    struct Operand<'a> {
        t: &'a Tensor,
        offset: usize,
        ld: usize,
        trans: bool,
    }

    fn op(t: &Tensor, ld: usize, trans: bool) -> Operand<'_> {
        Operand { t, offset: 0, ld, trans }
    }

    /// C[m, n] (row stride `ldc`, from element `c_off`) = β·C + op(A)·op(B) (+ bias[n]).
    ///
    /// Row-major C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so B goes in cuBLAS's A slot and A in
    /// its B slot, each with its own transpose flag and leading dimension.
    fn view<'a, T: Element>(o: &Operand<'a>) -> CudaView<'a, T> {
        o.t.as_cuda_slice::<T>().expect("validated: a device tensor of this dtype").slice(o.offset..)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_typed<T: Element>(
        blas: &CudaBlasLT,
        (m, k, n): (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: &mut Tensor,
        (c_off, ldc): (usize, usize),
        beta: f32,
        bias: Option<&Tensor>,
    ) -> Result<()>
    where
        CudaBlasLT: Matmul<T>,
    {
        let (av, bv) = (view::<T>(&a), view::<T>(&b));
        let bias_v = bias.map(|t| t.as_cuda_slice::<T>().expect("validated").slice(..));
        let mut cv: CudaViewMut<'_, T> = c.as_cuda_slice_mut::<T>().expect("allocated here").slice_mut(c_off..);
        let cfg = MatmulConfig {
            transa: b.trans,
            transb: a.trans,
            transc: false,
            m: n as u64,
            n: m as u64,
            k: k as u64,
            alpha: 1.0,
            lda: b.ld as i64,
            ldb: a.ld as i64,
            beta,
            ldc: ldc as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        // SAFETY: shapes validated by mod.rs; every view covers the rows×ld it is read or
        // written through; all tensors live on the handle's stream's device.
        unsafe { blas.matmul(cfg, &bv, &av, &mut cv, bias_v.as_ref(), None) }?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm(
        blas: &CudaBlasLT,
        mkn: (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: &mut Tensor,
        c_at: (usize, usize),
        beta: f32,
        bias: Option<&Tensor>,
    ) -> Result<()> {
        match c.dtype() {
            DType::F32 => gemm_typed::<f32>(blas, mkn, a, b, c, c_at, beta, bias),
            DType::F16 => gemm_typed::<f16>(blas, mkn, a, b, c, c_at, beta, bias),
            DType::BF16 => gemm_typed::<bf16>(blas, mkn, a, b, c, c_at, beta, bias),
            other => Err(crate::Error::DType { arg: "x", expected: "f32, f16 or bf16".into(), got: other }),
        }
    }

    fn alloc(shape: &[usize], x: &Tensor, d: &CudaDevice) -> Result<Tensor> {
        Tensor::uninit(shape, x.dtype(), &Device::Cuda(d.clone()))
    }

    pub(in crate::glu) fn forward(mlp: &Mlp, x: &Tensor, mode: Mode, dims: &Dims, d: &CudaDevice) -> Result<MlpOutput> {
        let (t, dd, f) = (dims.t, dims.d, dims.f);
        let device = Device::Cuda(d.clone());
        if t == 0 {
            let h = Tensor::zeros(&[0, 2 * f], x.dtype(), &device)?;
            return Ok(MlpOutput {
                y: Tensor::zeros(&[0, dd], x.dtype(), &device)?,
                saved: (mode == Mode::Training).then_some(Saved { h }),
            });
        }
        let blas = d.blas()?;
        let mut h = alloc(&[t, 2 * f], x, d)?;
        let xa = op(x, dd, false);
        match mlp.gate_up {
            GateUp::Packed { w, b } => gemm(blas, (t, dd, 2 * f), xa, op(w, dd, true), &mut h, (0, 2 * f), 0.0, b)?,
            GateUp::Separate { w_gate, w_up, b_gate, b_up } => {
                // Both projections write straight into their half of the packed h.
                gemm(blas, (t, dd, f), xa, op(w_gate, dd, true), &mut h, (0, 2 * f), 0.0, b_gate)?;
                gemm(blas, (t, dd, f), xa, op(w_up, dd, true), &mut h, (f, 2 * f), 0.0, b_up)?;
            }
        }
        let z = gate_forward(&mlp.glu, &h)?;
        let mut y = alloc(&[t, dd], x, d)?;
        gemm(blas, (t, f, dd), op(&z, f, false), op(mlp.w_down, f, true), &mut y, (0, dd), 0.0, mlp.b_down)?;
        Ok(MlpOutput { y, saved: (mode == Mode::Training).then_some(Saved { h }) })
    }

    /// Column sums of `[rows, cols]` (row stride ld, from element `offset`) as a GEMM with a
    /// row of ones: deterministic, and cuBLASLt's own speed.
    fn column_sums(
        blas: &CudaBlasLT,
        ones: &Tensor,
        m: Operand,
        rows: usize,
        cols: usize,
        d: &CudaDevice,
    ) -> Result<Tensor> {
        let mut out = alloc(&[cols], m.t, d)?;
        gemm(blas, (1, rows, cols), op(ones, rows, false), m, &mut out, (0, cols), 0.0, None)?;
        Ok(out)
    }

    pub(in crate::glu) fn backward(
        mlp: &Mlp,
        x: &Tensor,
        h: &Tensor,
        dy: &Tensor,
        dims: &Dims,
        d: &CudaDevice,
    ) -> Result<MlpGrads> {
        let (t, dd, f) = (dims.t, dims.d, dims.f);
        let device = Device::Cuda(d.clone());
        if t == 0 {
            return empty_grads(mlp, x, dims, &device);
        }
        let blas = d.blas()?;
        let ones = Tensor::full(&[t], x.dtype(), 1.0, &device)?;
        let z = gate_forward(&mlp.glu, h)?;
        let mut dz = alloc(&[t, f], x, d)?;
        gemm(blas, (t, dd, f), op(dy, dd, false), op(mlp.w_down, f, false), &mut dz, (0, f), 0.0, None)?;
        let mut dw_down = alloc(&[dd, f], x, d)?;
        gemm(blas, (dd, t, f), op(dy, dd, true), op(&z, f, false), &mut dw_down, (0, f), 0.0, None)?;
        let db_down = match mlp.b_down {
            Some(_) => Some(column_sums(blas, &ones, op(dy, dd, false), t, dd, d)?),
            None => None,
        };
        let (dh, dalpha) = gate_backward(&mlp.glu, h, &dz)?;
        let mut dx = alloc(&[t, dd], x, d)?;
        let gate_up = match mlp.gate_up {
            GateUp::Packed { w, b } => {
                gemm(blas, (t, 2 * f, dd), op(&dh, 2 * f, false), op(w, dd, false), &mut dx, (0, dd), 0.0, None)?;
                let mut dw = alloc(&[2 * f, dd], x, d)?;
                gemm(blas, (2 * f, t, dd), op(&dh, 2 * f, true), op(x, dd, false), &mut dw, (0, dd), 0.0, None)?;
                let db = match b {
                    Some(_) => Some(column_sums(blas, &ones, op(&dh, 2 * f, false), t, 2 * f, d)?),
                    None => None,
                };
                GateUpGrads::Packed { dw, db }
            }
            GateUp::Separate { w_gate, w_up, b_gate, b_up } => {
                // dh's halves are read in place: row stride 2F, the up half from element F.
                let half = |offset: usize, trans: bool| Operand { t: &dh, offset, ld: 2 * f, trans };
                gemm(blas, (t, f, dd), half(0, false), op(w_gate, dd, false), &mut dx, (0, dd), 0.0, None)?;
                gemm(blas, (t, f, dd), half(f, false), op(w_up, dd, false), &mut dx, (0, dd), 1.0, None)?;
                let mut dw_gate = alloc(&[f, dd], x, d)?;
                let mut dw_up = alloc(&[f, dd], x, d)?;
                gemm(blas, (f, t, dd), half(0, true), op(x, dd, false), &mut dw_gate, (0, dd), 0.0, None)?;
                gemm(blas, (f, t, dd), half(f, true), op(x, dd, false), &mut dw_up, (0, dd), 0.0, None)?;
                let db_gate = match b_gate {
                    Some(_) => Some(column_sums(blas, &ones, half(0, false), t, f, d)?),
                    None => None,
                };
                let db_up = match b_up {
                    Some(_) => Some(column_sums(blas, &ones, half(f, false), t, f, d)?),
                    None => None,
                };
                GateUpGrads::Separate { dw_gate, dw_up, db_gate, db_up }
            }
        };
        Ok(MlpGrads { dx, gate_up, dw_down, db_down, dalpha })
    }

    /// An empty batch: every gradient is an empty sum, zero.
    fn empty_grads(mlp: &Mlp, x: &Tensor, dims: &Dims, device: &Device) -> Result<MlpGrads> {
        let (dd, f) = (dims.d, dims.f);
        let zeros = |shape: &[usize]| Tensor::zeros(shape, x.dtype(), device);
        let zeros_if = |given: bool, shape: &[usize]| if given { zeros(shape).map(Some) } else { Ok(None) };
        Ok(MlpGrads {
            dx: zeros(&[0, dd])?,
            gate_up: match mlp.gate_up {
                GateUp::Packed { b, .. } => {
                    GateUpGrads::Packed { dw: zeros(&[2 * f, dd])?, db: zeros_if(b.is_some(), &[2 * f])? }
                }
                GateUp::Separate { b_gate, b_up, .. } => GateUpGrads::Separate {
                    dw_gate: zeros(&[f, dd])?,
                    dw_up: zeros(&[f, dd])?,
                    db_gate: zeros_if(b_gate.is_some(), &[f])?,
                    db_up: zeros_if(b_up.is_some(), &[f])?,
                },
            },
            dw_down: zeros(&[dd, f])?,
            db_down: zeros_if(mlp.b_down.is_some(), &[dd])?,
            dalpha: if mlp.glu.kind.has_alpha() { Some(Tensor::zeros(&[1], DType::F32, device)?) } else { None },
        })
    }
}
