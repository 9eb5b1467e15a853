//! Layer 3, ops: the registry. Its entry types ([`registry::Op`], problems, argument specs),
//! the parameters ops take, the rows checks report, and each family's entries (its problems,
//! reference checks, identities, bytes and FLOPs). This file assembles the list of all entries.
//!
//! May import: core and bindings below it, and the families' public APIs. Never imported by a
//! family or the core.

pub mod activation;
pub mod arith;
pub mod attention;
pub mod check_row;
pub mod equivariant;
pub mod glu;
pub mod glu_mlp;
pub mod norm;
pub mod padding;
pub mod params;
pub mod registry;
pub mod self_check;

use crate::core::error::{Error, Result};
use registry::Op;

/// Every op, family by family.
pub fn registry() -> Vec<Box<dyn Op>> {
    let mut ops: Vec<Box<dyn Op>> = Vec::new();
    ops.extend(activation::entries());
    ops.extend(padding::entries());
    ops.extend(norm::entries());
    ops.extend(glu::entries());
    ops.extend(glu_mlp::entries());
    ops.extend(attention::entries());
    ops.extend(equivariant::entries());
    ops.extend(equivariant::tp::entries());
    ops.extend(equivariant::graph::entries());
    ops.extend(arith::entries());
    ops
}

/// The ops whose `<family>/<op>` name contains any of `filters` (all ops when empty).
pub fn select(filters: &[String]) -> Vec<Box<dyn Op>> {
    registry()
        .into_iter()
        .filter(|op| filters.is_empty() || filters.iter().any(|f| op.full_name().contains(f.as_str())))
        .collect()
}

/// The op named exactly `<family>/<op>`.
pub fn find(full_name: &str) -> Result<Box<dyn Op>> {
    registry().into_iter().find(|op| op.full_name() == full_name).ok_or_else(|| Error::UnknownOp(full_name.into()))
}
