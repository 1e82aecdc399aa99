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
use criterion::{Criterion, Throughput};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
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
        let mut deliveries = transport.consume(&address, "raw").await.expect("consume");
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

fn criterion_benches(c: &mut Criterion, rt: &Runtime, rpc: &Arc<Rpc>, raw: &Raw) {
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

struct Figures {
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Records `samples` sequential round trips (after a tenth as many to warm
/// up), on a worker thread.
async fn histogram<F, Fut>(samples: u64, mut one: F) -> Histogram<u64>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let task = tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        for n in 0..samples / 10 {
            one(n).await;
        }
        for n in 0..samples {
            let start = Instant::now();
            one(n).await;
            histogram
                .record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
                .expect("record");
        }
        histogram
    });
    task.await.expect("sampling task")
}

fn summary(
    rt: &Runtime,
    rpc: &Arc<Rpc>,
    raw: &Raw,
    samples: u64,
    calls: u64,
) -> (Figures, Figures) {
    rt.block_on(async {
        let caller = Arc::new(Mutex::new(raw.caller().await));
        let raw_hist = histogram(samples, move |n| {
            let caller = caller.clone();
            async move { caller.lock().await.ping(n).await }
        })
        .await;
        let rpc_hist = histogram(samples, {
            let rpc = rpc.clone();
            move |n| {
                let rpc = rpc.clone();
                async move { rpc.call(n).await }
            }
        })
        .await;
        let per_lane = calls.div_ceil(64);
        let raw_rate = (per_lane * 64) as f64 / raw_lanes(raw, 64, per_lane).await.as_secs_f64();
        let rpc_rate = (per_lane * 64) as f64 / rpc_lanes(rpc, 64, per_lane).await.as_secs_f64();
        let figures = |h: &Histogram<u64>, rate| Figures {
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            calls_per_s: rate,
        };
        (figures(&raw_hist, raw_rate), figures(&rpc_hist, rpc_rate))
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = runtime();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let rpc = Arc::new(rt.block_on(Rpc::start(transport.clone())));
    let raw = rt.block_on(Raw::start(transport));

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_benches(&mut criterion, &rt, &rpc, &raw);
    criterion.final_summary();

    // As a test (`cargo test`), a short pass shows the summary works.
    let (samples, calls) = if full { (50_000, 320_000) } else { (200, 640) };
    let (raw_f, rpc_f) = summary(&rt, &rpc, &raw, samples, calls);
    println!();
    println!(
        "engine summary (memory transport, 2 worker threads, {samples} round trips at 1 in flight, {calls} calls at 64 in flight)"
    );
    println!(
        "{:<8} {:>9} {:>9} {:>13}",
        "", "p50 (us)", "p99 (us)", "calls/s @64"
    );
    for (name, f) in [("raw", &raw_f), ("busrpc", &rpc_f)] {
        println!(
            "{name:<8} {:>9.1} {:>9.1} {:>13.0}",
            f.p50_us, f.p99_us, f.calls_per_s
        );
    }
    println!(
        "busrpc/raw: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x; engine overhead per call (p50 difference): {:.1} us",
        rpc_f.p50_us / raw_f.p50_us,
        rpc_f.p99_us / raw_f.p99_us,
        rpc_f.calls_per_s / raw_f.calls_per_s,
        rpc_f.p50_us - raw_f.p50_us
    );
}
