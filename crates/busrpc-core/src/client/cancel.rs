//! Telling the servers that a caller gave up on a call (its timeout, or
//! its future dropped), so that the one running it stops: a cancel notice
//! broadcast to the service's servers (docs/PROTOCOL.md, "Cancel
//! notices"). Nothing is paid by a call that is answered.

use bytes::Bytes;

use super::Client;
use crate::wire::jsonrpc::write_cancel;
use crate::wire::{header, Deadline, Headers, Message};

/// A call sent and not answered yet: dropped unanswered, it sends the
/// call's cancel notice.
pub(super) struct Unanswered<'a> {
    client: &'a Client,
    service: &'a str,
    id: u64,
    deadline: Deadline,
}

impl<'a> Unanswered<'a> {
    pub(super) fn new(client: &'a Client, service: &'a str, id: u64, deadline: Deadline) -> Self {
        Self {
            client,
            service,
            id,
            deadline,
        }
    }

    /// The reply came (or the broker said the call cannot be served):
    /// nothing to cancel.
    pub(super) fn settled(self) {
        std::mem::forget(self);
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        self.client.cancel(self.service, self.id, self.deadline);
    }
}

impl Client {
    /// Broadcasts the cancel notice of the call `id` to `service`'s
    /// servers, in the background: best effort, as the notice itself is.
    fn cancel(&self, service: &str, id: u64, deadline: Deadline) {
        if !self.core.config.cancel_on_give_up {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let transport = self.core.transport.clone();
        let address = transport.service_address(service);
        let headers = Headers::new()
            .with(header::REPLY_TO, self.core.inbox_address.clone())
            .with(header::DEADLINE, deadline);
        let message = Message {
            payload: Bytes::from(write_cancel(id)),
            headers,
        };
        runtime.spawn(async move {
            if let Err(e) = transport.broadcast(&address, message).await {
                tracing::debug!(%address, id, error = %e, "sending a cancel notice failed");
            }
        });
    }
}
