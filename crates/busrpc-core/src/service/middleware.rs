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
/// that lacks an auth header, say).
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
