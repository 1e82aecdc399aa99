//! The pipeline dialect (`dialect=pipeline`): busrpc against callers and
//! receivers of the original Python library's wire format.
//!
//! The first tests run busrpc on both sides over librdkafka's mock cluster;
//! the rest put it against tests/pipeline_peer.py, a Python caller and
//! receiver written from docs/PROTOCOL.md's description of that format,
//! over a real broker (Tansu in scripts/test.sh; `BUSRPC_PYTHON` names a
//! Python with kafka-python and msgpack).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::kafka_url;
use busrpc_core::{Client, Limits, Router, RpcError, Server, ServerConfig, Transport};
use busrpc_kafka::PipelineTransport;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

/// echo and add, counting the requests they run.
fn router(runs: Arc<AtomicUsize>) -> Router {
    let counted = runs.clone();
    Router::new()
        .method("echo", move |(text,): (String,)| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, RpcError>(format!("RPC {text}!")) }
        })
        .method("add", move |add: Add| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, RpcError>(add.a + add.b) }
        })
}

async fn pipeline(url: &str) -> Arc<dyn Transport> {
    Arc::new(PipelineTransport::connect(url).await.expect("broker"))
}

/// Waits for `count` to reach `want`, for up to 30 s.
async fn reaches(count: &AtomicUsize, want: usize) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::SeqCst) < want {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{} of {want}",
            count.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every outcome the original's callers can meet, busrpc on both sides:
/// positional and named params, -32601 with no result, notifications run
/// and unanswered, and two clients' concurrent calls on the shared reply
/// topic each getting their own replies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busrpc_calls_busrpc_over_the_original_topics() {
    let url = "kafka-mock://pipeline-both?dialect=pipeline";
    let runs = Arc::new(AtomicUsize::new(0));
    let server = Server::new(pipeline(url).await, "both", router(runs.clone()))
        .start()
        .await
        .unwrap();
    let clients = [
        Client::connect(pipeline(url).await).await.unwrap(),
        Client::connect(pipeline(url).await).await.unwrap(),
    ];
    let one = &clients[0];
    assert_eq!(
        one.call::<String>("both", "echo", ("hello",))
            .await
            .unwrap(),
        "RPC hello!"
    );
    assert_eq!(
        one.call::<i64>("both", "add", json!({"a": 2, "b": 3}))
            .await
            .unwrap(),
        5
    );
    assert_eq!(one.call::<i64>("both", "add", (4, 5)).await.unwrap(), 9);
    let unknown = one
        .call::<Value>("both", "nosuch", ("x",))
        .await
        .unwrap_err();
    assert_eq!(unknown.rpc().map(RpcError::code), Some(-32601), "{unknown}");

    let before = runs.load(Ordering::SeqCst);
    one.notify("both", "echo", ("tick",)).await.unwrap();
    reaches(&runs, before + 1).await;

    let calls = clients.iter().enumerate().flat_map(|(c, client)| {
        (0..20).map(move |n| async move {
            let text = format!("{c}-{n}");
            let reply: String = client.call("both", "echo", (text.as_str(),)).await.unwrap();
            assert_eq!(reply, format!("RPC {text}!"));
        })
    });
    futures_util::future::join_all(calls).await;

    // The only topics are the original's.
    let address = server_address(url, "both").await;
    assert_eq!(address, "both_method_requests");
    for client in clients {
        client.close().await;
    }
    server.shutdown().await;
}

/// Two busrpc servers of one service, as in a rolling deploy: one holds the
/// partition and the other stands by, so every call runs and is answered
/// once (two of the original's receivers would both answer each); when the
/// holder stops under load, the other takes over, and still every call
/// runs once and is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_of_a_service_answer_each_call_once() {
    two_servers(
        "kafka-mock://pipeline-two?dialect=pipeline",
        "two",
        Replies::Once,
    )
    .await;
}

/// The same on the real broker (Tansu in scripts/test.sh; records one per
/// batch, as docs/PROTOCOL.md says Tansu 0.6.0 needs). Each call still
/// runs once, but a reply may reach its caller twice, who drops the second
/// (seen: 2 of 250 in one run in about ten, with every call run once):
/// Tansu 0.6.0 can answer a fetch with records already fetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_of_a_service_answer_each_call_once_on_a_real_broker() {
    let url = format!("{}&batch.num.messages=1", pipeline_url());
    let service = format!("two{}", std::process::id());
    two_servers(&url, &service, Replies::CopiesDropped).await;
}

/// What a caller may hear of each call beside its one answer.
#[derive(PartialEq)]
enum Replies {
    /// Nothing.
    Once,
    /// Copies of the answer, which it drops and counts.
    CopiesDropped,
}

async fn two_servers(url: &str, service: &str, replies: Replies) {
    let runs = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut servers = Vec::new();
    for runs in &runs {
        let server = Server::new(pipeline(url).await, service, router(runs.clone()))
            .start()
            .await
            .unwrap();
        servers.push(server);
    }
    let total = || runs.iter().map(|r| r.load(Ordering::SeqCst)).sum::<usize>();
    let client = Client::connect(pipeline(url).await)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(60));
    let calls = |from: u64, to: u64| {
        let (client, service) = (client.clone(), service.to_owned());
        async move {
            let service = service.as_str();
            let calls = (from..to).map(|n| {
                let client = &client;
                async move {
                    let reply: String = client
                        .call(service, "echo", (n.to_string(),))
                        .await
                        .unwrap();
                    assert_eq!(reply, format!("RPC {n}!"));
                }
            });
            futures_util::future::join_all(calls).await;
        }
    };
    calls(0, 50).await;
    assert_eq!(total(), 50, "each call ran once");
    let holder = usize::from(runs[0].load(Ordering::SeqCst) == 0);
    assert_eq!(
        runs[holder].load(Ordering::SeqCst),
        50,
        "the standby took nothing"
    );

    let load = tokio::spawn(calls(50, 250));
    reaches(&runs[holder], 60).await;
    servers.remove(holder).shutdown().await;
    load.await.unwrap();
    assert_eq!(total(), 250, "each call ran once across the handover");
    let stats = client.stats();
    assert_eq!(stats.replies, 250, "each call answered");
    if replies == Replies::Once {
        assert_eq!(stats.replies_dropped, 0, "each call answered once");
    }
    assert!(
        runs[1 - holder].load(Ordering::SeqCst) > 0,
        "the standby took over"
    );
    client.close().await;
    servers.remove(0).shutdown().await;
}

/// A request too large for the server to read is answered -32600 with a
/// null id, as the spec says; its record is keyed by the request's id all
/// the same, so that its caller, who matches by key, hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_to_read_is_answered_to_its_caller() {
    let url = "kafka-mock://pipeline-large?dialect=pipeline";
    let runs = Arc::new(AtomicUsize::new(0));
    let server = Server::new(pipeline(url).await, "large", router(runs.clone()))
        .with_config(ServerConfig::default().limits(Limits::default().max_message_bytes(1024)))
        .start()
        .await
        .unwrap();
    let client = Client::connect(pipeline(url).await).await.unwrap();
    let err = client
        .call::<String>("large", "echo", ("x".repeat(2000),))
        .await
        .unwrap_err();
    assert_eq!(err.rpc().map(RpcError::code), Some(-32600), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    client.close().await;
    server.shutdown().await;
}

async fn server_address(url: &str, service: &str) -> String {
    pipeline(url).await.service_address(service)
}

/// A server that stops commits what it answered under the group the
/// Python receivers use, and the next one (busrpc or Python) resumes
/// there: a call made while none serves is answered when one starts, and
/// no call answered before is run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_server_resumes_where_the_last_one_committed() {
    let url = "kafka-mock://pipeline-resume?dialect=pipeline";
    let runs = Arc::new(AtomicUsize::new(0));
    let first = Server::new(pipeline(url).await, "resume", router(runs.clone()))
        .start()
        .await
        .unwrap();
    let client = Client::connect(pipeline(url).await).await.unwrap();
    for n in 0..3 {
        let reply: String = client
            .call("resume", "echo", (n.to_string(),))
            .await
            .unwrap();
        assert_eq!(reply, format!("RPC {n}!"));
    }
    first.shutdown().await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    let waiting = {
        let client = client.with_timeout(Duration::from_secs(60));
        tokio::spawn(async move { client.call::<String>("resume", "echo", ("late",)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Server::new(pipeline(url).await, "resume", router(runs.clone()))
        .start()
        .await
        .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "RPC late!");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        4,
        "the calls answered before were not run again"
    );
    client.close().await;
    second.shutdown().await;
}

/// A busrpc client's calls to a receiver that never answers end by their
/// deadline, though the wire carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nobody_answers_times_out_by_its_deadline() {
    let url = "kafka-mock://pipeline-silent?dialect=pipeline";
    // A server that started once made the topics; none serves now.
    let server = Server::new(pipeline(url).await, "silent", router(Arc::default()))
        .start()
        .await
        .unwrap();
    server.shutdown().await;
    let client = Client::connect(pipeline(url).await).await.unwrap();
    let client = client.with_timeout(Duration::from_millis(500));
    let err = client
        .call::<String>("silent", "echo", ("x",))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let unserved = client
        .call::<String>("nobody", "echo", ("x",))
        .await
        .unwrap_err();
    assert!(
        unserved.to_string().contains("no service \"nobody\""),
        "{unserved}"
    );
}

fn python() -> Option<String> {
    let python = std::env::var("BUSRPC_PYTHON").ok();
    if python.is_none() {
        busrpc_conformance::cannot_run(
            "Python peers",
            "BUSRPC_PYTHON is not set (scripts/test.sh sets it)",
        );
    }
    python
}

fn bootstrap() -> String {
    crate::common::bootstrap(&kafka_url())
}

fn pipeline_url() -> String {
    let url = kafka_url();
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}dialect=pipeline")
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pipeline_peer.py");

/// Python callers of the original format, one thread each, against a
/// busrpc server: "RPC hello!", named and positional params, spec-correct
/// errors (-32601 with no result beside it, -32602), replies in the
/// original's key order, and concurrent callers each getting their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_callers_get_their_answers_from_a_busrpc_server() {
    let Some(python) = python() else { return };
    let service = format!("pycallers{}", std::process::id());
    let runs = Arc::new(AtomicUsize::new(0));
    let server = Server::new(pipeline(&pipeline_url()).await, &service, router(runs))
        .with_config(ServerConfig::default().limits(Limits::default().max_message_bytes(4096)))
        .start()
        .await
        .unwrap();
    let mut calls = vec![
        json!(["echo", ["hello"]]),
        json!(["add", {"a": 2, "b": 3}]),
        json!(["add", [4, 5]]),
        json!(["nosuch", ["hello"]]),
        json!(["add", ["x"]]),
        // Too large to read: answered with a null id, keyed by the call's.
        json!(["echo", ["x".repeat(5000)]]),
    ];
    calls.extend((0..8).map(|n| json!(["echo", [format!("concurrent {n}")]])));
    let output = tokio::process::Command::new(python)
        .args([
            PEER,
            "caller",
            &bootstrap(),
            &service,
            &Value::from(calls.clone()).to_string(),
        ])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replies: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(replies.len(), calls.len(), "{stdout}");
    let reply = |n: usize| &replies[n]["reply"];
    for (n, r) in replies.iter().enumerate() {
        let id = if n == 5 { &Value::Null } else { &r["id"] };
        assert_eq!(&r["reply"]["id"], id, "call {n} got its own reply: {r}");
        assert_eq!(r["reply"]["jsonrpc"], "2.0");
    }
    assert_eq!(replies[0]["keys"], json!(["jsonrpc", "id", "result"]));
    assert_eq!(reply(0)["result"], "RPC hello!");
    assert_eq!(reply(1)["result"], 5);
    assert_eq!(reply(2)["result"], 9);
    assert_eq!(
        replies[3]["keys"],
        json!(["jsonrpc", "id", "error"]),
        "no result beside the error"
    );
    assert_eq!(reply(3)["error"]["code"], -32601);
    assert_eq!(reply(4)["error"]["code"], -32602);
    assert_eq!(
        reply(4)["error"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["code", "message"]
    );
    assert_eq!(reply(5)["error"]["code"], -32600);
    for n in 0..8 {
        assert_eq!(reply(6 + n)["result"], format!("RPC concurrent {n}!"));
    }
    let topics = crate::common::topics(&kafka_url()).await;
    assert!(
        topics.contains(&format!("{service}_method_requests"))
            && topics.contains(&"method_results".to_owned())
    );
    assert!(
        !topics
            .iter()
            .any(|t| t.starts_with("busrpc.") && t.contains(&service)),
        "{topics:?}"
    );
    server.shutdown().await;
}

/// The Python receiver, running until the test ends.
struct Receiver {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Receiver {
    async fn start(python: &str, service: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(python)
            .args([PEER, "receiver", &bootstrap(), service])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let mut receiver = Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        };
        assert_eq!(receiver.line().await, "ready");
        receiver
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the receiver writes within 60 s")
            .unwrap()
            .expect("the receiver is running")
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Creates the original's topics for `service` (the original creates none).
async fn create_topics(service: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    let requests = format!("{service}_method_requests");
    let topics = [
        NewTopic::new(&requests, 1, TopicReplication::Fixed(1)),
        NewTopic::new("method_results", 1, TopicReplication::Fixed(1)),
    ];
    for result in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .unwrap()
    {
        if let Err((topic, code)) = result {
            assert_eq!(
                code,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "{topic}"
            );
        }
    }
}

/// A busrpc client against the Python receiver: its answer, named params,
/// the receiver's errors (its -32601 with a result beside it is the error),
/// two clients' concurrent calls each answered, and a call the receiver
/// takes too long over ending at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busrpc_client_calls_a_python_receiver() {
    let Some(python) = python() else { return };
    let service = format!("pyreceiver{}", std::process::id());
    create_topics(&service).await;
    let receiver = Receiver::start(&python, &service).await;
    let clients = [
        Client::connect(pipeline(&pipeline_url()).await)
            .await
            .unwrap(),
        Client::connect(pipeline(&pipeline_url()).await)
            .await
            .unwrap(),
    ];
    let one = &clients[0];
    assert_eq!(
        one.call::<String>(&service, "echo", ("hello",))
            .await
            .unwrap(),
        "RPC hello!"
    );
    assert_eq!(
        one.call::<i64>(&service, "add", json!({"a": 2, "b": 3}))
            .await
            .unwrap(),
        5
    );
    let unknown = one
        .call::<Value>(&service, "nosuch", ("hello",))
        .await
        .unwrap_err();
    assert_eq!(unknown.rpc().map(RpcError::code), Some(-32601), "{unknown}");
    let failed = one.call::<Value>(&service, "fail", ()).await.unwrap_err();
    let failed = failed.rpc().expect("an error reply");
    assert_eq!((failed.code(), failed.message()), (-32000, "it failed"));
    let wrong = one.call::<Value>(&service, "add", (1,)).await.unwrap_err();
    assert_eq!(wrong.rpc().map(RpcError::code), Some(-32602), "{wrong}");

    let calls = clients.iter().enumerate().flat_map(|(c, client)| {
        let service = &service;
        (0..10).map(move |n| async move {
            let text = format!("{c}-{n}");
            let reply: String = client
                .call(service, "echo", (text.as_str(),))
                .await
                .unwrap();
            assert_eq!(reply, format!("RPC {text}!"));
        })
    });
    futures_util::future::join_all(calls).await;

    let impatient = one.with_timeout(Duration::from_millis(300));
    let slow = impatient
        .call::<f64>(&service, "sleep", (2.0,))
        .await
        .unwrap_err();
    assert!(slow.is_timeout(), "{slow}");
    for client in clients {
        client.close().await;
    }
    receiver.stop().await;
}

/// Migrating a receiver: the Python receiver answers and is stopped, a
/// busrpc server takes its place under the same group and answers what
/// comes next (a call made while neither ran included) without running
/// again what the Python receiver answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busrpc_server_takes_over_from_a_python_receiver() {
    let Some(python) = python() else { return };
    let service = format!("pymigrate{}", std::process::id());
    create_topics(&service).await;
    let mut receiver = Receiver::start(&python, &service).await;
    let client = Client::connect(pipeline(&pipeline_url()).await)
        .await
        .unwrap();
    for n in 0..3 {
        let reply: String = client
            .call(&service, "echo", (n.to_string(),))
            .await
            .unwrap();
        assert_eq!(reply, format!("RPC {n}!"));
        assert!(receiver.line().await.contains("echo"));
    }
    receiver.stop().await;
    let waiting = {
        let client = client.with_timeout(Duration::from_secs(60));
        let service = service.clone();
        tokio::spawn(async move { client.call::<String>(&service, "echo", ("late",)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let server = Server::new(
        pipeline(&pipeline_url()).await,
        &service,
        router(runs.clone()),
    )
    .start()
    .await
    .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "RPC late!");
    assert_eq!(
        client
            .call::<String>(&service, "echo", ("next",))
            .await
            .unwrap(),
        "RPC next!"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "what the Python receiver answered is not run again"
    );
    client.close().await;
    server.shutdown().await;
}
