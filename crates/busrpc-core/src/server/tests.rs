//! The server's own tests, over the scripted transport of
//! [`crate::testing`] and the memory broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::testing::{Feed, Script, ScriptedTransport};
use crate::transport::{
    Acknowledge, Delivery, Exhausted, Readiness, ReadinessSignal, Settle, SettleError,
    TransportError,
};
use crate::wire::jsonrpc::RpcError;
use crate::wire::{header, Message};

fn call(n: u64) -> Message {
    let json = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":[{n}],"id":{n}}}"#);
    Message::new(json.into_bytes()).with_header(header::REPLY_TO, "inbox")
}

/// A server over a scripted transport whose settlements are held (as a
/// transport that settles in batches reports them after the request's
/// task has ended), the feed of its deliveries, and the script.
async fn held(config: ServerConfig) -> (ServerHandle, Feed, Script) {
    let (transport, script) = ScriptedTransport::new();
    let feed = script.feed();
    script.hold_settlements();
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Server::new(Arc::new(transport), "held", router)
        .with_config(config)
        .start()
        .await
        .unwrap();
    (server, feed, script)
}

/// Waits until `done` holds, yielding, and sleeping 10 ms every tenth
/// time (so that a test with paused time moves on: 100 s of it in all); a
/// bound on the tries, not on time, turns "never" into a failure.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for n in 0..100_000 {
        if done() {
            return;
        }
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    panic!("never came true: {what}");
}

/// A transport whose consumer's next `times` reads fail with `error()`.
fn failing_reads(times: u32, error: fn() -> TransportError) -> (Arc<ScriptedTransport>, Feed) {
    let (transport, script) = ScriptedTransport::new();
    let feed = script.feed();
    for _ in 0..times {
        feed.fail(error());
    }
    (Arc::new(transport), feed)
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_stop_the_server_and_say_why() {
    let refused = || TransportError::Rejected("NOPERM no permission to read".into());
    let (transport, _feed) = failing_reads(FATAL_ERRORS_TO_STOP, refused);
    let server = Server::new(transport, "denied", Router::new())
        .start()
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(3600), server.stopped());
    let stopped = stopped.await.expect("stopped by itself").unwrap_err();
    assert!(stopped.to_string().contains("NOPERM"), "{stopped}");
    assert!(matches!(server.status(), ServerStatus::Failed(_)));
    server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn transient_errors_do_not_stop_the_server() {
    let down = || TransportError::Unavailable("connection refused".into());
    // About a minute of failed reads, backing off up to 640 ms each.
    let (transport, _feed) = failing_reads(200, down);
    let server = Server::new(transport, "down", Router::new())
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(matches!(server.status(), ServerStatus::Serving));
    server.shutdown().await;
}

/// Dropping a handle stops its server (gracefully, in the background);
/// a detached one serves on.
#[tokio::test]
async fn a_dropped_handle_stops_its_server_and_a_detached_one_serves_on() {
    let transport = Arc::new(crate::memory::MemoryTransport::new());
    let router =
        || Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let dropped = Server::new(transport.clone(), "dropped", router())
        .start()
        .await
        .unwrap();
    drop(dropped);
    Server::new(transport.clone(), "detached", router())
        .start()
        .await
        .unwrap()
        .detach();
    let config = crate::ClientConfig::default().timeout(Duration::from_millis(300));
    let client = crate::Client::connect_with(transport, config)
        .await
        .unwrap();
    let err = client
        .call::<u64>("dropped", "echo", (1,))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        client.call::<u64>("detached", "echo", (2,)).await.unwrap(),
        2
    );
}

/// A reply the broker refuses (here: a full inbox) is final: the
/// request is acknowledged and counted, not released to run again in a
/// loop, and the server goes on.
#[tokio::test]
async fn a_refused_reply_is_final() {
    let transport = Arc::new(crate::memory::MemoryTransport::with_capacity(2));
    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let router = Router::new().method("echo", move |(n,): (u64,)| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, RpcError>(n) }
    });
    let server = Server::new(transport.clone(), "full", router)
        .start()
        .await
        .unwrap();
    // Nobody reads this inbox: it holds two replies, then is full.
    let inbox = transport.inbox().await.unwrap();
    let address = transport.service_address("full");
    for n in 1..=3 {
        let request = call(n).with_header(header::REPLY_TO, inbox.address());
        transport.publish(&address, request).await.unwrap();
        let acked = n;
        for _ in 0..10_000 {
            if server.stats().acked >= acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(server.stats().acked, acked, "request {n} settled");
    }
    server.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 3, "each ran once");
    drop(inbox);
}

#[tokio::test]
async fn a_request_holds_its_permit_until_its_settlement_is_reported() {
    let (server, feed, script) = held(ServerConfig::default().concurrency(2)).await;
    for n in 1..=3 {
        feed.send(call(n));
    }
    until("two settlements held", || script.held() == 2).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(server.stats().received, 2, "two permits, both held");
    assert_eq!(server.stats().acked, 0, "nothing reported yet");

    script.report_held();
    until("one settlement held", || script.held() == 1).await;
    let stats = server.stats();
    assert_eq!((stats.received, stats.acked), (3, 2));
    script.report_held();
    assert_eq!(server.stats().acked, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_settlements_reported_after_their_task() {
    let (server, feed, script) = held(ServerConfig::default()).await;
    feed.send(call(1));
    until("one settlement held", || script.held() == 1).await;

    let stats = server.state.clone();
    let shutdown = tokio::spawn(async move { server.shutdown().await });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with a settlement unreported"
    );
    script.report_held();
    shutdown.await.unwrap();
    assert_eq!(stats.stats().acked, 1);
    assert_eq!(stats.stats().released, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_waiting_for_settlements_when_its_grace_runs_out() {
    let config = ServerConfig::default().shutdown_grace(Duration::from_secs(5));
    let (server, feed, script) = held(config).await;
    feed.send(call(1));
    until("one settlement held", || script.held() == 1).await;
    let stats = server.state.clone();
    // The paused clock jumps to the end of the grace once all is idle.
    server.shutdown().await;
    // Handed to the transport, not released: it is the transport's to finish.
    assert_eq!((stats.stats().acked, stats.stats().released), (0, 0));
    script.report_held();
    assert_eq!(stats.stats().acked, 1);
}

/// The id of the task each call's handler ran in, for three calls.
async fn handler_tasks(config: ServerConfig) -> Vec<String> {
    let transport = Arc::new(crate::memory::MemoryTransport::new());
    let router = Router::new().method("task", |(): ()| async move {
        Ok::<_, RpcError>(tokio::task::try_id().map(|id| id.to_string()))
    });
    let server = Server::new(transport.clone(), "tasks", router)
        .with_config(config)
        .start()
        .await
        .unwrap();
    let client = crate::Client::connect(transport).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id: Option<String> = client.call("tasks", "task", ()).await.unwrap();
        ids.push(id.expect("handlers run in a task"));
    }
    server.shutdown().await;
    ids
}

#[tokio::test]
async fn ready_handlers_run_in_the_serving_task_unless_told_otherwise() {
    let inline = handler_tasks(ServerConfig::default()).await;
    assert!(inline.iter().all(|id| *id == inline[0]), "{inline:?}");
    let spawned = handler_tasks(ServerConfig::default().run_inline(false)).await;
    let distinct: std::collections::HashSet<_> = spawned.iter().collect();
    assert_eq!(distinct.len(), 3, "{spawned:?}");
}

#[tokio::test]
async fn a_handler_that_waits_goes_on_in_its_own_task() {
    // "wait" returns only once "wake" has run: were a waiting handler
    // kept in the serving task, "wake" would never be taken.
    let transport = Arc::new(crate::memory::MemoryTransport::new());
    let woken = Arc::new(tokio::sync::Notify::new());
    let (w1, w2) = (woken.clone(), woken);
    let router = Router::new()
        .method("wait", move |(): ()| {
            let woken = w1.clone();
            async move {
                woken.notified().await;
                Ok::<_, RpcError>("waited")
            }
        })
        .method("wake", move |(): ()| {
            let woken = w2.clone();
            async move {
                woken.notify_one();
                Ok::<_, RpcError>("woke")
            }
        });
    let server = Server::new(transport.clone(), "waits", router)
        .start()
        .await
        .unwrap();
    let client = crate::Client::connect_with(
        transport,
        crate::ClientConfig::default().timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let wait = client.call::<String>("waits", "wait", ());
    let wake = async {
        // Sent once "wait" is in hand, so that it is taken first.
        until("the first call taken", || server.stats().received == 1).await;
        client.call::<String>("waits", "wake", ()).await
    };
    let (waited, woke) = tokio::join!(wait, wake);
    assert_eq!(
        (waited.unwrap(), woke.unwrap()),
        ("waited".into(), "woke".into())
    );
    server.shutdown().await;
}

fn notification() -> Message {
    Message::new(r#"{"jsonrpc":"2.0","method":"echo","params":[1]}"#)
}

/// A server over a transport whose deliveries the test hands out, and
/// whose readiness `signal` keeps, if given.
async fn scripted(signal: Option<ReadinessSignal>) -> (Arc<ServerHandle>, Feed) {
    let (transport, script) = ScriptedTransport::new();
    let feed = script.feed();
    if let Some(signal) = signal {
        script.readiness(signal);
    }
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Server::new(Arc::new(transport), "scripted", router)
        .start()
        .await
        .unwrap();
    (Arc::new(server), feed)
}

/// Without a signal from its transport, a server is not ready from a
/// failed read until it next receives a request.
#[tokio::test(start_paused = true)]
async fn readiness_follows_failed_reads_when_the_transport_says_nothing() {
    let (server, feed) = scripted(None).await;
    assert_eq!(server.readiness(), Readiness::Ready);
    assert!(server.ready().await);
    feed.fail(TransportError::Unavailable("connection refused".into()));
    until("not ready", || !server.readiness().is_ready()).await;
    let why = server.readiness().to_string();
    assert!(why.contains("connection refused"), "{why}");
    // Waits for the server to read again, which is after its backoff.
    let waiting = tokio::spawn({
        let server = server.clone();
        async move { server.ready().await }
    });
    feed.send(notification());
    let ready = tokio::time::timeout(Duration::from_secs(3600), waiting);
    assert!(ready.await.expect("ready again").unwrap());
    assert_eq!(server.stats().received, 1);
    server.shutdown().await;
    assert!(!server.readiness().is_ready());
    assert!(
        !server.ready().await,
        "a stopped server never becomes ready"
    );
}

/// A transport's own signal is the server's readiness while it serves,
/// whatever the reads do.
#[tokio::test(start_paused = true)]
async fn readiness_is_the_transports_when_it_keeps_one() {
    let signal = ReadinessSignal::new(Readiness::NotReady("joining the group".into()));
    let (server, feed) = scripted(Some(signal.clone())).await;
    assert_eq!(
        server.readiness(),
        Readiness::NotReady("joining the group".into())
    );
    let waiting = tokio::spawn({
        let server = server.clone();
        async move { server.ready().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    signal.ready();
    let ready = tokio::time::timeout(Duration::from_secs(3600), waiting);
    assert!(ready.await.expect("ready").unwrap());
    // A delivery after a failed read does not overrule the transport.
    signal.not_ready("rebalancing");
    feed.fail(TransportError::Unavailable("broker down".into()));
    feed.send(notification());
    // Past the backoff (the clock is paused: sleeping costs nothing).
    while server.stats().received == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.readiness(),
        Readiness::NotReady("rebalancing".into())
    );
    server.shutdown().await;
}

/// A handle shared by several owners is shut down by any of them, and
/// every caller of `shutdown` returns once the server has stopped.
#[tokio::test]
async fn a_shared_handle_shuts_down_once_for_every_caller() {
    let transport = Arc::new(crate::memory::MemoryTransport::new());
    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Arc::new(
        Server::new(transport.clone(), "state", router)
            .start()
            .await
            .unwrap(),
    );
    let (a, b) = (server.clone(), server.clone());
    let stopped = server.clone();
    let ((), (), stopped) = tokio::join!(
        async move { a.shutdown().await },
        async move { b.shutdown().await },
        async move { stopped.stopped().await },
    );
    stopped.unwrap();
    assert!(matches!(server.status(), ServerStatus::Stopped));
    // And once more, after the fact.
    server.shutdown().await;
}

/// An acknowledger that writes down each settlement it is asked for (its
/// name, and the reply's address and payload), and fails replies as
/// `fail_reply` says, giving itself back unsettled.
struct Recording {
    log: Arc<Mutex<Vec<String>>>,
    fail_reply: Option<Failing>,
}

/// Replies failed with `error`, the first `times` of them.
#[derive(Clone, Copy)]
struct Failing {
    error: fn() -> TransportError,
    times: usize,
}

impl Failing {
    fn once(error: fn() -> TransportError) -> Option<Self> {
        Some(Self { error, times: 1 })
    }
}

#[async_trait]
impl Acknowledge for Recording {
    async fn settle(mut self: Box<Self>, mut how: Settle) -> Result<(), SettleError> {
        let mut line = how.as_str().to_owned();
        if let Some((to, message)) = how.reply_mut() {
            line = format!("{line} {to} {}", String::from_utf8_lossy(&message.payload));
        }
        self.log.lock().unwrap().push(line);
        match (how, &mut self.fail_reply) {
            (Settle::Reply { .. }, Some(failing)) if failing.times > 0 => {
                failing.times -= 1;
                let error = (failing.error)();
                Err(SettleError::unsettled(error, self))
            }
            _ => Ok(()),
        }
    }
}

/// A middleware that writes down each ending it is told, as
/// `method id ending`.
struct Told(Arc<Mutex<Vec<String>>>);

#[async_trait]
impl Middleware for Told {
    fn ended(&self, ctx: &crate::Context, ending: &crate::Ending<'_>) {
        let line = format!("{} {} {ending}", ctx.method(), ctx.id_text());
        self.0.lock().unwrap().push(line);
    }
}

/// A middleware whose `ended` panics: the server goes on, and the
/// middleware after it is still told.
struct PanicsWhenTold;

#[async_trait]
impl Middleware for PanicsWhenTold {
    fn ended(&self, _: &crate::Context, _: &crate::Ending<'_>) {
        panic!("a bug in a middleware's ended");
    }
}

/// Runs one delivery of a call to `echo` through a server whose handler
/// counts its runs, until `wanted` settlements were asked for; the
/// settlements, the server's stats, and the endings its middleware was told.
async fn settled(
    message: Message,
    exhausted: Option<Exhausted>,
    fail_reply: Option<Failing>,
    wanted: fn(&[String]) -> bool,
) -> (Vec<String>, u64, ServerStats, Vec<String>) {
    let (transport, script) = ScriptedTransport::new();
    let feed = script.feed();
    let runs = Arc::new(AtomicU64::new(0));
    let counted = runs.clone();
    let router = Router::new().method("echo", move |(n,): (u64,)| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, RpcError>(n) }
    });
    let endings = Arc::new(Mutex::new(Vec::new()));
    let server = Server::new(Arc::new(transport), "svc", router)
        .middleware(PanicsWhenTold)
        .middleware(Told(endings.clone()))
        .start()
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let acker = Recording {
        log: log.clone(),
        fail_reply,
    };
    let delivery = Delivery::new(message, acker);
    let delivery = match exhausted {
        Some(exhausted) => delivery.exhausted(exhausted),
        None => delivery,
    };
    feed.deliver(delivery);
    until("settled", || wanted(&log.lock().unwrap())).await;
    until("told", || !endings.lock().unwrap().is_empty()).await;
    server.shutdown().await;
    let log = log.lock().unwrap().clone();
    let endings = endings.lock().unwrap().clone();
    (log, runs.load(Ordering::SeqCst), server.stats(), endings)
}

/// A delivery its transport counted past `max_deliveries` is never run:
/// its caller is answered -32001, exactly as PROTOCOL.md shows, and it is
/// settled as a dead letter and counted.
#[tokio::test]
async fn an_exhausted_delivery_is_answered_dead_lettered_and_never_run() {
    let exhausted = Exhausted::new(6, 5, "busrpc.svc.dead");
    let (log, runs, stats, endings) = settled(call(7), Some(exhausted), None, one).await;
    assert_eq!(
        log,
        [
            r#"dead-letter inbox {"jsonrpc":"2.0","error":{"code":-32001,"message":"Request dead-lettered","data":{"dead_letter":"busrpc.svc.dead","deliveries":6,"max_deliveries":5}},"id":7}"#
        ]
    );
    assert_eq!(runs, 0, "never run");
    assert_eq!((stats.dead_lettered, stats.acked, stats.calls), (1, 1, 0));
    assert_eq!(endings, ["echo 7 dead-lettered after 6 deliveries"]);
}

/// A request that ran is told as answered once its reply is settled.
#[tokio::test]
async fn a_settled_reply_is_told_as_answered() {
    let (log, runs, _, endings) = settled(call(7), None, None, one).await;
    assert_eq!(log, [r#"reply inbox {"jsonrpc":"2.0","result":7,"id":7}"#]);
    assert_eq!((runs, endings), (1, vec!["echo 7 answered".to_owned()]));
}

fn one(log: &[String]) -> bool {
    log.len() == 1
}

fn two(log: &[String]) -> bool {
    log.len() == 2
}

/// The one policy for a failed settlement: a reply the broker refused is
/// final (acknowledged); one it could not take for a moment is sent
/// again, and the request is neither released nor run again.
#[tokio::test]
async fn a_refused_reply_is_acknowledged_and_a_failed_one_sent_again() {
    let reply = r#"reply inbox {"jsonrpc":"2.0","result":7,"id":7}"#;
    let refused = || TransportError::Rejected("too large".into());
    let (log, runs, stats, endings) = settled(call(7), None, Failing::once(refused), two).await;
    assert_eq!(log, [reply, "ack"]);
    assert_eq!((runs, stats.acked, stats.reply_failures), (1, 1, 1));
    assert_eq!(endings, ["echo 7 reply refused: too large"]);

    // Released, before: run again by the next server to take it.
    let away = || TransportError::Unavailable("connection reset".into());
    let (log, runs, stats, endings) = settled(call(7), None, Failing::once(away), two).await;
    assert_eq!(log, [reply, reply]);
    assert_eq!((runs, stats.acked, stats.reply_failures), (1, 1, 0));
    assert_eq!(endings, ["echo 7 answered"]);
}

/// A reply the broker cannot take until its call's deadline has passed
/// is dropped (nobody waits for it any more) and its request
/// acknowledged, not released to run again; one without a deadline is
/// released once it has been tried for as long as a client waits.
#[tokio::test]
async fn a_reply_the_broker_never_takes_is_dropped_at_its_deadline() {
    let reply = r#"reply inbox {"jsonrpc":"2.0","result":7,"id":7}"#;
    let away = || TransportError::Unavailable("connection refused".into());
    let always = Some(Failing {
        error: away,
        times: usize::MAX,
    });
    let deadline = crate::wire::Deadline::after(Duration::from_millis(300));
    let message = call(7).with_header(header::DEADLINE, deadline.to_string());
    let acked = |log: &[String]| log.last().is_some_and(|l| l == "ack");
    let (log, runs, stats, endings) = settled(message, None, always, acked).await;
    let (ack, replies) = log.split_last().unwrap();
    assert_eq!(ack, "ack");
    assert!(
        replies.len() >= 2 && replies.iter().all(|r| r == reply),
        "{log:?}"
    );
    assert_eq!((runs, stats.acked, stats.reply_failures), (1, 1, 1));
    let [dropped] = &endings[..] else {
        panic!("{endings:?}")
    };
    assert!(
        dropped.starts_with("echo 7 reply dropped: the broker was unreachable until its deadline")
            && dropped.contains("connection refused"),
        "{dropped}"
    );
}

/// Without a deadline (a foreign caller's request), a reply the broker
/// never takes is sent again for 30 s, then the request is released for
/// another try, as before.
#[tokio::test(start_paused = true)]
async fn a_reply_without_a_deadline_is_released_after_thirty_seconds() {
    let away = || TransportError::Unavailable("connection reset".into());
    let always = Some(Failing {
        error: away,
        times: usize::MAX,
    });
    let released = |log: &[String]| log.last().is_some_and(|l| l == "release");
    let (log, runs, stats, endings) = settled(call(7), None, always, released).await;
    // 20, 40, ... 640 ms apart: about fifty tries in 30 s.
    assert!((40..60).contains(&(log.len() - 1)), "{}", log.len());
    assert_eq!((runs, stats.acked, stats.reply_failures), (1, 0, 1));
    let [released] = &endings[..] else {
        panic!("{endings:?}")
    };
    assert!(
        released.starts_with("echo 7 released for another try: ")
            && released.contains("connection reset"),
        "{released}"
    );
}
