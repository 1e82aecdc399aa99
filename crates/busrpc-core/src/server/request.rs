//! One delivery's path: read it, refuse or run it, and route its reply.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tokio::sync::OwnedSemaphorePermit;

use super::answer::{dead_letter, refuse, reject, route};
use super::ending::{contexts, Came, Endings};
use super::settle::settle;
use super::ServerState;
use crate::engine::{Envelope, Seen};
use crate::service::Arrival;
use crate::telemetry::metrics::ServerEvent;
use crate::transport::{Delivery, Settle};
use crate::wire::codec::{Codec, CodecError};
use crate::wire::jsonrpc::RpcError;
use crate::wire::{header, Deadline, Message, Serving};

/// Handles one delivery: skip it, refuse it or run it, or answer it -32001
/// if its transport gave up on it, then settle it (see [`settle`]).
/// `permit` is given back when the settlement is reported.
pub(super) async fn handle(
    state: Arc<ServerState>,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
) {
    let request = delivery.message();
    // Read once: it is answered in it, and a refused reply is told in it.
    let codec = Codec::from_content_type(request.headers.get(header::CONTENT_TYPE));
    let told_in = codec.as_ref().map_or(Codec::Json, |c| *c);
    let arrival = Arrival {
        attempt: delivery.attempt(),
        queue_wait: delivery.published().map(waited_since),
    };
    let (how, endings) = match delivery.exhaustion() {
        Some(exhausted) => {
            let env = Envelope {
                headers: &request.headers,
                deadline: request.headers.deadline().ok().flatten(),
                arrival,
                seen: None,
            };
            let contexts = contexts(&state, codec.as_ref().ok().copied(), &request.payload, env);
            let endings = Endings::each(contexts, || Came::DeadLettered {
                deliveries: exhausted.deliveries,
                max_deliveries: exhausted.max_deliveries,
                queue: exhausted.dead_letter.clone(),
            });
            if endings.is_empty() {
                // No request in it can be read, so no line names one.
                tracing::warn!(service = %state.service, deliveries = exhausted.deliveries, max_deliveries = exhausted.max_deliveries, dead_letter = %exhausted.dead_letter, "an unreadable message delivered too often is dead-lettered");
            }
            let reply = dead_letter(&state, request, exhausted, told_in);
            (Settle::DeadLetter { reply }, endings)
        }
        None => {
            let mut endings = Endings::default();
            let reply = process(&state, request, arrival, codec, &mut endings).await;
            let how = match reply {
                Some((to, message)) => Settle::Reply { to, message },
                None => Settle::Ack,
            };
            (how, endings)
        }
    };
    settle(state, delivery, how, told_in, endings, permit).await;
}

/// How long ago `published` was, by this machine's clock: zero if that
/// is in the future (clocks that disagree), never an error.
fn waited_since(published: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(published)
        .unwrap_or_default()
}

/// The reply to one message and where it goes, or `None` when there is
/// nothing to send; `endings` gets what each of its requests came to.
async fn process(
    state: &ServerState,
    message: &Message,
    arrival: Arrival,
    codec: Result<Codec, CodecError>,
    endings: &mut Endings,
) -> Option<(Arc<str>, Message)> {
    let headers = &message.headers;
    // An empty reply-to names nowhere (Kafka has no topic "", Redis would
    // make a key of it): the request is served as if it had none.
    let reply_to = headers
        .get_shared(header::REPLY_TO)
        .filter(|to| !to.is_empty());
    let deadline = match headers.deadline() {
        Ok(deadline) => deadline,
        Err(e) => {
            // Executing it would guess: ignoring the header might run work
            // nobody waits for; treating it as passed, drop work someone does.
            let codec = codec.unwrap_or_default();
            let error = RpcError::invalid_request().with_data(&e.to_string());
            return refuse(state, reply_to, codec, &message.payload, &error);
        }
    };
    let env = Envelope {
        headers,
        deadline,
        arrival,
        // Collected only for middleware to be told: none, no cost.
        seen: None,
    };
    if deadline.is_some_and(|d| d.has_passed()) {
        state.count(ServerEvent::Expired);
        let contexts = contexts(state, codec.as_ref().ok().copied(), &message.payload, env);
        *endings = Endings::each(contexts, || Came::Expired);
        return None;
    }
    let codec = match codec {
        Ok(codec) => codec,
        Err(e) => {
            return reject(
                state,
                reply_to,
                Codec::Json,
                &RpcError::parse_error().with_data(&e.to_string()),
            )
        }
    };
    let size = message.payload.len();
    if size > state.limits.max_message_bytes {
        let reason = format!(
            "message of {size} bytes exceeds this server's limit of {} bytes",
            state.limits.max_message_bytes
        );
        return reject(
            state,
            reply_to,
            codec,
            &RpcError::invalid_request().with_data(&reason),
        );
    }
    if message.payload.is_empty() {
        // No request at all (a Redis entry without a `payload` field, a
        // Kafka record with a null value): answered if it says where,
        // settled either way.
        let error = RpcError::invalid_request().with_data("the message has no payload");
        return reject(state, reply_to, codec, &error);
    }
    let json = match codec.decode(&message.payload) {
        Ok(json) => json,
        Err(e) => {
            return reject(
                state,
                reply_to,
                codec,
                &RpcError::parse_error().with_data(&e.to_string()),
            )
        }
    };
    let seen = state.engine.has_middleware().then(Seen::default);
    let env = Envelope {
        seen: seen.as_ref(),
        ..env
    };
    if state.cancels.came_before(reply_to, &json) {
        state.count(ServerEvent::Abandoned);
        let contexts = state.engine.contexts(&json, env);
        *endings = Endings::each(contexts, || Came::Abandoned);
        return None;
    }
    // The handler, and every call it makes, sees the request's deadline
    // and trace context.
    let serving = Serving::of(deadline, headers);
    let work = async {
        match serving {
            Some(serving) => serving.scope(respond(state, env, &json)).await,
            None => respond(state, env, &json).await,
        }
    };
    let stop_at = deadline.filter(|_| state.cancel_on_deadline);
    let response = match watched(state, stop_at, reply_to, &json, work).await {
        Ran::Done(response) => response,
        // Nothing is sent, so every call of it ended so, a batch's
        // finished ones too.
        Ran::PastDeadline => {
            state.count(ServerEvent::Cancelled);
            let contexts = state.engine.contexts(&json, env);
            *endings = Endings::each(contexts, || Came::Cancelled);
            return None;
        }
        Ran::Abandoned => {
            state.count(ServerEvent::Abandoned);
            let contexts = state.engine.contexts(&json, env);
            *endings = Endings::each(contexts, || Came::Abandoned);
            return None;
        }
    };
    if let Some(seen) = &seen {
        *endings = Endings::ran(seen);
    }
    let response = response?;
    let reply = route(state, reply_to, codec, response)?;
    let size = reply.1.payload.len();
    if size > state.max_reply_bytes {
        // The broker would refuse it, or the caller's own limit would.
        state.count(ServerEvent::Oversized);
        let limit = state.max_reply_bytes;
        let reason = format!("the reply of {size} bytes is larger than the limit of {limit}");
        let contexts = state.engine.contexts(&json, env);
        *endings = Endings::each(contexts, || Came::ReplyRefused(reason.clone()));
        let error = RpcError::internal_error().with_data(&serde_json::json!({
            "error": "the reply is larger than the limit",
            "reply_bytes": size,
            "max_bytes": limit,
        }));
        return refuse(state, reply_to, codec, &message.payload, &error);
    }
    Some(reply)
}

/// The engine's response to `json` (which runs each call in a span of its
/// own, the caller's trace context its parent).
async fn respond(state: &ServerState, env: Envelope<'_>, json: &[u8]) -> Option<Vec<u8>> {
    state.engine.respond(json, env).await
}

/// How a request's run ended.
enum Ran<T> {
    Done(T),
    /// Still running at its deadline.
    PastDeadline,
    /// Its caller gave up and said so.
    Abandoned,
}

/// Runs `work` until it is done, `stop_at` passes, or a cancel notice
/// names it. The timer and the registration are made only if `work` has
/// to wait: most handlers finish in their first poll, and either per
/// request would cost every one of them.
async fn watched<F: Future>(
    state: &ServerState,
    stop_at: Option<Deadline>,
    reply_to: Option<&Arc<str>>,
    json: &[u8],
    work: F,
) -> Ran<F::Output> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    if let Poll::Ready(output) = first {
        return Ran::Done(output);
    }
    let running = reply_to.and_then(|to| state.cancels.running(to, json));
    let abandoned = async {
        match &running {
            Some(running) => running.token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let past = async {
        match stop_at {
            Some(deadline) => tokio::time::sleep(deadline.remaining()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        output = &mut work => Ran::Done(output),
        () = abandoned => Ran::Abandoned,
        () = past => Ran::PastDeadline,
    }
}
