//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`): whatever recorder the application installs (Prometheus,
//! StatsD, OpenTelemetry...) receives them. Without the feature nothing is
//! recorded or paid. Install the recorder before making servers and before
//! a client's first call: the handles every request touches are registered
//! once (a server's when it is made, a client's at its first call of each
//! service and method), and handles registered with no recorder installed
//! record nothing.
//!
//! The constants below are the metrics' names; docs/OPERATIONS.md says
//! what each means and when to worry. Labels:
//!
//! - `service`: the service served or called.
//! - `method`: the method; on a server, `(unknown)` for a method the
//!   service does not have (the name comes from the caller, and a label
//!   per made-up name would grow without bound) and `(none)` for input
//!   with no readable method (bad JSON, an invalid request).
//! - `kind`: `call` or `notification`.
//! - `code`: `ok`, or the JSON-RPC error code (`-32601`); on a client also
//!   `timeout`, `closed`, `cancelled` (the caller dropped the call) or
//!   `failed` (the transport, encoding or decoding).
//! - `queue`: the topic or stream a transport took a request from.
//! - `reason`: why a reply was dropped: `late` (its caller gave up),
//!   `duplicate` (its call was answered already), `stray` (no call of this
//!   client has its id), `malformed` (not a readable JSON-RPC response).

/// Counter: calls and notifications a server ran, or refused before
/// running them. Labels `service`, `method`, `kind`, `code`.
pub const SERVER_REQUESTS: &str = "busrpc_server_requests_total";
/// Histogram, seconds: how long handlers (with their middleware) took.
/// Labels `service`, `method`.
pub const SERVER_REQUEST_DURATION: &str = "busrpc_server_request_duration_seconds";
/// Histogram, seconds: how long requests waited in the queue, from their
/// publish (the broker's timestamp) to their handler's start. Labels
/// `service`, `method`. Up while the handler time is flat: the servers
/// are too few; see docs/OPERATIONS.md.
pub const SERVER_QUEUE_WAIT: &str = "busrpc_server_queue_wait_seconds";
/// Gauge: how many servers of the service in this process take requests
/// now (serving, in their group, their broker answering: what
/// `ServerHandle::readiness` says); 1 or 0 for the usual one server per
/// process. Label `service`.
pub const SERVER_READY: &str = "busrpc_server_ready";
/// Gauge: handlers running now. Label `service`.
pub const SERVER_REQUESTS_IN_FLIGHT: &str = "busrpc_server_requests_in_flight";
/// Counter: handlers that panicked (answered -32603). Labels `service`,
/// `method`.
pub const SERVER_PANICS: &str = "busrpc_server_panics_total";
/// Counter: deliveries taken from the queue. Label `service`.
pub const SERVER_RECEIVED: &str = "busrpc_server_messages_received_total";
/// Counter: deliveries that had been delivered before (the broker's
/// delivery count is above 1): a server died holding them, or a handler
/// ran past the broker's redelivery time. Label `service`.
pub const SERVER_REDELIVERIES: &str = "busrpc_server_redeliveries_total";
/// Counter: deliveries acknowledged. Label `service`.
pub const SERVER_ACKED: &str = "busrpc_server_messages_acked_total";
/// Counter: deliveries handed back to the broker when the shutdown grace
/// ran out. Label `service`.
pub const SERVER_RELEASED: &str = "busrpc_server_messages_released_total";
/// Counter: deliveries skipped because their deadline had passed on
/// arrival. Label `service`.
pub const SERVER_EXPIRED: &str = "busrpc_server_messages_expired_total";
/// Counter: handlers stopped at their deadline (`cancel_on_deadline`).
/// Label `service`.
pub const SERVER_CANCELLED: &str = "busrpc_server_messages_cancelled_total";
/// Counter: requests whose caller gave up and said so (a cancel notice):
/// their handler stopped, or never started. Label `service`.
pub const SERVER_ABANDONED: &str = "busrpc_server_messages_abandoned_total";
/// Counter: messages counted and dropped: a refused notification, or a
/// response with no `reply-to`. Label `service`.
pub const SERVER_DROPPED: &str = "busrpc_server_messages_dropped_total";
/// Counter: replies that could not be published or acknowledged. Label
/// `service`.
pub const SERVER_REPLY_FAILURES: &str = "busrpc_server_reply_failures_total";
/// Counter: replies over the size limit, answered with a small -32603
/// instead. Label `service`.
pub const SERVER_OVERSIZED_REPLIES: &str = "busrpc_server_oversized_replies_total";
/// Counter: requests delivered too often, never run, moved to the
/// dead-letter queue and answered with -32001. Labels `service`, and
/// `queue`: the topic or stream they were taken from.
pub const DEAD_LETTERED: &str = "busrpc_dead_lettered_total";

/// Counter: messages an authenticated transport rejected (busrpc-auth,
/// the facade's feature `auth`, counts them).
/// Labels `kind` (`request`: a delivery to a server; `reply`: a message to a
/// client's inbox; `notice`: a cancel notice to a server) and `reason`
/// (`unsigned`, `malformed`, `unknown_key`, `forged`).
pub const AUTH_REJECTED: &str = "busrpc_auth_rejected_total";

/// Counter: calls and notifications a client made, by how they ended.
/// Labels `service`, `method`, `kind`, `code`.
pub const CLIENT_CALLS: &str = "busrpc_client_calls_total";
/// Histogram, seconds: how long calls took, from the call to its reply or
/// failure (notifications: to their publish). Labels `service`, `method`.
pub const CLIENT_CALL_DURATION: &str = "busrpc_client_call_duration_seconds";
/// Gauge: calls waiting for their reply now. Label `service`.
pub const CLIENT_CALLS_IN_FLIGHT: &str = "busrpc_client_calls_in_flight";
/// Counter: replies a client dropped. Label `reason`.
pub const CLIENT_REPLIES_DROPPED: &str = "busrpc_client_replies_dropped_total";

/// Every metric's name above, for tools that check what they query
/// (examples/grafana/busrpc.json is tested against it).
pub const NAMES: [&str; 22] = [
    SERVER_REQUESTS,
    SERVER_REQUEST_DURATION,
    SERVER_QUEUE_WAIT,
    SERVER_READY,
    SERVER_REQUESTS_IN_FLIGHT,
    SERVER_PANICS,
    SERVER_RECEIVED,
    SERVER_REDELIVERIES,
    SERVER_ACKED,
    SERVER_RELEASED,
    SERVER_EXPIRED,
    SERVER_CANCELLED,
    SERVER_ABANDONED,
    SERVER_DROPPED,
    SERVER_REPLY_FAILURES,
    SERVER_OVERSIZED_REPLIES,
    DEAD_LETTERED,
    AUTH_REJECTED,
    CLIENT_CALLS,
    CLIENT_CALL_DURATION,
    CLIENT_CALLS_IN_FLIGHT,
    CLIENT_REPLIES_DROPPED,
];

/// Hands the installed recorder a description and unit of every metric
/// above (Prometheus shows them as `# HELP` lines). Call it once, after
/// installing the recorder; it records nothing without feature `metrics`.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(
            SERVER_REQUESTS,
            "Calls and notifications a server ran or refused, by method, kind and code"
        );
        describe_histogram!(
            SERVER_REQUEST_DURATION,
            Unit::Seconds,
            "How long handlers took, with their middleware"
        );
        describe_histogram!(
            SERVER_QUEUE_WAIT,
            Unit::Seconds,
            "How long requests waited in the queue, publish to handler start"
        );
        describe_gauge!(SERVER_REQUESTS_IN_FLIGHT, "Handlers running now");
        describe_gauge!(
            SERVER_READY,
            "1 while the server takes requests, 0 otherwise"
        );
        describe_counter!(SERVER_PANICS, "Handlers that panicked (answered -32603)");
        describe_counter!(SERVER_RECEIVED, "Deliveries taken from the queue");
        describe_counter!(
            SERVER_REDELIVERIES,
            "Deliveries the broker had delivered before"
        );
        describe_counter!(SERVER_ACKED, "Deliveries acknowledged");
        describe_counter!(
            SERVER_RELEASED,
            "Deliveries handed back when the shutdown grace ran out"
        );
        describe_counter!(
            SERVER_EXPIRED,
            "Deliveries skipped: their deadline had passed on arrival"
        );
        describe_counter!(SERVER_CANCELLED, "Handlers stopped at their deadline");
        describe_counter!(
            SERVER_ABANDONED,
            "Requests their caller gave up on: handler stopped, or never started"
        );
        describe_counter!(
            SERVER_DROPPED,
            "Messages dropped: a refused notification, or a response with no reply-to"
        );
        describe_counter!(
            SERVER_REPLY_FAILURES,
            "Replies that could not be published or acknowledged"
        );
        describe_counter!(
            SERVER_OVERSIZED_REPLIES,
            "Replies over the size limit, answered with -32603 instead"
        );
        describe_counter!(
            DEAD_LETTERED,
            "Requests delivered too often, moved to the dead-letter queue"
        );
        describe_counter!(
            AUTH_REJECTED,
            "Messages that failed authentication, dropped unseen"
        );
        describe_counter!(
            CLIENT_CALLS,
            "Calls and notifications a client made, by method, kind and how they ended"
        );
        describe_histogram!(
            CLIENT_CALL_DURATION,
            Unit::Seconds,
            "How long calls took, to their reply or failure"
        );
        describe_gauge!(CLIENT_CALLS_IN_FLIGHT, "Calls waiting for their reply now");
        describe_counter!(
            CLIENT_REPLIES_DROPPED,
            "Replies a client dropped: late, duplicate, stray or malformed"
        );
    }
}

/// Counts a request dead-lettered from `queue`. Servers count every
/// dead letter themselves, however their transport gives up on a request
/// ([`Delivery::exhausted`](crate::Delivery::exhausted)): a transport
/// calling this too counts it twice. Records nothing without feature
/// `metrics`.
#[deprecated(
    since = "0.1.0",
    note = "servers count dead letters themselves; mark the delivery with Delivery::exhausted"
)]
pub fn dead_lettered(queue: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(DEAD_LETTERED, "queue" => queue.to_owned()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = queue;
}

/// A JSON-RPC error code as a label value, without formatting the common
/// ones.
#[cfg(feature = "metrics")]
fn code_label(code: i32) -> ::metrics::SharedString {
    use crate::wire::jsonrpc::DEAD_LETTER_CODE;
    let known = match code {
        -32700 => "-32700",
        -32600 => "-32600",
        -32601 => "-32601",
        -32602 => "-32602",
        -32603 => "-32603",
        DEAD_LETTER_CODE => "-32001",
        -32002 => "-32002",
        -32003 => "-32003",
        -32004 => "-32004",
        _ => return code.to_string().into(),
    };
    ::metrics::SharedString::const_str(known)
}

#[cfg(feature = "metrics")]
fn kind_label(notification: bool) -> &'static str {
    if notification {
        "notification"
    } else {
        "call"
    }
}

/// Whether anything is recorded: what costs even without a recorder (a
/// clock read, a lookup) is skipped when not.
#[inline]
pub(crate) const fn enabled() -> bool {
    cfg!(feature = "metrics")
}

mod client;
mod server;

pub(crate) use client::{
    call_code, client_call, reply_dropped, CallCode, ClientCall, ClientInFlight, ClientMeters,
    Dropped,
};
pub(crate) use server::{Handled, Running, ServerEvent, ServerMeters};
