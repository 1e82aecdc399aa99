//! What a group member's readiness says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use busrpc_core::transport::{Readiness, ReadinessSignal};

use crate::connection::lock;

/// How often a consumer whose broker failed asks it for metadata, to learn
/// that it answers again.
pub(super) const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the server's readiness says for a group member: ready once the
/// group has given it its share (from its first assignment to the next
/// revocation) while its broker answers.
pub(crate) struct Health {
    pub(super) signal: ReadinessSignal,
    pub(super) state: Mutex<HealthState>,
    /// Whether `state.broker` is set: read for every record taken, where
    /// the lock would cost more.
    pub(super) failing: AtomicBool,
}

pub(super) struct HealthState {
    /// Why the member holds no assignment now, if it holds none.
    pub(super) unassigned: Option<&'static str>,
    /// The broker's last failure, until it answers again.
    pub(super) broker: Option<String>,
}

impl Health {
    pub(super) fn new() -> Self {
        const JOINING: &str = "joining the consumer group";
        Self {
            signal: ReadinessSignal::new(Readiness::NotReady(JOINING.into())),
            state: Mutex::new(HealthState {
                unassigned: Some(JOINING),
                broker: None,
            }),
            failing: AtomicBool::new(false),
        }
    }

    pub(crate) fn signal(&self) -> ReadinessSignal {
        self.signal.clone()
    }

    pub(super) fn assigned(&self, why_not: Option<&'static str>) {
        let mut state = lock(&self.state);
        state.unassigned = why_not;
        self.publish(&state);
    }

    pub(super) fn broker(&self, failure: Option<String>) {
        if failure.is_none() && !self.broker_failing() {
            return;
        }
        let mut state = lock(&self.state);
        self.failing.store(failure.is_some(), Ordering::Relaxed);
        state.broker = failure;
        self.publish(&state);
    }

    pub(super) fn broker_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    pub(super) fn publish(&self, state: &HealthState) {
        match (state.unassigned, &state.broker) {
            (_, Some(failure)) => self
                .signal
                .not_ready(format!("the Kafka broker is failing: {failure}")),
            (Some(why), None) => self.signal.not_ready(why),
            (None, None) => self.signal.ready(),
        }
    }
}
