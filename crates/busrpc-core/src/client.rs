//! Calling services through a [`Transport`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::Codec;
use crate::error::Error;
use crate::jsonrpc::{self, EncodeError, RpcError};
use crate::message::{header, Deadline, Headers, Limits, Message};
use crate::metrics::{self, ClientCall, Dropped};
use crate::transport::{Inbox, Transport, TransportError};

/// How a client calls.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long a call waits for its reply (default 30 s). It travels as the
    /// `deadline` header, so servers skip calls nobody waits for any more.
    pub timeout: Duration,
    /// Most calls awaiting a reply at once (default 1024); a call beyond it
    /// waits, within its timeout, for a slot.
    pub max_in_flight: usize,
    /// Largest message and batch sent (see [`Limits`]).
    pub limits: Limits,
    /// Encoding of requests (default JSON).
    pub codec: Codec,
    /// How long a notification stays worth running (default: forever).
    /// It travels as the `deadline` header, so a server skips notifications
    /// that waited longer in the queue (after an outage, say) instead of
    /// running a backlog of stale ones.
    pub notification_ttl: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            limits: Limits::default(),
            codec: Codec::Json,
            notification_ttl: None,
        }
    }
}

impl ClientConfig {
    /// Sets [`timeout`](Self::timeout).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight); at least 1.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`codec`](Self::codec).
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Sets [`notification_ttl`](Self::notification_ttl).
    #[must_use]
    pub fn notification_ttl(mut self, ttl: Duration) -> Self {
        self.notification_ttl = Some(ttl);
        self
    }
}

/// What a client has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls sent (each call of a batch counts).
    pub calls: u64,
    /// Replies handed to their caller.
    pub replies: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Replies dropped: late (their caller gave up), duplicate, unknown,
    /// or malformed. None is ever handed to another caller.
    pub replies_dropped: u64,
}

type Outcome = Result<Box<RawValue>, RpcError>;

/// The first wait before a publish that failed for a transient reason
/// (see [`TransportError::is_transient`]) is tried again; each wait then
/// doubles, up to [`LAST_PUBLISH_RETRY`], while the call's deadline allows.
const FIRST_PUBLISH_RETRY: Duration = Duration::from_millis(20);
/// The longest wait between two tries of a publish.
const LAST_PUBLISH_RETRY: Duration = Duration::from_secs(1);

/// Calls in flight by id, shared with the task reading the inbox.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    closed: AtomicBool,
    calls: AtomicU64,
    replies: AtomicU64,
    timeouts: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The last call's id: ids run from 1 up to it.
    issued: AtomicU64,
    /// The ids of the latest calls whose callers gave up before their
    /// reply came (at most [`GAVE_UP_KEPT`]), so that a reply coming for
    /// one later counts as late rather than a duplicate.
    gave_up: Mutex<std::collections::VecDeque<u64>>,
}

/// How many given-up calls a client remembers (see [`Pending::gave_up`]).
const GAVE_UP_KEPT: usize = 1024;

impl Pending {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Outcome>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_reply(&self, kind: Dropped, why: &str, payload: &[u8]) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::reply_dropped(kind);
        tracing::debug!(kind = kind.as_str(), why, reply = %crate::log::Excerpt(payload), "reply dropped");
    }

    /// An id for a new call.
    fn issue_id(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Remembers that the call `id` stopped waiting unanswered.
    fn gave_up(&self, id: u64) {
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        if gave_up.len() == GAVE_UP_KEPT {
            gave_up.pop_front();
        }
        gave_up.push_back(id);
    }

    /// Why a reply with `id` has no caller waiting: its caller gave up
    /// (late: the first reply after that), it was answered already
    /// (duplicate), or no call of this client had that id (stray).
    fn unwaited(&self, id: Option<u64>) -> Dropped {
        let Some(id) = id else {
            return Dropped::Stray;
        };
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = gave_up.iter().position(|&given_up| given_up == id) {
            gave_up.remove(at);
            return Dropped::Late;
        }
        if (1..=self.issued.load(Ordering::Relaxed)).contains(&id) {
            Dropped::Duplicate
        } else {
            Dropped::Stray
        }
    }

    pub(crate) fn deliver(&self, message: &Message) {
        let json = match Codec::from_content_type(message.headers.get(header::CONTENT_TYPE))
            .and_then(|codec| codec.to_json(&message.payload))
        {
            Ok(json) => json,
            Err(e) => return self.drop_reply(Dropped::Malformed, &e.to_string(), &message.payload),
        };
        let responses = match jsonrpc::decode_responses(&json) {
            Ok(responses) => responses,
            Err(e) => return self.drop_reply(Dropped::Malformed, &e.to_string(), &json),
        };
        for response in responses {
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    self.drop_reply(Dropped::Malformed, &e.to_string(), &json);
                    continue;
                }
            };
            let id = response.numeric_id();
            let waiter = id.and_then(|id| self.waiting().remove(&id));
            let Some(waiter) = waiter else {
                // Late (its caller timed out), a duplicate, or not ours; a
                // null id means the server could not read which call it was.
                self.drop_reply(
                    self.unwaited(id),
                    "no caller waits for this id",
                    response.id.get().as_bytes(),
                );
                continue;
            };
            // The caller counts the reply when it takes it (see `call_unbounded`).
            if waiter
                .send(response.outcome.map(ToOwned::to_owned))
                .is_err()
            {
                self.drop_reply(
                    Dropped::Late,
                    "the caller gave up as the reply arrived",
                    response.id.get().as_bytes(),
                );
            }
        }
    }

    /// Adds a call waiting for the reply with `id`; the registration takes
    /// it out again when dropped, unless [`Registration::answered`].
    pub(crate) fn register(
        &self,
        id: u64,
    ) -> Result<(oneshot::Receiver<Outcome>, Registration<'_>), Error> {
        let (sender, receiver) = oneshot::channel();
        let mut waiting = self.waiting();
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        waiting.insert(id, sender);
        drop(waiting);
        Ok((receiver, Registration { pending: self, id }))
    }

    /// Fails every waiting call with [`Error::Closed`], and every later
    /// registration.
    fn close(&self) {
        // Under the lock that `register` takes: a call registering as the
        // client closes either is cleared here or sees `closed`, never
        // neither (it would wait out its whole timeout).
        let mut waiting = self.waiting();
        self.closed.store(true, Ordering::SeqCst);
        waiting.clear();
    }
}

/// Removes a call from the table when its caller stops waiting (timeout,
/// error, or the future dropped), so a late reply finds nobody.
pub(crate) struct Registration<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Registration<'_> {
    /// The reply came: the reader already took the entry out.
    fn answered(self) {
        std::mem::forget(self);
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let waited = self.pending.waiting().remove(&self.id).is_some();
        if waited {
            self.pending.gave_up(self.id);
        }
    }
}

struct Shared {
    transport: Arc<dyn Transport>,
    inbox_address: Arc<str>,
    pending: Arc<Pending>,
    meters: metrics::ClientMeters,
    in_flight: Semaphore,
    config: ClientConfig,
    stop: CancellationToken,
    reader: Mutex<Option<JoinHandle<Option<Inbox>>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The reader ends and drops the inbox; an explicit close() also
        // removes it from the broker.
        self.stop.cancel();
    }
}

/// Calls services: any number of concurrent calls over one private inbox,
/// each matched to its reply by id. Cheap to clone; clones share the inbox.
///
/// ```
/// # use std::sync::Arc;
/// # use busrpc_core::{memory::MemoryTransport, Client, Router, RpcError, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), busrpc_core::Error> {
/// # let transport = Arc::new(MemoryTransport::new());
/// # let router = Router::new().method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) });
/// # let server = Server::new(transport.clone(), "calc", router).start().await?;
/// let client = Client::connect(transport).await?;
/// let sum: i64 = client.call("calc", "add", (2, 3)).await?;
/// assert_eq!(sum, 5);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    timeout: Duration,
    /// Sent with every call, notification and batch of this handle.
    headers: Arc<Headers>,
    /// Run around every call and notification of this handle, the first
    /// outermost.
    middleware: Arc<[Arc<dyn ClientMiddleware>]>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("inbox", &self.shared.inbox_address)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

/// A call or notification on its way out, as [`ClientMiddleware`] sees it:
/// where it goes, and the headers it will carry (which middleware may add
/// to: a token, a trace context).
#[derive(Clone, Debug)]
pub struct OutgoingCall {
    service: String,
    method: String,
    notification: bool,
    /// The headers sent with it, beside busrpc's own.
    pub headers: Headers,
}

impl OutgoingCall {
    /// The service called.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether it is a notification (its outcome is `null` once published).
    pub fn is_notification(&self) -> bool {
        self.notification
    }
}

/// Code that wraps every call and notification a [`Client`] handle sends
/// (see [`Client::with_middleware`]): it may add headers, time the call,
/// look at its outcome, or fail it without sending anything.
///
/// ```
/// use busrpc_core::{ClientMiddleware, ClientNext, Error, OutgoingCall};
/// use serde_json::value::RawValue;
///
/// struct Token(&'static str);
///
/// #[async_trait::async_trait]
/// impl ClientMiddleware for Token {
///     async fn call(&self, call: &mut OutgoingCall, next: ClientNext<'_>) -> Result<Box<RawValue>, Error> {
///         call.headers.insert("authorization", format!("Bearer {}", self.0));
///         next.run(call).await
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait ClientMiddleware: Send + Sync + 'static {
    /// Sends `call`: usually `next.run(call).await`, with work around it.
    async fn call(
        &self,
        call: &mut OutgoingCall,
        next: ClientNext<'_>,
    ) -> Result<Box<RawValue>, Error>;
}

/// The rest of a client's chain: the middleware after this one, then the
/// broker.
pub struct ClientNext<'a> {
    client: &'a Client,
    rest: &'a [Arc<dyn ClientMiddleware>],
    params: &'a RawValue,
}

impl ClientNext<'_> {
    /// Runs the rest of the chain for `call`; its outcome.
    pub async fn run(self, call: &mut OutgoingCall) -> Result<Box<RawValue>, Error> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = ClientNext { rest, ..self };
                first.call(call, next).await
            }
            None if call.notification => {
                let published = self.client.notify_direct(
                    &call.service,
                    &call.method,
                    self.params,
                    &call.headers,
                );
                published.await?;
                Ok(RawValue::from_string("null".to_owned()).expect("null is JSON"))
            }
            None => {
                self.client
                    .call_direct(&call.service, &call.method, self.params, &call.headers)
                    .await
            }
        }
    }

    /// The call's params as they will be sent.
    pub fn params(&self) -> &RawValue {
        self.params
    }
}

impl std::fmt::Debug for ClientNext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext")
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with the default [`ClientConfig`].
    pub async fn connect(transport: Arc<dyn Transport>) -> Result<Self, Error> {
        Self::connect_with(transport, ClientConfig::default()).await
    }

    /// A client with `config`. Opens the inbox; replies can arrive as soon as
    /// this returns.
    pub async fn connect_with(
        transport: Arc<dyn Transport>,
        config: ClientConfig,
    ) -> Result<Self, Error> {
        let inbox = transport.inbox().await?;
        let pending = Arc::new(Pending::default());
        let stop = CancellationToken::new();
        let inbox_address: Arc<str> = inbox.address().into();
        let reader = tokio::spawn(read_replies(inbox, pending.clone(), stop.clone()));
        let timeout = config.timeout;
        Ok(Self {
            shared: Arc::new(Shared {
                transport,
                inbox_address,
                pending,
                meters: metrics::ClientMeters::default(),
                in_flight: Semaphore::new(config.max_in_flight),
                config,
                stop,
                reader: Mutex::new(Some(reader)),
            }),
            timeout,
            headers: Arc::new(Headers::new()),
            middleware: Arc::new([]),
        })
    }

    /// A handle to the same client whose calls wait `timeout` instead.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// A handle to the same client whose calls, notifications and batches
    /// also carry the header `name: value` (a token, a tenant): handlers
    /// read it from their [`Context`](crate::Context). busrpc's own headers
    /// (`reply-to`, `deadline`, `content-type`) cannot be set this way.
    ///
    /// # Panics
    ///
    /// If `name` is one of busrpc's own: a programming error.
    #[must_use]
    pub fn with_header(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
        value: impl Into<Arc<str>>,
    ) -> Self {
        let name = name.into();
        assert!(
            ![header::REPLY_TO, header::DEADLINE, header::CONTENT_TYPE].contains(&&*name),
            "the {name:?} header is busrpc's own; it cannot be set per client"
        );
        let mut headers = (*self.headers).clone();
        headers.insert(name, value);
        Self {
            headers: Arc::new(headers),
            ..self.clone()
        }
    }

    /// A handle to the same client whose calls and notifications go
    /// through `middleware` (after any this handle has already). Batches
    /// do not: they carry the handle's headers only.
    #[must_use]
    pub fn with_middleware(&self, middleware: impl ClientMiddleware) -> Self {
        let mut all: Vec<Arc<dyn ClientMiddleware>> = self.middleware.to_vec();
        all.push(Arc::new(middleware));
        Self {
            middleware: all.into(),
            ..self.clone()
        }
    }

    /// The timeout of this handle's calls.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The inbox address replies come to.
    pub fn inbox_address(&self) -> &str {
        &self.shared.inbox_address
    }

    /// What this client has seen so far.
    pub fn stats(&self) -> ClientStats {
        let p = &self.shared.pending;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            calls: get(&p.calls),
            replies: get(&p.replies),
            timeouts: get(&p.timeouts),
            replies_dropped: get(&p.dropped),
        }
    }

    /// Calls `method` of `service` and deserializes the result into `R`.
    ///
    /// `params` must serialize to an array (a tuple, a `Vec`: by position) or
    /// an object (a struct, a map: by name); `()` sends no params.
    pub async fn call<R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<R, Error> {
        let raw = self.call_raw(service, method, params).await?;
        serde_json::from_str(raw.get()).map_err(Error::Decode)
    }

    /// Like [`call`](Self::call), returning the result as raw JSON.
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<Box<RawValue>, Error> {
        let span = call_span(service, method, false);
        let metered = metrics::enabled()
            .then(|| ClientCall::start(&self.shared.meters, service, method, false));
        let outcome = if self.middleware.is_empty() {
            self.call_direct(service, method, params, &self.headers)
                .instrument(span.clone())
                .await
        } else {
            self.through_middleware(service, method, params, false)
                .instrument(span.clone())
                .await
        };
        record_call_outcome(&span, outcome.as_ref().map(drop));
        if let Some(call) = metered {
            call.finished(metrics::call_code(outcome.as_ref().map(drop)));
        }
        outcome
    }

    /// A call or notification sent through this handle's middleware.
    async fn through_middleware(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        notification: bool,
    ) -> Result<Box<RawValue>, Error> {
        let params = jsonrpc::params_to_raw(&params)?;
        let mut call = OutgoingCall {
            service: service.to_owned(),
            method: method.to_owned(),
            notification,
            headers: (*self.headers).clone(),
        };
        let next = ClientNext {
            client: self,
            rest: &self.middleware,
            params: &params,
        };
        next.run(&mut call).await
    }

    /// A call past the middleware.
    async fn call_direct(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        headers: &Headers,
    ) -> Result<Box<RawValue>, Error> {
        // One timer for the whole call, not one per step: the steps' own
        // timers cost more than any other part of the call's bookkeeping.
        // Taken now, before waiting for a slot: the deadline the server
        // sees is the caller's own.
        let deadline_at = Instant::now() + self.timeout;
        let deadline = Deadline::after(self.timeout);
        let call = self.call_unbounded(service, method, params, headers, deadline, deadline_at);
        match timeout_at(deadline_at, call).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out()),
        }
    }

    /// [`call_raw`](Self::call_raw) without its deadline.
    async fn call_unbounded(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        headers: &Headers,
        deadline: Deadline,
        deadline_at: Instant,
    ) -> Result<Box<RawValue>, Error> {
        let shared = &*self.shared;
        self.check_open()?;
        let _permit = shared
            .in_flight
            .acquire()
            .await
            .map_err(|_| Error::Closed)?;
        let id = shared.pending.issue_id();
        tracing::Span::current().record("rpc.jsonrpc.request_id", id);
        let mut json = Vec::with_capacity(128);
        jsonrpc::write_request(&mut json, method, &params, Some(id))?;
        let (receiver, registration) = self.register(id)?;
        self.send(service, json, headers, true, Some(deadline), deadline_at)
            .await?;
        shared.pending.calls.fetch_add(1, Ordering::Relaxed);
        let outcome = receiver.await.map_err(|_| Error::Closed)?;
        shared.pending.replies.fetch_add(1, Ordering::Relaxed);
        registration.answered();
        outcome.map_err(Error::Rpc)
    }

    /// Sends a notification: no id, no reply, no waiting beyond the publish.
    pub async fn notify(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
    ) -> Result<(), Error> {
        let span = call_span(service, method, true);
        let metered = metrics::enabled()
            .then(|| ClientCall::start(&self.shared.meters, service, method, true));
        let outcome = if self.middleware.is_empty() {
            self.notify_direct(service, method, params, &self.headers)
                .instrument(span.clone())
                .await
        } else {
            self.through_middleware(service, method, params, true)
                .instrument(span.clone())
                .await
                .map(drop)
        };
        record_call_outcome(&span, outcome.as_ref().copied());
        if let Some(call) = metered {
            call.finished(metrics::call_code(outcome.as_ref().copied()));
        }
        outcome
    }

    /// A notification past the middleware.
    async fn notify_direct(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        headers: &Headers,
    ) -> Result<(), Error> {
        self.check_open()?;
        let mut json = Vec::with_capacity(128);
        jsonrpc::write_request(&mut json, method, &params, None)?;
        let ttl = self.shared.config.notification_ttl.map(Deadline::after);
        let give_up = Instant::now() + self.timeout;
        let publish = self.send(service, json, headers, false, ttl, give_up);
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
    }

    /// Starts a batch for `service`: calls and notifications sent as one
    /// message and answered by one message.
    pub fn batch(&self, service: &str) -> Batch {
        Batch {
            client: self.clone(),
            service: service.to_owned(),
            json: Vec::new(),
            ids: Vec::new(),
            entries: 0,
            methods: Vec::new(),
        }
    }

    /// Closes the client: calls still waiting fail with [`Error::Closed`],
    /// and the inbox is removed from the broker.
    pub async fn close(&self) {
        // Calls waiting for a reply or for a slot fail now, and later ones
        // at once, not after the inbox is gone.
        self.shared.pending.close();
        self.shared.in_flight.close();
        self.shared.stop.cancel();
        let reader = self
            .shared
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(reader) = reader {
            if let Ok(Some(inbox)) = reader.await {
                inbox.close().await;
            }
        }
        self.shared.pending.close();
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.shared.pending.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    async fn slots(
        &self,
        n: u32,
        deadline_at: Instant,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        self.check_open()?;
        match timeout_at(deadline_at, self.shared.in_flight.acquire_many(n)).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> Error {
        self.shared.pending.timeouts.fetch_add(1, Ordering::Relaxed);
        Error::Timeout(self.timeout)
    }

    fn register(&self, id: u64) -> Result<(oneshot::Receiver<Outcome>, Registration<'_>), Error> {
        self.shared.pending.register(id)
    }

    /// Encodes and publishes a request, notification or batch; one that
    /// `expects_reply` carries the inbox's address, and `deadline` (when the
    /// caller stops waiting) travels with it.
    async fn send(
        &self,
        service: &str,
        json: Vec<u8>,
        extra: &Headers,
        expects_reply: bool,
        deadline: Option<Deadline>,
        give_up: Instant,
    ) -> Result<(), Error> {
        let shared = &*self.shared;
        let codec = shared.config.codec;
        let payload = Bytes::from(codec.from_json(json)?);
        let limit = shared.config.limits.max_message_bytes;
        if payload.len() > limit {
            return Err(Error::MessageTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let address = shared.transport.service_address(service);
        let mut backoff = FIRST_PUBLISH_RETRY;
        loop {
            // The caller's first; busrpc's own after them win, as
            // `Headers::insert` replaces.
            let mut headers = extra.clone();
            if expects_reply {
                headers.insert(header::REPLY_TO, Arc::clone(&shared.inbox_address));
            }
            if let Some(deadline) = deadline {
                headers.insert(header::DEADLINE, deadline);
            }
            if codec != Codec::Json {
                headers.insert(header::CONTENT_TYPE, codec.content_type());
            }
            // The call's span is the server's span's parent, unless the
            // caller sent a trace context of its own.
            #[cfg(feature = "otel")]
            if extra.get(header::TRACEPARENT).is_none() {
                crate::otel::inject(&tracing::Span::current(), &mut headers);
            }
            let message = Message {
                payload: payload.clone(),
                headers,
            };
            match shared.transport.publish(&address, message).await {
                Ok(()) => return Ok(()),
                Err(TransportError::NotServed(_)) => {
                    return Err(Error::NoService {
                        service: service.to_owned(),
                    })
                }
                // The broker is away for a moment (restarting, failing
                // over): try again while the caller still waits, and say
                // why once it would not. A publish that failed after
                // reaching the broker may then arrive twice: the server
                // may run it twice, and the second reply is dropped.
                Err(e) if e.is_transient() && Instant::now() + backoff < give_up => {
                    tracing::debug!(%service, error = %e, ?backoff, "publishing failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LAST_PUBLISH_RETRY);
                    self.check_open()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`send`](Self::send), bounded by the call's deadline: a broker that
    /// does not answer must not hold a caller past its timeout.
    async fn send_by(
        &self,
        service: &str,
        json: Vec<u8>,
        expects_reply: bool,
        deadline: Option<Deadline>,
        deadline_at: Instant,
    ) -> Result<(), Error> {
        let send = self.send(
            service,
            json,
            &self.headers,
            expects_reply,
            deadline,
            deadline_at,
        );
        match timeout_at(deadline_at, send).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// The span of one call (or, `notification`, one notification) a client
/// makes: with feature `otel`, the parent of the server's `busrpc.request`.
fn call_span(service: &str, method: &str, notification: bool) -> tracing::Span {
    // One callsite per name: a span's name is fixed where it is declared.
    macro_rules! span {
        ($name:literal, $kind:literal) => {
            tracing::info_span!(
                $name,
                otel.name = %format_args!("{service}/{method}"),
                otel.kind = $kind,
                otel.status_code = tracing::field::Empty,
                rpc.system = "jsonrpc",
                rpc.service = %service,
                rpc.method = %method,
                rpc.jsonrpc.request_id = tracing::field::Empty,
                rpc.jsonrpc.error_code = tracing::field::Empty,
                busrpc.outcome = tracing::field::Empty,
            )
        };
    }
    if notification {
        span!("busrpc.notify", "producer")
    } else {
        span!("busrpc.call", "client")
    }
}

/// Records how a call ended on its span: `ok`, an error with its code, or
/// what else failed (`timeout`, `closed`, ...).
fn record_call_outcome(span: &tracing::Span, outcome: Result<(), &Error>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(()) => crate::engine::record_outcome(span, Ok(())),
        Err(Error::Rpc(e)) => crate::engine::record_outcome(span, Err(e.code())),
        Err(e) => {
            let what = if e.is_timeout() { "timeout" } else { "failed" };
            span.record("busrpc.outcome", what);
            span.record("otel.status_code", "ERROR");
            let _entered = span.enter();
            tracing::debug!(error = %e, "the call failed");
        }
    }
}

async fn read_replies(
    mut inbox: Inbox,
    pending: Arc<Pending>,
    stop: CancellationToken,
) -> Option<Inbox> {
    let mut failures = 0u32;
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            biased;
            () = &mut stopped => break,
            next = inbox.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                failures = 0;
                pending.deliver(&message);
            }
            Some(Err(e)) => {
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(10u64 << failures.min(7));
                tracing::warn!(error = %e, ?pause, "reading replies failed");
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => {
                tracing::warn!(
                    inbox = inbox.address(),
                    "the inbox closed; the client stops"
                );
                pending.close();
                return None;
            }
        }
    }
    pending.close();
    Some(inbox)
}

/// One call of a [`Batch`], to pick its result from [`BatchReplies`]: its
/// place in the batch and its request id, so that a handle looked up in
/// another batch's replies is an error, not that batch's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCall {
    index: usize,
    id: u64,
}

impl BatchCall {
    /// The call's JSON-RPC id on the wire.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Calls and notifications sent together as one JSON-RPC batch.
///
/// ```
/// # use std::sync::Arc;
/// # use busrpc_core::{memory::MemoryTransport, Client, Router, RpcError, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), busrpc_core::Error> {
/// # let transport = Arc::new(MemoryTransport::new());
/// # let router = Router::new().method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) });
/// # let _server = Server::new(transport.clone(), "calc", router).start().await?;
/// # let client = Client::connect(transport).await?;
/// let mut batch = client.batch("calc");
/// let three = batch.call("add", (1, 2))?;
/// let seven = batch.call("add", (3, 4))?;
/// batch.notify("add", (0, 0))?;
/// let replies = batch.send().await?;
/// assert_eq!(replies.get::<i64>(three)?, 3);
/// assert_eq!(replies.get::<i64>(seven)?, 7);
/// # Ok(()) }
/// ```
pub struct Batch {
    client: Client,
    service: String,
    json: Vec<u8>,
    ids: Vec<u64>,
    entries: usize,
    /// Each entry's method and whether it is a call, when metrics are
    /// recorded.
    methods: Vec<(Box<str>, bool)>,
}

impl Batch {
    fn push(&mut self, method: &str, params: impl Serialize, id: Option<u64>) -> Result<(), Error> {
        let start = self.json.len();
        self.json
            .push(if self.json.is_empty() { b'[' } else { b',' });
        if let Err(e) = jsonrpc::write_request(&mut self.json, method, &params, id) {
            self.json.truncate(start);
            return Err(e.into());
        }
        self.entries += 1;
        if metrics::enabled() {
            self.methods.push((method.into(), id.is_some()));
        }
        Ok(())
    }

    /// Adds a call; its result is picked from the replies with the returned handle.
    pub fn call(&mut self, method: &str, params: impl Serialize) -> Result<BatchCall, Error> {
        let id = self.client.shared.pending.issue_id();
        self.push(method, params, Some(id))?;
        self.ids.push(id);
        Ok(BatchCall {
            index: self.ids.len() - 1,
            id,
        })
    }

    /// Adds a notification.
    pub fn notify(&mut self, method: &str, params: impl Serialize) -> Result<(), Error> {
        self.push(method, params, None)
    }

    /// How many calls and notifications the batch holds.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Sends the batch and, if it holds calls, waits for all their replies
    /// within the client's timeout.
    pub async fn send(mut self) -> Result<BatchReplies, Error> {
        if !metrics::enabled() {
            return self.exchange().await;
        }
        let started = std::time::Instant::now();
        let calls = self.ids.len() as f64;
        let service = self.service.clone();
        let in_flight = metrics::ClientInFlight::new(&service, calls);
        let outcome = self.exchange().await;
        drop(in_flight);
        let took = started.elapsed();
        let mut answers = outcome.as_ref().ok().map(|r| r.outcomes.iter());
        for (method, is_call) in &self.methods {
            let code = match (&outcome, answers.as_mut()) {
                (Err(e), _) => metrics::call_code(Err(e)),
                (Ok(_), Some(answers)) if *is_call => match answers.next() {
                    Some(Err(e)) => metrics::CallCode::Rpc(e.code()),
                    _ => metrics::CallCode::Ok,
                },
                (Ok(_), _) => metrics::CallCode::Ok,
            };
            metrics::client_call(&service, method, !*is_call, code, took);
        }
        outcome
    }

    async fn exchange(&mut self) -> Result<BatchReplies, Error> {
        let client = &self.client;
        let limits = client.shared.config.limits;
        if self.entries == 0 {
            return Err(EncodeError::EmptyBatch.into());
        }
        if self.entries > limits.max_batch_len {
            return Err(EncodeError::BatchTooLong {
                len: self.entries,
                limit: limits.max_batch_len,
            }
            .into());
        }
        let calls = self.ids.len();
        if calls > client.shared.config.max_in_flight {
            return Err(EncodeError::BatchTooLong {
                len: calls,
                limit: client.shared.config.max_in_flight,
            }
            .into());
        }
        self.json.push(b']');
        let json = std::mem::take(&mut self.json);
        let deadline_at = Instant::now() + client.timeout;
        let deadline = Deadline::after(client.timeout);
        if calls == 0 {
            // Only notifications: nothing to wait for but the publish, and
            // that within the timeout, as for a lone notification.
            client.check_open()?;
            let ttl = client.shared.config.notification_ttl.map(Deadline::after);
            client
                .send_by(&self.service, json, false, ttl, deadline_at)
                .await?;
            return Ok(BatchReplies {
                ids: Vec::new(),
                outcomes: Vec::new(),
            });
        }
        let n = u32::try_from(calls).unwrap_or(u32::MAX);
        let _permits = client.slots(n, deadline_at).await?;
        let mut receivers = Vec::with_capacity(calls);
        let mut registrations = Vec::with_capacity(calls);
        for &id in &self.ids {
            let (receiver, registration) = client.register(id)?;
            receivers.push(receiver);
            registrations.push(registration);
        }
        client
            .send_by(&self.service, json, true, Some(deadline), deadline_at)
            .await?;
        client
            .shared
            .pending
            .calls
            .fetch_add(calls as u64, Ordering::Relaxed);
        let received = timeout_at(deadline_at, join_all(receivers))
            .await
            .map_err(|_| client.timed_out())?;
        if received.iter().all(Result::is_ok) {
            registrations.into_iter().for_each(Registration::answered);
        }
        let outcomes = received
            .into_iter()
            .map(|r| r.map_err(|_| Error::Closed))
            .collect::<Result<Vec<_>, _>>()?;
        client
            .shared
            .pending
            .replies
            .fetch_add(calls as u64, Ordering::Relaxed);
        Ok(BatchReplies {
            ids: std::mem::take(&mut self.ids),
            outcomes,
        })
    }
}

/// The replies to a batch's calls.
#[derive(Debug)]
pub struct BatchReplies {
    ids: Vec<u64>,
    outcomes: Vec<Outcome>,
}

impl BatchReplies {
    /// The result of `call`, deserialized into `R`, or its error;
    /// [`Error::NotInBatch`] if `call` belongs to another batch.
    pub fn get<R: DeserializeOwned>(&self, call: BatchCall) -> Result<R, Error> {
        match self.raw(call) {
            Some(Ok(raw)) => serde_json::from_str(raw.get()).map_err(Error::Decode),
            Some(Err(e)) => Err(Error::Rpc(e.clone())),
            None => Err(Error::NotInBatch { id: call.id }),
        }
    }

    /// The raw outcome of `call`; `None` if `call` belongs to another batch.
    pub fn raw(&self, call: BatchCall) -> Option<&Result<Box<RawValue>, RpcError>> {
        match self.ids.get(call.index) {
            Some(&id) if id == call.id => self.outcomes.get(call.index),
            _ => None,
        }
    }

    /// How many calls were answered.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    /// Whether the batch held no calls.
    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::memory::MemoryTransport;
    use crate::transport::{Deliveries, Demand, TransportError};
    use crate::{Router, Server};

    /// A broker that takes inboxes but never confirms a publish.
    struct Stalled(MemoryTransport);

    #[async_trait]
    impl Transport for Stalled {
        async fn publish(&self, _: &str, _: Message) -> Result<(), TransportError> {
            std::future::pending().await
        }

        async fn consume(&self, a: &str, g: &str, d: Demand) -> Result<Deliveries, TransportError> {
            self.0.consume(a, g, d).await
        }

        async fn inbox(&self) -> Result<Inbox, TransportError> {
            self.0.inbox().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_of_notifications_waits_no_longer_than_the_timeout() {
        let transport = Arc::new(Stalled(MemoryTransport::new()));
        let config = ClientConfig::default().timeout(Duration::from_secs(3));
        let client = Client::connect_with(transport, config).await.unwrap();
        let mut batch = client.batch("svc");
        batch.notify("a", [1]).unwrap();
        batch.notify("b", [2]).unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(60), batch.send()).await;
        let err = sent.expect("the batch returned").unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    /// A broker whose first `failures` publishes to the service fail with
    /// `error` (transient or not); then the memory broker behind it.
    struct Flaky {
        inner: MemoryTransport,
        failures: std::sync::atomic::AtomicU32,
        tries: std::sync::atomic::AtomicU32,
        transient: bool,
    }

    impl Flaky {
        fn new(failures: u32, transient: bool) -> Arc<Self> {
            Arc::new(Flaky {
                inner: MemoryTransport::new(),
                failures: failures.into(),
                tries: 0.into(),
                transient,
            })
        }
    }

    #[async_trait]
    impl Transport for Flaky {
        async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
            if address == self.inner.service_address("svc") {
                self.tries.fetch_add(1, Ordering::SeqCst);
                let left = self.failures.load(Ordering::SeqCst);
                if left > 0 {
                    self.failures.store(left - 1, Ordering::SeqCst);
                    return Err(if self.transient {
                        TransportError::Unavailable("connection reset".into())
                    } else {
                        TransportError::Rejected("not allowed".into())
                    });
                }
            }
            self.inner.publish(address, message).await
        }

        async fn consume(&self, a: &str, g: &str, d: Demand) -> Result<Deliveries, TransportError> {
            self.inner.consume(a, g, d).await
        }

        async fn inbox(&self) -> Result<Inbox, TransportError> {
            self.inner.inbox().await
        }
    }

    async fn flaky_call(transport: Arc<Flaky>) -> Result<u64, Error> {
        let router = Router::new().method("id", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let _server = Server::new(transport.clone(), "svc", router)
            .start()
            .await
            .unwrap();
        let config = ClientConfig::default().timeout(Duration::from_secs(5));
        let client = Client::connect_with(transport, config).await.unwrap();
        client.call::<u64>("svc", "id", (7,)).await
    }

    /// A broker away for a moment (a restart) costs the caller a wait, not
    /// the call: the publish is tried again within the call's deadline.
    #[tokio::test(start_paused = true)]
    async fn a_publish_that_fails_for_a_moment_is_tried_again() {
        let transport = Flaky::new(3, true);
        assert_eq!(flaky_call(transport.clone()).await.unwrap(), 7);
        assert_eq!(transport.tries.load(Ordering::SeqCst), 4);
    }

    /// A broker away for longer than the caller waits: the caller learns
    /// why (not merely that time ran out), by its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_broker_away_past_the_deadline_is_reported_as_such() {
        let transport = Flaky::new(u32::MAX, true);
        let started = Instant::now();
        let err = flaky_call(transport.clone()).await.unwrap_err();
        assert!(
            matches!(err, Error::Transport(TransportError::Unavailable(_))),
            "{err}"
        );
        assert!(started.elapsed() <= Duration::from_secs(5));
        // 20, 40, 80 ... ms, then every second: a handful of tries.
        let tries = transport.tries.load(Ordering::SeqCst);
        assert!((5..=12).contains(&tries), "{tries} tries");
    }

    /// A refusal is not tried again: it would be refused alike.
    #[tokio::test(start_paused = true)]
    async fn a_refused_publish_is_not_tried_again() {
        let transport = Flaky::new(1, false);
        let err = flaky_call(transport.clone()).await.unwrap_err();
        assert!(
            matches!(err, Error::Transport(TransportError::Rejected(_))),
            "{err}"
        );
        assert_eq!(transport.tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_batch_call_from_another_batch_is_refused() {
        let transport = Arc::new(MemoryTransport::new());
        let router = Router::new().method("id", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let server = Server::new(transport.clone(), "calc", router)
            .start()
            .await
            .unwrap();
        let client = Client::connect(transport).await.unwrap();
        let mut a = client.batch("calc");
        let in_a = a.call("id", (1,)).unwrap();
        let mut b = client.batch("calc");
        let in_b = b.call("id", (2,)).unwrap();
        let a = a.send().await.unwrap();
        let b = b.send().await.unwrap();
        assert_eq!(a.get::<u64>(in_a).unwrap(), 1);
        assert_eq!(b.get::<u64>(in_b).unwrap(), 2);
        // The same place in its batch, but not the same call.
        let err = a.get::<u64>(in_b).unwrap_err();
        assert!(
            matches!(err, Error::NotInBatch { id } if id == in_b.id()),
            "{err}"
        );
        assert!(b.raw(in_a).is_none());
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_for_a_slot_fails_when_the_client_closes() {
        // The broker never confirms: the first call holds the only slot,
        // stuck in its publish, until its timeout; the second waits for
        // that slot, and gets it only after the client has closed.
        let transport = Arc::new(Stalled(MemoryTransport::new()));
        let config = ClientConfig::default()
            .max_in_flight(1)
            .timeout(Duration::from_secs(30));
        let client = Client::connect_with(transport, config).await.unwrap();
        let first = tokio::spawn({
            let client = client.clone();
            async move { client.call::<u64>("svc", "m", ()).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let client = client.clone();
            async move { client.call::<u64>("svc", "m", ()).await }
        });
        tokio::task::yield_now().await;
        client.close().await;
        let second = second.await.unwrap();
        assert!(matches!(second, Err(Error::Closed)), "{second:?}");
        let first = first.await.unwrap();
        assert!(first.is_err(), "{first:?}");
    }

    /// One step of the correlation table's life, as the property test
    /// below drives it.
    #[derive(Clone, Debug)]
    enum Step {
        /// A call registers the next id.
        Call,
        /// The `n`th call ever made stops waiting (timeout, or its future
        /// dropped).
        GiveUp(usize),
        /// A reply arrives for the `n`th call ever made (once more if it
        /// came already: a duplicate).
        Reply(usize),
        /// One batch response answering several calls.
        Batch(Vec<usize>),
        /// A reply for an id no call had, or a null one.
        Stray(bool),
        /// The client closes.
        Close,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Step::Call),
            2 => any::<usize>().prop_map(Step::GiveUp),
            4 => any::<usize>().prop_map(Step::Reply),
            1 => proptest::collection::vec(any::<usize>(), 1..5).prop_map(Step::Batch),
            1 => any::<bool>().prop_map(Step::Stray),
            1 => Just(Step::Close),
        ]
    }

    fn reply_to(ids: &[u64]) -> Message {
        let each: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"jsonrpc":"2.0","result":{id},"id":{id}}}"#))
            .collect();
        match each.as_slice() {
            [one] => Message::new(one.clone()),
            many => Message::new(format!("[{}]", many.join(","))),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Random calls, give-ups, replies (late, duplicate, batched,
        /// stray) and a close: each call gets its own reply at most once
        /// and never another's, every other reply is counted as dropped,
        /// and the table holds exactly the calls still waiting.
        #[test]
        fn every_reply_reaches_its_own_caller_once(steps in proptest::collection::vec(step(), 1..100)) {
            let pending = Pending::default();
            // Per call ever made: its receiver, its registration while it
            // waits, and whether its reply came.
            let mut calls: Vec<(oneshot::Receiver<Outcome>, Option<Registration<'_>>, bool)> = Vec::new();
            let mut dropped = 0u64;
            let mut closed = false;
            for step in &steps {
                let mut reply = |indices: &[usize], calls: &mut Vec<(oneshot::Receiver<Outcome>, Option<Registration<'_>>, bool)>| {
                    if calls.is_empty() {
                        return;
                    }
                    let chosen: Vec<usize> = indices.iter().map(|i| i % calls.len()).collect();
                    let ids: Vec<u64> = chosen.iter().map(|i| *i as u64).collect();
                    pending.deliver(&reply_to(&ids));
                    for i in chosen {
                        let (_, registration, answered) = &mut calls[i];
                        match registration.take() {
                            Some(registration) => {
                                registration.answered();
                                *answered = true;
                            }
                            None => dropped += 1,
                        }
                    }
                };
                match step {
                    Step::Call => {
                        let id = calls.len() as u64;
                        match pending.register(id) {
                            Ok((receiver, registration)) => {
                                assert!(!closed, "registered after the close");
                                calls.push((receiver, Some(registration), false));
                            }
                            Err(e) => {
                                assert!(closed && matches!(e, Error::Closed), "{e}");
                                // Keep the numbering: a call that never waited.
                                let (_, receiver) = oneshot::channel();
                                calls.push((receiver, None, false));
                            }
                        }
                    }
                    Step::GiveUp(i) => {
                        if !calls.is_empty() {
                            let n = calls.len();
                            drop(calls[i % n].1.take());
                        }
                    }
                    Step::Reply(i) => reply(&[*i], &mut calls),
                    Step::Batch(is) => reply(is, &mut calls),
                    Step::Stray(null) => {
                        let id = if *null { "null".to_owned() } else { u64::MAX.to_string() };
                        let stray = format!(r#"{{"jsonrpc":"2.0","result":1,"id":{id}}}"#);
                        pending.deliver(&Message::new(stray));
                        dropped += 1;
                    }
                    Step::Close => {
                        pending.close();
                        closed = true;
                        for call in &mut calls {
                            // The table let go of them; nothing is left to remove.
                            if let Some(registration) = call.1.take() {
                                registration.answered();
                            }
                        }
                    }
                }
                let waiting = calls.iter().filter(|c| c.1.is_some()).count();
                assert_eq!(pending.waiting().len(), waiting, "after {step:?}");
                assert_eq!(pending.dropped.load(Ordering::Relaxed), dropped, "after {step:?}");
            }
            // Each answered call holds its own reply, once; the others none.
            for (n, (mut receiver, _, answered)) in calls.into_iter().enumerate() {
                match receiver.try_recv() {
                    Ok(Ok(result)) => {
                        assert!(answered, "call {n} got a reply it was not sent");
                        assert_eq!(result.get(), n.to_string(), "call {n} got another's reply");
                    }
                    Ok(Err(e)) => panic!("call {n} got an error: {e}"),
                    Err(_) => assert!(!answered, "call {n} lost its reply"),
                }
            }
        }
    }
}
