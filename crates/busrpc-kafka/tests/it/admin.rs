//! The operator's side (`Transport::admin`, what `busrpc status` and
//! `busrpc dlq` read): services found, partitions' ends and committed
//! offsets, dead letters listed and removed by a marker, and nothing
//! changed by looking: the group's committed offsets stay where they were.

use std::sync::Arc;
use std::time::{Duration, Instant};

use busrpc_core::transport::{Admin, DEAD_DELIVERIES};
use busrpc_core::{Client, ClientConfig, Router, RpcError, Server, Transport};
use busrpc_kafka::KafkaTransport;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{bootstrap, kafka_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_a_service_and_its_dead_letters_on_tansu() {
    let prefix = format!("admin-{}", std::process::id());
    let url = format!("{}?prefix={prefix}&partitions=2", kafka_url());
    let bootstrap = bootstrap(&url);
    let caller = KafkaTransport::connect(&url).await.unwrap();
    operator_reads(&url, &bootstrap, caller, |topic: String, partitions| {
        let bootstrap = bootstrap.clone();
        async move {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            let admin: AdminClient<_> = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .unwrap();
            let new = NewTopic::new(&topic, partitions, TopicReplication::Fixed(1));
            admin
                .create_topics([&new], &AdminOptions::new())
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_a_service_and_its_dead_letters_on_the_mock() {
    let parent = KafkaTransport::connect("kafka-mock://admin").await.unwrap();
    let cluster = parent.mock_cluster().unwrap().clone();
    let bootstrap = cluster.bootstrap_servers().to_owned();
    let url = format!("kafka://{bootstrap}?partitions=2");
    // The mock makes topics only through its own API (no CreateTopics):
    // the caller is the mock's transport, and the test makes the rest.
    operator_reads(&url, &bootstrap, parent, |topic, partitions| {
        let cluster = cluster.clone();
        async move { cluster.create_topic(&topic, partitions).unwrap() }
    })
    .await;
}

async fn operator_reads<F: std::future::Future<Output = ()>>(
    url: &str,
    bootstrap: &str,
    caller: KafkaTransport,
    create_topic: impl Fn(String, i32) -> F,
) {
    let transport = KafkaTransport::connect(url).await.unwrap();
    let admin: &dyn Admin = transport.admin().expect("the busrpc dialect has one");
    let service = "ledger";
    assert_eq!(
        admin.queue(service).await.unwrap(),
        None,
        "no such service yet"
    );
    let topic = transport.service_address(service);
    create_topic(topic.clone(), 2).await;

    let router = Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
    let server = Server::new(
        Arc::new(KafkaTransport::connect(url).await.unwrap()),
        service,
        router,
    )
    .start()
    .await
    .unwrap();
    let client = Client::connect_with(
        Arc::new(caller),
        ClientConfig::default().timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    for n in 0..6u64 {
        assert_eq!(client.call::<u64>(service, "echo", (n,)).await.unwrap(), n);
    }
    let services = admin.services().await.unwrap();
    assert_eq!(services, [service], "only the service: no inbox, no .dead");

    // Every answered request is committed in a moment: nothing waits.
    let give_up = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let state = admin.queue(service).await.unwrap().expect("a queue");
        if state.undelivered == Some(0) || Instant::now() > give_up {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(state.undelivered, Some(0), "{state:?}");
    assert_eq!(state.length, 6, "{state:?}");
    assert_eq!(state.partitions.len(), 2);
    let ends: i64 = state.partitions.iter().map(|p| p.end).sum();
    assert_eq!(ends, 6);
    assert!(
        state.partitions.iter().all(|p| p.lag() == Some(0)),
        "{state:?}"
    );
    assert_eq!(state.dead_letters, 0);
    // Reading the committed offsets joined nothing and moved nothing.
    assert_eq!(admin.queue(service).await.unwrap(), Some(state.clone()));

    // A dead letter, as a server writes one.
    let dead = format!("{topic}.dead");
    create_topic(dead.clone(), 1).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for n in [41, 42] {
        let payload = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":[{n}],"id":{n}}}"#);
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: DEAD_DELIVERIES,
            value: Some("4"),
        });
        producer
            .send(
                FutureRecord::<(), str>::to(&dead)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let letters = admin.dead_letters(service, 100).await.unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["0:0", "0:1"]);
    assert_eq!(letters[0].deliveries(), Some(4));
    assert!(letters[0].at.is_some());
    assert!(String::from_utf8_lossy(&letters[1].message.payload).contains("[42]"));
    assert_eq!(admin.queue(service).await.unwrap().unwrap().dead_letters, 2);
    assert_eq!(
        admin.services().await.unwrap(),
        [service],
        "the .dead topic is none"
    );

    // Removed: a marker, after which it is not listed; twice is no-op.
    assert!(admin.remove_dead_letter(service, "0:0").await.unwrap());
    assert!(!admin.remove_dead_letter(service, "0:0").await.unwrap());
    assert!(!admin.remove_dead_letter(service, "7:7").await.unwrap());
    let left: Vec<String> = admin
        .dead_letters(service, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, ["0:1"]);
    assert_eq!(admin.queue(service).await.unwrap().unwrap().dead_letters, 1);
    client.close().await;
    server.shutdown().await;
}
