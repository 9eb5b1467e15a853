//! An op's parameters by name: numbers (α, ε, lmax, `causal`) and strings (irreps such as
//! `8x0e+8x1o`, the tensor-product `mode`). Each op declares its parameters and their kind
//! ([`Op::params`](crate::ops::registry::Op::params) numbers, [`Op::string_params`](crate::ops::registry::Op::string_params) strings, with defaults); a value of the
//! other kind is a typed error naming the parameter, never a silent default.

use std::collections::BTreeMap;

use crate::core::error::{Error, Result};

/// One parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A number (flags are 0 or 1, choices are small integers).
    Number(f64),
    /// A string (irreps, modes).
    Str(String),
}

/// Parameters by name, as [`Op::run`](crate::ops::registry::Op::run) receives them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(BTreeMap<String, Param>);

impl From<BTreeMap<String, f64>> for Params {
    fn from(numbers: BTreeMap<String, f64>) -> Params {
        Params(numbers.into_iter().map(|(k, v)| (k, Param::Number(v))).collect())
    }
}

impl Params {
    /// The number `name`, if there is one of that name and kind (the lookup numeric ops have
    /// always made: absent means their default).
    pub fn get(&self, name: &str) -> Option<&f64> {
        match self.0.get(name) {
            Some(Param::Number(v)) => Some(v),
            _ => None,
        }
    }

    /// Sets the number `name`.
    pub fn insert(&mut self, name: String, value: f64) {
        self.0.insert(name, Param::Number(value));
    }

    /// Sets the string `name`.
    pub fn insert_str(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), Param::Str(value.into()));
    }

    /// The number `name`; `Error::InvalidValue` naming it when it is missing or a string.
    pub fn number(&self, name: &'static str) -> Result<f64> {
        match self.0.get(name) {
            Some(Param::Number(v)) => Ok(*v),
            Some(Param::Str(s)) => {
                Err(Error::InvalidValue { arg: name, reason: format!("a number, got the string {s:?}") })
            }
            None => Err(Error::InvalidValue { arg: name, reason: "missing parameter".into() }),
        }
    }

    /// The string `name`; `Error::InvalidValue` naming it when it is missing or a number.
    pub fn string(&self, name: &'static str) -> Result<&str> {
        match self.0.get(name) {
            Some(Param::Str(s)) => Ok(s),
            Some(Param::Number(v)) => {
                Err(Error::InvalidValue { arg: name, reason: format!("a string, got the number {v}") })
            }
            None => Err(Error::InvalidValue { arg: name, reason: "missing parameter".into() }),
        }
    }
}
