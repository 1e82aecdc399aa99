//! One call: through the middleware chain to its handler, in its span,
//! metered, a panic answered -32603.

use std::panic::AssertUnwindSafe;

use futures_util::future::FutureExt;
use serde_json::value::RawValue;
use tracing::Instrument;

use super::{bump, panic_message, Engine, Envelope};
use crate::service::{CallInfo, Next};
use crate::telemetry::RequestGuard;
use crate::wire::jsonrpc::{self, InvalidRequest, Request, RpcError};

impl Engine {
    pub(super) async fn answer(
        &self,
        item: Result<Request<'_>, InvalidRequest<'_>>,
        env: Envelope<'_>,
    ) -> Option<Vec<u8>> {
        let request = match item {
            Ok(request) => request,
            Err(InvalidRequest { id }) => {
                return Some(self.refused(id, &RpcError::invalid_request()))
            }
        };
        let outcome = self.execute(&request, env).await;
        let Some(id) = request.id else {
            bump(&self.counters.notifications);
            if let Err(e) = outcome {
                tracing::debug!(method = %request.method, error = %e, "notification failed");
            }
            return None;
        };
        bump(&self.counters.calls);
        match outcome {
            Ok(result) => {
                let mut buf = Vec::with_capacity(result.get().len() + 48);
                jsonrpc::write_result(&mut buf, Some(id), &result);
                Some(buf)
            }
            Err(e) => Some(self.error(Some(id), &e)),
        }
    }

    /// Runs the handler in its request's span, metered (see [`RequestGuard`]).
    async fn execute(
        &self,
        request: &Request<'_>,
        env: Envelope<'_>,
    ) -> Result<Box<RawValue>, RpcError> {
        let guard = RequestGuard::start(
            &self.meters,
            &self.service,
            &request.method,
            request.id,
            env.headers,
            env.arrival.attempt,
            env.arrival.queue_wait,
        );
        let outcome = self
            .run(request, env)
            .instrument(guard.span().clone())
            .await;
        guard.finish(outcome.as_ref().map(drop));
        outcome
    }

    /// Runs the handler, through the middleware if there is any; a panic,
    /// in its synchronous part or its future, becomes -32603 and the server
    /// goes on.
    async fn run(
        &self,
        request: &Request<'_>,
        env: Envelope<'_>,
    ) -> Result<Box<RawValue>, RpcError> {
        let info = self.call_info(request, env);
        let outcome = if self.middleware.is_empty() {
            let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.methods.dispatch_with(&info, request.params, None)
            }));
            match started {
                Ok(Ok(future)) => AssertUnwindSafe(future).catch_unwind().await,
                Ok(Err(e)) => return Err(e),
                Err(panic) => Err(panic),
            }
        } else {
            // Built once for the whole chain and the handler.
            let ctx = info.context();
            let next = Next {
                rest: &self.middleware,
                ctx: &ctx,
                methods: &self.methods,
                info: &info,
                params: request.params,
            };
            let outcome = AssertUnwindSafe(next.run()).catch_unwind().await;
            let outcome = self.caught(request, outcome);
            if let Some(seen) = env.seen {
                let result = outcome.as_ref().map(drop).map_err(Clone::clone);
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.push((ctx, result));
            }
            return outcome;
        };
        self.caught(request, outcome)
    }

    /// What a handler and its middleware learn of `request`.
    pub(super) fn call_info<'a>(
        &'a self,
        request: &'a Request<'_>,
        env: Envelope<'a>,
    ) -> CallInfo<'a> {
        CallInfo {
            service: &self.service,
            server: &self.server,
            method: &request.method,
            id: request.id,
            headers: env.headers,
            deadline: env.deadline,
            arrival: env.arrival,
        }
    }

    /// The outcome of a run that may have panicked: a panic is counted,
    /// logged and answered -32603.
    fn caught(
        &self,
        request: &Request<'_>,
        outcome: std::thread::Result<Result<Box<RawValue>, RpcError>>,
    ) -> Result<Box<RawValue>, RpcError> {
        outcome.unwrap_or_else(|panic| {
            bump(&self.counters.panics);
            self.meters.panic(&request.method);
            tracing::error!(service = %self.service, method = %request.method, panic = panic_message(&*panic), "handler panicked");
            Err(RpcError::internal_error())
        })
    }
}
