//! Authenticated transports (`busrpc_auth`): what is signed gets
//! through, what is unsigned, forged or replayed elsewhere does not, and
//! keys rotate without a failed call.

use std::sync::Arc;

use busrpc_auth::{Authenticated, Keys};
use busrpc_core::{Client, ClientConfig, Message, Router, RpcError, Server, Transport};
use tokio::sync::{mpsc, Notify};

use super::{patient, router, wait_until, within, Probe, RawPeer};
use crate::{unique_service, Harness};

const SECRET: &[u8] = b"conformance secret number one!!!";
const OTHER_SECRET: &[u8] = b"conformance secret number two!!!";

fn keys(id: &str, secret: &[u8]) -> Keys {
    Keys::new(id, secret).expect("valid keys")
}

async fn authenticated(h: &dyn Harness, keys: &Keys) -> Authenticated {
    Authenticated::new(h.connect().await, keys.clone())
}

/// A request signed as busrpc signs it, for `address`, on a copy.
fn signed(keys: &Keys, address: &str, message: &Message) -> Message {
    let mut message = message.clone();
    keys.sign(address, &mut message);
    message
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

/// A client on an authenticated transport drops a reply that is unsigned,
/// signed with a key it does not accept or with the wrong secret, or is a
/// genuine signed reply to another client copied into its inbox (each
/// carrying the id of its waiting call), and gets the true reply after.
pub async fn forged_and_replayed_replies_are_dropped(h: &dyn Harness) {
    let service = unique_service("auth-replies");
    let keys = keys("k1", SECRET);
    let gate = Arc::new(Notify::new());
    let (started, mut has_started) = mpsc::unbounded_channel();
    let router = Router::new()
        .method("wait", {
            let gate = gate.clone();
            move |(): ()| {
                let (gate, started) = (gate.clone(), started.clone());
                async move {
                    let _ = started.send(());
                    gate.notified().await;
                    Ok::<_, RpcError>("genuine")
                }
            }
        })
        .method("echo", |(text,): (String,)| async move {
            Ok::<_, RpcError>(text)
        });
    let server = Server::new(Arc::new(authenticated(h, &keys).await), &service, router)
        .start()
        .await
        .expect("server starts");
    let transport = authenticated(h, &keys).await;
    let client = Client::connect_with(
        Arc::new(transport.clone()),
        ClientConfig::default().timeout(patient(h)),
    )
    .await
    .expect("client connects");
    let call = tokio::spawn({
        let (client, service) = (client.clone(), service.clone());
        // The client's first call: id 1.
        async move { client.call::<String>(&service, "wait", ()).await }
    });
    within("the call starts", patient(h), has_started.recv()).await;

    // A genuine reply with id 1, signed by the server for another inbox.
    let mut peer = RawPeer::new(h, &service).await;
    let address = peer.transport.service_address(&service);
    let echo = peer.request(r#"{"jsonrpc":"2.0","method":"echo","params":["for another"],"id":1}"#);
    peer.send(signed(&keys, &address, &echo)).await;
    let elsewhere = peer.next_reply().await;
    assert_eq!(keys.verify(peer.inbox.address(), &elsewhere), Ok(()));

    let inbox = client.inbox_address().to_owned();
    let forged = Message::new(r#"{"jsonrpc":"2.0","result":"forged","id":1}"#);
    for reply in [
        forged.clone(),
        signed(&self::keys("k9", SECRET), &inbox, &forged),
        signed(&self::keys("k1", OTHER_SECRET), &inbox, &forged),
        elsewhere,
    ] {
        peer.transport
            .publish(&inbox, reply)
            .await
            .expect("publish");
    }
    wait_until("the four were rejected", patient(h), || {
        transport.stats().replies_rejected == 4
    })
    .await;
    assert!(!call.is_finished(), "the call still waits for its reply");
    gate.notify_one();
    let reply = within("the true reply", patient(h), call).await.unwrap();
    assert_eq!(reply.unwrap(), "genuine");
    assert_eq!(client.stats().replies_dropped, 0, "none reached the client");
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
