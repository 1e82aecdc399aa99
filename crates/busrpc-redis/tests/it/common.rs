//! What the Redis tests share: the server to test against, a key prefix of
//! their own, and the clean-up of every key under it.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busrpc_redis::RedisTransport;

/// The Redis under test: `BUSRPC_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Runs `cmd` on the Redis under test, on a connection of its own.
pub async fn query<T: redis::FromRedisValue>(cmd: &redis::Cmd) -> T {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    cmd.query_async(&mut conn).await.unwrap()
}

/// A key prefix no other test uses; its keys are deleted on drop.
pub struct Prefix(pub String);

impl Prefix {
    pub fn new(test: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        Prefix(format!(
            "busrpc-test-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A URL with this prefix and options that keep recovery fast.
    pub fn url(&self, extra: &str) -> String {
        format!(
            "{}?prefix={}&claim_idle_ms=500&block_ms=200{extra}",
            redis_url(),
            self.0
        )
    }

    pub async fn connect(&self, extra: &str) -> RedisTransport {
        RedisTransport::connect(&self.url(extra))
            .await
            .expect("Redis at BUSRPC_REDIS_URL (scripts/test.sh starts one)")
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.0))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}
