//! The shared conformance suite in the pipeline dialect, on librdkafka's
//! in-process mock cluster (one cluster per test): the cases that hold for
//! a wire with no headers, no batches and one receiving server per service.
//!
//! Left out, for what the original's wire cannot carry: the cases that
//! compare raw busrpc messages or send malformed ones by hand (the dialect
//! re-encodes every message as the original's MessagePack), batches
//! (refused: the original has none), deadlines, trace context and
//! signatures (headers), error `data` (the original's error objects hold
//! `code` and `message`), and load shared between servers (one holds the
//! single partition; tests/pipeline.rs checks that the others stand by, and
//! that a holder stopped under load leaves nothing run or answered twice).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrpc_conformance::{Capabilities, Harness};
use busrpc_core::Transport;
use busrpc_kafka::PipelineTransport;

/// A mock cluster's name, and the cluster once connected, kept alive for
/// the test (see conformance_mock.rs).
struct Mock(String, std::sync::OnceLock<Arc<busrpc_kafka::MockBrokers>>);

impl Mock {
    /// Joins may take a minute, as in conformance_mock.rs: once a second
    /// server of `a_handler_slower_than_the_lease_runs_once` was not in its
    /// group within the default 30 s, eight tests running at once.
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        Mock(
            format!(
                "kafka-mock://pipeline-conformance-{}?dialect=pipeline&join_wait_ms=60000",
                N.fetch_add(1, Ordering::Relaxed)
            ),
            std::sync::OnceLock::new(),
        )
    }
}

#[async_trait::async_trait]
impl Harness for Mock {
    async fn connect(&self) -> Arc<dyn Transport> {
        let transport = PipelineTransport::connect(&self.0)
            .await
            .expect("mock cluster");
        if let Some(cluster) = transport.mock_cluster() {
            let _ = self.1.set(cluster.clone());
        }
        Arc::new(transport)
    }

    fn capabilities(&self) -> Capabilities {
        // The partition moves to a standby in a rebalance; the mock holds
        // each fetch for fetch.wait.max.ms.
        Capabilities::new(Ok(Duration::from_secs(15)), Duration::from_millis(100))
            .with_servers_known(Err("the pipeline dialect does not say who serves"))
            .with_cancels(Err("the pipeline dialect has no cancel notices"))
    }
}

macro_rules! pipeline_cases {
    ($flavor:ident) => {
        busrpc_conformance::suite!(@each $flavor Mock::new();
            call_and_response,
            a_service_describes_its_methods,
            a_service_answers_rpc_discover,
            notification_gets_no_reply,
            server_death_leaves_request_to_another_instance,
            graceful_shutdown_answers_what_is_in_hand,
            a_server_is_ready_while_it_serves,
            shutdown_grace_releases_to_another_instance,
            client_bounds_calls_in_flight,
            server_bounds_concurrent_handlers,
            closed_client_fails_pending_calls,
            a_handler_slower_than_the_lease_runs_once,
            queued_requests_run_once_each,
            slow_handler_times_out_and_late_reply_is_dropped,
            a_publish_beyond_the_queue_bound_is_rejected,
            a_service_never_served_is_refused_at_once,
        );
    };
}

pipeline_cases!(multi_thread);

/// The same cases on a current-thread runtime.
mod current_thread {
    use super::*;
    pipeline_cases!(current_thread);
}
