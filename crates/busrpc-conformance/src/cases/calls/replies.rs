//! Calls and their replies: results, typed errors, notifications, batches,
//! contexts and codecs, as a busrpc client sees them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use busrpc_core::codec::{Codec, MSGPACK};
use busrpc_core::{header, ClientConfig, Error, RpcError, ServerConfig};
use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::fixture::{client, patient, serve, wait_until, RawPeer};
use crate::harness::{unique_service, Harness};

/// A call, its exact response: positional, named, typed, no params.
pub async fn call_and_response(h: &dyn Harness) {
    let service = unique_service("call");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let reply: String = client
        .call(&service, "echo", ("hello",))
        .await
        .expect("echo");
    assert_eq!(reply, "RPC hello!");
    let by_position: i64 = client
        .call(&service, "subtract", (42, 23))
        .await
        .expect("by position");
    let by_name: i64 = client
        .call(
            &service,
            "subtract",
            json!({"subtrahend": 23, "minuend": 42}),
        )
        .await
        .expect("by name");
    assert_eq!((by_position, by_name), (19, 19));
    let data: (String, i64) = client
        .call(&service, "get_data", ())
        .await
        .expect("no params");
    assert_eq!(data, ("hello".to_owned(), 5));
    let stats = server.handle.stats();
    assert_eq!((stats.calls, stats.errors), (4, 0));
    assert_eq!(client.stats().replies, 4);
    client.close().await;
    server.handle.shutdown().await;
}

/// A handler that asks for its context sees the method, the id, the
/// caller's headers, the deadline, (where the broker counts) that this is
/// the first delivery, and the name of the server instance running it.
pub async fn handlers_see_their_context(h: &dyn Harness) {
    let service = unique_service("context");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h)))
        .await
        .with_header("x-conformance", "yes");
    let seen: Value = client.call(&service, "context", ()).await.expect("context");
    assert_eq!(seen["method"], "context");
    assert_eq!(seen["header"], "yes");
    assert_eq!(seen["has_deadline"], true);
    assert!(seen["id"].is_string(), "{seen}");
    assert!(
        seen["attempt"].is_null() || seen["attempt"] == 1,
        "a first delivery: {seen}"
    );
    assert_eq!(seen["server"], server.handle.name(), "{seen}");
    assert!(!server.handle.name().is_empty());
    client.close().await;
    server.handle.shutdown().await;
}

/// -32601, -32602 (saying what was wrong), application errors with data.
pub async fn typed_errors_reach_the_caller(h: &dyn Harness) {
    let service = unique_service("errors");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;

    let err = client
        .call::<Value>(&service, "nope", ())
        .await
        .unwrap_err();
    assert_eq!(err.rpc(), Some(&RpcError::method_not_found()), "{err}");

    let err = client
        .call::<i64>(&service, "subtract", ("x", 1))
        .await
        .unwrap_err();
    let rpc = err.rpc().expect("an RPC error");
    assert_eq!(rpc.code(), -32602);
    assert!(
        rpc.message()
            .contains("invalid type: string \"x\", expected i64"),
        "{rpc}"
    );

    let err = client
        .call::<i64>(&service, "subtract", json!({"minuend": 1}))
        .await
        .unwrap_err();
    assert!(
        err.rpc()
            .unwrap()
            .message()
            .contains("missing field `subtrahend`"),
        "{err}"
    );

    let err = client
        .call::<()>(&service, "fail", (4001,))
        .await
        .unwrap_err();
    let rpc = err.rpc().unwrap();
    assert_eq!((rpc.code(), rpc.message()), (4001, "it failed"));
    assert_eq!(rpc.data().map(|d| d.get()), Some(r#"{"why":"asked to"}"#));

    // The result of the wrong type is the caller's error, not the server's.
    let err = client
        .call::<i64>(&service, "echo", ("x",))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");

    assert_eq!(server.handle.stats().errors, 4);
    server.handle.shutdown().await;
}

/// A notification runs and gets no reply.
pub async fn notification_gets_no_reply(h: &dyn Harness) {
    let service = unique_service("notify");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    client
        .notify(&service, "update", [1, 2, 3])
        .await
        .expect("notify");
    wait_until("the notification ran", patient(h), || {
        server.handle.stats().notifications == 1
    })
    .await;
    // A call after it is answered, and no reply to the notification arrived.
    let three: i64 = client.call(&service, "sum", [1, 2]).await.expect("call");
    assert_eq!(three, 3);
    let stats = client.stats();
    assert_eq!((stats.replies, stats.replies_dropped), (1, 0));
    server.handle.shutdown().await;
}

/// A batch of calls and notifications through the client, results by call.
pub async fn client_batch(h: &dyn Harness) {
    let service = unique_service("batch");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let mut batch = client.batch(&service);
    let sum = batch.call("sum", [1, 2, 4]).unwrap();
    batch.notify("notify_hello", [7]).unwrap();
    let missing = batch.call("foo.get", json!({"name": "myself"})).unwrap();
    let echo = batch.call("echo", ("batch",)).unwrap();
    assert_eq!(batch.len(), 4);
    let replies = batch.send().await.expect("batch answered");
    assert_eq!(replies.len(), 3);
    assert_eq!(replies.get::<i64>(sum).unwrap(), 7);
    assert_eq!(replies.get::<String>(echo).unwrap(), "RPC batch!");
    assert_eq!(
        replies
            .get::<Value>(missing)
            .unwrap_err()
            .rpc()
            .unwrap()
            .code(),
        -32601
    );

    let mut only_notifications = client.batch(&service);
    only_notifications.notify("update", [1]).unwrap();
    assert!(only_notifications.send().await.unwrap().is_empty());
    assert!(
        matches!(client.batch(&service).send().await, Err(Error::Encode(_))),
        "an empty batch is refused"
    );
    wait_until("both notifications ran", patient(h), || {
        server.handle.stats().notifications == 2
    })
    .await;
    server.handle.shutdown().await;
}

/// 10 clients x 200 concurrent calls to 3 server instances: every reply
/// reaches its own caller, and every instance does some of the work.
pub async fn concurrent_clients_reach_their_own_replies(h: &dyn Harness) {
    const CLIENTS: u32 = 10;
    const CALLS: u32 = 200;
    let service = unique_service("concurrent");
    let config = ServerConfig::default().concurrency(32);
    let servers = [
        serve(h, &service, "a", config.clone()).await,
        serve(h, &service, "b", config.clone()).await,
        serve(h, &service, "c", config).await,
    ];
    // Every instance must be a member before the load: a Kafka group hands
    // partitions to late joiners only in a rebalance. Call until each
    // instance has answered once.
    let warm = client(h, ClientConfig::default().timeout(patient(h))).await;
    let joined_within = patient(h) + h.capabilities().redelivery.unwrap_or_default();
    let give_up = tokio::time::Instant::now() + joined_within;
    let mut seen = std::collections::BTreeSet::new();
    for n in 0.. {
        let (_, _, label): (u32, u32, String) = warm
            .call(&service, "whoami", (u32::MAX, n))
            .await
            .expect("a warm-up call");
        seen.insert(label);
        if seen.len() == servers.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "only {seen:?} took calls within {joined_within:?}: the others never joined"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before: Vec<u64> = servers.iter().map(|s| s.handle.stats().calls).collect();

    let clients =
        join_all((0..CLIENTS).map(|_| client(h, ClientConfig::default().timeout(patient(h) * 3))))
            .await;
    let answered = Arc::new(Mutex::new(BTreeMap::<String, u32>::new()));
    join_all(clients.iter().enumerate().map(|(i, client)| {
        let (service, answered) = (&service, answered.clone());
        async move {
            let i = u32::try_from(i).unwrap();
            let replies = join_all(
                (0..CALLS).map(|j| client.call::<(u32, u32, String)>(service, "whoami", (i, j))),
            )
            .await;
            for (j, reply) in replies.into_iter().enumerate() {
                let (ci, cj, server) = reply.unwrap_or_else(|e| panic!("client {i} call {j}: {e}"));
                assert_eq!(
                    (ci, cj),
                    (i, u32::try_from(j).unwrap()),
                    "a reply reached the wrong caller"
                );
                *answered.lock().unwrap().entry(server).or_default() += 1;
            }
            let stats = client.stats();
            assert_eq!(
                (stats.calls, stats.replies, stats.replies_dropped),
                (u64::from(CALLS), u64::from(CALLS), 0)
            );
        }
    }))
    .await;
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.values().sum::<u32>(), CLIENTS * CALLS);
    for (server, before) in servers.iter().zip(before) {
        let calls = server.handle.stats().calls - before;
        assert!(
            calls > 0,
            "instance {} did no work: {answered:?}",
            server.probe.label
        );
        assert_eq!(
            answered.get(server.probe.label).copied().unwrap_or(0),
            u32::try_from(calls).unwrap()
        );
    }
    for server in servers {
        server.handle.shutdown().await;
    }
}

/// MessagePack in, MessagePack out, chosen by content type.
pub async fn msgpack_calls(h: &dyn Harness) {
    let service = unique_service("msgpack");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(
        h,
        ClientConfig::default()
            .codec(Codec::MessagePack)
            .timeout(patient(h)),
    )
    .await;
    let reply: String = client
        .call(&service, "echo", ("packed",))
        .await
        .expect("msgpack call");
    assert_eq!(reply, "RPC packed!");

    let mut peer = RawPeer::new(h, &service).await;
    let payload = Codec::MessagePack
        .encode(br#"{"jsonrpc":"2.0","method":"sum","params":[2,3],"id":7}"#.to_vec())
        .unwrap();
    peer.send(
        peer.request(payload)
            .with_header(header::CONTENT_TYPE, MSGPACK),
    )
    .await;
    let reply = peer.next_reply().await;
    assert_eq!(reply.headers.get(header::CONTENT_TYPE), Some(MSGPACK));
    let json = Codec::MessagePack.decode(&reply.payload).unwrap();
    assert_eq!(
        std::str::from_utf8(&json).unwrap(),
        r#"{"jsonrpc":"2.0","result":5,"id":7}"#
    );
    server.handle.shutdown().await;
}
