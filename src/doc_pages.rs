//! The pages of docs/ as doctests: every Rust block in them compiles and runs under `cargo test --doc`.

#[doc = include_str!("../README.md")]
pub struct ReadmePage;

#[doc = include_str!("../docs/activation.md")]
pub struct ActivationPage;

#[doc = include_str!("../docs/glu.md")]
pub struct GluPage;

#[doc = include_str!("../docs/padding.md")]
pub struct PaddingPage;

#[doc = include_str!("../docs/norm.md")]
pub struct NormPage;

#[doc = include_str!("../docs/attention.md")]
pub struct AttentionPage;

#[doc = include_str!("../docs/equivariant.md")]
pub struct EquivariantPage;

#[doc = include_str!("../docs/emulator.md")]
pub struct EmulatorPage;

#[doc = include_str!("../docs/gpu.md")]
pub struct GpuPage;

#[doc = include_str!("../docs/arith.md")]
pub struct ArithPage;

#[doc = include_str!("../docs/ntk.md")]
pub struct NtkPage;

#[doc = include_str!("../docs/gemnet.md")]
pub struct GemnetPage;

#[doc = include_str!("../docs/sgcn.md")]
pub struct SgcnPage;

#[doc = include_str!("../docs/graph.md")]
pub struct GraphPage;
