//! What a client records.

#[cfg(feature = "metrics")]
use super::{
    code_label, kind_label, CLIENT_CALLS, CLIENT_CALLS_IN_FLIGHT, CLIENT_CALL_DURATION,
    CLIENT_REPLIES_DROPPED,
};
use crate::error::Error;

/// How a client's call ended, as its `code` label.
pub(crate) fn call_code(outcome: Result<(), &Error>) -> CallCode {
    match outcome {
        Ok(()) => CallCode::Ok,
        Err(Error::Rpc(e)) => CallCode::Rpc(e.code()),
        Err(e) if e.is_timeout() => CallCode::Other("timeout"),
        Err(Error::Closed) => CallCode::Other("closed"),
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
