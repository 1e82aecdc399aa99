//! Bad input: malformed, truncated, mislabelled or stray messages get their
//! exact answer (or, with nowhere to answer, are counted) and break nothing.

use busrpc_core::codec::{Codec, MSGPACK};
use busrpc_core::{header, ClientConfig, Limits, Message, ServerConfig};

use crate::fixture::{client, patient, serve, wait_until, RawPeer};
use crate::harness::{unique_service, Harness};

/// Garbage with nowhere to reply to is counted, dropped and acknowledged; the
/// server goes on.
pub async fn bad_input_without_reply_to_is_counted_and_dropped(h: &dyn Harness) {
    let service = unique_service("garbage");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    peer.send(Message::new(&b"\xff\xfe not json"[..])).await;
    peer.send(Message::new(
        r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":1}"#,
    ))
    .await;
    wait_until("both were dropped", patient(h), || {
        server.handle.stats().dropped == 2
    })
    .await;
    peer.assert_silence(&server.handle, 2).await;
    // A reply is published before its request is acknowledged.
    wait_until(
        "the two and the sentinel are acknowledged",
        patient(h),
        || server.handle.stats().acked == 3,
    )
    .await;
    assert_eq!(server.handle.stats().released, 0);
    server.handle.shutdown().await;
}

/// An encoding busrpc does not speak is answered -32700, in JSON.
pub async fn unsupported_content_type_is_a_parse_error(h: &dyn Harness) {
    let service = unique_service("content-type");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let request = peer
        .request("<call/>")
        .with_header(header::CONTENT_TYPE, "application/xml");
    peer.send(request).await;
    let reply = peer.next_reply().await;
    assert_eq!(
        std::str::from_utf8(&reply.payload).unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error","data":"unsupported content type \"application/xml\" (busrpc speaks application/json and application/msgpack)"},"id":null}"#
    );
    server.handle.shutdown().await;
}

/// Replies nobody waits for, and malformed ones, are dropped and counted;
/// the caller that does wait gets its own reply.
pub async fn stray_replies_are_dropped_and_counted(h: &dyn Harness) {
    let service = unique_service("stray");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let client = client(h, ClientConfig::default().timeout(patient(h))).await;
    let transport = h.connect().await;
    let to = client.inbox_address().to_owned();
    for stray in [
        r#"{"jsonrpc":"2.0","result":"not yours","id":999999}"#,
        r#"{"jsonrpc":"2.0","result":"not yours","id":null}"#,
        r#"{"jsonrpc":"2.0","result":"no id"}"#,
        "not json",
    ] {
        transport
            .publish(&to, Message::new(stray))
            .await
            .expect("publish");
    }
    let reply: String = client.call(&service, "echo", ("mine",)).await.unwrap();
    assert_eq!(reply, "RPC mine!");
    wait_until("all four were dropped", patient(h), || {
        client.stats().replies_dropped == 4
    })
    .await;
    server.handle.shutdown().await;
}

/// MessagePack with bytes after its one value is -32700, as JSON with
/// trailing bytes is: the rest would otherwise be silently dropped.
pub async fn msgpack_with_trailing_bytes_is_a_parse_error(h: &dyn Harness) {
    let service = unique_service("msgpack-trailing");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let mut payload = Codec::MessagePack
        .encode(br#"{"jsonrpc":"2.0","method":"sum","params":[2,3],"id":7}"#.to_vec())
        .unwrap();
    let len = payload.len() + 1;
    payload.push(0xc0); // a MessagePack nil after the request
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
        format!(
            r#"{{"jsonrpc":"2.0","error":{{"code":-32700,"message":"Parse error","data":"payload is not valid MessagePack: trailing bytes after the value (1 of {len})"}},"id":null}}"#
        )
    );
    assert_eq!(server.handle.stats().calls, 0, "nothing ran");
    server.handle.shutdown().await;
}

/// A `deadline` header that is not Unix milliseconds is -32600 under the
/// call's own id, saying why; the call does not run.
pub async fn malformed_deadline_is_an_invalid_request(h: &dyn Harness) {
    let service = unique_service("bad-deadline");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    let too_long = "9".repeat(26);
    for bad in ["soon", "-5", "1.5", too_long.as_str()] {
        let request = peer
            .request(r#"{"jsonrpc":"2.0","method":"sum","params":[1],"id":3}"#)
            .with_header(header::DEADLINE, bad);
        peer.send(request).await;
        let reply = peer.next_reply().await;
        let quoted = serde_json::to_string(bad).unwrap().replace('"', "\\\"");
        assert_eq!(
            std::str::from_utf8(&reply.payload).unwrap(),
            format!(
                r#"{{"jsonrpc":"2.0","error":{{"code":-32600,"message":"Invalid Request","data":"the deadline header {quoted} is not a Unix time in milliseconds (digits only, at most 18446744073709551615)"}},"id":3}}"#
            )
        );
    }
    // A notification with a bad deadline is not run either, and not answered.
    let notification = Message::new(r#"{"jsonrpc":"2.0","method":"sleep","params":[1]}"#)
        .with_header(header::DEADLINE, "soon");
    peer.send(notification).await;
    peer.assert_silence(&server.handle, 5).await;
    let stats = server.handle.stats();
    assert_eq!(
        (stats.calls, stats.notifications),
        (1, 0),
        "only the sentinel ran"
    );
    assert_eq!(stats.dropped, 1);
    server.handle.shutdown().await;
}

/// A message with no payload at all is -32600 when it says where to reply,
/// and acknowledged and counted when not: settled either way.
pub async fn empty_message_is_an_invalid_request(h: &dyn Harness) {
    let service = unique_service("empty");
    let server = serve(h, &service, "a", ServerConfig::default()).await;
    let mut peer = RawPeer::new(h, &service).await;
    peer.send(peer.request(Vec::new())).await;
    assert_eq!(
        std::str::from_utf8(&peer.next_reply().await.payload).unwrap(),
        r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request","data":"the message has no payload"},"id":null}"#
    );
    peer.send(Message::new(Vec::new()).with_header("x-other", "field"))
        .await;
    peer.assert_silence(&server.handle, 2).await;
    wait_until("all three are acknowledged", patient(h), || {
        server.handle.stats().acked == 3
    })
    .await;
    assert_eq!(server.handle.stats().dropped, 1);
    server.handle.shutdown().await;
}

/// Every message of the [hostile-input catalogue](crate::catalogue::hostile) gets its
/// exact reply or its silence, and the server answers a good call after
/// each one: nothing a peer writes into the queue stops it, loops it or
/// makes it answer twice.
pub async fn hostile_inputs_get_their_exact_answers(h: &dyn Harness) {
    use crate::catalogue::hostile::{catalogue, Expect, MAX_MESSAGE_BYTES};
    let service = unique_service("hostile");
    let limits = Limits::default().max_message_bytes(MAX_MESSAGE_BYTES);
    let server = serve(h, &service, "a", ServerConfig::default().limits(limits)).await;
    let mut peer = RawPeer::new(h, &service).await;
    let own_queue = peer.transport.service_address(&service);
    let cases = catalogue(peer.inbox.address(), &own_queue);
    assert!(cases.len() >= 80, "the catalogue has {} cases", cases.len());
    let mut settled = 0;
    let mut wrong = Vec::new();
    for case in cases {
        peer.send(case.message).await;
        settled += case.settles;
        match case.expect {
            Expect::Reply(expected, content_type) => {
                let reply = peer.next_reply().await;
                let got = match reply.headers.get(header::CONTENT_TYPE) {
                    Some(MSGPACK) => Codec::MessagePack
                        .decode(&reply.payload)
                        .map(|json| String::from_utf8_lossy(&json).into_owned())
                        .unwrap_or_else(|e| format!("<bad MessagePack: {e}>")),
                    _ => String::from_utf8_lossy(&reply.payload).into_owned(),
                };
                let got_type = reply.headers.get(header::CONTENT_TYPE);
                if got != expected || got_type != content_type {
                    wrong.push(format!(
                        "{}:\n  expected {content_type:?} {}\n  got      {got_type:?} {}",
                        case.name,
                        excerpt(&expected),
                        excerpt(&got)
                    ));
                }
            }
            Expect::Silence => {}
        }
        // The sentinel's answer is the next thing in the inbox: a silent
        // case sent nothing, and the server still serves.
        let what = format!("the server settled {:?}", case.name);
        wait_until(&what, peer.patience, || {
            server.handle.stats().acked >= settled
        })
        .await;
        peer.assert_silence(&server.handle, settled).await;
        settled += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} hostile inputs got the wrong answer:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let stats = server.handle.stats();
    assert_eq!(stats.panics, 0);
    assert_eq!(stats.released, 0, "every message was settled for good");
    server.handle.shutdown().await;
}

/// A long wire string shortened for a failure message.
fn excerpt(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_owned();
    }
    let cut = (0..=300)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &s[..cut], s.len())
}
