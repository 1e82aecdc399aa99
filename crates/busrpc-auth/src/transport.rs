//! The authenticated transport: a transport wrapping a transport.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busrpc_core::transport::kit::{Excerpt, Throttle};
use busrpc_core::transport::{
    Acknowledge, Deliveries, Demand, Inbox, Member, OnSettled, Settle, SettleError, Transport,
    TransportError,
};
use busrpc_core::{header, Message};

use crate::keys::Keys;
use crate::signature::Rejected;

/// How often a warning about rejected messages is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How many messages an [`Authenticated`] transport rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AuthStats {
    /// Requests and notifications (deliveries to a server) rejected, and
    /// acknowledged unrun.
    pub requests_rejected: u64,
    /// Replies (messages to a client's inbox) rejected and dropped.
    pub replies_rejected: u64,
    /// Cancel notices (broadcasts to a server) rejected and dropped: the
    /// calls they named run on.
    pub notices_rejected: u64,
}

/// What an authenticated transport and its acknowledgers share: the
/// transport it wraps, the keys, and what was rejected.
struct AuthState {
    inner: Arc<dyn Transport>,
    keys: Keys,
    requests_rejected: AtomicU64,
    replies_rejected: AtomicU64,
    notices_rejected: AtomicU64,
    warnings: Throttle,
}

impl AuthState {
    /// Counts and logs a rejected message.
    fn rejected(&self, address: &str, message: &Message, why: Rejected, signed: Signed) {
        let (counter, kind) = match signed {
            Signed::Request => (&self.requests_rejected, "request"),
            Signed::Reply => (&self.replies_rejected, "reply"),
            Signed::Notice => (&self.notices_rejected, "notice"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        count_rejected(kind, why);
        if let Some(held_back) = self.warnings.allow() {
            let signature = message.headers.get(header::SIGNATURE).unwrap_or("");
            tracing::warn!(%address, kind, reason = %why, signature = %Excerpt(signature.as_bytes()), held_back, "a message failed authentication; dropped");
        }
    }
}

/// A [`Transport`] whose messages are signed and checked with [`Keys`]:
/// clients and servers on it need nothing else (see the [crate](crate)).
///
/// A request that fails the check is acknowledged and never run, unanswered
/// (an answer would tell a forger what it got wrong, and let anyone bounce
/// messages into inboxes); a reply that fails it is dropped, and its caller
/// waits on. Both are counted ([`stats`](Self::stats), metric
/// `busrpc_auth_rejected_total`) and logged at warn, at most once per 10 s.
#[derive(Clone)]
pub struct Authenticated {
    state: Arc<AuthState>,
}

impl Authenticated {
    /// `inner`, signing and checking with `keys`. Everything a server
    /// sends goes through a delivery's settlement or through `publish`, the
    /// answer to a dead letter included, so all of it is signed.
    pub fn new(inner: Arc<dyn Transport>, keys: Keys) -> Self {
        Self {
            state: Arc::new(AuthState {
                inner,
                keys,
                requests_rejected: AtomicU64::new(0),
                replies_rejected: AtomicU64::new(0),
                notices_rejected: AtomicU64::new(0),
                warnings: Throttle::new(WARN_EVERY),
            }),
        }
    }

    /// The keys it signs and checks with.
    pub fn keys(&self) -> &Keys {
        &self.state.keys
    }

    /// How many messages it has rejected so far.
    pub fn stats(&self) -> AuthStats {
        AuthStats {
            requests_rejected: self.state.requests_rejected.load(Ordering::Relaxed),
            replies_rejected: self.state.replies_rejected.load(Ordering::Relaxed),
            notices_rejected: self.state.notices_rejected.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("keys", &self.state.keys)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for Authenticated {
    async fn publish(&self, address: &str, mut message: Message) -> Result<(), TransportError> {
        self.state.keys.sign_request(address, &mut message);
        self.state.inner.publish(address, message).await
    }

    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        let deliveries = self.state.inner.consume(address, group, demand).await?;
        let state = self.state.clone();
        let address: Arc<str> = address.into();
        Ok(deliveries.filter_map(move |delivery| {
            let state = state.clone();
            let address = address.clone();
            async move {
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(e) => return Some(Err(e)),
                };
                match state.keys.verify_request(&address, delivery.message()) {
                    Ok(()) => Some(Ok(delivery.map_acker(|acker| SigningAck {
                        acker,
                        state: state.clone(),
                    }))),
                    Err(why) => {
                        state.rejected(&address, delivery.message(), why, Signed::Request);
                        // Settled, or it would come back to every server in turn.
                        if let Err(e) = delivery.settle(Settle::Ack).await {
                            tracing::warn!(%address, error = %e, "acknowledging a rejected message failed");
                        }
                        None
                    }
                }
            }
        }))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        let inbox = self.state.inner.inbox().await?;
        let address = inbox.address().to_owned();
        Ok(checked(inbox, self.state.clone(), &address, Signed::Reply))
    }

    /// Signed as a request to the queue at `address` is: a cancel notice
    /// stops a call only if its sender holds a key.
    async fn broadcast(&self, address: &str, mut message: Message) -> Result<(), TransportError> {
        self.state.keys.sign_request(address, &mut message);
        self.state.inner.broadcast(address, message).await
    }

    /// What is unsigned or wrongly signed is dropped and counted
    /// ([`AuthStats::notices_rejected`]).
    async fn subscribe(&self, address: &str) -> Result<Option<Inbox>, TransportError> {
        let notices = self.state.inner.subscribe(address).await?;
        let state = self.state.clone();
        Ok(notices.map(|notices| checked(notices, state, address, Signed::Notice)))
    }

    async fn members(
        &self,
        address: &str,
        group: &str,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        self.state.inner.members(address, group).await
    }

    fn admin(&self) -> Option<&dyn busrpc_core::transport::Admin> {
        self.state.inner.admin()
    }

    fn service_address(&self, service: &str) -> String {
        self.state.inner.service_address(service)
    }

    fn max_payload_bytes(&self) -> Option<usize> {
        self.state.inner.max_payload_bytes()
    }
}

/// What a checked message is, and so how it was signed.
#[derive(Clone, Copy)]
enum Signed {
    /// A request to a queue.
    Request,
    /// A reply to an inbox.
    Reply,
    /// A cancel notice broadcast to a queue's servers: signed as a request
    /// to the queue is.
    Notice,
}

/// `messages` with what is unsigned or wrongly signed for `address`
/// dropped and counted.
fn checked(messages: Inbox, state: Arc<AuthState>, address: &str, signed: Signed) -> Inbox {
    let address: Arc<str> = address.into();
    messages.filter_map(move |message| {
        let checked = match message {
            Ok(message) => {
                let verified = match signed {
                    Signed::Reply => state.keys.verify(&address, &message),
                    Signed::Request | Signed::Notice => {
                        state.keys.verify_request(&address, &message)
                    }
                };
                match verified {
                    Ok(()) => Some(Ok(message)),
                    Err(why) => {
                        state.rejected(&address, &message, why, signed);
                        None
                    }
                }
            }
            Err(e) => Some(Err(e)),
        };
        std::future::ready(checked)
    })
}

/// A delivery's acknowledger that signs the reply (a response, or the
/// answer to a dead letter) before the transport's own acknowledger sends
/// it through the inner transport: signed once.
struct SigningAck {
    acker: Box<dyn Acknowledge>,
    state: Arc<AuthState>,
}

impl SigningAck {
    fn sign(&self, how: &mut Settle) {
        if let Some((address, message)) = how.reply_mut() {
            self.state.keys.sign(address, message);
        }
    }
}

#[async_trait]
impl Acknowledge for SigningAck {
    async fn settle(self: Box<Self>, mut how: Settle) -> Result<(), SettleError> {
        self.sign(&mut how);
        self.acker.settle(how).await
    }

    async fn settle_then(self: Box<Self>, mut how: Settle, then: OnSettled) {
        self.sign(&mut how);
        self.acker.settle_then(how, then).await;
    }
}

/// Counts a rejected message as the metric
/// [`AUTH_REJECTED`](busrpc_core::metrics::AUTH_REJECTED) (feature
/// `metrics`; nothing without it).
fn count_rejected(kind: &'static str, why: Rejected) {
    #[cfg(feature = "metrics")]
    ::metrics::counter!(
        busrpc_core::metrics::AUTH_REJECTED,
        "kind" => kind,
        "reason" => why.as_str(),
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (kind, why);
}
