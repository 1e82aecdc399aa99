//! busrpc calls against a raw Redis Streams ping-pong ([`busrpc_redis::raw`]:
//! XADD, XREADGROUP, the reply's XADD with the XACK, XREAD), on the same
//! Redis in the same run, keys under one prefix deleted at the end.
//!
//! `cargo bench -p busrpc-redis --features raw --bench redis` (Redis at `BUSRPC_REDIS_URL`,
//! default `redis://127.0.0.1:6379`). Under `cargo test` it makes a few calls
//! only, as a smoke test. `BUSRPC_BENCH_SKIP_LATENCY=1` measures throughput
//! only (for profiling).

use std::sync::Arc;
use std::time::Duration;

use busrpc_bench::measure::{paired_latencies, paired_throughput, report, Figures};
use busrpc_bench::Baseline;
use busrpc_core::{Client, ClientConfig, Router, RpcError, Server};
use busrpc_redis::raw::PingPong;
use busrpc_redis::RedisTransport;

fn redis_url() -> String {
    std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let url = busrpc_bench::on_own_prefix(&redis_url(), "busrpc-bench");
        let raw = match PingPong::start(&url).await {
            Ok(raw) => Arc::new(raw),
            Err(e) => {
                busrpc_conformance::cannot_run(
                    "the Redis bench",
                    &format!("{e} (scripts/test.sh starts a Redis)"),
                );
                return;
            }
        };
        let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let server = Server::new(Arc::new(RedisTransport::connect(&url).await.expect("Redis")), "bench", router)
            .start()
            .await
            .expect("server");
        let client = Client::connect_with(
            Arc::new(RedisTransport::connect(&url).await.expect("Redis")),
            ClientConfig::default().timeout(Duration::from_secs(10)),
        )
        .await
        .expect("client");
        let rpc = Arc::new(client);
        let raw_once = |raw: Arc<PingPong>| move |n: u64| {
            let raw = raw.clone();
            async move { raw.ping(n.to_string().as_bytes()).await.expect("raw round trip") }
        };
        let rpc_once = |rpc: Arc<Client>| move |n: u64| {
            let rpc = rpc.clone();
            async move {
                let reply: u64 = rpc.call("bench", "echo", (n,)).await.expect("echo");
                assert_eq!(reply, n);
            }
        };

        let (samples, rounds, per_lane) = if full { (20_000, 9, 400) } else { (50, 1, 4) };
        let samples = if std::env::var_os("BUSRPC_BENCH_SKIP_LATENCY").is_some() { 10 } else { samples };
        const LANES: u64 = 64;
        let (raw_latencies, rpc_latencies) =
            paired_latencies(samples, raw_once(raw.clone()), rpc_once(rpc.clone())).await;
        let (raw_rate, rpc_rate) = paired_throughput(
            rounds,
            LANES,
            per_lane,
            |_| raw_once(raw.clone()),
            |_| rpc_once(rpc.clone()),
        )
        .await;
        print!(
            "{}",
            report(
                &format!(
                    "Redis Streams at {} ({samples} round trips each at 1 in flight, raw and busrpc in turn; calls/s: median of {rounds} alternating rounds of {LANES} in flight x {per_lane}; 2 worker threads)",
                    redis_url()
                ),
                &Figures::new(&raw_latencies, raw_rate),
                &Figures::new(&rpc_latencies, rpc_rate),
            )
        );
        server.shutdown().await;
        raw.clean_up().await.expect("the bench's keys deleted");
    });
}
