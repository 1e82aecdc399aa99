//! busrpc calls against a raw rdkafka ping-pong ([`busrpc_kafka::raw`]), on
//! the same broker in the same run, with the same librdkafka settings. Then
//! the two inbox modes against each other: clients with reply topics of
//! their own (`inbox=topic`) and as many sharing one reply partition
//! (`inbox=shared`), where each reads every reply to all of them. Each
//! broker is measured in the pipeline dialect too (`dialect=pipeline`, the
//! original Python library's wire), against the same raw ping-pong.
//!
//! Brokers: `BUSRPC_BENCH_KAFKA` (comma-separated URLs; default
//! `kafka://127.0.0.1:9092,kafka-mock://bench`). An unreachable one is
//! skipped, saying so. `cargo bench -p busrpc-kafka --features mock,raw --bench kafka`; under
//! `cargo test` a few calls only.

use std::sync::Arc;

use busrpc_bench::measure::{paired_latencies, paired_throughput, report, Figures};
use busrpc_bench::ping::PING_TIMEOUT;
use busrpc_bench::Baseline;
use busrpc_core::{Client, ClientConfig, Router, RpcError, Server};
use busrpc_kafka::raw::PingPong;
use busrpc_kafka::{KafkaConfig, KafkaTransport};

async fn measure(url: &str, full: bool) -> String {
    let shown = url;
    let url = &busrpc_bench::on_own_prefix(url, "bench-raw");
    let raw = match PingPong::start(url).await {
        Ok(raw) => Arc::new(raw),
        Err(e) => {
            busrpc_conformance::cannot_run(&format!("the bench on {shown}"), &e.to_string());
            return String::new();
        }
    };
    let service = "bench".to_owned();
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    // Either dialect, as the URL says.
    let server_transport = busrpc_kafka::connect(url).await.expect("broker");
    let fetch_wait = KafkaConfig::from_url(url)
        .expect("a Kafka URL")
        .librdkafka_value("fetch.wait.max.ms")
        .unwrap_or("?")
        .to_owned();
    let server = Server::new(server_transport, &service, router)
        .start()
        .await
        .expect("server");
    let client = Client::connect_with(
        busrpc_kafka::connect(url).await.expect("broker"),
        ClientConfig::default().timeout(PING_TIMEOUT),
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
    rpc.0.close().await;
    // The client goes before its inbox topic does: librdkafka crashes the
    // process when a topic is deleted under a consumer still assigned to it.
    drop(rpc);
    raw.clean_up().await.expect("the bench's topics deleted");
    report(
        &format!(
            "Kafka at {shown} ({samples} round trips each at 1 in flight, raw and busrpc in turn; calls/s: median of {rounds} alternating rounds of 64 in flight x {per_lane}; fetch.wait.max.ms={fetch_wait})"
        ),
        &Figures::new(&raw_latencies, raw_rate),
        &Figures::new(&rpc_latencies, rpc_rate),
    )
}

/// Clients per inbox mode in [`inboxes`]: with one shared reply partition,
/// each shared client reads this many replies per reply of its own.
const CLIENTS: u64 = 8;

async fn clients(url: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let transport = Arc::new(KafkaTransport::connect(url).await.expect("broker"));
        let config = ClientConfig::default().timeout(PING_TIMEOUT);
        clients.push(
            Client::connect_with(transport, config)
                .await
                .expect("client"),
        );
    }
    clients
}

/// [`CLIENTS`] clients with inbox topics of their own against as many on
/// one partition of the shared reply topic, calling one server: latency at
/// 1 in flight (one client), throughput at 64 in flight over all of them.
async fn inboxes(url: &str, full: bool) -> String {
    // A prefix of its own, so the shared reply topic is made here, with one
    // partition.
    let url = format!(
        "{}&shared_inbox_partitions=1",
        busrpc_bench::on_own_prefix(url, "bench-inboxes")
    );
    let service = "inboxes";
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server_transport = match KafkaTransport::connect(&url).await {
        Ok(transport) => Arc::new(transport),
        Err(e) => {
            busrpc_conformance::cannot_run(&format!("the bench on {url}"), &e.to_string());
            return String::new();
        }
    };
    let server = Server::new(server_transport, service, router)
        .start()
        .await
        .expect("server");
    let own = Arc::new(clients(&url).await);
    let shared = Arc::new(clients(&format!("{url}&inbox=shared")).await);
    let once = |clients: Arc<Vec<Client>>, lane: u64| {
        move |n: u64| {
            let clients = clients.clone();
            async move {
                let client = &clients[(lane % CLIENTS) as usize];
                let reply: u64 = client.call(service, "echo", (n,)).await.expect("echo");
                assert_eq!(reply, n);
            }
        }
    };
    once(own.clone(), 0)(0).await;
    once(shared.clone(), 0)(0).await;
    let (samples, rounds, per_lane) = if full { (300, 5, 20) } else { (10, 1, 2) };
    let (own_latencies, shared_latencies) =
        paired_latencies(samples, once(own.clone(), 0), once(shared.clone(), 0)).await;
    let (own_rate, shared_rate) = paired_throughput(
        rounds,
        64,
        per_lane,
        |lane| once(own.clone(), lane),
        |lane| once(shared.clone(), lane),
    )
    .await;
    server.shutdown().await;
    let own_figures = Figures::new(&own_latencies, own_rate);
    let shared_figures = Figures::new(&shared_latencies, shared_rate);
    let p50 = |f: &Figures| f.p50.as_secs_f64() * 1e6;
    format!(
        "Inbox modes at {url}: {CLIENTS} clients with reply topics of their own (topic) and {CLIENTS} sharing one reply partition (shared; each reads {CLIENTS} replies per reply of its own)\n\
         topic: p50 {:.1} us, {:.0} calls/s; shared: p50 {:.1} us, {:.0} calls/s; shared/topic: p50 {:.2}x, throughput {:.2}x\n",
        p50(&own_figures),
        own_rate,
        p50(&shared_figures),
        shared_rate,
        p50(&shared_figures) / p50(&own_figures),
        shared_rate / own_rate,
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
        let joiner = if url.contains('?') { '&' } else { '?' };
        let pipeline = format!("{url}{joiner}dialect=pipeline");
        println!("{}", runtime.block_on(measure(&pipeline, full)));
        println!("{}", runtime.block_on(inboxes(url, full)));
    }
}
