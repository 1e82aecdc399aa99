//! W3C trace context across the broker, through OpenTelemetry (feature
//! `otel`): the client writes `traceparent` (and `tracestate`) from its call
//! span, and the server makes its request span the child of that remote
//! span. Parsing and formatting are done here, to the W3C Trace Context
//! spec, so that no propagator needs registering globally.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::wire::{header, Headers};

/// Writes the trace context of `span` into `headers`, unless `span` has
/// none (no OpenTelemetry layer, or a disabled span).
pub(crate) fn inject(span: &tracing::Span, headers: &mut Headers) {
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return;
    }
    headers.insert(header::TRACEPARENT, traceparent(span_context));
    let state = span_context.trace_state().header();
    if !state.is_empty() {
        headers.insert(header::TRACESTATE, state);
    }
}

/// Makes the remote span named by `headers`' `traceparent` the parent of
/// `span`; a missing or malformed header leaves `span` a root.
pub(crate) fn set_parent(span: &tracing::Span, headers: &Headers) {
    let Some(remote) = headers
        .get(header::TRACEPARENT)
        .and_then(|tp| parse(tp, headers.get(header::TRACESTATE)))
    else {
        return;
    };
    // Fails only without an OpenTelemetry layer: nothing to link then.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

fn traceparent(span: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span.trace_id(),
        span.span_id(),
        span.trace_flags().to_u8()
    )
}

/// A `traceparent` (with its `tracestate`, if any) as the W3C spec reads
/// it: `version-traceid-spanid-flags`, lowercase hex, ids not all zeros,
/// version `ff` invalid, and a later version read by its first four fields.
fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut fields = traceparent.trim().split('-');
    let version = fields.next()?;
    let (trace, span, flags) = (fields.next()?, fields.next()?, fields.next()?);
    let extra = fields.next();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && extra.is_some() {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace, span, flags, true, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn reads_the_specs_example_and_writes_it_back() {
        let tp = format!("00-{TRACE}-{SPAN}-01");
        let span = parse(&tp, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).unwrap();
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(traceparent(&span), tp);
        assert_eq!(
            span.trace_state().header(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        let unsampled = parse(&format!("00-{TRACE}-{SPAN}-00"), None).unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn refuses_what_the_spec_calls_invalid() {
        for bad in [
            String::new(),
            format!("00-{TRACE}-{SPAN}"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{}-{SPAN}-01", &TRACE[1..]),
            format!("0x-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-0g"),
        ] {
            assert!(parse(&bad, None).is_none(), "{bad:?}");
        }
        // A later version is read by its first four fields.
        assert!(parse(&format!("01-{TRACE}-{SPAN}-01-what-comes"), None).is_some());
    }
}
