//! The shared conformance suite against librdkafka's in-process mock
//! cluster: one cluster per test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrpc_conformance::{Capabilities, Harness};
use busrpc_core::Transport;
use busrpc_kafka::KafkaTransport;

/// A mock cluster's name, and the cluster itself once connected: a cluster
/// lives only while something refers to it, and a test's cluster must
/// outlive the transports the test drops (a server started and stopped
/// before a client connects).
struct Mock(String, std::sync::OnceLock<Arc<busrpc_kafka::MockBrokers>>);

impl Mock {
    /// Servers hear cancel notices (off by default on Kafka).
    fn new() -> Self {
        Self::with_options("?cancel_notices=true")
    }

    /// Clients read their replies from a shared reply topic.
    fn shared_inbox() -> Self {
        Self::with_options("?inbox=shared&shared_inbox_partitions=2&cancel_notices=true")
    }

    /// Joins may take up to a minute (`join_wait_ms`, 30 s by default):
    /// once, on a fresh machine running eight tests at once on two cores
    /// beside other builds, the third of three servers of
    /// `concurrent_clients_reach_their_own_replies` was not taken into its
    /// group within 30 s (not explained; busrpc's own defaults already set
    /// the group's heartbeat to 1 s and its session to 10 s).
    fn with_options(options: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        Mock(
            format!(
                "kafka-mock://conformance-{}{options}&join_wait_ms=60000",
                N.fetch_add(1, Ordering::Relaxed)
            ),
            std::sync::OnceLock::new(),
        )
    }
}

#[async_trait::async_trait]
impl Harness for Mock {
    async fn connect(&self) -> Arc<dyn Transport> {
        let transport = KafkaTransport::connect(&self.0)
            .await
            .expect("mock cluster");
        if let Some(cluster) = transport.mock_cluster() {
            let _ = self.1.set(cluster.clone());
        }
        Arc::new(transport)
    }

    fn capabilities(&self) -> Capabilities {
        // A consumer that leaves hands its partitions over in a rebalance;
        // the mock holds each fetch for fetch.wait.max.ms.
        Capabilities::new(Ok(Duration::from_secs(15)), Duration::from_millis(100))
            .with_servers_known(Err("the mock cluster cannot describe groups"))
            .with_cancels(Ok(()))
    }
}

busrpc_conformance::suite!(Mock::new(), current_thread);

/// The cases of calls and replies again, with `inbox=shared`.
mod shared_inbox {
    #[allow(unused_imports)]
    use super::*;
    busrpc_conformance::suite!(Mock::shared_inbox(), calls_only);
}
