//! Settling a consumer's deliveries: acknowledgements and replies
//! coalesced by a settling task ([`queue`]), releases, and dead letters in
//! one transaction; the trims that remove answered requests ([`trim`]).

use std::sync::Arc;

use async_trait::async_trait;
use busrpc_core::transport::{Acknowledge, OnSettled, Settle, SettleError, TransportError};
use busrpc_core::Message;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{millis, Connection};
use crate::entries::xadd;

mod queue;
mod trim;

pub(crate) use queue::SettleQueue;
use queue::{Settlement, Waiter};

/// The ids of the entries a consumer holds: read (buffered, or handed out
/// and running) and not yet settled; its keep-alive keeps them from being
/// claimed.
#[derive(Default)]
pub(crate) struct InHand(std::sync::Mutex<std::collections::HashSet<String>>);

impl InHand {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ids(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

/// The dead-letter stream of the queue at `address`.
pub(crate) fn dead_letter_address(address: &str) -> String {
    format!("{address}:dead")
}

/// `XCLAIM … IDLE claim_idle JUSTID`: keeps the entries pending but makes
/// them look idle long enough for any consumer's next claim to take them.
/// JUSTID leaves their delivery count alone.
pub(crate) fn release_cmd(
    connection: &Connection,
    address: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> redis::Cmd {
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(address).arg(group).arg(consumer).arg(0);
    for id in ids {
        cmd.arg(id);
    }
    cmd.arg("IDLE")
        .arg(millis(connection.config.claim_idle))
        .arg("JUSTID");
    cmd
}

/// Settles one delivery of a consumer.
pub(crate) struct RedisAck {
    pub(crate) connection: Arc<Connection>,
    pub(crate) address: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) consumer: Arc<str>,
    pub(crate) id: String,
    /// Which delivery of the entry this is (Redis' delivery count).
    pub(crate) deliveries: u64,
    /// The request as read, what a dead letter keeps: only for a delivery
    /// past `max_deliveries`. Every other acknowledger leaves the request
    /// to its delivery, so that it is freed where it was used rather than
    /// on the settling task (keeping it here cost about 5% of the Redis
    /// bench's throughput).
    pub(crate) request: Option<Arc<Message>>,
    pub(crate) settle: SettleQueue,
    pub(crate) in_hand: Arc<InHand>,
}

impl Drop for RedisAck {
    /// Settled, or dropped unsettled: either way no longer kept alive; one
    /// left unsettled is claimed after `claim_idle`.
    fn drop(&mut self) {
        self.in_hand.lock().remove(&self.id);
    }
}

impl RedisAck {
    /// `XCLAIM … IDLE claim_idle JUSTID`: claimable at once by any
    /// consumer's next claim.
    async fn release(self: Box<Self>) -> Result<(), SettleError> {
        let ids = [self.id.clone()];
        let cmd = release_cmd(
            &self.connection,
            &self.address,
            &self.group,
            &self.consumer,
            &ids,
        );
        match self.connection.query(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SettleError::unsettled(e, self)),
        }
    }

    /// Moves the request to the dead-letter stream `{stream}:dead` (its
    /// fields kept, with `dead-deliveries` and `dead-id` added), sends
    /// `reply` if there is one, and acknowledges and deletes the request,
    /// all in one transaction: the keys of one service, on one Redis.
    async fn dead_letter(
        self: Box<Self>,
        reply: Option<(Arc<str>, Message)>,
    ) -> Result<(), SettleError> {
        let Some(request) = self.request.clone() else {
            let refused = TransportError::Rejected(
                "only a delivery past max_deliveries is dead-lettered".to_owned(),
            );
            return Err(SettleError::unsettled(refused, self));
        };
        let connection = &self.connection;
        let dead = dead_letter_address(&self.address);
        let mut dead_message = Message::clone(&request);
        dead_message
            .headers
            .insert("dead-deliveries", self.deliveries.to_string());
        dead_message.headers.insert("dead-id", self.id.as_str());
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.add_command(xadd(&dead, &dead_message, connection.config.queue_max_len))
            .ignore();
        if let Some((reply_to, reply)) = &reply {
            connection.add_reply(&mut pipe, reply_to, reply);
        }
        pipe.cmd("XACK")
            .arg(&*self.address)
            .arg(&*self.group)
            .arg(&self.id)
            .ignore();
        // Rare: not worth leaving to a trim. It lives on in the dead letters.
        pipe.cmd("XDEL").arg(&*self.address).arg(&self.id).ignore();
        match connection.run(&pipe).await {
            Ok(()) => {
                tracing::debug!(address = %self.address, id = %self.id, deliveries = self.deliveries, %dead, "dead-lettered");
                Ok(())
            }
            Err(e) => Err(SettleError::unsettled(e, self)),
        }
    }

    /// Hands an acknowledgement (after `reply`, if any) to the settling
    /// task, which reports it to `waiter`.
    fn queue(self: Box<Self>, reply: Option<(Arc<str>, Message)>, waiter: Waiter) {
        let settle = self.settle.clone();
        let settlement = Settlement {
            acker: self,
            reply,
            waiter,
        };
        if let Err(mpsc::error::SendError(settlement)) = settle.0.send(settlement) {
            // The settling task is gone with its consumer.
            settlement
                .waiter
                .report(Err(SettleError::settled(TransportError::Closed)));
        }
    }
}

#[async_trait]
impl Acknowledge for RedisAck {
    /// Replies and acknowledgements go through the consumer's settling
    /// task, coalesced with those of the requests finishing alongside (see
    /// [`SettleQueue`]); releases and dead letters go out on their own.
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
        let (done, confirmed) = oneshot::channel();
        match how {
            Settle::Ack => self.queue(None, Waiter::Confirm(done)),
            Settle::Reply { to, message } => self.queue(Some((to, message)), Waiter::Confirm(done)),
            Settle::Release => return self.release().await,
            Settle::DeadLetter { reply } => return self.dead_letter(reply).await,
        }
        confirmed
            .await
            .unwrap_or(Err(SettleError::settled(TransportError::Closed)))
    }

    /// Queues an acknowledgement (and its reply) and returns: the settling
    /// task reports the outcome.
    async fn settle_then(self: Box<Self>, how: Settle, then: OnSettled) {
        match how {
            Settle::Ack => self.queue(None, Waiter::Report(then)),
            Settle::Reply { to, message } => self.queue(Some((to, message)), Waiter::Report(then)),
            other => then(self.settle(other).await),
        }
    }
}
