//! Settling a delivery of the group: a request marked done in its
//! partition's watermark, a reply produced first, a dead letter produced
//! with its answer.

use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};

use async_trait::async_trait;
use busrpc_core::transport::{Acknowledge, Settle, SettleError, TransportError};
use busrpc_core::Message;
use tokio::sync::mpsc;

use super::{dead_letter_topic, Ledger, Taken, DEAD_LETTER_RETRY_AFTER};
use crate::connection::{topic_is_gone, transport_error, Connection};
use crate::native::{check_reply_to, produce, Counters};

pub(super) struct KafkaAck {
    pub(super) connection: Arc<Connection>,
    pub(super) counters: Arc<Counters>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) taken: Taken,
    pub(super) done: std_mpsc::Sender<()>,
    pub(super) again: mpsc::UnboundedSender<Taken>,
    /// Set once dead-lettering it failed: it is delivered again only after
    /// a pause, not at once into another failure.
    pub(super) dead_letter_failed: bool,
}

impl KafkaAck {
    /// Tells the consumer thread a request is done, for it to commit.
    pub(super) fn finished(&self) -> Result<(), SettleError> {
        self.done
            .send(())
            .map_err(|_| SettleError::settled(TransportError::Closed))
    }

    /// Marks the request done; its offset is committed once every request
    /// below it in its partition is done too.
    ///
    /// Recorded in the tracker here and now, not when the consumer thread
    /// gets to it: a revocation commits what the tracker holds done, and a
    /// request answered but not yet recorded would be read and answered
    /// again by the partition's next owner.
    pub(super) fn ack(&self) -> Result<(), SettleError> {
        let t = &self.taken;
        self.ledger.lock().done(&t.partition, t.offset, t.epoch);
        self.finished()
    }

    /// Delivers the request again, from this consumer (Kafka cannot hand one
    /// record to another member; its offset stays uncommitted meanwhile).
    pub(super) fn release(self) -> Result<(), SettleError> {
        let KafkaAck {
            mut taken,
            again,
            dead_letter_failed,
            ..
        } = self;
        taken.attempt = taken.attempt.saturating_add(1);
        if !dead_letter_failed {
            return again
                .send(taken)
                .map_err(|_| SettleError::settled(TransportError::Closed));
        }
        tokio::spawn(async move {
            tokio::time::sleep(DEAD_LETTER_RETRY_AFTER).await;
            let _ = again.send(taken);
        });
        Ok(())
    }

    /// Produces the reply (awaiting its delivery report), then acknowledges.
    /// A reply to an inbox topic that no longer exists has no reader left:
    /// the request is acknowledged, not retried forever.
    ///
    /// If a rebalance gave the request's partition to another member while
    /// the handler ran, the reply is not sent: the partition was committed
    /// below this unfinished request, so its new owner reads it again and
    /// answers it. Sending this reply too would answer the call twice. Once
    /// the reply is on its way, a revocation waits for it (see
    /// [`GroupContext::pre_rebalance`]).
    pub(super) async fn reply(
        self: Box<Self>,
        address: &str,
        reply: Message,
    ) -> Result<(), SettleError> {
        let t = &self.taken;
        if !self.ledger.lock().answer(&t.partition, t.epoch) {
            tracing::debug!(
                topic = %t.partition.0,
                partition = t.partition.1,
                offset = t.offset,
                "the partition went to another member during the call; it answers instead"
            );
            return Ok(());
        }
        let mut answering = Answering {
            ack: &self,
            sent: false,
        };
        let produced = match check_reply_to(&self.connection, address).await {
            Err(e) => Err(e),
            Ok(()) => self.produce_reply(address, &reply).await,
        };
        answering.sent = produced.is_ok();
        drop(answering);
        match produced {
            Ok(()) => self.finished(),
            Err(e) => Err(SettleError::unsettled(e, self)),
        }
    }

    /// Writes the request to the dead-letter topic `{topic}.dead` (value
    /// and headers kept, with `dead-deliveries`, `dead-partition` and
    /// `dead-offset`), sends `reply` (its caller's answer), and marks it
    /// done: produced both, then done, so at worst it is dead-lettered
    /// twice, never lost.
    pub(super) async fn dead_letter(
        mut self: Box<Self>,
        reply: Option<(Arc<str>, Message)>,
    ) -> Result<(), SettleError> {
        let connection = &self.connection;
        let t = &self.taken;
        let dead = dead_letter_topic(&t.partition.0);
        let written = async {
            connection.ensure_topic(&dead, 1, None, false).await?;
            let mut message = Message::clone(&t.message);
            let headers = &mut message.headers;
            let deliveries = t.dead.unwrap_or_default();
            headers.insert("dead-deliveries", deliveries.to_string());
            headers.insert("dead-partition", t.partition.1.to_string());
            headers.insert("dead-offset", t.offset.to_string());
            produce(connection, &dead, &message)
                .await
                .map_err(transport_error)?;
            if let Some((reply_to, reply)) = reply {
                match produce(connection, &reply_to, &reply).await {
                    Err(e) if topic_is_gone(&e) => {}
                    produced => produced.map_err(transport_error)?,
                }
            }
            Ok::<_, TransportError>(())
        };
        match written.await {
            Ok(()) => {
                tracing::debug!(topic = %t.partition.0, partition = t.partition.1, offset = t.offset, %dead, "dead-lettered");
                self.counters.dead_letters.fetch_add(1, Ordering::Relaxed);
                self.ack()
            }
            Err(e) => {
                self.dead_letter_failed = true;
                Err(SettleError::unsettled(e, self))
            }
        }
    }

    /// Produces a reply; an inbox deleted since it was checked (its client
    /// gone) takes nothing, and that is no failure.
    pub(super) async fn produce_reply(
        &self,
        address: &str,
        reply: &Message,
    ) -> Result<(), TransportError> {
        match produce(&self.connection, address, reply).await {
            Err(e) if topic_is_gone(&e) => {
                tracing::warn!(
                    reply_to = address,
                    "the caller's inbox is gone; the reply is dropped"
                );
                Ok(())
            }
            produced => produced.map_err(transport_error),
        }
    }
}

#[async_trait]
impl Acknowledge for KafkaAck {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
        match how {
            Settle::Ack => self.ack(),
            Settle::Reply { to, message } => self.reply(&to, message).await,
            Settle::Release => (*self).release(),
            Settle::DeadLetter { reply } => self.dead_letter(reply).await,
        }
    }
}

/// A reply on its way for a [`KafkaAck`]'s request. Dropped (the reply sent,
/// failed, or its task cancelled), it records the outcome and wakes a
/// revocation waiting for it.
pub(super) struct Answering<'a> {
    pub(super) ack: &'a KafkaAck,
    pub(super) sent: bool,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        let t = &self.ack.taken;
        self.ack
            .ledger
            .lock()
            .answered(&t.partition, t.offset, t.epoch, self.sent);
        self.ack.ledger.answered.notify_all();
    }
}
