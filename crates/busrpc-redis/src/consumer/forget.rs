//! Removing the consumers of dead servers from the group, once live ones
//! have claimed what they held, so that the group (`XINFO CONSUMERS`, and
//! whatever is built on it) lists only the living.
//!
//! A consumer's `idle` alone cannot tell: Redis 7.0 refreshes it only when
//! the consumer is given an entry, so a live server waiting on an empty
//! stream looks as idle as a dead one. Each live server therefore keeps a
//! key of its own alive ([`alive_key`], refreshed with its keep-alive); a
//! consumer is removed only when that key has expired, it has been idle
//! for `dead_consumer_idle`, and nothing is pending with it.

use std::time::Duration;

use redis::Value;

use super::GroupReader;
use crate::connection::millis;

/// `EVAL`'d with the stream as its key and the group and the idle bound as
/// arguments: removes the consumers idle longer, without an alive key,
/// with nothing pending.
const FORGET_DEAD_SCRIPT: &str = include_str!("../scripts/forget_dead.lua");

/// The key a live consumer of the stream `address` keeps, expiring
/// `dead_consumer_idle` after its server stops refreshing it.
pub(super) fn alive_key(address: &str, consumer: &str) -> String {
    format!("{address}:alive:{consumer}")
}

impl GroupReader {
    /// How often a server looks for dead consumers: twice per
    /// `dead_consumer_idle`, so one is removed at most 1.5 times that after
    /// it last touched Redis; `None` when they are never removed.
    pub(super) fn forget_interval(&self) -> Option<Duration> {
        let idle = self.connection.config.dead_consumer_idle;
        (!idle.is_zero()).then(|| (idle / 2).max(Duration::from_millis(100)))
    }

    /// Removes the group's dead consumers (see
    /// [`RedisConfig::dead_consumer_idle`](crate::RedisConfig::dead_consumer_idle)).
    /// A failure is only logged (a warning the first time): Redis away
    /// fails the next read anyway, and a user whose ACL forbids `EVAL` or
    /// `XINFO` still serves.
    pub(super) async fn forget_dead_consumers(&mut self) {
        let config = &self.connection.config;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FORGET_DEAD_SCRIPT)
            .arg(1)
            .arg(&*self.address)
            .arg(&*self.group)
            .arg(millis(config.dead_consumer_idle));
        match self.connection.query(&cmd).await {
            Ok(Value::Array(removed)) if !removed.is_empty() => {
                let names: Vec<String> = removed
                    .into_iter()
                    .filter_map(|name| redis::from_redis_value(name).ok())
                    .collect();
                tracing::info!(address = %self.address, consumers = ?names, "removed consumers that died from the group");
            }
            Ok(_) => {}
            Err(e) if self.forget_failed => {
                tracing::debug!(address = %self.address, error = %e, "looking for dead consumers failed");
            }
            Err(e) => {
                self.forget_failed = true;
                tracing::warn!(address = %self.address, error = %e, "looking for dead consumers failed; servers killed without a clean stop stay listed in the group (allow EVAL and XINFO, or set dead_consumer_idle_ms=0)");
            }
        }
    }
}
