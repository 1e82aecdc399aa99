//! The answers owed for a message a server will not run: every call in it
//! answered with one error, each under its own id.

use serde_json::value::RawValue;

use super::request::{decode_incoming, Incoming, InvalidRequest, ParseError, Request};
use super::response::{error_response, join_batch};
use super::RpcError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
