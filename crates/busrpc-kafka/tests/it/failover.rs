//! Leader failover on a three-broker mock cluster, under load: the leaders
//! of the request topic's partitions and of the client's inbox move to
//! other brokers, or a broker of three goes down for a while; no call is
//! lost and none runs twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::{Client, ClientConfig, Router, RpcError, Server, ServerHandle, Transport};
use busrpc_kafka::{KafkaTransport, MockBrokers};

/// How often each call ran, by its number.
type Runs = Arc<Mutex<HashMap<u64, u32>>>;

const PARTITIONS: i32 = 3;

fn mock_url(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "kafka-mock://failover-{test}-{}?brokers=3&partitions={PARTITIONS}&join_wait_ms=60000",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A server counting the runs of `work(n)` (which takes 5 ms).
async fn server(url: &str, runs: &Runs) -> ServerHandle {
    let runs = runs.clone();
    let router = Router::new().method("work", move |(n,): (u64,)| {
        *runs.lock().unwrap().entry(n).or_default() += 1;
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, RpcError>(n)
        }
    });
    let transport = Arc::new(
        KafkaTransport::connect(url)
            .await
            .expect("the mock cluster"),
    );
    Server::new(transport, "svc", router)
        .start()
        .await
        .expect("a server")
}

/// The cluster of `url` with the service's topic made and every partition
/// (and the group's coordinator) on broker 1; two servers, and a client
/// whose inbox is led by broker 1 too.
async fn setup(url: &str, runs: &Runs) -> (Arc<MockBrokers>, Vec<ServerHandle>, Client, String) {
    let first = KafkaTransport::connect(url)
        .await
        .expect("the mock cluster");
    let cluster = first.mock_cluster().expect("a mock cluster").clone();
    let topic = first.service_address("svc");
    cluster.create_topic(&topic, PARTITIONS).unwrap();
    // The coordinator stays on broker 3, which never goes down here: what
    // is proven is the data's failover, not the group's.
    cluster.group_coordinator(&topic, 3).unwrap();
    for partition in 0..PARTITIONS {
        cluster.partition_leader(&topic, partition, 1).unwrap();
    }
    let servers = vec![server(url, runs).await, server(url, runs).await];
    let client = Client::connect_with(
        Arc::new(KafkaTransport::connect(url).await.unwrap()),
        ClientConfig::default().timeout(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    cluster
        .partition_leader(client.inbox_address(), 0, 1)
        .unwrap();
    // Served before the load: both servers in the group.
    for n in 0..20 {
        assert_eq!(client.call::<u64>("svc", "work", (n,)).await.unwrap(), n);
    }
    (cluster, servers, client, topic)
}

/// `calls` calls from `from`, 10 ms apart, all in flight together.
fn load(client: &Client, from: u64, calls: u64) -> tokio::task::JoinHandle<Vec<(u64, u64)>> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for n in from..from + calls {
            let client = client.clone();
            tasks.spawn(async move {
                let got = client.call::<u64>("svc", "work", (n,)).await;
                (n, got.unwrap_or_else(|e| panic!("call {n} lost: {e}")))
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut answers = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            answers.push(answer.expect("a call's task"));
        }
        answers
    })
}

/// Every call of `from..from + calls` answered with its own number, and
/// every call of the run run exactly once.
fn check(answers: Vec<(u64, u64)>, from: u64, calls: u64, runs: &Runs) {
    assert_eq!(answers.len() as u64, calls);
    for (n, got) in answers {
        assert_eq!(got, n, "call {n} got another's answer");
    }
    let runs = runs.lock().unwrap();
    let twice: Vec<_> = runs.iter().filter(|(_, r)| **r > 1).collect();
    assert!(twice.is_empty(), "calls run more than once: {twice:?}");
    let missing: Vec<u64> = (from..from + calls)
        .filter(|n| !runs.contains_key(n))
        .collect();
    assert!(missing.is_empty(), "calls never run: {missing:?}");
}

/// The leaders of every request partition, then of the inbox, move to
/// another broker while 300 calls are in flight, and back: every call is
/// answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_moving_under_load_lose_no_call_and_run_none_twice() {
    busrpc_conformance::log_if_asked();
    let runs = Runs::default();
    let (cluster, servers, client, topic) = setup(&mock_url("move"), &runs).await;
    let answers = load(&client, 100, 300);
    tokio::time::sleep(Duration::from_millis(800)).await;
    for partition in 0..PARTITIONS {
        cluster.partition_leader(&topic, partition, 2).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster
        .partition_leader(client.inbox_address(), 0, 3)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    for partition in 0..PARTITIONS {
        cluster.partition_leader(&topic, partition, 1).unwrap();
    }
    check(answers.await.unwrap(), 100, 300, &runs);
    client.close().await;
    for server in servers {
        server.shutdown().await;
    }
}

/// The broker leading the request partitions and the inbox goes down for
/// 10 s while calls are in flight (the mock moves no leader: what it led
/// waits for it), then comes back: every call is answered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_down_for_ten_seconds_loses_no_call_and_runs_none_twice() {
    busrpc_conformance::log_if_asked();
    let runs = Runs::default();
    let (cluster, servers, client, _) = setup(&mock_url("down"), &runs).await;
    let answers = load(&client, 100, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.broker_up(1).unwrap();
    check(answers.await.unwrap(), 100, 200, &runs);
    client.close().await;
    for server in servers {
        server.shutdown().await;
    }
}
