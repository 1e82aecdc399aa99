//! The examples of section 7 of the JSON-RPC 2.0 specification, as a
//! foreign client sends them, against exact reply strings.

use busrpc_core::ServerConfig;

use crate::fixture::{assert_same_batch, serve, RawPeer};
use crate::harness::{unique_service, Harness};

/// Section 7: `subtract` with positional parameters.
pub async fn spec_positional_params(h: &dyn Harness) {
    let service = unique_service("spec-pos");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":19,"id":1}"#
    );
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":-19,"id":2}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: `subtract` with named parameters.
pub async fn spec_named_params(h: &dyn Harness) {
    let service = unique_service("spec-named");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":19,"id":3}"#
    );
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#)
            .await,
        r#"{"jsonrpc":"2.0","result":19,"id":4}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: notifications, to a method that exists and one that does not.
pub async fn spec_notifications(h: &dyn Harness) {
    let service = unique_service("spec-notify");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    peer.send(peer.request(r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#))
        .await;
    peer.send(peer.request(r#"{"jsonrpc": "2.0", "method": "foobar"}"#))
        .await;
    peer.assert_silence(&server.handle, 2).await;
    assert_eq!(server.handle.stats().notifications, 2);
    server.handle.shutdown().await;
}

/// Section 7: a call of a method that does not exist.
pub async fn spec_unknown_method(h: &dyn Harness) {
    let service = unique_service("spec-unknown");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"1"}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: invalid JSON.
pub async fn spec_invalid_json(h: &dyn Harness) {
    let service = unique_service("spec-json");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an invalid Request object.
pub async fn spec_invalid_request(h: &dyn Harness) {
    let service = unique_service("spec-invalid");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#)
            .await,
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: a batch that is invalid JSON.
pub async fn spec_batch_invalid_json(h: &dyn Harness) {
    let service = unique_service("spec-batch-json");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let payload = "[\n  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n  {\"jsonrpc\": \"2.0\", \"method\"\n]";
    assert_eq!(
        peer.ask(payload).await,
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an empty array.
pub async fn spec_empty_array(h: &dyn Harness) {
    let service = unique_service("spec-empty");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask("[]").await,
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an invalid batch, but not empty.
pub async fn spec_invalid_batch_not_empty(h: &dyn Harness) {
    let service = unique_service("spec-batch-one");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    assert_eq!(
        peer.ask("[1]").await,
        r#"[{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}]"#
    );
    server.handle.shutdown().await;
}

/// Section 7: an invalid batch.
pub async fn spec_invalid_batch(h: &dyn Harness) {
    let service = unique_service("spec-batch-three");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let invalid =
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#;
    assert_same_batch(&peer.ask("[1,2,3]").await, &[invalid, invalid, invalid]);
    server.handle.shutdown().await;
}

/// Section 7: a batch of calls, a notification and invalid entries.
pub async fn spec_batch(h: &dyn Harness) {
    let service = unique_service("spec-batch");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let payload = r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#;
    assert_same_batch(
        &peer.ask(payload).await,
        &[
            r#"{"jsonrpc":"2.0","result":7,"id":"1"}"#,
            r#"{"jsonrpc":"2.0","result":19,"id":"2"}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}"#,
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"5"}"#,
            r#"{"jsonrpc":"2.0","result":["hello",5],"id":"9"}"#,
        ],
    );
    assert_eq!(server.handle.stats().notifications, 1);
    server.handle.shutdown().await;
}

/// Section 7: a batch of notifications only gets no response at all.
pub async fn spec_batch_all_notifications(h: &dyn Harness) {
    let service = unique_service("spec-batch-notify");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let payload = r#"[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]"#;
    peer.send(peer.request(payload)).await;
    peer.assert_silence(&server.handle, 1).await;
    assert_eq!(server.handle.stats().notifications, 2);
    server.handle.shutdown().await;
}
