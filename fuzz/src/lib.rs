//! What the fuzz targets share: the methods they serve, and checks on what
//! comes out.

use busrpc_core::{Router, RpcError};
use serde::Deserialize;

#[derive(Deserialize)]
struct Subtract {
    minuend: i64,
    subtrahend: i64,
}

/// Methods of every params shape: by position, by name, a tuple, none.
pub fn router() -> Router {
    Router::new()
        .method("subtract", |p: Subtract| async move {
            Ok::<_, RpcError>(p.minuend.wrapping_sub(p.subtrahend))
        })
        .method("sum", |p: Vec<i64>| async move {
            Ok::<_, RpcError>(p.iter().fold(0i64, |a, b| a.wrapping_add(*b)))
        })
        .method("echo", |(text,): (String,)| async move {
            Ok::<_, RpcError>(text)
        })
        .method("get_data", |(): ()| async move {
            Ok::<_, RpcError>(serde_json::json!(["hello", 5]))
        })
        .method("fail", |(code,): (i32,)| async move {
            Err::<(), _>(RpcError::new(code, "failed").with_data(&[1, 2, 3]))
        })
}

/// Panics unless `response` is one JSON-RPC response object or a non-empty
/// array of them, as the specification allows a server to send. Members
/// stay raw: an id is echoed as sent, and JSON puts no bound on a number
/// (`1e400`) or on nesting that a `Value` would.
pub fn assert_response(response: &[u8]) {
    use std::collections::BTreeMap;

    use serde_json::value::RawValue;

    let text = std::str::from_utf8(response).expect("a response is UTF-8");
    let one = |object: &str| {
        let members: BTreeMap<String, Box<RawValue>> = serde_json::from_str(object)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {object}"));
        assert_eq!(
            members.get("jsonrpc").map(|v| v.get()),
            Some("\"2.0\""),
            "{object}"
        );
        assert!(members.contains_key("id"), "a response has an id: {object}");
        assert!(
            members.contains_key("result") != members.contains_key("error"),
            "a result or an error, not both: {object}"
        );
    };
    if text.starts_with('[') {
        let all: Vec<Box<RawValue>> =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array ({e}): {text}"));
        assert!(!all.is_empty(), "an empty batch response");
        all.iter().for_each(|element| one(element.get()));
    } else {
        one(text);
    }
}
