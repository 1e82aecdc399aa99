//! The replies a server composes itself: a response routed to its caller
//! in the caller's encoding, and the answers to a message it will not run.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ServerState;
use crate::telemetry::metrics::ServerEvent;
use crate::transport::kit::Excerpt;
use crate::transport::Exhausted;
use crate::wire::codec::Codec;
use crate::wire::jsonrpc::{self, RpcError, DEAD_LETTER_CODE, DEAD_LETTER_MSG};
use crate::wire::{header, Message};

/// Answers a message the server cannot read at all with `error`, under a
/// null id.
pub(super) fn reject(
    state: &ServerState,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    error: &RpcError,
) -> Option<(Arc<str>, Message)> {
    route(state, reply_to, codec, state.engine.refused(None, error))
}

/// Answers every call of a request the server will not run with `error`,
/// each under its own id where the payload can be read (so that a caller
/// matching replies by id learns why); a notification gets nothing and is
/// counted as dropped.
pub(super) fn refuse(
    state: &ServerState,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    payload: &[u8],
    error: &RpcError,
) -> Option<(Arc<str>, Message)> {
    let answer = match codec.decode(payload) {
        Ok(json) => jsonrpc::answer_all(&json, error),
        Err(_) => Some(jsonrpc::error_response(None, error)),
    };
    state.engine.count_refused(error.code());
    let Some(answer) = answer else {
        state.count(ServerEvent::Dropped);
        tracing::debug!(code = error.code(), "a refused notification; dropped");
        return None;
    };
    state.engine.counters.errors.fetch_add(1, Ordering::Relaxed);
    route(state, reply_to, codec, answer)
}

/// The answer owed to the callers of a request its transport gave up on
/// (see [`Exhausted`]): each of its calls answered -32001, in the request's
/// own encoding, with how often it was delivered and where it went. `None`
/// when nobody waits for one (a notification, no `reply-to`). Counted as a
/// refused request of no method.
pub(super) fn dead_letter(
    state: &ServerState,
    request: &Message,
    exhausted: &Exhausted,
    codec: Codec,
) -> Option<(Arc<str>, Message)> {
    let error = RpcError::new(DEAD_LETTER_CODE, DEAD_LETTER_MSG).with_data(&serde_json::json!({
        "deliveries": exhausted.deliveries,
        "max_deliveries": exhausted.max_deliveries,
        "dead_letter": exhausted.dead_letter,
    }));
    state.engine.count_refused(error.code());
    let reply_to = request
        .headers
        .get_shared(header::REPLY_TO)
        .filter(|to| !to.is_empty())?;
    let answer = match codec.decode(&request.payload) {
        Ok(json) => jsonrpc::answer_all(&json, &error)?,
        Err(_) => jsonrpc::error_response(None, &error),
    };
    state.engine.counters.errors.fetch_add(1, Ordering::Relaxed);
    route(state, Some(reply_to), codec, answer)
}

/// `json` in `codec`, addressed to `reply_to`; counted and dropped when the
/// request named no `reply-to`.
pub(super) fn route(
    state: &ServerState,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    json: Vec<u8>,
) -> Option<(Arc<str>, Message)> {
    let Some(reply_to) = reply_to else {
        state.count(ServerEvent::Dropped);
        if let Some(held_back) = state.dropped_warnings.allow() {
            tracing::warn!(
                response = %Excerpt(&json),
                held_back,
                "a response has no reply-to address; dropped"
            );
        }
        return None;
    };
    let (payload, codec) = match codec.encode(json) {
        Ok(payload) => (payload, codec),
        Err(e) => {
            tracing::error!(error = %e, "re-encoding a response failed");
            let internal = jsonrpc::error_response(None, &RpcError::internal_error());
            (internal, Codec::Json)
        }
    };
    let mut reply = Message::new(payload);
    if codec != Codec::Json {
        reply
            .headers
            .insert(header::CONTENT_TYPE, codec.content_type());
    }
    if state.name_in_replies {
        reply.headers.insert(header::SERVED_BY, state.name.clone());
    }
    Some((Arc::clone(reply_to), reply))
}
