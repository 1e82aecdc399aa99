//! A client's inbox: a capped stream, read on a connection of its own,
//! that expires unless its reader keeps it alive, and is made again if
//! Redis lost it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use busrpc_core::transport::{Inbox, TransportError};
use busrpc_core::Message;
use futures_util::stream;
use redis::Value;

use crate::connection::{millis, unavailable, BlockingConnection, Connection};
use crate::entries::{self, entries_of_first_stream};

/// Opens a new inbox: its stream made, a reader started, and the stream
/// deleted on a clean close (an abandoned one expires).
pub(crate) async fn open(connection: Arc<Connection>) -> Result<Inbox, TransportError> {
    let address = format!("{}{}", connection.inbox_prefix, connection.name("client"));
    let last_id = create(&connection, &address).await?;
    let reader = InboxReader {
        reads: connection.blocking().await?,
        address: address.clone(),
        last_id,
        buffer: VecDeque::new(),
        next_refresh: Instant::now() + connection.config.inbox_ttl / 3,
        recreate: false,
        connection: connection.clone(),
    };
    let messages = stream::unfold(reader, |mut reader| async move {
        let next = reader.next().await;
        Some((next, reader))
    });
    let key = address.clone();
    Ok(Inbox::new(address, messages).on_close(async move {
        if let Err(e) = connection.query(redis::cmd("DEL").arg(&key)).await {
            tracing::warn!(inbox = %key, error = %e, "deleting the inbox failed; it will expire");
        }
    }))
}

/// Creates an inbox stream (empty, expiring) and returns the id reading
/// starts after.
async fn create(connection: &Connection, address: &str) -> Result<String, TransportError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.cmd("XADD")
        .arg(address)
        .arg("MAXLEN")
        .arg(0)
        .arg("*")
        .arg("created")
        .arg(1);
    pipe.cmd("PEXPIRE")
        .arg(address)
        .arg(millis(connection.config.inbox_ttl))
        .ignore();
    let (id,): (String,) = pipe
        .query_async(&mut connection.commands())
        .await
        .map_err(unavailable)?;
    Ok(id)
}

/// Reads a client's inbox, keeping it alive (its expiry refreshed) and
/// recreating it after a Redis restart.
struct InboxReader {
    connection: Arc<Connection>,
    reads: BlockingConnection,
    address: String,
    last_id: String,
    buffer: VecDeque<Message>,
    next_refresh: Instant,
    recreate: bool,
}

impl InboxReader {
    async fn next(&mut self) -> Result<Message, TransportError> {
        let connection = self.connection.clone();
        let config = &connection.config;
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Ok(message);
            }
            let now = Instant::now();
            if self.recreate || now >= self.next_refresh {
                self.refresh().await?;
                self.next_refresh = now + config.inbox_ttl / 3;
            }
            let block = self
                .next_refresh
                .saturating_duration_since(now)
                .min(config.block);
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(config.read_count)
                .arg("BLOCK")
                .arg(millis(block).max(1))
                .arg("STREAMS")
                .arg(&self.address)
                .arg(&self.last_id);
            let read = self.reads.query(&self.connection, &cmd).await;
            let reply = match read.and_then(|reply| reply.map_err(unavailable)) {
                Ok(reply) => reply,
                Err(e) => {
                    // Perhaps Redis restarted and the inbox is gone with it.
                    self.recreate = true;
                    return Err(e);
                }
            };
            for entry in entries_of_first_stream(reply) {
                self.last_id.clone_from(&entry.id);
                // The creation marker, or an entry with no reply in it.
                if !entry.message.payload.is_empty() {
                    self.buffer.push_back(entry.message);
                }
            }
        }
    }

    /// Extends the inbox's life; creates it again if it is gone.
    async fn refresh(&mut self) -> Result<(), TransportError> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(&self.address)
            .arg(millis(self.connection.config.inbox_ttl));
        let alive = matches!(self.connection.query(&cmd).await?, Value::Int(1));
        if !alive {
            tracing::warn!(inbox = %self.address, "the inbox was gone; creating it again");
            let created = create(&self.connection, &self.address).await?;
            if entries::cmp_ids(&created, &self.last_id).is_gt() {
                self.last_id = created;
            }
        }
        self.recreate = false;
        Ok(())
    }
}
