//! The reservation ledger.

use std::fmt;

/// Why a reservation was refused: the first `block` budget that could not take it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// Budget name.
    pub name: String,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "budget {:?} exceeded", self.name)
    }
}
