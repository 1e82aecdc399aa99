//! The raw baseline through any [`Transport`]: what `memory://` is
//! measured against.

use std::sync::Arc;

use busrpc_core::{header, Demand, Message, Settle, Transport, TransportError};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::ping::{Baseline, Correlator, PingError, CORRELATION};

/// A ping-pong through a [`Transport`] with no JSON-RPC. Publish to a
/// queue -> a responder consumes it, publishes the payload back to one
/// inbox and acknowledges the request in one step, as a busrpc server does
/// -> a reader hands it to the waiting ping by its correlation tag.
pub struct TransportPingPong {
    transport: Arc<dyn Transport>,
    address: String,
    reply_to: String,
    correlator: Arc<Correlator>,
    tasks: Vec<JoinHandle<()>>,
}

impl TransportPingPong {
    /// Starts a responder on queue `address` and a reader on a new inbox.
    pub async fn start(
        transport: Arc<dyn Transport>,
        address: &str,
    ) -> Result<Self, TransportError> {
        let mut deliveries = transport
            .consume(address, "raw", Demand::unbounded())
            .await?;
        let respond = tokio::spawn(async move {
            while let Some(Ok(delivery)) = deliveries.next().await {
                let message = delivery.message();
                let (Some(to), Some(tag)) = (
                    message.headers.get(header::REPLY_TO),
                    message.headers.get(CORRELATION),
                ) else {
                    let _ = delivery.settle(Settle::Ack).await;
                    continue;
                };
                let message = Message::new(message.payload.clone()).with_header(CORRELATION, tag);
                let to = to.into();
                let _ = delivery.settle(Settle::Reply { to, message }).await;
            }
        });
        let mut inbox = transport.inbox().await?;
        let reply_to = inbox.address().to_owned();
        let correlator = Arc::new(Correlator::default());
        let table = correlator.clone();
        let read = tokio::spawn(async move {
            while let Some(Ok(reply)) = inbox.next().await {
                if let Some(tag) = reply.headers.get(CORRELATION) {
                    table.deliver_tagged(tag.as_bytes(), reply.payload);
                }
            }
        });
        Ok(Self {
            transport,
            address: address.to_owned(),
            reply_to,
            correlator,
            tasks: vec![respond, read],
        })
    }
}

#[async_trait::async_trait]
impl Baseline for TransportPingPong {
    async fn ping(&self, payload: &[u8]) -> Result<(), PingError> {
        self.correlator
            .ping(payload, |tag| {
                let message = Message::new(bytes::Bytes::copy_from_slice(payload))
                    .with_header(header::REPLY_TO, self.reply_to.as_str())
                    .with_header(CORRELATION, tag.to_string());
                self.transport.publish(&self.address, message)
            })
            .await
    }

    /// Stops the responder and the reader; the queue goes with the
    /// transport, which lives in this process only.
    async fn clean_up(&self) -> Result<(), TransportError> {
        self.tasks.iter().for_each(JoinHandle::abort);
        Ok(())
    }
}

impl Drop for TransportPingPong {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn round_trips_concurrently() {
        let transport: Arc<dyn Transport> = Arc::new(busrpc_core::memory::MemoryTransport::new());
        let raw = Arc::new(TransportPingPong::start(transport, "raw").await.unwrap());
        let pings = (0..50).map(|i| {
            let raw = raw.clone();
            async move { raw.ping(format!("payload {i}").as_bytes()).await }
        });
        for outcome in futures_util::future::join_all(pings).await {
            outcome.unwrap();
        }
        assert_eq!(raw.correlator.waiting(), 0);
    }
}
