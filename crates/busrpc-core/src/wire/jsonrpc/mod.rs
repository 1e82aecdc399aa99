//! JSON-RPC 2.0 wire types: the error codes and the error object, public;
//! and, for the engine and the client only, the decoding and encoding of
//! requests and responses, and the answers a server owes for a message it
//! will not run.
//!
//! Decoding borrows: params, ids and results stay [`RawValue`]s pointing into
//! the received payload, so the engine parses a payload once and hands the
//! params straight to the handler's deserializer. Encoding writes bytes
//! directly, with no intermediate `Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

mod answer;
mod cancel;
mod request;
mod response;

pub(crate) use answer::{answer_all, answer_each};
pub use cancel::CANCEL_METHOD;
pub(crate) use cancel::{cancelled_id, request_id, write_cancel};
pub use request::EncodeError;
pub(crate) use request::{
    decode_incoming, params_to_raw, write_request, Incoming, InvalidRequest, ParseError, Request,
};
pub(crate) use response::{decode_responses, error_response, join_batch, write_result};

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
/// A call that got no reply within its timeout: never sent by a server on
/// its own, but what a caller's [`Error::Timeout`](crate::Error::Timeout)
/// becomes as an [`RpcError`] (a typed client whose error type is
/// `RpcError`, a handler passing a nested call's failure on with `?`).
/// `data` is the error's text.
pub const TIMEOUT_CODE: i32 = -32002;
/// A call the broker failed (unavailable, refused, closed; see
/// [`ErrorKind`](crate::transport::ErrorKind)), as an [`RpcError`], like
/// [`TIMEOUT_CODE`]. `data` is the error's text.
pub const BROKER_ERROR_CODE: i32 = -32003;
/// A call to a service nobody has ever served on this broker
/// ([`Error::NoService`](crate::Error::NoService)), as an [`RpcError`],
/// like [`TIMEOUT_CODE`]. `data` is the error's text.
pub const NO_SERVICE_CODE: i32 = -32004;
/// A call to a service whose queue has no live server
/// ([`Error::NoServers`](crate::Error::NoServers)), as an [`RpcError`],
/// like [`TIMEOUT_CODE`]. `data` is the error's text.
pub const NO_SERVERS_CODE: i32 = -32005;

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
/// See [`TIMEOUT_CODE`].
pub const TIMEOUT_MSG: &str = "No reply in time";
/// See [`BROKER_ERROR_CODE`].
pub const BROKER_ERROR_MSG: &str = "Broker failed";
/// See [`NO_SERVICE_CODE`].
pub const NO_SERVICE_MSG: &str = "No such service";
/// See [`NO_SERVERS_CODE`].
pub const NO_SERVERS_MSG: &str = "No live server";

/// A JSON-RPC 2.0 error object: what a handler returns to fail a call, and
/// what a caller receives in [`Error::Rpc`](crate::Error::Rpc).
///
/// ```
/// use busrpc_core::RpcError;
/// let err = RpcError::new(4003, "account is locked").with_data(&serde_json::json!({"retry_in": 30}));
/// assert_eq!(err.code(), 4003);
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

#[cfg(test)]
mod tests {
    use super::*;

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
