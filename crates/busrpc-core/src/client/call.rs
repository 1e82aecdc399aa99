//! Calls and notifications.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::timeout_at;
use tracing::Instrument;

use super::budget::Budget;
use super::cancel::Unanswered;
use super::Client;
use crate::error::Error;
use crate::telemetry::CallGuard;
use crate::wire::jsonrpc;
use crate::wire::Headers;

/// A call's result with what its reply said beside it: which server
/// instance answered (see [`Client::call_reply`]).
#[derive(Clone, Debug)]
pub struct Reply<R> {
    /// The result.
    pub value: R,
    pub(super) served_by: Option<Arc<str>>,
}

impl<R> Reply<R> {
    pub(super) fn new(value: R, served_by: Option<Arc<str>>) -> Self {
        Self { value, served_by }
    }

    /// The name of the server instance that answered (its
    /// [`ServerHandle::name`](crate::ServerHandle::name)), if its reply
    /// said: servers say with
    /// [`ServerConfig::name_in_replies`](crate::ServerConfig::name_in_replies).
    pub fn served_by(&self) -> Option<&str> {
        self.served_by.as_deref()
    }

    fn map<T>(self, f: impl FnOnce(R) -> T) -> Reply<T> {
        Reply {
            value: f(self.value),
            served_by: self.served_by,
        }
    }
}

impl Client {
    /// Calls `method` of `service` and deserializes the result into `R`.
    ///
    /// `params` must serialize to an array (a tuple, a `Vec`: by position) or
    /// an object (a struct, a map: by name); `()` sends no params.
    pub async fn call<R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<R, Error> {
        let raw = self.call_raw(service, method, params).await?;
        serde_json::from_str(raw.get()).map_err(Error::Decode)
    }

    /// Like [`call`](Self::call), with the name of the server instance
    /// that answered, when servers put it in their replies
    /// ([`ServerConfig::name_in_replies`](crate::ServerConfig::name_in_replies)).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use busrpc_core::{memory::MemoryTransport, Client, Router, RpcError, Server, ServerConfig};
    /// # #[tokio::main] async fn main() -> Result<(), busrpc_core::Error> {
    /// # let transport = Arc::new(MemoryTransport::new());
    /// let router = Router::new().method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) });
    /// let server = Server::new(transport.clone(), "math", router)
    ///     .with_config(ServerConfig::default().name_in_replies(true))
    ///     .start()
    ///     .await?;
    /// let client = Client::connect(transport).await?;
    /// let reply = client.call_reply::<i64>("math", "add", (2, 3)).await?;
    /// assert_eq!(reply.value, 5);
    /// assert_eq!(reply.served_by(), Some(server.name()));
    /// # server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn call_reply<R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<Reply<R>, Error> {
        let reply = self.call_raw_reply(service, method, params).await?;
        let value = serde_json::from_str(reply.value.get()).map_err(Error::Decode)?;
        Ok(reply.map(|_| value))
    }

    /// Like [`call`](Self::call), returning the result as raw JSON.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<Box<RawValue>, Error> {
        Ok(self.call_raw_reply(service, method, params).await?.value)
    }

    /// A call, through the middleware if any, in its span, metered.
    async fn call_raw_reply(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<Reply<Box<RawValue>>, Error> {
        let guard = CallGuard::start(&self.core.meters, service, method, false);
        let outcome = if self.middleware.is_empty() {
            self.call_direct(service, method, params, &self.headers)
                .instrument(guard.span().clone())
                .await
        } else {
            self.through_middleware(service, method, params, false)
                .instrument(guard.span().clone())
                .await
        };
        guard.finish(outcome.as_ref().map(drop));
        outcome
    }
    /// A call past the middleware.
    pub(super) async fn call_direct(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        headers: &Headers,
    ) -> Result<Reply<Box<RawValue>>, Error> {
        // One timer for the whole call, not one per step: the steps' own
        // timers cost more than any other part of the call's bookkeeping.
        // Taken now, before waiting for a slot: the deadline the server
        // sees is the caller's own.
        let budget = self.budget();
        if budget.is_spent() {
            return Err(self.timed_out(budget));
        }
        let call = self.call_unbounded(service, method, params, headers, budget);
        match timeout_at(budget.at, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(budget)),
        }
    }

    /// [`call_raw`](Self::call_raw) without its deadline.
    pub(super) async fn call_unbounded(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        headers: &Headers,
        budget: Budget,
    ) -> Result<Reply<Box<RawValue>>, Error> {
        let core = &*self.core;
        self.check_open()?;
        self.check_served(service, budget).await?;
        let _permit = core.in_flight.acquire().await.map_err(|_| Error::Closed)?;
        let id = core.pending.issue_id();
        tracing::Span::current().record("rpc.jsonrpc.request_id", id);
        let mut json = Vec::with_capacity(128);
        jsonrpc::write_request(&mut json, method, &params, Some(id))?;
        let (receiver, registration) = self.register(id)?;
        // From here a caller that stops waiting tells the servers: a call
        // dropped while its publish is on the way may be on the broker.
        let unanswered = Unanswered::new(self, service, id, budget.deadline);
        let sent = self
            .send(
                service,
                json,
                headers,
                true,
                Some(budget.deadline),
                budget.at,
            )
            .await;
        if let Err(e) = sent {
            unanswered.settled();
            return Err(e);
        }
        core.pending.calls.fetch_add(1, Ordering::Relaxed);
        let answer = receiver.await.map_err(|_| Error::Closed)?;
        unanswered.settled();
        core.pending.replies.fetch_add(1, Ordering::Relaxed);
        registration.answered();
        if let Some(name) = &answer.served_by {
            tracing::Span::current().record("busrpc.served_by", &**name);
        }
        Ok(Reply {
            value: answer.outcome.map_err(Error::Rpc)?,
            served_by: answer.served_by,
        })
    }

    /// Sends a notification: no id, no reply, no waiting beyond the publish.
    pub async fn notify(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<(), Error> {
        let guard = CallGuard::start(&self.core.meters, service, method, true);
        let outcome = if self.middleware.is_empty() {
            self.notify_direct(service, method, params, &self.headers)
                .instrument(guard.span().clone())
                .await
        } else {
            self.through_middleware(service, method, params, true)
                .instrument(guard.span().clone())
                .await
                .map(drop)
        };
        guard.finish(outcome.as_ref().copied());
        outcome
    }

    /// A notification past the middleware.
    pub(super) async fn notify_direct(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        headers: &Headers,
    ) -> Result<(), Error> {
        self.check_open()?;
        let mut json = Vec::with_capacity(128);
        jsonrpc::write_request(&mut json, method, &params, None)?;
        let ttl = self.notification_deadline();
        let budget = self.budget();
        if budget.is_spent() {
            return Err(Error::Timeout(budget.timeout));
        }
        let publish = self.send(service, json, headers, false, ttl, budget.at);
        match timeout_at(budget.at, publish).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(budget.timeout)),
        }
    }
}
