//! Layer 2, families: each kernel family's safe API (`mod.rs`: one entry per op and
//! direction), its f64 CPU reference (`cpu.rs`) and its launch code (`cuda.rs`, compiled once
//! per kernel library). `selftest` runs the inline-PTX wrappers and special functions alone.
//!
//! May import: core and bindings, and another family's API (attention unpads through padding;
//! the GLUs evaluate activations). Never the registry, the checks or the tools above.

pub mod activation;
pub mod arith;
pub mod attention;
pub mod equivariant;
pub mod gemnet;
pub mod glu;
pub mod graph;
pub mod norm;
pub mod ntk;
pub mod padding;
pub mod selftest;
pub mod sgcn;
