//! Middleware is told how every request the server read came out, those
//! that never reached it and those whose reply never left included.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::{
    header, ClientConfig, Context, Deadline, Ending, Limits, Middleware, ServerConfig,
};

use crate::fixture::{client, patient, serve_wrapped, wait_until, RawPeer};
use crate::harness::{unique_service, Harness};

/// Writes down each ending it is told as `method id ending`.
#[derive(Clone, Default)]
struct Told(Arc<Mutex<Vec<String>>>);

#[busrpc_core::async_trait]
impl Middleware for Told {
    fn ended(&self, ctx: &Context, ending: &Ending<'_>) {
        let line = format!("{} {} {ending}", ctx.method(), ctx.id_text());
        self.0.lock().unwrap().push(line);
    }
}

/// One of each: answered, failed, a notification, a reply over the limit,
/// a handler cancelled at its deadline and a request that arrived expired
/// are each told once, with the request's method and id.
pub async fn middleware_is_told_how_each_request_ended(h: &dyn Harness) {
    let service = unique_service("endings");
    let told = Told::default();
    let limits = Limits::default().max_message_bytes(1024);
    let config = ServerConfig::default().limits(limits);
    let middleware = told.clone();
    let server = serve_wrapped(h, &service, "a", config, |server| {
        server.middleware(middleware)
    })
    .await;
    // The caller tells nobody it gave up, so that the deadline alone stops
    // the slow handler (a cancel notice would race it: `Abandoned`).
    let config = ClientConfig::default()
        .timeout(patient(h))
        .cancel_on_give_up(false);
    let client = client(h, config).await;
    let answered: String = client.call(&service, "echo", ("hi",)).await.unwrap();
    assert_eq!(answered, "RPC hi!");
    let failed = client.call::<()>(&service, "fail", (1001,)).await;
    assert_eq!(failed.unwrap_err().rpc().map(|e| e.code()), Some(1001));
    client.notify(&service, "once", (1, 0)).await.unwrap();
    let too_big = client.call::<String>(&service, "big", (4096,)).await;
    assert_eq!(too_big.unwrap_err().rpc().map(|e| e.code()), Some(-32603));
    let short = h.capabilities().latency * 4;
    let slow_ms = u64::try_from((short * 3).as_millis()).unwrap();
    let cancelled = client
        .with_timeout(short)
        .call::<u64>(&service, "once", (2, slow_ms))
        .await;
    assert!(cancelled.unwrap_err().is_timeout());
    let peer = RawPeer::new(h, &service).await;
    let past = Deadline(Deadline::after(Duration::ZERO).0 - 1_000);
    let expired = peer
        .request(r#"{"jsonrpc":"2.0","method":"sleep","params":[1],"id":"late"}"#)
        .with_header(header::DEADLINE, past.to_string());
    peer.send(expired).await;

    wait_until("every request was told", patient(h), || {
        told.0.lock().unwrap().len() >= 6
    })
    .await;
    // Settled concurrently (the notification with the calls after it):
    // compared in order of the lines.
    let mut lines = told.0.lock().unwrap().clone();
    lines.sort();
    let big = lines.iter().find(|l| l.starts_with("big ")).cloned();
    let big = big.unwrap_or_default();
    assert!(
        big.starts_with("big 3 reply refused: the reply of ")
            && big.ends_with("bytes is larger than the limit of 1024"),
        "{lines:?}"
    );
    let mut expected = vec![
        "echo 1 answered".to_owned(),
        "fail 2 failed: 1001 it failed".to_owned(),
        "once - answered".to_owned(),
        "once 4 cancelled at its deadline".to_owned(),
        r#"sleep "late" skipped: its deadline had passed"#.to_owned(),
        big,
    ];
    expected.sort();
    assert_eq!(lines, expected);
    // Nothing is told twice, however long we wait for it.
    tokio::time::sleep(h.capabilities().latency).await;
    assert_eq!(told.0.lock().unwrap().len(), 6);
    server.handle.shutdown().await;
}
