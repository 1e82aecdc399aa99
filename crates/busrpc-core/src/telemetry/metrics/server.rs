//! What a server records.

#[cfg(feature = "metrics")]
use super::{
    code_label, kind_label, SERVER_ABANDONED, SERVER_ACKED, SERVER_CANCELLED, SERVER_DROPPED,
    SERVER_EXPIRED, SERVER_OVERSIZED_REPLIES, SERVER_PANICS, SERVER_QUEUE_WAIT, SERVER_READY,
    SERVER_RECEIVED, SERVER_REDELIVERIES, SERVER_RELEASED, SERVER_REPLY_FAILURES, SERVER_REQUESTS,
    SERVER_REQUESTS_IN_FLIGHT, SERVER_REQUEST_DURATION,
};

/// What a server counts of its messages (see the `SERVER_*` names).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ServerEvent {
    Received,
    Redelivered,
    Acked,
    Released,
    Expired,
    Cancelled,
    Abandoned,
    Dropped,
    ReplyFailed,
    Oversized,
}

impl ServerEvent {
    #[cfg(feature = "metrics")]
    const ALL: [Self; 10] = [
        Self::Received,
        Self::Redelivered,
        Self::Acked,
        Self::Released,
        Self::Expired,
        Self::Cancelled,
        Self::Abandoned,
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
            Self::Abandoned => SERVER_ABANDONED,
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
/// server's bookkeeping (see docs/decisions/0034-telemetry.md). Errors, rarer, are
/// registered as they come, with their code.
pub(crate) struct ServerMeters {
    #[cfg(feature = "metrics")]
    registered: Registered,
}

#[cfg(feature = "metrics")]
struct Registered {
    service: ::metrics::SharedString,
    events: [::metrics::Counter; 10],
    in_flight: ::metrics::Gauge,
    /// What the readiness gauge was last moved to.
    ready: std::sync::atomic::AtomicBool,
    methods: std::collections::HashMap<std::sync::Arc<str>, MethodMeters>,
}

/// A known method's handles: successes by kind, and latency.
#[cfg(feature = "metrics")]
struct MethodMeters {
    name: ::metrics::SharedString,
    /// `[calls, notifications]` that ended well.
    ok: [::metrics::Counter; 2],
    duration: ::metrics::Histogram,
    queue_wait: ::metrics::Histogram,
}

/// How a server's request ended, for [`ServerMeters::request`].
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct Handled<'a> {
    /// The method the request names; `None` when none could be read. Only
    /// the service's own methods are labelled by name.
    pub(crate) method: Option<&'a str>,
    pub(crate) notification: bool,
    pub(crate) outcome: Result<(), i32>,
    /// How long it waited in the queue, if its transport knows.
    pub(crate) queue_wait: Option<std::time::Duration>,
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
                        let queue_wait = ::metrics::histogram!(
                            SERVER_QUEUE_WAIT,
                            "service" => s(),
                            "method" => label.clone(),
                        );
                        let meters = MethodMeters {
                            name: label,
                            ok,
                            duration,
                            queue_wait,
                        };
                        (name.clone(), meters)
                    })
                    .collect();
                Registered {
                    service,
                    events,
                    in_flight,
                    ready: std::sync::atomic::AtomicBool::new(false),
                    methods,
                }
            },
        }
    }

    /// Whether the server takes requests now. Moves the gauge by a step
    /// when that changes (not `set`): the servers of one service in one
    /// process share a series, which then counts the ready ones.
    pub(crate) fn ready(&self, ready: bool) {
        #[cfg(feature = "metrics")]
        {
            let registered = &self.registered;
            let was = registered
                .ready
                .swap(ready, std::sync::atomic::Ordering::AcqRel);
            if was != ready {
                let gauge =
                    ::metrics::gauge!(SERVER_READY, "service" => registered.service.clone());
                if ready {
                    gauge.increment(1.0);
                } else {
                    gauge.decrement(1.0);
                }
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = ready;
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
                if let Some(waited) = handled.queue_wait {
                    known.queue_wait.record(waited.as_secs_f64());
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
                if let Some(waited) = handled.queue_wait {
                    ::metrics::histogram!(
                        SERVER_QUEUE_WAIT,
                        "service" => registered.service.clone(),
                        "method" => method.clone(),
                    )
                    .record(waited.as_secs_f64());
                }
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

    /// Counts a request dead-lettered from `queue`: rare, so registered as
    /// it comes.
    pub(crate) fn dead_lettered(&self, queue: &str) {
        #[cfg(feature = "metrics")]
        ::metrics::counter!(
            super::DEAD_LETTERED,
            "service" => self.registered.service.clone(),
            "queue" => queue.to_owned(),
        )
        .increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = queue;
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
