//! The operator's side ([`Admin`]): services are the streams under the
//! prefix with a group of their name, a queue's state is `XLEN` and the
//! group's `XINFO GROUPS` line, dead letters are the entries of
//! `{stream}:dead`. Nothing here reads as a consumer: no group is joined,
//! no entry is claimed or acknowledged.

use async_trait::async_trait;
use busrpc_core::transport::{Admin, DeadLetter, QueueState, Transport, TransportError};
use redis::Value;

use crate::connection::unavailable;
use crate::entries::{entries, info_fields as fields, number, text};
use crate::settle::dead_letter_address;
use crate::transport::RedisTransport;

/// Suffixes of the streams beside a service's queue, which are not
/// services.
const NOT_SERVICES: [&str; 2] = [":dead", ":broadcast"];

#[async_trait]
impl Admin for RedisTransport {
    async fn services(&self) -> Result<Vec<String>, TransportError> {
        let connection = self.connection();
        let prefix = format!("{}:", connection.config.prefix);
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .arg("TYPE")
                .arg("stream");
            let (next, keys): (u64, Vec<String>) = scan
                .query_async(&mut connection.commands())
                .await
                .map_err(unavailable)?;
            found.extend(keys.into_iter().filter_map(|key| {
                let name = key.strip_prefix(&prefix)?;
                let beside = name.starts_with("inbox:")
                    || NOT_SERVICES.iter().any(|suffix| name.ends_with(suffix));
                (!beside).then(|| name.to_owned())
            }));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    async fn queue(&self, service: &str) -> Result<Option<QueueState>, TransportError> {
        let connection = self.connection();
        let address = self.service_address(service);
        let mut groups = redis::cmd("XINFO");
        groups.arg("GROUPS").arg(&address);
        let groups = match connection.query(&groups).await {
            Ok(Value::Array(groups)) => groups,
            Ok(_) => return Ok(None),
            Err(e) if e.to_string().contains("no such key") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(group) = groups
            .iter()
            .map(fields)
            .find(|g| g.get("name").and_then(|v| text(v)).as_deref() == Some(service))
        else {
            // A stream nobody ever served as this service.
            return Ok(None);
        };
        let length = len(connection, &address).await?;
        let dead_letters = len(connection, &dead_letter_address(&address)).await?;
        let mut state = QueueState::new(length);
        state.pending = group.get("pending").and_then(|v| number(v));
        // `lag` is Redis 7's; nil when Redis cannot tell (after deletions).
        state.undelivered = group.get("lag").and_then(|v| number(v));
        state.dead_letters = dead_letters;
        Ok(Some(state))
    }

    async fn dead_letters(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError> {
        let dead = dead_letter_address(&self.service_address(service));
        let mut range = redis::cmd("XRANGE");
        range.arg(&dead).arg("-").arg("+").arg("COUNT").arg(limit);
        let listed = self.connection().query(&range).await?;
        Ok(entries(listed)
            .into_iter()
            .map(|entry| {
                let at = entry.added_at();
                let letter = DeadLetter::new(entry.id, entry.message);
                match at {
                    Some(at) => letter.with_at(at),
                    None => letter,
                }
            })
            .collect())
    }

    async fn remove_dead_letter(&self, service: &str, id: &str) -> Result<bool, TransportError> {
        let dead = dead_letter_address(&self.service_address(service));
        let mut del = redis::cmd("XDEL");
        del.arg(&dead).arg(id);
        match self.connection().query(&del).await? {
            Value::Int(n) => Ok(n > 0),
            other => Err(TransportError::Unavailable(
                format!("XDEL answered {other:?}").into(),
            )),
        }
    }
}

async fn len(connection: &crate::connection::Connection, key: &str) -> Result<u64, TransportError> {
    let mut xlen = redis::cmd("XLEN");
    xlen.arg(key);
    Ok(number(&connection.query(&xlen).await?).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_xinfo_groups_line_is_read_in_both_protocols() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let flat = Value::Array(vec![
            bulk("name"),
            bulk("svc"),
            bulk("pending"),
            Value::Int(2),
            bulk("lag"),
            Value::Nil,
        ]);
        let map = Value::Map(vec![
            (bulk("name"), bulk("svc")),
            (bulk("lag"), Value::Int(5)),
        ]);
        let flat = fields(&flat);
        assert_eq!(
            flat.get("name").and_then(|v| text(v)).as_deref(),
            Some("svc")
        );
        assert_eq!(flat.get("pending").and_then(|v| number(v)), Some(2));
        assert_eq!(
            flat.get("lag").and_then(|v| number(v)),
            None,
            "nil: unknown"
        );
        assert_eq!(fields(&map).get("lag").and_then(|v| number(v)), Some(5));
    }
}
