//! How each request of a delivery came out: kept until the delivery is
//! settled (which can still change it: a refused reply, a release), then
//! logged and told to the middleware ([`Middleware::ended`]).
//!
//! [`Middleware::ended`]: crate::Middleware::ended

use super::ServerState;
use crate::engine::{Envelope, Seen};
use crate::service::{Context, Ending};
use crate::wire::codec::Codec;
use crate::wire::jsonrpc::RpcError;

/// The contexts of the requests in `payload`, for the endings of a
/// message that did not run (or whose reply failed): none when its
/// encoding or payload cannot be read. Only these rare paths decode twice.
pub(super) fn contexts(
    state: &ServerState,
    codec: Option<Codec>,
    payload: &[u8],
    env: Envelope<'_>,
) -> Vec<Context> {
    codec
        .and_then(|codec| codec.decode(payload).ok())
        .map(|json| state.engine.contexts(&json, env))
        .unwrap_or_default()
}

/// What a request came to before its delivery was settled.
pub(super) enum Came {
    /// It ran: the handler's result (the engine logged it).
    Ran(Result<(), RpcError>),
    Cancelled,
    Abandoned,
    Expired,
    DeadLettered {
        deliveries: u64,
        max_deliveries: u64,
        queue: String,
    },
    /// It ran, and the server would not send its reply (over the limit).
    ReplyRefused(String),
}

impl Came {
    fn ending(&self) -> Ending<'_> {
        match self {
            Self::Ran(Ok(())) => Ending::Answered,
            Self::Ran(Err(e)) => Ending::Failed(e),
            Self::Cancelled => Ending::Cancelled,
            Self::Abandoned => Ending::Abandoned,
            Self::Expired => Ending::Expired,
            Self::DeadLettered { deliveries, .. } => Ending::DeadLettered {
                deliveries: *deliveries,
            },
            Self::ReplyRefused(reason) => Ending::ReplyRefused { reason },
        }
    }
}

/// What a failed settlement made of every request of its delivery.
#[derive(Clone, Copy)]
pub(super) enum Instead<'a> {
    ReplyRefused(&'a str),
    ReplyExpired(&'a str),
    Released(&'a str),
}

/// The requests of one delivery, each with what it came to. Empty where
/// there is nothing to tell: requests that ran with no middleware to
/// tell (the engine logged them), or a payload the server cannot read.
#[derive(Default)]
pub(super) struct Endings {
    calls: Vec<(Context, Came)>,
    /// Whether the middleware is told, or the endings only logged (the
    /// requests never went through it).
    tell: bool,
}

impl Endings {
    /// Every request of `contexts` came to the same.
    pub(super) fn each(contexts: Vec<Context>, came: impl Fn() -> Came) -> Self {
        Self {
            calls: contexts.into_iter().map(|ctx| (ctx, came())).collect(),
            tell: true,
        }
    }

    /// The requests the engine ran, as it saw them.
    pub(super) fn ran(seen: &Seen) -> Self {
        let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
        Self {
            calls: seen
                .into_iter()
                .map(|(ctx, r)| (ctx, Came::Ran(r)))
                .collect(),
            tell: true,
        }
    }

    /// Requests that ran with no middleware to tell, or that the server
    /// refused itself, whose settlement failed: logged, not told.
    pub(super) fn logged_only(contexts: Vec<Context>) -> Self {
        Self {
            calls: contexts
                .into_iter()
                .map(|ctx| (ctx, Came::Ran(Ok(()))))
                .collect(),
            tell: false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Logs each ending and tells the middleware: as it came, or as
    /// `instead` says when the settlement failed. One line per request.
    pub(super) fn tell(self, state: &ServerState, instead: Option<Instead<'_>>) {
        for (ctx, came) in &self.calls {
            let ending = match instead {
                None => came.ending(),
                Some(Instead::ReplyRefused(reason)) => Ending::ReplyRefused { reason },
                Some(Instead::ReplyExpired(reason)) => Ending::ReplyExpired { reason },
                Some(Instead::Released(reason)) => Ending::Released { reason },
            };
            log(state, ctx, came, &ending);
            if self.tell {
                state.engine.ended(ctx, &ending);
            }
        }
    }
}

/// The one line for `ending`, at the level [`Ending`] documents.
fn log(state: &ServerState, ctx: &Context, came: &Came, ending: &Ending<'_>) {
    let (service, server, method, id) = (&state.service, &state.name, ctx.method(), ctx.id_text());
    match ending {
        // The engine logged it when it ran.
        Ending::Answered | Ending::Failed(_) => {}
        Ending::Cancelled => {
            let deadline = ctx.deadline().map(|d| d.to_string());
            tracing::info!(%service, %server, method, id, deadline, "cancelled: still running when its deadline passed; nothing sent");
        }
        Ending::Abandoned => {
            tracing::info!(%service, %server, method, id, "abandoned: its caller gave up on it; nothing sent");
        }
        Ending::Expired => {
            let deadline = ctx.deadline().map(|d| d.to_string());
            tracing::info!(%service, %server, method, id, deadline, "skipped: its deadline had passed when it was read");
        }
        Ending::DeadLettered { deliveries } => {
            // Only a request that came to it ends so: its queue is there.
            if let Came::DeadLettered {
                max_deliveries,
                queue,
                ..
            } = came
            {
                tracing::warn!(%service, %server, method, id, deliveries, max_deliveries, dead_letter = %queue, "dead-lettered: delivered too often; its caller is answered -32001");
            }
        }
        Ending::ReplyRefused { reason } => {
            tracing::warn!(%service, %server, method, id, reason, "its reply was refused; the request is acknowledged and its caller told where it can be");
        }
        Ending::ReplyExpired { reason } => {
            tracing::warn!(%service, %server, method, id, reason, "the broker was unreachable until its deadline; its reply is dropped and the request acknowledged");
        }
        Ending::Released { reason } => {
            tracing::warn!(%service, %server, method, id, reason, "settling it failed; released for another try");
        }
    }
}
