//! Serve the methods of an object that keeps state, and call several of
//! them: the `class` example of the library busrpc grew out of, written
//! with `#[busrpc::service]` (examples/class_plain.rs: the same with a
//! plain `Router`).
//!
//! ```text
//! cargo run --example class [-- --broker URL]
//! ```

mod common;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Mutex;

use busrpc::{Client, RpcError};

/// A key-value store with counters. The trait is the contract: the server
/// serves it, `KvClient` calls it, and both know the service as "kv".
#[busrpc::service(name = "kv")]
pub trait Kv {
    /// Sets a key; returns its previous value.
    async fn set(&self, key: String, value: i64) -> Result<Option<i64>, RpcError>;
    /// A key's value; error 1 (with the key as data) if it has none.
    async fn get(&self, key: String) -> Result<i64, RpcError>;
    /// Adds `by` to a key (from 0); returns the new value.
    async fn incr(&self, key: String, by: i64) -> Result<i64, RpcError>;
    /// Every key, in order.
    async fn keys(&self) -> Result<Vec<String>, RpcError>;
}

/// The object whose methods are served.
#[derive(Default)]
struct KvStore {
    entries: Mutex<BTreeMap<String, i64>>,
}

impl Kv for KvStore {
    async fn set(&self, key: String, value: i64) -> Result<Option<i64>, RpcError> {
        Ok(self.entries.lock().unwrap().insert(key, value))
    }

    async fn get(&self, key: String) -> Result<i64, RpcError> {
        let entries = self.entries.lock().unwrap();
        entries
            .get(&key)
            .copied()
            .ok_or_else(|| RpcError::new(1, "no such key").with_data(&key))
    }

    async fn incr(&self, key: String, by: i64) -> Result<i64, RpcError> {
        let mut entries = self.entries.lock().unwrap();
        let value = entries.entry(key).or_default();
        *value += by;
        Ok(*value)
    }

    async fn keys(&self) -> Result<Vec<String>, RpcError> {
        Ok(self.entries.lock().unwrap().keys().cloned().collect())
    }
}

fn main() -> ExitCode {
    common::run(run)
}

async fn run(url: String) -> Result<(), Box<dyn std::error::Error>> {
    let transport = busrpc::connect(&url).await?;

    let server = KvServer::new(KvStore::default())
        .into_server(transport.clone())
        .start()
        .await?;
    println!(
        "serving service \"{}\" on {url}",
        KvServer::<KvStore>::SERVICE
    );

    let kv = KvClient::new(Client::connect(transport).await?);
    let previous = kv.set("apples".into(), 3).await?;
    println!("set apples = 3 (previous: {previous:?})");
    let apples = kv.incr("apples".into(), 2).await?;
    println!("incr apples by 2 -> {apples}");
    let pears = kv.incr("pears".into(), 1).await?;
    println!("incr pears by 1 -> {pears}");
    println!("keys -> {:?}", kv.keys().await?);
    println!("get apples -> {}", kv.get("apples".into()).await?);
    match kv.get("plums".into()).await {
        Err(e) => println!("get plums -> error {}: {}", e.code(), e.message()),
        Ok(v) => return Err(format!("expected an error for a missing key, got {v}").into()),
    }

    kv.client().close().await;
    server.shutdown().await;
    Ok(())
}
