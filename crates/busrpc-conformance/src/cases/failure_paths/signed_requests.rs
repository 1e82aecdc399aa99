//! Authenticated requests (`busrpc_auth`): what is unsigned or forged is
//! dropped unrun, and keys rotate without a failed call.

use std::sync::Arc;

use busrpc_auth::Keys;
use busrpc_core::{Client, ClientConfig, Server, Transport};

use crate::fixture::signing::{authenticated, keys, signed, OTHER_SECRET, SECRET};
use crate::fixture::{patient, router, wait_until, Probe, RawPeer};
use crate::harness::{unique_service, Harness};

/// A signed request without a deadline runs only if it was signed within
/// the server's replay window: an old copy (here signed 10 minutes ago)
/// is acknowledged, counted and never run, so no copy runs for ever.
pub async fn a_stale_signed_request_is_dropped_unrun(h: &dyn Harness) {
    let service = unique_service("auth-stale");
    let keys = keys("k1", SECRET);
    let transport = authenticated(h, &keys).await;
    let (probe, _started) = Probe::new("a");
    let server = Server::new(Arc::new(transport.clone()), &service, router(probe.clone()))
        .start()
        .await
        .expect("server starts");
    let mut peer = RawPeer::new(h, &service).await;
    let address = peer.transport.service_address(&service);
    let once = |n: u64| {
        peer.request(format!(
            r#"{{"jsonrpc":"2.0","method":"once","params":[{n},0],"id":{n}}}"#
        ))
    };
    let ten_minutes_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis()
        - 600_000;
    let stale = once(1).with_header(busrpc_auth::SIGNED_AT, ten_minutes_ago.to_string());
    peer.send(signed(&keys, &address, &stale)).await;
    peer.send(signed(&keys, &address, &once(2))).await;
    let reply = peer.next_reply().await;
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        r#"{"jsonrpc":"2.0","result":2,"id":2}"#
    );
    wait_until("the stale copy was rejected", patient(h), || {
        transport.stats().requests_rejected == 1
    })
    .await;
    assert_eq!(*probe.ran.lock().unwrap(), [2], "only the fresh one ran");
    server.shutdown().await;
}

/// On an authenticated server, a signed request is run and answered with a
/// signed reply; one unsigned, signed with a key it does not accept,
/// signed with the right key id but another secret, changed after signing,
/// or signed for another service is acknowledged, counted and never run
/// or answered.
pub async fn unsigned_and_forged_requests_are_dropped_unrun(h: &dyn Harness) {
    let service = unique_service("auth-requests");
    let keys = keys("k1", SECRET);
    let transport = authenticated(h, &keys).await;
    let (probe, _started) = Probe::new("a");
    let server = Server::new(Arc::new(transport.clone()), &service, router(probe.clone()))
        .start()
        .await
        .expect("server starts");
    let mut peer = RawPeer::new(h, &service).await;
    let address = peer.transport.service_address(&service);
    let once = |n: u64| {
        peer.request(format!(
            r#"{{"jsonrpc":"2.0","method":"once","params":[{n},0],"id":{n}}}"#
        ))
    };
    let mut tampered = signed(&keys, &address, &once(4));
    tampered.payload = once(40).payload;
    let forgeries = [
        once(1),
        signed(&self::keys("k9", SECRET), &address, &once(2)),
        signed(&self::keys("k1", OTHER_SECRET), &address, &once(3)),
        tampered,
        signed(&keys, &format!("{address}-other"), &once(5)),
    ];
    for forged in forgeries {
        peer.send(forged).await;
    }
    peer.send(signed(&keys, &address, &once(6))).await;
    let reply = peer.next_reply().await;
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        r#"{"jsonrpc":"2.0","result":6,"id":6}"#
    );
    assert_eq!(
        keys.verify(peer.inbox.address(), &reply),
        Ok(()),
        "the reply is signed for the caller's inbox"
    );
    wait_until("the five forgeries were rejected", patient(h), || {
        transport.stats().requests_rejected == 5
    })
    .await;
    assert_eq!(
        *probe.ran.lock().unwrap(),
        [6],
        "only the signed request ran"
    );
    // Settled unanswered: the next reply in the inbox is a new call's.
    let sentinel = r#"{"jsonrpc":"2.0","method":"sum","params":[],"id":"sentinel"}"#;
    peer.send(signed(&keys, &address, &peer.request(sentinel)))
        .await;
    let reply = peer.next_reply().await;
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        r#"{"jsonrpc":"2.0","result":0,"id":"sentinel"}"#
    );
    assert_eq!(
        server.stats().received,
        2,
        "the server saw only the two signed"
    );
    server.shutdown().await;
}

/// Rotating a key: while some processes sign with the old key and others
/// with the new, each accepting both, every call goes through; once a
/// server has dropped the old key, a request signed with it is rejected.
pub async fn keys_rotate_without_a_failed_call(h: &dyn Harness) {
    let old = keys("old", SECRET);
    let both_old_signs = old.clone().accept("new", OTHER_SECRET).unwrap();
    let both_new_signs = keys("new", OTHER_SECRET).accept("old", SECRET).unwrap();
    let only_new = keys("new", OTHER_SECRET);
    let (service, rotated) = (unique_service("rotate"), unique_service("rotated"));
    let (probe, _started) = Probe::new("a");
    let server = Server::new(
        Arc::new(authenticated(h, &both_old_signs).await),
        &service,
        router(probe.clone()),
    )
    .start()
    .await
    .expect("server starts");
    let rotated_transport = authenticated(h, &only_new).await;
    let rotated_server = Server::new(
        Arc::new(rotated_transport.clone()),
        &rotated,
        router(probe.clone()),
    )
    .start()
    .await
    .expect("server starts");
    let config = ClientConfig::default().timeout(patient(h));
    let connect = |keys: Keys| {
        let config = config.clone();
        async move {
            let transport: Arc<dyn Transport> = Arc::new(authenticated(h, &keys).await);
            Client::connect_with(transport, config)
                .await
                .expect("client connects")
        }
    };
    let not_yet = connect(both_old_signs.clone()).await;
    let switched = connect(both_new_signs.clone()).await;
    for client in [&not_yet, &switched] {
        let reply: String = client.call(&service, "echo", ("x",)).await.unwrap();
        assert_eq!(reply, "RPC x!");
    }
    // Only the switched client reaches the server that dropped the old key.
    let reply: String = switched.call(&rotated, "echo", ("y",)).await.unwrap();
    assert_eq!(reply, "RPC y!");
    let stale = tokio::spawn({
        let rotated = rotated.clone();
        async move { not_yet.call::<String>(&rotated, "echo", ("z",)).await }
    });
    wait_until("the stale key was rejected", patient(h), || {
        rotated_transport.stats().requests_rejected == 1
    })
    .await;
    assert!(!stale.is_finished(), "the stale call got no answer");
    stale.abort();
    server.shutdown().await;
    rotated_server.shutdown().await;
}
