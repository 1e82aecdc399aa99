//! A Redis Streams ping-pong with no busrpc in it: the baseline that the
//! benches and `busrpc bench` compare busrpc calls against (the `raw`
//! feature).
//!
//! It does the broker work a correct request/reply needs, as busrpc does:
//! `XADD` a request -> a responder's `XREADGROUP` (a consumer group, so a
//! request is owned until acknowledged) -> one pipeline of the replies'
//! `XADD` to the caller's stream (capped, as busrpc caps inboxes) and one
//! `XACK` of the ids read -> the caller's `XREAD` hands each reply to its
//! waiting ping by correlation tag. Every 512 acknowledgements the
//! responder trims the acknowledged head of the request stream, as a
//! busrpc server does, so neither stream grows without bound.

use std::sync::Arc;
use std::time::Duration;

use busrpc_bench::ping::{Baseline, Correlator, PingError, CORRELATION};
use busrpc_core::TransportError;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::task::JoinHandle;

use crate::config::RedisConfig;

/// Acknowledgements between two trims of the request stream (busrpc's
/// servers trim as often).
const TRIM_EVERY: usize = 512;

/// How long the baseline's streams outlive a bench that was killed before
/// it could delete them.
const EXPIRE_MS: u64 = 24 * 3600 * 1000;

/// A running raw ping-pong on one Redis.
pub struct PingPong {
    client: redis::Client,
    commands: MultiplexedConnection,
    prefix: String,
    requests: String,
    replies: String,
    correlator: Arc<Correlator>,
    tasks: Vec<JoinHandle<()>>,
}

fn failed(e: redis::RedisError) -> TransportError {
    TransportError::Unavailable(Box::new(e))
}

async fn connection(client: &redis::Client) -> Result<MultiplexedConnection, TransportError> {
    // Blocking reads must outlast redis-rs's default response timeout.
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(failed)
}

fn field<'a>(fields: &'a [Value], name: &str) -> Option<&'a [u8]> {
    fields.chunks(2).find_map(|pair| match pair {
        [Value::BulkString(k), Value::BulkString(v)] if k == name.as_bytes() => Some(v.as_slice()),
        _ => None,
    })
}

/// `[[key, [[id, fields], ...]]]` -> `[(id, fields)]`.
fn entries(reply: Value) -> Vec<(Vec<u8>, Vec<Value>)> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let Some(Value::Array(mut stream)) = streams.into_iter().next() else {
        return Vec::new();
    };
    let Some(Value::Array(list)) = stream.pop() else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|entry| match entry {
            Value::Array(mut pair) if pair.len() == 2 => match (pair.pop(), pair.pop()) {
                (Some(Value::Array(fields)), Some(Value::BulkString(id))) => Some((id, fields)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The id after `id` (`ms-seq` -> `ms-(seq+1)`): `XTRIM MINID` keeps it and
/// everything later.
fn next_id(id: &[u8]) -> Option<String> {
    let (ms, seq) = std::str::from_utf8(id).ok()?.split_once('-')?;
    Some(format!("{ms}-{}", seq.parse::<u64>().ok()?.checked_add(1)?))
}

/// Serves the request stream until the connection fails or the task is
/// aborted.
async fn respond(
    mut reader: MultiplexedConnection,
    mut writer: MultiplexedConnection,
    requests: String,
    inbox_max_len: u64,
) {
    let mut untrimmed = 0;
    loop {
        let reply: Value = match redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("responder")
            .arg("COUNT")
            .arg(128)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&requests)
            .arg(">")
            .query_async(&mut reader)
            .await
        {
            Ok(reply) => reply,
            Err(_) => return,
        };
        let read = entries(reply);
        let Some((last, _)) = read.last() else {
            continue;
        };
        let last = last.clone();
        let mut pipe = redis::pipe();
        let mut ack = redis::cmd("XACK");
        ack.arg(&requests).arg("raw");
        for (id, fields) in &read {
            ack.arg(id);
            if let (Some(to), Some(tag), Some(payload)) = (
                field(fields, "reply-to"),
                field(fields, CORRELATION),
                field(fields, "payload"),
            ) {
                pipe.cmd("XADD")
                    .arg(to)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(inbox_max_len)
                    .arg("*")
                    .arg(CORRELATION)
                    .arg(tag)
                    .arg("payload")
                    .arg(payload)
                    .ignore();
            }
        }
        // The replies before the acknowledgement, in one round trip: a
        // connection's commands run in order.
        pipe.add_command(ack).ignore();
        untrimmed += read.len();
        if untrimmed >= TRIM_EVERY {
            if let Some(keep) = next_id(&last) {
                pipe.cmd("XTRIM")
                    .arg(&requests)
                    .arg("MINID")
                    .arg(keep)
                    .ignore();
                untrimmed = 0;
            }
        }
        if pipe.query_async::<()>(&mut writer).await.is_err() {
            return;
        }
    }
}

/// Hands the replies on `replies` to their pings until the connection
/// fails or the task is aborted.
async fn read(
    mut inbox: MultiplexedConnection,
    replies: String,
    from: String,
    correlator: Arc<Correlator>,
) {
    let mut last = from.into_bytes();
    loop {
        let reply: Value = match redis::cmd("XREAD")
            .arg("COUNT")
            .arg(128)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&replies)
            .arg(&last)
            .query_async(&mut inbox)
            .await
        {
            Ok(reply) => reply,
            Err(_) => return,
        };
        for (id, fields) in entries(reply) {
            if let (Some(tag), Some(payload)) =
                (field(&fields, CORRELATION), field(&fields, "payload"))
            {
                correlator.deliver_tagged(tag, Bytes::copy_from_slice(payload));
            }
            last = id;
        }
    }
}

impl PingPong {
    /// Starts a responder and a reply reader on the Redis a busrpc URL
    /// (`redis://host:port?prefix=P`) names, on streams under its prefix.
    pub async fn start(url: &str) -> Result<Self, TransportError> {
        let config = RedisConfig::from_url(url)?;
        let client = crate::connection::open_client(&config).map_err(|e| match e {
            TransportError::InvalidConfig(reason) => TransportError::InvalidUrl {
                url: url.to_owned(),
                reason,
            },
            e => e,
        })?;
        let prefix = config.prefix.clone();
        let requests = format!("{prefix}:raw-requests");
        let replies = format!("{prefix}:raw-replies");
        let mut commands = connection(&client).await?;
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&requests)
            .arg("raw")
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut commands)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(failed(e));
            }
        }
        // The reply stream exists before the first ping, as a busrpc
        // client's inbox does, and the reader reads from its first entry
        // on, not from `$` (a reply could land before its first XREAD).
        // Both streams outlive a killed bench by a day.
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&replies)
            .arg("*")
            .arg("created")
            .arg("1");
        for key in [&requests, &replies] {
            pipe.cmd("PEXPIRE").arg(key).arg(EXPIRE_MS).ignore();
        }
        let (from,): (String,) = pipe.query_async(&mut commands).await.map_err(failed)?;
        let (reader, writer) = (connection(&client).await?, connection(&client).await?);
        let responder = tokio::spawn(respond(
            reader,
            writer,
            requests.clone(),
            config.inbox_max_len,
        ));
        let correlator = Arc::new(Correlator::default());
        let inbox = connection(&client).await?;
        let reader = tokio::spawn(read(inbox, replies.clone(), from, correlator.clone()));
        Ok(PingPong {
            client,
            commands,
            prefix,
            requests,
            replies,
            correlator,
            tasks: vec![responder, reader],
        })
    }
}

#[async_trait::async_trait]
impl Baseline for PingPong {
    async fn ping(&self, payload: &[u8]) -> Result<(), PingError> {
        self.correlator
            .ping(payload, |tag| async move {
                redis::cmd("XADD")
                    .arg(&self.requests)
                    .arg("*")
                    .arg(CORRELATION)
                    .arg(tag)
                    .arg("reply-to")
                    .arg(&self.replies)
                    .arg("payload")
                    .arg(payload)
                    .query_async::<Value>(&mut self.commands.clone())
                    .await
                    .map(drop)
                    .map_err(failed)
            })
            .await
    }

    /// Stops the responder and reader and deletes every key under the
    /// prefix (`SCAN`, not `KEYS`: a shared Redis is not blocked).
    async fn clean_up(&self) -> Result<(), TransportError> {
        self.tasks.iter().for_each(JoinHandle::abort);
        delete_prefix(&self.client, &self.prefix).await
    }
}

/// Deletes every key named `{prefix}:*`.
async fn delete_prefix(client: &redis::Client, prefix: &str) -> Result<(), TransportError> {
    let mut conn = connection(client).await?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await
                .map_err(failed)?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trim_keeps_the_entry_after_the_last_acknowledged() {
        assert_eq!(
            next_id(b"1700000000000-7").as_deref(),
            Some("1700000000000-8")
        );
        assert_eq!(next_id(b"junk"), None);
    }
}
