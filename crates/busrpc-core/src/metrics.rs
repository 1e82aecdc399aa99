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
/// Counter: messages counted and dropped: a refused notification, or a
/// response with no `reply-to`. Label `service`.
pub const SERVER_DROPPED: &str = "busrpc_server_messages_dropped_total";
/// Counter: replies that could not be published or acknowledged. Label
/// `service`.
pub const SERVER_REPLY_FAILURES: &str = "busrpc_server_reply_failures_total";
/// Counter: replies over the size limit, answered with a small -32603
/// instead. Label `service`.
pub const SERVER_OVERSIZED_REPLIES: &str = "busrpc_server_oversized_replies_total";
/// Counter: requests delivered too often, moved to the dead-letter queue
/// and answered with -32001 by the transport. Label `queue`: the topic or
/// stream they were taken from.
pub const DEAD_LETTERED: &str = "busrpc_dead_lettered_total";

/// Counter: messages an authenticated transport rejected (feature `auth`).
/// Labels `kind` (`request`: a delivery to a server; `reply`: a message to a
/// client's inbox) and `reason` (`unsigned`, `malformed`, `unknown_key`,
/// `forged`).
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
        describe_gauge!(SERVER_REQUESTS_IN_FLIGHT, "Handlers running now");
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

/// Counts a request that a transport took from `queue` (its topic or
/// stream) and dead-lettered (see [`DEAD_LETTERED`]); for the authors of
/// transports. Records nothing without feature `metrics`.
pub fn dead_lettered(queue: &str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(DEAD_LETTERED, "queue" => queue.to_owned()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = queue;
}

/// Counts a message an authenticated transport rejected (see
/// [`AUTH_REJECTED`]).
#[cfg(feature = "auth")]
pub(crate) fn auth_rejected(kind: &'static str, reason: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(AUTH_REJECTED, "kind" => kind, "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, reason);
}

/// A JSON-RPC error code as a label value, without formatting the common
/// ones.
#[cfg(feature = "metrics")]
fn code_label(code: i32) -> ::metrics::SharedString {
    use crate::jsonrpc::DEAD_LETTER_CODE;
    let known = match code {
        -32700 => "-32700",
        -32600 => "-32600",
        -32601 => "-32601",
        -32602 => "-32602",
        -32603 => "-32603",
        DEAD_LETTER_CODE => "-32001",
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

/// What a server counts of its messages (see the `SERVER_*` names).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ServerEvent {
    Received,
    Redelivered,
    Acked,
    Released,
    Expired,
    Cancelled,
    Dropped,
    ReplyFailed,
    Oversized,
}

impl ServerEvent {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 9] = [
        Self::Received,
        Self::Redelivered,
        Self::Acked,
        Self::Released,
        Self::Expired,
        Self::Cancelled,
        Self::Dropped,
        Self::ReplyFailed,
        Self::Oversized,
    ];

    #[cfg(feature = "metrics")]
    fn name(self) -> &'static str {
        match self {
            Self::Received => SERVER_RECEIVED,
            Self::Redelivered => SERVER_REDELIVERIES,
            Self::Acked => SERVER_ACKED,
            Self::Released => SERVER_RELEASED,
            Self::Expired => SERVER_EXPIRED,
            Self::Cancelled => SERVER_CANCELLED,
            Self::Dropped => SERVER_DROPPED,
            Self::ReplyFailed => SERVER_REPLY_FAILURES,
            Self::Oversized => SERVER_OVERSIZED_REPLIES,
        }
    }
}

/// What a server records, labelled with its service. The handles of what
/// every request touches (its events, the in-flight gauge, each known
/// method's successes and latency) are registered once, when the server
/// is made: a registry lookup per request cost more than the rest of the
/// server's bookkeeping (see docs/ARCHITECTURE.md). Errors, rarer, are
/// registered as they come, with their code.
pub(crate) struct ServerMeters {
    #[cfg(feature = "metrics")]
    registered: Registered,
}

#[cfg(feature = "metrics")]
struct Registered {
    service: ::metrics::SharedString,
    events: [::metrics::Counter; 9],
    in_flight: ::metrics::Gauge,
    methods: std::collections::HashMap<std::sync::Arc<str>, MethodMeters>,
}

/// A known method's handles: successes by kind, and latency.
#[cfg(feature = "metrics")]
struct MethodMeters {
    name: ::metrics::SharedString,
    /// `[calls, notifications]` that ended well.
    ok: [::metrics::Counter; 2],
    duration: ::metrics::Histogram,
}

/// How a server's request ended, for [`ServerMeters::request`].
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct Handled<'a> {
    /// The method the request names; `None` when none could be read. Only
    /// the service's own methods are labelled by name.
    pub(crate) method: Option<&'a str>,
    pub(crate) notification: bool,
    pub(crate) outcome: Result<(), i32>,
}

impl ServerMeters {
    /// Registers the server's metrics with the recorder installed now:
    /// install it before making servers.
    pub(crate) fn new<'a>(
        service: &str,
        methods: impl Iterator<Item = &'a std::sync::Arc<str>>,
    ) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = (service, methods);
        Self {
            #[cfg(feature = "metrics")]
            registered: {
                let service = ::metrics::SharedString::from(std::sync::Arc::<str>::from(service));
                let s = || service.clone();
                let events =
                    ServerEvent::ALL.map(|e| ::metrics::counter!(e.name(), "service" => s()));
                let in_flight = ::metrics::gauge!(SERVER_REQUESTS_IN_FLIGHT, "service" => s());
                let methods = methods
                    .map(|name| {
                        let label = ::metrics::SharedString::from(name.clone());
                        let ok = [false, true].map(|notification| {
                            ::metrics::counter!(
                                SERVER_REQUESTS,
                                "service" => s(),
                                "method" => label.clone(),
                                "kind" => kind_label(notification),
                                "code" => "ok",
                            )
                        });
                        let duration = ::metrics::histogram!(
                            SERVER_REQUEST_DURATION,
                            "service" => s(),
                            "method" => label.clone(),
                        );
                        let meters = MethodMeters {
                            name: label,
                            ok,
                            duration,
                        };
                        (name.clone(), meters)
                    })
                    .collect();
                Registered {
                    service,
                    events,
                    in_flight,
                    methods,
                }
            },
        }
    }

    /// Counts `n` of an event at once.
    #[inline]
    pub(crate) fn count_n(&self, event: ServerEvent, n: u64) {
        #[cfg(feature = "metrics")]
        self.registered.events[event as usize].increment(n);
        #[cfg(not(feature = "metrics"))]
        let _ = (event, n);
    }

    /// A handler starts: counted in flight until the guard is dropped
    /// (when it ends, or is stopped at its deadline or at shutdown).
    pub(crate) fn start(&self) -> Running<'_> {
        self.in_flight(1.0);
        Running {
            meters: self,
            started: std::time::Instant::now(),
        }
    }

    fn in_flight(&self, delta: f64) {
        #[cfg(feature = "metrics")]
        self.registered.in_flight.increment(delta);
        #[cfg(not(feature = "metrics"))]
        let _ = delta;
    }

    /// Records a call or notification: its count by outcome and, if it ran,
    /// how long it took.
    pub(crate) fn request(&self, handled: &Handled<'_>, took: Option<std::time::Duration>) {
        #[cfg(feature = "metrics")]
        {
            let registered = &self.registered;
            let known = handled.method.and_then(|m| registered.methods.get(m));
            if let Some(known) = known {
                if let Some(took) = took {
                    known.duration.record(took.as_secs_f64());
                }
                if handled.outcome.is_ok() {
                    known.ok[usize::from(handled.notification)].increment(1);
                    return;
                }
            }
            let method = match (known, handled.method) {
                (Some(known), _) => known.name.clone(),
                (None, Some(_)) => ::metrics::SharedString::const_str("(unknown)"),
                (None, None) => ::metrics::SharedString::const_str("(none)"),
            };
            if known.is_none() {
                if let Some(took) = took {
                    ::metrics::histogram!(
                        SERVER_REQUEST_DURATION,
                        "service" => registered.service.clone(),
                        "method" => method.clone(),
                    )
                    .record(took.as_secs_f64());
                }
            }
            let code = match handled.outcome {
                Ok(()) => ::metrics::SharedString::const_str("ok"),
                Err(code) => code_label(code),
            };
            ::metrics::counter!(
                SERVER_REQUESTS,
                "service" => registered.service.clone(),
                "method" => method,
                "kind" => kind_label(handled.notification),
                "code" => code,
            )
            .increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (handled, took);
    }

    /// Counts a handler's panic.
    pub(crate) fn panic(&self, method: &str) {
        #[cfg(feature = "metrics")]
        {
            let registered = &self.registered;
            let method = match registered.methods.get(method) {
                Some(known) => known.name.clone(),
                None => ::metrics::SharedString::const_str("(unknown)"),
            };
            ::metrics::counter!(SERVER_PANICS, "service" => registered.service.clone(), "method" => method)
                .increment(1);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = method;
    }
}

/// A handler in flight (see [`ServerMeters::start`]).
pub(crate) struct Running<'a> {
    meters: &'a ServerMeters,
    started: std::time::Instant,
}

impl Running<'_> {
    /// How long the handler has run.
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.meters.in_flight(-1.0);
    }
}

/// How a client's call ended, as its `code` label.
pub(crate) fn call_code(outcome: Result<(), &crate::Error>) -> CallCode {
    match outcome {
        Ok(()) => CallCode::Ok,
        Err(crate::Error::Rpc(e)) => CallCode::Rpc(e.code()),
        Err(e) if e.is_timeout() => CallCode::Other("timeout"),
        Err(crate::Error::Closed) => CallCode::Other("closed"),
        Err(_) => CallCode::Other("failed"),
    }
}

/// See [`call_code`].
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum CallCode {
    Ok,
    Rpc(i32),
    Other(&'static str),
}

#[cfg(feature = "metrics")]
impl CallCode {
    fn label(self) -> ::metrics::SharedString {
        match self {
            CallCode::Ok => ::metrics::SharedString::const_str("ok"),
            CallCode::Rpc(code) => code_label(code),
            CallCode::Other(what) => ::metrics::SharedString::const_str(what),
        }
    }
}

/// Whether anything is recorded: what costs even without a recorder (a
/// clock read, a lookup) is skipped when not.
#[inline]
pub(crate) const fn enabled() -> bool {
    cfg!(feature = "metrics")
}

/// How many (service, method) pairs a client keeps registered handles for;
/// calls to others are recorded through the registry each time.
#[cfg(feature = "metrics")]
const CLIENT_METHODS_KEPT: usize = 1024;

/// A client's registered handles, by service and method, made at the first
/// call of each (see [`ServerMeters`] for why): install the recorder
/// before the first call.
#[derive(Default)]
pub(crate) struct ClientMeters {
    #[cfg(feature = "metrics")]
    known: std::sync::RwLock<CallMetersByService>,
}

#[cfg(feature = "metrics")]
type CallMetersByService = std::collections::HashMap<
    Box<str>,
    std::collections::HashMap<Box<str>, std::sync::Arc<CallMeters>>,
>;

/// The handles of calls to one method of one service.
#[cfg(feature = "metrics")]
struct CallMeters {
    service: ::metrics::SharedString,
    method: ::metrics::SharedString,
    /// `[calls, notifications]` that ended well.
    ok: [::metrics::Counter; 2],
    duration: ::metrics::Histogram,
    in_flight: ::metrics::Gauge,
}

#[cfg(feature = "metrics")]
impl ClientMeters {
    fn get(&self, service: &str, method: &str) -> Option<std::sync::Arc<CallMeters>> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        if let Some(meters) = known.get(service).and_then(|m| m.get(method)) {
            return Some(meters.clone());
        }
        let kept: usize = known.values().map(std::collections::HashMap::len).sum();
        drop(known);
        if kept >= CLIENT_METHODS_KEPT {
            return None;
        }
        let service_label = ::metrics::SharedString::from(service.to_owned());
        let method_label = ::metrics::SharedString::from(method.to_owned());
        let ok = [false, true].map(|notification| {
            ::metrics::counter!(
                CLIENT_CALLS,
                "service" => service_label.clone(),
                "method" => method_label.clone(),
                "kind" => kind_label(notification),
                "code" => "ok",
            )
        });
        let meters = std::sync::Arc::new(CallMeters {
            duration: ::metrics::histogram!(
                CLIENT_CALL_DURATION,
                "service" => service_label.clone(),
                "method" => method_label.clone(),
            ),
            in_flight: ::metrics::gauge!(CLIENT_CALLS_IN_FLIGHT, "service" => service_label.clone()),
            service: service_label,
            method: method_label,
            ok,
        });
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        let by_method = known.entry(service.into()).or_default();
        Some(by_method.entry(method.into()).or_insert(meters).clone())
    }
}

/// A client's call (or notification) under way: in flight until
/// [`finished`](Self::finished) or dropped (its caller gave up).
pub(crate) struct ClientCall<'a> {
    #[cfg(feature = "metrics")]
    meters: Option<std::sync::Arc<CallMeters>>,
    service: &'a str,
    method: &'a str,
    notification: bool,
    started: std::time::Instant,
    done: bool,
}

impl<'a> ClientCall<'a> {
    pub(crate) fn start(
        meters: &ClientMeters,
        service: &'a str,
        method: &'a str,
        notification: bool,
    ) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = meters;
        let call = Self {
            #[cfg(feature = "metrics")]
            meters: meters.get(service, method),
            service,
            method,
            notification,
            started: std::time::Instant::now(),
            done: false,
        };
        call.in_flight(1.0);
        call
    }

    fn in_flight(&self, delta: f64) {
        if self.notification {
            return;
        }
        #[cfg(feature = "metrics")]
        if let Some(meters) = &self.meters {
            meters.in_flight.increment(delta);
            return;
        }
        client_in_flight(self.service, delta);
    }

    /// Records how the call ended.
    pub(crate) fn finished(mut self, code: CallCode) {
        self.done = true;
        self.record(code);
    }

    fn record(&self, code: CallCode) {
        let took = self.started.elapsed();
        #[cfg(feature = "metrics")]
        if let Some(meters) = &self.meters {
            meters.duration.record(took.as_secs_f64());
            match code {
                CallCode::Ok => meters.ok[usize::from(self.notification)].increment(1),
                code => ::metrics::counter!(
                    CLIENT_CALLS,
                    "service" => meters.service.clone(),
                    "method" => meters.method.clone(),
                    "kind" => kind_label(self.notification),
                    "code" => code.label(),
                )
                .increment(1),
            }
            return;
        }
        client_call(self.service, self.method, self.notification, code, took);
    }
}

impl Drop for ClientCall<'_> {
    fn drop(&mut self) {
        self.in_flight(-1.0);
        if !self.done {
            // The caller dropped the call's future: it gave up.
            self.record(CallCode::Other("cancelled"));
        }
    }
}

/// Records a client's call or notification that ended, `took` after it
/// began.
pub(crate) fn client_call(
    service: &str,
    method: &str,
    notification: bool,
    code: CallCode,
    took: std::time::Duration,
) {
    #[cfg(feature = "metrics")]
    {
        let service = ::metrics::SharedString::from(service.to_owned());
        let method = ::metrics::SharedString::from(method.to_owned());
        ::metrics::counter!(
            CLIENT_CALLS,
            "service" => service.clone(),
            "method" => method.clone(),
            "kind" => kind_label(notification),
            "code" => code.label(),
        )
        .increment(1);
        ::metrics::histogram!(CLIENT_CALL_DURATION, "service" => service, "method" => method)
            .record(took.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (service, method, notification, code, took);
}

/// `calls` calls to a service counted in flight until dropped.
pub(crate) struct ClientInFlight<'a> {
    service: &'a str,
    calls: f64,
}

impl<'a> ClientInFlight<'a> {
    pub(crate) fn new(service: &'a str, calls: f64) -> Self {
        client_in_flight(service, calls);
        Self { service, calls }
    }
}

impl Drop for ClientInFlight<'_> {
    fn drop(&mut self) {
        client_in_flight(self.service, -self.calls);
    }
}

/// Calls to `service` waiting for replies went up or down by `delta`.
fn client_in_flight(service: &str, delta: f64) {
    if delta == 0.0 {
        return;
    }
    #[cfg(feature = "metrics")]
    ::metrics::gauge!(CLIENT_CALLS_IN_FLIGHT, "service" => service.to_owned()).increment(delta);
    #[cfg(not(feature = "metrics"))]
    let _ = service;
}

/// Why a client dropped a reply (see [`CLIENT_REPLIES_DROPPED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dropped {
    Late,
    Duplicate,
    Stray,
    Malformed,
}

impl Dropped {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Late => "late",
            Self::Duplicate => "duplicate",
            Self::Stray => "stray",
            Self::Malformed => "malformed",
        }
    }
}

/// Counts a dropped reply.
pub(crate) fn reply_dropped(why: Dropped) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(CLIENT_REPLIES_DROPPED, "reason" => why.as_str()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = why;
}
