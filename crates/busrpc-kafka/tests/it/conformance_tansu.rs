//! The shared conformance suite against a real Kafka-protocol broker:
//! `BUSRPC_KAFKA_URL` (default kafka://127.0.0.1:9092; scripts/test.sh
//! starts Tansu there).

use std::sync::Arc;
use std::time::Duration;

use busrpc_conformance::{Capabilities, Harness};
use busrpc_core::Transport;
use busrpc_kafka::KafkaTransport;

fn kafka_url() -> String {
    std::env::var("BUSRPC_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".to_owned())
}

struct Broker;

#[async_trait::async_trait]
impl Harness for Broker {
    async fn connect(&self) -> Arc<dyn Transport> {
        // One record per batch: Tansu 0.6.0 answers a fetch from an offset
        // inside a record batch with the batches after it, so a partition
        // resumed, or taken over from a commit, inside a batch would skip
        // the rest of that batch (see docs/decisions/0022-tansu-fetch-faults.md).
        // Servers hear cancel notices (off by default on Kafka).
        let url = format!(
            "{}?partitions=3&batch.num.messages=1&cancel_notices=true",
            kafka_url()
        );
        Arc::new(
            KafkaTransport::connect(&url).await.unwrap_or_else(|e| {
                panic!("{e} (scripts/test.sh starts Tansu at BUSRPC_KAFKA_URL)")
            }),
        )
    }

    fn capabilities(&self) -> Capabilities {
        // A member that died leaves its group when its session times out
        // (session.timeout.ms, 10 s).
        Capabilities::new(Ok(Duration::from_secs(20)), Duration::from_millis(200))
            .with_servers_known(Ok(Duration::from_secs(11)))
            .with_cancels(Ok(()))
    }
}

busrpc_conformance::suite!(Broker, current_thread);
