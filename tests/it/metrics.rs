//! Metrics (feature `metrics`): what a server and a client hand the
//! `metrics` facade, read back from metrics-util's debugging recorder.
//! Each test serves a service of its own and reads only its labels: the
//! recorder is one for the whole test binary.
#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use busrpc::memory::MemoryTransport;
use busrpc::metrics::*;
use busrpc::{Client, ClientConfig, Message, Router, RpcError, Server, ServerConfig, Transport};
use busrpc_core::testing::ScriptedTransport;
use metrics::Key;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    })
}

/// Everything recorded so far: a snapshot drains what it reads (swaps
/// counters and gauges to 0, empties histograms), so each one is added to
/// what earlier ones read.
#[derive(Default)]
struct Seen {
    counters: HashMap<Key, u64>,
    gauges: HashMap<Key, f64>,
    histograms: HashMap<Key, Vec<f64>>,
}

fn seen() -> MutexGuard<'static, Seen> {
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let mut seen = SEEN.get_or_init(Mutex::default).lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key().clone();
        match value {
            DebugValue::Counter(n) => *seen.counters.entry(key).or_default() += n,
            // Drained too: busrpc's gauges only go up and down by steps,
            // so the steps add up to the value.
            DebugValue::Gauge(g) => *seen.gauges.entry(key).or_default() += g.into_inner(),
            DebugValue::Histogram(h) => seen
                .histograms
                .entry(key)
                .or_default()
                .extend(h.into_iter().map(|v| v.into_inner())),
        }
    }
    seen
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The sum of the counters named `name` whose labels include `labels`.
fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let seen = seen();
    let found = seen
        .counters
        .iter()
        .filter(|(k, _)| matches(k, name, labels));
    found.map(|(_, n)| n).sum()
}

/// The sum of the gauges named `name` with `labels` (0 if never set).
fn gauge(name: &str, labels: &[(&str, &str)]) -> f64 {
    let seen = seen();
    let found = seen.gauges.iter().filter(|(k, _)| matches(k, name, labels));
    found.map(|(_, g)| g).sum()
}

/// The samples of the histograms named `name` with `labels`.
fn samples(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let seen = seen();
    let found = seen
        .histograms
        .iter()
        .filter(|(k, _)| matches(k, name, labels));
    found.flat_map(|(_, h)| h.iter().copied()).collect()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn router(release: Arc<AtomicBool>) -> Router {
    Router::new()
        .method("add", |(a, b): (i64, i64)| async move {
            Ok::<_, RpcError>(a + b)
        })
        .method("boom", |(): ()| async move {
            if true {
                panic!("handler bug");
            }
            Ok::<_, RpcError>(())
        })
        .method("hold", move |(): ()| {
            let release = release.clone();
            async move {
                while !release.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Ok::<_, RpcError>(())
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_errors_latency_and_in_flight_are_recorded_on_both_sides() {
    snapshotter();
    let service = "metrics-calls";
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let release = Arc::new(AtomicBool::new(false));
    let server = Server::new(transport.clone(), service, router(release.clone()))
        .start()
        .await
        .unwrap();
    let client = Client::connect(transport.clone()).await.unwrap();
    let on = |method| [("service", service), ("method", method)];
    until("the server to say it is ready", || {
        gauge(SERVER_READY, &[("service", service)]) == 1.0
    })
    .await;

    assert_eq!(client.call::<i64>(service, "add", (1, 2)).await.unwrap(), 3);
    assert_eq!(client.call::<i64>(service, "add", (3, 4)).await.unwrap(), 7);
    client.notify(service, "add", (5, 6)).await.unwrap();
    let unknown = client.call::<i64>(service, "made-up-name", ()).await;
    assert!(matches!(unknown, Err(busrpc::Error::Rpc(e)) if e.code() == -32601));
    let wrong = client.call::<i64>(service, "add", ("x",)).await;
    assert!(matches!(wrong, Err(busrpc::Error::Rpc(e)) if e.code() == -32602));
    let panicked = client.call::<()>(service, "boom", ()).await;
    assert!(matches!(panicked, Err(busrpc::Error::Rpc(e)) if e.code() == -32603));
    let mut batch = client.batch(service);
    let eight = batch.call("add", (4, 4)).unwrap();
    batch.notify("add", (0, 0)).unwrap();
    assert_eq!(batch.send().await.unwrap().get::<i64>(eight).unwrap(), 8);

    // The notifications ran in the background: wait until both are counted.
    let server_add_ok = |kind| {
        let labels = [("method", "add"), ("kind", kind), ("code", "ok")];
        counter(
            SERVER_REQUESTS,
            &[[("service", service)].as_slice(), &labels].concat(),
        )
    };
    until("the notifications to be counted", || {
        server_add_ok("notification") == 2
    })
    .await;
    assert_eq!(server_add_ok("call"), 3);
    // An unknown method is counted under one label, not under its name.
    let unknown = [
        ("service", service),
        ("method", "(unknown)"),
        ("code", "-32601"),
    ];
    assert_eq!(counter(SERVER_REQUESTS, &unknown), 1);
    assert_eq!(counter(SERVER_REQUESTS, &[("method", "made-up-name")]), 0);
    let wrong = [("service", service), ("method", "add"), ("code", "-32602")];
    assert_eq!(counter(SERVER_REQUESTS, &wrong), 1);
    assert_eq!(counter(SERVER_PANICS, &on("boom")), 1);
    let boom = [("service", service), ("method", "boom"), ("code", "-32603")];
    assert_eq!(counter(SERVER_REQUESTS, &boom), 1);
    assert_eq!(counter(SERVER_RECEIVED, &[("service", service)]), 7);
    until("every delivery to be acknowledged", || {
        counter(SERVER_ACKED, &[("service", service)]) == 7
    })
    .await;
    // One duration per call or notification of `add` that was dispatched:
    // 6, the one whose params have the wrong type among them.
    let durations = samples(SERVER_REQUEST_DURATION, &on("add"));
    assert_eq!(durations.len(), 6, "{durations:?}");
    assert!(durations.iter().all(|s| (0.0..10.0).contains(s)));
    // And as many queue waits: the memory broker knows when each was
    // published.
    let waits = samples(SERVER_QUEUE_WAIT, &on("add"));
    assert_eq!(waits.len(), 6, "{waits:?}");
    assert!(waits.iter().all(|s| (0.0..10.0).contains(s)));

    // The client's side, by how each ended.
    let client_add = |kind, code| {
        let labels = [("method", "add"), ("kind", kind), ("code", code)];
        counter(
            CLIENT_CALLS,
            &[[("service", service)].as_slice(), &labels].concat(),
        )
    };
    assert_eq!(client_add("call", "ok"), 3);
    assert_eq!(client_add("notification", "ok"), 2);
    assert_eq!(client_add("call", "-32602"), 1);
    let client_unknown = [
        ("service", service),
        ("method", "made-up-name"),
        ("code", "-32601"),
    ];
    assert_eq!(counter(CLIENT_CALLS, &client_unknown), 1);
    assert_eq!(samples(CLIENT_CALL_DURATION, &on("add")).len(), 6);

    // In flight: a held call counts on both sides until it is let go.
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.call::<()>(service, "hold", ()).await }
    });
    until("the held call to be in flight on the server", || {
        gauge(SERVER_REQUESTS_IN_FLIGHT, &[("service", service)]) == 1.0
    })
    .await;
    assert_eq!(gauge(CLIENT_CALLS_IN_FLIGHT, &[("service", service)]), 1.0);
    release.store(true, Ordering::SeqCst);
    held.await.unwrap().unwrap();
    until("the server's in-flight gauge to fall back", || {
        gauge(SERVER_REQUESTS_IN_FLIGHT, &[("service", service)]) == 0.0
    })
    .await;
    assert_eq!(gauge(CLIENT_CALLS_IN_FLIGHT, &[("service", service)]), 0.0);
    server.shutdown().await;
    assert_eq!(
        gauge(SERVER_READY, &[("service", service)]),
        0.0,
        "a stopped server is not ready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_replies_are_counted_by_why() {
    snapshotter();
    // The server holds every call until its deadline and then stops it
    // unanswered: the call times out, and the test answers it itself.
    let service = "metrics-unanswered";
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let never = Arc::new(AtomicBool::new(false));
    let server = Server::new(transport.clone(), service, router(never))
        .with_config(ServerConfig::default().cancel_on_deadline(true))
        .start()
        .await
        .unwrap();
    // Its deadline alone stops the held call: no cancel notice races it.
    let config = ClientConfig::default()
        .timeout(Duration::from_millis(50))
        .cancel_on_give_up(false);
    let client = Client::connect_with(transport.clone(), config)
        .await
        .unwrap();
    let timed_out = client.call::<()>(service, "hold", ()).await;
    assert!(
        matches!(timed_out, Err(ref e) if e.is_timeout()),
        "{timed_out:?}"
    );
    until("the server to stop the held call", || {
        server.stats().cancelled == 1
    })
    .await;
    assert_eq!(counter(SERVER_CANCELLED, &[("service", service)]), 1);
    let timeout = [
        ("service", service),
        ("method", "hold"),
        ("code", "timeout"),
    ];
    assert_eq!(counter(CLIENT_CALLS, &timeout), 1);
    assert_eq!(gauge(CLIENT_CALLS_IN_FLIGHT, &[("service", service)]), 0.0);

    let before = |reason| counter(CLIENT_REPLIES_DROPPED, &[("reason", reason)]);
    let (late, duplicate, stray, malformed) = (
        before("late"),
        before("duplicate"),
        before("stray"),
        before("malformed"),
    );
    let reply = |id: &str| Message::new(format!(r#"{{"jsonrpc":"2.0","result":3,"id":{id}}}"#));
    let inbox = client.inbox_address().to_owned();
    // The call above was this client's first: id 1. Its reply now comes
    // late; the same reply again is a duplicate; one for an id the client
    // never used is stray, and so is one with no id it can read.
    transport.publish(&inbox, reply("1")).await.unwrap();
    transport.publish(&inbox, reply("1")).await.unwrap();
    transport.publish(&inbox, reply("77")).await.unwrap();
    transport.publish(&inbox, reply("\"x\"")).await.unwrap();
    transport
        .publish(&inbox, Message::new("not json"))
        .await
        .unwrap();
    until("the replies to be dropped", || {
        client.stats().replies_dropped == 5
    })
    .await;
    // The recorder is shared with the other test, which drops nothing.
    assert_eq!(before("late") - late, 1);
    assert_eq!(before("duplicate") - duplicate, 1);
    assert_eq!(before("stray") - stray, 2);
    assert_eq!(before("malformed") - malformed, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_are_counted() {
    snapshotter();
    let service = "metrics-redelivered";
    // Every delivery says the broker delivered it once before (as a Redis
    // claim or a Kafka redelivery would).
    let (transport, script) = ScriptedTransport::new();
    script.mark_attempts(2);
    let transport: Arc<dyn Transport> = Arc::new(transport);
    let release = Arc::new(AtomicBool::new(true));
    let server = Server::new(transport.clone(), service, router(release))
        .start()
        .await
        .unwrap();
    let client = Client::connect(transport).await.unwrap();
    for n in 0..2 {
        assert_eq!(
            client.call::<i64>(service, "add", (n, 1)).await.unwrap(),
            n + 1
        );
    }
    assert_eq!(counter(SERVER_REDELIVERIES, &[("service", service)]), 2);
    assert_eq!(counter(SERVER_RECEIVED, &[("service", service)]), 2);
    server.shutdown().await;
}

/// The Grafana dashboard queries only metrics busrpc records (a renamed
/// metric would leave a panel empty without a word).
#[test]
fn the_dashboard_queries_only_busrpcs_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana/busrpc.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("busrpc_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // A histogram is queried by its series.
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name)
                    .to_owned();
                queried.push(name);
            }
        }
    }
    let mut unknown: Vec<_> = queried
        .iter()
        .filter(|n| !NAMES.contains(&n.as_str()))
        .collect();
    unknown.dedup();
    assert!(unknown.is_empty(), "not busrpc's metrics: {unknown:?}");
    // The headline series are on it.
    for wanted in [
        SERVER_REQUESTS,
        SERVER_QUEUE_WAIT,
        SERVER_REQUEST_DURATION,
        SERVER_READY,
        DEAD_LETTERED,
        SERVER_REDELIVERIES,
        SERVER_REQUESTS_IN_FLIGHT,
    ] {
        assert!(
            queried.iter().any(|n| n == wanted),
            "{wanted} is not on the dashboard"
        );
    }
}
