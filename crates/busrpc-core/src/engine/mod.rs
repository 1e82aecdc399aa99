//! Layer 3, the engine: from a JSON payload to the JSON response, knowing
//! no broker. One message is one call, or a batch run in waves
//! ([`batch`]); each call passes the middleware chain to its handler, in its
//! span, with panics caught ([`call`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::service::{Arrival, Context, Methods, Middleware};
use crate::telemetry::metrics::{Handled, ServerMeters};
use crate::wire::jsonrpc::{self, decode_incoming, Incoming, RpcError};
use crate::wire::{Deadline, Headers};

mod batch;
mod call;

/// What the message carrying a payload says of it, beside the payload.
#[derive(Clone, Copy)]
pub(crate) struct Envelope<'a> {
    pub(crate) headers: &'a Headers,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) arrival: Arrival,
    /// Where each call's context and result go for the middleware's
    /// [`ended`](crate::Middleware::ended); `None` without middleware.
    pub(crate) seen: Option<&'a Seen>,
}

/// Each call's context and result, kept for the middleware's
/// [`ended`](crate::Middleware::ended), which the server calls once the
/// delivery is settled. A lock, not a `&mut`: a batch's calls run at once.
pub(crate) type Seen = std::sync::Mutex<Vec<(Context, Result<(), RpcError>)>>;

impl Envelope<'static> {
    /// A payload that came with nothing beside it (tests, fuzzing, and the
    /// lines that name the calls of a request whose headers are gone).
    pub(crate) fn bare() -> Self {
        static NONE: Headers = Headers::new();
        Self {
            headers: &NONE,
            deadline: None,
            arrival: Arrival::default(),
            seen: None,
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
    /// The serving instance's name ([`crate::Context::server_name`]).
    server: Arc<str>,
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
        server: Arc<str>,
        middleware: Vec<Arc<dyn Middleware>>,
        max_batch_len: usize,
        slots: Option<Arc<Semaphore>>,
    ) -> Self {
        let meters = ServerMeters::new(service, methods.names());
        Self {
            methods,
            service: service.into(),
            server,
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
            Ok(Incoming::Batch(items)) => self.batch(items, env).await,
        }
    }

    /// Whether any middleware wraps the calls (and wants to be told how
    /// each ended).
    pub(crate) fn has_middleware(&self) -> bool {
        !self.middleware.is_empty()
    }

    /// Tells every middleware how the request of `ctx` ended (see
    /// [`Middleware::ended`]). A middleware that panics is logged and the
    /// rest are still told.
    pub(crate) fn ended(&self, ctx: &Context, ending: &crate::service::Ending<'_>) {
        for middleware in self.middleware.iter() {
            let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                middleware.ended(ctx, ending);
            }));
            if let Err(panic) = told {
                tracing::error!(service = %self.service, method = ctx.method(), id = ctx.id_text(), panic = panic_message(&*panic), "a middleware panicked in `ended`");
            }
        }
    }

    /// The context of each request in `json` a handler could have served
    /// (none if it cannot be read), for telling middleware and logs how
    /// requests that never ran, or whose reply failed, came out.
    pub(crate) fn contexts(&self, json: &[u8], env: Envelope<'_>) -> Vec<Context> {
        let items = match decode_incoming(json) {
            Ok(Incoming::Single(item)) => vec![item],
            Ok(Incoming::Batch(items)) => items,
            Err(jsonrpc::ParseError) => return Vec::new(),
        };
        items
            .into_iter()
            .flatten()
            .map(|request| self.call_info(&request, env).context())
            .collect()
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
                queue_wait: None,
                outcome: Err(code),
            },
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Router;

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
        Engine::new(methods, "test", "a".into(), Vec::new(), max_batch_len, None)
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
