//! The `class` example written with a plain `Router`: a closure per
//! method, the state passed to each. examples/class.rs is the same service
//! with `#[busrpc::service]`; this one shows what the macro generates for
//! you, and how to serve methods that no trait describes.
//!
//! ```text
//! cargo run --example class_plain [-- --broker URL]
//! ```

mod common;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use busrpc::{Client, Router, RpcError, Server};

/// A key-value store with counters: the object whose methods are served.
#[derive(Default)]
struct KvStore {
    entries: Mutex<BTreeMap<String, i64>>,
}

impl KvStore {
    fn set(&self, key: String, value: i64) -> Option<i64> {
        self.entries.lock().unwrap().insert(key, value)
    }

    fn get(&self, key: &str) -> Result<i64, RpcError> {
        let entries = self.entries.lock().unwrap();
        entries
            .get(key)
            .copied()
            .ok_or_else(|| RpcError::new(1, "no such key").with_data(key))
    }

    fn incr(&self, key: String, by: i64) -> i64 {
        let mut entries = self.entries.lock().unwrap();
        let value = entries.entry(key).or_default();
        *value += by;
        *value
    }

    fn keys(&self) -> Vec<String> {
        self.entries.lock().unwrap().keys().cloned().collect()
    }

    /// Serves every method of the store, under the method's own name.
    fn router(self: Arc<Self>) -> Router<Arc<Self>> {
        Router::with_state(self)
            .method(
                "set",
                |kv: Arc<Self>, (key, value): (String, i64)| async move {
                    Ok::<_, RpcError>(kv.set(key, value))
                },
            )
            .method("get", |kv: Arc<Self>, (key,): (String,)| async move {
                kv.get(&key)
            })
            .method(
                "incr",
                |kv: Arc<Self>, (key, by): (String, i64)| async move {
                    Ok::<_, RpcError>(kv.incr(key, by))
                },
            )
            .method("keys", |kv: Arc<Self>, (): ()| async move {
                Ok::<_, RpcError>(kv.keys())
            })
    }
}

fn main() -> ExitCode {
    common::run(run)
}

async fn run(url: String) -> Result<(), Box<dyn std::error::Error>> {
    let transport = busrpc::connect(&url).await?;

    let store = Arc::new(KvStore::default());
    let server = Server::new(transport.clone(), "kv", store.router())
        .start()
        .await?;
    println!("serving service \"kv\" on {url}");

    let client = Client::connect(transport).await?;
    let previous: Option<i64> = client.call("kv", "set", ("apples", 3)).await?;
    println!("set apples = 3 (previous: {previous:?})");
    let apples: i64 = client.call("kv", "incr", ("apples", 2)).await?;
    println!("incr apples by 2 -> {apples}");
    let pears: i64 = client.call("kv", "incr", ("pears", 1)).await?;
    println!("incr pears by 1 -> {pears}");
    let keys: Vec<String> = client.call("kv", "keys", ()).await?;
    println!("keys -> {keys:?}");
    let apples: i64 = client.call("kv", "get", ("apples",)).await?;
    println!("get apples -> {apples}");
    match client.call::<i64>("kv", "get", ("plums",)).await {
        Err(busrpc::Error::Rpc(e)) => println!("get plums -> error {}: {}", e.code(), e.message()),
        other => return Err(format!("expected an error for a missing key, got {other:?}").into()),
    }

    client.close().await;
    server.shutdown().await;
    Ok(())
}
