//! How a delivery is settled, and what a failed settlement means: the one
//! policy, for every transport. A reply the broker refuses (too large, a
//! full inbox, not allowed) or that names no queue is final: the request is
//! acknowledged, and its caller told where the broker takes the telling.
//! A reply the broker could not take for a moment (a cut of the network, a
//! restart) is sent again until its call's deadline: running the request
//! again would cost its handler's work and answer it twice; past the
//! deadline nobody waits for it, and the request is acknowledged. Anything
//! else that fails is released, to be delivered again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::refuse;
use super::ending::{contexts, Endings, Instead};
use super::ServerState;
use crate::engine::Envelope;
use crate::telemetry::metrics::ServerEvent;
use crate::transport::kit::Backoff;
use crate::transport::{Acknowledge, Delivery, Settle, SettleError, TransportError};
use crate::wire::codec::Codec;
use crate::wire::jsonrpc::RpcError;
use crate::wire::{Deadline, Message};

/// How long a reply to a request without a deadline (a foreign caller's)
/// is sent again before its request is released: a busrpc client's default
/// timeout.
const NO_DEADLINE_SENT_AGAIN_FOR: Duration = Duration::from_secs(30);

/// A reply kept to be sent again (a reference count on its payload and a
/// copy of its few headers).
struct Again {
    to: Arc<str>,
    message: Message,
    deadline: Option<Deadline>,
}

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
    let again = match &how {
        Settle::Reply { to, message } => Some(Again {
            to: to.clone(),
            message: message.clone(),
            deadline: delivery.message().headers.deadline().ok().flatten(),
        }),
        _ => None,
    };
    let settling = Settling {
        again,
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
    again: Option<Again>,
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

    /// A settlement failed: a reply the broker could not take for a moment
    /// is sent again (see [`Settling::send_again`]); anything else goes to
    /// [`Settling::give_up`].
    fn failed(mut self, error: &TransportError, unsettled: Option<Box<dyn Acknowledge>>) {
        let again = self.again.take().filter(|_| error.is_transient());
        match (again, unsettled, tokio::runtime::Handle::try_current()) {
            (Some(again), Some(acker), Ok(runtime)) => {
                runtime.spawn(self.send_again(acker, again, error.to_string()));
            }
            (_, unsettled, _) => self.give_up(error, unsettled),
        }
    }

    /// Sends a reply again, backing off, until it is taken or its call's
    /// deadline passes; then nobody waits for it: dropped, counted as a
    /// failed reply, and its request acknowledged. A request without a
    /// deadline is released after [`NO_DEADLINE_SENT_AGAIN_FOR`]. Holds the
    /// handler slot meanwhile, as the settlement would have.
    async fn send_again(mut self, mut acker: Box<dyn Acknowledge>, again: Again, mut last: String) {
        let sending_for = again
            .deadline
            .map_or(NO_DEADLINE_SENT_AGAIN_FOR, Deadline::remaining);
        let give_up_at = tokio::time::Instant::now() + sending_for;
        let mut backoff = Backoff::new();
        let mut tries = 1;
        loop {
            let pause = backoff.failed();
            if tokio::time::Instant::now() + pause >= give_up_at {
                break;
            }
            tokio::time::sleep(pause).await;
            tries += 1;
            let how = Settle::Reply {
                to: again.to.clone(),
                message: again.message.clone(),
            };
            match acker.settle(how).await {
                Ok(()) => {
                    tracing::debug!(service = %self.state.service, tries, "a reply sent again was taken");
                    return self.done(Ok(()));
                }
                Err(SettleError {
                    error,
                    unsettled: Some(unsettled),
                }) if error.is_transient() => {
                    acker = unsettled;
                    last = error.to_string();
                }
                Err(SettleError { error, unsettled }) => return self.give_up(&error, unsettled),
            }
        }
        if again.deadline.is_none() {
            let error = TransportError::Unavailable(last.into());
            return self.give_up(&error, Some(acker));
        }
        self.state.count(ServerEvent::ReplyFailed);
        let endings = std::mem::take(&mut self.endings);
        if endings.is_empty() {
            tracing::warn!(service = %self.state.service, error = %last, reply_to = %again.to, "the broker was unreachable until the deadline; the reply is dropped and the request acknowledged");
        }
        endings.tell(&self.state, Some(Instead::ReplyExpired(&last)));
        match acker.settle(Settle::Ack).await {
            Ok(()) => self.state.count(ServerEvent::Acked),
            Err(e) => {
                tracing::warn!(service = %self.state.service, error = %e, "acknowledging a request whose reply was dropped failed; the broker hands it out again when its consumer is gone");
            }
        }
    }

    /// The policy for a settlement that failed for good: acknowledge what
    /// cannot succeed however often it is tried, release the rest.
    fn give_up(mut self, error: &TransportError, unsettled: Option<Box<dyn Acknowledge>>) {
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
                Instead::ReplyRefused(why) | Instead::ReplyExpired(why) => {
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
