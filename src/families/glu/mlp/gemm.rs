//! The GLU MLP block on a device: one sequence of GEMMs and fused gate kernels for either
//! backend. On a GPU the GEMMs run in cuBLASLt (row-major operands mapped onto its
//! column-major API); on the emulator they run on the host (see `host`). The gate is the
//! fused GLU kernel in both cases, through `glu::forward/backward`.

use super::spec::{Dims, GateUp, GateUpGrads, Mlp, MlpGrads, MlpOutput, Mode, Saved};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::tensor::Tensor;
use crate::families::glu::spec::{GateHalf, Glu, GluInput, GluInputGrads};

/// The gate on packed pre-activations (the device path's).
fn gate_forward(glu: &Glu, h: &Tensor) -> Result<Tensor> {
    crate::families::glu::forward(glu, GluInput::Packed { ab: h, gate: GateHalf::First })
}

/// (dh packed, dα) from the packed pre-activations and dz (the device path's).
fn gate_backward(glu: &Glu, h: &Tensor, dz: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
    let g = crate::families::glu::backward(glu, GluInput::Packed { ab: h, gate: GateHalf::First }, dz)?;
    match g.input {
        GluInputGrads::Packed { dab } => Ok((dab, g.dalpha)),
        GluInputGrads::Separate { .. } => unreachable!("packed in, packed out"),
    }
}

/// A row-major operand: a tensor, the element where the matrix starts, its row stride,
/// and whether it is used transposed (stored `[K, M]` for A, `[N, K]` for B).
#[derive(Clone, Copy)]
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
struct Operand<'a> {
    t: &'a Tensor,
    offset: usize,
    ld: usize,
    trans: bool,
}

fn op(t: &Tensor, ld: usize, trans: bool) -> Operand<'_> {
    Operand { t, offset: 0, ld, trans }
}

/// C[m, n] (row stride `ldc`, from element `c_off`) = β·C + op(A)·op(B) (+ bias[n]), with
/// cuBLASLt's semantics on both backends (β = 0 does not read C).
#[allow(clippy::too_many_arguments)]
fn gemm(
    gpu: &Gpu,
    mkn: (usize, usize, usize),
    a: Operand,
    b: Operand,
    c: &mut Tensor,
    c_at: (usize, usize),
    beta: f32,
    bias: Option<&Tensor>,
) -> Result<()> {
    match *gpu {
        #[cfg(feature = "cuda")]
        Gpu::Cuda(ref d) => cublas::gemm(d.blas()?, mkn, a, b, c, c_at, beta, bias),
        #[cfg(feature = "emu")]
        Gpu::Emu(_) => host::gemm(mkn, a, b, c, c_at, beta, bias),
        // Without a backend `Gpu` has no variants: this arm never runs, it only keeps the
        // arguments used.
        #[cfg(not(any(feature = "cuda", feature = "emu")))]
        ref never => {
            let _ = (mkn, a, b, c, c_at, beta, bias);
            match *never {}
        }
    }
}

fn alloc(shape: &[usize], x: &Tensor, gpu: &Gpu) -> Result<Tensor> {
    Tensor::uninit(shape, x.dtype(), &gpu.device())
}

pub(super) fn forward(mlp: &Mlp, x: &Tensor, mode: Mode, dims: &Dims, gpu: &Gpu) -> Result<MlpOutput> {
    let (t, dd, f) = (dims.t, dims.d, dims.f);
    if t == 0 {
        let device = gpu.device();
        let h = Tensor::zeros(&[0, 2 * f], x.dtype(), &device)?;
        return Ok(MlpOutput {
            y: Tensor::zeros(&[0, dd], x.dtype(), &device)?,
            saved: (mode == Mode::Training).then_some(Saved { h }),
        });
    }
    let mut h = alloc(&[t, 2 * f], x, gpu)?;
    let packed = PackedGateUp::of(mlp, gpu)?;
    let (w, b) = packed.get();
    gemm(gpu, (t, dd, 2 * f), op(x, dd, false), op(w, dd, true), &mut h, (0, 2 * f), 0.0, b)?;
    let z = gate_forward(&mlp.glu, &h)?;
    let mut y = alloc(&[t, dd], x, gpu)?;
    gemm(gpu, (t, f, dd), op(&z, f, false), op(mlp.w_down, f, true), &mut y, (0, dd), 0.0, mlp.b_down)?;
    Ok(MlpOutput { y, saved: (mode == Mode::Training).then_some(Saved { h }) })
}

/// Column sums of `[rows, cols]` (row stride ld, from element `offset`) as a GEMM with a
/// row of ones: deterministic, and cuBLASLt's own speed.
fn column_sums(gpu: &Gpu, ones: &Tensor, m: Operand, rows: usize, cols: usize) -> Result<Tensor> {
    let mut out = alloc(&[cols], m.t, gpu)?;
    gemm(gpu, (1, rows, cols), op(ones, rows, false), m, &mut out, (0, cols), 0.0, None)?;
    Ok(out)
}

pub(super) fn backward(mlp: &Mlp, x: &Tensor, h: &Tensor, dy: &Tensor, dims: &Dims, gpu: &Gpu) -> Result<MlpGrads> {
    let (t, dd, f) = (dims.t, dims.d, dims.f);
    if t == 0 {
        return empty_grads(mlp, x, dims, &gpu.device());
    }
    let ones = Tensor::full(&[t], x.dtype(), 1.0, &gpu.device())?;
    let z = gate_forward(&mlp.glu, h)?;
    let mut dz = alloc(&[t, f], x, gpu)?;
    gemm(gpu, (t, dd, f), op(dy, dd, false), op(mlp.w_down, f, false), &mut dz, (0, f), 0.0, None)?;
    let mut dw_down = alloc(&[dd, f], x, gpu)?;
    gemm(gpu, (dd, t, f), op(dy, dd, true), op(&z, f, false), &mut dw_down, (0, f), 0.0, None)?;
    let db_down = match mlp.b_down {
        Some(_) => Some(column_sums(gpu, &ones, op(dy, dd, false), t, dd)?),
        None => None,
    };
    let (dh, dalpha) = gate_backward(&mlp.glu, h, &dz)?;
    let mut dx = alloc(&[t, dd], x, gpu)?;
    let packed = PackedGateUp::of(mlp, gpu)?;
    let (w, b) = packed.get();
    gemm(gpu, (t, 2 * f, dd), op(&dh, 2 * f, false), op(w, dd, false), &mut dx, (0, dd), 0.0, None)?;
    let mut dw = alloc(&[2 * f, dd], x, gpu)?;
    gemm(gpu, (2 * f, t, dd), op(&dh, 2 * f, true), op(x, dd, false), &mut dw, (0, dd), 0.0, None)?;
    let db = match b {
        Some(_) => Some(column_sums(gpu, &ones, op(&dh, 2 * f, false), t, 2 * f)?),
        None => None,
    };
    let gate_up = match mlp.gate_up {
        GateUp::Packed { .. } => GateUpGrads::Packed { dw, db },
        GateUp::Separate { b_gate, b_up, .. } => {
            let (dw_gate, dw_up) = split_rows(&dw, f, gpu)?;
            let (db_gate, db_up) = match db {
                Some(db) => {
                    let (g, u) = split_rows(&db, f, gpu)?;
                    (b_gate.and(Some(g)), b_up.and(Some(u)))
                }
                None => (None, None),
            };
            GateUpGrads::Separate { dw_gate, dw_up, db_gate, db_up }
        }
    };
    Ok(MlpGrads { dx, gate_up, dw_down, db_down, dalpha })
}

/// The gate/up weights (and bias) as one packed `[2F, d]` matrix. Separate weights are copied
/// into one buffer, so that no GEMM ever reads or writes a view that starts F rows into a
/// buffer: cuBLASLt assumes 256-byte aligned matrix pointers (see `host::aligned`), which such a
/// view breaks whenever F·d·sizeof(T) — or F·sizeof(T) for a column half — is not a multiple of
/// 256. The copies cost 2F·d elements read and written, against the GEMMs' 2·T·2F·d FLOPs;
/// callers who keep their weights packed pay nothing.
enum PackedGateUp<'a> {
    Given(&'a Tensor, Option<&'a Tensor>),
    Copied(Tensor, Option<Tensor>),
}

impl<'a> PackedGateUp<'a> {
    fn of(mlp: &Mlp<'a>, gpu: &Gpu) -> Result<PackedGateUp<'a>> {
        Ok(match mlp.gate_up {
            GateUp::Packed { w, b } => PackedGateUp::Given(w, b),
            GateUp::Separate { w_gate, w_up, b_gate, b_up } => {
                let w = stack_rows(w_gate, w_up, gpu)?;
                // One bias alone is allowed: the other half's bias is then zero.
                let b = match (b_gate, b_up) {
                    (None, None) => None,
                    (g, u) => {
                        let zeros = Tensor::zeros(&[w_gate.shape()[0]], w_gate.dtype(), &gpu.device())?;
                        Some(stack_rows(g.unwrap_or(&zeros), u.unwrap_or(&zeros), gpu)?)
                    }
                };
                PackedGateUp::Copied(w, b)
            }
        })
    }

    fn get(&self) -> (&Tensor, Option<&Tensor>) {
        match self {
            PackedGateUp::Given(w, b) => (w, *b),
            PackedGateUp::Copied(w, b) => (w, b.as_ref()),
        }
    }
}

/// `[a; b]`: the rows of `a` then those of `b` (same dtype, device and row length).
fn stack_rows(a: &Tensor, b: &Tensor, gpu: &Gpu) -> Result<Tensor> {
    let mut shape = a.shape().to_vec();
    shape[0] += b.shape()[0];
    let mut out = alloc(&shape, a, gpu)?;
    out.copy_region(0, a, 0, a.len())?;
    out.copy_region(a.len(), b, 0, b.len())?;
    Ok(out)
}

/// The first `rows` rows of `t` and the rest, as two tensors.
fn split_rows(t: &Tensor, rows: usize, gpu: &Gpu) -> Result<(Tensor, Tensor)> {
    let row_len: usize = t.shape()[1..].iter().product();
    let (mut first_shape, mut rest_shape) = (t.shape().to_vec(), t.shape().to_vec());
    first_shape[0] = rows;
    rest_shape[0] -= rows;
    let (mut first, mut rest) = (alloc(&first_shape, t, gpu)?, alloc(&rest_shape, t, gpu)?);
    first.copy_region(0, t, 0, first.len())?;
    rest.copy_region(0, t, rows * row_len, rest.len())?;
    Ok((first, rest))
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

/// The GEMMs in cuBLASLt.
#[cfg(feature = "cuda")]
mod cublas {
    use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
    use cudarc::driver::{CudaView, CudaViewMut};
    use half::{bf16, f16};

    use super::Operand;
    use crate::core::dtype::DType;
    use crate::core::error::Result;
    use crate::core::tensor::{Element, Tensor};

    fn view<'a, T: Element>(o: &Operand<'a>) -> CudaView<'a, T> {
        o.t.as_cuda_slice::<T>().expect("validated: a device tensor of this dtype").slice(o.offset..)
    }

    /// Row-major C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so B goes in cuBLAS's A slot and A in
    /// its B slot, each with its own transpose flag and leading dimension.
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
    pub(super) fn gemm(
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
            other => {
                Err(crate::core::error::Error::DType { arg: "x", expected: "f32, f16 or bf16".into(), got: other })
            }
        }
    }
}

/// The GEMMs on the emulator, computed on the host. Emulated buffers are host memory, and
/// cuBLASLt is not kiln's code to check; the fused gate between the GEMMs still runs emulated.
/// Operands are read and results written through the emulator's copies (so C counts as
/// written); sums run in f64 and are rounded once to C's dtype, at least as accurate as
/// cuBLASLt's f32 (TF32 for f32 inputs) accumulation that the block's tolerances allow for.
#[cfg(feature = "emu")]
mod host {
    use super::Operand;
    use crate::core::error::{Error, Result};
    use crate::core::tensor::Tensor;

    /// cuBLASLt's default `CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES`, which cudarc
    /// leaves in place: a heuristic may pick a kernel that assumes every matrix pointer is
    /// this aligned, so a view from an offset that is not faults (misaligned address) or is
    /// refused on a GPU. The emulated GEMM refuses it too, so that tests catch such a view.
    const CUBLASLT_MIN_ALIGNMENT: usize = 256;

    fn aligned(name: &str, t: &Tensor, offset: usize) -> Result<()> {
        let bytes = offset * t.dtype().size_in_bytes();
        if bytes % CUBLASLT_MIN_ALIGNMENT == 0 {
            return Ok(());
        }
        Err(Error::Blas(format!(
            "GEMM operand {name} starts {bytes} bytes into its buffer, not a multiple of cuBLASLt's default \
             {CUBLASLT_MIN_ALIGNMENT}-byte minimum alignment"
        )))
    }

    pub(super) fn gemm(
        (m, k, n): (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: &mut Tensor,
        (c_off, ldc): (usize, usize),
        beta: f32,
        bias: Option<&Tensor>,
    ) -> Result<()> {
        aligned("A", a.t, a.offset)?;
        aligned("B", b.t, b.offset)?;
        aligned("C", c, c_off)?;
        let (av, bv) = (a.t.to_f64_vec()?, b.t.to_f64_vec()?);
        let bias = bias.map(Tensor::to_f64_vec).transpose()?;
        // As in BLAS, β = 0 does not read C: it may hold NaN or bytes nothing wrote yet.
        let old = if beta != 0.0 { Some(c.to_f64_vec()?) } else { None };
        let a_at = |i: usize, p: usize| if a.trans { av[a.offset + p * a.ld + i] } else { av[a.offset + i * a.ld + p] };
        let b_at = |p: usize, j: usize| if b.trans { bv[b.offset + j * b.ld + p] } else { bv[b.offset + p * b.ld + j] };
        let mut row = vec![0.0f64; n];
        for i in 0..m {
            let start = c_off + i * ldc;
            for (j, acc) in row.iter_mut().enumerate() {
                *acc = bias.as_ref().map_or(0.0, |bias| bias[j])
                    + old.as_ref().map_or(0.0, |c| beta as f64 * c[start + j]);
            }
            for p in 0..k {
                let aip = a_at(i, p);
                for (j, acc) in row.iter_mut().enumerate() {
                    *acc += aip * b_at(p, j);
                }
            }
            c.emu_write_f64(start, &row)?;
        }
        Ok(())
    }
}
