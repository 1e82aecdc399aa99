//! What a handler may know about the request it serves, and middleware:
//! code that wraps every call of a server.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::jsonrpc::RpcError;
use crate::message::{header, Deadline, Headers};
use crate::router::{HandlerFuture, Methods};

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
    inner: Arc<ContextInner>,
}

struct ContextInner {
    service: Arc<str>,
    method: Box<str>,
    id: Option<Box<RawValue>>,
    headers: Headers,
    deadline: Option<Deadline>,
    attempt: Option<u32>,
}

impl Context {
    /// A context for `method` of `service`, as a test of a handler or a
    /// middleware would build one.
    pub fn new(service: &str, method: &str) -> Self {
        Self::build(service.into(), method, None, Headers::new(), None, None)
    }

    pub(crate) fn build(
        service: Arc<str>,
        method: &str,
        id: Option<&RawValue>,
        headers: Headers,
        deadline: Option<Deadline>,
        attempt: Option<u32>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                service,
                method: method.into(),
                id: id.map(ToOwned::to_owned),
                headers,
                deadline,
                attempt,
            }),
        }
    }

    /// This context with `headers` (for tests).
    #[must_use]
    pub fn with_headers(self, headers: Headers) -> Self {
        let i = &self.inner;
        Self::build(
            i.service.clone(),
            &i.method,
            i.id.as_deref(),
            headers,
            i.deadline,
            i.attempt,
        )
    }

    /// The service the request was sent to.
    pub fn service(&self) -> &str {
        &self.inner.service
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

    /// The caller's W3C trace context (`traceparent` header), if it sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.inner.headers.get(header::TRACEPARENT)
    }

    /// The vendor part of the caller's trace context (`tracestate` header).
    pub fn tracestate(&self) -> Option<&str> {
        self.inner.headers.get(header::TRACESTATE)
    }

    /// Which delivery of this request this is, 1 for the first, where the
    /// broker counts them (Redis, memory); `None` where it does not (Kafka).
    /// More than 1: a server that had it died or released it, and the
    /// handler may have run before.
    pub fn attempt(&self) -> Option<u32> {
        self.inner.attempt
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
            .field("attempt", &i.attempt)
            .finish()
    }
}

/// What the engine knows of a request before it runs: borrowed, so that a
/// handler that takes no [`Context`] costs no copy of it. Public (in a
/// private module) only because the sealed handler trait names it.
#[allow(unreachable_pub)]
pub struct CallInfo<'a> {
    pub(crate) service: &'a Arc<str>,
    pub(crate) method: &'a str,
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) headers: &'a Headers,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) attempt: Option<u32>,
}

impl CallInfo<'_> {
    pub(crate) fn context(&self) -> Context {
        Context::build(
            self.service.clone(),
            self.method,
            self.id,
            self.headers.clone(),
            self.deadline,
            self.attempt,
        )
    }
}

/// What a call produced: its result as JSON, or its error.
pub type CallOutcome = Result<Box<RawValue>, RpcError>;

/// Code that wraps every call and notification a server runs: it sees the
/// request's [`Context`] before the handler runs and the outcome after,
/// and may answer without running the handler at all (rejecting a request
/// that lacks an auth header, say).
///
/// Middleware runs in the order added with
/// [`Server::middleware`](crate::Server::middleware), the first outermost.
/// The engine's own answers (parse errors, invalid requests, oversized
/// messages) do not pass through it; unknown methods and invalid params do,
/// as errors from [`Next::run`].
///
/// ```
/// use std::time::Instant;
/// use busrpc_core::{CallOutcome, Context, Middleware, Next, RpcError};
///
/// struct RequireToken;
///
/// #[async_trait::async_trait]
/// impl Middleware for RequireToken {
///     async fn call(&self, ctx: &Context, next: Next<'_>) -> CallOutcome {
///         if ctx.headers().get("authorization") != Some("Bearer sesame") {
///             return Err(RpcError::new(-32001, "unauthorized"));
///         }
///         let started = Instant::now();
///         let outcome = next.run().await;
///         tracing::info!(method = ctx.method(), ok = outcome.is_ok(), took = ?started.elapsed());
///         outcome
///     }
/// }
/// ```
#[async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Handles one request: usually `next.run().await`, with work around it.
    async fn call(&self, ctx: &Context, next: Next<'_>) -> CallOutcome;
}

/// The rest of the chain: the middleware after this one, then the handler.
pub struct Next<'a> {
    pub(crate) rest: &'a [Arc<dyn Middleware>],
    pub(crate) ctx: &'a Context,
    pub(crate) methods: &'a Methods,
    pub(crate) info: &'a CallInfo<'a>,
    pub(crate) params: Option<&'a RawValue>,
}

impl<'a> Next<'a> {
    /// Runs the rest of the chain and returns its outcome.
    pub async fn run(self) -> CallOutcome {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = Next { rest, ..self };
                first.call(self.ctx, next).await
            }
            None => {
                let started: Result<HandlerFuture, RpcError> =
                    self.methods
                        .dispatch_with(self.info, self.params, Some(self.ctx));
                started?.await
            }
        }
    }

    /// The request's params as the caller sent them, if any.
    pub fn params(&self) -> Option<&RawValue> {
        self.params
    }
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}
