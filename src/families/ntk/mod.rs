//! The empirical neural tangent kernel by sum of logits ("A Fast, Well-Founded Approximation to
//! the Empirical Neural Tangent Kernel", Mohamadi, Bae & Sutherland, ICML 2023): for a network
//! f with O outputs, the pNTK K(x, x′) = J_s(x)·J_s(x′)ᵀ with J_s = (1/√O)·Σ_j ∂f_j/∂θ, an
//! N × N kernel in place of the NO × NO eNTK.
//!
//! For a dense layer z = W·h + b used once per sample, ∂s/∂W = δ·hᵀ and ∂s/∂b = δ (δ the
//! per-sample backprop vector of s = Σ_j f_j / √O), so the layer's share of the kernel is a
//! Hadamard product of two Gram matrices, K_ℓ = (Δ_ℓ·Δ′_ℓᵀ) ⊙ (H_{ℓ−1}·H′_{ℓ−1}ᵀ + c), c = 1 with
//! a bias: 2(P + Q) flops a pair instead of 2·P·Q for the Jacobians' contraction, and no
//! per-sample Jacobian. This layer holds the f64 references ([`cpu`]: the Gram-Hadamard product
//! and its backward, the pNTK of an MLP); the kernel `ntk/gram_hadamard` is issue 27's next step.
//!
//! ```
//! use kiln::ntk::cpu::{Activation, Dense, Mlp, pntk};
//!
//! // One linear layer: the pNTK is x·x′ + 1 whatever the weights.
//! let mlp = Mlp { layers: vec![Dense::new(vec![0.3, -1.2, 2.0, 0.5], Some(vec![0.1, 0.2]), 2, 2)?],
//!                 activation: Activation::Tanh };
//! let k = pntk(&mlp, &[1.0, 2.0], 1, &[3.0, -1.0], 1)?;
//! assert!((k[0] - (1.0 * 3.0 + 2.0 * -1.0 + 1.0)).abs() < 1e-12);
//! # Ok::<(), kiln::Error>(())
//! ```
//!
//! Layer: families. Imports core.

pub mod cpu;
