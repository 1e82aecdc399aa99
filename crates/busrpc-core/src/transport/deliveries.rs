//! A consumer's deliveries, and how many more its owner can take.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::{Delivery, ReadinessSignal, TransportError};

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
    member: Option<Arc<str>>,
}

impl Deliveries {
    /// The same deliveries, readiness and close kept, each passed through
    /// `filter` first: it may let a delivery through (changed or not, e.g.
    /// with [`Delivery::map_acker`]), or settle it itself and leave it out
    /// (`None`). How a decorator (signing, decompressing, tenancy) is
    /// written on the seam's public parts.
    #[must_use]
    pub fn filter_map<F, Fut>(self, filter: F) -> Self
    where
        F: FnMut(Result<Delivery, TransportError>) -> Fut + Send + 'static,
        Fut: Future<Output = Option<Result<Delivery, TransportError>>> + Send + 'static,
    {
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
            member: None,
        }
    }

    /// The consumer's name in its group as the broker shows it (the Redis
    /// consumer, the Kafka client id): what its server calls itself
    /// ([`ServerHandle::name`](crate::ServerHandle::name),
    /// [`Context::server_name`](crate::Context::server_name)). Without it
    /// the server takes [`default_member_name`](crate::transport::default_member_name).
    #[must_use]
    pub fn with_member(mut self, name: impl Into<Arc<str>>) -> Self {
        self.member = Some(name.into());
        self
    }

    /// The name given by [`with_member`](Self::with_member).
    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }

    /// Where the transport reports whether its consumer can take requests
    /// (see [`Readiness`](crate::Readiness)). Without it, a server counts itself ready while
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
