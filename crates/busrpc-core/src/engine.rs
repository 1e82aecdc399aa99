//! From a JSON payload to the JSON response, knowing no broker.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use futures_util::future::FutureExt;
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::context::{CallInfo, Middleware, Next};
use crate::jsonrpc::{self, decode_incoming, Incoming, InvalidRequest, Request, RpcError};
use crate::message::{Deadline, Headers};
use crate::metrics::{Handled, ServerMeters};
use crate::router::Methods;

/// What the message carrying a payload says of it, beside the payload.
#[derive(Clone, Copy)]
pub(crate) struct Envelope<'a> {
    pub(crate) headers: &'a Headers,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) attempt: Option<u32>,
}

#[cfg(any(test, fuzzing))]
impl Envelope<'static> {
    /// A payload that came with nothing beside it.
    pub(crate) fn bare() -> Self {
        static NONE: Headers = Headers::new();
        Self {
            headers: &NONE,
            deadline: None,
            attempt: None,
        }
    }
}

/// Counters the engine keeps; the server adds its own beside them.
#[derive(Default, Debug)]
pub(crate) struct EngineCounters {
    pub(crate) calls: AtomicU64,
    pub(crate) notifications: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) panics: AtomicU64,
}

pub(crate) struct Engine {
    methods: Methods,
    service: Arc<str>,
    /// Run around every call, the first outermost; empty: none, and the
    /// engine calls handlers directly.
    middleware: Arc<[Arc<dyn Middleware>]>,
    max_batch_len: usize,
    /// The server's handler slots, which every call of a batch counts
    /// against; `None`: unbounded.
    slots: Option<Arc<Semaphore>>,
    pub(crate) counters: EngineCounters,
    /// The server records its own events through these too.
    pub(crate) meters: ServerMeters,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

impl Engine {
    pub(crate) fn new(
        methods: Methods,
        service: &str,
        middleware: Vec<Arc<dyn Middleware>>,
        max_batch_len: usize,
        slots: Option<Arc<Semaphore>>,
    ) -> Self {
        let meters = ServerMeters::new(service, methods.names());
        Self {
            methods,
            service: service.into(),
            middleware: middleware.into(),
            max_batch_len,
            slots,
            counters: EngineCounters::default(),
            meters,
        }
    }

    /// The response to `payload`, or `None` when nothing is to be answered
    /// (a notification, or a batch of them).
    pub(crate) async fn respond(&self, payload: &[u8], env: Envelope<'_>) -> Option<Vec<u8>> {
        match decode_incoming(payload) {
            Err(jsonrpc::ParseError) => Some(self.refused(None, &RpcError::parse_error())),
            Ok(Incoming::Single(item)) => self.answer(item, env).await,
            Ok(Incoming::Batch(items)) if items.is_empty() => {
                Some(self.refused(None, &RpcError::invalid_request()))
            }
            Ok(Incoming::Batch(items)) if items.len() > self.max_batch_len => {
                let reason = format!(
                    "batch of {} requests exceeds this server's limit of {}",
                    items.len(),
                    self.max_batch_len
                );
                let error = RpcError::invalid_request().with_data(&reason);
                // Answer each call with its own id so that callers learn why.
                let answered = items
                    .iter()
                    .filter(|item| !matches!(item, Ok(r) if r.is_notification()));
                self.counters
                    .errors
                    .fetch_add(answered.count() as u64, Ordering::Relaxed);
                if crate::metrics::enabled() {
                    for item in &items {
                        let request = item.as_ref().ok();
                        self.meters.request(
                            &Handled {
                                method: request.map(|r| &*r.method),
                                notification: request.is_some_and(Request::is_notification),
                                outcome: Err(error.code()),
                            },
                            None,
                        );
                    }
                }
                jsonrpc::answer_each(&items, &error)
            }
            Ok(Incoming::Batch(items)) => {
                // Every call counts against the server's concurrency: the
                // message's own slot covers one, and the batch takes as many
                // more as are free now (never waiting for one, which could
                // wait on itself), running its calls in waves that wide.
                let wanted = items.len() - 1;
                let extra = self.slots.as_ref().map(|slots| {
                    let free = slots.available_permits().min(wanted);
                    let free = u32::try_from(free).unwrap_or(u32::MAX);
                    slots.try_acquire_many(free).ok()
                });
                let width = match &extra {
                    None => items.len(),
                    Some(permit) => 1 + permit.as_ref().map_or(0, |p| p.num_permits()),
                };
                let mut answers = Vec::with_capacity(items.len());
                let mut items = items.into_iter();
                // Not `stream::iter(..).map(..).buffered(..)`: its closure
                // over borrowed requests defeats the `Send` proof the
                // server's tasks need.
                let mut running = FuturesOrdered::new();
                for item in items.by_ref().take(width) {
                    running.push_back(self.answer(item, env));
                }
                while let Some(answer) = running.next().await {
                    answers.push(answer);
                    if let Some(item) = items.next() {
                        running.push_back(self.answer(item, env));
                    }
                }
                drop(extra);
                jsonrpc::join_batch(answers.into_iter().flatten())
            }
        }
    }

    /// An error response, counted.
    pub(crate) fn error(&self, id: Option<&RawValue>, error: &RpcError) -> Vec<u8> {
        bump(&self.counters.errors);
        jsonrpc::error_response(id, error)
    }

    /// An error response to a message that runs nothing (unreadable, or
    /// refused whole), counted as a request of no method.
    pub(crate) fn refused(&self, id: Option<&RawValue>, error: &RpcError) -> Vec<u8> {
        self.count_refused(error.code());
        self.error(id, error)
    }

    /// Counts a message refused whole with `code` as one request of no
    /// method (its calls are not counted one by one: it may be unreadable).
    pub(crate) fn count_refused(&self, code: i32) {
        self.meters.request(
            &Handled {
                method: None,
                notification: false,
                outcome: Err(code),
            },
            None,
        );
    }

    async fn answer(
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

    /// Runs the handler in its request's span (see [`request_span`]).
    async fn execute(
        &self,
        request: &Request<'_>,
        env: Envelope<'_>,
    ) -> Result<Box<RawValue>, RpcError> {
        let span = request_span(&self.service, request, env);
        let running = crate::metrics::enabled().then(|| self.meters.start());
        let outcome = self.run(request, env).instrument(span.clone()).await;
        if let Some(running) = running {
            let took = running.elapsed();
            drop(running);
            let handled = Handled {
                method: Some(&request.method),
                notification: request.is_notification(),
                outcome: outcome.as_ref().map(drop).map_err(RpcError::code),
            };
            self.meters.request(&handled, Some(took));
        }
        if !span.is_disabled() {
            record_outcome(&span, outcome.as_ref().map(drop).map_err(RpcError::code));
            let _entered = span.enter();
            match &outcome {
                Ok(_) => tracing::debug!("handled"),
                Err(e) => tracing::debug!(
                    code = e.code(),
                    message = e.message(),
                    "answered with an error"
                ),
            }
        }
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
        let info = CallInfo {
            service: &self.service,
            method: &request.method,
            id: request.id,
            headers: env.headers,
            deadline: env.deadline,
            attempt: env.attempt,
        };
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
            AssertUnwindSafe(next.run()).catch_unwind().await
        };
        outcome.unwrap_or_else(|panic| {
            bump(&self.counters.panics);
            self.meters.panic(&request.method);
            tracing::error!(method = %request.method, panic = panic_message(&*panic), "handler panicked");
            Err(RpcError::internal_error())
        })
    }
}

/// The span of one call or notification a server runs: a root, or with
/// feature `otel` the child of the caller's span named by the request's
/// `traceparent`. Every `.await` of the handler runs in it, in whichever
/// task the handler goes on. Field names follow OpenTelemetry's RPC
/// conventions where they have one (`rpc.*`, `otel.*`).
fn request_span(service: &str, request: &Request<'_>, env: Envelope<'_>) -> tracing::Span {
    // A root: the server's own span lives as long as the server, and every
    // request under it would make one endless trace.
    let span = tracing::info_span!(
        parent: None,
        "busrpc.request",
        otel.name = %format_args!("{service}/{}", request.method),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "jsonrpc",
        rpc.service = %service,
        rpc.method = %request.method,
        rpc.jsonrpc.request_id = tracing::field::Empty,
        rpc.jsonrpc.error_code = tracing::field::Empty,
        busrpc.attempt = tracing::field::Empty,
        busrpc.outcome = tracing::field::Empty,
        traceparent = tracing::field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(id) = request.id {
        span.record("rpc.jsonrpc.request_id", id.get());
    }
    if let Some(attempt) = env.attempt {
        span.record("busrpc.attempt", attempt);
    }
    if let Some(traceparent) = env.headers.get(crate::message::header::TRACEPARENT) {
        span.record("traceparent", traceparent);
        #[cfg(feature = "otel")]
        crate::otel::set_parent(&span, env.headers);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Router;

    fn engine(max_batch_len: usize) -> Engine {
        let methods = Router::new()
            .method("add", |(a, b): (i64, i64)| async move {
                Ok::<_, RpcError>(a + b)
            })
            .method("boom", |(): ()| async move {
                if true {
                    panic!("handler bug");
                }
                Ok::<_, RpcError>(())
            })
            .method(
                "boom_early",
                |(): ()| -> std::future::Ready<Result<(), RpcError>> { panic!("before any await") },
            )
            .into_methods("test");
        Engine::new(methods, "test", Vec::new(), max_batch_len, None)
    }

    async fn respond(e: &Engine, payload: &str) -> Option<String> {
        e.respond(payload.as_bytes(), Envelope::bare())
            .await
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[tokio::test]
    async fn panics_become_internal_errors_and_are_counted() {
        let e = engine(10);
        let expected =
            r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":1}"#;
        assert_eq!(
            respond(&e, r#"{"jsonrpc":"2.0","method":"boom","id":1}"#)
                .await
                .unwrap(),
            expected
        );
        assert_eq!(
            respond(&e, r#"{"jsonrpc":"2.0","method":"boom_early","id":1}"#)
                .await
                .unwrap(),
            expected
        );
        assert_eq!(e.counters.panics.load(Ordering::Relaxed), 2);
        assert_eq!(
            respond(
                &e,
                r#"{"jsonrpc":"2.0","method":"add","params":[1,2],"id":2}"#
            )
            .await
            .unwrap(),
            r#"{"jsonrpc":"2.0","result":3,"id":2}"#
        );
    }

    #[tokio::test]
    async fn oversized_batches_answer_each_call_with_its_id() {
        let e = engine(2);
        let out = respond(
            &e,
            r#"[{"jsonrpc":"2.0","method":"add","params":[1,2],"id":1},{"jsonrpc":"2.0","method":"add","params":[1,2]},{"jsonrpc":"2.0","method":"add","params":[1,2],"id":"b"}]"#,
        )
        .await
        .unwrap();
        let data = r#""data":"batch of 3 requests exceeds this server's limit of 2""#;
        assert_eq!(
            out,
            format!(
                r#"[{{"jsonrpc":"2.0","error":{{"code":-32600,"message":"Invalid Request",{data}}},"id":1}},{{"jsonrpc":"2.0","error":{{"code":-32600,"message":"Invalid Request",{data}}},"id":"b"}}]"#
            )
        );
        assert_eq!(e.counters.calls.load(Ordering::Relaxed), 0, "nothing ran");
    }

    #[tokio::test]
    async fn notifications_run_but_are_not_answered() {
        let e = engine(10);
        assert_eq!(
            respond(&e, r#"{"jsonrpc":"2.0","method":"add","params":[1,2]}"#).await,
            None
        );
        assert_eq!(
            respond(&e, r#"{"jsonrpc":"2.0","method":"missing"}"#).await,
            None
        );
        assert_eq!(e.counters.notifications.load(Ordering::Relaxed), 2);
    }
}
