//! Deadlines: an expired request is not run, a handler past its deadline
//! is cancelled, and handlers see the deadline they run under.

use std::sync::atomic::Ordering;
use std::time::Duration;

use busrpc_core::{header, ClientConfig, Deadline, ServerConfig};

use crate::fixture::{client, patient, serve, served_before, wait_until, RawPeer};
use crate::harness::{unique_service, Harness};

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

/// A handler still running when its deadline passes is stopped: the caller
/// has its Timeout, nothing is sent after it, and the request is
/// acknowledged and counted.
pub async fn a_handler_past_its_deadline_is_cancelled(h: &dyn Harness) {
    let service = unique_service("cancel");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let timeout = h.capabilities().latency * 4;
    // The caller tells nobody it gave up, so that the deadline alone stops
    // the handler (a cancel notice would race it).
    let config = ClientConfig::default()
        .timeout(timeout)
        .cancel_on_give_up(false);
    let client = client(h, config).await;
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
