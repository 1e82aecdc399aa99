//! What can go wrong talking to a broker.

use super::kit::redact_url;

/// A boxed error from a broker client library, kept as the source of a
/// [`TransportError`] so that broker types stay out of busrpc-core's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to a broker.
///
/// Match on [`kind`](Self::kind) to decide what to do; the variants carry
/// what is shown. `Debug` and `Display` never show a secret: a URL is
/// shown through [`redact_url`], and no variant holds a password.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The broker cannot be reached now; the operation may succeed later.
    #[error("broker unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The broker refused the message because the queue it was sent to is
    /// full (its bound, `queue_max_len` on Redis, was reached). Not retried
    /// by busrpc: back off, shed load, or raise the bound.
    #[error("the queue is full: {0}")]
    Overloaded(String),
    /// The broker refused the operation to this user (a Redis ACL, a Kafka
    /// topic or group ACL, a failed SASL login): a configuration to fix,
    /// never retried.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The message is larger than the broker or the transport accepts
    /// (Redis `max_message_bytes`, Kafka `message.max.bytes`).
    #[error("message too large: {0}")]
    TooLarge(String),
    /// A topic, stream or inbox that the operation needs does not exist
    /// (deleted under a live consumer, or never made).
    #[error("not found: {0}")]
    NotFound(String),
    /// The broker refused the operation for another reason. Retrying the
    /// same thing will not help.
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
    /// [`redact_url`]), by `Debug` too.
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

/// What kind of failure an error is, for a caller deciding what to do:
/// retry, back off, fix a setting, or give up. [`TransportError::kind`]
/// and [`Error::kind`](crate::Error::kind) return it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker cannot be reached now: retry later (busrpc's client
    /// already retried a publish until its call's deadline).
    Unavailable,
    /// A queue is full: back off or shed load.
    Overloaded,
    /// Not allowed (ACL, SASL, a signature the server refused): fix the
    /// credentials or the broker's ACLs.
    PermissionDenied,
    /// A topic, stream or inbox is missing, or nobody has ever served the
    /// service called (see [`TransportError::NotServed`]).
    NotFound,
    /// A message or reply over a size limit.
    TooLarge,
    /// A URL or configuration that cannot be used.
    InvalidConfig,
    /// The transport, client or inbox was closed.
    Closed,
    /// No reply within the call's timeout or deadline.
    Timeout,
    /// The server answered with a JSON-RPC error object
    /// ([`Error::Rpc`](crate::Error::Rpc)): the call reached a handler, or
    /// the server refused it.
    Server,
    /// The request could not be encoded, or the result not decoded, here
    /// in the caller: a bug or a type mismatch, not the broker's.
    Invalid,
    /// Anything else.
    Other,
}

impl TransportError {
    /// Whether the same operation may succeed if tried again later: only
    /// [`Unavailable`](Self::Unavailable). Every other error is fatal for
    /// it (no permission, a deleted queue, a closed consumer, a bad URL): a
    /// server that keeps getting one stops and reports it (see
    /// [`ServerHandle::stopped`](crate::ServerHandle::stopped)) rather
    /// than retry forever while its callers time out. A full queue
    /// ([`Overloaded`](Self::Overloaded)) is not retried either: whether to
    /// back off and try again is the caller's decision.
    pub fn is_transient(&self) -> bool {
        matches!(self, TransportError::Unavailable(_))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransportError::Unavailable(_) => ErrorKind::Unavailable,
            TransportError::Overloaded(_) => ErrorKind::Overloaded,
            TransportError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            TransportError::TooLarge(_) => ErrorKind::TooLarge,
            TransportError::NotFound(_) | TransportError::NotServed(_) => ErrorKind::NotFound,
            TransportError::Closed => ErrorKind::Closed,
            TransportError::InvalidUrl { .. } | TransportError::InvalidConfig(_) => {
                ErrorKind::InvalidConfig
            }
            TransportError::Rejected(_) | TransportError::Other(_) => ErrorKind::Other,
        }
    }
}

/// By hand, not derived: a derived `Debug` would print an invalid URL as
/// given, password and all, through `unwrap()`, `{:?}` or a `main` that
/// returns `Result<(), Box<dyn Error>>`.
impl std::fmt::Debug for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, text): (&str, &dyn std::fmt::Debug) = match self {
            TransportError::InvalidUrl { url, reason } => {
                return f
                    .debug_struct("InvalidUrl")
                    .field("url", &redact_url(url))
                    .field("reason", reason)
                    .finish();
            }
            TransportError::Closed => return f.write_str("Closed"),
            TransportError::Unavailable(e) => ("Unavailable", e),
            TransportError::Overloaded(why) => ("Overloaded", why),
            TransportError::PermissionDenied(why) => ("PermissionDenied", why),
            TransportError::TooLarge(why) => ("TooLarge", why),
            TransportError::NotFound(why) => ("NotFound", why),
            TransportError::Rejected(why) => ("Rejected", why),
            TransportError::NotServed(service) => ("NotServed", service),
            TransportError::InvalidConfig(why) => ("InvalidConfig", why),
            TransportError::Other(e) => ("Other", e),
        };
        f.debug_tuple(name).field(text).finish()
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
        for shown in [format!("{e:?}"), format!("{e:#?}")] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("abc"),
                "{shown}"
            );
            assert!(shown.contains("redis://app:***@h"), "{shown}");
        }
    }

    #[test]
    fn each_variant_has_the_kind_a_caller_acts_on() {
        let kinds = [
            (
                TransportError::Unavailable("down".into()),
                ErrorKind::Unavailable,
            ),
            (
                TransportError::Overloaded("q".into()),
                ErrorKind::Overloaded,
            ),
            (
                TransportError::PermissionDenied("acl".into()),
                ErrorKind::PermissionDenied,
            ),
            (TransportError::TooLarge("big".into()), ErrorKind::TooLarge),
            (TransportError::NotFound("t".into()), ErrorKind::NotFound),
            (TransportError::NotServed("s".into()), ErrorKind::NotFound),
            (TransportError::Closed, ErrorKind::Closed),
            (
                TransportError::InvalidConfig("x".into()),
                ErrorKind::InvalidConfig,
            ),
            (TransportError::Rejected("x".into()), ErrorKind::Other),
        ];
        for (e, kind) in kinds {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.is_transient(), kind == ErrorKind::Unavailable, "{e}");
        }
    }
}
