//! Equivariant building blocks in e3nn's conventions (REFERENCE.md §5): irreps, real
//! spherical harmonics, Clebsch-Gordan coefficients (`wigner_3j`) and Wigner D matrices for
//! l ≤ 4, tensor-product plans (uvu and uvw paths, 'element' and 'path' normalization), and
//! the f64 CPU references of the batched tensor product, the graph convolution
//! out[i] = Σ_{e: dst_e = i} TP(x[src_e], Y_e, w_e) and the HIP Hessian assembly.
//!
//! ```
//! use kiln::equivariant::{cpu, Irreps, PathNormalization, Sh, ShNormalization, TpPlan};
//!
//! // Y^0..Y^2 of one edge vector (component normalization: Y¹ = √3·x̂).
//! let sh = Sh { lmax: 2, normalization: ShNormalization::Component, normalize: true };
//! let y = sh.forward(&[0.0, 2.0, 0.0])?;
//! assert!((y[2] - 3f64.sqrt()).abs() < 1e-12);
//!
//! // A channelwise (MACE-style) tensor product of 4x0e+4x1o features with those harmonics.
//! let x: Irreps = "4x0e+4x1o".parse()?;
//! let plan = TpPlan::channelwise(&x, &"0e+1o+2e".parse()?, &"4x0e+4x1o+4x2e".parse()?,
//!                                PathNormalization::Element)?;
//! let x1 = vec![0.5; x.dim()];
//! let w = vec![1.0; plan.weight_numel];
//! let out = cpu::tp_forward(&plan, &x1, &y, &w, 1)?;
//! assert_eq!(out.len(), plan.irreps_out.dim());
//! # Ok::<(), kiln::Error>(())
//! ```

pub mod cpu;
pub mod irreps;
pub mod sh;
pub mod tp;
pub mod wigner;

pub use irreps::{Irrep, Irreps, IrrepsError, MulIr, Parity};
pub use sh::{Sh, ShNormalization, ShTable, sh_dim};
pub use tp::{Instruction, IrrepNormalization, Mode, PathNormalization, TpPlan};
pub use wigner::{LMAX, Wigner3j, wigner_3j, wigner_d};
