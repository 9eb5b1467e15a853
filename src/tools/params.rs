//! Parameters as the command line gives them (`--param NAME=VALUE`), read against an op's
//! declarations. An inherent method of [`Params`] kept here, above the registry, because it
//! needs the op's declarations and the GLU's named choices (`first` / `second`).
//!
//! Layer: tools. Imports core and ops.

use crate::core::error::{Error, Result};
use crate::ops::glu::{GATE_FIRST, GATE_SECOND};
use crate::ops::params::Params;
use crate::ops::registry::Op;

impl Params {
    /// `op`'s parameters: its defaults, overridden by `given` (`NAME`, `VALUE` pairs as the
    /// command line has them). A number parameter takes a decimal number, or `first` / `second`
    /// (the GLU's `gate_half`); a string parameter takes the text as it is (the op checks it).
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
                let number = match value.as_str() {
                    "first" => GATE_FIRST,
                    "second" => GATE_SECOND,
                    v => v.parse().map_err(|_| Error::InvalidValue {
                        arg,
                        reason: format!("{} takes a number, got {value:?}", op.full_name()),
                    })?,
                };
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
