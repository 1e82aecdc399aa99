//! What can go wrong talking to a broker.

use super::kit::redact_url;

/// A boxed error from a broker client library, kept as the source of a
/// [`TransportError`] so that broker types stay out of busrpc-core's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The broker cannot be reached now; the operation may succeed later.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The broker refused the operation (queue full, message too large,
    /// no permission, ...). Retrying the same thing will not help.
    #[error("broker rejected the operation: {0}")]
    Rejected(String),
    /// A request was published to a service's queue that does not exist on
    /// this broker: no server of the service has ever started here (most
    /// often a typo in the service's name). Only servers create their
    /// queues; a client never does.
    #[error("nobody serves {0} on this broker: no server of it has ever started here")]
    NotServed(String),
    /// The transport, consumer or inbox has been closed.
    #[error("transport closed")]
    Closed,
    /// The broker URL cannot be used. Shown with its secrets masked (see
    /// [`redact_url`]).
    #[error("invalid broker URL {:?}: {reason}", redact_url(url))]
    InvalidUrl {
        /// The URL as given, secrets included: show it through
        /// [`redact_url`].
        url: String,
        /// What is wrong with it, and what to do instead.
        reason: String,
    },
    /// A transport's configuration (built in code, not parsed from a URL)
    /// cannot be used: what is wrong with it, never a secret's value.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// Anything else the broker client reported.
    #[error(transparent)]
    Other(BoxError),
}

impl TransportError {
    /// Whether the same operation may succeed if tried again later: only
    /// [`Unavailable`](Self::Unavailable). Every other error is fatal for
    /// it (no permission, a deleted queue, a closed consumer, a bad URL): a
    /// server that keeps getting one stops and reports it (see
    /// [`ServerHandle::stopped`](crate::ServerHandle::stopped)) rather
    /// than retry forever while its callers time out.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Unavailable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_url_error_masks_its_secrets() {
        let e = TransportError::InvalidUrl {
            url: "redis://app:hunter2@h?token=abc&claim_idle=5".into(),
            reason: "unknown option \"claim_idle\"".into(),
        };
        let shown = e.to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(
            shown.contains("redis://app:***@h?token=***&claim_idle=5"),
            "{shown}"
        );
    }
}
