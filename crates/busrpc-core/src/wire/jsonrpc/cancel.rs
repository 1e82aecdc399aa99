//! Cancel notices: what a caller that gave up on a call broadcasts to the
//! servers of its service, so that the one running the call stops it. A
//! JSON-RPC notification of the reserved method `rpc.cancel` whose params
//! name the call's id; its `reply-to` header names the caller's inbox, so
//! that the pair names one call of one caller.

use serde::Deserialize;
use serde_json::value::RawValue;

/// The method of a cancel notice.
pub const CANCEL_METHOD: &str = "rpc.cancel";

/// The payload of the cancel notice of the call `id`.
pub(crate) fn write_cancel(id: u64) -> Vec<u8> {
    let mut id_text = itoa::Buffer::new();
    let id_text = id_text.format(id);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"rpc.cancel","params":{"id":"#);
    out.extend_from_slice(id_text.as_bytes());
    out.extend_from_slice(b"}}");
    out
}

/// The id a cancel notice names, as its JSON text; `None` for anything
/// that is not one.
pub(crate) fn cancelled_id(json: &[u8]) -> Option<Box<str>> {
    #[derive(Deserialize)]
    struct Notice<'a> {
        jsonrpc: &'a str,
        method: &'a str,
        #[serde(borrow)]
        params: Params<'a>,
    }
    #[derive(Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
    }
    if !is_object(json) {
        return None;
    }
    let notice: Notice<'_> = serde_json::from_slice(json).ok()?;
    (notice.jsonrpc == "2.0" && notice.method == CANCEL_METHOD)
        .then(|| notice.params.id.get().into())
}

/// The id of `json` as its JSON text when it is one request with an id
/// (not a batch, not a notification): what a cancel notice names it by.
pub(crate) fn request_id(json: &[u8]) -> Option<Box<str>> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    if !is_object(json) {
        return None;
    }
    let peek: Peek<'_> = serde_json::from_slice(json).ok()?;
    peek.id
        .filter(|id| id.get() != "null")
        .map(|id| id.get().into())
}

/// Whether `json` is an object (serde would read a struct from an array
/// too, by position).
fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_notice_is_exactly_this_and_names_its_call() {
        let notice = write_cancel(42);
        assert_eq!(
            std::str::from_utf8(&notice).unwrap(),
            r#"{"jsonrpc":"2.0","method":"rpc.cancel","params":{"id":42}}"#
        );
        assert_eq!(cancelled_id(&notice).as_deref(), Some("42"));
        let foreign = br#"{"method":"rpc.cancel","jsonrpc":"2.0","params":{"id":"a-7"}}"#;
        assert_eq!(cancelled_id(foreign).as_deref(), Some(r#""a-7""#));
        let by_position = br#"{"jsonrpc":"2.0","method":"rpc.cancel","params":[9]}"#;
        assert_eq!(cancelled_id(by_position).as_deref(), Some("9"));
        for not_one in [
            &br#"{"jsonrpc":"2.0","method":"echo","params":{"id":1}}"#[..],
            br#"{"jsonrpc":"2.0","method":"rpc.cancel","params":{}}"#,
            br#"[{"jsonrpc":"2.0","method":"rpc.cancel","params":{"id":1}}]"#,
            br#"{"jsonrpc":"1.0","method":"rpc.cancel","params":{"id":1}}"#,
            b"[]",
            b"nonsense",
        ] {
            assert_eq!(cancelled_id(not_one), None);
        }
    }

    #[test]
    fn a_requests_id_is_read_as_its_json_text() {
        let id = |json: &str| request_id(json.as_bytes());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","method":"m","id":7}"#).as_deref(),
            Some("7")
        );
        assert_eq!(id(r#"{"id":"x","method":"m"}"#).as_deref(), Some(r#""x""#));
        assert_eq!(id(r#"{"jsonrpc":"2.0","method":"m"}"#), None);
        assert_eq!(id(r#"{"jsonrpc":"2.0","method":"m","id":null}"#), None);
        assert_eq!(id(r#"[{"jsonrpc":"2.0","method":"m","id":1}]"#), None);
    }
}
