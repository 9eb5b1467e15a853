//! The GLU MLP block on a device: one sequence of library GEMMs (`core::gemm`: cuBLASLt on a
//! GPU, the host on the emulator) and fused gate kernels (`glu::forward/backward`) for either
//! backend. f32 GEMMs may use TF32 (the block's tolerances allow it).

use super::spec::{Dims, GateUp, GateUpGrads, Mlp, MlpGrads, MlpOutput, Mode, Saved};
use crate::core::device::Device;
use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gemm::{F32Math, column_sums, gemm, op};
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

/// The block's f32 GEMMs may use TF32 tensor cores.
const MATH: F32Math = F32Math::Tf32;

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
    gemm(gpu, MATH, (t, dd, 2 * f), op(x, dd, false), op(w, dd, true), &mut h, (0, 2 * f), 0.0, b)?;
    let z = gate_forward(&mlp.glu, &h)?;
    let mut y = alloc(&[t, dd], x, gpu)?;
    gemm(gpu, MATH, (t, f, dd), op(&z, f, false), op(mlp.w_down, f, true), &mut y, (0, dd), 0.0, mlp.b_down)?;
    Ok(MlpOutput { y, saved: (mode == Mode::Training).then_some(Saved { h }) })
}

pub(super) fn backward(mlp: &Mlp, x: &Tensor, h: &Tensor, dy: &Tensor, dims: &Dims, gpu: &Gpu) -> Result<MlpGrads> {
    let (t, dd, f) = (dims.t, dims.d, dims.f);
    if t == 0 {
        return empty_grads(mlp, x, dims, &gpu.device());
    }
    let ones = Tensor::full(&[t], x.dtype(), 1.0, &gpu.device())?;
    let z = gate_forward(&mlp.glu, h)?;
    let mut dz = alloc(&[t, f], x, gpu)?;
    gemm(gpu, MATH, (t, dd, f), op(dy, dd, false), op(mlp.w_down, f, false), &mut dz, (0, f), 0.0, None)?;
    let mut dw_down = alloc(&[dd, f], x, gpu)?;
    gemm(gpu, MATH, (dd, t, f), op(dy, dd, true), op(&z, f, false), &mut dw_down, (0, f), 0.0, None)?;
    let db_down = match mlp.b_down {
        Some(_) => Some(column_sums(gpu, MATH, &ones, op(dy, dd, false), t, dd)?),
        None => None,
    };
    let (dh, dalpha) = gate_backward(&mlp.glu, h, &dz)?;
    let mut dx = alloc(&[t, dd], x, gpu)?;
    let packed = PackedGateUp::of(mlp, gpu)?;
    let (w, b) = packed.get();
    gemm(gpu, MATH, (t, 2 * f, dd), op(&dh, 2 * f, false), op(w, dd, false), &mut dx, (0, dd), 0.0, None)?;
    let mut dw = alloc(&[2 * f, dd], x, gpu)?;
    gemm(gpu, MATH, (2 * f, t, dd), op(&dh, 2 * f, true), op(x, dd, false), &mut dw, (0, dd), 0.0, None)?;
    let db = match b {
        Some(_) => Some(column_sums(gpu, MATH, &ones, op(&dh, 2 * f, false), t, 2 * f)?),
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
