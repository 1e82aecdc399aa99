//! How a delivery is settled, and what a failed settlement means: the one
//! policy, for every transport. A reply the broker refuses (too large, a
//! full inbox, not allowed) or that names no queue is final: the request is
//! acknowledged, and its caller told where the broker takes the telling.
//! Anything else that fails is released, to be delivered again.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::refuse;
use super::ServerState;
use crate::telemetry::metrics::ServerEvent;
use crate::transport::{Acknowledge, Delivery, Settle, SettleError, TransportError};
use crate::wire::codec::Codec;
use crate::wire::jsonrpc::RpcError;

/// Settles `delivery` as `how` says; `permit` is given back when the
/// outcome is reported (which may be after this returns: a transport that
/// settles in batches), or after the settlement that a failure calls for.
pub(super) async fn settle(
    state: Arc<ServerState>,
    delivery: Delivery,
    how: Settle,
    told_in: Codec,
    permit: OwnedSemaphorePermit,
) {
    let settling = Settling {
        reply_to: match &how {
            Settle::Reply { to, .. }
            | Settle::DeadLetter {
                reply: Some((to, _)),
            } => Some(to.clone()),
            _ => None,
        },
        dead_letter: matches!(how, Settle::DeadLetter { .. }),
        // Kept (a reference count, no copy) to tell the caller if the
        // broker refuses the reply.
        request: delivery.message().payload.clone(),
        told_in,
        state,
        permit,
    };
    delivery
        .settle_then(how, Box::new(move |outcome| settling.done(outcome)))
        .await;
}

/// One settlement under way, and what its outcome is counted and acted on
/// with.
struct Settling {
    state: Arc<ServerState>,
    reply_to: Option<Arc<str>>,
    dead_letter: bool,
    request: Bytes,
    told_in: Codec,
    permit: OwnedSemaphorePermit,
}

impl Settling {
    fn done(self, outcome: Result<(), SettleError>) {
        match outcome {
            Ok(()) => {
                self.state.count(ServerEvent::Acked);
                if self.dead_letter {
                    self.state.dead_lettered();
                }
            }
            Err(SettleError { error, unsettled }) => self.failed(&error, unsettled),
        }
    }

    /// The policy for a settlement that failed: acknowledge what cannot
    /// succeed however often it is tried, release the rest.
    fn failed(self, error: &TransportError, unsettled: Option<Box<dyn Acknowledge>>) {
        let state = &self.state;
        let service = &state.service;
        let then = match (error, &self.reply_to) {
            // Refused: another try would be refused alike.
            (
                TransportError::Rejected(why)
                | TransportError::Overloaded(why)
                | TransportError::PermissionDenied(why)
                | TransportError::TooLarge(why)
                | TransportError::NotFound(why),
                Some(reply_to),
            ) => {
                state.count(ServerEvent::ReplyFailed);
                tracing::warn!(%service, error = %why, %reply_to, "the broker refused the reply; the request is acknowledged and its caller told");
                tell_refused(state, reply_to, self.told_in, &self.request, why);
                Settle::Ack
            }
            (TransportError::NotServed(_), Some(reply_to)) => {
                state.count(ServerEvent::ReplyFailed);
                tracing::warn!(%service, %reply_to, "the reply-to names no queue on this broker; the request is acknowledged, its reply dropped");
                Settle::Ack
            }
            (e, Some(reply_to)) => {
                state.count(ServerEvent::ReplyFailed);
                tracing::warn!(%service, error = %e, %reply_to, "answering failed; the request is released for another try");
                Settle::Release
            }
            (e, None) => {
                tracing::warn!(%service, error = %e, "settling a request failed; it is released for another try");
                Settle::Release
            }
        };
        let Some(acker) = unsettled else {
            // Settled all the same (a refused reply acknowledged in the
            // same round trip), or its consumer is gone.
            if matches!(then, Settle::Ack) {
                state.count(ServerEvent::Acked);
            }
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Holds the permit until done: a shutdown waits for it.
        runtime.spawn(async move {
            let acknowledging = matches!(then, Settle::Ack);
            match acker.settle(then).await {
                Ok(()) if acknowledging => self.state.count(ServerEvent::Acked),
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(service = %self.state.service, error = %e, "settling a request after a failed settlement failed too; the broker hands it out again when its consumer is gone");
                }
            }
            drop(self.permit);
        });
    }
}

/// Sends the caller of a request whose reply the broker refused a small
/// -32603 saying why, once, without waiting: the broker may refuse that
/// too (a full inbox), and then there is no one left to tell.
fn tell_refused(
    state: &Arc<ServerState>,
    reply_to: &Arc<str>,
    codec: Codec,
    request: &[u8],
    why: &str,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let why: String = why.chars().take(200).collect();
    let error = RpcError::internal_error().with_data(&serde_json::json!({
        "error": "the broker refused the reply",
        "reason": why,
    }));
    let Some((to, message)) = refuse(state, Some(reply_to), codec, request, &error) else {
        return;
    };
    let transport = state.transport.clone();
    runtime.spawn(async move {
        if let Err(e) = transport.publish(&to, message).await {
            tracing::debug!(reply_to = %to, error = %e, "telling the caller of a refused reply failed too");
        }
    });
}
