//! JSON-RPC 2.0 wire types: the error codes and the error object, public;
//! and, for the engine and the client only, the decoding and encoding of
//! requests and responses.
//!
//! Decoding borrows: params, ids and results stay [`RawValue`]s pointing into
//! the received payload, so the engine parses a payload once and hands the
//! params straight to the handler's deserializer. Encoding writes bytes
//! directly, with no intermediate `Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Invalid JSON was received.
pub const PARSE_ERROR_CODE: i32 = -32700;
/// The JSON sent is not a valid Request object.
pub const INVALID_REQUEST_CODE: i32 = -32600;
/// The method does not exist or is not available.
pub const METHOD_NOT_FOUND_CODE: i32 = -32601;
/// Invalid method parameter(s).
pub const INVALID_PARAMS_CODE: i32 = -32602;
/// Internal JSON-RPC error, and what a panicking handler answers.
pub const INTERNAL_ERROR_CODE: i32 = -32603;

/// A request a broker gave up on after too many deliveries without an answer
/// (moved to a dead-letter queue); in the range the specification leaves
/// to implementations. `data` says how often it was delivered and where it went.
pub const DEAD_LETTER_CODE: i32 = -32001;

/// The messages the specification gives for its codes.
pub const PARSE_ERROR_MSG: &str = "Parse error";
/// See [`INVALID_REQUEST_CODE`].
pub const INVALID_REQUEST_MSG: &str = "Invalid Request";
/// See [`METHOD_NOT_FOUND_CODE`].
pub const METHOD_NOT_FOUND_MSG: &str = "Method not found";
/// See [`INVALID_PARAMS_CODE`].
pub const INVALID_PARAMS_MSG: &str = "Invalid params";
/// See [`INTERNAL_ERROR_CODE`].
pub const INTERNAL_ERROR_MSG: &str = "Internal error";
/// See [`DEAD_LETTER_CODE`].
pub const DEAD_LETTER_MSG: &str = "Request dead-lettered";

/// A JSON-RPC 2.0 error object: what a handler returns to fail a call, and
/// what a caller receives in [`Error::Rpc`](crate::Error::Rpc).
///
/// ```
/// use busrpc_core::RpcError;
/// let err = RpcError::new(-32001, "account is locked").with_data(&serde_json::json!({"retry_in": 30}));
/// assert_eq!(err.code(), -32001);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct RpcError {
    code: i32,
    message: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<Box<RawValue>>,
}

impl RpcError {
    /// An error with a code and a message. Codes from -32768 to -32000 are
    /// reserved by the specification; applications use others.
    pub fn new(code: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// Attaches structured data. Data that cannot be serialized is replaced by
    /// its serialization error as a string, so the caller still learns something.
    #[must_use]
    pub fn with_data<T: Serialize + ?Sized>(mut self, data: &T) -> Self {
        self.data = Some(serde_json::value::to_raw_value(data).unwrap_or_else(|e| {
            serde_json::value::to_raw_value(&e.to_string()).expect("a string serializes")
        }));
        self
    }

    /// -32700: the payload is not JSON.
    pub fn parse_error() -> Self {
        Self::new(PARSE_ERROR_CODE, PARSE_ERROR_MSG)
    }

    /// -32600: the payload is JSON but not a valid request.
    pub fn invalid_request() -> Self {
        Self::new(INVALID_REQUEST_CODE, INVALID_REQUEST_MSG)
    }

    /// -32601: no handler is registered under the method's name.
    pub fn method_not_found() -> Self {
        Self::new(METHOD_NOT_FOUND_CODE, METHOD_NOT_FOUND_MSG)
    }

    /// -32602 with a message saying what was wrong with the params.
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        Self::new(
            INVALID_PARAMS_CODE,
            format!("{INVALID_PARAMS_MSG}: {detail}"),
        )
    }

    /// -32603: something failed inside the server.
    pub fn internal_error() -> Self {
        Self::new(INTERNAL_ERROR_CODE, INTERNAL_ERROR_MSG)
    }

    /// The error code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The data, as raw JSON, if any.
    pub fn data(&self) -> Option<&RawValue> {
        self.data.as_deref()
    }

    /// The data deserialized into `T`.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.data.as_ref().map(|d| serde_json::from_str(d.get()))
    }
}

impl PartialEq for RpcError {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
    }
}

impl Eq for RpcError {}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RpcError");
        s.field("code", &self.code).field("message", &self.message);
        if let Some(data) = &self.data {
            s.field("data", &data.get());
        }
        s.finish()
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JSON-RPC error {}: {}", self.code, self.message)?;
        if let Some(data) = &self.data {
            write!(f, " ({})", data.get())?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

/// Deserializes a field that must be told apart from its absence even when it
/// is `null` (`"id": null` is a call; no `id` is a notification).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

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

/// The response answering every call in a JSON `payload` with `error`: one
/// error object for a single call, an array with one per call for a batch;
/// notifications get nothing, and `None` is returned when nothing is to be
/// answered. A payload that is not JSON is answered with a null id.
///
/// For a transport that gives up on a message without running it (a
/// dead-letter queue, say) and still owes its callers an answer.
pub(crate) fn answer_all(payload: &[u8], error: &RpcError) -> Option<Vec<u8>> {
    match decode_incoming(payload) {
        Err(ParseError) => Some(error_response(None, error)),
        Ok(Incoming::Single(item)) => answer_id(&item).map(|id| error_response(id, error)),
        Ok(Incoming::Batch(items)) => answer_each(&items, error),
    }
}

/// The id an item is answered with; `None` for a notification.
fn answer_id<'a>(item: &Result<Request<'a>, InvalidRequest<'a>>) -> Option<Option<&'a RawValue>> {
    match item {
        Ok(Request { id: None, .. }) => None,
        Ok(Request { id, .. }) | Err(InvalidRequest { id }) => Some(*id),
    }
}

/// One `error` per call of a batch, as a batch response.
pub(crate) fn answer_each(
    items: &[Result<Request<'_>, InvalidRequest<'_>>],
    error: &RpcError,
) -> Option<Vec<u8>> {
    join_batch(
        items
            .iter()
            .filter_map(answer_id)
            .map(|id| error_response(id, error)),
    )
}

pub(crate) fn error_response(id: Option<&RawValue>, error: &RpcError) -> Vec<u8> {
    let mut buf = Vec::with_capacity(96);
    write_error(&mut buf, id, error);
    buf
}

/// `[a,b,...]` from the answers of a batch; `None` when there are none (a
/// batch of notifications gets no response at all).
pub(crate) fn join_batch(answers: impl Iterator<Item = Vec<u8>>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for answer in answers {
        out.push(if out.is_empty() { b'[' } else { b',' });
        out.extend_from_slice(&answer);
    }
    if out.is_empty() {
        return None;
    }
    out.push(b']');
    Some(out)
}

const NULL_ID: &str = "null";

/// Appends a success response: `{"jsonrpc":"2.0","result":…,"id":…}`.
pub(crate) fn write_result(buf: &mut Vec<u8>, id: Option<&RawValue>, result: &RawValue) {
    buf.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"result\":");
    buf.extend_from_slice(result.get().as_bytes());
    write_id_and_close(buf, id);
}

/// Appends an error response: `{"jsonrpc":"2.0","error":{…},"id":…}`; a
/// missing id is written as `null`, as the specification requires.
pub(crate) fn write_error(buf: &mut Vec<u8>, id: Option<&RawValue>, error: &RpcError) {
    buf.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"error\":");
    serde_json::to_writer(&mut *buf, error).expect("an error object serializes");
    write_id_and_close(buf, id);
}

fn write_id_and_close(buf: &mut Vec<u8>, id: Option<&RawValue>) {
    buf.extend_from_slice(b",\"id\":");
    buf.extend_from_slice(id.map_or(NULL_ID, RawValue::get).as_bytes());
    buf.push(b'}');
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

/// A response as a client reads it, borrowing from the payload.
#[derive(Debug)]
pub(crate) struct Response<'a> {
    /// The id, exactly as sent.
    pub id: &'a RawValue,
    /// The result, or the error object.
    pub outcome: Result<&'a RawValue, RpcError>,
}

impl Response<'_> {
    /// The id as one of busrpc's own integer ids, if it is one.
    pub(crate) fn numeric_id(&self) -> Option<u64> {
        self.id.get().parse().ok()
    }
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// A reply payload that is not a valid response or batch of responses.
#[derive(Debug, thiserror::Error)]
#[error("malformed response: {0}")]
pub(crate) struct MalformedResponse(pub(crate) String);

fn response_from(raw: RawResponse<'_>) -> Result<Response<'_>, MalformedResponse> {
    if raw.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(MalformedResponse("jsonrpc is not \"2.0\"".into()));
    }
    let id = raw.id.ok_or_else(|| MalformedResponse("no id".into()))?;
    let outcome = match (raw.result, raw.error) {
        (Some(result), None) => Ok(result),
        (None, Some(error)) => Err(error),
        _ => {
            return Err(MalformedResponse(
                "exactly one of result and error must be present".into(),
            ))
        }
    };
    Ok(Response { id, outcome })
}

/// Decodes a reply payload: one response, or a batch of them.
pub(crate) fn decode_responses(
    payload: &[u8],
) -> Result<Vec<Result<Response<'_>, MalformedResponse>>, MalformedResponse> {
    let bad = |e: serde_json::Error| MalformedResponse(e.to_string());
    let start = payload.iter().position(|b| !b.is_ascii_whitespace());
    if start.map(|i| payload[i]) == Some(b'[') {
        let items: Vec<&RawValue> = serde_json::from_slice(payload).map_err(bad)?;
        Ok(items
            .into_iter()
            .map(|item| {
                serde_json::from_str(item.get())
                    .map_err(bad)
                    .and_then(response_from)
            })
            .collect())
    } else {
        let raw: RawResponse<'_> = serde_json::from_slice(payload).map_err(bad)?;
        Ok(vec![response_from(raw)])
    }
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
    fn writes_exact_responses() {
        let id = RawValue::from_string("1".into()).unwrap();
        let result = RawValue::from_string("19".into()).unwrap();
        let mut buf = Vec::new();
        write_result(&mut buf, Some(&id), &result);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"jsonrpc":"2.0","result":19,"id":1}"#
        );

        buf.clear();
        write_error(&mut buf, None, &RpcError::parse_error());
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
        );

        buf.clear();
        write_error(
            &mut buf,
            Some(&id),
            &RpcError::new(5, "no").with_data(&[1, 2]),
        );
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":5,"message":"no","data":[1,2]},"id":1}"#
        );
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

    #[test]
    fn decodes_responses() {
        let rs = decode_responses(br#"{"jsonrpc":"2.0","result":null,"id":3}"#).unwrap();
        let r = rs[0].as_ref().unwrap();
        assert_eq!(r.numeric_id(), Some(3));
        assert_eq!(r.outcome.as_ref().unwrap().get(), "null");

        let rs = decode_responses(
            br#"[{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":"5"},{"jsonrpc":"2.0","id":1}]"#,
        )
        .unwrap();
        let r = rs[0].as_ref().unwrap();
        assert_eq!(r.numeric_id(), None);
        assert_eq!(
            r.outcome.as_ref().unwrap_err(),
            &RpcError::method_not_found()
        );
        assert!(rs[1].is_err(), "neither result nor error");
        assert!(decode_responses(b"{").is_err());
    }

    #[test]
    fn answer_all_answers_every_call_and_no_notification() {
        let e = RpcError::new(-32000, "gone");
        let err = |id: &str| {
            format!(r#"{{"jsonrpc":"2.0","error":{{"code":-32000,"message":"gone"}},"id":{id}}}"#)
        };
        let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            text(answer_all(br#"{"jsonrpc":"2.0","method":"m","id":4}"#, &e)),
            Some(err("4"))
        );
        assert_eq!(
            text(answer_all(br#"{"jsonrpc":"2.0","method":"m"}"#, &e)),
            None
        );
        assert_eq!(text(answer_all(b"{oops", &e)), Some(err("null")));
        assert_eq!(
            text(answer_all(
                br#"[{"jsonrpc":"2.0","method":"m","id":"a"},{"jsonrpc":"2.0","method":"n"},7]"#,
                &e
            )),
            Some(format!("[{},{}]", err("\"a\""), err("null")))
        );
        assert_eq!(
            text(answer_all(br#"[{"jsonrpc":"2.0","method":"n"}]"#, &e)),
            None
        );
    }

    #[test]
    fn rpc_error_round_trips_with_data() {
        let e = RpcError::new(-1, "x").with_data(&serde_json::json!({"a": [1]}));
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"code":-1,"message":"x","data":{"a":[1]}}"#);
        let back: RpcError = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.data_as::<serde_json::Value>().unwrap().unwrap()["a"][0],
            1
        );
    }
}
