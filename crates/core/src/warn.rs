//! Warnings: the library never prints; it hands each warning to a sink the host chooses. The JS
//! layer turns them into one line per cause on stderr, or the user's `onWarning` hook.

use std::sync::Arc;

/// A warning with a stable code (e.g. `unknown_model`, `budget_limit_changed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// Stable machine-readable cause; hosts de-duplicate on it.
    pub code: &'static str,
    /// What happened and what to do about it.
    pub message: String,
}

/// Where warnings go.
pub trait WarningSink: Send + Sync + 'static {
    /// Receives one warning. Must not block.
    fn warn(&self, warning: Warning);
}

/// Drops every warning.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreWarnings;

impl WarningSink for IgnoreWarnings {
    fn warn(&self, _warning: Warning) {}
}

/// Collects warnings in memory (for tests and for hosts that poll).
#[derive(Debug, Default)]
pub struct CollectWarnings(parking_lot::Mutex<Vec<Warning>>);

impl CollectWarnings {
    /// Everything received so far, leaving the list empty.
    pub fn take(&self) -> Vec<Warning> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl WarningSink for CollectWarnings {
    fn warn(&self, warning: Warning) {
        self.0.lock().push(warning);
    }
}

/// A shared warning sink.
pub type SharedSink = Arc<dyn WarningSink>;
