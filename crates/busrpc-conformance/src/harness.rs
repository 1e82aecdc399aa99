//! What a backend hands the suite: how to connect to its broker and what
//! that broker can do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busrpc_core::Transport;

/// Logs to the test output when `BUSRPC_TEST_LOG` holds a filter (as
/// `RUST_LOG` would, e.g. `busrpc_kafka=debug`): how a flaky run is seen
/// from the inside. Without it the suite logs nothing.
pub fn log_if_asked() {
    let Ok(filter) = std::env::var("BUSRPC_TEST_LOG") else {
        return;
    };
    // Every test calls this; the first one installs the subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

/// The variable that turns a test's missing helper into a failure:
/// scripts/test.sh sets it, so a run meant to prove everything cannot go
/// green having skipped what it could not run.
pub const REQUIRE_HELPERS: &str = "BUSRPC_REQUIRE_HELPERS";

/// Says that `test` cannot run on this machine because `why` (a
/// redis-server, Tansu or a Python is missing): with [`REQUIRE_HELPERS`]
/// set (to anything but `0`) it panics, failing the test; otherwise it
/// prints `skipped: <test>: <why>` and the caller returns.
///
/// Only for a helper outside the repository. A case that does not apply to
/// a broker (its [`Capabilities`] say so) is not a skip and does not call
/// this.
pub fn cannot_run(test: &str, why: &str) {
    if required(std::env::var(REQUIRE_HELPERS).ok().as_deref()) {
        panic!("{test} cannot run: {why} ({REQUIRE_HELPERS} is set, so this fails instead of skipping)");
    }
    println!("skipped: {test}: {why}");
}

fn required(value: Option<&str>) -> bool {
    matches!(value, Some(v) if !v.is_empty() && v != "0")
}

/// What the broker under test can do, and how fast, so that the suite's
/// waits fit it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Capabilities {
    /// Within how long the deliveries of a consumer that died reach another
    /// member of its group; `Err(reason)` if the broker cannot hand them over.
    pub redelivery: Result<Duration, &'static str>,
    /// A generous bound on one message's trip from publish to consumer on
    /// this broker, used to size timeouts (never asserted on).
    pub latency: Duration,
    /// How long a delivery may stay unsettled before the broker would hand
    /// it to another member were its consumer not keeping it (Redis:
    /// `claim_idle_ms`); `None` where the broker never takes deliveries
    /// from a live consumer. Tests of slow handlers outlast it.
    pub lease: Option<Duration>,
    /// Within how long [`Transport::members`] stops counting a server that
    /// died (one that stops cleanly is gone at once); `Err(reason)` where
    /// the transport cannot tell who serves, so that calls to a service
    /// nobody serves wait for their timeout.
    pub servers_known: Result<Duration, &'static str>,
    /// Whether the transport broadcasts cancel notices to a service's
    /// servers ([`Transport::broadcast`]); `Err(reason)` where it cannot,
    /// so that calls their callers give up on run on.
    pub cancels: Result<(), &'static str>,
}

impl Capabilities {
    /// A broker that hands a dead consumer's deliveries over within
    /// `redelivery` and delivers within `latency`.
    pub fn new(redelivery: Result<Duration, &'static str>, latency: Duration) -> Self {
        Self {
            redelivery,
            latency,
            lease: None,
            servers_known: Err("the harness does not say whether its transport knows who serves"),
            cancels: Err("the harness does not say whether its transport broadcasts"),
        }
    }

    /// Sets [`cancels`](Self::cancels).
    #[must_use]
    pub fn with_cancels(mut self, cancels: Result<(), &'static str>) -> Self {
        self.cancels = cancels;
        self
    }

    /// Sets [`servers_known`](Self::servers_known).
    #[must_use]
    pub fn with_servers_known(mut self, known: Result<Duration, &'static str>) -> Self {
        self.servers_known = known;
        self
    }

    /// Sets [`lease`](Self::lease).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// How the suite's service is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// A `Router` with a closure per method.
    Router,
    /// The same methods as a trait with `#[busrpc::service]`.
    Macro,
}

/// A harness whose service is built with `#[busrpc::service]`.
pub struct MacroBuilt<H>(pub H);

#[async_trait::async_trait]
impl<H: Harness> Harness for MacroBuilt<H> {
    async fn connect(&self) -> Arc<dyn Transport> {
        self.0.connect().await
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn connect_bounded(&self, bound: usize) -> Option<Arc<dyn Transport>> {
        self.0.connect_bounded(bound).await
    }

    fn flavor(&self) -> Flavor {
        Flavor::Macro
    }
}

/// How the suite reaches the broker under test.
#[async_trait::async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A new connection to the broker, as a separate process would have.
    async fn connect(&self) -> Arc<dyn Transport>;

    /// What the broker can do.
    fn capabilities(&self) -> Capabilities;

    /// A connection to a broker whose request queues each hold at most
    /// `bound` messages, for the overload contract; `None` (the default)
    /// where queues have no bound of their own (Kafka's are logs, bounded
    /// by retention), and the test skips.
    async fn connect_bounded(&self, bound: usize) -> Option<Arc<dyn Transport>> {
        let _ = bound;
        None
    }

    /// How the suite's service is built (default: a `Router`).
    fn flavor(&self) -> Flavor {
        Flavor::Router
    }
}

/// A service name no other test (in this or another process) uses.
pub fn unique_service(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "conf-{test}-{}-{:x}-{}",
        std::process::id(),
        nanos & 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_helper_fails_only_when_helpers_are_required() {
        assert!(!required(None));
        assert!(!required(Some("")));
        assert!(!required(Some("0")));
        assert!(required(Some("1")));
        assert!(required(Some("yes")));
    }
}
