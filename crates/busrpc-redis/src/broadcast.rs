//! Broadcasts to a service's servers (cancel notices): entries of the
//! stream `{address}:broadcast`, which every server reads on a connection
//! of its own with `XREAD` (no group: each reader sees every entry),
//! capped and expiring, so that nothing piles up and a service nobody
//! broadcasts to keeps no key.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use busrpc_core::transport::{Inbox, TransportError};
use busrpc_core::Message;
use futures_util::stream;
use redis::Value;

use crate::connection::{millis, unavailable, BlockingConnection, Connection};
use crate::entries::{entries_of_first_stream, xadd};

/// Entries a broadcast stream keeps (about: trimmed with `~`).
const KEPT: u64 = 1000;

/// How long a broadcast stream outlives its last entry.
const LIVES: Duration = Duration::from_secs(600);

/// The broadcast stream of the queue at `address`.
pub(crate) fn stream_of(address: &str) -> String {
    format!("{address}:broadcast")
}

/// Adds `message` to the broadcast stream of the queue at `address`.
pub(crate) async fn send(
    connection: &Connection,
    address: &str,
    message: &Message,
) -> Result<(), TransportError> {
    let key = stream_of(address);
    let mut pipe = redis::pipe();
    pipe.add_command(xadd(&key, message, KEPT)).ignore();
    pipe.cmd("PEXPIRE").arg(&key).arg(millis(LIVES)).ignore();
    connection.run(&pipe).await
}

/// Everything broadcast to the queue at `address` from now on.
pub(crate) async fn subscribe(
    connection: Arc<Connection>,
    address: &str,
) -> Result<Inbox, TransportError> {
    let key = stream_of(address);
    // From the last entry now there: what comes after this returns is read.
    let mut last = redis::cmd("XREVRANGE");
    last.arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
    let last_id = match connection.query(&last).await? {
        Value::Array(entries) => entries
            .into_iter()
            .next()
            .and_then(|entry| match entry {
                Value::Array(mut fields) if !fields.is_empty() => {
                    redis::from_redis_value::<String>(fields.swap_remove(0)).ok()
                }
                _ => None,
            })
            .unwrap_or_else(|| "0-0".to_owned()),
        _ => "0-0".to_owned(),
    };
    let reader = Reader {
        reads: connection.blocking().await?,
        connection,
        key: key.clone(),
        last_id,
        buffer: VecDeque::new(),
    };
    let messages = stream::unfold(reader, |mut reader| async move {
        let next = reader.next().await;
        Some((next, reader))
    });
    Ok(Inbox::new(key, messages))
}

struct Reader {
    connection: Arc<Connection>,
    reads: BlockingConnection,
    key: String,
    last_id: String,
    buffer: VecDeque<Message>,
}

impl Reader {
    async fn next(&mut self) -> Result<Message, TransportError> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Ok(message);
            }
            let config = &self.connection.config;
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(config.read_count)
                .arg("BLOCK")
                .arg(millis(config.block).max(1))
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&self.last_id);
            let reply = self.reads.query(&self.connection, &cmd).await?;
            for entry in entries_of_first_stream(reply.map_err(unavailable)?) {
                self.last_id.clone_from(&entry.id);
                self.buffer.push_back(entry.message);
            }
        }
    }
}
