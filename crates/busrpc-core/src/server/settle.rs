//! How a delivery is settled, and what a failed settlement means: the one
//! policy, for every transport. A reply the broker refuses (too large, a
//! full inbox, not allowed) or that names no queue is final: the request is
//! acknowledged, and its caller told where the broker takes the telling.
//! Anything else that fails is released, to be delivered again.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::refuse;
use super::ending::{contexts, Endings, Instead};
use super::ServerState;
use crate::engine::Envelope;
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
    endings: Endings,
    permit: OwnedSemaphorePermit,
) {
    let settling = Settling {
        endings,
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
    /// What each request came to, told once the settlement says what
    /// became of it.
    endings: Endings,
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
                self.endings.tell(&self.state, None);
            }
            Err(SettleError { error, unsettled }) => self.failed(&error, unsettled),
        }
    }

    /// The policy for a settlement that failed: acknowledge what cannot
    /// succeed however often it is tried, release the rest.
    fn failed(mut self, error: &TransportError, unsettled: Option<Box<dyn Acknowledge>>) {
        let state = &self.state;
        let service = &state.service;
        let error_text;
        let (then, instead) = match (error, &self.reply_to) {
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
                tell_refused(state, reply_to, self.told_in, &self.request, why);
                (Settle::Ack, Instead::ReplyRefused(why))
            }
            (TransportError::NotServed(why), Some(_)) => {
                state.count(ServerEvent::ReplyFailed);
                (Settle::Ack, Instead::ReplyRefused(why))
            }
            (e, reply_to) => {
                if reply_to.is_some() {
                    state.count(ServerEvent::ReplyFailed);
                }
                error_text = e.to_string();
                (Settle::Release, Instead::Released(&error_text))
            }
        };
        // One line per request it held, or one for the delivery when none
        // can be read.
        let mut endings = std::mem::take(&mut self.endings);
        if endings.is_empty() {
            endings = Endings::logged_only(self.contexts());
        }
        if endings.is_empty() {
            match instead {
                Instead::ReplyRefused(why) => {
                    tracing::warn!(%service, error = %why, reply_to = self.reply_to.as_deref(), "the reply was refused; the request is acknowledged");
                }
                Instead::Released(why) => {
                    tracing::warn!(%service, error = %why, "settling a request failed; it is released for another try");
                }
            }
        }
        endings.tell(state, Some(instead));
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

    /// The request's calls, for the lines that name them (its headers are
    /// gone with the delivery; nothing but the logs uses these).
    fn contexts(&self) -> Vec<crate::service::Context> {
        contexts(
            &self.state,
            Some(self.told_in),
            &self.request,
            Envelope::bare(),
        )
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
