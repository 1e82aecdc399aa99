//! busrpc calls against raw rdkafka ping-pong, on the same broker in the
//! same run, with the same librdkafka settings (busrpc's defaults).
//!
//! - raw: produce a request -> a responder consumes it (consumer group) ->
//!   produces the reply to the caller's topic -> the caller consumes it (by
//!   assign()) and matches it to the waiting call by a correlation header.
//! - busrpc: `Client::call` to a `Server`.
//!
//! Brokers: `BUSRPC_BENCH_KAFKA` (comma-separated URLs; default
//! `kafka://127.0.0.1:9092,kafka-mock://bench`). An unreachable one is
//! skipped, saying so. `cargo bench -p busrpc-kafka --bench kafka`; under
//! `cargo test` a few calls only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_conformance::measure::{latencies, report, throughput, Figures};
use busrpc_core::{Client, ClientConfig, Router, RpcError, Server};
use busrpc_kafka::{KafkaTransport, LIBRDKAFKA_DEFAULTS};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig as RdConfig, Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;

fn config(bootstrap: &str) -> RdConfig {
    let mut c = RdConfig::new();
    c.set("bootstrap.servers", bootstrap).set("log_level", "3");
    for (k, v) in LIBRDKAFKA_DEFAULTS {
        c.set(*k, *v);
    }
    c
}

fn header<'a>(message: &'a impl Message, name: &str) -> Option<&'a [u8]> {
    message.headers()?.iter().find(|h| h.key == name)?.value
}

/// The raw side, as a hand-written rdkafka client would do it.
struct Raw {
    producer: FutureProducer,
    requests: String,
    replies: String,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Raw {
    async fn start(transport: &KafkaTransport, bootstrap: &str, tag: &str) -> Arc<Self> {
        let requests = format!("raw-requests-{tag}");
        let replies = format!("raw-replies-{tag}");
        match transport.mock_cluster() {
            Some(mock) => {
                mock.create_topic(&requests, 8).unwrap();
                mock.create_topic(&replies, 1).unwrap();
            }
            None => {
                let admin: AdminClient<DefaultClientContext> = config(bootstrap).create().unwrap();
                let topics = [
                    NewTopic::new(&requests, 8, TopicReplication::Fixed(1)),
                    NewTopic::new(&replies, 1, TopicReplication::Fixed(1)),
                ];
                admin
                    .create_topics(&topics, &AdminOptions::new())
                    .await
                    .unwrap();
            }
        }
        let producer: FutureProducer = config(bootstrap).create().unwrap();
        // The responder: a group member of the requests topic.
        let responder: StreamConsumer = config(bootstrap)
            .set("group.id", format!("raw-{tag}"))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        responder.subscribe(&[&requests]).unwrap();
        let reply_producer = producer.clone();
        let respond = tokio::spawn(async move {
            loop {
                let Ok(request) = responder.recv().await else {
                    continue;
                };
                let (Some(to), Some(n)) = (header(&request, "reply-to"), header(&request, "n"))
                else {
                    continue;
                };
                let (to, n) = (String::from_utf8_lossy(to).into_owned(), n.to_vec());
                let payload = request.payload().unwrap_or_default().to_vec();
                let producer = reply_producer.clone();
                // Replies go out concurrently, as busrpc's server does.
                tokio::spawn(async move {
                    let headers = OwnedHeaders::new().insert(Header {
                        key: "n",
                        value: Some(&n),
                    });
                    let record = FutureRecord::<(), [u8]>::to(&to)
                        .payload(&payload)
                        .headers(headers);
                    let _ = producer.send(record, Timeout::Never).await;
                });
            }
        });
        // The caller side's reader: assign() the reply topic, hand each reply to its caller.
        let inbox: StreamConsumer = config(bootstrap)
            .set("group.id", format!("raw-inbox-{tag}"))
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&replies, 0, Offset::Beginning)
            .unwrap();
        inbox.assign(&assignment).unwrap();
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let table = waiting.clone();
        let read = tokio::spawn(async move {
            loop {
                let Ok(reply) = inbox.recv().await else {
                    continue;
                };
                let n = header(&reply, "n")
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
                if let Some(waiter) = n.and_then(|n| table.lock().unwrap().remove(&n)) {
                    let _ = waiter.send(reply.payload().unwrap_or_default().to_vec());
                }
            }
        });
        Arc::new(Raw {
            producer,
            requests,
            replies,
            waiting,
            tasks: vec![respond, read],
        })
    }

    async fn ping(&self, n: u64) {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(n, tx);
        let id = n.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "n",
                value: Some(id.as_bytes()),
            })
            .insert(Header {
                key: "reply-to",
                value: Some(self.replies.as_bytes()),
            });
        let record = FutureRecord::<(), [u8]>::to(&self.requests)
            .payload(id.as_bytes())
            .headers(headers);
        self.producer
            .send(record, Timeout::Never)
            .await
            .expect("produce");
        let reply = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("raw reply in time")
            .unwrap();
        assert_eq!(reply, id.as_bytes());
    }
}

async fn measure(url: &str, full: bool) -> Option<String> {
    let transport = match KafkaTransport::connect(url).await {
        Ok(t) => t,
        Err(e) => return Some(format!("skipped: {url}: {e}\n")),
    };
    let bootstrap = match transport.mock_cluster() {
        Some(mock) => mock.bootstrap_servers().to_owned(),
        None => url
            .trim_start_matches("kafka://")
            .split('?')
            .next()?
            .to_owned(),
    };
    let tag = format!("{}-{}", std::process::id(), url.len());
    let raw = Raw::start(&transport, &bootstrap, &tag).await;

    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let service = format!("bench-{tag}");
    let server_transport = Arc::new(KafkaTransport::connect(url).await.ok()?);
    let server = Server::new(server_transport, &service, router)
        .start()
        .await
        .ok()?;
    let client = Client::connect_with(
        Arc::new(KafkaTransport::connect(url).await.ok()?),
        ClientConfig::default().timeout(Duration::from_secs(30)),
    )
    .await
    .ok()?;
    // Both sides warm: groups joined, topics known.
    raw.ping(u64::MAX).await;
    let warm: u64 = client
        .call(&service, "echo", (0,))
        .await
        .expect("warm-up call");
    assert_eq!(warm, 0);

    let (samples, per_lane) = if full { (300, 20) } else { (10, 2) };
    let raw_latencies = latencies(samples, {
        let raw = raw.clone();
        move |n| {
            let raw = raw.clone();
            async move { raw.ping(n).await }
        }
    })
    .await;
    let rpc = Arc::new((client, service.clone()));
    let rpc_latencies = latencies(samples, {
        let rpc = rpc.clone();
        move |n| {
            let rpc = rpc.clone();
            async move {
                let reply: u64 = rpc.0.call(&rpc.1, "echo", (n,)).await.expect("echo");
                assert_eq!(reply, n);
            }
        }
    })
    .await;
    let raw_rate = throughput(64, per_lane, |lane| {
        let raw = raw.clone();
        move |n| {
            let raw = raw.clone();
            async move { raw.ping(1_000_000 * (lane + 1) + n).await }
        }
    })
    .await;
    let rpc_rate = throughput(64, per_lane, |_| {
        let rpc = rpc.clone();
        move |n| {
            let rpc = rpc.clone();
            async move {
                let _: u64 = rpc.0.call(&rpc.1, "echo", (n,)).await.expect("echo");
            }
        }
    })
    .await;
    server.shutdown().await;
    raw.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    Some(report(
        &format!(
            "Kafka at {url} ({samples} round trips at 1 in flight; 64 in flight x {per_lane} for calls/s; fetch.wait.max.ms={})",
            transport.config().librdkafka_value("fetch.wait.max.ms").unwrap_or("?")
        ),
        &Figures::new(&raw_latencies, raw_rate),
        &Figures::new(&rpc_latencies, rpc_rate),
    ))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let brokers = std::env::var("BUSRPC_BENCH_KAFKA")
        .unwrap_or_else(|_| "kafka://127.0.0.1:9092,kafka-mock://bench".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for url in brokers.split(',') {
        if let Some(text) = runtime.block_on(measure(url, full)) {
            println!("{text}");
        }
    }
}
