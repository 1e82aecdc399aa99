//! The settling task of one consumer: its acknowledgements and replies
//! coalesced into one pipeline per round trip.

use std::sync::Arc;
use std::time::Duration;

use busrpc_core::transport::{OnSettled, SettleError, TransportError};
use busrpc_core::Message;
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::trim::trim;
use super::RedisAck;
use crate::connection::Connection;

/// A request to settle: its acknowledger, the reply to write first if
/// any, and who learns the outcome.
pub(super) struct Settlement {
    pub(super) acker: Box<RedisAck>,
    pub(super) reply: Option<(Arc<str>, Message)>,
    pub(super) waiter: Waiter,
}

/// Who learns how a settlement went.
pub(super) enum Waiter {
    /// A caller awaiting [`Acknowledge::settle`].
    Confirm(oneshot::Sender<Result<(), SettleError>>),
    /// The server, through [`Acknowledge::settle_then`].
    Report(OnSettled),
}

impl Waiter {
    pub(super) fn report(self, outcome: Result<(), SettleError>) {
        match self {
            Waiter::Confirm(done) => {
                let _ = done.send(outcome);
            }
            Waiter::Report(then) => then(outcome),
        }
    }
}

/// The replies and acknowledgements of one consumer, coalesced. A task
/// takes everything queued while its previous round trip was out and sends
/// it as one pipeline: every reply's `XADD`, then one `XACK` for all the
/// ids. Redis runs a connection's commands in order, so no request is
/// acknowledged before its reply is written. A lone request costs one round
/// trip, as it would alone; under load, one write and one round trip settle
/// many, sparing Redis and the client the per-command work that otherwise
/// dominates. The task reports each batch's outcome to every request in it
/// (to the server's [`OnSettled`], or to a caller awaiting
/// [`Acknowledge::settle`]) only once Redis has answered, so "acknowledged"
/// still means acknowledged; a server request holds its concurrency permit
/// until then. Reporting from here, rather than waking each request's task
/// to learn its outcome, spares a wake-up per request. A batch that fails
/// as a whole gives each request's acknowledger back, unsettled, for its
/// server to release.
///
/// Answered requests then leave the stream in bulk rather than one `XDEL`
/// each (which cost Redis more than the `XACK`s): after every
/// [`TRIM_EVERY`] settlements, and once the queue has been quiet for
/// [`TRIM_WHEN_QUIET`], the task trims the stream's head of everything
/// acknowledged (`scripts/trim.lua`).
#[derive(Clone)]
pub(crate) struct SettleQueue(pub(super) mpsc::UnboundedSender<Settlement>);

/// Most requests settled in one round trip.
const MAX_SETTLE_BATCH: usize = 256;

/// Settlements after which a consumer trims its stream.
const TRIM_EVERY: usize = 512;

/// Quiet after which a consumer trims what it settled since its last trim.
const TRIM_WHEN_QUIET: Duration = Duration::from_millis(100);

impl SettleQueue {
    pub(crate) fn start(connection: Arc<Connection>, address: Arc<str>, group: Arc<str>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Settlement>();
        // Ends when the consumer and every delivery of it are gone.
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut untrimmed = 0;
            loop {
                let received = if untrimmed == 0 {
                    rx.recv_many(&mut batch, MAX_SETTLE_BATCH).await
                } else {
                    let next = rx.recv_many(&mut batch, MAX_SETTLE_BATCH);
                    match tokio::time::timeout(TRIM_WHEN_QUIET, next).await {
                        Ok(received) => received,
                        Err(_quiet) => {
                            trim(&connection, &address).await;
                            untrimmed = 0;
                            continue;
                        }
                    }
                };
                if received == 0 {
                    if untrimmed > 0 {
                        trim(&connection, &address).await;
                    }
                    return;
                }
                let outcome = settle_batch(&connection, &address, &group, &batch).await;
                if outcome.is_ok() {
                    untrimmed += batch.len();
                }
                for (n, Settlement { acker, waiter, .. }) in batch.drain(..).enumerate() {
                    let result = match &outcome {
                        Err(e) => Err(SettleError::unsettled(
                            TransportError::Unavailable(e.clone().into()),
                            acker,
                        )),
                        // Refused, but acknowledged in the same pipeline.
                        Ok(refused) => match refused.get(n).cloned().flatten() {
                            Some(e) => Err(SettleError::settled(TransportError::Rejected(e))),
                            None => Ok(()),
                        },
                    };
                    waiter.report(result);
                }
                if untrimmed >= TRIM_EVERY {
                    trim(&connection, &address).await;
                    untrimmed = 0;
                }
            }
        });
        SettleQueue(tx)
    }
}

/// Writes a batch's replies, then acknowledges all its requests, in one
/// pipeline. `Err` if the pipeline failed as a whole (or its `XACK` did);
/// otherwise, per settlement in order, why Redis refused its reply if it did.
async fn settle_batch(
    connection: &Connection,
    address: &str,
    group: &str,
    batch: &[Settlement],
) -> Result<Vec<Option<String>>, String> {
    let mut pipe = redis::Pipeline::with_capacity(batch.len() + 1);
    let mut xack = redis::Cmd::with_capacity(
        3 + batch.len(),
        4 + address.len() + group.len() + batch.len() * 16,
    );
    xack.arg("XACK").arg(address).arg(group);
    for Settlement { acker, reply, .. } in batch {
        if let Some((to, message)) = reply {
            connection.add_reply(&mut pipe, to, message);
        }
        xack.arg(&acker.id);
    }
    pipe.add_command(xack);
    // Each command's own outcome: one reply refused must not fail the
    // others, whose replies were written all the same.
    pipe.ignore_errors();
    let results: Vec<redis::RedisResult<Value>> = pipe
        .query_async(&mut connection.commands())
        .await
        .map_err(|e| e.to_string())?;
    match results.last() {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("Redis answered the pipeline with nothing".to_owned()),
    }
    let mut replies = results.into_iter();
    Ok(batch
        .iter()
        .map(|settlement| {
            let (to, _) = settlement.reply.as_ref()?;
            match replies.next() {
                Some(Err(e)) => Some(format!(
                    "Redis refused the reply to {to:?} ({e}); the request is acknowledged, as another try would be refused alike"
                )),
                _ => None,
            }
        })
        .collect())
}
