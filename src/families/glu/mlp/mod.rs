//! The GLU MLP block: y = (h(x·W_gᵀ + b_g) ⊙ (x·W_uᵀ + b_u))·W_dᵀ + b_d, forward and
//! backward. On a GPU the GEMMs run in cuBLASLt and the gate in the fused GLU kernel (on the
//! emulator the GEMMs run on the host, the gate emulated); the reference is an f64
//! matmul-based block. Weights, biases and their gradients share x's
//! dtype (the α gradient is f32).
//!
//! ```
//! use kiln::glu::{Glu, GluKind, mlp::{self, GateUp, Mlp, Mode}};
//! use kiln::{DType, Tensor};
//!
//! let (t, d, f) = (2, 3, 4);
//! let w = |rows: usize, cols: usize| Tensor::full(&[rows, cols], DType::F32, 0.1, &kiln::Device::Cpu);
//! let (w_gate, w_up, w_down) = (w(f, d)?, w(f, d)?, w(d, f)?);
//! let block = Mlp {
//!     glu: Glu::new(GluKind::Swiglu),
//!     gate_up: GateUp::Separate { w_gate: &w_gate, w_up: &w_up, b_gate: None, b_up: None },
//!     w_down: &w_down,
//!     b_down: None,
//! };
//! let x = Tensor::full(&[t, d], DType::F32, 1.0, &kiln::Device::Cpu)?;
//! let out = mlp::forward(&block, &x, Mode::Training)?;
//! assert_eq!(out.y.shape(), &[t, d]);
//! let dy = Tensor::full(&[t, d], DType::F32, 1.0, &kiln::Device::Cpu)?;
//! let g = mlp::backward(&block, &x, out.saved.as_ref().unwrap(), &dy)?;
//! assert_eq!(g.dw_down.shape(), &[d, f]);
//! # Ok::<(), kiln::Error>(())
//! ```

use crate::core::dtype::DType;
use crate::core::error::Result;
use crate::core::gpu::Gpu;
use crate::core::tensor::Tensor;
use crate::core::validate::{Arg, check};

mod gemm;
mod spec;
pub(crate) use spec::Dims;
pub use spec::{GateUp, GateUpGrads, Mlp, MlpGrads, MlpOutput, Mode, Saved};

/// y for `x [T, d]`; in training mode also what backward needs.
pub fn forward(mlp: &Mlp, x: &Tensor, mode: Mode) -> Result<MlpOutput> {
    let dims = mlp.validate(x)?;
    match Gpu::of(&x.device())? {
        None => {
            let r = reference::forward(mlp, x, &dims);
            let h = Tensor::from_f64(&r.h, &[dims.t, 2 * dims.f], x.dtype())?;
            Ok(MlpOutput {
                y: Tensor::from_f64(&r.y, &[dims.t, dims.d], x.dtype())?,
                saved: (mode == Mode::Training).then_some(Saved { h }),
            })
        }
        Some(gpu) => gemm::forward(mlp, x, mode, &dims, &gpu),
    }
}

/// Gradients of every parameter and of x, given the training forward's `saved`.
pub fn backward(mlp: &Mlp, x: &Tensor, saved: &Saved, dy: &Tensor) -> Result<MlpGrads> {
    let dims = mlp.validate(x)?;
    // Declared once the block's own arguments have given (T, d, F).
    check(
        &x.device(),
        &[
            Arg::new("saved.h", &saved.h).dtype_of("x", x).shape(vec![dims.t, 2 * dims.f]),
            Arg::new("dy", dy).dtype_of("x", x).shape(vec![dims.t, dims.d]),
        ],
    )?;
    match Gpu::of(&x.device())? {
        None => reference::backward_tensors(mlp, x, &saved.h, dy, &dims),
        Some(gpu) => gemm::backward(mlp, x, &saved.h, dy, &dims, &gpu),
    }
}

/// The f64 matmul-based reference of the block.
pub mod reference {
    use super::*;
    use crate::families::glu::cpu;
    use crate::families::glu::spec::Glu;

    /// C[m, n] = op(A)·op(B) with A `[m, k]` (or `[k, m]` when `ta`) and B `[k, n]` (or
    /// `[n, k]` when `tb`), row-major, f64.
    pub fn matmul(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize), ta: bool, tb: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                if av == 0.0 {
                    continue;
                }
                for j in 0..n {
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    c[i * n + j] += av * bv;
                }
            }
        }
        c
    }

    /// Column sums of `[rows, cols]`.
    pub fn column_sums(a: &[f64], cols: usize) -> Vec<f64> {
        let mut s = vec![0.0; cols];
        for row in a.chunks(cols) {
            for (acc, v) in s.iter_mut().zip(row) {
                *acc += v;
            }
        }
        s
    }

    /// The packed gate/up weight `[2F, d]` and bias `[2F]` of either layout, in f64.
    pub fn packed_gate_up(gate_up: &GateUp) -> (Vec<f64>, Option<Vec<f64>>) {
        match *gate_up {
            GateUp::Separate { w_gate, w_up, b_gate, b_up } => {
                let w = [w_gate.host_f64(), w_up.host_f64()].concat();
                let f = w_gate.shape()[0];
                let b = match (b_gate, b_up) {
                    (None, None) => None,
                    (g, u) => Some(
                        [g.map_or(vec![0.0; f], |t| t.host_f64()), u.map_or(vec![0.0; f], |t| t.host_f64())].concat(),
                    ),
                };
                (w, b)
            }
            GateUp::Packed { w, b } => (w.host_f64(), b.map(|t| t.host_f64())),
        }
    }

    /// Forward results in f64.
    pub struct Forward {
        /// `[T, 2F]` pre-activations, gate half first.
        pub h: Vec<f64>,
        /// `[T, F]` gate output.
        pub z: Vec<f64>,
        /// `[T, d]`.
        pub y: Vec<f64>,
    }

    /// The block in f64 from host tensors.
    pub(crate) fn forward(mlp: &Mlp, x: &Tensor, dims: &Dims) -> Forward {
        let (w, b) = packed_gate_up(&mlp.gate_up);
        let bd = mlp.b_down.map(|t| t.host_f64());
        forward_f64(&mlp.glu, &x.host_f64(), &w, b.as_deref(), &mlp.w_down.host_f64(), bd.as_deref(), dims)
    }

    /// The block in f64: h = x·Wᵀ + b, z = gate(h), y = z·W_dᵀ + b_d.
    pub(crate) fn forward_f64(
        glu: &Glu,
        x: &[f64],
        w: &[f64],
        b: Option<&[f64]>,
        w_down: &[f64],
        b_down: Option<&[f64]>,
        dims: &Dims,
    ) -> Forward {
        let (t, d, f) = (dims.t, dims.d, dims.f);
        let mut h = matmul(x, w, (t, d, 2 * f), false, true);
        if let Some(b) = b {
            for row in h.chunks_mut(2 * f) {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            }
        }
        let (a, bv) = split(&h, f);
        let z = cpu::forward(glu.kind, glu.alpha as f64, glu.order, &a, &bv);
        let mut y = matmul(&z, w_down, (t, f, d), false, true);
        if let Some(bd) = b_down {
            for row in y.chunks_mut(d) {
                row.iter_mut().zip(bd).for_each(|(v, b)| *v += b);
            }
        }
        Forward { h, z, y }
    }

    /// (gate half, up half) of packed `[T, 2F]` rows.
    pub fn split(h: &[f64], f: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut a, mut b) = (Vec::with_capacity(h.len() / 2), Vec::with_capacity(h.len() / 2));
        for row in h.chunks(2 * f) {
            a.extend_from_slice(&row[..f]);
            b.extend_from_slice(&row[f..]);
        }
        (a, b)
    }

    /// Backward results in f64.
    pub struct Backward {
        /// `[T, d]`.
        pub dx: Vec<f64>,
        /// `[2F, d]` packed gate/up weight gradient.
        pub dw: Vec<f64>,
        /// `[2F]`.
        pub db: Vec<f64>,
        /// `[d, F]`.
        pub dw_down: Vec<f64>,
        /// `[d]`.
        pub db_down: Vec<f64>,
        /// dα.
        pub dalpha: f64,
    }

    /// The block's backward in f64 from the pre-activations h.
    pub(crate) fn backward_f64(
        glu: &Glu,
        x: &[f64],
        w: &[f64],
        w_down: &[f64],
        h: &[f64],
        dy: &[f64],
        dims: &Dims,
    ) -> Backward {
        let (t, d, f) = (dims.t, dims.d, dims.f);
        let (a, b) = split(h, f);
        let z = cpu::forward(glu.kind, glu.alpha as f64, glu.order, &a, &b);
        let dz = matmul(dy, w_down, (t, d, f), false, false);
        let dw_down = matmul(dy, &z, (d, t, f), true, false);
        let db_down = column_sums(dy, d);
        let (da, dbv, dalpha) = cpu::backward(glu.kind, glu.alpha as f64, glu.order, &a, &b, &dz);
        let mut dh = Vec::with_capacity(2 * t * f);
        for r in 0..t {
            dh.extend_from_slice(&da[r * f..(r + 1) * f]);
            dh.extend_from_slice(&dbv[r * f..(r + 1) * f]);
        }
        Backward {
            dx: matmul(&dh, w, (t, 2 * f, d), false, false),
            dw: matmul(&dh, x, (2 * f, t, d), true, false),
            db: column_sums(&dh, 2 * f),
            dw_down,
            db_down,
            dalpha,
        }
    }

    pub(crate) fn backward_tensors(mlp: &Mlp, x: &Tensor, h: &Tensor, dy: &Tensor, dims: &Dims) -> Result<MlpGrads> {
        let (w, _) = packed_gate_up(&mlp.gate_up);
        let r = backward_f64(&mlp.glu, &x.host_f64(), &w, &mlp.w_down.host_f64(), &h.host_f64(), &dy.host_f64(), dims);
        let dt = x.dtype();
        let (d, f) = (dims.d, dims.f);
        let gate_up = match mlp.gate_up {
            GateUp::Separate { b_gate, b_up, .. } => GateUpGrads::Separate {
                dw_gate: Tensor::from_f64(&r.dw[..f * d], &[f, d], dt)?,
                dw_up: Tensor::from_f64(&r.dw[f * d..], &[f, d], dt)?,
                db_gate: b_gate.map(|_| Tensor::from_f64(&r.db[..f], &[f], dt)).transpose()?,
                db_up: b_up.map(|_| Tensor::from_f64(&r.db[f..], &[f], dt)).transpose()?,
            },
            GateUp::Packed { b, .. } => GateUpGrads::Packed {
                dw: Tensor::from_f64(&r.dw, &[2 * f, d], dt)?,
                db: b.map(|_| Tensor::from_f64(&r.db, &[2 * f], dt)).transpose()?,
            },
        };
        Ok(MlpGrads {
            dx: Tensor::from_f64(&r.dx, x.shape(), dt)?,
            gate_up,
            dw_down: Tensor::from_f64(&r.dw_down, &[d, f], dt)?,
            db_down: mlp.b_down.map(|_| Tensor::from_f64(&r.db_down, &[d], dt)).transpose()?,
            dalpha: mlp.glu.kind.has_alpha().then(|| Tensor::from_f64(&[r.dalpha], &[1], DType::F32)).transpose()?,
        })
    }
}
