//! A running server instance: its status, readiness, stats and shutdown.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ServerState, ServerStats};
use crate::transport::{Readiness, TransportError};

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
    pub(super) state: Arc<ServerState>,
    pub(super) stop: CancellationToken,
    /// `None` once shut down (or being shut down), aborted or detached.
    pub(super) task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl ServerHandle {
    /// What this instance has done so far.
    pub fn stats(&self) -> ServerStats {
        self.state.stats()
    }

    /// The service served.
    pub fn service(&self) -> &str {
        &self.state.service
    }

    /// This instance's name among the service's servers: its consumer's
    /// name on the broker (the Redis consumer, the Kafka client id), set
    /// by the transport's `name` option, `{host}-{pid}` by default. Its
    /// handlers read it as [`Context::server_name`](crate::Context::server_name).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Where the server is in its life now: a health check's answer.
    pub fn status(&self) -> ServerStatus {
        self.state.status.borrow().clone()
    }

    /// Whether this instance takes requests now: serving, in its group
    /// with its share of the queue, and its broker answering, as far as its
    /// transport can tell (see [`Readiness`]). A readiness probe's answer;
    /// [`status`](Self::status) is the liveness probe's.
    pub fn readiness(&self) -> Readiness {
        match &*self.state.status.borrow() {
            ServerStatus::Serving => self.state.readiness.get(),
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
        let mut status = self.state.status.subscribe();
        loop {
            if !matches!(*status.borrow_and_update(), ServerStatus::Serving) {
                return false;
            }
            if self.state.readiness.get().is_ready() {
                return true;
            }
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                () = self.state.readiness.wait_for(Readiness::is_ready) => {}
            }
        }
    }

    /// Resolves when the server has stopped: `Ok` when it was asked to (or
    /// its handle dropped elsewhere, or it was aborted), the error when it
    /// stopped by itself (see [`ServerStatus::Failed`]). An application
    /// awaits it beside its own work, to exit or alert rather than leave
    /// callers timing out.
    pub async fn stopped(&self) -> Result<(), Arc<TransportError>> {
        let mut status = self.state.status.subscribe();
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
    /// has left its group (see [`Deliveries::close`](crate::Deliveries::close)): the process may exit,
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
            .field("service", &self.state.service)
            .field("stats", &self.stats())
            .finish()
    }
}
