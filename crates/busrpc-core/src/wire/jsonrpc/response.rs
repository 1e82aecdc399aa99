//! Responses: writing what a server answers, and decoding what a client
//! receives, borrowing from the payload.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{present, RpcError};

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
}
