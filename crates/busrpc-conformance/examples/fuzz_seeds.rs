//! Writes the fuzz targets' seed corpora (scripts/fuzz.sh runs it): the
//! JSON-RPC 2.0 specification's examples and every message of the
//! hostile-input catalogue, shaped for each target in `fuzz/`.
//!
//! usage: cargo run -p busrpc-conformance --example fuzz_seeds -- fuzz/corpus

use std::path::Path;

use busrpc_conformance::hostile::catalogue;
use busrpc_core::codec::{Codec, MSGPACK};
use busrpc_core::{header, Message};

/// Section 7 of the specification: requests, and the responses to them.
const SPEC_REQUESTS: &[&str] = &[
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#,
    r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#,
    r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#,
    r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#,
    r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
    r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
    "[\n  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n  {\"jsonrpc\": \"2.0\", \"method\"\n]",
    "[]",
    "[1]",
    "[1,2,3]",
    r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}, {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"}, {"foo": "boo"}, {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"}, {"jsonrpc": "2.0", "method": "get_data", "id": "9"}]"#,
    r#"[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]"#,
];

const SPEC_RESPONSES: &[&str] = &[
    r#"{"jsonrpc": "2.0", "result": 19, "id": 1}"#,
    r#"{"jsonrpc": "2.0", "result": -19, "id": 2}"#,
    r#"{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}"#,
    r#"{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}"#,
    r#"[{"jsonrpc": "2.0", "result": 7, "id": "1"}, {"jsonrpc": "2.0", "result": 19, "id": "2"}, {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}, {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}]"#,
    r#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"x","data":{"why":[1]}},"id":0}"#,
];

/// A server's selector byte (see fuzz/fuzz_targets/server.rs): MessagePack,
/// reply-to, deadline.
fn selector(message: &Message) -> u8 {
    let mut bits = 0;
    if message.headers.get(header::CONTENT_TYPE) == Some(MSGPACK) {
        bits |= 1;
    }
    if message.headers.get(header::REPLY_TO).is_some() {
        bits |= 2;
    }
    if message.headers.get(header::DEADLINE).is_some() {
        bits |= 4;
    }
    bits
}

/// An XREADGROUP reply in RESP2 holding `entries` (fields and values).
fn resp_reply(entries: &[Vec<(&str, &[u8])>]) -> Vec<u8> {
    fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    let mut out = b"*1\r\n*2\r\n".to_vec();
    bulk(&mut out, b"busrpc:svc");
    out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
    for (n, fields) in entries.iter().enumerate() {
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, format!("1700000000000-{n}").as_bytes());
        out.extend_from_slice(format!("*{}\r\n", fields.len() * 2).as_bytes());
        for (name, value) in fields {
            bulk(&mut out, name.as_bytes());
            bulk(&mut out, value);
        }
    }
    out
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_owned());
    let root = Path::new(&root);
    let mut written = 0;
    let mut write = |target: &str, name: String, bytes: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        written += 1;
        std::fs::write(dir.join(name), bytes)
    };
    let pack = |json: &str| Codec::MessagePack.encode(json.as_bytes().to_vec()).ok();
    for (n, request) in SPEC_REQUESTS.iter().enumerate() {
        write("request", format!("spec-{n}"), request.as_bytes())?;
        write(
            "server",
            format!("spec-{n}"),
            &[[2].as_slice(), request.as_bytes()].concat(),
        )?;
        if let Some(packed) = pack(request) {
            write("msgpack", format!("spec-{n}"), &packed)?;
            write(
                "server",
                format!("spec-packed-{n}"),
                &[[3].as_slice(), &packed].concat(),
            )?;
        }
    }
    for (n, response) in SPEC_RESPONSES.iter().enumerate() {
        write(
            "responses",
            format!("spec-{n}"),
            &[[0].as_slice(), response.as_bytes()].concat(),
        )?;
        if let Some(packed) = pack(response) {
            write(
                "responses",
                format!("spec-packed-{n}"),
                &[[1].as_slice(), &packed].concat(),
            )?;
        }
    }
    let cases = catalogue("busrpc:inbox:fuzz", "busrpc:fuzz");
    for (n, case) in cases.iter().enumerate() {
        let payload = &case.message.payload;
        let bits = selector(&case.message);
        let target = if bits & 1 == 1 { "msgpack" } else { "request" };
        write(target, format!("hostile-{n}"), payload)?;
        write(
            "server",
            format!("hostile-{n}"),
            &[[bits].as_slice(), payload].concat(),
        )?;
        let mut fields: Vec<(&str, &[u8])> = vec![("payload", &payload[..])];
        fields.extend(case.message.headers.iter().map(|(n, v)| (n, v.as_bytes())));
        write(
            "redis_entries",
            format!("hostile-{n}"),
            &resp_reply(&[fields]),
        )?;
    }
    write("redis_entries", "empty".to_owned(), &resp_reply(&[]))?;
    println!("{written} seeds written under {}", root.display());
    Ok(())
}
