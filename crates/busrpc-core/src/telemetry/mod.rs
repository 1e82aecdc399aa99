//! Layer 2, telemetry: what busrpc tells the people who run it. Spans of
//! requests and calls, metrics through the `metrics` facade, W3C trace
//! context across the broker (feature `otel`). Every cfg of an
//! instrumentation feature stays in here.

mod guard;
pub mod metrics;
#[cfg(feature = "otel")]
mod otel;
mod spans;

pub(crate) use guard::{CallGuard, RequestGuard};

use crate::wire::Headers;

/// Writes the trace context of the current span into `headers` (feature
/// `otel`; nothing without it): the call's span becomes the parent of the
/// server's.
#[inline]
pub(crate) fn inject_trace(headers: &mut Headers) {
    #[cfg(feature = "otel")]
    otel::inject(&tracing::Span::current(), headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}
