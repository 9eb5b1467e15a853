//! Every family's tests in one binary: references on their own, GPU against reference (each
//! GPU test skips without a device), bad input, the C ABI's validation, the kernel build and
//! the emulator's own planted-bug tests.
//! One binary keeps links few and the GPU bundle small.

mod activation;
mod arith;
// The arithmetic task's training example, run by arith.rs with a short budget.
#[allow(dead_code)]
#[path = "../../examples/arith_train.rs"]
mod arith_train;
mod attention;
mod attention_bwd;
mod attention_distance;
mod attention_padded;
mod attention_variants;
mod bench_cases;
mod c_abi;
mod common;
mod dtype_f64;
#[cfg(feature = "emu")]
mod emu;
mod equivariant;
mod equivariant_f64;
mod equivariant_registry;
mod gemnet;
mod glu;
mod glu_mlp;
mod graph;
mod kernels_build;
mod math;
#[cfg(feature = "emu")]
mod model;
mod norm;
mod ntk;
mod padding;
mod ptx;
mod sgcn;
mod tensor;
