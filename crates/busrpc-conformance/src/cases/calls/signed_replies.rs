//! Authenticated replies (`busrpc_auth`): a forged or replayed reply never
//! reaches the caller.

use std::sync::Arc;

use busrpc_core::{Client, ClientConfig, Message, Router, RpcError, Server};
use tokio::sync::{mpsc, Notify};

use crate::fixture::signing::{authenticated, keys, signed, OTHER_SECRET, SECRET};
use crate::fixture::{patient, wait_until, within, RawPeer};
use crate::harness::{unique_service, Harness};

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
