//! Cancellation follows the caller: a caller that gives up on a call (its
//! future dropped, or its timeout) tells the servers, and the one running
//! it stops it, sends nothing and frees its slot; one that has not started
//! it skips it.

use std::sync::Arc;
use std::time::Duration;

use busrpc_core::{header, Client, ClientConfig, Headers, Message, Server, ServerConfig};

use crate::fixture::signing::{authenticated, keys, SECRET};
use crate::fixture::{client, patient, router, serve, wait_until, Probe};
use crate::harness::{unique_service, Harness};

/// A 10 s handler whose caller drops the call stops within a second (and
/// the broadcast's trip), and its only slot serves the next call; a call
/// that times out is stopped the same way; a call dropped while it waits
/// for the slot is skipped when its turn comes.
pub async fn a_call_its_caller_gives_up_on_stops(h: &dyn Harness) {
    if let Err(why) = h.capabilities().cancels {
        println!("not applicable: {why}");
        return;
    }
    let service = unique_service("given-up");
    // Handlers run past their deadline but for the notice: a timed-out
    // call is stopped by its caller's word, not by its deadline.
    let config = ServerConfig::default()
        .concurrency(1)
        .cancel_on_deadline(false);
    let mut server = serve(h, &service, "a", config).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let ready: String = client.call(&service, "echo", ("ready",)).await.unwrap();
    assert_eq!(ready, "RPC ready!");
    let within = Duration::from_secs(1) + h.capabilities().latency * 2;

    // Dropped as soon as it runs.
    let call = client.call::<String>(&service, "sleep", (10_000,));
    tokio::select! {
        answered = call => panic!("a 10 s call answered: {answered:?}"),
        started = server.started.recv() => assert_eq!(started.as_deref(), Some("a")),
    }
    wait_until("the server stopped the dropped call", within, || {
        server.handle.stats().abandoned == 1
    })
    .await;
    let quick = client.with_timeout(within);
    let next: String = quick.call(&service, "echo", ("next",)).await.unwrap();
    assert_eq!(next, "RPC next!", "the slot is free");

    // Timed out.
    let err = client
        .with_timeout(h.capabilities().latency * 4)
        .call::<String>(&service, "sleep", (10_000,))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    wait_until("the server stopped the timed-out call", within, || {
        server.handle.stats().abandoned == 2
    })
    .await;
    assert_eq!(server.started.recv().await.as_deref(), Some("a"), "it ran");

    // Dropped while waiting behind a slow call for the only slot.
    let slow = {
        let client = client.clone();
        let service = service.clone();
        tokio::spawn(async move { client.call::<String>(&service, "sleep", (1_000,)).await })
    };
    assert_eq!(server.started.recv().await.as_deref(), Some("a"));
    let behind = client.call::<String>(&service, "sleep", (10_000,));
    let dropped = tokio::time::timeout(h.capabilities().latency * 2, behind).await;
    assert!(dropped.is_err(), "it waits behind the slow one");
    assert_eq!(slow.await.unwrap().unwrap(), "a");
    wait_until(
        "the server skipped the call dropped while queued",
        within + Duration::from_secs(1),
        || server.handle.stats().abandoned == 3,
    )
    .await;
    assert!(server.started.try_recv().is_err(), "it never started");
    wait_until("every one was acknowledged", within, || {
        let stats = server.handle.stats();
        stats.acked == stats.received
    })
    .await;
    let stats = server.handle.stats();
    assert_eq!(
        client.stats().replies_dropped,
        0,
        "nothing was sent for them"
    );
    server.handle.shutdown().await;
    // Three answered, three given up on; every one acknowledged.
    assert_eq!(
        (stats.calls, stats.abandoned, stats.acked),
        (3, 3, stats.received),
        "{stats:?}"
    );
}

/// With signing on, a cancel notice stops a call only if it is signed: one
/// forged by a writer without a key is dropped and counted, and the call
/// runs on until its own caller gives up.
pub async fn only_a_signed_cancel_notice_stops_a_call(h: &dyn Harness) {
    if let Err(why) = h.capabilities().cancels {
        println!("not applicable: {why}");
        return;
    }
    let service = unique_service("signed-cancel");
    let keys = keys("k1", SECRET);
    let transport = authenticated(h, &keys).await;
    let (probe, mut started) = Probe::new("a");
    let config = ServerConfig::default()
        .concurrency(1)
        .cancel_on_deadline(false);
    let server = Server::new(Arc::new(transport.clone()), &service, router(probe))
        .with_config(config)
        .start()
        .await
        .expect("server starts");
    let caller = Client::connect_with(
        Arc::new(authenticated(h, &keys).await),
        ClientConfig::default().timeout(patient(h)),
    )
    .await
    .expect("client connects");
    let ready: String = caller.call(&service, "echo", ("ready",)).await.unwrap();
    assert_eq!(ready, "RPC ready!");
    let call = {
        let (caller, service) = (caller.clone(), service.clone());
        tokio::spawn(async move { caller.call::<String>(&service, "sleep", (10_000,)).await })
    };
    assert_eq!(started.recv().await.as_deref(), Some("a"));

    // The second call of this client has the id 2.
    let forger = h.connect().await;
    let forged = Message {
        payload: br#"{"jsonrpc":"2.0","method":"rpc.cancel","params":{"id":2}}"#
            .to_vec()
            .into(),
        headers: Headers::new().with(header::REPLY_TO, caller.inbox_address().to_owned()),
    };
    forger
        .broadcast(&forger.service_address(&service), forged)
        .await
        .unwrap();
    let within = Duration::from_secs(1) + h.capabilities().latency * 2;
    wait_until("the forged notice was dropped", within, || {
        transport.stats().notices_rejected == 1
    })
    .await;
    assert_eq!(server.stats().abandoned, 0, "the call runs on");

    call.abort();
    wait_until("the caller's own notice stopped it", within, || {
        server.stats().abandoned == 1
    })
    .await;
    server.shutdown().await;
    caller.close().await;
}
