//! Helpers shared by the Kafka test files that talk to a real broker.

use std::time::Duration;

/// The broker under test: `BUSRPC_KAFKA_URL`, default kafka://127.0.0.1:9092
/// (scripts/test.sh starts Tansu there).
pub(crate) fn kafka_url() -> String {
    std::env::var("BUSRPC_KAFKA_URL").unwrap_or_else(|_| "kafka://127.0.0.1:9092".to_owned())
}

/// The `host:port` list of a `kafka://` URL, for clients that are not busrpc.
pub(crate) fn bootstrap(url: &str) -> String {
    url.trim_start_matches("kafka://")
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

/// Every topic on the broker of `url`, as a plain client sees them.
pub(crate) async fn topics(url: &str) -> Vec<String> {
    let bootstrap = bootstrap(url);
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect()
    })
    .await
    .unwrap()
}
