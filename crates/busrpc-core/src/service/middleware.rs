//! Middleware: code that wraps every call of a server.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::context::{CallInfo, Context};
use super::handler::HandlerFuture;
use super::router::Methods;
use crate::wire::jsonrpc::RpcError;

/// What a call produced: its result as JSON, or its error.
pub type CallOutcome = Result<Box<RawValue>, RpcError>;

/// Code that wraps every call and notification a server runs: it sees the
/// request's [`Context`] before the handler runs and the outcome after,
/// and may answer without running the handler at all (rejecting a request
/// that lacks an auth header, say). Through [`ended`](Self::ended) it also
/// learns how each request the server read came out, including those that
/// never reach [`call`](Self::call) or whose reply never arrives.
///
/// Middleware runs in the order added with
/// [`Server::middleware`](crate::Server::middleware), the first outermost.
/// The engine's own answers (parse errors, invalid requests, oversized
/// messages) do not pass through it; unknown methods and invalid params do,
/// as errors from [`Next::run`].
///
/// An implementation carries [`#[async_trait]`](crate::async_trait), which
/// busrpc re-exports: `#[busrpc::async_trait]` needs no other crate. (An
/// `impl` without it fails with E0195, "lifetime parameters or bounds on
/// method `call` do not match the trait declaration".)
///
/// ```
/// use std::time::Instant;
/// use busrpc_core::{CallOutcome, Context, Middleware, Next, RpcError};
///
/// struct RequireToken;
///
/// #[busrpc_core::async_trait] // `#[busrpc::async_trait]` through the busrpc crate
/// impl Middleware for RequireToken {
///     async fn call(&self, ctx: &Context, next: Next<'_>) -> CallOutcome {
///         if ctx.headers().get("authorization") != Some("Bearer sesame") {
///             return Err(RpcError::new(1003, "unauthorized"));
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
    /// Handles one request: usually `next.run().await`, with work around
    /// it. By default only that.
    async fn call(&self, ctx: &Context, next: Next<'_>) -> CallOutcome {
        let _ = ctx;
        next.run().await
    }

    /// Told once per call or notification of each delivery the server
    /// read, when its delivery is settled, how it came out (see
    /// [`Ending`]): answered or failed (once its reply is with the
    /// broker), cancelled at its deadline, skipped as expired,
    /// dead-lettered, its reply refused, or released to be delivered
    /// again. By default nothing.
    ///
    /// It runs on the path that settles deliveries, so it must be quick
    /// (log, count); spawn anything slower. A panic in it is caught and
    /// logged. Requests the server cannot read (unparseable, no method,
    /// over the size limit) have no context and are not told.
    ///
    /// ```
    /// use busrpc_core::{Context, Ending, Middleware};
    ///
    /// struct LogEveryEnding;
    ///
    /// #[busrpc_core::async_trait]
    /// impl Middleware for LogEveryEnding {
    ///     fn ended(&self, ctx: &Context, ending: &Ending<'_>) {
    ///         tracing::info!(method = ctx.method(), id = ctx.id_text(), %ending, "request ended");
    ///     }
    /// }
    /// ```
    fn ended(&self, ctx: &Context, ending: &Ending<'_>) {
        let _ = (ctx, ending);
    }
}

/// How a request the server read came out, told to
/// [`Middleware::ended`]; each is also logged by the server with its
/// service, method and id, at the level given.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Ending<'a> {
    /// It ran and succeeded: its result is with the broker on the way to
    /// its caller (a notification: nothing to send). Logged at `debug`
    /// when it ran (`handled`, in its request's span).
    Answered,
    /// Its error is with the broker on the way to its caller: the
    /// handler's or the middleware's, an unknown method, invalid params,
    /// a panic (-32603). Logged at `debug` when it ran (`answered with an
    /// error`, in its request's span).
    Failed(&'a RpcError),
    /// It was still running when its deadline passed: stopped, nothing
    /// sent (its caller has timed out). Logged at `info`.
    Cancelled,
    /// Its caller gave up on it and said so (a cancel notice): stopped
    /// while it ran, or never started; nothing sent. Logged at `info`.
    Abandoned,
    /// Its deadline had passed when the server read it: not run, nothing
    /// sent. Logged at `info`.
    Expired,
    /// Delivered more often than the transport's `max_deliveries`: not
    /// run, moved to the dead-letter queue, its caller answered -32001.
    /// Logged at `warn`.
    DeadLettered {
        /// How often it was delivered.
        deliveries: u64,
    },
    /// It ran, but its reply could not be sent: larger than the limit, or
    /// refused by the broker (a full inbox, not allowed), or addressed to a
    /// queue that does not exist. The request is acknowledged; its caller
    /// is told with a small -32603 where that can reach it. Logged at
    /// `warn`.
    ReplyRefused {
        /// Why, as the server or the broker said.
        reason: &'a str,
    },
    /// It ran, but the broker stayed unreachable until its deadline
    /// passed while its reply was sent again and again: the reply is
    /// dropped (its caller has stopped waiting) and the request
    /// acknowledged, not run again. Logged at `warn`.
    ReplyExpired {
        /// The broker's last error.
        reason: &'a str,
    },
    /// Settling it failed (the broker was unreachable) and could not be
    /// tried again: it is released and will be delivered again, and told
    /// again then. Logged at `warn`.
    Released {
        /// The broker's error.
        reason: &'a str,
    },
}

impl fmt::Display for Ending<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Answered => f.write_str("answered"),
            Self::Failed(e) => write!(f, "failed: {} {}", e.code(), e.message()),
            Self::Cancelled => f.write_str("cancelled at its deadline"),
            Self::Abandoned => f.write_str("abandoned by its caller"),
            Self::Expired => f.write_str("skipped: its deadline had passed"),
            Self::DeadLettered { deliveries } => {
                write!(f, "dead-lettered after {deliveries} deliveries")
            }
            Self::ReplyRefused { reason } => write!(f, "reply refused: {reason}"),
            Self::ReplyExpired { reason } => {
                write!(
                    f,
                    "reply dropped: the broker was unreachable until its deadline: {reason}"
                )
            }
            Self::Released { reason } => write!(f, "released for another try: {reason}"),
        }
    }
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
