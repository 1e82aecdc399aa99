//! A client's private reply address.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::TransportError;
use crate::wire::Message;

/// A client's private reply address and the stream of messages sent to it.
pub struct Inbox {
    address: String,
    messages: BoxStream<'static, Result<Message, TransportError>>,
    on_close: Option<BoxFuture<'static, ()>>,
}

impl Inbox {
    /// The same inbox, address and close kept, each message passed through
    /// `filter` first: it may let it through (changed or not) or leave it
    /// out (`None`). How a decorator checks or transforms replies.
    #[must_use]
    pub fn filter_map<F, Fut>(self, filter: F) -> Self
    where
        F: FnMut(Result<Message, TransportError>) -> Fut + Send + 'static,
        Fut: Future<Output = Option<Result<Message, TransportError>>> + Send + 'static,
    {
        Self {
            messages: Box::pin(self.messages.filter_map(filter)),
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
