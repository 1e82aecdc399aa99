//! How a delivery is settled, and what its outcome means: the one policy.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::answer::refuse;
use super::ServerState;
use crate::telemetry::metrics::ServerEvent;
use crate::transport::{Delivery, TransportError};
use crate::wire::codec::Codec;
use crate::wire::jsonrpc::RpcError;
use crate::wire::Message;

/// Settles `delivery`, replying first if there is a reply; `permit` is
/// given back when the outcome is reported, which may be after this
/// returns (a transport that settles in batches).
pub(super) async fn settle(
    state: Arc<ServerState>,
    delivery: Delivery,
    reply: Option<(Arc<str>, Message)>,
    told_in: Codec,
    permit: OwnedSemaphorePermit,
) {
    let reply_to = reply.as_ref().map(|(to, _)| to.clone());
    let server = state.clone();
    // Kept (a reference count, no copy) to tell the caller if the broker
    // refuses the reply.
    let request: Bytes = delivery.message().payload.clone();
    let on_settled = Box::new(move |outcome: Result<(), TransportError>| {
        let service = &server.service;
        match (outcome, reply_to) {
            (Ok(()), _) => server.count(ServerEvent::Acked),
            (Err(e), None) => {
                tracing::warn!(%service, error = %e, "acknowledging failed");
            }
            (Err(TransportError::Rejected(why)), Some(reply_to)) => {
                // Final: the transport acknowledged the request.
                server.count(ServerEvent::Acked);
                server.count(ServerEvent::ReplyFailed);
                tracing::warn!(%service, error = %why, %reply_to, "the broker refused the reply; the request is acknowledged and its caller told");
                tell_refused(&server, &reply_to, told_in, &request, &why);
            }
            (Err(TransportError::NotServed(_)), Some(reply_to)) => {
                // Final too: the caller named an address that is no queue.
                server.count(ServerEvent::Acked);
                server.count(ServerEvent::ReplyFailed);
                tracing::warn!(%service, %reply_to, "the reply-to names no queue on this broker; the request is acknowledged, its reply dropped");
            }
            (Err(e), Some(reply_to)) => {
                server.count(ServerEvent::ReplyFailed);
                tracing::warn!(%service, error = %e, %reply_to, "answering failed");
            }
        }
        drop(permit);
    });
    delivery
        .settle_then(&*state.transport, reply, on_settled)
        .await;
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
