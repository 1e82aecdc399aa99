//! Handlers that panic, run slow or run many: each request runs once, is
//! answered once, and the server goes on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busrpc_core::{ClientConfig, ServerConfig};
use futures_util::future::join_all;

use crate::fixture::{client, patient, serve, wait_until, RawPeer};
use crate::harness::{unique_service, Harness};

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

/// A handler slower than the caller's timeout, on a server that lets it run
/// to the end: the caller gets Timeout, and the late reply is dropped and
/// counted, not handed to anyone.
pub async fn slow_handler_times_out_and_late_reply_is_dropped(h: &dyn Harness) {
    let service = unique_service("late");
    let config = ServerConfig::default().cancel_on_deadline(false);
    let server = serve(h, &service, "a", config).await;
    let timeout = h.capabilities().latency * 4;
    // A caller that tells nobody it gave up: the handler runs to its end.
    let config = ClientConfig::default()
        .timeout(timeout)
        .cancel_on_give_up(false);
    let client = client(h, config).await;
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
