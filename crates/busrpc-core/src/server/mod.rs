//! Layer 4, the server: serving a [`Router`] under a service name through
//! a [`Transport`], one of a group of competing consumers of the service's
//! request queue. The loop that takes deliveries ([`serve`]), the path of
//! one delivery ([`request`]) and the one policy for how it is settled
//! ([`settle`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engine::Engine;
use crate::error::Error;
use crate::service::{Methods, Middleware, Router};
use crate::transport::kit::Throttle;
use crate::transport::{default_member_name, Demand, Readiness, ReadinessSignal, Transport};
use crate::wire::Limits;

mod answer;
mod cancels;
mod config;
mod ending;
mod handle;
mod request;
mod serve;
mod settle;
mod stats;
#[cfg(test)]
mod tests;

pub use config::ServerConfig;
pub use handle::{ServerHandle, ServerStatus, FATAL_ERRORS_TO_STOP};
use serve::serve;
use stats::ServerCounters;
pub use stats::ServerStats;

/// How often a repeated warning is let through.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a running server's tasks share.
struct ServerState {
    transport: Arc<dyn Transport>,
    /// This instance's name: its consumer's on the broker.
    name: Arc<str>,
    /// The service's request queue.
    address: String,
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
    service: String,
    engine: Engine,
    counters: ServerCounters,
    limits: Limits,
    /// The largest reply payload sent: the smaller of the server's and the
    /// transport's limits.
    max_reply_bytes: usize,
    cancel_on_deadline: bool,
    /// Whether replies carry `served-by` with [`name`](Self::name).
    name_in_replies: bool,
    /// The requests running here that a cancel notice may stop.
    cancels: cancels::Cancels,
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
    router: Methods,
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
        let name: Arc<str> = deliveries
            .member()
            .map_or_else(|| default_member_name().into(), Into::into);
        let (readiness, own_readiness) = match deliveries.readiness() {
            Some(signal) => (signal.clone(), false),
            None => (ReadinessSignal::new(Readiness::Ready), true),
        };
        let state = Arc::new(ServerState {
            status: tokio::sync::watch::Sender::new(ServerStatus::Serving),
            readiness,
            own_readiness,
            receive_warnings: Throttle::new(WARN_EVERY),
            dropped_warnings: Throttle::new(WARN_EVERY),
            engine: Engine::new(
                self.router,
                &self.service,
                name.clone(),
                self.middleware,
                self.config.limits.max_batch_len,
                Some(permits.clone()),
            ),
            cancel_on_deadline: self.config.cancel_on_deadline,
            name_in_replies: self.config.name_in_replies,
            cancels: cancels::Cancels::default(),
            max_reply_bytes: self
                .transport
                .max_payload_bytes()
                .map_or(self.config.limits.max_message_bytes, |t| {
                    t.min(self.config.limits.max_message_bytes)
                }),
            transport: self.transport,
            service: self.service,
            name,
            address,
            counters: ServerCounters::default(),
            limits: self.config.limits,
        });
        let stop = CancellationToken::new();
        let span = tracing::info_span!("busrpc.server", service = %state.service);
        let serving = serve(
            deliveries,
            state.clone(),
            self.config,
            permits,
            stop.clone(),
        );
        let task = tokio::spawn(serving.instrument(span));
        tracing::info!(service = %state.service, address = %state.address, server = %state.name, "serving");
        Ok(ServerHandle {
            state,
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
