//! Taking over what dead consumers left pending, with each entry's own
//! delivery count, and holding off after an outage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use busrpc_core::transport::TransportError;
use redis::Value;

use super::GroupReader;
use crate::connection::{millis, unavailable, Connection};
use crate::entries;

impl GroupReader {
    pub(super) fn claim_interval(&self) -> Duration {
        (self.connection.config.claim_idle / 2)
            .clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// After an outage (see [`GroupReader::query`]): no claim for
    /// claim_idle from now.
    pub(super) fn defer_claims(&mut self, stalled: bool) {
        let after = Instant::now() + self.connection.config.claim_idle;
        if after > self.next_claim {
            tracing::debug!(address = %self.address, stalled, "Redis was away; claims wait claim_idle");
            self.next_claim = after;
        }
    }

    /// Takes over requests left pending longer than `claim_idle` by
    /// consumers that died, each with its delivery count: one past
    /// `max_deliveries` is handed out marked exhausted, for its server to
    /// dead-letter.
    pub(super) async fn claim(&mut self) -> Result<(), TransportError> {
        let connection = self.connection.clone();
        let config = &connection.config;
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&*self.address)
            .arg(&*self.group)
            .arg(&*self.consumer)
            .arg(millis(config.claim_idle))
            .arg("0-0")
            .arg("COUNT")
            .arg(self.wanted());
        let reply = self.query(&cmd, Duration::ZERO).await?;
        let Value::Array(mut parts) = reply else {
            return Ok(());
        };
        if parts.len() < 2 {
            return Ok(());
        }
        let claimed = entries::entries(parts.swap_remove(1));
        if claimed.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = claimed.iter().map(|e| e.id.as_str()).collect();
        let deliveries = delivery_counts(&connection, &self.address, &self.group, &ids).await?;
        for entry in claimed {
            let Some(&count) = deliveries.get(&entry.id) else {
                // Acknowledged since the claim: nobody's to run any more.
                continue;
            };
            // One delivered too often is handed out all the same, marked
            // exhausted: its server dead-letters it (see `RedisAck`).
            tracing::info!(address = %self.address, id = %entry.id, deliveries = count, "claimed a request a dead consumer left");
            self.hold(entry, count);
        }
        Ok(())
    }
}

/// How many times each of `ids` (pending in `group`) has been
/// delivered: one `XPENDING key group id id 1` per id, pipelined, so each
/// count is that entry's own. (One range query over all of them also
/// returns whatever else is pending between them, and its count then
/// cuts off some of the ids asked for.) An id no longer pending has no
/// count.
async fn delivery_counts(
    connection: &Connection,
    address: &str,
    group: &str,
    ids: &[&str],
) -> Result<HashMap<String, u64>, TransportError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut pipe = redis::Pipeline::with_capacity(ids.len());
    for id in ids {
        pipe.cmd("XPENDING")
            .arg(address)
            .arg(group)
            .arg(*id)
            .arg(*id)
            .arg(1);
    }
    let rows: Vec<Value> = pipe
        .query_async(&mut connection.commands())
        .await
        .map_err(unavailable)?;
    Ok(rows.into_iter().flat_map(entries::pending_counts).collect())
}

#[cfg(test)]
mod tests {
    use busrpc_core::Message;

    use super::*;
    use crate::config::RedisConfig;
    use crate::consumer::create_group;
    use crate::entries::xadd;

    /// A connection to the Redis of the integration tests (scripts/test.sh
    /// starts one), and a stream address of the test's own.
    async fn connect(test: &str) -> (Connection, String) {
        let base =
            std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("busrpc-unit-{test}-{}", busrpc_core::transport::unique_id());
        let config = RedisConfig::from_url(&format!("{base}?prefix={prefix}")).unwrap();
        let connection = Connection::open(config)
            .await
            .expect("Redis at BUSRPC_REDIS_URL");
        (connection, format!("{prefix}:svc"))
    }

    /// Ids claimed in a later round, with this consumer's own pending
    /// entries between them: each gets its own count, none a default.
    #[tokio::test]
    async fn delivery_counts_are_exact_for_interleaved_ids() {
        let (connection, address) = connect("counts").await;
        let connection = &connection;
        create_group(connection, &address, "svc").await.unwrap();
        let mut ids = Vec::new();
        for n in 0..4 {
            let message = Message::new(format!("{n}"));
            let id: String = xadd(&address, &message, 100)
                .query_async(&mut connection.commands())
                .await
                .unwrap();
            ids.push(id);
        }
        // One consumer holds all four; two have been delivered many times.
        let _: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("svc")
            .arg("me")
            .arg("STREAMS")
            .arg(&address)
            .arg(">")
            .query_async(&mut connection.commands())
            .await
            .unwrap();
        for (id, count) in [(&ids[1], 7), (&ids[3], 9)] {
            let _: Value = redis::cmd("XCLAIM")
                .arg(&address)
                .arg("svc")
                .arg("me")
                .arg(0)
                .arg(id)
                .arg("RETRYCOUNT")
                .arg(count)
                .query_async(&mut connection.commands())
                .await
                .unwrap();
        }
        // Asked for the second and fourth only, with the third in between.
        let asked = [ids[1].as_str(), ids[3].as_str()];
        let counts = delivery_counts(connection, &address, "svc", &asked)
            .await
            .unwrap();
        assert_eq!(counts.get(&ids[1]), Some(&7));
        assert_eq!(counts.get(&ids[3]), Some(&9));
        assert_eq!(counts.len(), 2);
        // An id no longer pending has no count.
        let _: Value = redis::cmd("XACK")
            .arg(&address)
            .arg("svc")
            .arg(&ids[3])
            .query_async(&mut connection.commands())
            .await
            .unwrap();
        let counts = delivery_counts(connection, &address, "svc", &asked)
            .await
            .unwrap();
        assert_eq!(counts.get(&ids[3]), None);
        let _: Value = redis::cmd("DEL")
            .arg(&address)
            .query_async(&mut connection.commands())
            .await
            .unwrap();
    }
}
