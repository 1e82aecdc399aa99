//! Layer 4, the client: calling services through a [`Transport`]. Calls
//! and notifications ([`call`]), published with retries within their
//! deadline ([`send`]), matched to their replies by id ([`pending`]),
//! through middleware ([`middleware`]), or as batches ([`batch`]). It
//! never imports the engine or the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::telemetry::metrics;
use crate::transport::{Inbox, Transport};
use crate::wire::{header, Headers};

mod batch;
mod budget;
mod call;
mod cancel;
mod config;
mod middleware;
pub(crate) mod pending;
mod replay;
mod send;
mod servers;
#[cfg(test)]
mod tests;

pub use batch::{Batch, BatchCall, BatchReplies};
pub use call::Reply;
pub use config::{ClientConfig, ClientStats, CHECK_SERVERS_EVERY};
pub use middleware::{ClientMiddleware, ClientNext, OutgoingCall};
use pending::{read_replies, Pending};

/// What the handles of one client share: its inbox, its calls in flight.
struct ClientCore {
    transport: Arc<dyn Transport>,
    inbox_address: Arc<str>,
    pending: Arc<Pending>,
    meters: metrics::ClientMeters,
    in_flight: Semaphore,
    /// Whether the services called have live servers.
    servers: servers::ServerChecks,
    config: ClientConfig,
    stop: CancellationToken,
    reader: Mutex<Option<JoinHandle<Option<Inbox>>>>,
}

impl Drop for ClientCore {
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
    core: Arc<ClientCore>,
    timeout: Duration,
    /// Sent with every call, notification and batch of this handle.
    headers: Arc<Headers>,
    /// Run around every call and notification of this handle, the first
    /// outermost.
    middleware: Arc<[Arc<dyn ClientMiddleware>]>,
    /// Whether calls made while serving a request ignore its deadline.
    detached: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("inbox", &self.core.inbox_address)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers)
            .field("middleware", &self.middleware.len())
            .field("detached", &self.detached)
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
            core: Arc::new(ClientCore {
                transport,
                inbox_address,
                pending,
                meters: metrics::ClientMeters::default(),
                in_flight: Semaphore::new(config.max_in_flight),
                servers: servers::ServerChecks::default(),
                config,
                stop,
                reader: Mutex::new(Some(reader)),
            }),
            timeout,
            headers: Arc::new(Headers::new()),
            middleware: Arc::new([]),
            detached: false,
        })
    }

    /// A handle to the same client whose calls wait `timeout` instead (or
    /// less: see [`detached`](Self::detached)).
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// A handle to the same client whose calls and notifications made
    /// while serving a request are not bounded by that request's deadline:
    /// for work that must outlive its caller. Every other handle's are:
    /// inside a handler (its middleware, anything it awaits, a task run
    /// with [`Context::scope`](crate::Context::scope)) a call waits at most
    /// until the served request's deadline, and a notification carries it.
    /// The trace context follows either way.
    #[must_use]
    pub fn detached(&self) -> Self {
        Self {
            detached: true,
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
    /// through `middleware` (after any this handle has already); a batch
    /// passes through it once, as one [`OutgoingCall`] (see
    /// [`OutgoingCall::batch`]).
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
        &self.core.inbox_address
    }

    /// What this client has seen so far.
    pub fn stats(&self) -> ClientStats {
        let p = &self.core.pending;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            calls: get(&p.calls),
            replies: get(&p.replies),
            timeouts: get(&p.timeouts),
            replies_dropped: get(&p.dropped),
        }
    }

    /// Closes the client: calls still waiting fail with [`Error::Closed`],
    /// and the inbox is removed from the broker.
    pub async fn close(&self) {
        // Calls waiting for a reply or for a slot fail now, and later ones
        // at once, not after the inbox is gone.
        self.core.pending.close();
        self.core.in_flight.close();
        self.core.stop.cancel();
        let reader = self
            .core
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(reader) = reader {
            if let Ok(Some(inbox)) = reader.await {
                inbox.close().await;
            }
        }
        self.core.pending.close();
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.core.pending.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}
