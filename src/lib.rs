//! kiln: hand-written, fused CUDA kernels with safe Rust APIs and a CPU reference for
//! every kernel.
//!
//! Every op takes [`Tensor`]s; the device of the inputs decides the path. Host tensors
//! run the CPU reference (f64 math), device tensors run the CUDA kernels (f32 math,
//! f32/f16/bf16 storage) on the tensor's stream, and emulator tensors ([`Device::emu`],
//! feature `emu`) run the same kernels in kiln's CUDA emulator on the CPU, with checks. Other
//! frameworks link the same kernels through the C ABI in `kernels/include/kiln.h`.
//!
//! ```
//! use kiln::{activation::{self, Activation}, DType, Device, Tensor};
//!
//! // Host tensors run the reference; `Device::cuda_if_available()` would pick a GPU.
//! let device = Device::Cpu;
//! let x = Tensor::from_f32(&[-2.0, -0.5, 0.5, 2.0], &[2, 2], DType::BF16)?.to_device(&device)?;
//! let y = activation::forward(&Activation::Silu, &x)?;
//! assert_eq!(y.shape(), &[2, 2]);
//! assert!(y.to_f32_vec()?[3] > 1.7);
//! # Ok::<(), kiln::Error>(())
//! ```
#![warn(missing_docs)]

// The layers, lowest first: each imports only those before it (tests/layers.rs holds this).
pub mod bindings;
pub mod core;
pub mod families;
pub mod ops;
pub mod tools;

// The Rust blocks of README.md and docs/, run as doctests.
#[cfg(doctest)]
mod doc_pages;

// The public paths: what users write (`kiln::activation::forward`, `kiln::registry::find`,
// `kiln::check::check_shapes`, …), re-exported from the layers.
#[cfg(feature = "emu")]
pub use crate::bindings::ffi_emu;
pub use crate::bindings::{ffi, ffi_selftest};
pub use crate::core::device::{CudaDevice, Device, DeviceInfo, EmuDevice, cuda_device_count};
pub use crate::core::dtype::DType;
pub use crate::core::error::{Error, Result};
pub use crate::core::tensor::{Element, Tensor};
pub use crate::families::selftest;
pub use crate::ops::params;
pub use crate::tools::{bench, build_info, model, npy, occupancy, perf_record, plot, progress, sass, sweep};

/// Gated activations, forward and backward ([`families::activation`]); `op` holds their
/// registry entries.
pub mod activation {
    #[doc(inline)]
    pub use crate::families::activation::*;
    pub use crate::ops::activation as op;
}

/// Neural arithmetic units: NAU, NMU, their regularisers, the NALU and the success criterion
/// ([`families::arith`]: the f64 references, and the NMU kernels).
pub mod arith {
    #[doc(inline)]
    pub use crate::families::arith::*;
    pub use crate::ops::arith as op;
}

/// GemNet-OC's bases and efficient bilinear interaction ([`families::gemnet`]; the f64
/// references so far).
pub mod gemnet {
    #[doc(inline)]
    pub use crate::families::gemnet::*;
}

/// S-GCN's spherical harmonics and spherical graph convolution ([`families::sgcn`]; the f64
/// references so far).
pub mod sgcn {
    #[doc(inline)]
    pub use crate::families::sgcn::*;
}

/// GlycanAA's relational graph convolution and segment readouts ([`families::graph`]; the f64
/// references so far).
pub mod graph {
    #[doc(inline)]
    pub use crate::families::graph::*;
}

/// The empirical NTK by sum of logits (pNTK): the Gram-Hadamard product and the pNTK of an MLP
/// ([`families::ntk`]; the f64 references so far).
pub mod ntk {
    #[doc(inline)]
    pub use crate::families::ntk::*;
}

/// Fused GLUs and the GLU MLP block ([`families::glu`]); `op` and `mlp_op` hold their registry
/// entries.
pub mod glu {
    #[doc(inline)]
    pub use crate::families::glu::*;
    pub use crate::ops::glu as op;
    pub use crate::ops::glu_mlp as mlp_op;
}

/// Padding removal and restoration ([`families::padding`]); `op` holds its registry entries.
pub mod padding {
    #[doc(inline)]
    pub use crate::families::padding::*;
    pub use crate::ops::padding as op;
}

/// Fused residual + LayerNorm / RMSNorm ([`families::norm`]); `op` holds its registry entries.
pub mod norm {
    #[doc(inline)]
    pub use crate::families::norm::*;
    pub use crate::ops::norm as op;
}

/// ALiBi attention, forward and backward ([`families::attention`]); `op` holds its registry
/// entry and the problems checks generate.
pub mod attention {
    #[doc(inline)]
    pub use crate::families::attention::*;
    pub use crate::ops::attention as op;
}

/// Irreps, spherical harmonics, tensor products, convolution and Hessians
/// ([`families::equivariant`]); `op` (with `op::graph`) and `tp_op` hold their registry entries.
pub mod equivariant {
    #[doc(inline)]
    pub use crate::families::equivariant::*;
    pub use crate::ops::equivariant as op;
    pub use crate::ops::equivariant::tp as tp_op;
}

/// The one registry of ops: the entry types ([`registry::Op`]), their parameters, and the
/// list of every entry ([`registry::registry()`]).
pub mod registry {
    pub use crate::ops::params::{Param, Params};
    pub use crate::ops::registry::*;
    pub use crate::ops::{find, registry, select};
}

/// Checking kernels against references and references against themselves: the rows and
/// comparison rules ([`crate::ops::check_row`]) and the runner ([`crate::tools::check`]).
pub mod check {
    pub use crate::ops::check_row::*;
    pub use crate::ops::self_check::reference_row;
    pub use crate::tools::check::*;
}

/// Re-export of the cudarc version kiln is built against, for wrapping device buffers.
pub use cudarc;

// DESIGN.md: devices and tensors are shared across threads (each with its own stream).
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Device>();
    send_sync::<Tensor>();
};
