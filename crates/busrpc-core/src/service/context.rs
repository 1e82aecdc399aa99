//! What a handler may know about the request it serves.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::wire::{header, Deadline, Headers, Serving};

/// The request a handler serves, as the server received it: its method, its
/// id, its headers, its deadline, its trace context and which delivery of it
/// this is.
///
/// A handler asks for it by taking a `Context` as its first argument (after
/// the router's state, if any); a handler that does not pays nothing for it.
///
/// ```
/// use busrpc_core::{Context, Router, RpcError};
///
/// let router = Router::new().method("whoami", |ctx: Context, (): ()| async move {
///     let caller = ctx.headers().get("x-caller").unwrap_or("anonymous").to_owned();
///     Ok::<_, RpcError>(format!("{} asked {} by {caller}", ctx.id_text(), ctx.method()))
/// });
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextData>,
}

struct ContextData {
    service: Arc<str>,
    server: Arc<str>,
    method: Box<str>,
    id: Option<Box<RawValue>>,
    headers: Headers,
    deadline: Option<Deadline>,
    arrival: Arrival,
}

/// How a request came to its server, beside what it carries: which
/// delivery of it this is and how long it waited in the queue.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Arrival {
    pub(crate) attempt: Option<u32>,
    pub(crate) queue_wait: Option<Duration>,
}

impl Context {
    /// A context for `method` of `service`, as a test of a handler or a
    /// middleware would build one.
    pub fn new(service: &str, method: &str) -> Self {
        let server = crate::transport::default_member_name();
        Self::build(
            service.into(),
            server.into(),
            method,
            None,
            Headers::new(),
            None,
            Arrival::default(),
        )
    }

    pub(crate) fn build(
        service: Arc<str>,
        server: Arc<str>,
        method: &str,
        id: Option<&RawValue>,
        headers: Headers,
        deadline: Option<Deadline>,
        arrival: Arrival,
    ) -> Self {
        Self {
            inner: Arc::new(ContextData {
                service,
                server,
                method: method.into(),
                id: id.map(ToOwned::to_owned),
                headers,
                deadline,
                arrival,
            }),
        }
    }

    /// This context with `headers` (for tests).
    #[must_use]
    pub fn with_headers(self, headers: Headers) -> Self {
        let i = &self.inner;
        Self::build(
            i.service.clone(),
            i.server.clone(),
            &i.method,
            i.id.as_deref(),
            headers,
            i.deadline,
            i.arrival,
        )
    }

    /// The service the request was sent to.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The name of the server instance serving the request: its consumer's
    /// name on the broker (the Redis consumer, the Kafka client id; the
    /// transport's `name` option, by default `{host}-{pid}`), so a handler
    /// or a middleware can log which instance ran a call.
    pub fn server_name(&self) -> &str {
        &self.inner.server
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// The request's id as the caller sent it (a JSON number or string);
    /// `None` for a notification.
    pub fn id(&self) -> Option<&RawValue> {
        self.inner.id.as_deref()
    }

    /// The id as text for logs: its JSON, or `-` for a notification.
    pub fn id_text(&self) -> &str {
        self.inner.id.as_deref().map_or("-", RawValue::get)
    }

    /// Whether the request is a notification (no one waits for its result).
    pub fn is_notification(&self) -> bool {
        self.inner.id.is_none()
    }

    /// The message's headers, busrpc's own (`reply-to`, `deadline`, …)
    /// and the caller's.
    pub fn headers(&self) -> &Headers {
        &self.inner.headers
    }

    /// When the caller stops waiting, if it said.
    pub fn deadline(&self) -> Option<Deadline> {
        self.inner.deadline
    }

    /// The deadline as an [`Instant`] on this machine's monotonic clock, to
    /// hand to the handler's own timeouts (`tokio::time::timeout_at`,
    /// a database driver's).
    pub fn deadline_instant(&self) -> Option<Instant> {
        self.inner.deadline.map(|d| Instant::now() + d.remaining())
    }

    /// Runs `work` as part of this request: the calls and notifications
    /// it makes are bounded by the request's deadline and carry its trace
    /// context, as the handler's own are. A task the handler spawns does
    /// not inherit them otherwise; wrap it to make it part of the chain.
    ///
    /// ```
    /// use busrpc_core::{Client, Context, Router, RpcError};
    ///
    /// fn router(client: Client) -> Router {
    ///     Router::new().method("audit", move |ctx: Context, (): ()| {
    ///         let client = client.clone();
    ///         async move {
    ///             // Bounded by this request's deadline, though it runs on.
    ///             tokio::spawn(ctx.scope(async move {
    ///                 client.notify("audit-log", "record", ("seen",)).await
    ///             }));
    ///             Ok::<_, RpcError>(())
    ///         }
    ///     })
    /// }
    /// # let _ = router;
    /// ```
    pub fn scope<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        let serving = Serving::of(self.inner.deadline, &self.inner.headers);
        async move {
            match serving {
                Some(serving) => serving.scope(work).await,
                None => work.await,
            }
        }
    }

    /// The caller's W3C trace context (`traceparent` header), if it sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.inner.headers.get(header::TRACEPARENT)
    }

    /// The vendor part of the caller's trace context (`tracestate` header).
    pub fn tracestate(&self) -> Option<&str> {
        self.inner.headers.get(header::TRACESTATE)
    }

    /// Which delivery of this request this is, 1 for the first; `None`
    /// where nothing counts them (Kafka's pipeline dialect). More than 1: a
    /// server that had it died or released it, and the handler may have run
    /// before. Redis and memory count every delivery; Kafka counts a
    /// release exactly and a death of the server that held it from the note
    /// committed with the partition's offset, so there it is at most the
    /// number of deliveries (a record the dead server had read ahead but not
    /// started counts too) and, on a broker that drops commit metadata
    /// (Tansu 0.6.0), 1 after a death.
    pub fn attempt(&self) -> Option<u32> {
        self.inner.arrival.attempt
    }

    /// How long the request waited between its publish and its handler's
    /// start: the broker's time of publish (a Redis entry's id, a Kafka
    /// record's timestamp, the memory broker's clock) against this
    /// server's clock, so across machines it is as right as their clocks
    /// agree (zero, never negative, when the server's runs behind). `None`
    /// where the transport does not say when it was published
    /// ([`Delivery::with_published`](crate::Delivery::with_published)). A
    /// batch's calls share their message's.
    pub fn queue_wait(&self) -> Option<Duration> {
        self.inner.arrival.queue_wait
    }

    /// A key naming this call apart from every other call of every caller,
    /// the same on each delivery of it: the caller's inbox (`reply-to`,
    /// private to one client; a Kafka shared inbox's address names its
    /// client too) and the request's id. A
    /// handler whose work must not be done twice (delivery is
    /// at-least-once) records its outcome under it and answers a second
    /// run from the record. `None` for a notification, which has neither;
    /// a caller that calls again after a timeout sends a new id, so its
    /// retry is a new key (pass a key of the application's for that).
    pub fn idempotency_key(&self) -> Option<String> {
        let id = self.inner.id.as_ref()?;
        let inbox = self.inner.headers.get(header::REPLY_TO)?;
        Some(format!("{inbox}/{}", id.get()))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Context")
            .field("service", &i.service)
            .field("method", &i.method)
            .field("id", &self.id_text())
            .field("headers", &i.headers)
            .field("deadline", &i.deadline)
            .field("attempt", &i.arrival.attempt)
            .field("queue_wait", &i.arrival.queue_wait)
            .finish()
    }
}

/// What the engine knows of a request before it runs: borrowed, so that a
/// handler that takes no [`Context`] costs no copy of it. Public (in a
/// private module) only because the sealed handler trait names it.
#[allow(unreachable_pub)]
pub struct CallInfo<'a> {
    pub(crate) service: &'a Arc<str>,
    pub(crate) server: &'a Arc<str>,
    pub(crate) method: &'a str,
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) headers: &'a Headers,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) arrival: Arrival,
}

impl CallInfo<'_> {
    pub(crate) fn context(&self) -> Context {
        Context::build(
            self.service.clone(),
            self.server.clone(),
            self.method,
            self.id,
            self.headers.clone(),
            self.deadline,
            self.arrival,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(id: Option<&str>, headers: &[(&str, &str)]) -> Context {
        let id = id.map(|id| RawValue::from_string(id.to_owned()).unwrap());
        let headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        Context::build(
            "s".into(),
            "a".into(),
            "m",
            id.as_deref(),
            headers,
            None,
            Arrival::default(),
        )
    }

    #[test]
    fn the_idempotency_key_is_the_callers_inbox_and_the_id() {
        let call = context(Some("7"), &[(header::REPLY_TO, "inbox-a")]);
        assert_eq!(call.idempotency_key().as_deref(), Some("inbox-a/7"));
        let other_caller = context(Some("7"), &[(header::REPLY_TO, "inbox-b")]);
        assert_ne!(other_caller.idempotency_key(), call.idempotency_key());
        let string_id = context(Some("\"x\""), &[(header::REPLY_TO, "inbox-a")]);
        assert_eq!(
            string_id.idempotency_key().as_deref(),
            Some("inbox-a/\"x\"")
        );
        assert_eq!(context(None, &[]).idempotency_key(), None);
    }
}
