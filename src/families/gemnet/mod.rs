//! GemNet-OC's building blocks (Gasteiger et al. 2022, in the conventions of fairchem's
//! `gemnet_oc`; OC20 configuration: 128 radial functions, 7 spherical, cutoff 12 Å): the
//! polynomial envelope, the Gaussian and spherical-Bessel radial bases, the circular and
//! spherical (`legendre_outer`) bases, and the efficient bilinear interaction in CSR form. This
//! layer holds the f64 references ([`cpu`]); the kernels and registry entries are issue 28's next
//! steps (and S-GCN, the same issue's other half).
//!
//! ```
//! use kiln::gemnet::cpu::envelope;
//!
//! // The envelope falls from 1 at d = 0 to 0 at the cutoff, with a zero derivative there.
//! assert_eq!(envelope(0.0, 5), (1.0, 0.0));
//! let (u, du) = envelope(1.0, 5);
//! assert!(u.abs() < 1e-12 && du.abs() < 1e-12);
//! ```
//!
//! Layer: families. Imports core.

pub mod cpu;
