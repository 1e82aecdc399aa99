//! The test suite every busrpc [`Transport`] must pass.
//!
//! A backend hands in a [`Harness`] (how to connect to the broker under test,
//! and what that broker can do) and expands [`suite!`] in one of its
//! integration tests; every test becomes a `#[tokio::test]` of its own, on a
//! service name of its own, so the suite runs in parallel and no test sees
//! another's leftovers.
//!
//! ```ignore
//! // crates/busrpc-<broker>/tests/conformance.rs
//! struct MyBroker;
//! #[async_trait::async_trait]
//! impl busrpc_conformance::Harness for MyBroker { /* ... */ }
//! busrpc_conformance::suite!(MyBroker);
//! ```
//!
//! A test whose capability the broker lacks prints `skipped: <test>: <reason>`
//! and passes.
//!
//! Set `BUSRPC_TEST_LOG` to a tracing filter (`busrpc_kafka=debug`) to see
//! what the transports log during a run.

pub mod hostile;
pub mod tests;
mod typed;

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
}

impl Capabilities {
    /// A broker that hands a dead consumer's deliveries over within
    /// `redelivery` and delivers within `latency`.
    pub fn new(redelivery: Result<Duration, &'static str>, latency: Duration) -> Self {
        Self {
            redelivery,
            latency,
            lease: None,
        }
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

/// Expands to one `#[tokio::test]` per conformance test, each calling
/// [`tests`]`::<name>(&harness)` with a harness built by `$harness`, on a
/// 2-worker runtime.
///
/// `suite!(harness, current_thread)` also runs the failure-path cases
/// (slow handlers, refused replies, shutdown, bad input, bounds) again on a
/// current-thread runtime, in a module `current_thread`: services embed
/// busrpc in either flavour, and a transport that blocks its worker, or
/// leans on another worker to make progress, fails there.
///
/// `suite!(harness, macro_calls)` runs those cases of calls again, in a
/// module `macro_built`, against the same service written with
/// `#[busrpc::service]`.
///
/// `suite!(harness, calls_only)` runs only the cases of calls, replies and
/// the specification's examples, not the failure paths: for a second
/// configuration of a backend that changes how replies travel (Kafka's
/// shared inbox), whose failure paths the full suite proves already.
#[macro_export]
macro_rules! suite {
    ($harness:expr) => {
        $crate::suite!($harness, calls_only);
        $crate::suite!(@failure_paths multi_thread $harness);
    };
    ($harness:expr, calls_only) => {
        $crate::suite!(@each multi_thread $harness;
            call_and_response,
            a_service_describes_its_methods,
            a_service_answers_rpc_discover,
            handlers_see_their_context,
            typed_errors_reach_the_caller,
            notification_gets_no_reply,
            client_batch,
            spec_positional_params,
            spec_named_params,
            spec_notifications,
            spec_unknown_method,
            spec_invalid_json,
            spec_invalid_request,
            spec_batch_invalid_json,
            spec_empty_array,
            spec_invalid_batch_not_empty,
            spec_invalid_batch,
            spec_batch,
            spec_batch_all_notifications,
            concurrent_clients_reach_their_own_replies,
            msgpack_calls,
            forged_and_replayed_replies_are_dropped,
        );
    };
    ($harness:expr, macro_calls) => {
        /// The calls again, the service built by `#[busrpc::service]`.
        mod macro_built {
            #[allow(unused_imports)]
            use super::*;
            $crate::suite!($crate::MacroBuilt($harness), calls_only);
        }
    };
    ($harness:expr, current_thread) => {
        $crate::suite!($harness);
        /// The failure-path cases again, on a current-thread runtime.
        mod current_thread {
            #[allow(unused_imports)]
            use super::*;
            $crate::suite!(@failure_paths current_thread $harness);
        }
    };
    (@failure_paths $flavor:ident $harness:expr) => {
        $crate::suite!(@each $flavor $harness;
            panicking_handler_answers_internal_error_and_server_goes_on,
            slow_handler_times_out_and_late_reply_is_dropped,
            expired_request_is_not_executed,
            server_death_leaves_request_to_another_instance,
            graceful_shutdown_answers_what_is_in_hand,
            a_server_is_ready_while_it_serves,
            shutdown_grace_releases_to_another_instance,
            oversized_message_is_refused,
            oversized_batch_is_refused_per_call,
            bad_input_without_reply_to_is_counted_and_dropped,
            unsupported_content_type_is_a_parse_error,
            client_bounds_calls_in_flight,
            server_bounds_concurrent_handlers,
            stray_replies_are_dropped_and_counted,
            closed_client_fails_pending_calls,
            msgpack_with_trailing_bytes_is_a_parse_error,
            malformed_deadline_is_an_invalid_request,
            empty_message_is_an_invalid_request,
            a_handler_slower_than_the_lease_runs_once,
            queued_requests_run_once_each,
            oversized_reply_is_answered_with_an_error_once,
            batch_calls_count_against_concurrency,
            a_handler_past_its_deadline_is_cancelled,
            handlers_see_their_deadline,
            stale_notifications_are_not_run,
            a_stopped_server_leaves_nothing_to_answer_twice,
            a_publish_beyond_the_queue_bound_is_rejected,
            a_service_never_served_is_refused_at_once,
            hostile_inputs_get_their_exact_answers,
            unsigned_and_forged_requests_are_dropped_unrun,
            keys_rotate_without_a_failed_call,
        );
    };
    (@each multi_thread $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::log_if_asked();
                let harness = $harness;
                $crate::tests::$name(&harness).await;
            }
        )*
    };
    (@each current_thread $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "current_thread")]
            async fn $name() {
                $crate::log_if_asked();
                let harness = $harness;
                $crate::tests::$name(&harness).await;
            }
        )*
    };
}
