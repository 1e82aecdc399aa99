//! Servers and clients starting, stopping and dying: what is in hand is
//! answered or handed to another instance, never lost or answered twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::transport::{Deliveries, Delivery, Demand, Settle};
use busrpc_core::{
    ClientConfig, ClientMiddleware, ClientNext, Error, Message, OutgoingCall, ServerConfig,
};
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::value::RawValue;

use crate::fixture::{client, patient, serve, served_before, wait_until, within};
use crate::harness::{unique_service, Harness};

/// A server that dies mid-call leaves the request to another instance.
pub async fn server_death_leaves_request_to_another_instance(h: &dyn Harness) {
    let redelivery = match h.capabilities().redelivery {
        Ok(within) => within,
        Err(reason) => {
            println!("does not apply: server_death_leaves_request_to_another_instance: {reason}");
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
    // Stopped: a new call is not taken by anyone. It waits out its
    // timeout, or is refused at once if the client already knows that
    // nobody serves (it asks the broker at most every 500 ms).
    let short = client.with_timeout(h.capabilities().latency * 4);
    let err = short
        .call::<String>(&service, "echo", ("late",))
        .await
        .unwrap_err();
    assert!(
        err.is_timeout() || matches!(err, Error::NoServers { .. }),
        "{err}"
    );
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
        println!("does not apply: shutdown_grace_releases_to_another_instance: {reason}");
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

/// Each server instance has a name of its own (its consumer's on the
/// broker; `{host}-{pid}`, `{host}-{pid}-2`… by default), even two of one
/// service in one process, so logs and the broker's member list tell them
/// apart.
pub async fn two_servers_of_a_service_have_names_of_their_own(h: &dyn Harness) {
    let service = unique_service("names");
    let a = serve(h, &service, "a", ServerConfig::default()).await;
    let b = serve(h, &service, "b", ServerConfig::default()).await;
    let (first, second) = (a.handle.name().to_owned(), b.handle.name().to_owned());
    assert!(!first.is_empty() && !second.is_empty());
    assert_ne!(first, second);
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}

/// A server set to name itself in its replies does (`served-by`), and the
/// caller reads it, as does client middleware; one not set says nothing.
pub async fn a_reply_names_its_server_when_asked(h: &dyn Harness) {
    #[derive(Clone, Default)]
    struct SeenBy(Arc<Mutex<Vec<Option<String>>>>);
    #[busrpc_core::async_trait]
    impl ClientMiddleware for SeenBy {
        async fn call(
            &self,
            call: &mut OutgoingCall,
            next: ClientNext<'_>,
        ) -> Result<Box<RawValue>, Error> {
            let outcome = next.run(call).await;
            let by = call.served_by().map(ToOwned::to_owned);
            self.0.lock().unwrap().push(by);
            outcome
        }
    }

    let named = unique_service("named");
    let quiet = unique_service("quiet");
    let says = serve(
        h,
        &named,
        "a",
        ServerConfig::default().name_in_replies(true),
    )
    .await;
    let silent = serve(h, &quiet, "b", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let reply = client
        .call_reply::<String>(&named, "echo", ("who",))
        .await
        .unwrap();
    assert_eq!(reply.value, "RPC who!");
    assert_eq!(reply.served_by(), Some(says.handle.name()));
    let reply = client
        .call_reply::<String>(&quiet, "echo", ("who",))
        .await
        .unwrap();
    assert_eq!(
        (reply.value.as_str(), reply.served_by()),
        ("RPC who!", None)
    );
    let seen = SeenBy::default();
    let watched = client.with_middleware(seen.clone());
    let through: String = watched.call(&named, "echo", ("mw",)).await.unwrap();
    assert_eq!(through, "RPC mw!");
    let reply = watched
        .call_reply::<String>(&named, "echo", ("mw",))
        .await
        .unwrap();
    assert_eq!(reply.served_by(), Some(says.handle.name()));
    let name = Some(says.handle.name().to_owned());
    assert_eq!(*seen.0.lock().unwrap(), [name.clone(), name]);
    says.handle.shutdown().await;
    silent.handle.shutdown().await;
}

/// A delivery its consumer releases comes back as the next attempt
/// ([`Delivery::attempt`](busrpc_core::transport::Delivery::attempt), what
/// a handler reads from `Context::attempt`): the broker, or the transport
/// where the broker keeps no count, counts every delivery, and the
/// redeliveries metric moves with it.
pub async fn a_released_request_comes_back_as_its_next_attempt(h: &dyn Harness) {
    let service = unique_service("released");
    let transport = h.connect().await;
    let address = transport.service_address(&service);
    let mut deliveries = transport
        .consume(&address, &service, Demand::unbounded())
        .await
        .expect("consume");
    let payload = r#"{"jsonrpc":"2.0","method":"released"}"#;
    transport
        .publish(&address, Message::new(payload))
        .await
        .expect("publish");
    let limit = patient(h) + h.capabilities().redelivery.unwrap_or_default();
    async fn next(deliveries: &mut Deliveries, limit: Duration) -> Delivery {
        within("a delivery", limit, deliveries.next())
            .await
            .expect("the deliveries go on")
            .expect("a delivery")
    }
    let first = next(&mut deliveries, limit).await;
    assert_eq!(first.message().payload, payload);
    assert_eq!(first.attempt(), Some(1), "the first delivery");
    first.settle(Settle::Release).await.expect("released");
    let second = next(&mut deliveries, limit).await;
    assert_eq!(second.message().payload, payload, "the same request");
    assert_eq!(second.attempt(), Some(2), "its second delivery");
    second.settle(Settle::Release).await.expect("released");
    let third = next(&mut deliveries, limit).await;
    assert_eq!(third.attempt(), Some(3), "its third delivery");
    third.settle(Settle::Ack).await.expect("acknowledged");
    deliveries.close().await;
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

/// A call or notification to a service no server of which has ever started
/// on this broker (a typo, most often) fails at once with
/// [`Error::NoService`], and creates nothing: asked again, the broker still
/// has no such service. Once a server of it has started, requests wait in
/// its queue for the next one and are answered.
pub async fn a_service_never_served_is_refused_at_once(h: &dyn Harness) {
    let service = unique_service("never-served");
    // Waits for servers: once the first server has stopped, a client that
    // asks the broker (at most every `check_servers_every`) would be told
    // NoServers; one that took longer than that to stop made the queued
    // call fail so (seen on Tansu under load).
    let config = ClientConfig::default()
        .timeout(patient(h) * 2)
        .wait_for_servers();
    let client = client(h, config).await;
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
