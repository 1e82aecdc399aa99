//! The original library's wire: requests and replies as MessagePack maps
//! in its key order, keyed as its callers match them.

use busrpc_core::codec::Codec;
use busrpc_core::transport::TransportError;
use busrpc_core::{header, Message};
use serde_json::Value;

use super::NONCE_DIGITS;

/// A random nonce of [`NONCE_DIGITS`] decimal digits, the first not 0.
pub(super) fn new_nonce() -> String {
    let random = u128::from_str_radix(&busrpc_core::transport::unique_id(), 16).unwrap_or(0);
    let low = 10u128.pow(NONCE_DIGITS as u32 - 1);
    (low + random % (9 * low)).to_string()
}

/// The call id a record's key holds if it is `{nonce}{id}`.
pub(super) fn own_id(key: &[u8], nonce: &str) -> Option<u64> {
    let rest = key.strip_prefix(nonce.as_bytes())?;
    // Digits only: u64's parser would take a leading '+'.
    if !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

pub(super) fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_str(out, text);
}

pub(super) fn write_value(out: &mut Vec<u8>, value: &Value) {
    let _ = rmp_serde::encode::write(out, value);
}

/// `payload` in `codec`, as a JSON value.
pub(super) fn decode(codec: Codec, payload: &[u8]) -> Result<Value, String> {
    let json = codec.decode(payload).map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// The busrpc message about to be translated, as a JSON value, whatever
/// its encoding: a `what` (request or reply) it cannot read is refused.
pub(super) fn payload_json(message: &Message, what: &str) -> Result<Value, TransportError> {
    Codec::from_content_type(message.headers.get(header::CONTENT_TYPE))
        .map_err(|e| e.to_string())
        .and_then(|codec| decode(codec, &message.payload))
        .map_err(|e| TransportError::Rejected(format!("a {what} that cannot be read: {e}")))
}

/// The text of an id as the key of its reply.
pub(super) fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The header in which a delivery's acknowledger hands the transport the
/// key of its request, for a reply with a null id (see [`encode_response`]).
/// Never sent: the wire has no headers.
pub(super) const REQUEST_KEY: &str = "busrpc-pipeline-key";

/// Whether a MessagePack reply may hold a null id: the str "id" followed by
/// nil somewhere in it. Cheap, and only ever too eager.
pub(super) fn may_have_null_id(reply: &[u8]) -> bool {
    reply.windows(4).any(|w| w == [0xa2, b'i', b'd', 0xc0])
}

/// The id of a MessagePack request, as its reply's key.
pub(super) fn request_key(request: &[u8]) -> Option<String> {
    id_text(decode(Codec::MessagePack, request).ok()?.get("id")?)
}

/// A busrpc request (JSON) as the original's MessagePack map: `jsonrpc`,
/// `method`, `params` (`[]` when absent), then `id` as `{nonce}{id}`.
pub(super) fn encode_request(request: &Value, nonce: &str) -> Result<Vec<u8>, String> {
    let Value::Object(request) = request else {
        return Err(match request {
            Value::Array(_) => {
                "the pipeline dialect has no batches: its receivers take one call per record".into()
            }
            _ => "a request must be a JSON object".into(),
        });
    };
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or("a request needs a method")?;
    let id = match request.get("id") {
        None => None,
        Some(id) => Some(id.as_u64().ok_or_else(|| {
            format!("the pipeline dialect sends ids as decimal digits: {id} is not a whole number")
        })?),
    };
    let mut out = Vec::with_capacity(64);
    let _ = rmp::encode::write_map_len(&mut out, if id.is_some() { 4 } else { 3 });
    write_str(&mut out, "jsonrpc");
    write_str(&mut out, "2.0");
    write_str(&mut out, "method");
    write_str(&mut out, method);
    write_str(&mut out, "params");
    match request.get("params") {
        Some(params) => write_value(&mut out, params),
        None => {
            let _ = rmp::encode::write_array_len(&mut out, 0);
        }
    }
    if let Some(id) = id {
        write_str(&mut out, "id");
        write_str(&mut out, &format!("{nonce}{id}"));
    }
    Ok(out)
}

/// One response as the original's reply: the record key (the id's text)
/// and the MessagePack map `jsonrpc`, `id`, then `result` or `error`
/// (`code` and `message` only). A response with a null id is keyed by
/// `fallback` (its request's id, read by the transport), or `None` without.
pub(super) fn encode_response(
    response: &Value,
    fallback: Option<&str>,
) -> Option<(String, Vec<u8>)> {
    let id = response.get("id").unwrap_or(&Value::Null);
    let key = id_text(id).or_else(|| fallback.map(str::to_owned))?;
    let mut out = Vec::with_capacity(64);
    let _ = rmp::encode::write_map_len(&mut out, 3);
    write_str(&mut out, "jsonrpc");
    write_str(&mut out, "2.0");
    write_str(&mut out, "id");
    write_value(&mut out, id);
    if let Some(error) = response.get("error") {
        write_str(&mut out, "error");
        let _ = rmp::encode::write_map_len(&mut out, 2);
        write_str(&mut out, "code");
        write_value(&mut out, error.get("code").unwrap_or(&Value::from(-32603)));
        write_str(&mut out, "message");
        write_value(&mut out, error.get("message").unwrap_or(&Value::from("")));
    } else {
        write_str(&mut out, "result");
        write_value(&mut out, response.get("result").unwrap_or(&Value::Null));
    }
    Some((key, out))
}

/// A reply read off `method_results` as the JSON response to call `id`.
/// The original's quirks are undone: a reply holding both `error` and
/// `result` (an unknown method called with one argument) is the error it
/// is. A reply that is not a MessagePack map is answered -32603, so that
/// the caller hears at once instead of at its deadline.
pub(super) fn decode_reply(payload: &[u8], id: u64) -> Vec<u8> {
    let mut response = match decode(Codec::MessagePack, payload) {
        Ok(Value::Object(response)) => response,
        Ok(other) => return unreadable_reply(id, &format!("not a map but {other}")),
        Err(e) => return unreadable_reply(id, &e),
    };
    if response.contains_key("error") {
        response.remove("result");
    }
    response.insert("id".into(), Value::from(id));
    response.insert("jsonrpc".into(), Value::from("2.0"));
    serde_json::to_vec(&Value::Object(response)).unwrap_or_default()
}

pub(super) fn unreadable_reply(id: u64, reason: &str) -> Vec<u8> {
    let data = format!("the receiver's reply could not be read: {reason}");
    let error = serde_json::json!({"code": -32603, "message": "Internal error", "data": data});
    serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error}))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(value: &Value) -> Vec<u8> {
        rmp_serde::to_vec(value).unwrap()
    }

    /// `items` as MessagePack writes them, each item a fixstr (a string
    /// of under 32 bytes: its length in a byte, then the bytes) or, given
    /// as `[..]`, raw bytes.
    fn packed(items: &[Item<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Str(text) => {
                    out.push(0xa0 | u8::try_from(text.len()).unwrap());
                    out.extend(text.as_bytes());
                }
                Item::Raw(raw) => out.extend(*raw),
            }
        }
        out
    }

    enum Item<'a> {
        Str(&'a str),
        Raw(&'a [u8]),
    }
    use Item::{Raw, Str};

    /// The bytes as the original's `msgpack.packb` writes them: a fixmap
    /// of str keys in the original's order.
    #[test]
    fn a_call_goes_out_as_the_originals_map_in_its_order() {
        let call =
            serde_json::json!({"jsonrpc": "2.0", "method": "echo", "params": ["hello"], "id": 7});
        let bytes = encode_request(&call, "12345678901234567890").unwrap();
        let expected = packed(&[
            Raw(&[0x84]),
            Str("jsonrpc"),
            Str("2.0"),
            Str("method"),
            Str("echo"),
            Str("params"),
            Raw(&[0x91]),
            Str("hello"),
            Str("id"),
            Str("123456789012345678907"),
        ]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn params_are_never_absent_and_a_notification_has_no_id() {
        let bytes = encode_request(
            &serde_json::json!({"jsonrpc": "2.0", "method": "tick"}),
            "12345678901234567890",
        )
        .unwrap();
        let expected = packed(&[
            Raw(&[0x83]),
            Str("jsonrpc"),
            Str("2.0"),
            Str("method"),
            Str("tick"),
            Str("params"),
            Raw(&[0x90]),
        ]);
        assert_eq!(bytes, expected);
        let named = encode_request(
            &serde_json::json!({"jsonrpc": "2.0", "method": "add", "params": {"a": 1}, "id": 1}),
            "1",
        )
        .unwrap();
        let back: Value = rmp_serde::from_slice(&named).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"jsonrpc": "2.0", "method": "add", "params": {"a": 1}, "id": "11"})
        );
    }

    #[test]
    fn batches_and_ids_that_are_not_whole_numbers_are_refused() {
        let batch = serde_json::json!([{"jsonrpc": "2.0", "method": "a", "id": 1}]);
        assert!(encode_request(&batch, "1")
            .unwrap_err()
            .contains("no batches"));
        let string_id = serde_json::json!({"jsonrpc": "2.0", "method": "a", "id": "x"});
        assert!(encode_request(&string_id, "1")
            .unwrap_err()
            .contains("decimal digits"));
    }

    #[test]
    fn a_reply_is_keyed_by_its_id_and_keeps_only_code_and_message() {
        let reply = serde_json::json!({"jsonrpc": "2.0", "error": {"code": -32602, "message": "Invalid params", "data": "why"}, "id": "16849"});
        let (key, bytes) = encode_response(&reply, None).unwrap();
        assert_eq!(key, "16849");
        let expected = packed(&[
            Raw(&[0x83]),
            Str("jsonrpc"),
            Str("2.0"),
            Str("id"),
            Str("16849"),
            Str("error"),
            Raw(&[0x82]),
            Str("code"),
            Raw(&[0xd1, 0x80, 0xa6]), // -32602, an int 16 as msgpack.packb writes it
            Str("message"),
            Str("Invalid params"),
        ]);
        assert_eq!(bytes, expected);
        let (key, bytes) = encode_response(
            &serde_json::json!({"jsonrpc": "2.0", "result": "RPC hello!", "id": 3}),
            None,
        )
        .unwrap();
        assert_eq!(key, "3");
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"jsonrpc": "2.0", "id": 3, "result": "RPC hello!"})
        );
        let unread = serde_json::json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null});
        assert!(encode_response(&unread, None).is_none());
        let (key, bytes) = encode_response(&unread, Some("777")).unwrap();
        assert_eq!(key, "777", "keyed by the request's id");
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            back["id"],
            Value::Null,
            "the reply still says the id was not read"
        );
        let request = msgpack(
            &serde_json::json!({"jsonrpc": "2.0", "method": "m", "params": [], "id": "777"}),
        );
        assert_eq!(request_key(&request).as_deref(), Some("777"));
        assert!(may_have_null_id(&msgpack(&unread)));
        assert!(!may_have_null_id(&msgpack(
            &serde_json::json!({"jsonrpc": "2.0", "result": 1, "id": "777"})
        )));
    }

    #[test]
    fn replies_are_told_apart_by_their_key() {
        let nonce = new_nonce();
        assert_eq!(nonce.len(), NONCE_DIGITS);
        assert!(nonce.bytes().all(|b| b.is_ascii_digit()) && !nonce.starts_with('0'));
        assert_ne!(nonce, new_nonce());
        assert_eq!(own_id(format!("{nonce}42").as_bytes(), &nonce), Some(42));
        assert_eq!(
            own_id(nonce.as_bytes(), &nonce),
            None,
            "no id after the nonce"
        );
        assert_eq!(
            own_id(b"16849000000000000", &nonce),
            None,
            "a Python caller's id"
        );
        assert_eq!(own_id(format!("{nonce}4x").as_bytes(), &nonce), None);
    }

    #[test]
    fn an_error_beside_a_result_is_the_error() {
        let quirk = msgpack(
            &serde_json::json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "Method not found"}, "result": "hello"}),
        );
        let reply: Value = serde_json::from_slice(&decode_reply(&quirk, 9)).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32601, "message": "Method not found"}})
        );
    }

    #[test]
    fn an_unreadable_reply_is_answered_at_once() {
        let reply: Value = serde_json::from_slice(&decode_reply(b"\xc1", 4)).unwrap();
        assert_eq!(reply["id"], 4);
        assert_eq!(reply["error"]["code"], -32603);
        let reply: Value =
            serde_json::from_slice(&decode_reply(&msgpack(&Value::from(5)), 4)).unwrap();
        assert_eq!(reply["error"]["code"], -32603);
    }
}
