//! Parameters as the command line gives them (`--param NAME=VALUE`), read against an op's
//! declarations. An inherent method of [`Params`] kept here, above the registry, because it
//! needs the op's declarations and the named choices of number parameters (NAMED_VALUES).
//!
//! Layer: tools. Imports core and ops.

use crate::core::error::{Error, Result};
use crate::ops::glu::{GATE_FIRST, GATE_SECOND};
use crate::ops::params::Params;
use crate::ops::registry::Op;

/// Number parameters that take a name for each of their values, besides the number itself:
/// the GLU's gate half, and the spherical harmonics' normalization (kiln.h's
/// kiln_sh_normalization, e3nn's names).
const NAMED_VALUES: &[(&str, &[(&str, f64)])] = &[
    ("gate_half", &[("first", GATE_FIRST), ("second", GATE_SECOND)]),
    ("normalization", &[("component", 0.0), ("norm", 1.0), ("integral", 2.0)]),
];

/// The number `value` gives parameter `name`: a decimal number, or one of its names.
fn number_of(name: &str, value: &str) -> Option<f64> {
    let named = NAMED_VALUES.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, names)| names);
    named.iter().find(|(word, _)| *word == value).map(|&(_, v)| v).or_else(|| value.parse().ok())
}

impl Params {
    /// `op`'s parameters: its defaults, overridden by `given` (`NAME`, `VALUE` pairs as the
    /// command line has them). A number parameter takes a decimal number, or a name where it has
    /// them (NAMED_VALUES: `gate_half=second`, `normalization=integral`); a string parameter
    /// takes the text as it is (the op checks it).
    /// A name `op` does not declare is `Error::InvalidValue` for `param`; a value that is not
    /// a number for a number parameter is `Error::InvalidValue` naming the parameter.
    pub fn for_op(op: &dyn Op, given: &[(String, String)]) -> Result<Params> {
        let mut params = Params::default();
        for &(name, v) in op.params() {
            params.insert(name.into(), v);
        }
        for &(name, v) in op.string_params() {
            params.insert_str(name, v);
        }
        for (name, value) in given {
            if let Some(&(arg, _)) = op.params().iter().find(|p| p.0 == name) {
                let number = number_of(name, value).ok_or_else(|| {
                    let names = NAMED_VALUES
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, names)| names.iter().map(|(word, _)| *word).collect::<Vec<_>>().join(", "));
                    Error::InvalidValue {
                        arg,
                        reason: match names {
                            Some(names) => {
                                format!("{} takes a number or one of {names}, got {value:?}", op.full_name())
                            }
                            None => format!("{} takes a number, got {value:?}", op.full_name()),
                        },
                    }
                })?;
                params.insert(name.clone(), number);
            } else if op.string_params().iter().any(|p| p.0 == name) {
                params.insert_str(name.clone(), value.clone());
            } else {
                let known: Vec<&str> =
                    op.params().iter().map(|p| p.0).chain(op.string_params().iter().map(|p| p.0)).collect();
                return Err(Error::InvalidValue {
                    arg: "param",
                    reason: format!("`{name}` is not a parameter of {} (it takes {known:?})", op.full_name()),
                });
            }
        }
        Ok(params)
    }
}
