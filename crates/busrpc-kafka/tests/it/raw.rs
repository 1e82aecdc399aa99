//! The raw baseline (`raw` feature) does the broker work a correct
//! request/reply needs, and leaves nothing behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{kafka_url, topics};
use busrpc_bench::Baseline;
use busrpc_core::{Client, Router, RpcError, Server};
use busrpc_kafka::raw::PingPong;
use busrpc_kafka::KafkaTransport;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn unique(what: &str) -> String {
    format!(
        "raw-{what}-{}-{}",
        std::process::id(),
        busrpc_core::transport::unique_id()
    )
}

/// Before, the responder never committed: a busrpc server commits what it
/// answered, so the ratio compared busrpc with less work than its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_responder_commits_what_it_answered() {
    let prefix = unique("commits");
    let url = format!("kafka-mock://{prefix}?prefix={prefix}&partitions=3");
    let raw = Arc::new(PingPong::start(&url).await.unwrap());
    let pings = (0..30).map(|n| {
        let raw = raw.clone();
        async move { raw.ping(format!("ping {n}").as_bytes()).await }
    });
    for outcome in futures_util::future::join_all(pings).await {
        outcome.unwrap();
    }
    let transport = KafkaTransport::connect(&url).await.unwrap();
    let bootstrap = transport
        .mock_cluster()
        .unwrap()
        .bootstrap_servers()
        .to_owned();
    let (group, topic) = (format!("{prefix}.raw"), format!("{prefix}.raw-requests"));
    let committed = tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        for partition in 0..3 {
            partitions.add_partition(&topic, partition);
        }
        // Each partition's committed offset counts the requests answered
        // there; the commits land shortly after the replies.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let offsets = reader
                .committed_offsets(partitions.clone(), Duration::from_secs(10))
                .unwrap();
            let total: i64 = offsets
                .elements()
                .iter()
                .filter_map(|e| e.offset().to_raw().filter(|o| *o >= 0))
                .sum();
            if total == 30 || Instant::now() > deadline {
                return total;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
    assert_eq!(committed, 30, "every answered request committed");
    raw.clean_up().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_deletes_every_topic_of_the_prefix_busrpcs_too() {
    let prefix = unique("clean");
    let url = format!("{}?prefix={prefix}", kafka_url());
    let raw = match PingPong::start(&url).await {
        Ok(raw) => raw,
        Err(e) => panic!(
            "Kafka at {} (scripts/test.sh starts Tansu): {e}",
            kafka_url()
        ),
    };
    raw.ping(b"hello").await.unwrap();
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Server::new(
        Arc::new(KafkaTransport::connect(&url).await.unwrap()),
        "bench",
        router,
    )
    .start()
    .await
    .unwrap();
    let client = Client::connect(Arc::new(KafkaTransport::connect(&url).await.unwrap()))
        .await
        .unwrap();
    let reply: u64 = client.call("bench", "echo", (7,)).await.unwrap();
    assert_eq!(reply, 7);
    let ours = |all: Vec<String>| -> Vec<String> {
        all.into_iter()
            .filter(|t| t.starts_with(&format!("{prefix}.")))
            .collect()
    };
    assert!(
        ours(topics(&url).await).len() >= 3,
        "raw and busrpc topics exist"
    );
    client.close().await;
    drop(client);
    server.shutdown().await;
    raw.clean_up().await.unwrap();
    assert_eq!(ours(topics(&url).await), Vec::<String>::new());
}
