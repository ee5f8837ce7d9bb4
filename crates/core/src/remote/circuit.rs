//! The circuit breaker in front of bursora-server (SPEC §4).
//!
//! After one failure (no answer within the decision timeout, a refused connection, a 5xx) the
//! circuit opens: every later decision is made at once from the fail mode, without touching the
//! network, so no call pays the timeout a second time. One background probe per backoff period
//! (doubling from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]) asks the server whether it is back; when it
//! answers, the circuit closes and the outbox delivers what waited.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// Wait before the first probe.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between probes.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct Circuit {
    open: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// A probe task is running.
    probing: bool,
    /// How many times it opened since it last closed (for messages).
    trips: u64,
}

impl Circuit {
    /// Whether decisions must be made without the server. One atomic load: the hot path.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Opens the circuit. Returns true when the caller must start the probe (exactly one caller
    /// does until the probe ends).
    pub(crate) fn trip(&self) -> bool {
        let mut st = self.state.lock();
        self.open.store(true, Ordering::Release);
        st.trips += 1;
        if st.probing {
            false
        } else {
            st.probing = true;
            true
        }
    }

    /// The probe reached the server: decisions go to it again.
    pub(crate) fn close(&self) {
        let mut st = self.state.lock();
        st.probing = false;
        self.open.store(false, Ordering::Release);
    }

    /// The probe gave up (shutdown) without closing.
    pub(crate) fn probe_ended(&self) {
        self.state.lock().probing = false;
    }
}

/// The wait after `backoff`: doubled, capped.
pub(crate) fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_per_outage_and_backoff_is_capped() {
        let c = Circuit::default();
        assert!(!c.is_open());
        assert!(c.trip(), "the first failure starts the probe");
        assert!(!c.trip(), "later failures do not start a second probe");
        assert!(c.is_open());
        c.close();
        assert!(!c.is_open());
        assert!(c.trip(), "a new outage starts a new probe");
        let mut b = FIRST_BACKOFF;
        for _ in 0..20 {
            b = next_backoff(b);
        }
        assert_eq!(b, MAX_BACKOFF);
    }
}
