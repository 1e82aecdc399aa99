//! How long a request waited in the queue before its handler started, as
//! the handler sees it ([`Context::queue_wait`](busrpc_core::Context::queue_wait)).

use std::time::{Duration, Instant};

use busrpc_core::{ClientConfig, ServerConfig};
use serde_json::Value;

use crate::fixture::{client, patient, serve, served_before};
use crate::harness::{unique_service, Harness};

/// A request published while no server runs waited at least as long as
/// none did; one sent to a running server waited less; neither waited
/// longer than its whole call took.
pub async fn a_handler_knows_how_long_its_request_waited(h: &dyn Harness) {
    // Time passing is what is measured: the call waits while no server runs.
    const NOBODY_SERVES: Duration = Duration::from_millis(800);
    let service = unique_service("queue-wait");
    served_before(h, &service).await;
    let client = client(
        h,
        ClientConfig::default()
            .timeout(patient(h))
            .wait_for_servers(),
    )
    .await;
    let queued = {
        let (client, service) = (client.clone(), service.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let seen = client.call::<Value>(&service, "context", ()).await;
            (seen, sent.elapsed())
        })
    };
    tokio::time::sleep(NOBODY_SERVES).await;
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let (seen, took) = queued.await.expect("the call's task");
    let waited = waited(&seen.expect("the queued call is answered"));
    // Its publish may have come a little after the task began.
    assert!(
        waited >= NOBODY_SERVES / 2,
        "it waited {waited:?} in the queue, while nobody served for {NOBODY_SERVES:?}"
    );
    assert!(
        waited <= took,
        "it waited {waited:?} of a call that took {took:?}"
    );

    let sent = Instant::now();
    let seen: Value = client
        .call(&service, "context", ())
        .await
        .expect("a call to a running server");
    let took = sent.elapsed();
    let then = waited;
    let waited = self::waited(&seen);
    assert!(
        waited <= took && waited < then,
        "a call served at once waited {waited:?} of {took:?} (the queued one {then:?})"
    );
    server.handle.shutdown().await;
}

/// The queue wait the `context` method reported, to the millisecond.
fn waited(seen: &Value) -> Duration {
    let millis = seen["queue_wait_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("the handler knows its queue wait: {seen}"));
    Duration::from_millis(millis)
}
