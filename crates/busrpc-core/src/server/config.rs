//! How a server runs.

use std::time::Duration;

use crate::wire::Limits;

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
    /// [`ServerStats::cancelled`](crate::ServerStats::cancelled). Stale work then costs nothing past the
    /// deadline, which is when an overloaded server most needs its slots.
    /// Set `false` for handlers that must not be interrupted between two
    /// awaits; they then run to the end and their late reply is dropped by
    /// the caller.
    pub cancel_on_deadline: bool,
    /// Whether each reply carries the [`served-by`](crate::header::SERVED_BY)
    /// header with this server's name ([`ServerHandle::name`](crate::ServerHandle::name)),
    /// which a caller reads with [`Client::call_reply`](crate::Client::call_reply)
    /// (default `false`: it adds the name's bytes to every reply).
    pub name_in_replies: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            concurrency: 128,
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(30),
            run_inline: true,
            cancel_on_deadline: true,
            name_in_replies: false,
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

    /// Sets [`name_in_replies`](Self::name_in_replies).
    #[must_use]
    pub fn name_in_replies(mut self, say: bool) -> Self {
        self.name_in_replies = say;
        self
    }
}
