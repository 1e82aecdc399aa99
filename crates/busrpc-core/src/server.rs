//! Serving a [`Router`] under a service name through a [`Transport`].

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::{Codec, CodecError};
use crate::context::Middleware;
use crate::engine::{panic_message, Engine, Envelope};
use crate::error::Error;
use crate::jsonrpc::RpcError;
use crate::log::{Excerpt, Throttle};
use crate::message::{header, Deadline, Limits, Message};
use crate::metrics::ServerEvent;
use crate::router::Router;
use crate::transport::{
    Deliveries, Delivery, Demand, Readiness, ReadinessSignal, Transport, TransportError,
};

/// How a server runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Most calls handled at once by this instance (default 128), each
    /// call of a batch counting as one: a batch runs as many of its calls
    /// at once as there are free slots (at least one), in waves. The server
    /// takes no more deliveries while every slot is in use.
    pub concurrency: usize,
    /// Largest message and batch accepted (see [`Limits`]).
    pub limits: Limits,
    /// How long a graceful shutdown waits for calls in hand before releasing
    /// them to other instances (default 30 s).
    pub shutdown_grace: Duration,
    /// Whether a request's handler starts in the task that takes requests
    /// off the queue (default `true`). A handler that finishes without
    /// waiting for anything then costs no task of its own and no wake-up
    /// of another worker; one that waits goes on in a task of its own from
    /// its first wait. Set `false` when handlers compute for long before
    /// their first `.await`: each request then starts in its own task, so
    /// the runtime's workers run such handlers side by side while the
    /// server goes on taking requests.
    pub run_inline: bool,
    /// Whether a handler still running when its request's deadline passes
    /// is stopped (default `true`): its future is dropped at its next
    /// `.await`, nothing is sent (the caller has stopped waiting), the
    /// request is acknowledged and counted in
    /// [`ServerStats::cancelled`]. Stale work then costs nothing past the
    /// deadline, which is when an overloaded server most needs its slots.
    /// Set `false` for handlers that must not be interrupted between two
    /// awaits; they then run to the end and their late reply is dropped by
    /// the caller.
    pub cancel_on_deadline: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            concurrency: 128,
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(30),
            run_inline: true,
            cancel_on_deadline: true,
        }
    }
}

impl ServerConfig {
    /// Sets [`concurrency`](Self::concurrency); at least 1.
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets [`limits`](Self::limits).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`shutdown_grace`](Self::shutdown_grace).
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Sets [`run_inline`](Self::run_inline).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use busrpc_core::{memory::MemoryTransport, Client, Router, RpcError, Server, ServerConfig};
    /// # #[tokio::main] async fn main() -> Result<(), busrpc_core::Error> {
    /// # let transport = Arc::new(MemoryTransport::new());
    /// // A handler that computes before it ever awaits: start each request
    /// // in a task of its own, so that the runtime's workers share them.
    /// let router = Router::new().method("digits", |(n,): (u32,)| async move {
    ///     let digits: u64 = (1..=u64::from(n)).map(|i| i.to_string().len() as u64).sum();
    ///     Ok::<_, RpcError>(digits)
    /// });
    /// let server = Server::new(transport.clone(), "math", router)
    ///     .with_config(ServerConfig::default().run_inline(false))
    ///     .start()
    ///     .await?;
    /// let client = Client::connect(transport).await?;
    /// assert_eq!(client.call::<u64>("math", "digits", (12,)).await?, 15);
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn run_inline(mut self, inline: bool) -> Self {
        self.run_inline = inline;
        self
    }

    /// Sets [`cancel_on_deadline`](Self::cancel_on_deadline).
    #[must_use]
    pub fn cancel_on_deadline(mut self, cancel: bool) -> Self {
        self.cancel_on_deadline = cancel;
        self
    }
}

/// What a server instance has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ServerStats {
    /// Deliveries taken from the queue.
    pub received: u64,
    /// Deliveries acknowledged (answered, or found not worth answering).
    pub acked: u64,
    /// Deliveries abandoned to another instance when the shutdown grace ran out.
    pub released: u64,
    /// Calls executed (each call of a batch counts).
    pub calls: u64,
    /// Notifications executed.
    pub notifications: u64,
    /// Error responses produced, of any code.
    pub errors: u64,
    /// Handlers that panicked (each answered -32603).
    pub panics: u64,
    /// Messages skipped because their deadline had passed on arrival.
    pub expired: u64,
    /// Messages whose handlers were stopped when their deadline passed
    /// (see [`ServerConfig::cancel_on_deadline`]); acknowledged, unanswered.
    pub cancelled: u64,
    /// Messages counted and dropped: bad input or a response with no
    /// `reply-to` to send it to.
    pub dropped: u64,
    /// Replies that could not be published and acknowledged. The request
    /// stays with the broker for another try, unless the broker refused the
    /// reply itself (too large for it, a full inbox, a Redis `reply-to`
    /// naming a key that is not a stream): that is final, the request is
    /// acknowledged, and the caller is sent a small -32603 saying why where
    /// the broker takes it. The logged error says which.
    pub reply_failures: u64,
    /// Replies larger than the server's or the transport's limit, answered
    /// with a small -32603 giving both sizes instead of being sent.
    pub oversized_replies: u64,
}

#[derive(Default)]
struct ServerCounters {
    received: AtomicU64,
    acked: AtomicU64,
    released: AtomicU64,
    expired: AtomicU64,
    cancelled: AtomicU64,
    dropped: AtomicU64,
    reply_failures: AtomicU64,
    oversized_replies: AtomicU64,
}

/// How often a repeated warning is let through.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    /// Counts `event` in the stats and as a metric.
    fn count(&self, event: ServerEvent) {
        self.count_n(event, 1);
    }

    /// Counts `n` of `event` in the stats and as a metric.
    fn count_n(&self, event: ServerEvent, n: u64) {
        let c = &self.counters;
        let counter = match event {
            ServerEvent::Received => Some(&c.received),
            ServerEvent::Acked => Some(&c.acked),
            ServerEvent::Released => Some(&c.released),
            ServerEvent::Expired => Some(&c.expired),
            ServerEvent::Cancelled => Some(&c.cancelled),
            ServerEvent::Dropped => Some(&c.dropped),
            ServerEvent::ReplyFailed => Some(&c.reply_failures),
            ServerEvent::Oversized => Some(&c.oversized_replies),
            // A metric only: the stats have no count of it.
            ServerEvent::Redelivered => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(n, Ordering::Relaxed);
        }
        self.engine.meters.count_n(event, n);
    }
}

/// Where a server instance is in its life.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ServerStatus {
    /// Taking and handling requests.
    Serving,
    /// Shutting down, as asked or after a fatal error: finishing what it
    /// holds, taking nothing new.
    Stopping,
    /// Stopped as asked, or its handle dropped.
    Stopped,
    /// Stopped by itself: the broker kept failing in a way retrying cannot
    /// mend (no permission, the queue deleted, the consumer closed), after
    /// [`FATAL_ERRORS_TO_STOP`] such failures in a row.
    Failed(Arc<TransportError>),
}

/// Fatal transport errors in a row (no delivery between them) after which
/// a server stops and reports [`ServerStatus::Failed`].
pub const FATAL_ERRORS_TO_STOP: u32 = 5;

struct Shared {
    transport: Arc<dyn Transport>,
    status: tokio::sync::watch::Sender<ServerStatus>,
    /// The transport's, or the server's own when the transport keeps none
    /// (`own_readiness`): then not ready from a failed read to the next
    /// delivery.
    readiness: ReadinessSignal,
    own_readiness: bool,
    /// One warning per interval for failed reads and for responses with
    /// nowhere to go: a broker down or a flood of bad input must not
    /// flood the logs too.
    receive_warnings: Throttle,
    dropped_warnings: Throttle,
    oversized_warnings: Throttle,
    service: String,
    engine: Engine,
    counters: ServerCounters,
    limits: Limits,
    /// The largest reply payload sent: the smaller of the server's and the
    /// transport's limits.
    max_reply_bytes: usize,
    cancel_on_deadline: bool,
}

impl Shared {
    fn stats(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (s, e) = (&self.counters, &self.engine.counters);
        ServerStats {
            received: get(&s.received),
            acked: get(&s.acked),
            released: get(&s.released),
            calls: get(&e.calls),
            notifications: get(&e.notifications),
            errors: get(&e.errors),
            panics: get(&e.panics),
            expired: get(&s.expired),
            cancelled: get(&s.cancelled),
            dropped: get(&s.dropped),
            reply_failures: get(&s.reply_failures),
            oversized_replies: get(&s.oversized_replies),
        }
    }
}

/// Serves a router's methods under a service name: one of a group of
/// competing consumers of the service's request queue.
///
/// ```
/// # use std::sync::Arc;
/// # use busrpc_core::{memory::MemoryTransport, Router, RpcError, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), busrpc_core::Error> {
/// let transport = Arc::new(MemoryTransport::new());
/// let router = Router::new()
///     .method("echo", |(text,): (String,)| async move { Ok::<_, RpcError>(format!("RPC {text}!")) });
/// let server = Server::new(transport, "test", router).start().await?;
/// // ... serve until it is time to stop, then:
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Server {
    transport: Arc<dyn Transport>,
    service: String,
    router: crate::router::Methods,
    middleware: Vec<Arc<dyn Middleware>>,
    config: ServerConfig,
}

impl Server {
    /// A server for `service` with the default [`ServerConfig`].
    pub fn new<S: Clone + Send + Sync + 'static>(
        transport: Arc<dyn Transport>,
        service: impl Into<String>,
        router: Router<S>,
    ) -> Self {
        let service = service.into();
        Self {
            transport,
            router: router.into_methods(&service),
            service,
            middleware: Vec::new(),
            config: ServerConfig::default(),
        }
    }

    /// Wraps every call and notification in `middleware` (see
    /// [`Middleware`]): the first added runs outermost. With none, the
    /// engine calls handlers directly.
    #[must_use]
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Replaces the configuration.
    #[must_use]
    pub fn with_config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Joins the service's consumer group and starts serving in the
    /// background. When this returns, requests published to the service are
    /// received by this instance or its peers.
    pub async fn start(self) -> Result<ServerHandle, Error> {
        let address = self.transport.service_address(&self.service);
        // A request holds its permit until its settlement is reported, which
        // may be after its task ends (see `Acknowledge::settle_then`): so the
        // permits, not the tasks, tell when everything in hand is done.
        let concurrency = self
            .config
            .concurrency
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let permits = Arc::new(Semaphore::new(concurrency));
        // The deliveries are polled while holding one permit, hence the 1.
        let free = permits.clone();
        let demand = Demand::new(move || free.available_permits() + 1);
        let deliveries = self
            .transport
            .consume(&address, &self.service, demand)
            .await?;
        let (readiness, own_readiness) = match deliveries.readiness() {
            Some(signal) => (signal.clone(), false),
            None => (ReadinessSignal::new(Readiness::Ready), true),
        };
        let shared = Arc::new(Shared {
            status: tokio::sync::watch::Sender::new(ServerStatus::Serving),
            readiness,
            own_readiness,
            receive_warnings: Throttle::new(WARN_EVERY),
            dropped_warnings: Throttle::new(WARN_EVERY),
            oversized_warnings: Throttle::new(WARN_EVERY),
            engine: Engine::new(
                self.router,
                &self.service,
                self.middleware,
                self.config.limits.max_batch_len,
                Some(permits.clone()),
            ),
            cancel_on_deadline: self.config.cancel_on_deadline,
            max_reply_bytes: self
                .transport
                .max_payload_bytes()
                .map_or(self.config.limits.max_message_bytes, |t| {
                    t.min(self.config.limits.max_message_bytes)
                }),
            transport: self.transport,
            service: self.service,
            counters: ServerCounters::default(),
            limits: self.config.limits,
        });
        let stop = CancellationToken::new();
        let span = tracing::info_span!("busrpc.server", service = %shared.service);
        let serving = serve(
            deliveries,
            shared.clone(),
            self.config,
            permits,
            stop.clone(),
        );
        let task = tokio::spawn(serving.instrument(span));
        tracing::info!(service = %shared.service, %address, "serving");
        Ok(ServerHandle {
            shared,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use busrpc_core::{memory::MemoryTransport, Router, Server};
    /// # async fn f(router: Router) -> Result<(), busrpc_core::Error> {
    /// Server::new(Arc::new(MemoryTransport::new()), "test", router)
    ///     .run_until(async { tokio::signal::ctrl_c().await.ok(); })
    ///     .await
    /// # }
    /// ```
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), Error> {
        let handle = self.start().await?;
        signal.await;
        handle.shutdown().await;
        Ok(())
    }
}

/// A running server instance.
///
/// Dropping the handle stops the server gracefully in the background (as
/// [`shutdown`](Self::shutdown) does, without waiting); to serve on without
/// a handle, call [`detach`](Self::detach). Everything but `abort` and
/// `detach` takes `&self`: to share the handle (with a web framework's
/// health routes and its shutdown signal, say), put it in an `Arc`; the
/// server then stops when the last clone is dropped.
///
/// ```
/// # use std::sync::Arc;
/// # use busrpc_core::{memory::MemoryTransport, Router, RpcError, Server};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), busrpc_core::Error> {
/// # let transport = Arc::new(MemoryTransport::new());
/// # let router = Router::new().method("ping", |(): ()| async { Ok::<_, RpcError>("pong") });
/// let server = Arc::new(Server::new(transport, "test", router).start().await?);
/// let probe = server.clone();
/// assert!(probe.readiness().is_ready()); // what /readyz answers
/// server.shutdown().await;
/// assert!(!probe.readiness().is_ready());
/// probe.stopped().await.expect("stopped as asked, not by a failure");
/// # Ok(()) }
/// ```
#[must_use = "dropping a ServerHandle stops the server; call shutdown().await, or detach() to serve on"]
pub struct ServerHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    /// `None` once shut down (or being shut down), aborted or detached.
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ServerHandle {
    /// What this instance has done so far.
    pub fn stats(&self) -> ServerStats {
        self.shared.stats()
    }

    /// The service served.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// Where the server is in its life now: a health check's answer.
    pub fn status(&self) -> ServerStatus {
        self.shared.status.borrow().clone()
    }

    /// Whether this instance takes requests now: serving, in its group
    /// with its share of the queue, and its broker answering, as far as its
    /// transport can tell (see [`Readiness`]). A readiness probe's answer;
    /// [`status`](Self::status) is the liveness probe's.
    pub fn readiness(&self) -> Readiness {
        match &*self.shared.status.borrow() {
            ServerStatus::Serving => self.shared.readiness.get(),
            ServerStatus::Stopping => Readiness::NotReady("the server is stopping".into()),
            ServerStatus::Stopped => Readiness::NotReady("the server has stopped".into()),
            ServerStatus::Failed(e) => {
                Readiness::NotReady(format!("the server stopped after an error: {e}").into())
            }
        }
    }

    /// Waits until the server is ready (see [`readiness`](Self::readiness)):
    /// `true` then, `false` if it stops first.
    pub async fn ready(&self) -> bool {
        let mut status = self.shared.status.subscribe();
        loop {
            if !matches!(*status.borrow_and_update(), ServerStatus::Serving) {
                return false;
            }
            if self.shared.readiness.get().is_ready() {
                return true;
            }
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                () = self.shared.readiness.wait_for(Readiness::is_ready) => {}
            }
        }
    }

    /// Resolves when the server has stopped: `Ok` when it was asked to (or
    /// its handle dropped elsewhere, or it was aborted), the error when it
    /// stopped by itself (see [`ServerStatus::Failed`]). An application
    /// awaits it beside its own work, to exit or alert rather than leave
    /// callers timing out.
    pub async fn stopped(&self) -> Result<(), Arc<TransportError>> {
        let mut status = self.shared.status.subscribe();
        let status = status
            .wait_for(|s| matches!(s, ServerStatus::Stopped | ServerStatus::Failed(_)))
            .await;
        match status.as_deref() {
            Ok(ServerStatus::Failed(e)) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// Stops taking requests, finishes the ones in hand (releasing those
    /// still running when the grace period ends), leaves the group, and
    /// returns.
    ///
    /// When it returns, every finished request is committed or acknowledged
    /// on the broker, what was not started is handed back, and this member
    /// has left its group (see [`Deliveries::close`]): the process may exit,
    /// and no peer answers again what this instance answered. Called again,
    /// or from several places at once, each call returns once the server
    /// has stopped.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let task = self.take_task();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "server task failed");
            }
        }
        // Another caller took the task: its stop is this one's.
        let _ = self.stopped().await;
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Stops at once, as if the process died: nothing in hand is answered
    /// or acknowledged, so the broker hands it to another instance.
    pub fn abort(self) {
        if let Some(task) = self.take_task() {
            task.abort();
        }
    }

    /// Lets the server serve on without this handle, until the runtime
    /// ends: for a server meant to run as long as its process.
    pub fn detach(self) {
        self.take_task();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let running = self
            .task
            .get_mut()
            .map_or_else(|e| e.get_ref().is_some(), |task| task.is_some());
        if running {
            // Graceful, in the background: the serving task finishes what
            // it holds and leaves its group on its own.
            self.stop.cancel();
        }
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("service", &self.shared.service)
            .field("stats", &self.stats())
            .finish()
    }
}

async fn serve(
    mut deliveries: Deliveries,
    shared: Arc<Shared>,
    config: ServerConfig,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let concurrency = permits.available_permits();
    // `stopped()` resolves however this task ends: aborted, or a panic.
    let _stopped_anyway = StoppedOnDrop(shared.clone());
    // Owned here so that aborting this task aborts every handler with it.
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    let mut fatal = 0u32;
    let mut failure = None;
    // One waiter for the whole loop: a fresh `cancelled()` per select would
    // register and deregister with the token's lock twice per request.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stopped => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let next = tokio::select! {
            biased;
            () = &mut stopped => break,
            next = deliveries.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                if failures > 0 && shared.own_readiness {
                    shared.readiness.ready();
                }
                (failures, fatal) = (0, 0);
                shared.count(ServerEvent::Received);
                if delivery.attempt().is_some_and(|n| n > 1) {
                    shared.count(ServerEvent::Redelivered);
                }
                let request = handle(shared.clone(), delivery, permit);
                if config.run_inline {
                    start_inline(&mut tasks, request);
                } else {
                    tasks.spawn(request);
                }
            }
            Some(Err(e)) => {
                drop(permit);
                if shared.own_readiness {
                    shared
                        .readiness
                        .not_ready(format!("receiving requests failed: {e}"));
                }
                if !e.is_transient() {
                    fatal += 1;
                    if fatal >= FATAL_ERRORS_TO_STOP {
                        tracing::error!(error = %e, fatal, "the broker keeps refusing to hand out requests; serving stops");
                        failure = Some(e);
                        break;
                    }
                }
                // Back off (up to 1 s) and go on.
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(10u64 << failures.min(7));
                if let Some(held_back) = shared.receive_warnings.allow() {
                    tracing::warn!(error = %e, ?pause, held_back, "receiving requests failed");
                }
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => {
                tracing::error!("the transport closed the request queue; serving stops");
                failure = Some(TransportError::Closed);
                break;
            }
        }
        while let Some(done) = tasks.try_join_next() {
            log_task_failure(done);
        }
    }
    shared.status.send_replace(ServerStatus::Stopping);
    let in_hand = concurrency - permits.available_permits();
    if in_hand > 0 {
        tracing::info!(in_hand, grace = ?config.shutdown_grace, "finishing requests in hand");
    }
    let give_up_at = tokio::time::Instant::now() + config.shutdown_grace;
    let everything = u32::try_from(concurrency).expect("clamped to u32 above");
    let settled = tokio::time::timeout_at(give_up_at, permits.acquire_many(everything)).await;
    while let Some(done) = tasks.try_join_next() {
        log_task_failure(done);
    }
    if settled.is_err() {
        // Stop what is still running. Its deliveries were never settled,
        // so the broker hands them to another member once this one leaves
        // the group, just below: released, in effect. Settlements already
        // handed to the transport complete on their own.
        tasks.abort_all();
        let mut released = 0;
        while let Some(done) = tasks.join_next().await {
            match done {
                Err(e) if e.is_cancelled() => released += 1,
                done => log_task_failure(done),
            }
        }
        tracing::warn!(
            released,
            "shutdown grace ran out; releasing what is still running"
        );
        shared.count_n(ServerEvent::Released, released);
    }
    // Only now leave the group, so nothing finished is handed out again;
    // `shutdown()` returns once it has.
    deliveries.close().await;
    // Only now: `stopped()` resolves once what was in hand is settled.
    shared.status.send_replace(match failure {
        Some(e) => ServerStatus::Failed(Arc::new(e)),
        None => ServerStatus::Stopped,
    });
    tracing::info!("stopped");
}

/// Marks the server stopped if its task ends without saying how (aborted,
/// or a panic), so that nobody waits on `stopped()` for ever.
struct StoppedOnDrop(Arc<Shared>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.status.send_if_modified(|status| {
            let running = matches!(status, ServerStatus::Serving | ServerStatus::Stopping);
            if running {
                *status = ServerStatus::Stopped;
            }
            running
        });
    }
}

/// Runs `request` here until it first has to wait, then in a task of its
/// own. Most requests never wait (their handler is ready at once and the
/// transport queues their settlement): they cost no task, and no wake-up
/// of another worker to run it.
fn start_inline(tasks: &mut JoinSet<()>, request: impl Future<Output = ()> + Send + 'static) {
    let mut request = Box::pin(request);
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    // A panic outside a handler (those the engine catches) ends this
    // request only, as it would end the request's task.
    match std::panic::catch_unwind(AssertUnwindSafe(|| request.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(())) => {}
        // Polled again at once in its task, which registers the task's
        // waker with whatever it waits for.
        Ok(Poll::Pending) => drop(tasks.spawn(request)),
        Err(panic) => {
            tracing::error!(panic = panic_message(&*panic), "a request task failed");
        }
    }
}

fn log_task_failure(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if !e.is_cancelled() {
            tracing::error!(error = %e, "a request task failed");
        }
    }
}

/// Handles one delivery: skip, or answer then acknowledge; the transport
/// releases it if the answer cannot be published. `permit` is given back
/// when the transport reports the settlement.
async fn handle(shared: Arc<Shared>, delivery: Delivery, permit: OwnedSemaphorePermit) {
    let request = delivery.message();
    // Read once: `process` answers in it, and a refused reply is told in it.
    let codec = Codec::from_content_type(request.headers.get(header::CONTENT_TYPE));
    let told_in = codec.as_ref().map_or(Codec::Json, |c| *c);
    let reply = process(&shared, request, delivery.attempt(), codec).await;
    let reply_to = reply.as_ref().map(|(to, _)| to.clone());
    let server = shared.clone();
    // Kept (a reference count, no copy) to tell the caller if the broker
    // refuses the reply.
    let request = delivery.message().payload.clone();
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
        .settle_then(&*shared.transport, reply, on_settled)
        .await;
}

/// Sends the caller of a request whose reply the broker refused a small
/// -32603 saying why, once, without waiting: the broker may refuse that
/// too (a full inbox), and then there is no one left to tell.
fn tell_refused(
    shared: &Arc<Shared>,
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
    let Some((to, message)) = refuse(shared, Some(reply_to), codec, request, &error) else {
        return;
    };
    let transport = shared.transport.clone();
    runtime.spawn(async move {
        if let Err(e) = transport.publish(&to, message).await {
            tracing::debug!(reply_to = %to, error = %e, "telling the caller of a refused reply failed too");
        }
    });
}

/// The reply to one message and where it goes, or `None` when there is
/// nothing to send.
async fn process(
    shared: &Shared,
    message: &Message,
    attempt: Option<u32>,
    codec: Result<Codec, CodecError>,
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
            return refuse(shared, reply_to, codec, &message.payload, &error);
        }
    };
    if deadline.is_some_and(|d| d.has_passed()) {
        shared.count(ServerEvent::Expired);
        tracing::debug!("skipping a request whose deadline has passed");
        return None;
    }
    let codec = match codec {
        Ok(codec) => codec,
        Err(e) => {
            return reject(
                shared,
                reply_to,
                Codec::Json,
                &RpcError::parse_error().with_data(&e.to_string()),
            )
        }
    };
    let size = message.payload.len();
    if size > shared.limits.max_message_bytes {
        let reason = format!(
            "message of {size} bytes exceeds this server's limit of {} bytes",
            shared.limits.max_message_bytes
        );
        return reject(
            shared,
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
        return reject(shared, reply_to, codec, &error);
    }
    let json = match codec.to_json(&message.payload) {
        Ok(json) => json,
        Err(e) => {
            return reject(
                shared,
                reply_to,
                codec,
                &RpcError::parse_error().with_data(&e.to_string()),
            )
        }
    };
    let env = Envelope {
        headers,
        deadline,
        attempt,
    };
    let response = match deadline {
        Some(deadline) => {
            let respond = Deadline::scope(deadline, respond(shared, env, &json));
            if shared.cancel_on_deadline {
                match until(deadline, respond).await {
                    Some(response) => response,
                    None => {
                        shared.count(ServerEvent::Cancelled);
                        tracing::debug!(%deadline, "a handler ran past its deadline; stopped");
                        return None;
                    }
                }
            } else {
                respond.await
            }
        }
        None => respond(shared, env, &json).await,
    }?;
    let reply = route(shared, reply_to, codec, response)?;
    let size = reply.1.payload.len();
    if size > shared.max_reply_bytes {
        // The broker would refuse it, or the caller's own limit would.
        shared.count(ServerEvent::Oversized);
        let limit = shared.max_reply_bytes;
        if let Some(held_back) = shared.oversized_warnings.allow() {
            tracing::warn!(service = %shared.service, size, limit, held_back, "a reply is over the size limit; its caller is told instead");
        }
        let error = RpcError::internal_error().with_data(&serde_json::json!({
            "error": "the reply is larger than the limit",
            "reply_bytes": size,
            "max_bytes": limit,
        }));
        return refuse(shared, reply_to, codec, &message.payload, &error);
    }
    Some(reply)
}

/// The engine's response to `json` (which runs each call in a span of its
/// own, the caller's trace context its parent).
async fn respond(shared: &Shared, env: Envelope<'_>, json: &[u8]) -> Option<Vec<u8>> {
    shared.engine.respond(json, env).await
}

/// `work`'s output, or `None` if `deadline` passes first. The timer is set
/// only if `work` has to wait: most handlers finish in their first poll,
/// and a timer per request would cost every one of them.
async fn until<F: Future>(deadline: Deadline, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout(deadline.remaining(), work).await.ok(),
    }
}

fn reject(
    shared: &Shared,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    error: &RpcError,
) -> Option<(Arc<str>, Message)> {
    route(shared, reply_to, codec, shared.engine.refused(None, error))
}

/// Answers every call of a request the server will not run with `error`,
/// each under its own id where the payload can be read (so that a caller
/// matching replies by id learns why); a notification gets nothing and is
/// counted as dropped.
fn refuse(
    shared: &Shared,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    payload: &[u8],
    error: &RpcError,
) -> Option<(Arc<str>, Message)> {
    let answer = match codec.to_json(payload) {
        Ok(json) => crate::jsonrpc::answer_all(&json, error),
        Err(_) => Some(crate::jsonrpc::error_response(None, error)),
    };
    shared.engine.count_refused(error.code());
    let Some(answer) = answer else {
        shared.count(ServerEvent::Dropped);
        tracing::debug!(code = error.code(), "a refused notification; dropped");
        return None;
    };
    bump(&shared.engine.counters.errors);
    route(shared, reply_to, codec, answer)
}

fn route(
    shared: &Shared,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    json: Vec<u8>,
) -> Option<(Arc<str>, Message)> {
    let Some(reply_to) = reply_to else {
        shared.count(ServerEvent::Dropped);
        if let Some(held_back) = shared.dropped_warnings.allow() {
            tracing::warn!(
                response = %Excerpt(&json),
                held_back,
                "a response has no reply-to address; dropped"
            );
        }
        return None;
    };
    let (payload, codec) = match codec.from_json(json) {
        Ok(payload) => (payload, codec),
        Err(e) => {
            tracing::error!(error = %e, "re-encoding a response failed");
            let internal = crate::jsonrpc::error_response(None, &RpcError::internal_error());
            (internal, Codec::Json)
        }
    };
    let mut reply = Message::new(payload);
    if codec != Codec::Json {
        reply
            .headers
            .insert(header::CONTENT_TYPE, codec.content_type());
    }
    Some((Arc::clone(reply_to), reply))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use tokio::sync::mpsc;

    use super::*;
    use crate::jsonrpc::RpcError;
    use crate::transport::{Acknowledge, Inbox, OnSettled};

    type Held = Arc<Mutex<Vec<OnSettled>>>;

    /// A broker whose settlements are reported only when the test says so,
    /// as a transport that settles in batches reports them after the
    /// request's task has ended.
    struct HeldSettlements {
        queue: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
        held: Held,
    }

    impl HeldSettlements {
        fn new() -> (Arc<Self>, mpsc::UnboundedSender<Message>) {
            let (tx, rx) = mpsc::unbounded_channel();
            let transport = Self {
                queue: Mutex::new(Some(rx)),
                held: Held::default(),
            };
            (Arc::new(transport), tx)
        }

        fn held(&self) -> usize {
            self.held.lock().unwrap().len()
        }

        /// Reports every settlement held so far as done.
        fn report(&self) {
            let held = std::mem::take(&mut *self.held.lock().unwrap());
            for on_settled in held {
                on_settled(Ok(()));
            }
        }
    }

    struct HeldAck(Held);

    #[async_trait]
    impl Acknowledge for HeldAck {
        async fn ack(self: Box<Self>) -> Result<(), TransportError> {
            unreachable!("the server settles through settle_then")
        }

        async fn release(self: Box<Self>) -> Result<(), TransportError> {
            unreachable!("the server settles through settle_then")
        }

        async fn settle_then(
            self: Box<Self>,
            _transport: &dyn Transport,
            _reply: Option<(Arc<str>, Message)>,
            on_settled: OnSettled,
        ) {
            self.0.lock().unwrap().push(on_settled);
        }
    }

    #[async_trait]
    impl Transport for HeldSettlements {
        async fn publish(&self, _: &str, _: Message) -> Result<(), TransportError> {
            Ok(())
        }

        async fn consume(&self, _: &str, _: &str, _: Demand) -> Result<Deliveries, TransportError> {
            let queue = self.queue.lock().unwrap().take().expect("one consumer");
            let held = self.held.clone();
            Ok(Deliveries::new(futures_util::stream::unfold(
                queue,
                move |mut queue| {
                    let held = held.clone();
                    async move {
                        let message = queue.recv().await?;
                        Some((Ok(Delivery::new(message, HeldAck(held))), queue))
                    }
                },
            )))
        }

        async fn inbox(&self) -> Result<Inbox, TransportError> {
            Err(TransportError::Closed)
        }
    }

    fn call(n: u64) -> Message {
        let json = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":[{n}],"id":{n}}}"#);
        Message::new(json.into_bytes()).with_header(header::REPLY_TO, "inbox")
    }

    async fn start(transport: Arc<HeldSettlements>, config: ServerConfig) -> ServerHandle {
        let router =
            Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        Server::new(transport, "held", router)
            .with_config(config)
            .start()
            .await
            .unwrap()
    }

    /// Waits (yielding, not sleeping) until `done` holds; a bound on the
    /// yields, not on time, turns "never" into a failure.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..100_000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never came true: {what}");
    }

    /// A broker that only ever fails, in the way given.
    struct Failing(fn() -> TransportError);

    #[async_trait]
    impl Transport for Failing {
        async fn publish(&self, _: &str, _: Message) -> Result<(), TransportError> {
            Err((self.0)())
        }

        async fn consume(&self, _: &str, _: &str, _: Demand) -> Result<Deliveries, TransportError> {
            let error = self.0;
            Ok(Deliveries::new(futures_util::stream::repeat_with(
                move || Err(error()),
            )))
        }

        async fn inbox(&self) -> Result<Inbox, TransportError> {
            Err((self.0)())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_errors_stop_the_server_and_say_why() {
        let refused = || TransportError::Rejected("NOPERM no permission to read".into());
        let server = Server::new(Arc::new(Failing(refused)), "denied", Router::new())
            .start()
            .await
            .unwrap();
        let stopped = tokio::time::timeout(Duration::from_secs(3600), server.stopped());
        let stopped = stopped.await.expect("stopped by itself").unwrap_err();
        assert!(stopped.to_string().contains("NOPERM"), "{stopped}");
        assert!(matches!(server.status(), ServerStatus::Failed(_)));
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_do_not_stop_the_server() {
        let down = || TransportError::Unavailable("connection refused".into());
        let server = Server::new(Arc::new(Failing(down)), "down", Router::new())
            .start()
            .await
            .unwrap();
        // A minute of failed reads, backing off.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(matches!(server.status(), ServerStatus::Serving));
        server.shutdown().await;
    }

    /// Dropping a handle stops its server (gracefully, in the background);
    /// a detached one serves on.
    #[tokio::test]
    async fn a_dropped_handle_stops_its_server_and_a_detached_one_serves_on() {
        let transport = Arc::new(crate::memory::MemoryTransport::new());
        let router =
            || Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let dropped = Server::new(transport.clone(), "dropped", router())
            .start()
            .await
            .unwrap();
        drop(dropped);
        Server::new(transport.clone(), "detached", router())
            .start()
            .await
            .unwrap()
            .detach();
        let config = crate::ClientConfig::default().timeout(Duration::from_millis(300));
        let client = crate::Client::connect_with(transport, config)
            .await
            .unwrap();
        let err = client
            .call::<u64>("dropped", "echo", (1,))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(
            client.call::<u64>("detached", "echo", (2,)).await.unwrap(),
            2
        );
    }

    /// A reply the broker refuses (here: a full inbox) is final: the
    /// request is acknowledged and counted, not released to run again in a
    /// loop, and the server goes on.
    #[tokio::test]
    async fn a_refused_reply_is_final() {
        let transport = Arc::new(crate::memory::MemoryTransport::with_capacity(2));
        let runs = Arc::new(AtomicU64::new(0));
        let counted = runs.clone();
        let router = Router::new().method("echo", move |(n,): (u64,)| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, RpcError>(n) }
        });
        let server = Server::new(transport.clone(), "full", router)
            .start()
            .await
            .unwrap();
        // Nobody reads this inbox: it holds two replies, then is full.
        let inbox = transport.inbox().await.unwrap();
        let address = transport.service_address("full");
        for n in 1..=3 {
            let request = call(n).with_header(header::REPLY_TO, inbox.address());
            transport.publish(&address, request).await.unwrap();
            let acked = n;
            for _ in 0..10_000 {
                if server.stats().acked >= acked {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(server.stats().acked, acked, "request {n} settled");
        }
        server.shutdown().await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "each ran once");
        drop(inbox);
    }

    #[tokio::test]
    async fn a_request_holds_its_permit_until_its_settlement_is_reported() {
        let (transport, queue) = HeldSettlements::new();
        let server = start(transport.clone(), ServerConfig::default().concurrency(2)).await;
        for n in 1..=3 {
            queue.send(call(n)).unwrap();
        }
        until("two settlements held", || transport.held() == 2).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(server.stats().received, 2, "two permits, both held");
        assert_eq!(server.stats().acked, 0, "nothing reported yet");

        transport.report();
        until("one settlement held", || transport.held() == 1).await;
        let stats = server.stats();
        assert_eq!((stats.received, stats.acked), (3, 2));
        transport.report();
        assert_eq!(server.stats().acked, 3);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_waits_for_settlements_reported_after_their_task() {
        let (transport, queue) = HeldSettlements::new();
        let server = start(transport.clone(), ServerConfig::default()).await;
        queue.send(call(1)).unwrap();
        until("one settlement held", || transport.held() == 1).await;

        let stats = server.shared.clone();
        let shutdown = tokio::spawn(async move { server.shutdown().await });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !shutdown.is_finished(),
            "shutdown returned with a settlement unreported"
        );
        transport.report();
        shutdown.await.unwrap();
        assert_eq!(stats.stats().acked, 1);
        assert_eq!(stats.stats().released, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_waiting_for_settlements_when_its_grace_runs_out() {
        let (transport, queue) = HeldSettlements::new();
        let config = ServerConfig::default().shutdown_grace(Duration::from_secs(5));
        let server = start(transport.clone(), config).await;
        queue.send(call(1)).unwrap();
        until("one settlement held", || transport.held() == 1).await;
        let stats = server.shared.clone();
        // The paused clock jumps to the end of the grace once all is idle.
        server.shutdown().await;
        // Handed to the transport, not released: it is the transport's to finish.
        assert_eq!((stats.stats().acked, stats.stats().released), (0, 0));
        transport.report();
        assert_eq!(stats.stats().acked, 1);
    }

    /// The id of the task each call's handler ran in, for three calls.
    async fn handler_tasks(config: ServerConfig) -> Vec<String> {
        let transport = Arc::new(crate::memory::MemoryTransport::new());
        let router = Router::new().method("task", |(): ()| async move {
            Ok::<_, RpcError>(tokio::task::try_id().map(|id| id.to_string()))
        });
        let server = Server::new(transport.clone(), "tasks", router)
            .with_config(config)
            .start()
            .await
            .unwrap();
        let client = crate::Client::connect(transport).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let id: Option<String> = client.call("tasks", "task", ()).await.unwrap();
            ids.push(id.expect("handlers run in a task"));
        }
        server.shutdown().await;
        ids
    }

    #[tokio::test]
    async fn ready_handlers_run_in_the_serving_task_unless_told_otherwise() {
        let inline = handler_tasks(ServerConfig::default()).await;
        assert!(inline.iter().all(|id| *id == inline[0]), "{inline:?}");
        let spawned = handler_tasks(ServerConfig::default().run_inline(false)).await;
        let distinct: std::collections::HashSet<_> = spawned.iter().collect();
        assert_eq!(distinct.len(), 3, "{spawned:?}");
    }

    #[tokio::test]
    async fn a_handler_that_waits_goes_on_in_its_own_task() {
        // "wait" returns only once "wake" has run: were a waiting handler
        // kept in the serving task, "wake" would never be taken.
        let transport = Arc::new(crate::memory::MemoryTransport::new());
        let woken = Arc::new(tokio::sync::Notify::new());
        let (w1, w2) = (woken.clone(), woken);
        let router = Router::new()
            .method("wait", move |(): ()| {
                let woken = w1.clone();
                async move {
                    woken.notified().await;
                    Ok::<_, RpcError>("waited")
                }
            })
            .method("wake", move |(): ()| {
                let woken = w2.clone();
                async move {
                    woken.notify_one();
                    Ok::<_, RpcError>("woke")
                }
            });
        let server = Server::new(transport.clone(), "waits", router)
            .start()
            .await
            .unwrap();
        let client = crate::Client::connect_with(
            transport,
            crate::ClientConfig::default().timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        let wait = client.call::<String>("waits", "wait", ());
        let wake = async {
            // Sent once "wait" is in hand, so that it is taken first.
            until("the first call taken", || server.stats().received == 1).await;
            client.call::<String>("waits", "wake", ()).await
        };
        let (waited, woke) = tokio::join!(wait, wake);
        assert_eq!(
            (waited.unwrap(), woke.unwrap()),
            ("waited".into(), "woke".into())
        );
        server.shutdown().await;
    }

    struct NoAck;

    #[async_trait]
    impl Acknowledge for NoAck {
        async fn ack(self: Box<Self>) -> Result<(), TransportError> {
            Ok(())
        }

        async fn release(self: Box<Self>) -> Result<(), TransportError> {
            Ok(())
        }
    }

    /// Hands out what the test sends, deliveries and read errors alike,
    /// with the readiness signal given, if any.
    struct Scripted {
        queue: Mutex<Option<mpsc::UnboundedReceiver<Result<Delivery, TransportError>>>>,
        signal: Option<ReadinessSignal>,
    }

    impl Scripted {
        fn new(
            signal: Option<ReadinessSignal>,
        ) -> (
            Arc<Self>,
            mpsc::UnboundedSender<Result<Delivery, TransportError>>,
        ) {
            let (tx, rx) = mpsc::unbounded_channel();
            let queue = Mutex::new(Some(rx));
            (Arc::new(Self { queue, signal }), tx)
        }
    }

    #[async_trait]
    impl Transport for Scripted {
        async fn publish(&self, _: &str, _: Message) -> Result<(), TransportError> {
            Ok(())
        }

        async fn consume(&self, _: &str, _: &str, _: Demand) -> Result<Deliveries, TransportError> {
            let queue = self.queue.lock().unwrap().take().expect("one consumer");
            let deliveries = Deliveries::new(futures_util::stream::unfold(
                queue,
                |mut queue| async move { Some((queue.recv().await?, queue)) },
            ));
            Ok(match &self.signal {
                Some(signal) => deliveries.with_readiness(signal.clone()),
                None => deliveries,
            })
        }

        async fn inbox(&self) -> Result<Inbox, TransportError> {
            Err(TransportError::Closed)
        }
    }

    fn notification() -> Delivery {
        let json = r#"{"jsonrpc":"2.0","method":"echo","params":[1]}"#;
        Delivery::new(Message::new(json.as_bytes().to_vec()), NoAck)
    }

    /// Without a signal from its transport, a server is not ready from a
    /// failed read until it next receives a request.
    #[tokio::test(start_paused = true)]
    async fn readiness_follows_failed_reads_when_the_transport_says_nothing() {
        let (transport, script) = Scripted::new(None);
        let server = Arc::new(start_scripted(transport).await);
        assert_eq!(server.readiness(), Readiness::Ready);
        assert!(server.ready().await);
        script
            .send(Err(TransportError::Unavailable(
                "connection refused".into(),
            )))
            .unwrap();
        until("not ready", || !server.readiness().is_ready()).await;
        let why = server.readiness().to_string();
        assert!(why.contains("connection refused"), "{why}");
        // Waits for the server to read again, which is after its backoff.
        let waiting = tokio::spawn({
            let server = server.clone();
            async move { server.ready().await }
        });
        script.send(Ok(notification())).unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(3600), waiting);
        assert!(ready.await.expect("ready again").unwrap());
        assert_eq!(server.stats().received, 1);
        server.shutdown().await;
        assert!(!server.readiness().is_ready());
        assert!(
            !server.ready().await,
            "a stopped server never becomes ready"
        );
    }

    /// A transport's own signal is the server's readiness while it serves,
    /// whatever the reads do.
    #[tokio::test(start_paused = true)]
    async fn readiness_is_the_transports_when_it_keeps_one() {
        let signal = ReadinessSignal::new(Readiness::NotReady("joining the group".into()));
        let (transport, script) = Scripted::new(Some(signal.clone()));
        let server = Arc::new(start_scripted(transport).await);
        assert_eq!(
            server.readiness(),
            Readiness::NotReady("joining the group".into())
        );
        let waiting = tokio::spawn({
            let server = server.clone();
            async move { server.ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        signal.ready();
        let ready = tokio::time::timeout(Duration::from_secs(3600), waiting);
        assert!(ready.await.expect("ready").unwrap());
        // A delivery after a failed read does not overrule the transport.
        signal.not_ready("rebalancing");
        script
            .send(Err(TransportError::Unavailable("broker down".into())))
            .unwrap();
        script.send(Ok(notification())).unwrap();
        // Past the backoff (the clock is paused: sleeping costs nothing).
        while server.stats().received == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            server.readiness(),
            Readiness::NotReady("rebalancing".into())
        );
        server.shutdown().await;
    }

    async fn start_scripted(transport: Arc<Scripted>) -> ServerHandle {
        let router =
            Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        Server::new(transport, "scripted", router)
            .start()
            .await
            .unwrap()
    }

    /// A handle shared by several owners is shut down by any of them, and
    /// every caller of `shutdown` returns once the server has stopped.
    #[tokio::test]
    async fn a_shared_handle_shuts_down_once_for_every_caller() {
        let transport = Arc::new(crate::memory::MemoryTransport::new());
        let router =
            Router::new().method("echo", |(n,): (u64,)| async move { Ok::<_, RpcError>(n) });
        let server = Arc::new(
            Server::new(transport.clone(), "shared", router)
                .start()
                .await
                .unwrap(),
        );
        let (a, b) = (server.clone(), server.clone());
        let stopped = server.clone();
        let ((), (), stopped) = tokio::join!(
            async move { a.shutdown().await },
            async move { b.shutdown().await },
            async move { stopped.stopped().await },
        );
        stopped.unwrap();
        assert!(matches!(server.status(), ServerStatus::Stopped));
        // And once more, after the fact.
        server.shutdown().await;
    }
}
