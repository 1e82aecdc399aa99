//! A client's private reply address.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream};

use super::TransportError;
use crate::wire::Message;

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
