//! Requests: decoding what a server receives, borrowing from the payload,
//! and writing what a client sends.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::present;

/// The members of a request object, all kept raw so that a wrong type is an
/// Invalid Request we can answer, not a parse failure.
#[derive(Clone, Copy, Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// A valid request or notification, borrowing from the payload.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The method name.
    pub method: Cow<'a, str>,
    /// The params: an array or an object, or `None` when absent.
    pub params: Option<&'a RawValue>,
    /// The id, exactly as sent; `None` for a notification.
    pub id: Option<&'a RawValue>,
}

impl Request<'_> {
    /// A request without an id is a notification and gets no response.
    pub(crate) fn is_notification(&self) -> bool {
        self.id.is_none()
    }
}

/// A request object that is not valid. Its id is kept when the id itself was
/// valid, so that the caller can still match the error to its call.
#[derive(Debug)]
pub(crate) struct InvalidRequest<'a> {
    /// The request's id, if it had a valid one.
    pub id: Option<&'a RawValue>,
}

/// What a received payload turned out to be.
#[derive(Debug)]
pub(crate) enum Incoming<'a> {
    /// One request object (valid or not).
    Single(Result<Request<'a>, InvalidRequest<'a>>),
    /// A batch: an array of request objects (possibly empty).
    Batch(Vec<Result<Request<'a>, InvalidRequest<'a>>>),
}

/// The payload is not valid JSON.
#[derive(Debug)]
pub(crate) struct ParseError;

fn first_byte(raw: &RawValue) -> u8 {
    // RawValue never has leading whitespace.
    raw.get().as_bytes()[0]
}

fn valid_id(raw: &RawValue) -> bool {
    // A string, a number or null; objects, arrays and booleans are not ids.
    matches!(first_byte(raw), b'"' | b'-' | b'0'..=b'9' | b'n')
}

fn request_from(raw: RawRequest<'_>) -> Result<Request<'_>, InvalidRequest<'_>> {
    let id = match raw.id {
        Some(id) if !valid_id(id) => return Err(InvalidRequest { id: None }),
        id => id,
    };
    let invalid = InvalidRequest { id };
    if raw.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(invalid);
    }
    let Some(method) = raw.method.filter(|m| first_byte(m) == b'"') else {
        return Err(invalid);
    };
    let Ok(method) = serde_json::from_str::<Cow<'_, str>>(method.get()) else {
        return Err(invalid);
    };
    if let Some(params) = raw.params {
        if !matches!(first_byte(params), b'[' | b'{') {
            return Err(invalid);
        }
    }
    Ok(Request {
        method,
        params: raw.params,
        id,
    })
}

fn element(raw: &RawValue) -> Result<Request<'_>, InvalidRequest<'_>> {
    if first_byte(raw) != b'{' {
        return Err(InvalidRequest { id: None });
    }
    match serde_json::from_str::<RawRequest<'_>>(raw.get()) {
        Ok(r) => request_from(r),
        // Valid JSON (the batch parsed) but e.g. a duplicate member.
        Err(_) => Err(InvalidRequest { id: None }),
    }
}

/// Decodes a JSON payload into a request or a batch, in one pass over the
/// bytes for a single request.
pub(crate) fn decode_incoming(payload: &[u8]) -> Result<Incoming<'_>, ParseError> {
    let start = payload.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| payload[i]) {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_slice(payload).map_err(|_| ParseError)?;
            Ok(Incoming::Batch(items.into_iter().map(element).collect()))
        }
        Some(b'{') => match serde_json::from_slice::<RawRequest<'_>>(payload) {
            Ok(r) => Ok(Incoming::Single(request_from(r))),
            Err(e) if e.is_data() => {
                // Well-formed JSON of the wrong shape (a duplicate member)
                // is an Invalid Request; anything else is a Parse error.
                serde_json::from_slice::<IgnoredAny>(payload).map_err(|_| ParseError)?;
                Ok(Incoming::Single(Err(InvalidRequest { id: None })))
            }
            Err(_) => Err(ParseError),
        },
        _ => {
            // A scalar: Invalid Request if it is JSON at all.
            serde_json::from_slice::<IgnoredAny>(payload).map_err(|_| ParseError)?;
            Ok(Incoming::Single(Err(InvalidRequest { id: None })))
        }
    }
}

/// Why a request could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The params did not serialize.
    #[error("params could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The params serialized to something other than an array or an object.
    #[error("params must serialize to a JSON array (a tuple, a Vec) or object (a struct, a map), got {0}")]
    ParamsShape(&'static str),
    /// A batch must hold at least one call or notification.
    #[error("a batch needs at least one call or notification")]
    EmptyBatch,
    /// The batch is longer than the client's limits allow.
    #[error("batch of {len} exceeds the limit of {limit}")]
    BatchTooLong {
        /// Entries in the batch.
        len: usize,
        /// The limit (max batch length, or max calls in flight).
        limit: usize,
    },
}

/// `params` as the JSON a request would carry (`null` for none), checked
/// for shape as [`write_request`] checks it.
pub(crate) fn params_to_raw<P: Serialize + ?Sized>(
    params: &P,
) -> Result<Box<RawValue>, EncodeError> {
    let raw = serde_json::value::to_raw_value(params)?;
    check_params_shape(raw.get().as_bytes()[0])?;
    Ok(raw)
}

/// Params serialize to an array, an object or `null` (none); anything else,
/// by the first byte of its JSON, is refused, naming what it was.
fn check_params_shape(first: u8) -> Result<(), EncodeError> {
    match first {
        b'[' | b'{' | b'n' => Ok(()),
        b'"' => Err(EncodeError::ParamsShape("a string")),
        b't' | b'f' => Err(EncodeError::ParamsShape("a boolean")),
        _ => Err(EncodeError::ParamsShape("a number")),
    }
}

/// Appends a request (`id` given) or a notification (`id` is `None`).
/// Params that serialize to `null` (such as `()`) are left out.
pub(crate) fn write_request<P: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    method: &str,
    params: &P,
    id: Option<u64>,
) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":");
    serde_json::to_writer(&mut *buf, method)?;
    let params_at = buf.len();
    buf.extend_from_slice(b",\"params\":");
    let value_at = buf.len();
    if let Err(e) = serde_json::to_writer(&mut *buf, params) {
        buf.truncate(start);
        return Err(e.into());
    }
    if let Err(e) = check_params_shape(buf[value_at]) {
        buf.truncate(start);
        return Err(e);
    }
    if buf[value_at] == b'n' {
        buf.truncate(params_at);
    }
    if let Some(id) = id {
        use std::io::Write as _;
        write!(buf, ",\"id\":{id}").expect("writing to a Vec cannot fail");
    }
    buf.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(payload: &str) -> Result<Request<'_>, InvalidRequest<'_>> {
        match decode_incoming(payload.as_bytes()).expect("parses") {
            Incoming::Single(r) => r,
            Incoming::Batch(_) => panic!("not a single request"),
        }
    }

    #[test]
    fn decodes_call_with_positional_params() {
        let r = single(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#)
            .unwrap();
        assert_eq!(r.method, "subtract");
        assert_eq!(r.params.unwrap().get(), "[42, 23]");
        assert_eq!(r.id.unwrap().get(), "1");
        assert!(!r.is_notification());
    }

    #[test]
    fn method_with_escapes_is_unescaped() {
        let r = single(r#"{"jsonrpc":"2.0","method":"a\"b\u00e9","id":"x"}"#).unwrap();
        assert_eq!(r.method, "a\"bé");
        assert_eq!(r.id.unwrap().get(), "\"x\"");
    }

    #[test]
    fn null_id_is_a_call_and_missing_id_a_notification() {
        assert_eq!(
            single(r#"{"jsonrpc":"2.0","method":"m","id":null}"#)
                .unwrap()
                .id
                .unwrap()
                .get(),
            "null"
        );
        assert!(single(r#"{"jsonrpc":"2.0","method":"m"}"#)
            .unwrap()
            .is_notification());
    }

    #[test]
    fn invalid_requests_keep_a_valid_id() {
        let cases = [
            (r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#, None),
            (r#"{"jsonrpc":"1.0","method":"m","id":7}"#, Some("7")),
            (r#"{"method":"m","id":7}"#, Some("7")),
            (
                r#"{"jsonrpc":"2.0","method":"m","params":3,"id":"a"}"#,
                Some("\"a\""),
            ),
            (r#"{"jsonrpc":"2.0","method":"m","id":{"x":1}}"#, None),
            (r#"{"jsonrpc":"2.0","method":"m","id":true}"#, None),
            (r#"{"jsonrpc":"2.0","method":"m","id":1,"id":2}"#, None),
            (r#"{"foo":"boo"}"#, None),
        ];
        for (payload, id) in cases {
            let err = single(payload).expect_err(payload);
            assert_eq!(err.id.map(RawValue::get), id, "{payload}");
        }
    }

    #[test]
    fn scalars_are_invalid_requests_and_garbage_is_a_parse_error() {
        assert!(single("1").is_err());
        assert!(single(" \"x\" ").is_err());
        for bad in [
            "",
            "   ",
            "{",
            "1 x",
            r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
            "[1,",
            "\u{0}",
        ] {
            assert!(decode_incoming(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn batches_decode_element_by_element() {
        let Incoming::Batch(items) =
            decode_incoming(br#"[1, {"jsonrpc":"2.0","method":"m","id":2}, {"foo":1}]"#).unwrap()
        else {
            panic!("not a batch")
        };
        assert_eq!(items.len(), 3);
        assert!(items[0].is_err());
        assert_eq!(items[1].as_ref().unwrap().method, "m");
        assert!(items[2].is_err());
        assert!(matches!(decode_incoming(b"[]").unwrap(), Incoming::Batch(v) if v.is_empty()));
    }

    #[test]
    fn writes_exact_requests() {
        let mut buf = Vec::new();
        write_request(&mut buf, "sub\"tract", &(42, 23), Some(1)).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"jsonrpc":"2.0","method":"sub\"tract","params":[42,23],"id":1}"#
        );
        buf.clear();
        write_request(&mut buf, "ping", &(), None).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"jsonrpc":"2.0","method":"ping"}"#
        );
        buf.clear();
        let named = serde_json::json!({"minuend": 42});
        write_request(&mut buf, "m", &named, Some(9)).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"jsonrpc":"2.0","method":"m","params":{"minuend":42},"id":9}"#
        );
        buf.clear();
        buf.extend_from_slice(b"[");
        assert!(matches!(
            write_request(&mut buf, "m", &5, Some(1)),
            Err(EncodeError::ParamsShape("a number"))
        ));
        assert!(matches!(
            write_request(&mut buf, "m", "s", Some(1)),
            Err(EncodeError::ParamsShape("a string"))
        ));
        assert_eq!(buf, b"[", "a failed write leaves the buffer as it was");
    }
}
