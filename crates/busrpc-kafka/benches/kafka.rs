//! busrpc calls against a raw rdkafka ping-pong ([`busrpc_kafka::raw`]), on
//! the same broker in the same run, with the same librdkafka settings.
//!
//! Brokers: `BUSRPC_BENCH_KAFKA` (comma-separated URLs; default
//! `kafka://127.0.0.1:9092,kafka-mock://bench`). An unreachable one is
//! skipped, saying so. `cargo bench -p busrpc-kafka --bench kafka`; under
//! `cargo test` a few calls only.

use std::sync::Arc;
use std::time::Duration;

use busrpc_conformance::measure::{paired_latencies, paired_throughput, report, Figures};
use busrpc_core::{Client, ClientConfig, Router, RpcError, Server};
use busrpc_kafka::raw::PingPong;
use busrpc_kafka::KafkaTransport;

async fn measure(url: &str, full: bool) -> String {
    let tag = format!("{}-{}", std::process::id(), url.len());
    let raw = match PingPong::start(url, &tag).await {
        Ok(raw) => Arc::new(raw),
        Err(e) => return format!("skipped: {url}: {e}\n"),
    };
    let service = format!("bench-{tag}");
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server_transport = Arc::new(KafkaTransport::connect(url).await.expect("broker"));
    let fetch_wait = server_transport
        .config()
        .librdkafka_value("fetch.wait.max.ms")
        .unwrap_or("?")
        .to_owned();
    let server = Server::new(server_transport, &service, router)
        .start()
        .await
        .expect("server");
    let client = Client::connect_with(
        Arc::new(KafkaTransport::connect(url).await.expect("broker")),
        ClientConfig::default().timeout(Duration::from_secs(60)),
    )
    .await
    .expect("client");
    let rpc = Arc::new((client, service));
    let raw_once = |raw: Arc<PingPong>| {
        move |n: u64| {
            let raw = raw.clone();
            async move {
                raw.ping(n.to_string().as_bytes())
                    .await
                    .expect("raw round trip")
            }
        }
    };
    let rpc_once = |rpc: Arc<(Client, String)>| {
        move |n: u64| {
            let rpc = rpc.clone();
            async move {
                let reply: u64 = rpc.0.call(&rpc.1, "echo", (n,)).await.expect("echo");
                assert_eq!(reply, n);
            }
        }
    };
    // Both sides warm: groups joined, topics known.
    raw_once(raw.clone())(0).await;
    rpc_once(rpc.clone())(0).await;

    let (samples, rounds, per_lane) = if full { (300, 5, 20) } else { (10, 1, 2) };
    let (raw_latencies, rpc_latencies) =
        paired_latencies(samples, raw_once(raw.clone()), rpc_once(rpc.clone())).await;
    let (raw_rate, rpc_rate) = paired_throughput(
        rounds,
        64,
        per_lane,
        |_| raw_once(raw.clone()),
        |_| rpc_once(rpc.clone()),
    )
    .await;
    server.shutdown().await;
    report(
        &format!(
            "Kafka at {url} ({samples} round trips each at 1 in flight, raw and busrpc in turn; calls/s: median of {rounds} alternating rounds of 64 in flight x {per_lane}; fetch.wait.max.ms={fetch_wait})"
        ),
        &Figures::new(&raw_latencies, raw_rate),
        &Figures::new(&rpc_latencies, rpc_rate),
    )
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let brokers = std::env::var("BUSRPC_BENCH_KAFKA")
        .unwrap_or_else(|_| "kafka://127.0.0.1:9092,kafka-mock://bench".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for url in brokers.split(',') {
        println!("{}", runtime.block_on(measure(url, full)));
    }
}
