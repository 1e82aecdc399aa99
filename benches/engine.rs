//! Engine overhead over the in-memory transport.
//!
//! Two things are measured in the same run, so that their ratio means
//! something on a shared, noisy machine:
//!
//! - raw: a ping-pong on the memory broker with no JSON-RPC at all (publish
//!   to a queue, a responder consumes, publishes the payload back to the
//!   caller's inbox, acknowledges);
//! - busrpc: `Client::call` to a `Server` on the same broker.
//!
//! Criterion measures each at 1 call in flight and at 64 in flight. Then a
//! summary records every 1-in-flight round trip in an HDR histogram (p50,
//! p99) and counts calls/s at 64 in flight, and prints the overhead per call
//! (busrpc p50 - raw p50) and the ratios.
//!
//! Every measured loop runs as a task on the runtime's two workers, as a
//! service's callers would. `cargo bench --bench engine` runs it all;
//! `cargo test --benches` runs each benchmark once as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busrpc::memory::MemoryTransport;
use busrpc::{
    header, Client, ClientConfig, Message, Router, RpcError, Server, ServerHandle, Transport,
};
use busrpc_conformance::measure::{latencies, report, throughput, Figures};
use criterion::{Criterion, Throughput};
use futures_util::StreamExt;
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

const SERVICE: &str = "bench";

fn runtime() -> Runtime {
    // The machines these targets are set for have 2 cores.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The busrpc side: an echo service and a client.
struct Rpc {
    client: Client,
    _server: ServerHandle,
}

impl Rpc {
    async fn start(transport: Arc<dyn Transport>) -> Self {
        let router =
            Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let server = Server::new(transport.clone(), SERVICE, router)
            .start()
            .await
            .expect("server");
        let config = ClientConfig::default().timeout(Duration::from_secs(10));
        let client = Client::connect_with(transport, config)
            .await
            .expect("client");
        Rpc {
            client,
            _server: server,
        }
    }

    async fn call(&self, n: u64) {
        let reply: u64 = self.client.call(SERVICE, "echo", (n,)).await.expect("echo");
        assert_eq!(reply, n);
    }
}

/// The raw side: the same trip through the broker with no JSON-RPC. Each
/// caller owns an inbox, as a busrpc client does.
struct Raw {
    transport: Arc<dyn Transport>,
    address: String,
}

impl Raw {
    async fn start(transport: Arc<dyn Transport>) -> Self {
        let address = "raw-bench".to_owned();
        let mut deliveries = transport
            .consume(&address, "raw", busrpc_core::Demand::unbounded())
            .await
            .expect("consume");
        let responder = transport.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let message = delivery.message();
                let to = message
                    .headers
                    .get(header::REPLY_TO)
                    .expect("reply-to")
                    .to_owned();
                let reply = Message::new(message.payload.clone());
                responder.publish(&to, reply).await.expect("reply");
                delivery.ack().await.expect("ack");
            }
        });
        Raw { transport, address }
    }

    async fn caller(&self) -> RawCaller {
        let inbox = self.transport.inbox().await.expect("inbox");
        RawCaller {
            transport: self.transport.clone(),
            address: self.address.clone(),
            reply_to: inbox.address().to_owned(),
            inbox,
        }
    }
}

struct RawCaller {
    transport: Arc<dyn Transport>,
    address: String,
    reply_to: String,
    inbox: busrpc::transport::Inbox,
}

impl RawCaller {
    async fn ping(&mut self, n: u64) {
        let message =
            Message::new(n.to_string()).with_header(header::REPLY_TO, self.reply_to.as_str());
        self.transport
            .publish(&self.address, message)
            .await
            .expect("publish");
        let reply = self.inbox.next().await.expect("open").expect("reply");
        assert_eq!(reply.payload, n.to_string());
    }
}

/// Runs `lanes` concurrent loops of `per_lane` calls each, every loop a task
/// on the runtime's workers (where a service's callers run, rather than on
/// the thread blocking on the runtime); returns the elapsed time.
async fn rpc_lanes(rpc: &Arc<Rpc>, lanes: u64, per_lane: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..lanes)
        .map(|_| {
            let rpc = rpc.clone();
            tokio::spawn(async move {
                for n in 0..per_lane {
                    rpc.call(n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("lane");
    }
    start.elapsed()
}

/// The same for the raw ping-pong; each lane has its own inbox.
async fn raw_lanes(raw: &Raw, lanes: u64, per_lane: u64) -> Duration {
    let mut callers = Vec::new();
    for _ in 0..lanes {
        callers.push(raw.caller().await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            tokio::spawn(async move {
                for n in 0..per_lane {
                    caller.ping(n).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("lane");
    }
    start.elapsed()
}

fn criterion_benches(c: &mut Criterion, rt: &Runtime, rpc: &Arc<Rpc>, raw: &Arc<Raw>) {
    for lanes in [1, 64] {
        let mut group = c.benchmark_group(format!("calls_{lanes}_in_flight"));
        group.throughput(Throughput::Elements(lanes));
        group.bench_function("raw_memory", |b| {
            b.iter_custom(|iters| rt.block_on(raw_lanes(raw, lanes, iters)))
        });
        group.bench_function("busrpc_memory", |b| {
            b.iter_custom(|iters| rt.block_on(rpc_lanes(rpc, lanes, iters)))
        });
        group.finish();
    }
}

/// The summary: every 1-in-flight round trip in an HDR histogram, and
/// calls/s with 64 in flight, for raw and busrpc (shared with the broker benches).
fn summary(rt: &Runtime, rpc: &Arc<Rpc>, raw: &Arc<Raw>, samples: u64, per_lane: u64) -> String {
    rt.block_on(async {
        let caller = Arc::new(Mutex::new(raw.caller().await));
        let raw_latencies = latencies(samples, move |n| {
            let caller = caller.clone();
            async move { caller.lock().await.ping(n).await }
        })
        .await;
        let rpc_latencies = latencies(samples, {
            let rpc = rpc.clone();
            move |n| {
                let rpc = rpc.clone();
                async move { rpc.call(n).await }
            }
        })
        .await;
        let mut callers = Vec::new();
        for _ in 0..64 {
            callers.push(Arc::new(Mutex::new(raw.caller().await)));
        }
        let raw_rate = throughput(64, per_lane, |lane| {
            let caller = callers[usize::try_from(lane).unwrap()].clone();
            move |n| {
                let caller = caller.clone();
                async move { caller.lock().await.ping(n).await }
            }
        })
        .await;
        let rpc_rate = throughput(64, per_lane, |_| {
            let rpc = rpc.clone();
            move |n| {
                let rpc = rpc.clone();
                async move { rpc.call(n).await }
            }
        })
        .await;
        report(
            &format!(
                "engine summary (memory transport, 2 worker threads; {samples} round trips at 1 in flight, 64 x {per_lane} calls in flight for calls/s)"
            ),
            &Figures::new(&raw_latencies, raw_rate),
            &Figures::new(&rpc_latencies, rpc_rate),
        )
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = runtime();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let rpc = Arc::new(rt.block_on(Rpc::start(transport.clone())));
    let raw = Arc::new(rt.block_on(Raw::start(transport)));

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_benches(&mut criterion, &rt, &rpc, &raw);
    criterion.final_summary();

    // As a test (`cargo test`), a short pass shows the summary works.
    let (samples, per_lane) = if full { (50_000, 5_000) } else { (200, 10) };
    println!();
    print!("{}", summary(&rt, &rpc, &raw, samples, per_lane));
}
