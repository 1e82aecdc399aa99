//! The conformance tests. Each takes a [`Harness`] and panics on failure.
//!
//! Wire-level tests speak raw JSON through the transport, as a foreign
//! client (kcat, redis-cli, Python) would, and compare exact strings.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::codec::{Codec, MSGPACK};
use busrpc_core::{
    header, Client, ClientConfig, Context, Deadline, Error, Inbox, Limits, Message, Router,
    RpcError, Server, ServerConfig, ServerHandle, Transport,
};
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::{unique_service, Flavor, Harness};

mod signed;
pub use signed::{
    forged_and_replayed_replies_are_dropped, keys_rotate_without_a_failed_call,
    unsigned_and_forged_requests_are_dropped_unrun,
};

/// Polls `condition` until it holds, failing after `within`.
async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn within<T>(what: &str, limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

#[derive(Deserialize)]
struct Subtract {
    minuend: i64,
    subtrahend: i64,
}

/// Signals from handlers to the test.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) started: mpsc::UnboundedSender<String>,
    pub(crate) running: Arc<AtomicUsize>,
    pub(crate) most_running: Arc<AtomicUsize>,
    /// The argument of every `once` call run, in order.
    pub(crate) ran: Arc<Mutex<Vec<u64>>>,
    pub(crate) label: &'static str,
}

impl Probe {
    fn new(label: &'static str) -> (Self, mpsc::UnboundedReceiver<String>) {
        let (started, rx) = mpsc::unbounded_channel();
        let probe = Probe {
            started,
            running: Arc::default(),
            most_running: Arc::default(),
            ran: Arc::default(),
            label,
        };
        (probe, rx)
    }
}

/// The methods of section 7 of the JSON-RPC 2.0 specification, plus a few
/// for the engine's semantics.
fn router(probe: Probe) -> Router<Probe> {
    Router::with_state(probe)
        .method("subtract", |_: Probe, p: Subtract| async move {
            Ok::<_, RpcError>(p.minuend - p.subtrahend)
        })
        .method("sum", |_: Probe, p: Vec<i64>| async move {
            Ok::<_, RpcError>(p.iter().sum::<i64>())
        })
        .method("update", |_: Probe, _: Vec<i64>| async move {
            Ok::<_, RpcError>(())
        })
        .method("notify_hello", |_: Probe, _: (i64,)| async move {
            Ok::<_, RpcError>(())
        })
        .method("get_data", |_: Probe, (): ()| async move {
            Ok::<_, RpcError>(json!(["hello", 5]))
        })
        .method("echo", |_: Probe, (text,): (String,)| async move {
            Ok::<_, RpcError>(format!("RPC {text}!"))
        })
        .method(
            "whoami",
            |p: Probe, (client, call): (u32, u32)| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, RpcError>((client, call, p.label))
            },
        )
        .method("sleep", |p: Probe, (ms,): (u64,)| async move {
            let now = p.running.fetch_add(1, Ordering::SeqCst) + 1;
            p.most_running.fetch_max(now, Ordering::SeqCst);
            let _ = p.started.send(p.label.to_owned());
            tokio::time::sleep(Duration::from_millis(ms)).await;
            p.running.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, RpcError>(p.label)
        })
        .method("once", |p: Probe, (n, ms): (u64, u64)| async move {
            p.ran.lock().unwrap().push(n);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RpcError>(n)
        })
        .method("deadline", |_: Probe, (): ()| async move {
            Ok::<_, RpcError>(Deadline::current().map(|d| d.0))
        })
        .method("big", |p: Probe, (n,): (u64,)| async move {
            p.ran.lock().unwrap().push(n);
            Ok::<_, RpcError>("x".repeat(usize::try_from(n).unwrap_or(0)))
        })
        .method("hang_on_a", |p: Probe, (): ()| async move {
            let _ = p.started.send(p.label.to_owned());
            if p.label == "a" {
                std::future::pending::<()>().await;
            }
            Ok::<_, RpcError>(p.label)
        })
        .method("panic", |_: Probe, (): ()| async move {
            if true {
                panic!("a bug in a handler (expected by the conformance suite)");
            }
            Ok::<_, RpcError>(())
        })
        .method("context", |_: Probe, ctx: Context, (): ()| async move {
            Ok::<_, RpcError>(context_answer(&ctx))
        })
        .method("fail", |_: Probe, (code,): (i32,)| async move {
            Err::<(), _>(RpcError::new(code, "it failed").with_data(&json!({"why": "asked to"})))
        })
}

/// What the `context` method answers: what its handler saw.
pub(crate) fn context_answer(ctx: &Context) -> Value {
    json!({
        "method": ctx.method(),
        "id": ctx.id().map(|id| id.get().to_owned()),
        "header": ctx.headers().get("x-conformance"),
        "has_deadline": ctx.deadline().is_some(),
        "attempt": ctx.attempt(),
    })
}

/// One server instance and the probe its handlers report to.
struct Instance {
    handle: ServerHandle,
    started: mpsc::UnboundedReceiver<String>,
    probe: Probe,
}

async fn serve(
    h: &dyn Harness,
    service: &str,
    label: &'static str,
    config: ServerConfig,
) -> Instance {
    let (probe, started) = Probe::new(label);
    let transport = h.connect().await;
    let server = match h.flavor() {
        Flavor::Router => Server::new(transport, service, router(probe.clone())),
        Flavor::Macro => Server::new(
            transport,
            service,
            crate::typed::ConformanceServer::new(crate::typed::Typed(probe.clone())).router(),
        ),
    };
    let handle = server
        .with_config(config)
        .start()
        .await
        .expect("server starts");
    Instance {
        handle,
        started,
        probe,
    }
}

/// A server of `service` starts and stops, creating its queue (only a
/// server does), so that requests sent while none runs wait in it.
async fn served_before(h: &dyn Harness, service: &str) {
    serve(h, service, "before", ServerConfig::default())
        .await
        .handle
        .shutdown()
        .await;
}

async fn client(h: &dyn Harness, config: ClientConfig) -> Client {
    Client::connect_with(h.connect().await, config)
        .await
        .expect("client connects")
}

/// Generous timeout for calls that should succeed.
fn patient(h: &dyn Harness) -> Duration {
    h.capabilities().latency * 20 + Duration::from_secs(10)
}

/// A foreign client: raw payloads in, raw replies out.
struct RawPeer {
    transport: Arc<dyn Transport>,
    inbox: Inbox,
    service: String,
    patience: Duration,
}

impl RawPeer {
    async fn new(h: &dyn Harness, service: &str) -> Self {
        let transport = h.connect().await;
        let inbox = transport.inbox().await.expect("inbox opens");
        RawPeer {
            transport,
            inbox,
            service: service.to_owned(),
            patience: patient(h),
        }
    }

    async fn send(&self, message: Message) {
        let address = self.transport.service_address(&self.service);
        self.transport
            .publish(&address, message)
            .await
            .expect("publish");
    }

    fn request(&self, payload: impl Into<bytes::Bytes>) -> Message {
        Message::new(payload).with_header(header::REPLY_TO, self.inbox.address())
    }

    async fn next_reply(&mut self) -> Message {
        within("a reply", self.patience, self.inbox.next())
            .await
            .expect("inbox open")
            .expect("no inbox error")
    }

    async fn ask(&mut self, payload: &str) -> String {
        self.send(self.request(payload.to_owned())).await;
        let reply = self.next_reply().await;
        String::from_utf8(reply.payload.to_vec()).expect("UTF-8 reply")
    }

    /// Proves that nothing was sent to the inbox for the first `done`
    /// messages the server settled: once the server has acknowledged them,
    /// a fresh call is answered, and that answer must be the next thing in
    /// the (first-in, first-out) inbox.
    async fn assert_silence(&mut self, server: &ServerHandle, done: u64) {
        wait_until("the server settled the messages", self.patience, || {
            server.stats().acked >= done
        })
        .await;
        let sentinel = r#"{"jsonrpc":"2.0","method":"sum","params":[],"id":"sentinel"}"#;
        assert_eq!(
            self.ask(sentinel).await,
            r#"{"jsonrpc":"2.0","result":0,"id":"sentinel"}"#
        );
    }
}

/// Compares two batch responses as multisets of exact element strings.
fn assert_same_batch(got: &str, expected: &[&str]) {
    let elements: Vec<Box<serde_json::value::RawValue>> =
        serde_json::from_str(got).unwrap_or_else(|e| panic!("not a batch response ({e}): {got}"));
    let mut got: Vec<&str> = elements.iter().map(|e| e.get()).collect();
    let mut expected = expected.to_vec();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
}

/// Every server answers `rpc.describe` by itself with its method names,
/// sorted, as `busrpc describe` prints them.
pub async fn a_service_describes_its_methods(h: &dyn Harness) {
    let service = unique_service("describe");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let described = client
        .call_raw(
            &service,
            busrpc_core::DESCRIBE_METHOD,
            serde_json::Value::Null,
        )
        .await
        .expect("rpc.describe");
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(described.get())
        .expect("JSON")["methods"]
        .as_array()
        .expect("a list of methods")
        .iter()
        .map(|name| name.as_str().expect("a name").to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted");
    for expected in ["echo", "subtract", "get_data", "sleep", "panic"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("rpc.")), "{names:?}");
    client.close().await;
    server.handle.shutdown().await;
}

/// Every server answers `rpc.discover` with an OpenRPC document listing
/// its methods (with their params where the service describes them).
pub async fn a_service_answers_rpc_discover(h: &dyn Harness) {
    let service = unique_service("discover");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let document: Value = client
        .call(&service, busrpc_core::DISCOVER_METHOD, ())
        .await
        .expect("rpc.discover");
    assert_eq!(document["openrpc"], "1.3.2", "{document}");
    assert_eq!(document["info"]["title"], service.as_str());
    let methods = document["methods"].as_array().expect("methods");
    let subtract = methods
        .iter()
        .find(|m| m["name"] == "subtract")
        .expect("subtract is listed");
    if h.flavor() == Flavor::Macro {
        let names: Vec<&Value> = subtract["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| &p["name"])
            .collect();
        assert_eq!(names, [&json!("minuend"), &json!("subtrahend")]);
    } else {
        assert_eq!(subtract["x-busrpc-params"], "undescribed");
    }
    assert!(
        !methods
            .iter()
            .any(|m| m["name"].as_str().unwrap_or("").starts_with("rpc.")),
        "{document}"
    );
    client.close().await;
    server.handle.shutdown().await;
}

/// A handler that asks for its context sees the method, the id, the
/// caller's headers, the deadline and (where the broker counts) that this
/// is the first delivery.
pub async fn handlers_see_their_context(h: &dyn Harness) {
    let service = unique_service("context");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h)))
        .await
        .with_header("x-conformance", "yes");
    let seen: Value = client.call(&service, "context", ()).await.expect("context");
    assert_eq!(seen["method"], "context");
    assert_eq!(seen["header"], "yes");
    assert_eq!(seen["has_deadline"], true);
    assert!(seen["id"].is_string(), "{seen}");
    assert!(
        seen["attempt"].is_null() || seen["attempt"] == 1,
        "a first delivery: {seen}"
    );
    client.close().await;
    server.handle.shutdown().await;
}

/// A call, its exact response: positional, named, typed, no params.
pub async fn call_and_response(h: &dyn Harness) {
    let service = unique_service("call");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let reply: String = client
        .call(&service, "echo", ("hello",))
        .await
        .expect("echo");
    assert_eq!(reply, "RPC hello!");
    let by_position: i64 = client
        .call(&service, "subtract", (42, 23))
        .await
        .expect("by position");
    let by_name: i64 = client
        .call(
            &service,
            "subtract",
            json!({"subtrahend": 23, "minuend": 42}),
        )
        .await
        .expect("by name");
    assert_eq!((by_position, by_name), (19, 19));
    let data: (String, i64) = client
        .call(&service, "get_data", ())
        .await
        .expect("no params");
    assert_eq!(data, ("hello".to_owned(), 5));
    let stats = server.handle.stats();
    assert_eq!((stats.calls, stats.errors), (4, 0));
    assert_eq!(client.stats().replies, 4);
    client.close().await;
    server.handle.shutdown().await;
}

/// -32601, -32602 (saying what was wrong), application errors with data.
pub async fn typed_errors_reach_the_caller(h: &dyn Harness) {
    let service = unique_service("errors");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;

    let err = client
        .call::<Value>(&service, "nope", ())
        .await
        .unwrap_err();
    assert_eq!(err.rpc(), Some(&RpcError::method_not_found()), "{err}");

    let err = client
        .call::<i64>(&service, "subtract", ("x", 1))
        .await
        .unwrap_err();
    let rpc = err.rpc().expect("an RPC error");
    assert_eq!(rpc.code(), -32602);
    assert!(
        rpc.message()
            .contains("invalid type: string \"x\", expected i64"),
        "{rpc}"
    );

    let err = client
        .call::<i64>(&service, "subtract", json!({"minuend": 1}))
        .await
        .unwrap_err();
    assert!(
        err.rpc()
            .unwrap()
            .message()
            .contains("missing field `subtrahend`"),
        "{err}"
    );

    let err = client
        .call::<()>(&service, "fail", (-32001,))
        .await
        .unwrap_err();
    let rpc = err.rpc().unwrap();
    assert_eq!((rpc.code(), rpc.message()), (-32001, "it failed"));
    assert_eq!(rpc.data().map(|d| d.get()), Some(r#"{"why":"asked to"}"#));

    // The result of the wrong type is the caller's error, not the server's.
    let err = client
        .call::<i64>(&service, "echo", ("x",))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");

    assert_eq!(server.handle.stats().errors, 4);
    server.handle.shutdown().await;
}

/// A panicking handler answers -32603 and the server keeps serving.
pub async fn panicking_handler_answers_internal_error_and_server_goes_on(h: &dyn Harness) {
    let service = unique_service("panic");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc":"2.0","method":"panic","id":1}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":1}"#
    );
    assert_eq!(
        peer.ask(r#"{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":2}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":3,"id":2}"#
    );
    wait_until("both are acknowledged", patient(h), || {
        server.handle.stats().acked == 2
    })
    .await;
    let stats = server.handle.stats();
    assert_eq!((stats.panics, stats.calls, stats.released), (1, 2, 0));
    server.handle.shutdown().await;
}

/// A notification runs and gets no reply.
pub async fn notification_gets_no_reply(h: &dyn Harness) {
    let service = unique_service("notify");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    client
        .notify(&service, "update", [1, 2, 3])
        .await
        .expect("notify");
    wait_until("the notification ran", patient(h), || {
        server.handle.stats().notifications == 1
    })
    .await;
    // A call after it is answered, and no reply to the notification arrived.
    let three: i64 = client.call(&service, "sum", [1, 2]).await.expect("call");
    assert_eq!(three, 3);
    let stats = client.stats();
    assert_eq!((stats.replies, stats.replies_dropped), (1, 0));
    server.handle.shutdown().await;
}

/// A batch of calls and notifications through the client, results by call.
pub async fn client_batch(h: &dyn Harness) {
    let service = unique_service("batch");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let mut batch = client.batch(&service);
    let sum = batch.call("sum", [1, 2, 4]).unwrap();
    batch.notify("notify_hello", [7]).unwrap();
    let missing = batch.call("foo.get", json!({"name": "myself"})).unwrap();
    let echo = batch.call("echo", ("batch",)).unwrap();
    assert_eq!(batch.len(), 4);
    let replies = batch.send().await.expect("batch answered");
    assert_eq!(replies.len(), 3);
    assert_eq!(replies.get::<i64>(sum).unwrap(), 7);
    assert_eq!(replies.get::<String>(echo).unwrap(), "RPC batch!");
    assert_eq!(
        replies
            .get::<Value>(missing)
            .unwrap_err()
            .rpc()
            .unwrap()
            .code(),
        -32601
    );

    let mut only_notifications = client.batch(&service);
    only_notifications.notify("update", [1]).unwrap();
    assert!(only_notifications.send().await.unwrap().is_empty());
    assert!(
        matches!(client.batch(&service).send().await, Err(Error::Encode(_))),
        "an empty batch is refused"
    );
    wait_until("both notifications ran", patient(h), || {
        server.handle.stats().notifications == 2
    })
    .await;
    server.handle.shutdown().await;
}

/// Section 7: `subtract` with positional parameters.
pub async fn spec_positional_params(h: &dyn Harness) {
    let service = unique_service("spec-pos");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":19,"id":1}"#
    );
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":-19,"id":2}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: `subtract` with named parameters.
pub async fn spec_named_params(h: &dyn Harness) {
    let service = unique_service("spec-named");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":19,"id":3}"#
    );
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":19,"id":4}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: notifications, to a method that exists and one that does not.
pub async fn spec_notifications(h: &dyn Harness) {
    let service = unique_service("spec-notify");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    peer.send(peer.request(r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#))
        .await;
    peer.send(peer.request(r#"{"jsonrpc": "2.0", "method": "foobar"}"#))
        .await;
    peer.assert_silence(&server.handle, 2).await;
    assert_eq!(server.handle.stats().notifications, 2);
    server.handle.shutdown().await;
}

/// Section 7: a call of a method that does not exist.
pub async fn spec_unknown_method(h: &dyn Harness) {
    let service = unique_service("spec-unknown");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"1"}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: invalid JSON.
pub async fn spec_invalid_json(h: &dyn Harness) {
    let service = unique_service("spec-json");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an invalid Request object.
pub async fn spec_invalid_request(h: &dyn Harness) {
    let service = unique_service("spec-invalid");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: a batch that is invalid JSON.
pub async fn spec_batch_invalid_json(h: &dyn Harness) {
    let service = unique_service("spec-batch-json");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let payload = "[\n  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n  {\"jsonrpc\": \"2.0\", \"method\"\n]";
    assert_eq!(
        peer.ask(payload).await,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an empty array.
pub async fn spec_empty_array(h: &dyn Harness) {
    let service = unique_service("spec-empty");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask("[]").await,
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an invalid batch, but not empty.
pub async fn spec_invalid_batch_not_empty(h: &dyn Harness) {
    let service = unique_service("spec-batch-one");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask("[1]").await,
        r#"[{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}]"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an invalid batch.
pub async fn spec_invalid_batch(h: &dyn Harness) {
    let service = unique_service("spec-batch-three");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let invalid =
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#;
    assert_same_batch(&peer.ask("[1,2,3]").await, &[invalid, invalid, invalid]);
    server.handle.shutdown().await;
}

/// Section 7: a batch of calls, a notification and invalid entries.
pub async fn spec_batch(h: &dyn Harness) {
    let service = unique_service("spec-batch");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let payload = r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#;
    assert_same_batch(
        &peer.ask(payload).await,
        &[
            r#"{"jsonrpc":"2.0","result":7,"id":"1"}"#,
            r#"{"jsonrpc":"2.0","result":19,"id":"2"}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"5"}"#,
            r#"{"jsonrpc":"2.0","result":["hello",5],"id":"9"}"#,
        ],
    );
    assert_eq!(server.handle.stats().notifications, 1);
    server.handle.shutdown().await;
}

/// Section 7: a batch of notifications only gets no response at all.
pub async fn spec_batch_all_notifications(h: &dyn Harness) {
    let service = unique_service("spec-batch-notify");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let payload = r#"[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]"#;
    peer.send(peer.request(payload)).await;
    peer.assert_silence(&server.handle, 1).await;
    assert_eq!(server.handle.stats().notifications, 2);
    server.handle.shutdown().await;
}

/// 10 clients x 200 concurrent calls to 3 server instances: every reply
/// reaches its own caller, and every instance does some of the work.
pub async fn concurrent_clients_reach_their_own_replies(h: &dyn Harness) {
    const CLIENTS: u32 = 10;
    const CALLS: u32 = 200;
    let service = unique_service("concurrent");
    let config = ServerConfig::default().concurrency(32);
    let servers = [
        serve(h, &service, "a", config.clone()).await,
        serve(h, &service, "b", config.clone()).await,
        serve(h, &service, "c", config).await,
    ];
    // Every instance must be a member before the load: a Kafka group hands
    // partitions to late joiners only in a rebalance. Call until each
    // instance has answered once.
    let warm = client(h, ClientConfig::default().timeout(patient(h))).await;
    let joined_within = patient(h) + h.capabilities().redelivery.unwrap_or_default();
    let give_up = tokio::time::Instant::now() + joined_within;
    let mut seen = std::collections::BTreeSet::new();
    for n in 0.. {
        let (_, _, label): (u32, u32, String) = warm
            .call(&service, "whoami", (u32::MAX, n))
            .await
            .expect("a warm-up call");
        seen.insert(label);
        if seen.len() == servers.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {seen:?} took calls within {joined_within:?}: the others never joined"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<u64> = servers.iter().map(|s| s.handle.stats().calls).collect();

    let clients =
        join_all((0..CLIENTS).map(|_| client(h, ClientConfig::default().timeout(patient(h) * 3))))
            .await;
    let answered = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    join_all(clients.iter().enumerate().map(|(i, client)| {
        let (service, answered) = (&service, answered.clone());
        async move {
            let i = u32::try_from(i).unwrap();
            let replies = join_all(
                (0..CALLS).map(|j| client.call::<(u32, u32, String)>(service, "whoami", (i, j))),
            )
            .await;
            for (j, reply) in replies.into_iter().enumerate() {
                let (ci, cj, server) = reply.unwrap_or_else(|e| panic!("client {i} call {j}: {e}"));
                assert_eq!(
                    (ci, cj),
                    (i, u32::try_from(j).unwrap()),
                    "a reply reached the wrong caller"
                );
                *answered.lock().unwrap().entry(server).or_default() += 1;
            }
            let stats = client.stats();
            assert_eq!(
                (stats.calls, stats.replies, stats.replies_dropped),
                (u64::from(CALLS), u64::from(CALLS), 0)
            );
        }
    }))
    .await;
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.values().sum::<u32>(), CLIENTS * CALLS);
    for (server, before) in servers.iter().zip(before) {
        let calls = server.handle.stats().calls - before;
        assert!(
            calls > 0,
            "instance {} did no work: {answered:?}",
            server.probe.label
        );
        assert_eq!(
            answered.get(server.probe.label).copied().unwrap_or(0),
            u32::try_from(calls).unwrap()
        );
    }
    for server in servers {
        server.handle.shutdown().await;
    }
}

/// A handler slower than the caller's timeout, on a server that lets it run
/// to the end: the caller gets Timeout, and the late reply is dropped and
/// counted, not handed to anyone.
pub async fn slow_handler_times_out_and_late_reply_is_dropped(h: &dyn Harness) {
    let service = unique_service("late");
    let config = ServerConfig::default().cancel_on_deadline(false);
    let server = serve(h, &service, "a", config).await;
    let timeout = h.capabilities().latency * 4;
    let client = client(h, ClientConfig::default().timeout(timeout)).await;
    // First make sure the server takes requests (joining a Kafka group takes
    // a while): a request that waited past its deadline would be skipped,
    // rightly, and there would be no late reply to drop.
    let ready: String = client
        .with_timeout(patient(h))
        .call(&service, "echo", ("ready",))
        .await
        .unwrap();
    assert_eq!(ready, "RPC ready!");
    let slow_ms = u64::try_from((timeout * 3).as_millis()).unwrap();
    let err = client
        .call::<String>(&service, "sleep", (slow_ms,))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(client.stats().timeouts, 1);
    wait_until("the late reply arrived and was dropped", patient(h), || {
        client.stats().replies_dropped == 1
    })
    .await;
    // The client goes on working.
    let reply: String = client
        .with_timeout(patient(h))
        .call(&service, "echo", ("again",))
        .await
        .unwrap();
    assert_eq!(reply, "RPC again!");
    assert_eq!(client.stats().replies, 2);
    server.handle.shutdown().await;
}

/// A request whose deadline passed before it arrived is skipped.
pub async fn expired_request_is_not_executed(h: &dyn Harness) {
    let service = unique_service("expired");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let past = Deadline(Deadline::after(Duration::ZERO).0 - 1_000);
    let request = peer
        .request(r#"{"jsonrpc":"2.0","method":"sleep","params":[1],"id":1}"#)
        .with_header(header::DEADLINE, past.to_string());
    peer.send(request).await;
    peer.assert_silence(&server.handle, 1).await;
    let stats = server.handle.stats();
    assert_eq!(
        (stats.expired, stats.calls),
        (1, 1),
        "only the sentinel ran"
    );
    assert_eq!(
        server.probe.most_running.load(Ordering::SeqCst),
        0,
        "the expired request never ran"
    );
    server.handle.shutdown().await;
}

/// A server that dies mid-call leaves the request to another instance.
pub async fn server_death_leaves_request_to_another_instance(h: &dyn Harness) {
    let redelivery = match h.capabilities().redelivery {
        Ok(within) => within,
        Err(reason) => {
            println!("skipped: server_death_leaves_request_to_another_instance: {reason}");
            return;
        }
    };
    let service = unique_service("death");
    let mut a = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h) + redelivery)).await;
    let call = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        async move { client.call::<String>(&service, "hang_on_a", ()).await }
    });
    within("instance a takes the call", patient(h), a.started.recv()).await;
    a.handle.abort();
    let mut b = serve(h, &service, "b", ServerConfig::default()).await;
    within(
        "instance b takes the call",
        patient(h) + redelivery,
        b.started.recv(),
    )
    .await;
    let reply = call.await.unwrap().expect("the call is answered by b");
    assert_eq!(reply, "b");
    b.handle.shutdown().await;
}

/// Graceful shutdown: what is in hand is answered; nothing new is taken.
pub async fn graceful_shutdown_answers_what_is_in_hand(h: &dyn Harness) {
    let service = unique_service("graceful");
    let mut a = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let slow_ms = u64::try_from((h.capabilities().latency * 4).as_millis()).unwrap();
    let call = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        async move { client.call::<String>(&service, "sleep", (slow_ms,)).await }
    });
    within("the call starts", patient(h), a.started.recv()).await;
    let stats_before = a.handle.stats();
    within("shutdown", patient(h), a.handle.shutdown()).await;
    assert_eq!(
        call.await.unwrap().expect("the call in hand is answered"),
        "a"
    );
    assert_eq!((stats_before.acked, stats_before.released), (0, 0));
    // Stopped: a new call is not taken by anyone.
    let short = client.with_timeout(h.capabilities().latency * 4);
    let err = short
        .call::<String>(&service, "echo", ("late",))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

/// A started server becomes ready (its consumer has its group, the broker
/// answers), answers, and once shut down is neither ready nor running, and
/// `stopped()` resolves without an error.
pub async fn a_server_is_ready_while_it_serves(h: &dyn Harness) {
    let service = unique_service("ready");
    let a = serve(h, &service, "a", ServerConfig::default()).await;
    let ready = within("the server to be ready", patient(h), a.handle.ready()).await;
    assert!(ready, "ready() resolved false while serving");
    assert!(a.handle.readiness().is_ready(), "{}", a.handle.readiness());
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let reply: String = client.call(&service, "echo", ("ready",)).await.unwrap();
    assert_eq!(reply, "RPC ready!");
    assert!(a.handle.readiness().is_ready(), "{}", a.handle.readiness());
    within("shutdown", patient(h), a.handle.shutdown()).await;
    assert!(!a.handle.readiness().is_ready(), "ready after shutdown");
    assert!(!within("ready()", patient(h), a.handle.ready()).await);
    within("stopped()", patient(h), a.handle.stopped())
        .await
        .expect("stopped as asked, not failed");
}

/// A call that outlives the shutdown grace is released, and another instance answers it.
pub async fn shutdown_grace_releases_to_another_instance(h: &dyn Harness) {
    if let Err(reason) = h.capabilities().redelivery {
        println!("skipped: shutdown_grace_releases_to_another_instance: {reason}");
        return;
    }
    let service = unique_service("grace");
    let config = ServerConfig::default().shutdown_grace(Duration::from_millis(50));
    let mut a = serve(h, &service, "a", config).await;
    let client = client(h, ClientConfig::default().timeout(patient(h) * 2)).await;
    let call = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        async move { client.call::<String>(&service, "hang_on_a", ()).await }
    });
    within("a takes the call", patient(h), a.started.recv()).await;
    within("shutdown", patient(h), a.handle.shutdown()).await;
    let b = serve(h, &service, "b", ServerConfig::default()).await;
    assert_eq!(
        call.await.unwrap().expect("b answers the released call"),
        "b"
    );
    b.handle.shutdown().await;
}

/// A message over the server's size limit gets -32600 saying why; the
/// client refuses to send one over its own limit.
pub async fn oversized_message_is_refused(h: &dyn Harness) {
    let service = unique_service("oversized");
    let limits = Limits::default().max_message_bytes(1024);
    let server = serve(h, &service, "a", ServerConfig::default().limits(limits)).await;
    let mut peer = RawPeer::new(h, &service).await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"echo","params":["{}"],"id":1}}"#,
        "x".repeat(1024)
    );
    assert_eq!(
        peer.ask(&big).await,
        format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32600,"message":"Invalid Request","data":"message of {} bytes exceeds this server's limit of 1024 bytes"}},"id":null}}"#,
            big.len()
        )
    );
    let client = client(
        h,
        ClientConfig::default().limits(limits).timeout(patient(h)),
    )
    .await;
    let err = client
        .call::<String>(&service, "echo", ("x".repeat(2000),))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { limit: 1024, .. }),
        "{err}"
    );
    assert_eq!(server.handle.stats().calls, 0);
    server.handle.shutdown().await;
}

/// A batch longer than the server allows: each call gets -32600 with its own id.
pub async fn oversized_batch_is_refused_per_call(h: &dyn Harness) {
    let service = unique_service("long-batch");
    let server_limits = Limits::default().max_batch_len(2);
    let server = serve(
        h,
        &service,
        "a",
        ServerConfig::default().limits(server_limits),
    )
    .await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let mut batch = client.batch(&service);
    let calls: Vec<_> = (0..3).map(|i| batch.call("sum", [i]).unwrap()).collect();
    let replies = batch.send().await.expect("answered");
    for call in calls {
        let err = replies.get::<i64>(call).unwrap_err();
        let rpc = err.rpc().expect("an RPC error");
        assert_eq!(rpc.code(), -32600);
        assert_eq!(
            rpc.data_as::<String>().unwrap().unwrap(),
            "batch of 3 requests exceeds this server's limit of 2"
        );
    }
    assert_eq!(server.handle.stats().calls, 0);
    server.handle.shutdown().await;
}

/// Garbage with nowhere to reply to is counted, dropped and acknowledged; the
/// server goes on.
pub async fn bad_input_without_reply_to_is_counted_and_dropped(h: &dyn Harness) {
    let service = unique_service("garbage");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    peer.send(Message::new(&b"\xff\xfe not json"[..])).await;
    peer.send(Message::new(
        r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":1}"#,
    ))
    .await;
    wait_until("both were dropped", patient(h), || {
        server.handle.stats().dropped == 2
    })
    .await;
    peer.assert_silence(&server.handle, 2).await;
    // A reply is published before its request is acknowledged.
    wait_until(
        "the two and the sentinel are acknowledged",
        patient(h),
        || server.handle.stats().acked == 3,
    )
    .await;
    assert_eq!(server.handle.stats().released, 0);
    server.handle.shutdown().await;
}

/// An encoding busrpc does not speak is answered -32700, in JSON.
pub async fn unsupported_content_type_is_a_parse_error(h: &dyn Harness) {
    let service = unique_service("content-type");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let request = peer
        .request("<call/>")
        .with_header(header::CONTENT_TYPE, "application/xml");
    peer.send(request).await;
    let reply = peer.next_reply().await;
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error","data":"unsupported content type \"application/xml\" (busrpc speaks application/json and application/msgpack)"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// MessagePack in, MessagePack out, chosen by content type.
pub async fn msgpack_calls(h: &dyn Harness) {
    let service = unique_service("msgpack");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(
        h,
        ClientConfig::default()
            .codec(Codec::MessagePack)
            .timeout(patient(h)),
    )
    .await;
    let reply: String = client
        .call(&service, "echo", ("packed",))
        .await
        .expect("msgpack call");
    assert_eq!(reply, "RPC packed!");

    let mut peer = RawPeer::new(h, &service).await;
    let payload = Codec::MessagePack
        .encode(br#"{"jsonrpc":"2.0","method":"sum","params":[2,3],"id":7}"#.to_vec())
        .unwrap();
    peer.send(
        peer.request(payload)
            .with_header(header::CONTENT_TYPE, MSGPACK),
    )
    .await;
    let reply = peer.next_reply().await;
    assert_eq!(reply.headers.get(header::CONTENT_TYPE), Some(MSGPACK));
    let json = Codec::MessagePack.decode(&reply.payload).unwrap();
    assert_eq!(
        std::str::from_utf8(&json).unwrap(),
        r#"{"jsonrpc":"2.0","result":5,"id":7}"#
    );
    server.handle.shutdown().await;
}

/// A client never has more calls in flight than its bound; the rest wait.
pub async fn client_bounds_calls_in_flight(h: &dyn Harness) {
    let service = unique_service("in-flight");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(
        h,
        ClientConfig::default().max_in_flight(3).timeout(patient(h)),
    )
    .await;
    let replies = join_all((0..12).map(|_| client.call::<String>(&service, "sleep", (20,)))).await;
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    let most = server.probe.most_running.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} calls ran at once");
    server.handle.shutdown().await;
}

/// A server never runs more handlers at once than its concurrency.
pub async fn server_bounds_concurrent_handlers(h: &dyn Harness) {
    let service = unique_service("concurrency");
    let server = serve(h, &service, "a", ServerConfig::default().concurrency(2)).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let replies = join_all((0..8).map(|_| client.call::<String>(&service, "sleep", (50,)))).await;
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    let most = server.probe.most_running.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} handlers ran at once");
    server.handle.shutdown().await;
}

/// Replies nobody waits for, and malformed ones, are dropped and counted;
/// the caller that does wait gets its own reply.
pub async fn stray_replies_are_dropped_and_counted(h: &dyn Harness) {
    let service = unique_service("stray");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let transport = h.connect().await;
    let to = client.inbox_address().to_owned();
    for stray in [
        r#"{"jsonrpc":"2.0","result":"not yours","id":999999}"#,
        r#"{"jsonrpc":"2.0","result":"not yours","id":null}"#,
        r#"{"jsonrpc":"2.0","result":"no id"}"#,
        "not json",
    ] {
        transport
            .publish(&to, Message::new(stray))
            .await
            .expect("publish");
    }
    let reply: String = client.call(&service, "echo", ("mine",)).await.unwrap();
    assert_eq!(reply, "RPC mine!");
    wait_until("all four were dropped", patient(h), || {
        client.stats().replies_dropped == 4
    })
    .await;
    server.handle.shutdown().await;
}

/// Closing a client fails its waiting calls with Closed, and later calls too.
pub async fn closed_client_fails_pending_calls(h: &dyn Harness) {
    let service = unique_service("close");
    let mut server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let slow_ms = u64::try_from((h.capabilities().latency * 10).as_millis()).unwrap();
    let call = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        async move { client.call::<String>(&service, "sleep", (slow_ms,)).await }
    });
    within("the call starts", patient(h), server.started.recv()).await;
    client.close().await;
    assert!(matches!(call.await.unwrap(), Err(Error::Closed)));
    assert!(matches!(
        client.call::<String>(&service, "echo", ("x",)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        client.notify(&service, "update", [1]).await,
        Err(Error::Closed)
    ));
    server.handle.shutdown().await;
}

/// MessagePack with bytes after its one value is -32700, as JSON with
/// trailing bytes is: the rest would otherwise be silently dropped.
pub async fn msgpack_with_trailing_bytes_is_a_parse_error(h: &dyn Harness) {
    let service = unique_service("msgpack-trailing");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let mut payload = Codec::MessagePack
        .encode(br#"{"jsonrpc":"2.0","method":"sum","params":[2,3],"id":7}"#.to_vec())
        .unwrap();
    let len = payload.len() + 1;
    payload.push(0xc0); // a MessagePack nil after the request
    peer.send(
        peer.request(payload)
            .with_header(header::CONTENT_TYPE, MSGPACK),
    )
    .await;
    let reply = peer.next_reply().await;
    assert_eq!(reply.headers.get(header::CONTENT_TYPE), Some(MSGPACK));
    let json = Codec::MessagePack.decode(&reply.payload).unwrap();
    assert_eq!(
        std::str::from_utf8(&json).unwrap(),
        format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32700,"message":"Parse error","data":"payload is not valid MessagePack: trailing bytes after the value (1 of {len})"}},"id":null}}"#
        )
    );
    assert_eq!(server.handle.stats().calls, 0, "nothing ran");
    server.handle.shutdown().await;
}

/// A `deadline` header that is not Unix milliseconds is -32600 under the
/// call's own id, saying why; the call does not run.
pub async fn malformed_deadline_is_an_invalid_request(h: &dyn Harness) {
    let service = unique_service("bad-deadline");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let too_long = "9".repeat(26);
    for bad in ["soon", "-5", "1.5", too_long.as_str()] {
        let request = peer
            .request(r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":3}"#)
            .with_header(header::DEADLINE, bad);
        peer.send(request).await;
        let reply = peer.next_reply().await;
        let quoted = serde_json::to_string(bad).unwrap().replace('"', "\\\"");
        assert_eq!(
            std::str::from_utf8(&reply.payload).unwrap(),
            format!(
                r#"{{"jsonrpc":"2.0","error":{{"code":-32600,"message":"Invalid Request","data":"the deadline header {quoted} is not a Unix time in milliseconds (digits only, at most 18446744073709551615)"}},"id":3}}"#
            )
        );
    }
    // A notification with a bad deadline is not run either, and not answered.
    let notification = Message::new(r#"{"jsonrpc":"2.0","method":"sleep","params":[1]}"#)
        .with_header(header::DEADLINE, "soon");
    peer.send(notification).await;
    peer.assert_silence(&server.handle, 5).await;
    let stats = server.handle.stats();
    assert_eq!(
        (stats.calls, stats.notifications),
        (1, 0),
        "only the sentinel ran"
    );
    assert_eq!(stats.dropped, 1);
    server.handle.shutdown().await;
}

/// A message with no payload at all is -32600 when it says where to reply,
/// and acknowledged and counted when not: settled either way.
pub async fn empty_message_is_an_invalid_request(h: &dyn Harness) {
    let service = unique_service("empty");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    peer.send(peer.request(Vec::new())).await;
    assert_eq!(
        std::str::from_utf8(&peer.next_reply().await.payload).unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"the message has no payload"},"id":null}"#
    );
    peer.send(Message::new(Vec::new()).with_header("x-other", "field"))
        .await;
    peer.assert_silence(&server.handle, 2).await;
    wait_until("all three are acknowledged", patient(h), || {
        server.handle.stats().acked == 3
    })
    .await;
    assert_eq!(server.handle.stats().dropped, 1);
    server.handle.shutdown().await;
}

/// A handler slower than the broker's lease (Redis: `claim_idle_ms`) is
/// run once and answered once: the live server holding it keeps it, and
/// the idle peer beside it never takes it over.
pub async fn a_handler_slower_than_the_lease_runs_once(h: &dyn Harness) {
    let caps = h.capabilities();
    let slow = caps.lease.unwrap_or(caps.latency * 5) * 3;
    let service = unique_service("slow");
    let a = serve(h, &service, "a", ServerConfig::default()).await;
    let b = serve(h, &service, "b", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h) + slow * 2)).await;
    let slow_ms = u64::try_from(slow.as_millis()).unwrap();
    let answer: u64 = client
        .call(&service, "once", (7, slow_ms))
        .await
        .expect("answered");
    assert_eq!(answer, 7);
    // Shutdown finishes what each holds: a second run would be counted.
    a.handle.shutdown().await;
    b.handle.shutdown().await;
    let runs = a.probe.ran.lock().unwrap().len() + b.probe.ran.lock().unwrap().len();
    assert_eq!(runs, 1, "the slow call ran {runs} times");
    assert_eq!(client.stats().replies_dropped, 0, "a second reply came");
}

/// With two handler slots and 200 calls queued, each runs exactly once: a
/// server reads no more than it can start, and what waits in its hands is
/// not taken over by anyone.
pub async fn queued_requests_run_once_each(h: &dyn Harness) {
    let service = unique_service("queued");
    let server = serve(h, &service, "a", ServerConfig::default().concurrency(2)).await;
    let (calls, ms) = (200u64, 20u64);
    let backlog = Duration::from_millis(calls * ms / 2);
    let client = client(h, ClientConfig::default().timeout(patient(h) + backlog * 3)).await;
    let replies = join_all((0..calls).map(|n| client.call::<u64>(&service, "once", (n, ms)))).await;
    for (n, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.expect("answered"), n as u64);
    }
    server.handle.shutdown().await;
    let mut ran = server.probe.ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, (0..calls).collect::<Vec<_>>(), "each call runs once");
    assert_eq!(client.stats().replies_dropped, 0);
}

/// A reply over the size limit is not sent (the broker would refuse it, and
/// a refused reply used to send the request round again): the call is
/// answered once with a small -32603 giving both sizes, runs once, and the
/// server goes on.
pub async fn oversized_reply_is_answered_with_an_error_once(h: &dyn Harness) {
    let service = unique_service("big-reply");
    let limits = Limits::default().max_message_bytes(1024);
    let server = serve(h, &service, "a", ServerConfig::default().limits(limits)).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let err = client
        .call::<String>(&service, "big", (4096,))
        .await
        .unwrap_err();
    let rpc = err
        .rpc()
        .unwrap_or_else(|| panic!("an RPC error, not {err}"));
    assert_eq!((rpc.code(), rpc.message()), (-32603, "Internal error"));
    let data: Value = rpc.data_as().unwrap().unwrap();
    assert_eq!(data["error"], "the reply is larger than the limit");
    assert_eq!(data["max_bytes"], 1024);
    // {"jsonrpc":"2.0","result":"xxx…","id":N}: the result and 30-odd bytes.
    let reply_bytes = data["reply_bytes"].as_u64().unwrap();
    assert!((4096 + 30..4096 + 50).contains(&reply_bytes), "{data}");
    let next: String = client.call(&service, "echo", ("next",)).await.unwrap();
    assert_eq!(next, "RPC next!");
    let stats = server.handle.stats();
    server.handle.shutdown().await;
    assert_eq!(*server.probe.ran.lock().unwrap(), [4096], "ran once");
    assert_eq!(stats.oversized_replies, 1);
    assert_eq!(client.stats().replies_dropped, 0);
}

/// Every call of a batch counts against the server's concurrency: a batch
/// of eight at concurrency 2 runs two at a time, and is answered whole.
pub async fn batch_calls_count_against_concurrency(h: &dyn Harness) {
    let service = unique_service("batch-concurrency");
    let server = serve(h, &service, "a", ServerConfig::default().concurrency(2)).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let mut batch = client.batch(&service);
    let calls: Vec<_> = (0..8)
        .map(|_| batch.call("sleep", (50,)).unwrap())
        .collect();
    let replies = batch.send().await.expect("answered");
    for call in calls {
        assert_eq!(replies.get::<String>(call).unwrap(), "a");
    }
    let most = server.probe.most_running.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} calls of the batch ran at once"
    );
    server.handle.shutdown().await;
}

/// A handler still running when its deadline passes is stopped: the caller
/// has its Timeout, nothing is sent after it, and the request is
/// acknowledged and counted.
pub async fn a_handler_past_its_deadline_is_cancelled(h: &dyn Harness) {
    let service = unique_service("cancel");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let timeout = h.capabilities().latency * 4;
    let client = client(h, ClientConfig::default().timeout(timeout)).await;
    let ready: String = client
        .with_timeout(patient(h))
        .call(&service, "echo", ("ready",))
        .await
        .unwrap();
    assert_eq!(ready, "RPC ready!");
    let slow_ms = u64::try_from((timeout * 3).as_millis()).unwrap();
    let err = client
        .call::<u64>(&service, "once", (1, slow_ms))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    wait_until("the handler was stopped", patient(h), || {
        server.handle.stats().cancelled == 1
    })
    .await;
    wait_until("the request was acknowledged", patient(h), || {
        server.handle.stats().acked == 2
    })
    .await;
    // Had the handler gone on, its reply would come by now: the next call
    // is answered after the slow one's sleep would have ended.
    tokio::time::sleep(timeout * 3).await;
    let again: String = client
        .with_timeout(patient(h))
        .call(&service, "echo", ("again",))
        .await
        .unwrap();
    assert_eq!(again, "RPC again!");
    assert_eq!(client.stats().replies_dropped, 0, "nothing sent late");
    assert_eq!(*server.probe.ran.lock().unwrap(), [1]);
    server.handle.shutdown().await;
}

/// A handler reads its request's deadline: the caller's own, in Unix ms.
pub async fn handlers_see_their_deadline(h: &dyn Harness) {
    let service = unique_service("sees-deadline");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let timeout = patient(h);
    let client = client(h, ClientConfig::default().timeout(timeout)).await;
    let ms = u64::try_from(timeout.as_millis()).unwrap();
    let before = Deadline::after(Duration::ZERO).0 + ms;
    let seen: Option<u64> = client.call(&service, "deadline", ()).await.unwrap();
    let after = Deadline::after(Duration::ZERO).0 + ms;
    let seen = seen.expect("the handler sees a deadline");
    assert!(
        (before..=after).contains(&seen),
        "{before} <= {seen} <= {after}"
    );
    // A request without one: none.
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc":"2.0","method":"deadline","id":1}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":null,"id":1}"#
    );
    server.handle.shutdown().await;
}

/// A notification sent with a time-to-live that passed while it waited in
/// the queue is skipped; one without runs.
pub async fn stale_notifications_are_not_run(h: &dyn Harness) {
    let service = unique_service("stale");
    served_before(h, &service).await;
    let short = Duration::from_millis(1);
    let stale = client(h, ClientConfig::default().notification_ttl(short)).await;
    stale.notify(&service, "once", (1, 0)).await.unwrap();
    let fresh = client(h, ClientConfig::default()).await;
    fresh.notify(&service, "once", (2, 0)).await.unwrap();
    // Both wait in the queue until a server starts, the first past its TTL.
    tokio::time::sleep(short * 20).await;
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    wait_until("both were settled", patient(h), || {
        let stats = server.handle.stats();
        stats.expired == 1 && stats.notifications == 1
    })
    .await;
    assert_eq!(*server.probe.ran.lock().unwrap(), [2]);
    server.handle.shutdown().await;
}

/// One of two servers stops under load: once its `shutdown()` returns,
/// everything it answered is settled on the broker, so its peer, taking
/// over, runs none of it again. Every call runs exactly once.
pub async fn a_stopped_server_leaves_nothing_to_answer_twice(h: &dyn Harness) {
    let service = unique_service("stop-under-load");
    let a = serve(h, &service, "a", ServerConfig::default()).await;
    let b = serve(h, &service, "b", ServerConfig::default()).await;
    let calls = 200u64;
    let client = client(h, ClientConfig::default().timeout(patient(h) * 3)).await;
    let load = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        async move { join_all((0..calls).map(|n| client.call::<u64>(&service, "once", (n, 10)))).await }
    });
    let a_ran = a.probe.ran.clone();
    wait_until("a is busy", patient(h), || {
        a_ran.lock().unwrap().len() >= 10
    })
    .await;
    within("a's shutdown", patient(h), a.handle.shutdown()).await;
    let replies = within("the calls", patient(h) * 4, load).await.unwrap();
    for (n, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.expect("answered"), n as u64);
    }
    b.handle.shutdown().await;
    let mut ran = a.probe.ran.lock().unwrap().clone();
    ran.extend(b.probe.ran.lock().unwrap().iter());
    ran.sort_unstable();
    assert_eq!(ran, (0..calls).collect::<Vec<_>>(), "each call runs once");
    assert_eq!(client.stats().replies_dropped, 0);
}

/// The overload contract: a publish beyond a request queue's bound fails
/// with `Rejected`, and nothing admitted is evicted to make room; once the
/// queue drains, publishes are admitted again.
pub async fn a_publish_beyond_the_queue_bound_is_rejected(h: &dyn Harness) {
    let bound = 5;
    let Some(transport) = h.connect_bounded(bound).await else {
        println!("skipped: a_publish_beyond_the_queue_bound_is_rejected: the broker's queues have no bound");
        return;
    };
    let service = unique_service("bounded");
    // Served once, by this bounded transport's broker, so the queue exists.
    let (before, _) = Probe::new("before");
    Server::new(transport.clone(), &service, router(before))
        .start()
        .await
        .expect("server starts")
        .shutdown()
        .await;
    let client = Client::connect_with(transport.clone(), ClientConfig::default())
        .await
        .expect("client connects");
    for n in 0..bound as u64 {
        client
            .notify(&service, "once", (n, 0))
            .await
            .expect("admitted");
    }
    let err = client.notify(&service, "once", (99, 0)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transport(busrpc_core::TransportError::Rejected(_))
        ),
        "{err}"
    );
    let (probe, _started) = Probe::new("a");
    let server = Server::new(transport, &service, router(probe.clone()))
        .start()
        .await
        .expect("server starts");
    wait_until("the admitted ones ran", patient(h), || {
        server.stats().notifications == bound as u64
    })
    .await;
    let mut ran = probe.ran.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, (0..bound as u64).collect::<Vec<_>>(), "none evicted");
    // Drained (and, where the broker trims, trimmed): admitted again.
    let give_up = tokio::time::Instant::now() + patient(h);
    while client.notify(&service, "once", (100, 0)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// A call or notification to a service no server of which has ever started
/// on this broker (a typo, most often) fails at once with
/// [`Error::NoService`], and creates nothing: asked again, the broker still
/// has no such service. Once a server of it has started, requests wait in
/// its queue for the next one and are answered.
pub async fn a_service_never_served_is_refused_at_once(h: &dyn Harness) {
    let service = unique_service("never-served");
    let client = client(h, ClientConfig::default().timeout(patient(h) * 2)).await;
    for _ in 0..2 {
        let err = client
            .call::<u64>(&service, "once", (1, 0))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::NoService { service: s } if *s == service),
            "{err}"
        );
        assert!(err.to_string().contains("no service"), "{err}");
        let err = client.notify(&service, "once", (2, 0)).await.unwrap_err();
        assert!(matches!(err, Error::NoService { .. }), "{err}");
    }
    served_before(h, &service).await;
    let call = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        async move { client.call::<u64>(&service, "once", (3, 0)).await }
    });
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let answer = within("the queued call", patient(h) * 2, call)
        .await
        .unwrap()
        .expect("answered once a server came");
    assert_eq!(answer, 3);
    server.handle.shutdown().await;
}

/// Every message of the [hostile-input catalogue](crate::hostile) gets its
/// exact reply or its silence, and the server answers a good call after
/// each one: nothing a peer writes into the queue stops it, loops it or
/// makes it answer twice.
pub async fn hostile_inputs_get_their_exact_answers(h: &dyn Harness) {
    use crate::hostile::{catalogue, Expect, MAX_MESSAGE_BYTES};
    let service = unique_service("hostile");
    let limits = Limits::default().max_message_bytes(MAX_MESSAGE_BYTES);
    let server = serve(h, &service, "a", ServerConfig::default().limits(limits)).await;
    let mut peer = RawPeer::new(h, &service).await;
    let own_queue = peer.transport.service_address(&service);
    let cases = catalogue(peer.inbox.address(), &own_queue);
    assert!(cases.len() >= 80, "the catalogue has {} cases", cases.len());
    let mut settled = 0;
    let mut wrong = Vec::new();
    for case in cases {
        peer.send(case.message).await;
        settled += case.settles;
        match case.expect {
            Expect::Reply(expected, content_type) => {
                let reply = peer.next_reply().await;
                let got = match reply.headers.get(header::CONTENT_TYPE) {
                    Some(MSGPACK) => Codec::MessagePack
                        .decode(&reply.payload)
                        .map(|json| String::from_utf8_lossy(&json).into_owned())
                        .unwrap_or_else(|e| format!("<bad MessagePack: {e}>")),
                    _ => String::from_utf8_lossy(&reply.payload).into_owned(),
                };
                let got_type = reply.headers.get(header::CONTENT_TYPE);
                if got != expected || got_type != content_type {
                    wrong.push(format!(
                        "{}:\n  expected {content_type:?} {}\n  got      {got_type:?} {}",
                        case.name,
                        excerpt(&expected),
                        excerpt(&got)
                    ));
                }
            }
            Expect::Silence => {}
        }
        // The sentinel's answer is the next thing in the inbox: a silent
        // case sent nothing, and the server still serves.
        let what = format!("the server settled {:?}", case.name);
        wait_until(&what, peer.patience, || {
            server.handle.stats().acked >= settled
        })
        .await;
        peer.assert_silence(&server.handle, settled).await;
        settled += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} hostile inputs got the wrong answer:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let stats = server.handle.stats();
    assert_eq!(stats.panics, 0);
    assert_eq!(stats.released, 0, "every message was settled for good");
    server.handle.shutdown().await;
}

/// A long wire string shortened for a failure message.
fn excerpt(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_owned();
    }
    let cut = (0..=300)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &s[..cut], s.len())
}
