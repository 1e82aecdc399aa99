//! Publishing a request: encoded, stamped with busrpc's headers, and
//! tried again within its deadline while the broker is away.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use super::budget::Budget;
use super::pending::{Answer, Registration};
use super::Client;
use crate::error::Error;
use crate::telemetry::inject_trace;
use crate::transport::TransportError;
use crate::wire::codec::Codec;
use crate::wire::{header, Deadline, Headers, Message, Serving};

/// The first wait before a publish that failed for a transient reason
/// (see [`TransportError::is_transient`]) is tried again; each wait then
/// doubles, up to [`LAST_PUBLISH_RETRY`], while the call's deadline allows.
pub(super) const FIRST_PUBLISH_RETRY: Duration = Duration::from_millis(20);
/// The longest wait between two tries of a publish.
pub(super) const LAST_PUBLISH_RETRY: Duration = Duration::from_secs(1);

impl Client {
    pub(super) async fn slots(
        &self,
        n: u32,
        budget: Budget,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        self.check_open()?;
        match timeout_at(budget.at, self.core.in_flight.acquire_many(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(self.timed_out(budget)),
        }
    }

    /// A call that ran out of `budget`, counted.
    pub(super) fn timed_out(&self, budget: Budget) -> Error {
        self.core.pending.timeouts.fetch_add(1, Ordering::Relaxed);
        Error::Timeout(budget.timeout)
    }

    pub(super) fn register(
        &self,
        id: u64,
    ) -> Result<(oneshot::Receiver<Answer>, Registration<'_>), Error> {
        self.core.pending.register(id)
    }

    /// Encodes and publishes a request, notification or batch; one that
    /// `expects_reply` carries the inbox's address, and `deadline` (when the
    /// caller stops waiting) travels with it.
    pub(super) async fn send(
        &self,
        service: &str,
        json: Vec<u8>,
        extra: &Headers,
        expects_reply: bool,
        deadline: Option<Deadline>,
        give_up: Instant,
    ) -> Result<(), Error> {
        let core = &*self.core;
        let codec = core.config.codec;
        let payload = Bytes::from(codec.encode(json)?);
        let limit = core.config.limits.max_message_bytes;
        if payload.len() > limit {
            return Err(Error::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let address = core.transport.service_address(service);
        let mut backoff = FIRST_PUBLISH_RETRY;
        loop {
            // The caller's first; busrpc's own after them win, as
            // `Headers::insert` replaces.
            let mut headers = extra.clone();
            if expects_reply {
                headers.insert(header::REPLY_TO, Arc::clone(&core.inbox_address));
            }
            if let Some(deadline) = deadline {
                headers.insert(header::DEADLINE, deadline);
            }
            if codec != Codec::Json {
                headers.insert(header::CONTENT_TYPE, codec.content_type());
            }
            // The call's span is the server's span's parent, unless the
            // caller sent a trace context of its own; without a tracer,
            // a call made while serving a request carries that request's.
            if extra.get(header::TRACEPARENT).is_none() {
                inject_trace(&mut headers);
                if headers.get(header::TRACEPARENT).is_none() {
                    follow_trace(&mut headers);
                }
            }
            let message = Message {
                payload: payload.clone(),
                headers,
            };
            match core.transport.publish(&address, message).await {
                Ok(()) => return Ok(()),
                Err(TransportError::NotServed(_)) => {
                    return Err(Error::NoService {
                        service: service.to_owned(),
                    })
                }
                // The broker is away for a moment (restarting, failing
                // over): try again while the caller still waits, and say
                // why once it would not. A publish that failed after
                // reaching the broker may then arrive twice: the server
                // may run it twice, and the second reply is dropped.
                Err(e) if e.is_transient() && Instant::now() + backoff < give_up => {
                    tracing::debug!(%service, error = %e, ?backoff, "publishing failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LAST_PUBLISH_RETRY);
                    self.check_open()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`send`](Self::send), bounded by the call's deadline: a broker that
    /// does not answer must not hold a caller past its timeout.
    pub(super) async fn send_by(
        &self,
        service: &str,
        json: Vec<u8>,
        headers: &Headers,
        expects_reply: bool,
        deadline: Option<Deadline>,
        budget: Budget,
    ) -> Result<(), Error> {
        let send = self.send(service, json, headers, expects_reply, deadline, budget.at);
        match timeout_at(budget.at, send).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(budget)),
        }
    }
}

/// Puts the trace context of the request being served, if any, on a
/// message sent while serving it.
fn follow_trace(headers: &mut Headers) {
    let trace = Serving::read(|serving| serving.trace.clone());
    if let Some((parent, state)) = trace {
        headers.insert(header::TRACEPARENT, parent);
        if let Some(state) = state {
            headers.insert(header::TRACESTATE, state);
        }
    }
}
