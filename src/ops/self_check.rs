//! Checks of a reference against itself (finite differences, identities), as report rows.
//!
//! Layer: ops. Imports the registry's types and the check rows.

use super::check_row::{CheckRow, compare_with};
use super::registry::Op;

/// A reference-check row comparing `analytic` with `expected` at relative tolerance
/// `rtol` (scaled by 1 + |expected|).
pub fn reference_row(op: &dyn Op, what: impl Into<String>, analytic: &[f64], expected: &[f64], rtol: f64) -> CheckRow {
    let c = compare_with(analytic, expected, |i| rtol * (1.0 + expected.get(i).map_or(0.0, |e| e.abs())));
    CheckRow {
        op: op.full_name(),
        dir: "ref".into(),
        dtype: "f64".into(),
        what: what.into(),
        max_err: c.max_err,
        tol: c.tol,
        pass: c.pass,
    }
}
