//! The raw baseline (`raw` feature) does the broker work a correct
//! request/reply needs, and leaves nothing behind.

use std::sync::Arc;

use crate::common::{query, Prefix};
use busrpc_bench::Baseline;
use busrpc_core::{Client, Router, RpcError, Server};
use busrpc_redis::raw::PingPong;
use busrpc_redis::RedisTransport;

async fn keys(prefix: &str) -> Vec<String> {
    query(redis::cmd("KEYS").arg(format!("{prefix}:*"))).await
}

/// Before, the responder never acknowledged: its pending list grew by one
/// entry per ping, and the ratio compared busrpc with less work than its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raw_request_is_acknowledged_and_the_stream_trimmed() {
    let prefix = Prefix::new("raw-ack");
    let raw = Arc::new(PingPong::start(&prefix.url("")).await.unwrap());
    let pings = (0..600).map(|n| {
        let raw = raw.clone();
        async move { raw.ping(format!("ping {n}").as_bytes()).await }
    });
    for outcome in futures_util::future::join_all(pings).await {
        outcome.unwrap();
    }
    let requests = format!("{}:raw-requests", prefix.0);
    // XPENDING's summary: [count, smallest, greatest, consumers].
    let pending: redis::Value = query(redis::cmd("XPENDING").arg(&requests).arg("raw")).await;
    let redis::Value::Array(summary) = pending else {
        panic!("XPENDING answered {pending:?}");
    };
    assert_eq!(summary[0], redis::Value::Int(0), "no request left pending");
    // Trimmed after 512 acknowledgements, as a busrpc server trims.
    let length: u64 = query(redis::cmd("XLEN").arg(&requests)).await;
    assert!(
        length < 600,
        "the acknowledged head is trimmed: {length} entries"
    );
    raw.clean_up().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_up_deletes_every_key_of_the_prefix_busrpcs_too() {
    let prefix = Prefix::new("raw-clean");
    let url = prefix.url("");
    let raw = PingPong::start(&url).await.unwrap();
    raw.ping(b"hello").await.unwrap();
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Server::new(
        Arc::new(RedisTransport::connect(&url).await.unwrap()),
        "bench",
        router,
    )
    .start()
    .await
    .unwrap();
    let client = Client::connect(Arc::new(RedisTransport::connect(&url).await.unwrap()))
        .await
        .unwrap();
    let reply: u64 = client.call("bench", "echo", (7,)).await.unwrap();
    assert_eq!(reply, 7);
    assert!(
        keys(&prefix.0).await.len() >= 3,
        "raw and busrpc keys exist"
    );
    client.close().await;
    server.shutdown().await;
    raw.clean_up().await.unwrap();
    assert_eq!(keys(&prefix.0).await, Vec::<String>::new());
    // A second clean-up finds nothing and is no error.
    raw.clean_up().await.unwrap();
}
