//! Serving a [`Router`] under a service name through a [`Transport`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::codec::Codec;
use crate::engine::Engine;
use crate::error::Error;
use crate::jsonrpc::RpcError;
use crate::message::{header, Limits, Message};
use crate::router::Router;
use crate::transport::{Deliveries, Delivery, Transport};

/// How a server runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Most messages handled at once by this instance (default 128). The
    /// server takes no more deliveries while this many are in hand.
    pub concurrency: usize,
    /// Largest message and batch accepted (see [`Limits`]).
    pub limits: Limits,
    /// How long a graceful shutdown waits for calls in hand before releasing
    /// them to other instances (default 30 s).
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            concurrency: 128,
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(30),
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
}

/// What a server instance has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// Messages counted and dropped: bad input or a response with no
    /// `reply-to` to send it to.
    pub dropped: u64,
    /// Replies that could not be published and acknowledged; the request
    /// stays with the broker for another try.
    pub reply_failures: u64,
}

#[derive(Default)]
struct ServerCounters {
    received: AtomicU64,
    acked: AtomicU64,
    released: AtomicU64,
    expired: AtomicU64,
    dropped: AtomicU64,
    reply_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    transport: Arc<dyn Transport>,
    service: String,
    engine: Engine,
    counters: ServerCounters,
    limits: Limits,
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
            dropped: get(&s.dropped),
            reply_failures: get(&s.reply_failures),
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
    config: ServerConfig,
}

impl Server {
    /// A server for `service` with the default [`ServerConfig`].
    pub fn new<S: Clone + Send + Sync + 'static>(
        transport: Arc<dyn Transport>,
        service: impl Into<String>,
        router: Router<S>,
    ) -> Self {
        Self {
            transport,
            service: service.into(),
            router: router.into_methods(),
            config: ServerConfig::default(),
        }
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
        let deliveries = self.transport.consume(&address, &self.service).await?;
        let shared = Arc::new(Shared {
            engine: Engine::new(self.router, self.config.limits.max_batch_len),
            transport: self.transport,
            service: self.service,
            counters: ServerCounters::default(),
            limits: self.config.limits,
        });
        let stop = CancellationToken::new();
        let span = tracing::info_span!("busrpc.server", service = %shared.service);
        let task = tokio::spawn(
            serve(deliveries, shared.clone(), self.config, stop.clone()).instrument(span),
        );
        tracing::info!(service = %shared.service, %address, "serving");
        Ok(ServerHandle { shared, stop, task })
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
pub struct ServerHandle {
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: JoinHandle<()>,
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

    /// Stops taking requests, finishes the ones in hand (releasing those
    /// still running when the grace period ends), leaves the group, and
    /// returns.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "server task failed");
        }
    }

    /// Stops at once, as if the process died: nothing in hand is answered,
    /// acknowledged or released, so the broker hands it to another instance.
    pub fn abort(self) {
        self.task.abort();
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
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(config.concurrency));
    // Owned here so that aborting this task aborts every handler with it.
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
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
                failures = 0;
                bump(&shared.counters.received);
                let shared = shared.clone();
                tasks.spawn(async move {
                    handle(&shared, delivery).await;
                    drop(permit);
                });
            }
            Some(Err(e)) => {
                // A transient broker failure: back off (up to 1 s) and go on.
                failures = failures.saturating_add(1);
                let pause = Duration::from_millis(10u64 << failures.min(7));
                tracing::warn!(error = %e, ?pause, "receiving requests failed");
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => {
                tracing::warn!("the transport closed the request queue; serving stops");
                break;
            }
        }
        while let Some(done) = tasks.try_join_next() {
            log_task_failure(done);
        }
    }
    let in_hand = tasks.len();
    if in_hand > 0 {
        tracing::info!(in_hand, grace = ?config.shutdown_grace, "finishing requests in hand");
    }
    let give_up_at = tokio::time::Instant::now() + config.shutdown_grace;
    loop {
        match tokio::time::timeout_at(give_up_at, tasks.join_next()).await {
            Ok(Some(done)) => log_task_failure(done),
            Ok(None) => break,
            Err(_) => {
                // Stop what is still running. Its deliveries were never
                // settled, so the broker hands them to another member once
                // this one leaves the group, just below: released, in effect.
                let released = tasks.len() as u64;
                tracing::warn!(
                    released,
                    "shutdown grace ran out; releasing what is still running"
                );
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                shared
                    .counters
                    .released
                    .fetch_add(released, Ordering::Relaxed);
                break;
            }
        }
    }
    // Only now leave the group, so nothing finished is handed out again.
    drop(deliveries);
    tracing::info!("stopped");
}

fn log_task_failure(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if !e.is_cancelled() {
            tracing::error!(error = %e, "a request task failed");
        }
    }
}

/// Handles one delivery: skip, or answer then acknowledge; the transport
/// releases it if the answer cannot be published.
async fn handle(shared: &Shared, delivery: Delivery) {
    let counters = &shared.counters;
    match process(shared, delivery.message()).await {
        None => match delivery.ack().await {
            Ok(()) => bump(&counters.acked),
            Err(e) => tracing::warn!(service = %shared.service, error = %e, "acknowledging failed"),
        },
        Some((reply_to, reply)) => {
            match delivery
                .reply_and_ack(&*shared.transport, &reply_to, reply)
                .await
            {
                Ok(()) => bump(&counters.acked),
                Err(e) => {
                    bump(&counters.reply_failures);
                    tracing::warn!(service = %shared.service, error = %e, %reply_to, "answering failed; the request stays with the broker for another try");
                }
            }
        }
    }
}

/// The reply to one message and where it goes, or `None` when there is
/// nothing to send.
async fn process(shared: &Shared, message: &Message) -> Option<(Arc<str>, Message)> {
    let headers = &message.headers;
    if headers.deadline().is_some_and(|d| d.has_passed()) {
        bump(&shared.counters.expired);
        tracing::debug!("skipping a request whose deadline has passed");
        return None;
    }
    let reply_to = headers.get_shared(header::REPLY_TO);
    let codec = match Codec::from_content_type(headers.get(header::CONTENT_TYPE)) {
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
    let response = match headers.get(header::TRACEPARENT) {
        Some(traceparent) => {
            let span = tracing::debug_span!("busrpc.request", traceparent);
            shared.engine.respond(&json).instrument(span).await?
        }
        None => shared.engine.respond(&json).await?,
    };
    route(shared, reply_to, codec, response)
}

fn reject(
    shared: &Shared,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    error: &RpcError,
) -> Option<(Arc<str>, Message)> {
    route(shared, reply_to, codec, shared.engine.error(None, error))
}

fn route(
    shared: &Shared,
    reply_to: Option<&Arc<str>>,
    codec: Codec,
    json: Vec<u8>,
) -> Option<(Arc<str>, Message)> {
    let Some(reply_to) = reply_to else {
        bump(&shared.counters.dropped);
        tracing::warn!(
            response = %String::from_utf8_lossy(&json),
            "a response has no reply-to address; dropped"
        );
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
