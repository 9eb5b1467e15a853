//! S-GCN ("Spherical convolutions on molecular graphs for protein model quality assessment",
//! Igashov et al.): the spherical harmonics of a neighbour's direction in the residue's local
//! frame, in the featurizer's layout and normalisation, and the spherical graph convolution
//! out[i] = act(X[i]·W0 + Σ_k Σ_{e: recv_e = i} c_e·sh[e, k]·X[send_e]·W_k + b). This layer holds
//! the f64 references ([`cpu`]); the kernels and registry entries are issue 28's next steps.
//!
//! ```
//! use kiln::sgcn::cpu::sh;
//!
//! // Order 2: Y_0^0, then for l = 1: −2·Im Y_1^1, Re Y_1^0, 2·Re Y_1^1. Along z only Y_l^0 lives.
//! let y = sh(&[0.0, 0.0, 2.0], 2)?;
//! let c = (3.0 / (4.0 * std::f64::consts::PI)).sqrt();
//! assert!(y[1].abs() < 1e-15 && (y[2] - c).abs() < 1e-15 && y[3].abs() < 1e-15);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Layer: families. Imports core.

pub mod cpu;
