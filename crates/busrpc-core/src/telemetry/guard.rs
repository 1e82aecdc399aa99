//! One guard per unit of work: a server's request and a client's call
//! each get their span, their meters and their outcome from one value,
//! started before the work and finished with its outcome, so that no
//! caller weaves span, meters and outcome together by hand.

use serde_json::value::RawValue;

use super::metrics::{self, ClientCall, ClientMeters, Handled, Running, ServerMeters};
use super::spans::{call_span, record_call_outcome, record_outcome, request_span};
use crate::error::Error;
use crate::wire::jsonrpc::RpcError;
use crate::wire::Headers;

/// A call or notification a server runs: its `busrpc.request` span, and
/// (feature `metrics`) its place in flight and its duration.
pub(crate) struct RequestGuard<'a> {
    span: tracing::Span,
    meters: &'a ServerMeters,
    running: Option<Running<'a>>,
    method: &'a str,
    notification: bool,
    queue_wait: Option<std::time::Duration>,
}

impl<'a> RequestGuard<'a> {
    /// The request starts.
    pub(crate) fn start(
        meters: &'a ServerMeters,
        service: &str,
        method: &'a str,
        id: Option<&RawValue>,
        headers: &Headers,
        attempt: Option<u32>,
        queue_wait: Option<std::time::Duration>,
    ) -> Self {
        Self {
            span: request_span(service, method, id, headers, attempt, queue_wait),
            running: metrics::enabled().then(|| meters.start()),
            meters,
            method,
            notification: id.is_none(),
            queue_wait,
        }
    }

    /// The span every `.await` of the handler runs in.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The request ended with `outcome`.
    pub(crate) fn finish(self, outcome: Result<(), &RpcError>) {
        if let Some(running) = self.running {
            let took = running.elapsed();
            drop(running);
            let handled = Handled {
                method: Some(self.method),
                notification: self.notification,
                outcome: outcome.map_err(RpcError::code),
                queue_wait: self.queue_wait,
            };
            self.meters.request(&handled, Some(took));
        }
        if self.span.is_disabled() {
            return;
        }
        record_outcome(&self.span, outcome.map_err(RpcError::code));
        let _entered = self.span.enter();
        match outcome {
            Ok(()) => tracing::debug!("handled"),
            Err(e) => tracing::debug!(
                code = e.code(),
                message = e.message(),
                "answered with an error"
            ),
        }
    }
}

/// A call or notification a client makes: its `busrpc.call` or
/// `busrpc.notify` span, and (feature `metrics`) its place in flight, its
/// duration and how it ended. Dropped unfinished, it counts as cancelled:
/// its caller gave up.
pub(crate) struct CallGuard<'a> {
    span: tracing::Span,
    metered: Option<ClientCall<'a>>,
}

impl<'a> CallGuard<'a> {
    /// The call starts.
    pub(crate) fn start(
        meters: &ClientMeters,
        service: &'a str,
        method: &'a str,
        notification: bool,
    ) -> Self {
        Self {
            span: call_span(service, method, notification),
            metered: metrics::enabled()
                .then(|| ClientCall::start(meters, service, method, notification)),
        }
    }

    /// The span the call runs in.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The call ended with `outcome`.
    pub(crate) fn finish(self, outcome: Result<(), &Error>) {
        record_call_outcome(&self.span, outcome);
        if let Some(call) = self.metered {
            call.finished(metrics::call_code(outcome));
        }
    }
}
