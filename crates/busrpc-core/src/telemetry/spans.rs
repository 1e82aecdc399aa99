//! The spans of a server's requests and a client's calls. Field names
//! follow OpenTelemetry's RPC conventions where they have one (`rpc.*`,
//! `otel.*`).

use serde_json::value::RawValue;

use crate::error::Error;
use crate::wire::{header, Headers};

/// The span of one call or notification a server runs: a root, or with
/// feature `otel` the child of the caller's span named by the request's
/// `traceparent`. Every `.await` of the handler runs in it, in whichever
/// task the handler goes on.
pub(crate) fn request_span(
    service: &str,
    method: &str,
    id: Option<&RawValue>,
    headers: &Headers,
    attempt: Option<u32>,
    queue_wait: Option<std::time::Duration>,
) -> tracing::Span {
    // A root: the server's own span lives as long as the server, and every
    // request under it would make one endless trace.
    let span = tracing::info_span!(
        parent: None,
        "busrpc.request",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "jsonrpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.jsonrpc.request_id = tracing::field::Empty,
        rpc.jsonrpc.error_code = tracing::field::Empty,
        busrpc.attempt = tracing::field::Empty,
        busrpc.queue_wait_ms = tracing::field::Empty,
        busrpc.outcome = tracing::field::Empty,
        traceparent = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(id) = id {
        span.record("rpc.jsonrpc.request_id", id.get());
    }
    if let Some(attempt) = attempt {
        span.record("busrpc.attempt", attempt);
    }
    if let Some(waited) = queue_wait {
        span.record("busrpc.queue_wait_ms", waited.as_secs_f64() * 1e3);
    }
    if let Some(traceparent) = headers.get(header::TRACEPARENT) {
        span.record("traceparent", traceparent);
        #[cfg(feature = "otel")]
        super::otel::set_parent(&span, headers);
    }
    span
}

/// Records how a call ended on its span: `ok`, or `error` with its code.
pub(crate) fn record_outcome(span: &tracing::Span, outcome: Result<(), i32>) {
    match outcome {
        Ok(()) => {
            span.record("busrpc.outcome", "ok");
        }
        Err(code) => {
            span.record("busrpc.outcome", "error");
            span.record("rpc.jsonrpc.error_code", code);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The span of one call (or, `notification`, one notification) a client
/// makes: with feature `otel`, the parent of the server's `busrpc.request`.
pub(crate) fn call_span(service: &str, method: &str, notification: bool) -> tracing::Span {
    // One callsite per name: a span's name is fixed where it is declared.
    macro_rules! span {
        ($name:literal, $kind:literal) => {
            tracing::info_span!(
                $name,
                otel.name = %format_args!("{service}/{method}"),
                otel.kind = $kind,
                otel.status_code = tracing::field::Empty,
                rpc.system = "jsonrpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.jsonrpc.request_id = tracing::field::Empty,
                rpc.jsonrpc.error_code = tracing::field::Empty,
                busrpc.outcome = tracing::field::Empty,
                busrpc.served_by = tracing::field::Empty,
            )
        };
    }
    if notification {
        span!("busrpc.notify", "producer")
    } else {
        span!("busrpc.call", "client")
    }
}

/// Records how a call ended on its span: `ok`, an error with its code, or
/// what else failed (`timeout`, `closed`, ...).
pub(crate) fn record_call_outcome(span: &tracing::Span, outcome: Result<(), &Error>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(()) => record_outcome(span, Ok(())),
        Err(Error::Rpc(e)) => record_outcome(span, Err(e.code())),
        Err(e) => {
            let what = if e.is_timeout() { "timeout" } else { "failed" };
            span.record("busrpc.outcome", what);
            span.record("otel.status_code", "ERROR");
            let _entered = span.enter();
            tracing::debug!(error = %e, "the call failed");
        }
    }
}
