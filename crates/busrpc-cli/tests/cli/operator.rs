//! `busrpc status` and `busrpc dlq` against a real broker: a request
//! poisoned in this process (taken by consumers that go away with it until
//! it is delivered too often), seen by `status` and `dlq list`, replayed
//! once its handler works and answered once; another purged. `status`
//! must change nothing it looks at.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrpc::transport::{Demand, REPLAY_OF};
use busrpc::{Client, ClientConfig, Context, Error, Router, RpcError, Server, Transport};
use futures_util::StreamExt;
use serde_json::Value;

use super::busrpc;

/// Runs the command; its exit code and stdout.
fn run(args: &[&str]) -> (i32, String) {
    let out = busrpc().args(args).output().expect("busrpc runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("$ busrpc {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout)
}

/// Two requests of `service` delivered more than `max_deliveries` (1)
/// times and dead-lettered by a server whose `work` counts its runs; their
/// callers hear -32001.
async fn poison_two(url: &str, service: &str, runs: Arc<AtomicU64>) -> busrpc::ServerHandle {
    let transport = busrpc::connect(url).await.unwrap();
    let address = transport.service_address(service);
    // The group exists (only a server creates it); nobody reads yet.
    transport
        .consume(&address, service, Demand::unbounded())
        .await
        .unwrap()
        .close()
        .await;
    let caller = Client::connect_with(
        transport.clone(),
        ClientConfig::default()
            .timeout(Duration::from_secs(30))
            .wait_for_servers(),
    )
    .await
    .unwrap();
    let calls: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|text| {
            let caller = caller.clone();
            let service = service.to_owned();
            tokio::spawn(async move { caller.call::<String>(&service, "work", (text,)).await })
        })
        .collect();
    // A consumer takes both and goes away with them.
    {
        let taker = busrpc::connect(url).await.unwrap();
        let mut taken = taker
            .consume(&address, service, Demand::unbounded())
            .await
            .unwrap();
        for _ in 0..2 {
            let delivery = tokio::time::timeout(Duration::from_secs(10), taken.next())
                .await
                .expect("delivered")
                .expect("a delivery")
                .expect("no error");
            std::mem::forget(delivery);
        }
        drop(taken);
    }
    let router = Router::new().method("work", move |ctx: Context, (text,): (String,)| {
        runs.fetch_add(1, Ordering::SeqCst);
        let replay_of = ctx.headers().get(REPLAY_OF).unwrap_or("none").to_owned();
        async move { Ok::<_, RpcError>(format!("worked on {text} (replay of {replay_of})")) }
    });
    let server = Server::new(busrpc::connect(url).await.unwrap(), service, router)
        .start()
        .await
        .unwrap();
    for call in calls {
        match call.await.unwrap() {
            Err(Error::Rpc(e)) => assert_eq!(e.code(), busrpc::jsonrpc::DEAD_LETTER_CODE),
            other => panic!("the caller hears of its dead letter: {other:?}"),
        }
    }
    server
}

#[test]
fn status_shows_a_dead_letter_and_dlq_replays_it_once_on_redis() {
    let prefix = format!("cli-dlq-{}", std::process::id());
    let url = format!(
        "{}?prefix={prefix}&max_deliveries=1&claim_idle_ms=300&block_ms=200",
        super::redis_url()
    );
    let service = "ledger";
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let (code, out) = run(&["status", "--broker", &url, service]);
    assert_eq!((code, out.trim()), (6, "ledger: no such service"));

    let runs = Arc::new(AtomicU64::new(0));
    let server = runtime.block_on(poison_two(&url, service, runs.clone()));
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a dead letter never runs");
    let admin_of = busrpc_transport(&runtime, &url);
    let admin = admin_of.admin().expect("Redis has an admin side");
    let before = runtime.block_on(admin.queue(service)).unwrap();
    let members_before = runtime
        .block_on(admin_of.members(&admin_of.service_address(service), service))
        .unwrap();

    let (code, out) = run(&["status", "--broker", &url, service, "--json"]);
    assert_eq!(code, 1, "degraded: dead letters wait");
    let status: Value = serde_json::from_str(&out).unwrap();
    let ledger = &status["services"][0];
    assert_eq!(ledger["verdict"], "degraded");
    assert_eq!(ledger["queue"]["dead_letters"], 2);
    assert_eq!(ledger["servers"][0]["name"], server.name());
    let (code, out) = run(&["status", "--broker", &url]);
    assert_eq!(code, 1);
    assert!(out.starts_with("ledger: degraded\n"), "{out}");
    assert!(out.contains("2 dead letters"), "{out}");
    // Looking changed nothing.
    assert_eq!(runtime.block_on(admin.queue(service)).unwrap(), before);
    let members_after = runtime
        .block_on(admin_of.members(&admin_of.service_address(service), service))
        .unwrap();
    let names = |m: Option<Vec<busrpc::transport::Member>>| {
        m.unwrap().into_iter().map(|m| m.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(members_after),
        names(members_before),
        "status joined nothing"
    );

    let (code, out) = run(&["dlq", "list", "--broker", &url, service, "--json"]);
    assert_eq!(code, 0);
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed
        .iter()
        .all(|l| l["method"] == "work" && l["deliveries"] == 2));
    let first = listed[0]["id"].as_str().unwrap().to_owned();
    let second = listed[1]["id"].as_str().unwrap().to_owned();
    let (code, out) = run(&["dlq", "list", "--broker", &url, service]);
    assert_eq!(code, 0);
    assert!(out.contains(&first) && out.contains("work"), "{out}");

    let (code, out) = run(&["dlq", "show", "--broker", &url, service, &first]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    // Which call was published first is the runtime's choice.
    let text = shown["request"]["params"][0].as_str().unwrap().to_owned();
    assert!(["first", "second"].contains(&text.as_str()), "{shown}");
    assert_eq!(shown["headers"]["dead-deliveries"], "2");

    // The handler works now: the replay is answered, and runs once.
    let (code, out) = run(&["dlq", "replay", "--broker", &url, service, &first]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        format!("{first}: answered \"worked on {text} (replay of {first})\"")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let (code, _) = run(&["dlq", "purge", "--broker", &url, service]);
    assert_eq!(code, 2, "purge wants --yes");
    let (code, out) = run(&["dlq", "purge", "--broker", &url, service, "--yes"]);
    assert_eq!((code, out.trim()), (0, "purged 1 dead letters of ledger"));
    let (code, out) = run(&["dlq", "list", "--broker", &url, service]);
    assert_eq!((code, out.trim()), (0, "no dead letters"));
    let (code, _) = run(&["dlq", "show", "--broker", &url, service, &second]);
    assert_eq!(code, 6, "purged");

    let (code, out) = run(&["status", "--broker", &url, service]);
    assert_eq!(code, 0, "serving again");
    assert!(out.starts_with("ledger: serving\n"), "{out}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the purged one never ran");
    runtime.block_on(server.shutdown());
    let (code, out) = run(&["status", "--broker", &url, service]);
    assert_eq!(code, 7, "nobody serving: {out}");
}

fn busrpc_transport(runtime: &tokio::runtime::Runtime, url: &str) -> Arc<dyn Transport> {
    runtime.block_on(busrpc::connect(url)).unwrap()
}
