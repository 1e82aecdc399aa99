//! busrpc calls against raw Redis Streams ping-pong, on the same Redis in
//! the same run.
//!
//! - raw: XADD a request -> a responder's XREADGROUP -> XADD the reply to the
//!   caller's stream -> the caller's XREAD. The caller side matches replies to
//!   waiting callers by a correlation field, as a busrpc client does by id.
//! - busrpc: `Client::call` to a `Server`, each on its own connections.
//!
//! `cargo bench -p busrpc-redis --bench redis` (Redis at `BUSRPC_REDIS_URL`,
//! default `redis://127.0.0.1:6379`). Under `cargo test` it makes a few
//! calls only, as a smoke test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_conformance::measure::{latencies, report, throughput, Figures};
use busrpc_core::{Client, ClientConfig, Router, RpcError, Server};
use busrpc_redis::RedisTransport;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::oneshot;

fn redis_url() -> String {
    std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn connection(client: &redis::Client) -> MultiplexedConnection {
    // Blocking reads must outlast redis-rs's default response timeout.
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("Redis")
}

fn field<'a>(fields: &'a [Value], name: &str) -> Option<&'a [u8]> {
    fields.chunks(2).find_map(|pair| match pair {
        [Value::BulkString(k), Value::BulkString(v)] if k == name.as_bytes() => Some(v.as_slice()),
        _ => None,
    })
}

/// `[[key, [[id, fields], ...]]]` -> `[(id, fields)]`.
fn entries(reply: Value) -> Vec<(String, Vec<Value>)> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let Some(Value::Array(mut stream)) = streams.into_iter().next() else {
        return Vec::new();
    };
    let Some(Value::Array(list)) = stream.pop() else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|entry| match entry {
            Value::Array(mut pair) if pair.len() == 2 => match (pair.pop(), pair.pop()) {
                (Some(Value::Array(fields)), Some(Value::BulkString(id))) => {
                    Some((String::from_utf8_lossy(&id).into_owned(), fields))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The raw side, written as plainly as a hand-rolled client would be.
struct Raw {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    commands: MultiplexedConnection,
    requests: String,
    replies: String,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
}

impl Raw {
    async fn start(client: &redis::Client, prefix: &str) -> Arc<Self> {
        let requests = format!("{prefix}:raw-requests");
        let replies = format!("{prefix}:raw-replies");
        let mut commands = connection(client).await;
        let _: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&requests)
            .arg("raw")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut commands)
            .await;
        // The responder: XREADGROUP, then XADD each reply, pipelined.
        let mut reader = connection(client).await;
        let mut writer = connection(client).await;
        let stream = requests.clone();
        let responder = tokio::spawn(async move {
            loop {
                let reply: Value = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg("raw")
                    .arg("responder")
                    .arg("COUNT")
                    .arg(128)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut reader)
                    .await
                    .expect("XREADGROUP");
                let mut pipe = redis::pipe();
                for (_, fields) in entries(reply) {
                    let (Some(to), Some(n), Some(payload)) = (
                        field(&fields, "reply-to"),
                        field(&fields, "n"),
                        field(&fields, "payload"),
                    ) else {
                        continue;
                    };
                    pipe.cmd("XADD")
                        .arg(to)
                        .arg("*")
                        .arg("n")
                        .arg(n)
                        .arg("payload")
                        .arg(payload)
                        .ignore();
                }
                if !pipe.is_empty() {
                    let _: () = pipe.query_async(&mut writer).await.expect("XADD replies");
                }
            }
        });
        // The caller side's reader: XREAD, hand each reply to its caller.
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let mut inbox = connection(client).await;
        let (stream, table) = (replies.clone(), waiting.clone());
        let reader = tokio::spawn(async move {
            let mut last = "$".to_owned();
            loop {
                let reply: Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(128)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&last)
                    .query_async(&mut inbox)
                    .await
                    .expect("XREAD");
                for (id, fields) in entries(reply) {
                    last = id;
                    let n =
                        field(&fields, "n").and_then(|n| std::str::from_utf8(n).ok()?.parse().ok());
                    let waiter = n.and_then(|n: u64| table.lock().unwrap().remove(&n));
                    if let (Some(waiter), Some(payload)) = (waiter, field(&fields, "payload")) {
                        let _ = waiter.send(payload.to_vec());
                    }
                }
            }
        });
        Arc::new(Raw {
            tasks: vec![responder, reader],
            commands,
            requests,
            replies,
            waiting,
        })
    }

    async fn ping(&self, n: u64) {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(n, tx);
        let payload = n.to_string();
        let _: Value = redis::cmd("XADD")
            .arg(&self.requests)
            .arg("*")
            .arg("n")
            .arg(n)
            .arg("reply-to")
            .arg(&self.replies)
            .arg("payload")
            .arg(&payload)
            .query_async(&mut self.commands.clone())
            .await
            .expect("XADD request");
        let reply = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("raw reply in time")
            .unwrap();
        assert_eq!(reply, payload.as_bytes());
    }
}

struct Rpc {
    client: Client,
}

impl Rpc {
    async fn start(url: &str) -> (Arc<Self>, busrpc_core::ServerHandle) {
        let server_transport = Arc::new(RedisTransport::connect(url).await.expect("Redis"));
        let router =
            Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let server = Server::new(server_transport, "bench", router)
            .start()
            .await
            .expect("server");
        let client_transport = Arc::new(RedisTransport::connect(url).await.expect("Redis"));
        let config = ClientConfig::default().timeout(Duration::from_secs(10));
        let client = Client::connect_with(client_transport, config)
            .await
            .expect("client");
        (Arc::new(Rpc { client }), server)
    }

    async fn call(&self, n: u64) {
        let reply: u64 = self.client.call("bench", "echo", (n,)).await.expect("echo");
        assert_eq!(reply, n);
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = match redis::Client::open(redis_url()) {
            Ok(client) if client.get_multiplexed_async_connection().await.is_ok() => client,
            _ => {
                println!("skipped: the Redis bench: no Redis at {} (scripts/test.sh starts one)", redis_url());
                return;
            }
        };
        let prefix = format!("busrpc-bench-{}", std::process::id());
        let url = format!("{}?prefix={prefix}", redis_url());
        let (samples, per_lane) = if full { (20_000, 500) } else { (50, 4) };
        const LANES: u64 = 64;

        let raw = Raw::start(&client, &prefix).await;
        let (rpc, server) = Rpc::start(&url).await;

        // BUSRPC_BENCH_SKIP_LATENCY=1 measures throughput only (for profiling).
        let samples = if std::env::var_os("BUSRPC_BENCH_SKIP_LATENCY").is_some() { 10 } else { samples };
        let raw_latencies = latencies(samples, { let raw = raw.clone(); move |n| { let raw = raw.clone(); async move { raw.ping(n).await } } }).await;
        let rpc_latencies = latencies(samples, { let rpc = rpc.clone(); move |n| { let rpc = rpc.clone(); async move { rpc.call(n).await } } }).await;
        let raw_rate = throughput(LANES, per_lane, |lane| {
            let raw = raw.clone();
            move |n| { let raw = raw.clone(); async move { raw.ping(1_000_000 * (lane + 1) + n).await } }
        })
        .await;
        let rpc_rate = throughput(LANES, per_lane, |_| {
            let rpc = rpc.clone();
            move |n| { let rpc = rpc.clone(); async move { rpc.call(n).await } }
        })
        .await;

        print!(
            "{}",
            report(
                &format!(
                    "Redis Streams at {} ({samples} round trips at 1 in flight; {LANES} in flight x {per_lane} for calls/s; 2 worker threads)",
                    redis_url()
                ),
                &Figures::new(&raw_latencies, raw_rate),
                &Figures::new(&rpc_latencies, rpc_rate),
            )
        );
        server.shutdown().await;
        raw.tasks.iter().for_each(tokio::task::JoinHandle::abort);
        let mut conn = client.get_multiplexed_async_connection().await.expect("Redis");
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query_async(&mut conn).await.unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
        }
    });
}
