//! The client's own tests, over the scripted transport of
//! [`crate::testing`] and the memory broker.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::memory::MemoryTransport;
use crate::testing::{Script, ScriptedTransport};
use crate::transport::TransportError;
use crate::wire::jsonrpc::RpcError;
use crate::{Router, Server};

/// A broker that takes inboxes but never confirms a publish.
fn stalled() -> Arc<ScriptedTransport> {
    let (transport, script) = ScriptedTransport::new();
    script.stall_publishes();
    Arc::new(transport)
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_notifications_waits_no_longer_than_the_timeout() {
    let transport = stalled();
    let config = ClientConfig::default().timeout(Duration::from_secs(3));
    let client = Client::connect_with(transport, config).await.unwrap();
    let mut batch = client.batch("svc");
    batch.notify("a", [1]).unwrap();
    batch.notify("b", [2]).unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(60), batch.send()).await;
    let err = sent.expect("the batch returned").unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

/// A broker whose first `failures` publishes to the service fail,
/// transiently or not; then the memory broker behind it.
fn flaky(failures: u32, transient: bool) -> (Arc<ScriptedTransport>, Script) {
    let (transport, script) = ScriptedTransport::new();
    let error = if transient {
        || TransportError::Unavailable("connection reset".into())
    } else {
        || TransportError::Rejected("not allowed".into())
    };
    script.fail_publishes(SVC, failures, error);
    (Arc::new(transport), script)
}

/// The service's queue on the memory broker.
const SVC: &str = "busrpc.svc";

async fn flaky_call(transport: Arc<ScriptedTransport>) -> Result<u64, Error> {
    let router = Router::new().method("id", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let _server = Server::new(transport.clone(), "svc", router)
        .start()
        .await
        .unwrap();
    let config = ClientConfig::default().timeout(Duration::from_secs(5));
    let client = Client::connect_with(transport, config).await.unwrap();
    client.call::<u64>("svc", "id", (7,)).await
}

/// A broker away for a moment (a restart) costs the caller a wait, not
/// the call: the publish is tried again within the call's deadline.
#[tokio::test(start_paused = true)]
async fn a_publish_that_fails_for_a_moment_is_tried_again() {
    let (transport, script) = flaky(3, true);
    assert_eq!(flaky_call(transport).await.unwrap(), 7);
    assert_eq!(script.publish_tries(SVC), 4);
}

/// A broker away for longer than the caller waits: the caller learns
/// why (not merely that time ran out), by its deadline.
#[tokio::test(start_paused = true)]
async fn a_broker_away_past_the_deadline_is_reported_as_such() {
    let (transport, script) = flaky(u32::MAX, true);
    let started = Instant::now();
    let err = flaky_call(transport).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(TransportError::Unavailable(_))),
        "{err}"
    );
    assert!(started.elapsed() <= Duration::from_secs(5));
    // 20, 40, 80 ... ms, then every second: a handful of tries.
    let tries = script.publish_tries(SVC);
    assert!((5..=12).contains(&tries), "{tries} tries");
}

/// A refusal is not tried again: it would be refused alike.
#[tokio::test(start_paused = true)]
async fn a_refused_publish_is_not_tried_again() {
    let (transport, script) = flaky(1, false);
    let err = flaky_call(transport).await.unwrap_err();
    assert!(
        matches!(err, Error::Transport(TransportError::Rejected(_))),
        "{err}"
    );
    assert_eq!(script.publish_tries(SVC), 1);
}

#[tokio::test]
async fn a_batch_call_from_another_batch_is_refused() {
    let transport = Arc::new(MemoryTransport::new());
    let router = Router::new().method("id", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Server::new(transport.clone(), "calc", router)
        .start()
        .await
        .unwrap();
    let client = Client::connect(transport).await.unwrap();
    let mut a = client.batch("calc");
    let in_a = a.call("id", (1,)).unwrap();
    let mut b = client.batch("calc");
    let in_b = b.call("id", (2,)).unwrap();
    let a = a.send().await.unwrap();
    let b = b.send().await.unwrap();
    assert_eq!(a.get::<u64>(in_a).unwrap(), 1);
    assert_eq!(b.get::<u64>(in_b).unwrap(), 2);
    // The same place in its batch, but not the same call.
    let err = a.get::<u64>(in_b).unwrap_err();
    assert!(
        matches!(err, Error::NotInBatch { id } if id == in_b.id()),
        "{err}"
    );
    assert!(b.raw(in_a).is_none());
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_for_a_slot_fails_when_the_client_closes() {
    // The broker never confirms: the first call holds the only slot,
    // stuck in its publish, until its timeout; the second waits for
    // that slot, and gets it only after the client has closed.
    let transport = stalled();
    let config = ClientConfig::default()
        .max_in_flight(1)
        .timeout(Duration::from_secs(30));
    let client = Client::connect_with(transport, config).await.unwrap();
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.call::<u64>("svc", "m", ()).await }
    });
    tokio::task::yield_now().await;
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.call::<u64>("svc", "m", ()).await }
    });
    tokio::task::yield_now().await;
    client.close().await;
    let second = second.await.unwrap();
    assert!(matches!(second, Err(Error::Closed)), "{second:?}");
    let first = first.await.unwrap();
    assert!(first.is_err(), "{first:?}");
}

/// Adds a token, and records what it saw of each call.
struct Token(Arc<std::sync::Mutex<Vec<Option<Vec<String>>>>>);

#[async_trait::async_trait]
impl ClientMiddleware for Token {
    async fn call(
        &self,
        call: &mut OutgoingCall,
        next: ClientNext<'_>,
    ) -> Result<Box<serde_json::value::RawValue>, Error> {
        self.0
            .lock()
            .unwrap()
            .push(call.batch().map(<[String]>::to_vec));
        call.headers.insert("authorization", "Bearer t");
        next.run(call).await
    }
}

/// Answers without sending anything.
struct Refuse;

#[async_trait::async_trait]
impl ClientMiddleware for Refuse {
    async fn call(
        &self,
        _call: &mut OutgoingCall,
        _next: ClientNext<'_>,
    ) -> Result<Box<serde_json::value::RawValue>, Error> {
        Ok(serde_json::value::RawValue::from_string("1".to_owned()).unwrap())
    }
}

/// A batch passes through the client's middleware once, with its methods,
/// and carries the headers the middleware added: a token-adding middleware
/// applies to batches as to calls.
#[tokio::test]
async fn client_middleware_applies_to_batches() {
    let transport = Arc::new(MemoryTransport::new());
    let router = Router::new().method("whoami", |ctx: crate::Context, (): ()| async move {
        Ok::<_, RpcError>(ctx.headers().get("authorization").map(str::to_owned))
    });
    let _server = Server::new(transport.clone(), "svc", router)
        .start()
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let client = Client::connect(transport)
        .await
        .unwrap()
        .with_middleware(Token(seen.clone()));
    let mut batch = client.batch("svc");
    let first = batch.call("whoami", ()).unwrap();
    batch.notify("whoami", ()).unwrap();
    let replies = batch.send().await.unwrap();
    assert_eq!(
        replies.get::<Option<String>>(first).unwrap().as_deref(),
        Some("Bearer t")
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [Some(vec!["whoami".to_owned(), "whoami".to_owned()])]
    );
    let lone: Option<String> = client.call("svc", "whoami", ()).await.unwrap();
    assert_eq!(lone.as_deref(), Some("Bearer t"));
    assert_eq!(seen.lock().unwrap().last(), Some(&None));

    // A middleware that answers a batch itself leaves it unsent: an error,
    // never replies made up.
    let refusing = client.with_middleware(Refuse);
    let mut batch = refusing.batch("svc");
    batch.call("whoami", ()).unwrap();
    let err = batch.send().await.unwrap_err();
    assert!(matches!(err, Error::BatchNotSent), "{err}");
}
