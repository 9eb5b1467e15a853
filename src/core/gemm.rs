//! GEMMs on row-major tensors for either backend: cuBLASLt on a GPU (row-major operands mapped
//! onto its column-major API), the host on the emulator (cuBLASLt is not kiln's code to check;
//! the fused kernels around the GEMMs still run emulated). Families whose work is library
//! GEMMs plus fused elementwise passes (the GLU MLP block, the NAU) call [`gemm`].
//!
//! Layer: core. Imports error, dtype, gpu, tensor.

use std::cell::Cell;

use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::tensor::Tensor;

thread_local! {
    /// The DRAM bytes this thread's emulated GEMMs would move at their ideal (each operand read
    /// once, C written once, and read when β ≠ 0): the emulator counts its kernels' traffic, not
    /// the host's, so the traffic model adds these (`take_library_bytes`).
    static LIBRARY_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// The ideal DRAM bytes of the library GEMMs this thread ran on the emulator since the last
/// call (0 on a GPU or without `emu`): the traffic model's count of what cuBLASLt would move,
/// at best, next to the emulated kernels' counted traffic.
#[cfg_attr(not(feature = "emu"), allow(dead_code))]
pub(crate) fn take_library_bytes() -> u64 {
    LIBRARY_BYTES.with(|b| b.replace(0))
}

/// How an f32 GEMM may multiply. f16/bf16 GEMMs always multiply exactly and accumulate in
/// f32; this only chooses for f32 operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(crate) enum F32Math {
    /// TF32 tensor cores (10-bit mantissas, f32 accumulation): cuBLASLt's
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`, for blocks whose tolerances allow it (the GLU MLP).
    Tf32,
    /// IEEE f32 products and sums (`CUBLAS_COMPUTE_32F`): for units that must learn exact
    /// arithmetic (the NAU's a + b at the success threshold's 1e-5 MSE; TF32's 2^-11 relative
    /// rounding of x alone gives errors of ~0.05 on sums of 26 values near 4).
    Ieee,
}

/// A row-major operand: a tensor, the element where the matrix starts, its row stride,
/// and whether it is used transposed (stored `[K, M]` for A, `[N, K]` for B).
#[derive(Clone, Copy)]
#[cfg_attr(not(any(feature = "cuda", feature = "emu")), allow(dead_code))]
pub(crate) struct Operand<'a> {
    pub(crate) t: &'a Tensor,
    pub(crate) offset: usize,
    pub(crate) ld: usize,
    pub(crate) trans: bool,
}

/// A whole tensor as an operand with row stride `ld`.
pub(crate) fn op(t: &Tensor, ld: usize, trans: bool) -> Operand<'_> {
    Operand { t, offset: 0, ld, trans }
}

/// C[m, n] (row stride `ldc`, from element `c_off`) = β·C + op(A)·op(B) (+ bias[n]), with
/// cuBLASLt's semantics on both backends (β = 0 does not read C); f32 operands multiply as
/// `math` says.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    gpu: &Gpu,
    math: F32Math,
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
        Gpu::Cuda(ref d) => cublas::gemm(d.blas()?, math, mkn, a, b, c, c_at, beta, bias),
        #[cfg(feature = "emu")]
        Gpu::Emu(_) => {
            let _ = math; // the host sums in f64 either way
            host::gemm(mkn, a, b, c, c_at, beta, bias)
        }
        // Without a backend `Gpu` has no variants: this arm never runs, it only keeps the
        // arguments used.
        #[cfg(not(any(feature = "cuda", feature = "emu")))]
        ref never => {
            let _ = (math, mkn, a, b, c, c_at, beta, bias);
            match *never {}
        }
    }
}

/// Column sums of `[rows, cols]` (row stride ld, from element `offset`) as a GEMM with a
/// row of ones: deterministic, and cuBLASLt's own speed.
pub(crate) fn column_sums(
    gpu: &Gpu,
    math: F32Math,
    ones: &Tensor,
    m: Operand,
    rows: usize,
    cols: usize,
) -> Result<Tensor> {
    let mut out = Tensor::uninit(&[cols], m.t.dtype(), &gpu.device())?;
    gemm(gpu, math, (1, rows, cols), op(ones, rows, false), m, &mut out, (0, cols), 0.0, None)?;
    Ok(out)
}

/// The GEMMs in cuBLASLt.
#[cfg(feature = "cuda")]
mod cublas {
    use std::sync::Arc;

    use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig, MatmulShared, Workspace, sys};
    use cudarc::driver::CudaStream;
    use cudarc::driver::{CudaView, CudaViewMut};
    use half::{bf16, f16};

    use super::{F32Math, Operand};
    use crate::core::dtype::DType;
    use crate::core::error::Result;
    use crate::core::tensor::{Element, Tensor};

    fn view<'a, T: Element>(o: &Operand<'a>) -> CudaView<'a, T> {
        o.t.as_cuda_slice::<T>().expect("validated: a device tensor of this dtype").slice(o.offset..)
    }

    /// Row-major C is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so B goes in cuBLAS's A slot and A in
    /// its B slot, each with its own transpose flag and leading dimension.
    #[allow(clippy::too_many_arguments)]
    fn gemm_typed<T: Element, L: Matmul<T>>(
        blas: &L,
        (m, k, n): (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: &mut Tensor,
        (c_off, ldc): (usize, usize),
        beta: f32,
        bias: Option<&Tensor>,
    ) -> Result<()> {
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

    /// cuBLASLt with IEEE f32 math: cudarc's `Matmul<f32>` for `CudaBlasLT` asks for
    /// `CUBLAS_COMPUTE_32F_FAST_TF32`; this view of the same handle, workspace and stream asks
    /// for `CUBLAS_COMPUTE_32F`.
    struct IeeeF32<'a>(&'a CudaBlasLT);

    impl MatmulShared for IeeeF32<'_> {
        fn handle(&self) -> &sys::cublasLtHandle_t {
            self.0.handle()
        }
        fn workspace(&self) -> &Workspace {
            self.0.workspace()
        }
        fn stream(&self) -> &Arc<CudaStream> {
            self.0.stream()
        }
    }

    impl Matmul<f32> for IeeeF32<'_> {
        fn matrix_type() -> sys::cudaDataType {
            sys::cudaDataType_t::CUDA_R_32F
        }
        fn compute_type() -> sys::cublasComputeType_t {
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm(
        blas: &CudaBlasLT,
        math: F32Math,
        mkn: (usize, usize, usize),
        a: Operand,
        b: Operand,
        c: &mut Tensor,
        c_at: (usize, usize),
        beta: f32,
        bias: Option<&Tensor>,
    ) -> Result<()> {
        match c.dtype() {
            DType::F32 if math == F32Math::Ieee => gemm_typed::<f32, _>(&IeeeF32(blas), mkn, a, b, c, c_at, beta, bias),
            DType::F32 => gemm_typed::<f32, _>(blas, mkn, a, b, c, c_at, beta, bias),
            DType::F16 => gemm_typed::<f16, _>(blas, mkn, a, b, c, c_at, beta, bias),
            DType::BF16 => gemm_typed::<bf16, _>(blas, mkn, a, b, c, c_at, beta, bias),
            other => {
                Err(crate::core::error::Error::DType { arg: "x", expected: "f32, f16 or bf16".into(), got: other })
            }
        }
    }
}

/// The GEMMs on the emulator, computed on the host. Emulated buffers are host memory, and
/// cuBLASLt is not kiln's code to check; the fused kernels between the GEMMs still run emulated.
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
        let elem = c.dtype().size_in_bytes() as u64;
        let c_passes = if beta != 0.0 { 2 } else { 1 };
        let ideal = (m * k + k * n + c_passes * m * n + bias.map_or(0, |_| n)) as u64 * elem;
        super::LIBRARY_BYTES.with(|b| b.set(b.get() + ideal));
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
