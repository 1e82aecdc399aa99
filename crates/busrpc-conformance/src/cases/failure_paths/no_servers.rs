//! Nobody serving: a call to a service whose queue has no live server
//! fails at once with `NoServers` instead of waiting out its timeout, as
//! NATS answers "no responders"; a client that would rather queue waits.

use std::time::Duration;

use busrpc_core::{Client, ClientConfig, Error, ServerConfig, CHECK_SERVERS_EVERY};
use tokio::time::Instant;

use crate::fixture::{client, patient, serve, within};
use crate::harness::{unique_service, Harness};

/// A call that should fail at once: `NoServers`, in well under its
/// timeout (which is [`patient`]: ten seconds at least).
async fn fails_at_once(client: &Client, service: &str) {
    let started = Instant::now();
    let err = client
        .call::<String>(service, "echo", ("anyone?",))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoServers { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "NoServers came after {:?}, not at once",
        started.elapsed()
    );
}

/// Servers stopped, then killed: each time the next call fails at once;
/// a server started again serves the calls after it; a client that waits
/// for servers has its call queued and answered by that server.
pub async fn a_call_nobody_serves_fails_at_once(h: &dyn Harness) {
    let gone_within = match h.capabilities().servers_known {
        Ok(within) => within,
        Err(why) => {
            println!("not applicable: {why}");
            return;
        }
    };
    let service = unique_service("no-servers");
    let a = serve(h, &service, "a", ServerConfig::default()).await;
    let b = serve(h, &service, "b", ServerConfig::default()).await;
    let caller = client(h, ClientConfig::default().timeout(patient(h))).await;
    let queuer = client(
        h,
        ClientConfig::default()
            .timeout(patient(h))
            .wait_for_servers(),
    )
    .await;
    let hi: String = caller.call(&service, "echo", ("hi",)).await.unwrap();
    assert_eq!(hi, "RPC hi!");

    // Stopped cleanly: gone at once; what the caller knew ages out.
    a.handle.shutdown().await;
    b.handle.shutdown().await;
    tokio::time::sleep(CHECK_SERVERS_EVERY).await;
    fails_at_once(&caller, &service).await;
    fails_at_once(&caller, &service).await;

    // The queuing client's call waits for the next server.
    let queued = {
        let (queuer, service) = (queuer.clone(), service.clone());
        tokio::spawn(async move { queuer.call::<String>(&service, "echo", ("later",)).await })
    };
    let again = serve(h, &service, "again", ServerConfig::default()).await;
    let later = within("the queued call", patient(h), queued).await;
    assert_eq!(later.unwrap().unwrap(), "RPC later!");
    tokio::time::sleep(CHECK_SERVERS_EVERY).await;
    let back: String = caller.call(&service, "echo", ("back",)).await.unwrap();
    assert_eq!(back, "RPC back!");

    // Killed: gone once the broker stops counting it.
    again.handle.abort();
    tokio::time::sleep(gone_within + CHECK_SERVERS_EVERY).await;
    fails_at_once(&caller, &service).await;

    caller.close().await;
    queuer.close().await;
}
