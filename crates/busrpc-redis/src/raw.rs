//! A Redis Streams ping-pong with no busrpc in it: the baseline that the
//! benches and `busrpc bench` compare busrpc calls against.
//!
//! `XADD` a request -> a responder's `XREADGROUP` -> `XADD` the reply to the
//! caller's stream -> the caller's `XREAD`. The caller side hands each reply
//! to its waiting call by a correlation field, as a busrpc client does by id;
//! the responder pipelines the replies of each read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::TransportError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// A running raw ping-pong on one Redis.
pub struct PingPong {
    client: redis::Client,
    commands: MultiplexedConnection,
    prefix: String,
    requests: String,
    replies: String,
    waiting: Waiting,
    next: AtomicU64,
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
fn entries(reply: Value) -> Vec<(String, Vec<Value>)> {
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
                (Some(Value::Array(fields)), Some(Value::BulkString(id))) => {
                    Some((String::from_utf8_lossy(&id).into_owned(), fields))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl PingPong {
    /// Starts a responder and a reply reader on the Redis at `url` (a plain
    /// redis:// URL), on keys under `prefix`.
    pub async fn start(url: &str, prefix: &str) -> Result<Self, TransportError> {
        let client = redis::Client::open(url).map_err(|e| TransportError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
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
        let (mut reader, mut writer) = (connection(&client).await?, connection(&client).await?);
        let stream = requests.clone();
        let responder = tokio::spawn(async move {
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
                    .arg(&stream)
                    .arg(">")
                    .query_async(&mut reader)
                    .await
                {
                    Ok(reply) => reply,
                    Err(_) => return,
                };
                let mut pipe = redis::pipe();
                for (_, fields) in entries(reply) {
                    if let (Some(to), Some(n), Some(payload)) = (
                        field(&fields, "reply-to"),
                        field(&fields, "n"),
                        field(&fields, "payload"),
                    ) {
                        pipe.cmd("XADD")
                            .arg(to)
                            .arg("*")
                            .arg("n")
                            .arg(n)
                            .arg("payload")
                            .arg(payload)
                            .ignore();
                    }
                }
                if !pipe.is_empty() && pipe.query_async::<()>(&mut writer).await.is_err() {
                    return;
                }
            }
        });
        let waiting: Waiting = Arc::default();
        let mut inbox = connection(&client).await?;
        let (stream, table) = (replies.clone(), waiting.clone());
        let reader = tokio::spawn(async move {
            let mut last = "$".to_owned();
            loop {
                let reply: Value = match redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(128)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(&last)
                    .query_async(&mut inbox)
                    .await
                {
                    Ok(reply) => reply,
                    Err(_) => return,
                };
                for (id, fields) in entries(reply) {
                    last = id;
                    let n = field(&fields, "n")
                        .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok());
                    let waiter =
                        n.and_then(|n| table.lock().unwrap_or_else(|e| e.into_inner()).remove(&n));
                    if let (Some(waiter), Some(payload)) = (waiter, field(&fields, "payload")) {
                        let _ = waiter.send(payload.to_vec());
                    }
                }
            }
        });
        Ok(PingPong {
            client,
            commands,
            prefix: prefix.to_owned(),
            requests,
            replies,
            waiting,
            next: AtomicU64::new(1),
            tasks: vec![responder, reader],
        })
    }

    /// One round trip of `payload`; fails if no reply comes within 30 s or
    /// the reply differs.
    pub async fn ping(&self, payload: &[u8]) -> Result<(), TransportError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n, tx);
        let _: Value = redis::cmd("XADD")
            .arg(&self.requests)
            .arg("*")
            .arg("n")
            .arg(n)
            .arg("reply-to")
            .arg(&self.replies)
            .arg("payload")
            .arg(payload)
            .query_async(&mut self.commands.clone())
            .await
            .map_err(failed)?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(reply)) if reply == payload => Ok(()),
            Ok(Ok(_)) => Err(TransportError::Rejected(
                "the raw reply differs from the request".into(),
            )),
            _ => Err(TransportError::Unavailable(
                "no raw reply within 30 s".into(),
            )),
        }
    }

    /// Stops the responder and reader and deletes the keys it used.
    pub async fn stop(self) {
        self.tasks.iter().for_each(JoinHandle::abort);
        if let Ok(mut conn) = self.client.get_multiplexed_async_connection().await {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:raw-*", self.prefix))
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
            }
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}
