//! What only Redis does: claiming a dead consumer's requests, dead-lettering,
//! surviving a restart of Redis, and a call made with redis-cli alone.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{query, redis_url, Prefix};
use busrpc_core::jsonrpc::DEAD_LETTER_CODE;
use busrpc_core::{
    header, Client, ClientConfig, Demand, Error, Message, Router, RpcError, Server, Settle,
    Transport,
};
use busrpc_redis::{RedisConfig, RedisTransport};
use futures_util::StreamExt;

fn echo_router() -> Router {
    Router::new().method("echo", |(text,): (String,)| async move {
        Ok::<_, RpcError>(format!("RPC {text}!"))
    })
}

/// The consumers of `group` on the stream `address`, by name, sorted.
async fn consumer_names(address: &str, group: &str) -> Vec<String> {
    let info: Vec<std::collections::HashMap<String, redis::Value>> =
        query(redis::cmd("XINFO").arg("CONSUMERS").arg(address).arg(group)).await;
    let mut names: Vec<String> = info
        .into_iter()
        .map(|c| redis::from_redis_value(c["name"].clone()).unwrap())
        .collect();
    names.sort();
    names
}

/// A server on a runtime of its own, to be killed as -9 would kill it: its
/// runtime dropped where it stands, so no settle, release or keep-alive
/// runs again and its connections just close.
struct DoomedServer {
    kill: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl DoomedServer {
    /// Starts a server of `service` with `router` on `url`; returns once
    /// it has started.
    fn start(url: &str, service: &'static str, router: Router) -> Self {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (kill, kill_rx) = std::sync::mpsc::channel::<()>();
        let url = url.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let handle = runtime.block_on(async {
                let transport = Arc::new(RedisTransport::connect(&url).await.unwrap());
                Server::new(transport, service, router)
                    .start()
                    .await
                    .unwrap()
            });
            started_tx.send(()).unwrap();
            kill_rx.recv().unwrap();
            // Every task dropped where it stands, as kill -9 would.
            runtime.shutdown_background();
            std::mem::forget(handle);
        });
        started_rx.recv().unwrap();
        DoomedServer { kill, thread }
    }

    /// Kills it; returns once it is dead.
    fn kill(self) {
        self.kill.send(()).unwrap();
        self.thread.join().unwrap();
    }
}

/// A consumer that dies holding a request leaves it pending; a live one
/// claims it after `claim_idle` and it counts as a second delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_after_a_consumer_dies() {
    let prefix = Prefix::new("claim");
    let transport = prefix.connect("").await;
    let address = transport.service_address("svc");
    let mut dying = transport
        .consume(&address, "svc", Demand::unbounded())
        .await
        .unwrap();
    transport
        .publish(&address, Message::new("req"))
        .await
        .unwrap();
    let delivery = dying.next().await.unwrap().unwrap();
    assert_eq!(delivery.message().payload, "req");
    drop(delivery);
    drop(dying);

    let other = prefix.connect("").await;
    let mut live = other
        .consume(&address, "svc", Demand::unbounded())
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), live.next())
        .await
        .expect("claimed within claim_idle")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message().payload, "req");
    let pending: redis::Value = query(
        redis::cmd("XPENDING")
            .arg(&address)
            .arg("svc")
            .arg("-")
            .arg("+")
            .arg(10),
    )
    .await;
    let redis::Value::Array(rows) = pending else {
        panic!("{pending:?}")
    };
    let redis::Value::Array(row) = &rows[0] else {
        panic!("{rows:?}")
    };
    assert_eq!(
        row[3],
        redis::Value::Int(2),
        "the claim is the second delivery"
    );
    delivery.settle(Settle::Ack).await.unwrap();
    assert_eq!(
        stream_settles_at(&address, 0).await,
        0,
        "answered requests leave the stream"
    );
}

/// The length of the stream at `address` once it stops changing towards
/// `expected`: polled for up to 10 s, as the trim runs in the background.
async fn stream_settles_at(address: &str, expected: u64) -> u64 {
    let mut len = u64::MAX;
    for _ in 0..100 {
        len = query::<u64>(redis::cmd("XLEN").arg(address)).await;
        if len == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    len
}

/// The payloads of the entries of the stream at `address`, oldest first.
async fn stream_payloads(address: &str) -> Vec<String> {
    let entries: Vec<(String, Vec<(String, String)>)> =
        query(redis::cmd("XRANGE").arg(address).arg("-").arg("+")).await;
    entries
        .into_iter()
        .map(|(_, fields)| {
            let payload = fields.into_iter().find(|(name, _)| name == "payload");
            payload.map(|(_, value)| value).unwrap_or_default()
        })
        .collect()
}

/// Answered requests are trimmed from the head of the stream in bulk; what
/// is pending (in a server's hands) or unread stays, whichever group it
/// belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_keeps_what_is_pending_or_unread() {
    let prefix = Prefix::new("trim");
    // One entry per read, so that the third request stays unread.
    let transport = prefix.connect("&read_count=1").await;
    let address = transport.service_address("svc");
    let mut consumer = transport
        .consume(&address, "svc", Demand::unbounded())
        .await
        .unwrap();
    for payload in ["one", "two", "three"] {
        transport
            .publish(&address, Message::new(payload))
            .await
            .unwrap();
    }
    let first = consumer.next().await.unwrap().unwrap();
    let second = consumer.next().await.unwrap().unwrap();
    assert_eq!(
        (&first.message().payload[..], &second.message().payload[..]),
        (&b"one"[..], &b"two"[..])
    );

    // "two" is answered, but "one", older, is still pending: nothing goes.
    second.settle(Settle::Ack).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_payloads(&address).await, ["one", "two", "three"]);

    // With "one" answered too, both go; "three", never read, stays.
    first.settle(Settle::Ack).await.unwrap();
    assert_eq!(stream_settles_at(&address, 1).await, 1);
    assert_eq!(stream_payloads(&address).await, ["three"]);

    // Another group on the stream that has read nothing keeps everything.
    let _: redis::Value = query(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&address)
            .arg("audit")
            .arg("0"),
    )
    .await;
    let third = consumer.next().await.unwrap().unwrap();
    third.settle(Settle::Ack).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stream_payloads(&address).await, ["three"]);

    // Once that group has read "three", it goes; "four", answered by the
    // servers but not yet read by that group, stays.
    let _: redis::Value = query(
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("audit")
            .arg("auditor")
            .arg("NOACK")
            .arg("STREAMS")
            .arg(&address)
            .arg(">"),
    )
    .await;
    transport
        .publish(&address, Message::new("four"))
        .await
        .unwrap();
    let fourth = consumer.next().await.unwrap().unwrap();
    fourth.settle(Settle::Ack).await.unwrap();
    assert_eq!(
        stream_settles_at(&address, 1).await,
        1,
        "{:?}",
        stream_payloads(&address).await
    );
    assert_eq!(stream_payloads(&address).await, ["four"]);
}

/// A request delivered more than `max_deliveries` times goes to the
/// dead-letter stream, and its caller gets a JSON-RPC error, not silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_deliveries_dead_letter_and_answer_the_caller() {
    dead_letter_and_answer(None).await;
}

/// With authenticated transports, the dead-letter answer is signed too: a
/// client that drops unsigned replies hears of its dead-lettered call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_caller_hears_of_its_dead_lettered_call() {
    let keys = busrpc_auth::Keys::new("k1", "a secret of thirty-two bytes...!").unwrap();
    dead_letter_and_answer(Some(keys)).await;
}

async fn dead_letter_and_answer(keys: Option<busrpc_auth::Keys>) {
    let prefix = Prefix::new("dead");
    // Installs the recorder before anything is dead-lettered.
    assert_eq!(dead_lettered("none yet"), 0);
    let options = "&max_deliveries=2";
    let wrap = |transport: RedisTransport| -> Arc<dyn Transport> {
        match &keys {
            Some(keys) => Arc::new(busrpc_auth::Authenticated::new(
                Arc::new(transport),
                keys.clone(),
            )),
            None => Arc::new(transport),
        }
    };
    // Its call waits in the queue, which nobody reads yet.
    let caller = Client::connect_with(
        wrap(prefix.connect(options).await),
        ClientConfig::default()
            .timeout(Duration::from_secs(20))
            .wait_for_servers(),
    )
    .await
    .unwrap();
    // The service's group exists (only a server creates it), and nobody reads.
    let first = prefix.connect(options).await;
    first
        .consume(&first.service_address("svc"), "svc", Demand::unbounded())
        .await
        .unwrap()
        .close()
        .await;
    let call = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call::<String>("svc", "echo", ("doomed",)).await }
    });
    // Two consumers in turn take the request and die with it.
    for _ in 0..2 {
        let transport = prefix.connect(options).await;
        let mut consumer = transport
            .consume(
                &transport.service_address("svc"),
                "svc",
                Demand::unbounded(),
            )
            .await
            .unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("delivered");
        drop(delivery);
    }
    // The third, a server, finds it delivered twice already: it answers
    // and dead-letters it, and never runs it.
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = runs.clone();
    let router = Router::new().method("echo", move |(text,): (String,)| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok::<_, RpcError>(text) }
    });
    let transport = wrap(prefix.connect(options).await);
    let address = transport.service_address("svc");
    let server = Server::new(transport, "svc", router).start().await.unwrap();
    let err = call.await.unwrap().expect_err("the caller hears of it");
    let Error::Rpc(rpc) = err else {
        panic!("{err}")
    };
    assert_eq!(
        (rpc.code(), rpc.message()),
        (DEAD_LETTER_CODE, "Request dead-lettered")
    );
    let data: serde_json::Value = rpc.data_as().unwrap().unwrap();
    assert_eq!(data["deliveries"], 3);
    assert_eq!(data["dead_letter"], format!("{address}:dead"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().dead_lettered == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "settled as a dead letter"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never run"
    );
    server.shutdown().await;
    let dead: redis::Value = query(
        redis::cmd("XRANGE")
            .arg(format!("{address}:dead"))
            .arg("-")
            .arg("+"),
    )
    .await;
    let text = format!("{dead:?}");
    assert!(
        text.contains("doomed") && text.contains("dead-deliveries"),
        "{text}"
    );
    assert_eq!(query::<u64>(redis::cmd("XLEN").arg(&address)).await, 0);
    assert_eq!(dead_lettered(&address), 1, "counted as a metric");
}

/// `busrpc_dead_lettered_total{queue}` as recorded so far (this binary's
/// only reader of metrics). A snapshot takes what it reports (counters
/// start again from zero), and tests run side by side: every snapshot is
/// added to totals that all of them read.
fn dead_lettered(queue: &str) -> u64 {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    static TOTALS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    });
    let mut totals = TOTALS.lock().unwrap();
    for (key, .., value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        if key.name() != busrpc_core::metrics::DEAD_LETTERED {
            continue;
        }
        let DebugValue::Counter(n) = value else {
            panic!("not a counter: {value:?}")
        };
        let labelled = key.labels().find(|l| l.key() == "queue");
        let labelled = labelled.map(|l| l.value().to_owned()).unwrap_or_default();
        match totals.iter_mut().find(|(q, _)| *q == labelled) {
            Some((_, total)) => *total += n,
            None => totals.push((labelled, n)),
        }
    }
    totals
        .iter()
        .filter(|(q, _)| q == queue)
        .map(|(_, n)| n)
        .sum()
}

/// An ACL user with a password holding '&', '=', '@' and '%' logs in,
/// from a URL (percent-encoded) and from a `RedisConfig` (as it is); a
/// wrong password, and no password for a server whose default user is off,
/// are refused at once with Redis' reason and without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_logs_in_and_a_wrong_password_is_refused_plainly() {
    let port = free_port();
    let password = "p&ss=w@rd%";
    let args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--user",
        "app",
        "on",
        &format!(">{password}"),
        "~*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ]
    .map(str::to_owned)
    .into();
    let Some(_redis) = PrivateRedis::start_with(port, &args) else {
        busrpc_conformance::cannot_run(
            "an_acl_user_logs_in_and_a_wrong_password_is_refused_plainly",
            "no redis-server binary to start (scripts/test.sh installs one)",
        );
        return;
    };
    let url = format!("redis://app:p%26ss%3Dw%40rd%25@127.0.0.1:{port}");
    let transport: Arc<dyn Transport> = Arc::new(RedisTransport::connect(&url).await.unwrap());
    let server = Server::new(transport.clone(), "acl", echo_router())
        .start()
        .await
        .unwrap();
    let config = RedisConfig::new("127.0.0.1", port).credentials("app", password);
    let built = RedisTransport::connect_with(config).await.unwrap();
    let client = Client::connect(Arc::new(built)).await.unwrap();
    let reply: String = client.call("acl", "echo", ("in",)).await.unwrap();
    assert_eq!(reply, "RPC in!");

    for (url, says) in [
        (
            format!("redis://app:not-the-secret@127.0.0.1:{port}"),
            "Password authentication failed",
        ),
        (format!("redis://127.0.0.1:{port}"), "NOAUTH"),
    ] {
        let started = Instant::now();
        let err = match RedisTransport::connect(&url).await {
            Ok(_) => panic!("{url}: logged in"),
            Err(e) => e,
        };
        let shown = err.to_string();
        assert!(
            matches!(err, busrpc_core::TransportError::PermissionDenied(_)),
            "{url}: final, not worth retrying: {err:?}"
        );
        assert!(shown.contains(says), "{url}: {shown}");
        assert!(
            !shown.contains("not-the-secret") && !shown.contains(password),
            "{shown}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url}: refused at once, not after retries"
        );
    }
    client.close().await;
    server.shutdown().await;
}

/// A redis-server of the test's own, on a free port, killed on drop.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<Self> {
        Self::start_with(port, &["--port".to_owned(), port.to_string()])
    }

    /// Starts redis-server with `args` and waits until `port` accepts connections.
    fn start_with(port: u16, args: &[String]) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = PrivateRedis {
            port,
            child: Some(child),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the server.
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").arg(sig).arg(&pid).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Redis goes away and comes back empty: calls in flight resolve by their
/// deadline, and the same client and server work again on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        busrpc_conformance::cannot_run(
            "survives_a_redis_restart",
            "no redis-server binary to start (scripts/test.sh installs one)",
        );
        return;
    };
    let url = format!(
        "redis://127.0.0.1:{}?claim_idle_ms=500&block_ms=200&response_timeout_ms=1000",
        redis.port
    );
    let server = Server::new(
        Arc::new(RedisTransport::connect(&url).await.unwrap()),
        "svc",
        echo_router(),
    )
    .start()
    .await
    .unwrap();
    let timeout = Duration::from_secs(2);
    let client = Client::connect_with(
        Arc::new(RedisTransport::connect(&url).await.unwrap()),
        ClientConfig::default().timeout(timeout),
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .call::<String>("svc", "echo", ("before",))
            .await
            .unwrap(),
        "RPC before!"
    );

    assert!(server.readiness().is_ready());

    redis.stop();
    let started = tokio::time::Instant::now();
    let outcome = client.call::<String>("svc", "echo", ("during",)).await;
    assert!(outcome.is_err(), "no Redis, no answer: {outcome:?}");
    assert!(
        started.elapsed() < timeout + Duration::from_secs(1),
        "resolved by its deadline"
    );
    // The readiness probe says so, and why.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.readiness().is_ready() && tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let readiness = server.readiness().to_string();
    assert!(
        readiness.starts_with("not ready: reading the request stream failed"),
        "{readiness}"
    );
    assert!(matches!(
        server.status(),
        busrpc_core::ServerStatus::Serving
    ));

    let _redis = PrivateRedis::start(port).expect("redis-server restarts");
    let mut answer = None;
    for _ in 0..60 {
        match client.call::<String>("svc", "echo", ("after",)).await {
            Ok(reply) => {
                answer = Some(reply);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    assert_eq!(
        answer.as_deref(),
        Some("RPC after!"),
        "client and server recovered by themselves"
    );
    let ready = tokio::time::timeout(Duration::from_secs(10), server.ready());
    assert!(ready.await.expect("ready again once Redis is back"));
    client.close().await;
    server.shutdown().await;
}

/// XREADGROUP's reply: per stream, its name and its entries' ids and fields.
type StreamEntries = (String, Vec<(String, Vec<(String, String)>)>);

/// Runs `cmd` on the redis-server at `port`, on a connection of its own
/// that gives up after 200 ms (the server may be stopped).
async fn on_port(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(200)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    cmd.query_async(&mut conn).await
}

/// A server back from a Redis outage claims nothing for `claim_idle_ms`.
/// While Redis is stopped (SIGSTOP, as a host gone), the requests a live
/// peer holds grow idle past `claim_idle_ms` with their owner unable to
/// refresh them; claiming them the moment Redis is back takes them from a
/// live owner and runs them twice (the chaos run's 30 s outage: 9,449
/// reruns). Waiting `claim_idle_ms` gives every peer's keep-alive (every
/// `claim_idle_ms / 3`) its turn first. Here the owner never comes back,
/// so the requests are claimed all the same, but not sooner. (A lower
/// bound: a slow machine only makes the claim later.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_back_from_an_outage_waits_claim_idle_before_claiming() {
    let port = free_port();
    let Some(redis) = PrivateRedis::start(port) else {
        busrpc_conformance::cannot_run(
            "a_server_back_from_an_outage_waits_claim_idle_before_claiming",
            "no redis-server binary to start (scripts/test.sh installs one)",
        );
        return;
    };
    let signal = |sig: &str| redis.signal(sig);
    let claim_idle = Duration::from_millis(4000);
    // Short timeouts: the server sees the outage end within 400 ms of it
    // (Redis times blocked reads out up to 100 ms late, so no shorter).
    let url = format!(
        "redis://127.0.0.1:{port}?claim_idle_ms={}&block_ms=100&response_timeout_ms=250",
        claim_idle.as_millis()
    );
    let transport = RedisTransport::connect(&url).await.unwrap();
    let address = transport.service_address("svc");
    let mut peer = transport
        .consume(&address, "svc", Demand::unbounded())
        .await
        .unwrap();
    for n in 0..4 {
        transport
            .publish(&address, Message::new(format!("held-{n}")))
            .await
            .unwrap();
    }
    // The owner, another consumer, reads the four requests (and dies with
    // the outage: it refreshes them no more).
    let read = on_port(
        port,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("svc")
            .arg("owner")
            .arg("COUNT")
            .arg(4)
            .arg("STREAMS")
            .arg(&address)
            .arg(">"),
    )
    .await
    .unwrap();
    let streams: Vec<StreamEntries> = redis::from_redis_value(read).unwrap();
    assert_eq!(streams[0].1.len(), 4);
    // The peer: a server's consumer, backing off 50 ms after an error.
    let taken = Arc::new(std::sync::Mutex::new(Vec::<(String, Instant)>::new()));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let (took, failed) = (taken.clone(), failures.clone());
    let reading = tokio::spawn(async move {
        loop {
            match peer.next().await {
                Some(Ok(delivery)) => {
                    let payload = String::from_utf8_lossy(&delivery.message().payload);
                    took.lock()
                        .unwrap()
                        .push((payload.into_owned(), Instant::now()));
                    drop(delivery);
                }
                Some(Err(_)) => {
                    failed.lock().unwrap().push(Instant::now());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => return,
            }
        }
    });
    signal("-STOP");
    tokio::time::sleep(claim_idle + Duration::from_millis(1000)).await;
    signal("-CONT");
    let back = Instant::now();
    let give_up = back + claim_idle * 3;
    while taken.lock().unwrap().len() < 4 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = taken.lock().unwrap().clone();
    reading.abort();
    let mut payloads: Vec<&str> = taken.iter().map(|(p, _)| p.as_str()).collect();
    payloads.sort_unstable();
    assert_eq!(
        payloads,
        ["held-0", "held-1", "held-2", "held-3"],
        "claimed once the owner is dead"
    );
    // The reads sent while Redis was stopped wait in its socket; a
    // connection that kept them would time out read after read once Redis
    // is back (it runs each, BLOCK and all). Only the read in flight fails.
    let failures_after = failures
        .lock()
        .unwrap()
        .iter()
        .filter(|at| **at > back)
        .count();
    assert!(
        failures_after <= 2,
        "{failures_after} reads failed after Redis was back"
    );
    let first = taken.iter().map(|(_, at)| *at).min().unwrap();
    // Less the 400 ms in which the server may not yet have seen Redis back.
    let waited = first.duration_since(back);
    assert!(
        waited >= claim_idle - Duration::from_millis(500),
        "claimed {waited:?} after Redis came back, sooner than claim_idle ({claim_idle:?})"
    );
}

/// A service's stream that Redis lost (a restart without persistence) is
/// waited for, not reported unserved: a client that has published to it
/// tries again within the call's deadline, and is answered once a server
/// has made it again. (Before, the call failed at once with "no server of
/// it has ever started here", wrong for a service served a moment ago.) A
/// client that never saw the stream is still told at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_redis_lost_is_waited_for_not_reported_unserved() {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        busrpc_conformance::cannot_run(
            "a_stream_redis_lost_is_waited_for_not_reported_unserved",
            "no redis-server binary to start (scripts/test.sh installs one)",
        );
        return;
    };
    let url =
        format!("redis://127.0.0.1:{port}?claim_idle_ms=500&block_ms=100&response_timeout_ms=1000");
    let connect = || async { Arc::new(RedisTransport::connect(&url).await.unwrap()) };
    let start_server = || async {
        Server::new(connect().await, "svc", echo_router())
            .start()
            .await
            .unwrap()
    };
    let server = start_server().await;
    let transport = connect().await;
    let client = Client::connect_with(
        transport.clone(),
        ClientConfig::default().timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .call::<String>("svc", "echo", ("before",))
            .await
            .unwrap(),
        "RPC before!"
    );
    server.shutdown().await;

    redis.stop();
    let _redis = PrivateRedis::start(port).expect("redis-server restarts");
    // What the transport says once it reaches Redis again (past the 100 ms
    // in which it trusts the length it measured and adds without a check).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let address = transport.service_address("svc");
    let said = loop {
        match transport.publish(&address, Message::new("{}")).await {
            Err(e) if e.to_string().contains("is gone") || !e.is_transient() => break e,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(()) => panic!("published to a stream Redis has lost"),
        }
    };
    assert!(said.is_transient(), "{said}");
    let newcomer = Client::connect(connect().await).await.unwrap();
    let told = newcomer.call::<String>("svc", "echo", ("new",)).await;
    assert!(matches!(told, Err(Error::NoService { .. })), "{told:?}");
    let waiting = tokio::spawn(async move {
        let reply = client.call::<String>("svc", "echo", ("after",)).await;
        (reply, client)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiting.is_finished(),
        "the call waits for the stream to come back"
    );
    let server = start_server().await;
    let (reply, client) = waiting.await.unwrap();
    assert_eq!(reply.unwrap(), "RPC after!");
    client.close().await;
    newcomer.close().await;
    server.shutdown().await;
}

/// A call made while Redis is stopped (SIGSTOP: its socket takes the
/// request, nobody answers) is added once: its publish times out, but the
/// client learns from a PING answered after it, once Redis is back, that
/// the request has run, and does not send it again. (Before, every try sat
/// in the socket and ran: a 30 s stall of the chaos run reran 9,843 calls.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_while_redis_is_stopped_is_added_once() {
    let port = free_port();
    let Some(redis) = PrivateRedis::start(port) else {
        busrpc_conformance::cannot_run(
            "a_call_made_while_redis_is_stopped_is_added_once",
            "no redis-server binary to start (scripts/test.sh installs one)",
        );
        return;
    };
    let signal = |sig: &str| redis.signal(sig);
    let url = format!("redis://127.0.0.1:{port}?response_timeout_ms=200&block_ms=100");
    let transport = Arc::new(RedisTransport::connect(&url).await.unwrap());
    let address = transport.service_address("svc");
    // The service's stream and group, and no server reading them: what is
    // added stays there to be counted.
    let _group = transport
        .consume(&address, "svc", Demand::unbounded())
        .await
        .unwrap();
    let client = Client::connect_with(
        transport.clone(),
        ClientConfig::default().timeout(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    // One request before (which loads the bounding script), then past the
    // 100 ms in which an add skips the script.
    transport
        .publish(&address, Message::new("before"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal("-STOP");
    let call = tokio::spawn(async move {
        let _ = client.call::<String>("svc", "echo", ("stalled",)).await;
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal("-CONT");
    // Whatever the client sent again would have landed by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let len = on_port(port, redis::cmd("XLEN").arg(&address))
        .await
        .unwrap();
    assert_eq!(len, redis::Value::Int(2), "the call was added once");
    call.abort();
}

/// A reply written while Redis is stopped is written once and its request
/// run once: the server's reply and acknowledgement time out and the
/// request is handed back, but Redis runs a connection's commands in order,
/// so once it is back the acknowledgement comes first and the hand-back
/// finds nothing pending to hand back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_made_while_redis_is_stopped_runs_its_request_once() {
    let port = free_port();
    let Some(redis) = PrivateRedis::start(port) else {
        busrpc_conformance::cannot_run(
            "a_reply_made_while_redis_is_stopped_runs_its_request_once",
            "no redis-server binary to start (scripts/test.sh installs one)",
        );
        return;
    };
    let signal = |sig: &str| redis.signal(sig);
    let url =
        format!("redis://127.0.0.1:{port}?response_timeout_ms=200&block_ms=100&claim_idle_ms=300");
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = runs.clone();
    let router = Router::new().method("slow", move |(): ()| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, RpcError>("done")
        }
    });
    let server = Server::new(
        Arc::new(RedisTransport::connect(&url).await.unwrap()),
        "svc",
        router,
    )
    .start()
    .await
    .unwrap();
    let client = Client::connect_with(
        Arc::new(RedisTransport::connect(&url).await.unwrap()),
        ClientConfig::default().timeout(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let call = tokio::spawn(async move {
        let reply = client.call::<String>("svc", "slow", ()).await;
        (reply, client)
    });
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while runs.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < give_up, "the handler never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The reply is written while Redis is stopped.
    signal("-STOP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal("-CONT");
    let (reply, client) = call.await.unwrap();
    assert_eq!(reply.unwrap(), "done");
    // Time for a request handed back to be claimed (claim_idle 300 ms) and run.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "run once"
    );
    client.close().await;
    server.shutdown().await;
}

/// docs/PROTOCOL.md's recipe: redis-cli alone calls a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_alone_can_call_a_service() {
    if Command::new("redis-cli").arg("--version").output().is_err() {
        busrpc_conformance::cannot_run(
            "redis_cli_alone_can_call_a_service",
            "no redis-cli binary (scripts/test.sh installs one)",
        );
        return;
    }
    let prefix = Prefix::new("cli");
    let server = Server::new(Arc::new(prefix.connect("").await), "test", echo_router())
        .start()
        .await
        .unwrap();
    let service = format!("{}:test", prefix.0);
    let inbox = format!("{}:my-inbox", prefix.0);
    let redis_cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .arg("-u")
            .arg(redis_url())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // The inbox must exist: replies to a missing one are discarded.
    redis_cli(&["XADD", &inbox, "MAXLEN", "0", "*", "created", "1"]);
    redis_cli(&["EXPIRE", &inbox, "60"]);
    let request = r#"{"jsonrpc":"2.0","method":"echo","params":["from redis-cli"],"id":1}"#;
    redis_cli(&[
        "XADD",
        &service,
        "*",
        "payload",
        request,
        header::REPLY_TO,
        &inbox,
    ]);
    let reply = tokio::task::spawn_blocking(move || {
        redis_cli(&["XREAD", "BLOCK", "10000", "STREAMS", &inbox, "0"])
    })
    .await
    .unwrap();
    assert!(
        reply
            .lines()
            .any(|l| l == r#"{"jsonrpc":"2.0","result":"RPC from redis-cli!","id":1}"#),
        "{reply}"
    );
    server.shutdown().await;
}

/// `rediss://`: the same call over TLS, against a redis-server with a
/// self-signed certificate trusted through `tls_ca_file`.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tls() {
    let dir = std::env::temp_dir().join(format!("busrpc-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A private CA and a server certificate it signed, as a deployment has.
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(file("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=busrpc test CA",
            "-keyout",
            &file("ca.key"),
            "-out",
            &file("ca.pem"),
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &file("server.key"),
            "-out",
            &file("server.csr"),
        ],
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.pem"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &file("ext.cnf"),
            "-out",
            &file("server.pem"),
        ],
    ];
    for step in steps {
        let made = Command::new("openssl")
            .args(step)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            busrpc_conformance::cannot_run("calls_over_tls", "no openssl to make certificates");
            return;
        }
    }
    let port = free_port();
    let args = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]
    .map(str::to_owned);
    let Some(_redis) = PrivateRedis::start_with(port, &args) else {
        busrpc_conformance::cannot_run("calls_over_tls", "redis-server without TLS support");
        return;
    };
    let url = format!("rediss://127.0.0.1:{port}?tls_ca_file={}", file("ca.pem"));
    let server = Server::new(
        Arc::new(RedisTransport::connect(&url).await.unwrap()),
        "svc",
        echo_router(),
    )
    .start()
    .await
    .unwrap();
    let client = Client::connect(Arc::new(RedisTransport::connect(&url).await.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        client
            .call::<String>("svc", "echo", ("secret",))
            .await
            .unwrap(),
        "RPC secret!"
    );
    client.close().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A request whose `reply-to` names a key that is not a stream: Redis
/// refuses that reply, and only that one. The request read in the same
/// batch is answered and counted as answered; the refused one is counted
/// as a reply failure and acknowledged (another try would fail alike).
#[tokio::test(flavor = "current_thread")]
async fn a_refused_reply_fails_only_its_own_request() {
    let prefix = Prefix::new("refused");
    let transport = Arc::new(prefix.connect("").await);
    let service = format!("{}:test", prefix.0);
    let not_a_stream = format!("{}:a-string", prefix.0);
    let inbox = format!("{}:my-inbox", prefix.0);
    query::<()>(redis::cmd("SET").arg(&not_a_stream).arg("x")).await;
    query::<String>(
        redis::cmd("XADD")
            .arg(&inbox)
            .arg("MAXLEN")
            .arg(0)
            .arg("*")
            .arg("created")
            .arg(1),
    )
    .await;
    // Both queued before the server starts, so that one read takes both
    // and (on this one thread) one pipeline settles both. The service's
    // group is made as its first server makes it: only a server creates a
    // request stream.
    query::<()>(
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&service)
            .arg("test")
            .arg("0")
            .arg("MKSTREAM"),
    )
    .await;
    for (id, reply_to) in [(1, &not_a_stream), (2, &inbox)] {
        let request = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":["{id}"],"id":{id}}}"#);
        let message =
            Message::new(request.into_bytes()).with_header(header::REPLY_TO, reply_to.as_str());
        transport.publish(&service, message).await.unwrap();
    }
    let server = Server::new(transport, "test", echo_router())
        .start()
        .await
        .unwrap();
    let settled = async {
        loop {
            let stats = server.stats();
            if stats.acked == 2 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let stats = tokio::time::timeout(Duration::from_secs(10), settled)
        .await
        .expect("both requests settled");
    // Both acknowledged: the refused one is final, not left for another try.
    assert_eq!((stats.acked, stats.reply_failures), (2, 1), "{stats:?}");
    let replies: Vec<String> = stream_payloads(&inbox).await;
    assert_eq!(
        replies,
        [r#"{"jsonrpc":"2.0","result":"RPC 2!","id":2}"#],
        "the other reply was written"
    );
    let pending: redis::Value = query(redis::cmd("XPENDING").arg(&service).arg("test")).await;
    assert!(
        matches!(&pending, redis::Value::Array(summary) if summary.first() == Some(&redis::Value::Int(0))),
        "both acknowledged: {pending:?}"
    );
    server.shutdown().await;
}

/// Entries with no `payload` field (PROTOCOL.md's inbox marker written to
/// the wrong key, an entry another tool wrote) are settled like any other:
/// answered -32600 when they name a `reply-to`, acknowledged and counted
/// when not. None stays pending, so the stream is trimmed back to empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_without_a_payload_are_settled_and_trimmed() {
    let prefix = Prefix::new("no-payload");
    let transport = Arc::new(prefix.connect("").await);
    let address = transport.service_address("svc");
    let server = Server::new(transport.clone(), "svc", echo_router())
        .start()
        .await
        .unwrap();
    let mut inbox = transport.inbox().await.unwrap();
    let _: String = query(
        redis::cmd("XADD")
            .arg(&address)
            .arg("*")
            .arg("created")
            .arg(1),
    )
    .await;
    let _: String = query(
        redis::cmd("XADD")
            .arg(&address)
            .arg("*")
            .arg("reply-to")
            .arg(inbox.address())
            .arg("note")
            .arg("no payload here"),
    )
    .await;
    let reply = tokio::time::timeout(Duration::from_secs(10), inbox.next())
        .await
        .expect("answered")
        .unwrap()
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"the message has no payload"},"id":null}"#
    );
    let client = Client::connect(transport.clone()).await.unwrap();
    let echoed: String = client.call("svc", "echo", ("after",)).await.unwrap();
    assert_eq!(echoed, "RPC after!");
    assert_eq!(stream_settles_at(&address, 0).await, 0, "trimmed to empty");
    let stats = server.stats();
    assert_eq!((stats.acked, stats.dropped), (3, 1));
    let pending: (u64, redis::Value, redis::Value, redis::Value) =
        query(redis::cmd("XPENDING").arg(&address).arg("svc")).await;
    assert_eq!(pending.0, 0, "nothing left pending");
    client.close().await;
    server.shutdown().await;
}

/// A server's clean shutdown removes its consumer from the group (nothing
/// being pending with it), so restarts do not pile up consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_leaves_the_group() {
    let prefix = Prefix::new("leave");
    let transport = Arc::new(prefix.connect("").await);
    let address = transport.service_address("svc");
    let consumers = || async { consumer_names(&address, "svc").await.len() };
    for _ in 0..3 {
        let server = Server::new(transport.clone(), "svc", echo_router())
            .start()
            .await
            .unwrap();
        let client = Client::connect(transport.clone()).await.unwrap();
        let echoed: String = client.call("svc", "echo", ("x",)).await.unwrap();
        assert_eq!(echoed, "RPC x!");
        assert_eq!(consumers().await, 1, "the running server");
        client.close().await;
        server.shutdown().await;
        assert_eq!(consumers().await, 0, "gone when shutdown() returns");
    }
}

/// A consumer Redis refuses (here an ACL user without XREADGROUP) does not
/// retry forever: the server stops after a few refusals, and its handle
/// says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_consumer_stops_and_says_why() {
    let prefix = Prefix::new("noperm");
    let user = format!("{}-user", prefix.0);
    let _: String = query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">secret")
            .arg("~*")
            .arg("&*")
            .arg("+@all")
            .arg("-xreadgroup"),
    )
    .await;
    let url = prefix
        .url("")
        .replacen("redis://", &format!("redis://{user}:secret@"), 1);
    let transport = Arc::new(RedisTransport::connect(&url).await.unwrap());
    let server = Server::new(transport, "svc", echo_router())
        .start()
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(20), server.stopped()).await;
    let _: u64 = query(redis::cmd("ACL").arg("DELUSER").arg(&user)).await;
    let err = stopped.expect("stopped in time").unwrap_err();
    assert!(err.to_string().contains("no permissions"), "{err}");
    assert!(matches!(
        server.status(),
        busrpc_core::ServerStatus::Failed(_)
    ));
    server.shutdown().await;
}

/// Entries only Redis can carry, written with XADD as any tool could: bytes
/// that are not UTF-8 in field names and values, fields given twice, an
/// empty payload, a thousand fields, replies to keys that are no stream or
/// no key at all. Each gets its exact reply or none, is settled for good,
/// and the server answers a good call after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_get_their_exact_answers() {
    let prefix = Prefix::new("hostile");
    let transport = Arc::new(prefix.connect("").await);
    let address = transport.service_address("svc");
    let server = Server::new(transport.clone(), "svc", echo_router())
        .start()
        .await
        .unwrap();
    let mut inbox = transport.inbox().await.unwrap();
    let me = inbox.address().to_owned();
    let (a_hash, a_string) = (
        format!("{}:a-hash", prefix.0),
        format!("{}:a-string", prefix.0),
    );
    query::<()>(redis::cmd("HSET").arg(&a_hash).arg("f").arg("v")).await;
    query::<()>(redis::cmd("SET").arg(&a_string).arg("v")).await;
    let good = br#"{"jsonrpc":"2.0","method":"echo","params":["hi"],"id":1}"#.as_slice();
    let answered = r#"{"jsonrpc":"2.0","result":"RPC hi!","id":1}"#;
    let fields = |pairs: &[(&[u8], &[u8])]| -> Vec<Vec<u8>> {
        pairs
            .iter()
            .flat_map(|(n, v)| [n.to_vec(), v.to_vec()])
            .collect()
    };
    let to_me = me.as_bytes();
    let many: Vec<(Vec<u8>, Vec<u8>)> = (0..1000)
        .map(|i| (format!("x-{i}").into_bytes(), b"v".to_vec()))
        .collect();
    let mut many_fields = fields(&[(b"payload", good), (b"reply-to", to_me)]);
    many_fields.extend(many.into_iter().flat_map(|(n, v)| [n, v]));
    // What it is, its fields and values, its exact reply (None: silence).
    type Case<'a> = (&'a str, Vec<Vec<u8>>, Option<String>);
    let cases: Vec<Case<'_>> = vec![
        (
            "the payload field twice: the last one counts",
            fields(&[(b"payload", b"garbage"), (b"payload", good), (b"reply-to", to_me)]),
            Some(answered.to_owned()),
        ),
        (
            "reply-to twice: the last one counts",
            fields(&[(b"payload", good), (b"reply-to", b"nowhere"), (b"reply-to", to_me)]),
            Some(answered.to_owned()),
        ),
        (
            "an empty payload",
            fields(&[(b"payload", b""), (b"reply-to", to_me)]),
            Some(r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"the message has no payload"},"id":null}"#.to_owned()),
        ),
        (
            "a field name that is not UTF-8",
            fields(&[(b"payload", good), (b"\xff\xfe", b"x"), (b"reply-to", to_me)]),
            Some(answered.to_owned()),
        ),
        (
            "a content type that is not UTF-8",
            fields(&[(b"payload", good), (b"content-type", b"application/json\xff"), (b"reply-to", to_me)]),
            Some("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,\"message\":\"Parse error\",\"data\":\"unsupported content type \\\"application/json\u{fffd}\\\" (busrpc speaks application/json and application/msgpack)\"},\"id\":null}".to_owned()),
        ),
        (
            "a deadline that is not UTF-8",
            fields(&[(b"payload", good), (b"deadline", b"9\xff"), (b"reply-to", to_me)]),
            Some("{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\",\"data\":\"the deadline header \\\"9\u{fffd}\\\" is not a Unix time in milliseconds (digits only, at most 18446744073709551615)\"},\"id\":1}".to_owned()),
        ),
        ("a thousand more fields", many_fields, Some(answered.to_owned())),
        (
            "a reply-to that is not UTF-8",
            fields(&[(b"payload", good), (b"reply-to", b"\xff\xfe")]),
            None,
        ),
        (
            "a reply-to naming a hash",
            fields(&[(b"payload", good), (b"reply-to", a_hash.as_bytes())]),
            None,
        ),
        (
            "a reply-to naming a string",
            fields(&[(b"payload", good), (b"reply-to", a_string.as_bytes())]),
            None,
        ),
        (
            "a reply-to naming no key",
            fields(&[(b"payload", good), (b"reply-to", format!("{}:nothing", prefix.0).as_bytes())]),
            None,
        ),
        (
            "a reply-to naming the request stream",
            fields(&[(b"payload", good), (b"reply-to", address.as_bytes())]),
            None,
        ),
    ];
    let sentinel = |n: usize| {
        format!(r#"{{"jsonrpc":"2.0","method":"echo","params":["{n}"],"id":"s{n}"}}"#).into_bytes()
    };
    let mut settled = 0;
    for (n, (name, fields, expect)) in cases.into_iter().enumerate() {
        let _: String = query(redis::cmd("XADD").arg(&address).arg("*").arg(fields)).await;
        // The reply to the request stream is read as a request there.
        settled += if name.ends_with("the request stream") {
            2
        } else {
            1
        };
        if let Some(expected) = expect {
            let reply = tokio::time::timeout(Duration::from_secs(10), inbox.next())
                .await
                .unwrap_or_else(|_| panic!("{name}: no reply"))
                .unwrap()
                .unwrap();
            assert_eq!(
                std::str::from_utf8(&reply.payload).unwrap(),
                expected,
                "{name}"
            );
        }
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        while server.stats().acked < settled {
            assert!(tokio::time::Instant::now() < give_up, "{name}: not settled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The next thing in the inbox is the answer to a good call.
        let call = Message::new(sentinel(n)).with_header(header::REPLY_TO, me.as_str());
        transport.publish(&address, call).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), inbox.next())
            .await
            .unwrap_or_else(|_| panic!("{name}: the good call after it was not answered"))
            .unwrap()
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&reply.payload).unwrap(),
            format!(r#"{{"jsonrpc":"2.0","result":"RPC {n}!","id":"s{n}"}}"#),
            "{name}: the good call after it"
        );
        settled += 1;
    }
    let stats = server.stats();
    assert_eq!(stats.released, 0, "{stats:?}");
    assert_eq!(
        stats.reply_failures, 2,
        "the hash and the string: {stats:?}"
    );
    // Nothing is left pending, and no key was made for a reply.
    let pending: (u64, redis::Value, redis::Value, redis::Value) =
        query(redis::cmd("XPENDING").arg(&address).arg("svc")).await;
    assert_eq!(pending.0, 0, "nothing left pending");
    let made: u64 = query(redis::cmd("EXISTS").arg(format!("{}:nothing", prefix.0))).await;
    assert_eq!(made, 0, "a reply makes no stream");
    server.shutdown().await;
}

/// With every default (server, client and transport: only the key prefix
/// is set, to keep the test's keys apart), one of three servers killed
/// while it holds calls loses none of them: its requests are claimed and
/// answered inside the client's default timeout. The server is "killed"
/// as -9 would: its runtime dropped mid-call, so no settle, release or
/// keep-alive runs again and its connections just close. With the old
/// default `claim_idle_ms` (30 s) its calls timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_calls_are_answered_with_every_default() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let prefix = Prefix::new("defaults");
    let url = format!("{}?prefix={}", redis_url(), prefix.0);
    let service = "defaults";
    let ran_by_doomed = Arc::new(AtomicUsize::new(0));
    let router = |doomed: Option<Arc<AtomicUsize>>| {
        Router::new().method("slow", move |(n,): (u64,)| {
            let doomed = doomed.clone();
            async move {
                if let Some(ran) = doomed {
                    ran.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, RpcError>(n)
            }
        })
    };

    let doomed = DoomedServer::start(&url, service, router(Some(ran_by_doomed.clone())));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let transport = Arc::new(RedisTransport::connect(&url).await.unwrap());
        servers.push(
            Server::new(transport, service, router(None))
                .start()
                .await
                .unwrap(),
        );
    }

    let transport: Arc<dyn Transport> = Arc::new(RedisTransport::connect(&url).await.unwrap());
    let client = Arc::new(
        Client::connect_with(transport, ClientConfig::default())
            .await
            .unwrap(),
    );
    let calls: Vec<_> = (0..90u64)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = client.call::<u64>(service, "slow", (n,)).await;
                (n, answer, started.elapsed())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ran_by_doomed.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the doomed server never got a call"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let it take its share; each call runs 300 ms, so all are in hand.
    tokio::time::sleep(Duration::from_millis(100)).await;
    doomed.kill();
    let held = ran_by_doomed.load(Ordering::SeqCst);

    let mut slowest = Duration::ZERO;
    for call in calls {
        let (n, answer, took) = call.await.unwrap();
        match answer {
            Ok(got) => assert_eq!(got, n),
            Err(e) => {
                panic!("call {n} lost with every default ({held} held by the killed server): {e}")
            }
        }
        slowest = slowest.max(took);
    }
    println!("the killed server held {held} call(s); the slowest call took {slowest:?}");
    for server in servers {
        server.shutdown().await;
    }
}

/// A server killed without a clean stop (its runtime dropped where it
/// stands, as kill -9 would) stays listed in the group only until a live
/// server sees it idle for `dead_consumer_idle_ms` with nothing pending,
/// and removes it; a dead consumer with a request still pending (never
/// claimed here: `claim_idle_ms` is a minute) stays, or its request would
/// be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_servers_consumer_leaves_the_group_once_nothing_is_pending() {
    let prefix = Prefix::new("forget");
    let url = prefix.url("&claim_idle_ms=60000&dead_consumer_idle_ms=300");
    let transport = Arc::new(RedisTransport::connect(&url).await.unwrap());
    let address = transport.service_address("svc");
    let consumers = || consumer_names(&address, "svc");

    let doomed = DoomedServer::start(&url, "svc", echo_router());
    // Listed once it has taken a request (Redis 7.0 does not list a
    // consumer whose reads found nothing yet).
    let client = Client::connect(transport.clone()).await.unwrap();
    let echoed: String = client.call("svc", "echo", ("x",)).await.unwrap();
    assert_eq!(echoed, "RPC x!");
    doomed.kill();
    let killed = consumers().await;
    assert_eq!(killed.len(), 1, "the killed server is still listed");

    // A dead consumer holding a request.
    let _: String = query(
        redis::cmd("XADD")
            .arg(&address)
            .arg("*")
            .arg("payload")
            .arg("held"),
    )
    .await;
    let _: redis::Value = query(
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("svc")
            .arg("holding")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&address)
            .arg(">"),
    )
    .await;

    let live = Server::new(transport.clone(), "svc", echo_router())
        .start()
        .await
        .unwrap();
    let echoed: String = client.call("svc", "echo", ("y",)).await.unwrap();
    assert_eq!(echoed, "RPC y!");
    let give_up = Instant::now() + Duration::from_secs(20);
    let left = loop {
        let now = consumers().await;
        if !now.contains(&killed[0]) {
            break now;
        }
        assert!(
            Instant::now() < give_up,
            "the killed server's consumer stays: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(left.len(), 2, "the live server and the holder: {left:?}");
    assert!(left.contains(&"holding".to_owned()), "{left:?}");
    // The live server, idle (Redis 7.0 then ages its consumer as if it
    // were dead), stays for as long as it lives: its alive key says so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(consumers().await, left, "5 times dead_consumer_idle later");
    client.close().await;
    live.shutdown().await;
}

/// A server's name (the `name` option, `{host}-{pid}` without it) is its
/// consumer's in the group, as `XINFO CONSUMERS` lists it, and what its
/// handlers read as `Context::server_name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_name_is_its_consumer_in_the_group() {
    use busrpc_core::Context;
    let prefix = Prefix::new("named");
    let name = format!("{}-orders", prefix.0);
    let transport = Arc::new(prefix.connect(&format!("&name={name}")).await);
    let address = transport.service_address("svc");
    let router = Router::new().method("who", |ctx: Context, (): ()| async move {
        Ok::<_, RpcError>(ctx.server_name().to_owned())
    });
    let server = Server::new(transport.clone(), "svc", router)
        .start()
        .await
        .unwrap();
    assert_eq!(server.name(), name);
    let client = Client::connect(transport.clone()).await.unwrap();
    let who: String = client.call("svc", "who", ()).await.unwrap();
    assert_eq!(who, name);
    assert_eq!(consumer_names(&address, "svc").await, vec![name]);
    client.close().await;
    server.shutdown().await;
}
