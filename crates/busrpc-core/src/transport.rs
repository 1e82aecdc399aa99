//! The one seam between the engine and a broker.
//!
//! A broker has to do four things for busrpc: publish a message to an
//! address; hand a service's request queue out to a group of competing
//! consumers; let a consumer acknowledge or release each delivery; and give a
//! client a private inbox for its replies. Everything else (JSON-RPC, routing,
//! deadlines, correlation, limits) lives in the engine, once, for every broker.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream};

use crate::message::Message;

/// A boxed error from a broker client library, kept as the source of a
/// [`TransportError`] so that broker types stay out of busrpc-core's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The broker cannot be reached now; the operation may succeed later.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The broker refused the operation (queue full, message too large,
    /// no permission, ...). Retrying the same thing will not help.
    #[error("broker rejected the operation: {0}")]
    Rejected(String),
    /// A request was published to a service's queue that does not exist on
    /// this broker: no server of the service has ever started here (most
    /// often a typo in the service's name). Only servers create their
    /// queues; a client never does.
    #[error("nobody serves {0} on this broker: no server of it has ever started here")]
    NotServed(String),
    /// The transport, consumer or inbox has been closed.
    #[error("transport closed")]
    Closed,
    /// The broker URL cannot be used. Shown with its secrets masked (see
    /// [`redact_url`]).
    #[error("invalid broker URL {:?}: {reason}", redact_url(url))]
    InvalidUrl {
        /// The URL as given, secrets included: show it through
        /// [`redact_url`].
        url: String,
        /// What is wrong with it, and what to do instead.
        reason: String,
    },
    /// A transport's configuration (built in code, not parsed from a URL)
    /// cannot be used: what is wrong with it, never a secret's value.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// Anything else the broker client reported.
    #[error(transparent)]
    Other(BoxError),
}

impl TransportError {
    /// Whether the same operation may succeed if tried again later: only
    /// [`Unavailable`](Self::Unavailable). Every other error is fatal for
    /// it (no permission, a deleted queue, a closed consumer, a bad URL): a
    /// server that keeps getting one stops and reports it (see
    /// [`ServerHandle::stopped`](crate::ServerHandle::stopped)) rather
    /// than retry forever while its callers time out.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Unavailable(_))
    }
}

/// A broker as the engine sees it. Implementations: [`MemoryTransport`]
/// here, Kafka and Redis in their own crates.
///
/// Addresses are plain strings: a service's request queue (see
/// [`service_address`](Transport::service_address)) or an inbox's address
/// (which travels in the `reply-to` header).
///
/// [`MemoryTransport`]: crate::memory::MemoryTransport
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes `message` to `address`, returning once the broker has taken it.
    ///
    /// A service's queue is created by [`consume`](Transport::consume), never
    /// here: publishing to one that does not exist fails with
    /// [`TransportError::NotServed`] (the transport may remember the queues it
    /// has seen, so the check costs nothing per call). An inbox that is gone
    /// takes the message and drops it: its reader has left.
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError>;

    /// Joins `group` as one more competing consumer of the queue at `address`:
    /// each message goes to one member of each group. A delivery that its
    /// consumer neither acknowledges nor releases goes to another member once
    /// that consumer is gone (the stream dropped, the process dead), and
    /// never while it lives: a transport whose broker hands idle deliveries
    /// over (Redis) keeps the ones in hand alive.
    ///
    /// `demand` tells how many more deliveries the consumer's owner can take
    /// now; a transport that reads ahead reads no more than that.
    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError>;

    /// Opens a private inbox: an address only this inbox reads, ready to
    /// receive before this returns.
    async fn inbox(&self) -> Result<Inbox, TransportError>;

    /// The address of a service's request queue.
    fn service_address(&self, service: &str) -> String {
        format!("busrpc.{service}")
    }

    /// The largest payload this transport publishes, if it has a limit of
    /// its own (Kafka: `message.max.bytes`). A server checks every reply
    /// against it, and its own [`Limits`](crate::Limits), before publishing,
    /// and answers a reply over it with a small error instead: the broker
    /// would refuse it, and the caller would hear nothing.
    fn max_payload_bytes(&self) -> Option<usize> {
        None
    }

    /// Hands the transport the signer of an authenticated transport that
    /// wraps it (see `busrpc_core::auth`, feature `auth`), for the messages
    /// it sends on its own rather than through [`publish`](Self::publish)
    /// or a delivery's acknowledger: the dead-letter answer. A transport
    /// that sends none needs nothing here; one that does keeps it in a
    /// [`SignerSlot`].
    fn sign_own_messages(&self, signer: Signer) {
        let _ = signer;
    }
}

/// Signs a message about to be published to an address (see
/// [`Transport::sign_own_messages`]).
pub type Signer = Arc<dyn Fn(&str, &mut Message) + Send + Sync + 'static>;

/// Where a transport keeps the [`Signer`] of its own messages: none until
/// one is given, the latest after.
#[derive(Default)]
pub struct SignerSlot(std::sync::RwLock<Option<Signer>>);

impl SignerSlot {
    /// Signs with `signer` from now on.
    pub fn set(&self, signer: Signer) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(signer);
    }

    /// Signs `message` for `address`, if a signer was given.
    pub fn sign(&self, address: &str, message: &mut Message) {
        if let Some(sign) = &*self.0.read().unwrap_or_else(|e| e.into_inner()) {
            sign(address, message);
        }
    }
}

impl fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.read().unwrap_or_else(|e| e.into_inner()).is_some();
        f.debug_tuple("SignerSlot").field(&set).finish()
    }
}

/// Whether a URL option or broker-client setting named `key` holds a
/// secret (a password, a token, a private key), so that its value is never
/// shown: `sasl.password`, `ssl.key.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, `password`, `token`, ...
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
}

/// `url` fit for an error message or a log line: the password of its user
/// info and the value of every option that [holds a
/// secret](is_secret_option) replaced by `***`. Works on URLs the `url`
/// crate cannot parse too (`kafka://a:9092,b:9092`).
///
/// ```
/// use busrpc_core::transport::redact_url;
/// assert_eq!(
///     redact_url("redis://app:s3cr%40t@db:6379/0?prefix=x"),
///     "redis://app:***@db:6379/0?prefix=x"
/// );
/// assert_eq!(
///     redact_url("kafka://k:9092?sasl.username=u&sasl.password=p%26q"),
///     "kafka://k:9092?sasl.username=u&sasl.password=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let authority_end = base.find('/').unwrap_or(base.len());
    let (authority, path) = base.split_at(authority_end);
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    shown.push_str(user);
                    shown.push_str(":***");
                }
                // A lone user name may be a token (`redis://TOKEN@host`).
                None if scheme.is_some() && userinfo.len() > 20 => shown.push_str("***"),
                None => shown.push_str(userinfo),
            }
            shown.push('@');
            shown.push_str(host);
        }
        None => shown.push_str(authority),
    }
    shown.push_str(path);
    if let Some(query) = query {
        shown.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                shown.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_option(key) => {
                    shown.push_str(key);
                    shown.push_str("=***");
                }
                _ => shown.push_str(pair),
            }
        }
    }
    shown
}

/// An id that does not repeat across processes and hosts (a random
/// version-4 UUID, as 32 hex digits): for naming a transport's consumers and
/// inboxes. Random rather than time-based, so that it tells a reader of the
/// broker nothing about the host or when it started.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The reply owed to the caller of a request a transport gave up on after
/// `deliveries` deliveries (more than `max_deliveries`) and moved to the
/// dead-letter queue `dead_letter`: each of its calls answered with
/// [`DEAD_LETTER_CODE`](crate::jsonrpc::DEAD_LETTER_CODE), in the request's
/// own encoding, and signed with `signer` when an authenticated transport
/// wraps this one (see [`Transport::sign_own_messages`]). Returns the
/// address to send it to and the reply, or `None` when nobody waits for one
/// (a notification, no `reply-to`, an encoding not understood).
pub fn dead_letter_reply(
    request: &Message,
    deliveries: u64,
    max_deliveries: u64,
    dead_letter: &str,
    signer: &SignerSlot,
) -> Option<(String, Message)> {
    use crate::codec::Codec;
    use crate::jsonrpc::{self, RpcError};
    use crate::message::header;
    let reply_to = request.headers.get(header::REPLY_TO)?;
    let codec =
        Codec::from_content_type(request.headers.get(header::CONTENT_TYPE)).unwrap_or_default();
    let json = codec.to_json(&request.payload).ok()?;
    let data = serde_json::json!({
        "deliveries": deliveries,
        "max_deliveries": max_deliveries,
        "dead_letter": dead_letter,
    });
    let error = RpcError::new(jsonrpc::DEAD_LETTER_CODE, jsonrpc::DEAD_LETTER_MSG).with_data(&data);
    let answer = jsonrpc::answer_all(&json, &error)?;
    let mut reply = Message::new(codec.from_json(answer).ok()?);
    if codec != Codec::Json {
        reply
            .headers
            .insert(header::CONTENT_TYPE, codec.content_type());
    }
    signer.sign(reply_to, &mut reply);
    Some((reply_to.to_owned(), reply))
}

/// How many more deliveries a consumer's owner can take now: a server's
/// free handler slots. A transport that reads a batch per round trip reads
/// no more than this, so that what a server holds is what it works on, not
/// a backlog ageing in its buffer while its peers idle.
#[derive(Clone)]
pub struct Demand(Arc<dyn Fn() -> usize + Send + Sync + 'static>);

impl Demand {
    /// The demand `now` reports each time it is asked.
    pub fn new(now: impl Fn() -> usize + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// No bound: take whatever the transport reads at once.
    pub fn unbounded() -> Self {
        Self::new(|| usize::MAX)
    }

    /// How many deliveries are wanted now; at least 1, as the deliveries
    /// are polled only by someone who wants one.
    pub fn now(&self) -> usize {
        (self.0)().max(1)
    }
}

impl Default for Demand {
    fn default() -> Self {
        Self::unbounded()
    }
}

impl fmt::Debug for Demand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Demand").field(&self.now()).finish()
    }
}

/// Called once with the outcome of a settlement that the server hands to
/// the transport instead of awaiting (see [`Acknowledge::settle_then`]).
pub type OnSettled = Box<dyn FnOnce(Result<(), TransportError>) + Send + Sync + 'static>;

/// Settles one delivery. Implemented by each transport.
#[async_trait]
pub trait Acknowledge: Send + Sync + 'static {
    /// The message is done with: never deliver it again.
    async fn ack(self: Box<Self>) -> Result<(), TransportError>;

    /// The message was not handled: deliver it again, to this or another consumer.
    async fn release(self: Box<Self>) -> Result<(), TransportError>;

    /// Publishes `reply` to `address`, then acknowledges: the order that
    /// makes delivery at-least-once. If the publish fails the delivery is
    /// released and the publish error returned, unless the broker refused
    /// the reply itself ([`TransportError::Rejected`]: too large, a full
    /// inbox, not allowed) or the address is no queue at all
    /// ([`TransportError::NotServed`]: a reply-to naming nothing): another
    /// try would fail alike, and a release would run the request again at
    /// once, in a loop. Such a delivery is acknowledged, and the error
    /// returned.
    ///
    /// A transport that can do both in one round trip (Redis: one
    /// MULTI/EXEC pipeline) overrides this; `transport` is the one the
    /// server consumes through.
    async fn reply_and_ack(
        self: Box<Self>,
        transport: &dyn Transport,
        address: &str,
        reply: Message,
    ) -> Result<(), TransportError> {
        match transport.publish(address, reply).await {
            Ok(()) => self.ack().await,
            Err(e @ (TransportError::Rejected(_) | TransportError::NotServed(_))) => {
                if let Err(ack) = self.ack().await {
                    tracing::warn!(error = %ack, "acknowledging a request whose reply was refused failed");
                }
                Err(e)
            }
            Err(e) => {
                if let Err(release) = self.release().await {
                    tracing::warn!(error = %release, "releasing a delivery failed");
                }
                Err(e)
            }
        }
    }

    /// Settles the delivery, replying first if `reply` holds an address and
    /// a message (as [`reply_and_ack`](Self::reply_and_ack)) or only
    /// acknowledging (as [`ack`](Self::ack)), and calls `on_settled` with
    /// the outcome. A failed reply leaves the delivery with the broker for
    /// another try, as `reply_and_ack` does, unless the broker refused the
    /// reply itself ([`TransportError::Rejected`]): that is final, and the
    /// transport acknowledges the delivery.
    ///
    /// The default awaits the settlement and then reports it. A transport
    /// that settles many deliveries in one round trip (Redis) overrides
    /// this to return at once: the task that sends a batch then reports
    /// every outcome in it, instead of waking each request's task in turn.
    async fn settle_then(
        self: Box<Self>,
        transport: &dyn Transport,
        reply: Option<(Arc<str>, Message)>,
        on_settled: OnSettled,
    ) {
        let outcome = match reply {
            Some((address, message)) => self.reply_and_ack(transport, &address, message).await,
            None => self.ack().await,
        };
        on_settled(outcome);
    }
}

/// One message taken from a queue, to be acknowledged or released.
///
/// Dropping a delivery unsettled leaves it with its consumer: it is
/// delivered again only when that consumer goes away, as with a real broker
/// when a process dies mid-request.
pub struct Delivery {
    message: Arc<Message>,
    acker: Box<dyn Acknowledge>,
    attempt: Option<u32>,
}

impl Delivery {
    /// A delivery of `message`, settled through `acker`.
    pub fn new(message: Message, acker: impl Acknowledge) -> Self {
        Self::shared(Arc::new(message), acker)
    }

    /// A delivery of a message the transport also keeps (to deliver it
    /// again should this delivery's consumer go away).
    pub fn shared(message: Arc<Message>, acker: impl Acknowledge) -> Self {
        Self {
            message,
            acker: Box::new(acker),
            attempt: None,
        }
    }

    /// This delivery with its count: `1` for the first delivery of the
    /// message, more for redeliveries, as handlers see in
    /// [`Context::attempt`](crate::Context::attempt). A transport whose
    /// broker does not count deliveries leaves it unset.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Which delivery of the message this is, if the broker counts them.
    pub fn attempt(&self) -> Option<u32> {
        self.attempt
    }

    /// The same delivery settled through `wrap(its acknowledger)`: how a
    /// transport wrapping another changes what settling does.
    #[cfg(feature = "auth")]
    pub(crate) fn map_acker<A: Acknowledge>(
        self,
        wrap: impl FnOnce(Box<dyn Acknowledge>) -> A,
    ) -> Self {
        Self {
            message: self.message,
            acker: Box::new(wrap(self.acker)),
            attempt: self.attempt,
        }
    }

    /// The message delivered.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Acknowledges the delivery.
    pub async fn ack(self) -> Result<(), TransportError> {
        self.acker.ack().await
    }

    /// Releases the delivery for redelivery.
    pub async fn release(self) -> Result<(), TransportError> {
        self.acker.release().await
    }

    /// Publishes `reply` to `address` and acknowledges the delivery, in that
    /// order (see [`Acknowledge::reply_and_ack`]).
    pub async fn reply_and_ack(
        self,
        transport: &dyn Transport,
        address: &str,
        reply: Message,
    ) -> Result<(), TransportError> {
        self.acker.reply_and_ack(transport, address, reply).await
    }

    /// Settles the delivery, replying first if there is a reply, and calls
    /// `on_settled` with the outcome, perhaps after this returns (see
    /// [`Acknowledge::settle_then`]).
    pub async fn settle_then(
        self,
        transport: &dyn Transport,
        reply: Option<(Arc<str>, Message)>,
        on_settled: OnSettled,
    ) {
        self.acker.settle_then(transport, reply, on_settled).await;
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

/// The deliveries of a consumer: a stream that ends when the consumer is
/// closed, where an `Err` item is a transient failure and the stream goes on.
///
/// Finish with [`close`](Self::close) once every delivery taken is settled:
/// it returns when the consumer has left its group, its settlements are
/// final on the broker (Kafka: the last commit; Redis: what it still held
/// made claimable), so nothing it answered is handed out again. Dropping
/// it instead does the same in the background, as far as the transport
/// can, like a process that exits.
pub struct Deliveries {
    stream: BoxStream<'static, Result<Delivery, TransportError>>,
    on_close: Option<BoxFuture<'static, ()>>,
    readiness: Option<ReadinessSignal>,
}

/// Whether a consumer can take requests now: what a readiness probe asks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// In its group with its share of the queue, and the broker answers.
    Ready,
    /// Not taking requests now, and why: not (yet, or any longer) given its
    /// share of the queue (a Kafka rebalance), the broker not answering,
    /// the server stopping.
    NotReady(Arc<str>),
}

impl Readiness {
    /// Whether it is [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::NotReady(why) => write!(f, "not ready: {why}"),
        }
    }
}

/// Where a transport says how its consumer is doing (see
/// [`Deliveries::with_readiness`]); the server reads it for
/// [`ServerHandle::readiness`](crate::ServerHandle::readiness). Clones share
/// one state. Setting the state it already has wakes nobody, so a transport
/// may report every success.
#[derive(Clone, Debug)]
pub struct ReadinessSignal {
    state: Arc<tokio::sync::watch::Sender<Readiness>>,
}

impl ReadinessSignal {
    /// A signal that starts in `initial`.
    pub fn new(initial: Readiness) -> Self {
        Self {
            state: Arc::new(tokio::sync::watch::Sender::new(initial)),
        }
    }

    /// Reports the consumer ready.
    pub fn ready(&self) {
        self.state.send_if_modified(|state| {
            let changed = !state.is_ready();
            *state = Readiness::Ready;
            changed
        });
    }

    /// Reports the consumer not ready, and why.
    pub fn not_ready(&self, why: impl Into<Arc<str>>) {
        let why = why.into();
        self.state.send_if_modified(|state| {
            let changed = !matches!(state, Readiness::NotReady(was) if *was == why);
            *state = Readiness::NotReady(why);
            changed
        });
    }

    /// The state now.
    pub fn get(&self) -> Readiness {
        self.state.borrow().clone()
    }

    /// Waits until `accept` holds for the state.
    pub(crate) async fn wait_for(&self, accept: impl FnMut(&Readiness) -> bool) {
        let mut state = self.state.subscribe();
        // The sender lives in `self`: waiting cannot fail.
        let _ = state.wait_for(accept).await;
    }
}

impl Deliveries {
    /// The same deliveries (readiness and close kept), each passed through
    /// `filter` first, which may settle one itself and leave it out.
    #[cfg(feature = "auth")]
    pub(crate) fn filter_stream<F, Fut>(self, filter: F) -> Self
    where
        F: FnMut(Result<Delivery, TransportError>) -> Fut + Send + 'static,
        Fut:
            std::future::Future<Output = Option<Result<Delivery, TransportError>>> + Send + 'static,
    {
        use futures_util::StreamExt;
        Self {
            stream: Box::pin(self.stream.filter_map(filter)),
            ..self
        }
    }

    /// The deliveries of `stream`.
    pub fn new(
        stream: impl Stream<Item = Result<Delivery, TransportError>> + Send + 'static,
    ) -> Self {
        Self {
            stream: Box::pin(stream),
            on_close: None,
            readiness: None,
        }
    }

    /// Where the transport reports whether its consumer can take requests
    /// (see [`Readiness`]). Without it, a server counts itself ready while
    /// it reads without errors.
    #[must_use]
    pub fn with_readiness(mut self, signal: ReadinessSignal) -> Self {
        self.readiness = Some(signal);
        self
    }

    /// The signal given by [`with_readiness`](Self::with_readiness).
    pub fn readiness(&self) -> Option<&ReadinessSignal> {
        self.readiness.as_ref()
    }

    /// Work a clean [`close`](Self::close) awaits once the stream is dropped:
    /// the last commit, leaving the group.
    #[must_use]
    pub fn on_close(
        mut self,
        finish: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.on_close = Some(Box::pin(finish));
        self
    }

    /// Stops reading, then waits until the consumer has finished and left.
    /// Deliveries still unsettled when it is called keep it waiting until
    /// they are settled or dropped.
    pub async fn close(self) {
        let Deliveries {
            stream, on_close, ..
        } = self;
        drop(stream);
        if let Some(finish) = on_close {
            finish.await;
        }
    }
}

impl Stream for Deliveries {
    type Item = Result<Delivery, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deliveries").finish_non_exhaustive()
    }
}

/// A client's private reply address and the stream of messages sent to it.
pub struct Inbox {
    address: String,
    messages: BoxStream<'static, Result<Message, TransportError>>,
    on_close: Option<BoxFuture<'static, ()>>,
}

impl Inbox {
    /// The same inbox (address and close kept), leaving out the messages
    /// `filter` turns to `None`.
    #[cfg(feature = "auth")]
    pub(crate) fn filter_messages<F>(self, mut filter: F) -> Self
    where
        F: FnMut(Result<Message, TransportError>) -> Option<Result<Message, TransportError>>
            + Send
            + 'static,
    {
        use futures_util::StreamExt;
        Self {
            messages: Box::pin(
                self.messages
                    .filter_map(move |m| std::future::ready(filter(m))),
            ),
            ..self
        }
    }

    /// An inbox at `address` receiving `messages`.
    pub fn new(
        address: impl Into<String>,
        messages: impl Stream<Item = Result<Message, TransportError>> + Send + 'static,
    ) -> Self {
        Self {
            address: address.into(),
            messages: Box::pin(messages),
            on_close: None,
        }
    }

    /// Work to do on a clean [`close`](Self::close), such as deleting the
    /// broker-side topic or stream. Dropping the inbox skips it; the
    /// transport's expiry removes abandoned inboxes.
    #[must_use]
    pub fn on_close(
        mut self,
        cleanup: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.on_close = Some(Box::pin(cleanup));
        self
    }

    /// The address to put in `reply-to`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Closes the inbox and removes it from the broker: stops reading
    /// first, so nothing still reads what is being removed.
    pub async fn close(self) {
        let Inbox {
            messages, on_close, ..
        } = self;
        drop(messages);
        if let Some(cleanup) = on_close {
            cleanup.await;
        }
    }
}

impl Stream for Inbox {
    type Item = Result<Message, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.messages.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::{redact_url, unique_id, TransportError};

    #[test]
    fn urls_are_shown_without_their_secrets() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://u:p@h:1/2?prefix=a", "redis://u:***@h:1/2?prefix=a"),
            ("rediss://:only-a-password@h", "rediss://:***@h"),
            ("redis://a%40b:c%3Ad@h", "redis://a%40b:***@h"),
            ("redis://user@h", "redis://user@h"),
            (
                "redis://0123456789abcdef0123456789@h",
                "redis://***@h",
            ),
            (
                "kafka://a:1,b:2?security.protocol=SASL_SSL&sasl.password=x%26y&ssl.key.password=k&ssl.key.pem=PEM&sasl.oauthbearer.client.secret=s&fetch.wait.max.ms=5",
                "kafka://a:1,b:2?security.protocol=SASL_SSL&sasl.password=***&ssl.key.password=***&ssl.key.pem=***&sasl.oauthbearer.client.secret=***&fetch.wait.max.ms=5",
            ),
            ("kafka://u:p@k:9092?x=1", "kafka://u:***@k:9092?x=1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn an_invalid_url_error_masks_its_secrets() {
        let e = TransportError::InvalidUrl {
            url: "redis://app:hunter2@h?token=abc&claim_idle=5".into(),
            reason: "unknown option \"claim_idle\"".into(),
        };
        let shown = e.to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://app:***@h?token=***&claim_idle=5"),
            "{shown}"
        );
    }

    #[test]
    fn unique_ids_are_random_uuids_that_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| unique_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            // The version nibble: a v4 (random) UUID.
            assert_eq!(&id[12..13], "4", "{id}");
        }
    }
}
