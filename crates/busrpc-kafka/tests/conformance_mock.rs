//! The shared conformance suite against librdkafka's in-process mock
//! cluster: one cluster per test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrpc_conformance::{Capabilities, Harness};
use busrpc_core::Transport;
use busrpc_kafka::KafkaTransport;

struct Mock(String);

impl Mock {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        Mock(format!(
            "kafka-mock://conformance-{}",
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

#[async_trait::async_trait]
impl Harness for Mock {
    async fn connect(&self) -> Arc<dyn Transport> {
        Arc::new(
            KafkaTransport::connect(&self.0)
                .await
                .expect("mock cluster"),
        )
    }

    fn capabilities(&self) -> Capabilities {
        // A consumer that leaves hands its partitions over in a rebalance;
        // the mock holds each fetch for fetch.wait.max.ms.
        Capabilities::new(Ok(Duration::from_secs(15)), Duration::from_millis(100))
    }
}

busrpc_conformance::suite!(Mock::new(), current_thread);
