//! Who serves a queue: the consumers of its group whose servers vouch for
//! them. A consumer's `idle` cannot tell (Redis 7.0 refreshes it only when
//! the consumer is given an entry), so each live server keeps its alive
//! key holding the Unix time in milliseconds until which it vouches to be
//! alive: three keep-alive periods ahead, renewed every period. A server
//! that stops cleanly deletes it; one that dies stops renewing it, and is
//! no longer counted once that time has passed.

use std::time::Duration;

use busrpc_core::transport::{Member, TransportError};
use busrpc_core::Deadline;
use redis::Value;

use super::forget::alive_key;
use crate::connection::Connection;
use crate::entries::{info_fields, number, text};

/// What a consumer's alive key holds: until when it vouches to be alive.
pub(super) fn vouched_until(ahead: Duration) -> u64 {
    Deadline::after(ahead).0
}

/// The live consumers of `group` on the stream `address`; `None` if there
/// is no such stream or group (the publish says so better).
pub(crate) async fn members(
    connection: &Connection,
    address: &str,
    group: &str,
) -> Result<Option<Vec<Member>>, TransportError> {
    let mut cmd = redis::cmd("XINFO");
    cmd.arg("CONSUMERS").arg(address).arg(group);
    let consumers = match cmd.query_async::<Value>(&mut connection.commands()).await {
        Ok(Value::Array(consumers)) => consumers,
        Ok(other) => {
            return Err(TransportError::Unavailable(
                format!("XINFO CONSUMERS answered {other:?}").into(),
            ))
        }
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
            return Ok(None)
        }
        Err(e) => return Err(crate::connection::unavailable(e)),
    };
    let consumers: Vec<Member> = consumers.iter().filter_map(consumer_of).collect();
    if consumers.is_empty() {
        return Ok(Some(consumers));
    }
    let mut mget = redis::cmd("MGET");
    for c in &consumers {
        mget.arg(alive_key(address, &c.name));
    }
    let vouched: Vec<Option<String>> = mget
        .query_async(&mut connection.commands())
        .await
        .map_err(crate::connection::unavailable)?;
    let now = Deadline::after(Duration::ZERO).0;
    Ok(Some(
        consumers
            .into_iter()
            .zip(vouched)
            .filter(|(_, until)| is_alive(until.as_deref(), now))
            .map(|(member, _)| member)
            .collect(),
    ))
}

/// Whether an alive key's value, read at `now` (Unix ms), vouches for its
/// consumer. A value that is no time (a server of an earlier version wrote
/// `1`) vouches for as long as the key lives.
fn is_alive(until: Option<&str>, now: u64) -> bool {
    /// 2001-09-09 in Unix ms: anything less is no time this code wrote.
    const NO_TIME_BEFORE: u64 = 1_000_000_000_000;
    match until.map(str::parse::<u64>) {
        None => false,
        Some(Ok(until)) if until >= NO_TIME_BEFORE => until > now,
        Some(_) => true,
    }
}

/// One entry of `XINFO CONSUMERS` (a flat list of field and value, or a
/// map under RESP3).
fn consumer_of(entry: &Value) -> Option<Member> {
    let fields = info_fields(entry);
    let mut member = Member::new(text(fields.get("name")?)?.into_owned());
    if let Some(pending) = fields.get("pending").and_then(|v| number(v)) {
        member = member.with_pending(pending);
    }
    if let Some(idle) = fields.get("idle").and_then(|v| number(v)) {
        member = member.with_idle(Duration::from_millis(idle));
    }
    Some(member)
}

/// The milliseconds a server vouches ahead: three keep-alive periods.
pub(super) fn vouch_ahead(period: Duration) -> Duration {
    period * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_is_alive_while_its_server_vouches_for_it() {
        let t = 1_765_000_000_000;
        assert!(is_alive(Some(&t.to_string()), t - 1));
        assert!(!is_alive(Some(&t.to_string()), t));
        assert!(!is_alive(None, 0), "no key: stopped, or long dead");
        assert!(is_alive(Some("1"), u64::MAX), "an earlier version's key");
    }

    #[test]
    fn xinfo_consumers_entries_are_read_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![
            bulk("name"),
            bulk("host-1"),
            bulk("pending"),
            Value::Int(2),
            bulk("idle"),
            Value::Int(1500),
            bulk("inactive"),
            Value::Int(-1),
        ]);
        let expected = Member::new("host-1")
            .with_pending(2)
            .with_idle(Duration::from_millis(1500));
        assert_eq!(consumer_of(&resp2), Some(expected.clone()));
        let resp3 = Value::Map(vec![
            (bulk("name"), bulk("host-1")),
            (bulk("pending"), Value::Int(2)),
            (bulk("idle"), Value::Int(1500)),
        ]);
        assert_eq!(consumer_of(&resp3), Some(expected));
        assert_eq!(consumer_of(&Value::Int(3)), None);
    }
}
