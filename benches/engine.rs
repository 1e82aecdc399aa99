//! Engine overhead over the in-memory transport.
//!
//! Two things are measured in the same run, so that their ratio means
//! something on a shared, noisy machine:
//!
//! - raw: [`TransportPingPong`], a ping-pong on the memory broker with no
//!   JSON-RPC at all (publish to a queue, a responder consumes it and
//!   publishes the payload back to the caller's one inbox as it
//!   acknowledges, a reader hands each reply to its waiting ping by a
//!   correlation tag, as a busrpc client does by id);
//! - busrpc: `Client::call` to a `Server` on the same broker.
//!
//! Criterion measures each at 1 call in flight and at 64 in flight. Then a
//! summary, raw and busrpc in turn, records every 1-in-flight round trip in
//! an HDR histogram (p50, p99) and takes the median calls/s of alternating
//! rounds at 64 in flight, and prints the overhead per call (busrpc p50 -
//! raw p50) and the ratios.
//!
//! Every measured loop runs as a task on the runtime's two workers, as a
//! service's callers would. `cargo bench --bench engine` runs it all;
//! `cargo test --benches` runs each benchmark once as a smoke test.
//!
//! With `BUSRPC_BENCH_METRICS=prometheus`, a Prometheus recorder is
//! installed first, so that a run with `--features metrics` measures what
//! metrics cost a service that exports them (without the variable, what the
//! feature costs with no recorder).
//!
//! With `BUSRPC_BENCH_AUTH=1` (and `--features auth`), busrpc's calls go
//! through an authenticated transport: every request and reply signed and
//! checked (HMAC-SHA256), which the raw ping-pong is not.

use std::sync::Arc;
use std::time::Duration;

use busrpc::memory::MemoryTransport;
use busrpc::{Client, ClientConfig, Router, RpcError, Server, ServerHandle, Transport};
use busrpc_bench::measure::{lanes, paired_latencies, paired_throughput, report, Figures};
use busrpc_bench::ping::PING_TIMEOUT;
use busrpc_bench::{Baseline, TransportPingPong};
use criterion::{Criterion, Throughput};
use tokio::runtime::Runtime;

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
        let config = ClientConfig::default().timeout(PING_TIMEOUT);
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

/// One round trip of each side, as the measuring loops take it.
fn rpc_once(
    rpc: &Arc<Rpc>,
) -> impl FnMut(u64) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static {
    let rpc = rpc.clone();
    move |n| {
        let rpc = rpc.clone();
        Box::pin(async move { rpc.call(n).await })
    }
}

fn raw_once(
    raw: &Arc<TransportPingPong>,
) -> impl FnMut(u64) -> futures_util::future::BoxFuture<'static, ()> + Send + 'static {
    let raw = raw.clone();
    move |n| {
        let raw = raw.clone();
        Box::pin(async move {
            raw.ping(n.to_string().as_bytes())
                .await
                .expect("raw round trip")
        })
    }
}

fn criterion_benches(
    c: &mut Criterion,
    rt: &Runtime,
    rpc: &Arc<Rpc>,
    raw: &Arc<TransportPingPong>,
) {
    for in_flight in [1, 64] {
        let mut group = c.benchmark_group(format!("calls_{in_flight}_in_flight"));
        group.throughput(Throughput::Elements(in_flight));
        group.bench_function("raw_memory", |b| {
            b.iter_custom(|iters| rt.block_on(lanes(in_flight, iters, |_| raw_once(raw))))
        });
        group.bench_function("busrpc_memory", |b| {
            b.iter_custom(|iters| rt.block_on(lanes(in_flight, iters, |_| rpc_once(rpc))))
        });
        group.finish();
    }
}

/// The summary: every 1-in-flight round trip in an HDR histogram, and the
/// median calls/s of alternating rounds with 64 in flight, raw and busrpc
/// in turn (as the broker benches measure).
fn summary(
    rt: &Runtime,
    rpc: &Arc<Rpc>,
    raw: &Arc<TransportPingPong>,
    samples: u64,
    per_lane: u64,
) -> String {
    rt.block_on(async {
        let (raw_latencies, rpc_latencies) =
            paired_latencies(samples, raw_once(raw), rpc_once(rpc)).await;
        let rounds = 5;
        let (raw_rate, rpc_rate) =
            paired_throughput(rounds, 64, per_lane, |_| raw_once(raw), |_| rpc_once(rpc)).await;
        report(
            &format!(
                "engine summary (memory transport, 2 worker threads; {samples} round trips at 1 in flight, raw and busrpc in turn; calls/s: median of {rounds} alternating rounds of 64 in flight x {per_lane})"
            ),
            &Figures::new(&raw_latencies, raw_rate),
            &Figures::new(&rpc_latencies, rpc_rate),
        )
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let _metrics = match std::env::var("BUSRPC_BENCH_METRICS").as_deref() {
        Ok("prometheus") => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("the only recorder"),
        ),
        Ok(other) => panic!("BUSRPC_BENCH_METRICS={other:?}: only \"prometheus\" is known"),
        Err(_) => None,
    };
    let rt = runtime();
    let transport: Arc<dyn Transport> = Arc::new(MemoryTransport::new());
    let signed: Arc<dyn Transport> = match std::env::var("BUSRPC_BENCH_AUTH").as_deref() {
        #[cfg(feature = "auth")]
        Ok("1") => {
            let keys = busrpc::auth::Keys::new("bench", [7u8; 32]).expect("a valid key");
            Arc::new(busrpc::auth::Authenticated::new(transport.clone(), keys))
        }
        Ok(other) => panic!("BUSRPC_BENCH_AUTH={other:?}: only \"1\", with --features auth"),
        Err(_) => transport.clone(),
    };
    let rpc = Arc::new(rt.block_on(Rpc::start(signed)));
    let raw = Arc::new(
        rt.block_on(TransportPingPong::start(transport, "raw-bench"))
            .expect("the raw ping-pong"),
    );

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    criterion_benches(&mut criterion, &rt, &rpc, &raw);
    criterion.final_summary();

    // As a test (`cargo test`), a short pass shows the summary works.
    let (samples, per_lane) = if full { (50_000, 1_000) } else { (200, 10) };
    println!();
    print!("{}", summary(&rt, &rpc, &raw, samples, per_lane));
}
