//! Bounds: oversized messages and replies, calls in flight, and queues
//! that are full get a clear answer and lose nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busrpc_core::{Client, ClientConfig, Error, Limits, Server, ServerConfig};
use futures_util::future::join_all;
use serde_json::Value;

use crate::fixture::{client, patient, router, serve, wait_until, Probe, RawPeer};
use crate::harness::{unique_service, Harness};

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

/// The overload contract: a publish beyond a request queue's bound fails
/// with `Overloaded`, and nothing admitted is evicted to make room; once the
/// queue drains, publishes are admitted again.
pub async fn a_publish_beyond_the_queue_bound_is_rejected(h: &dyn Harness) {
    let bound = 5;
    let Some(transport) = h.connect_bounded(bound).await else {
        println!("does not apply: a_publish_beyond_the_queue_bound_is_rejected: the broker's queues have no bound");
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
            Error::Transport(busrpc_core::TransportError::Overloaded(_))
        ),
        "{err}"
    );
    assert_eq!(err.kind(), busrpc_core::ErrorKind::Overloaded, "{err}");
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
