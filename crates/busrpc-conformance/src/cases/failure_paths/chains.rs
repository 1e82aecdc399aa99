//! Calls that chain: a call made while serving a request inherits its
//! deadline and its trace context, as gRPC's nested calls do.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::{
    header, Client, ClientConfig, Context, Deadline, Error, Router, RpcError, Server, ServerConfig,
    ServerHandle,
};
use tokio::time::Instant;

use crate::fixture::{client, patient, wait_until};
use crate::harness::{unique_service, Harness};

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The end of the chain: says what it was called with, or takes long.
fn back() -> Router {
    Router::new()
        .method("seen", |ctx: Context, (): ()| async move {
            let trace = ctx.traceparent().map(str::to_owned);
            Ok::<_, RpcError>((Deadline::current().map(|d| d.0), trace))
        })
        .method("sleep", |ms: (u64,)| async move {
            tokio::time::sleep(Duration::from_millis(ms.0)).await;
            Ok::<_, RpcError>(())
        })
}

/// What the middle of the chain saw of its own call to the back.
#[derive(Default)]
struct Stalled {
    /// How long the call took, and whether it timed out.
    took: Option<(Duration, bool)>,
}

/// The middle of the chain: calls the back with a client whose own timeout
/// is ten minutes, so that only its caller's deadline can cut it short.
fn middle(calls: Client, back: String, stalled: Arc<Mutex<Stalled>>) -> Router {
    let relay_to = back.clone();
    let relay_client = calls.clone();
    Router::new()
        .method("relay", move |ctx: Context, (): ()| {
            let (client, back) = (relay_client.clone(), relay_to.clone());
            async move {
                let seen: (Option<u64>, Option<String>) = client
                    .call(&back, "seen", ())
                    .await
                    .map_err(|e| RpcError::internal_error().with_data(&e.to_string()))?;
                Ok::<_, RpcError>((ctx.deadline().map(|d| d.0), seen))
            }
        })
        .method("stall", move |(ms,): (u64,)| {
            let (client, back, stalled) = (calls.clone(), back.clone(), stalled.clone());
            async move {
                let started = Instant::now();
                let outcome = client.call::<()>(&back, "sleep", (ms,)).await;
                let timed_out = matches!(outcome, Err(Error::Timeout(_)));
                stalled.lock().unwrap().took = Some((started.elapsed(), timed_out));
                outcome.map_err(|e| RpcError::internal_error().with_data(&e.to_string()))
            }
        })
}

async fn start(
    h: &dyn Harness,
    service: &str,
    router: Router,
    config: ServerConfig,
) -> ServerHandle {
    Server::new(h.connect().await, service, router)
        .with_config(config)
        .start()
        .await
        .expect("server starts")
}

/// A calls B, B calls C: C sees the deadline A set, not B's client's own
/// timeout, and A's trace; when A's budget is spent, B's call to C fails
/// with a timeout then, not when B's own ten minutes are up.
pub async fn a_call_made_while_serving_inherits_its_deadline(h: &dyn Harness) {
    let (b, c) = (unique_service("chain-b"), unique_service("chain-c"));
    let ten_minutes = ClientConfig::default().timeout(Duration::from_secs(600));
    let b_calls = client(h, ten_minutes).await;
    let stalled = Arc::new(Mutex::new(Stalled::default()));
    let c_server = start(h, &c, back(), ServerConfig::default()).await;
    // B runs its handlers to the end, so that it can say how its call ended.
    let b_router = middle(b_calls.clone(), c.clone(), stalled.clone());
    let b_config = ServerConfig::default().cancel_on_deadline(false);
    let b_server = start(h, &b, b_router, b_config).await;
    // A sends no cancel notice when it gives up: B would stop its handler
    // before it could say how its call to C ended.
    let a_config = ClientConfig::default()
        .timeout(patient(h))
        .cancel_on_give_up(false);
    let a = client(h, a_config)
        .await
        .with_header(header::TRACEPARENT, TRACE);

    let (b_deadline, (c_deadline, c_trace)): (Option<u64>, (Option<u64>, Option<String>)) =
        a.call(&b, "relay", ()).await.unwrap();
    let b_deadline = b_deadline.expect("B sees A's deadline");
    assert_eq!(c_deadline, Some(b_deadline), "C sees B's deadline");
    let a_budget = Deadline::after(patient(h)).0;
    assert!(
        b_deadline <= a_budget,
        "{b_deadline} is A's, not ten minutes"
    );
    let c_trace = c_trace.expect("C sees a trace context");
    let trace_id = |tp: &str| tp.split('-').nth(1).map(str::to_owned);
    assert_eq!(trace_id(&c_trace), trace_id(TRACE), "C is in A's trace");

    // A waits `budget`; C would take ten times that.
    let budget = h.capabilities().latency * 4;
    let slow = u64::try_from((budget * 10).as_millis()).unwrap();
    let err = a
        .with_timeout(budget)
        .call::<()>(&b, "stall", (slow,))
        .await
        .unwrap_err();
    // A's own timer, or B's answer that its call timed out: the two fire
    // at the same moment.
    let b_timed_out = |e: &Error| match e {
        Error::Rpc(e) => e
            .data()
            .is_some_and(|d| d.get().contains("no reply within")),
        _ => false,
    };
    assert!(err.is_timeout() || b_timed_out(&err), "{err}");
    wait_until("B's call to C ended", patient(h), || {
        stalled.lock().unwrap().took.is_some()
    })
    .await;
    let (took, timed_out) = stalled.lock().unwrap().took.unwrap();
    assert!(timed_out, "B's call to C timed out");
    // At A's deadline (a timer's tick late at most), not B's own.
    assert!(
        took < budget * 2,
        "B's call to C ended at A's deadline, {budget:?}; it took {took:?}"
    );

    b_server.shutdown().await;
    c_server.shutdown().await;
    b_calls.close().await;
}

/// A handle made [`detached`](Client::detached) is not cut short: its
/// call outlives the request it was made in.
pub async fn a_detached_call_keeps_its_own_timeout(h: &dyn Harness) {
    let (b, c) = (unique_service("detached-b"), unique_service("detached-c"));
    let ten_minutes = ClientConfig::default().timeout(Duration::from_secs(600));
    let b_calls = client(h, ten_minutes).await.detached();
    let c_server = start(h, &c, back(), ServerConfig::default()).await;
    let b_router = middle(b_calls.clone(), c.clone(), Arc::default());
    let b_server = start(h, &b, b_router, ServerConfig::default()).await;
    let a = client(h, ClientConfig::default().timeout(patient(h))).await;
    let (b_deadline, (c_deadline, _)): (Option<u64>, (Option<u64>, Option<String>)) =
        a.call(&b, "relay", ()).await.unwrap();
    let b_deadline = b_deadline.expect("B sees A's deadline");
    let c_deadline = c_deadline.expect("C sees a deadline");
    assert!(
        c_deadline > b_deadline + 300_000,
        "C sees B's own ten minutes ({c_deadline}), not A's deadline ({b_deadline})"
    );
    b_server.shutdown().await;
    c_server.shutdown().await;
    b_calls.close().await;
}
