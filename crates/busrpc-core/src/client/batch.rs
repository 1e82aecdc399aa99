//! Batches: calls and notifications sent as one message and answered by
//! one message.

use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::timeout_at;

use super::pending::{Outcome, Registration};
use super::Client;
use crate::error::Error;
use crate::telemetry::metrics;
use crate::wire::jsonrpc::{self, EncodeError, RpcError};
use crate::wire::Headers;

impl Client {
    /// Starts a batch for `service`: calls and notifications sent as one
    /// message and answered by one message.
    pub fn batch(&self, service: &str) -> Batch {
        Batch {
            client: self.clone(),
            service: service.to_owned(),
            json: Vec::new(),
            ids: Vec::new(),
            entries: 0,
            methods: Vec::new(),
        }
    }
}

/// One call of a [`Batch`], to pick its result from [`BatchReplies`]: its
/// place in the batch and its request id, so that a handle looked up in
/// another batch's replies is an error, not that batch's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCall {
    index: usize,
    id: u64,
}

impl BatchCall {
    /// The call's JSON-RPC id on the wire.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Calls and notifications sent together as one JSON-RPC batch.
///
/// ```
/// # use std::sync::Arc;
/// # use busrpc_core::{memory::MemoryTransport, Client, Router, RpcError, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), busrpc_core::Error> {
/// # let transport = Arc::new(MemoryTransport::new());
/// # let router = Router::new().method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) });
/// # let _server = Server::new(transport.clone(), "calc", router).start().await?;
/// # let client = Client::connect(transport).await?;
/// let mut batch = client.batch("calc");
/// let three = batch.call("add", (1, 2))?;
/// let seven = batch.call("add", (3, 4))?;
/// batch.notify("add", (0, 0))?;
/// let replies = batch.send().await?;
/// assert_eq!(replies.get::<i64>(three)?, 3);
/// assert_eq!(replies.get::<i64>(seven)?, 7);
/// # Ok(()) }
/// ```
pub struct Batch {
    client: Client,
    service: String,
    json: Vec<u8>,
    ids: Vec<u64>,
    entries: usize,
    /// Each entry's method and whether it is a call, when metrics are
    /// recorded or middleware sees the batch.
    methods: Vec<(Box<str>, bool)>,
}

impl Batch {
    fn push(&mut self, method: &str, params: impl Serialize, id: Option<u64>) -> Result<(), Error> {
        let start = self.json.len();
        self.json
            .push(if self.json.is_empty() { b'[' } else { b',' });
        if let Err(e) = jsonrpc::write_request(&mut self.json, method, &params, id) {
            self.json.truncate(start);
            return Err(e.into());
        }
        self.entries += 1;
        if metrics::enabled() || !self.client.middleware.is_empty() {
            self.methods.push((method.into(), id.is_some()));
        }
        Ok(())
    }

    /// Adds a call; its result is picked from the replies with the returned handle.
    pub fn call(&mut self, method: &str, params: impl Serialize) -> Result<BatchCall, Error> {
        let id = self.client.core.pending.issue_id();
        self.push(method, params, Some(id))?;
        self.ids.push(id);
        Ok(BatchCall {
            index: self.ids.len() - 1,
            id,
        })
    }

    /// Adds a notification.
    pub fn notify(&mut self, method: &str, params: impl Serialize) -> Result<(), Error> {
        self.push(method, params, None)
    }

    /// How many calls and notifications the batch holds.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Sends the batch and, if it holds calls, waits for all their replies
    /// within the client's timeout.
    pub async fn send(mut self) -> Result<BatchReplies, Error> {
        if !metrics::enabled() {
            return self.through_middleware().await;
        }
        let started = std::time::Instant::now();
        let calls = self.ids.len() as f64;
        let service = self.service.clone();
        let in_flight = metrics::ClientInFlight::new(&service, calls);
        let outcome = self.through_middleware().await;
        drop(in_flight);
        let took = started.elapsed();
        let mut answers = outcome.as_ref().ok().map(|r| r.outcomes.iter());
        for (method, is_call) in &self.methods {
            let code = match (&outcome, answers.as_mut()) {
                (Err(e), _) => metrics::call_code(Err(e)),
                (Ok(_), Some(answers)) if *is_call => match answers.next() {
                    Some(Err(e)) => metrics::CallCode::Rpc(e.code()),
                    _ => metrics::CallCode::Ok,
                },
                (Ok(_), _) => metrics::CallCode::Ok,
            };
            metrics::client_call(&service, method, !*is_call, code, took);
        }
        outcome
    }

    /// The batch sent through the handle's middleware, as one
    /// [`OutgoingCall`](super::OutgoingCall) whose headers it carries.
    async fn through_middleware(&mut self) -> Result<BatchReplies, Error> {
        let client = self.client.clone();
        if client.middleware.is_empty() {
            return self.exchange(&client.headers).await;
        }
        let methods = self.methods.iter().map(|(m, _)| m.to_string()).collect();
        let (service, only_notifications) = (self.service.clone(), self.ids.is_empty());
        let mut replies = None;
        let slot = &mut replies;
        let send: super::middleware::SendBatch<'_> = Box::new(move |headers: Headers| {
            Box::pin(async move {
                *slot = Some(self.exchange(&headers).await?);
                Ok(())
            })
        });
        client
            .batch_through_middleware(&service, methods, only_notifications, send)
            .await?;
        // A middleware that answered without sending (its own outcome) left
        // no replies: the batch was not sent.
        replies.ok_or(Error::BatchNotSent)
    }

    async fn exchange(&mut self, headers: &Headers) -> Result<BatchReplies, Error> {
        let client = &self.client;
        let limits = client.core.config.limits;
        if self.entries == 0 {
            return Err(EncodeError::EmptyBatch.into());
        }
        if self.entries > limits.max_batch_len {
            return Err(EncodeError::BatchTooLong {
                len: self.entries,
                limit: limits.max_batch_len,
            }
            .into());
        }
        let calls = self.ids.len();
        if calls > client.core.config.max_in_flight {
            return Err(EncodeError::BatchTooLong {
                len: calls,
                limit: client.core.config.max_in_flight,
            }
            .into());
        }
        self.json.push(b']');
        let json = std::mem::take(&mut self.json);
        let budget = client.budget();
        if budget.is_spent() {
            return Err(client.timed_out(budget));
        }
        if calls == 0 {
            // Only notifications: nothing to wait for but the publish, and
            // that within the timeout, as for a lone notification.
            client.check_open()?;
            let ttl = client.notification_deadline();
            client
                .send_by(&self.service, json, headers, false, ttl, budget)
                .await?;
            return Ok(BatchReplies {
                ids: Vec::new(),
                outcomes: Vec::new(),
            });
        }
        client.check_served(&self.service, budget).await?;
        let n = u32::try_from(calls).unwrap_or(u32::MAX);
        let _permits = client.slots(n, budget).await?;
        let mut receivers = Vec::with_capacity(calls);
        let mut registrations = Vec::with_capacity(calls);
        for &id in &self.ids {
            let (receiver, registration) = client.register(id)?;
            receivers.push(receiver);
            registrations.push(registration);
        }
        client
            .send_by(
                &self.service,
                json,
                headers,
                true,
                Some(budget.deadline),
                budget,
            )
            .await?;
        client
            .core
            .pending
            .calls
            .fetch_add(calls as u64, Ordering::Relaxed);
        let received = timeout_at(budget.at, join_all(receivers))
            .await
            .map_err(|_| client.timed_out(budget))?;
        if received.iter().all(Result::is_ok) {
            registrations.into_iter().for_each(Registration::answered);
        }
        let outcomes = received
            .into_iter()
            .map(|r| r.map(|answer| answer.outcome).map_err(|_| Error::Closed))
            .collect::<Result<Vec<_>, _>>()?;
        client
            .core
            .pending
            .replies
            .fetch_add(calls as u64, Ordering::Relaxed);
        Ok(BatchReplies {
            ids: std::mem::take(&mut self.ids),
            outcomes,
        })
    }
}

/// The replies to a batch's calls.
#[derive(Debug)]
pub struct BatchReplies {
    ids: Vec<u64>,
    outcomes: Vec<Outcome>,
}

impl BatchReplies {
    /// The result of `call`, deserialized into `R`, or its error;
    /// [`Error::NotInBatch`] if `call` belongs to another batch.
    pub fn get<R: DeserializeOwned>(&self, call: BatchCall) -> Result<R, Error> {
        match self.raw(call) {
            Some(Ok(raw)) => serde_json::from_str(raw.get()).map_err(Error::Decode),
            Some(Err(e)) => Err(Error::Rpc(e.clone())),
            None => Err(Error::NotInBatch { id: call.id }),
        }
    }

    /// The raw outcome of `call`; `None` if `call` belongs to another batch.
    pub fn raw(&self, call: BatchCall) -> Option<&Result<Box<RawValue>, RpcError>> {
        match self.ids.get(call.index) {
            Some(&id) if id == call.id => self.outcomes.get(call.index),
            _ => None,
        }
    }

    /// How many calls were answered.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether the batch held no calls.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}
