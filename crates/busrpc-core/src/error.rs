//! The error of every fallible operation in busrpc-core.

use std::time::Duration;

use crate::transport::{ErrorKind, TransportError};
use crate::wire::codec::CodecError;
use crate::wire::jsonrpc::{
    EncodeError, RpcError, BROKER_ERROR_CODE, BROKER_ERROR_MSG, NO_SERVERS_CODE, NO_SERVERS_MSG,
    NO_SERVICE_CODE, NO_SERVICE_MSG, TIMEOUT_CODE, TIMEOUT_MSG,
};

/// What can go wrong calling or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker failed; see [`TransportError`] for whether to retry.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered with a JSON-RPC error object.
    #[error(transparent)]
    Rpc(RpcError),
    /// No reply came within the call's timeout. The server may still run the
    /// call; if its reply comes later it is dropped and counted.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No server of `service` has ever started on this broker, so it has no
    /// queue to wait in (a typo in its name, most often). Once one has, a
    /// call waits in the queue for a server until its timeout.
    #[error("no service {service:?} on this broker: no server of it has ever started here")]
    NoService {
        /// The service called.
        service: String,
    },
    /// `service` has a queue but the broker counts no live server of it
    /// (all stopped or dead), so the call was not sent: it fails now
    /// instead of waiting out its timeout. Retry when a server is back;
    /// a client that would rather queue calls for servers that start
    /// later sets
    /// [`ClientConfig::wait_for_servers`](crate::ClientConfig::wait_for_servers).
    #[error("nobody is serving {service:?}: its queue has no live server")]
    NoServers {
        /// The service called.
        service: String,
    },
    /// The client was closed, or its inbox went away.
    #[error("the client is closed")]
    Closed,
    /// The request could not be encoded (params of the wrong shape, an empty batch, ...).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The result did not deserialize into the type asked for.
    #[error("the result does not have the expected type: {0}")]
    Decode(#[source] serde_json::Error),
    /// The encoded request is larger than the client's limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A payload could not be transcoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A client middleware ended a batch's chain with an outcome of its own
    /// instead of sending it: a batch's replies come from its server only.
    #[error("a client middleware answered the batch without sending it")]
    BatchNotSent,
    /// A [`BatchCall`](crate::BatchCall) was looked up in the replies of
    /// another batch than its own.
    #[error("the call with id {id} is not in this batch")]
    NotInBatch {
        /// The id of the call asked for.
        id: u64,
    },
}

impl Error {
    /// The JSON-RPC error object, if the server answered with one.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            Error::Rpc(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a [`Timeout`](Error::Timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// What kind of failure this is: the server's answer
    /// ([`ErrorKind::Server`]), a timeout, or the broker's failure with
    /// the kind a caller acts on (see [`TransportError::kind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Transport(e) => e.kind(),
            Error::Rpc(_) => ErrorKind::Server,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::NoService { .. } => ErrorKind::NotFound,
            Error::NoServers { .. } => ErrorKind::Unavailable,
            Error::Closed => ErrorKind::Closed,
            Error::MessageTooLarge { .. } => ErrorKind::TooLarge,
            Error::Encode(_)
            | Error::Decode(_)
            | Error::Codec(_)
            | Error::NotInBatch { .. }
            | Error::BatchNotSent => ErrorKind::Invalid,
        }
    }
}

/// A handler that calls another service can pass its failure on with `?`,
/// and a typed client whose error type is `RpcError` gets every failure
/// as one: the other server's error object as it is; a timeout as -32002
/// ([`TIMEOUT_CODE`]), a broker failure as -32003 ([`BROKER_ERROR_CODE`]), a
/// service nobody serves as -32004 ([`NO_SERVICE_CODE`]), a failure here
/// (encoding, decoding) as -32603; each with the error's text as `data`.
/// So a caller tells the server's own failure apart from the way there.
impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        let (code, message) = match e {
            Error::Rpc(e) => return e,
            Error::Timeout(_) => (TIMEOUT_CODE, TIMEOUT_MSG),
            Error::NoService { .. } | Error::Transport(TransportError::NotServed(_)) => {
                (NO_SERVICE_CODE, NO_SERVICE_MSG)
            }
            Error::NoServers { .. } => (NO_SERVERS_CODE, NO_SERVERS_MSG),
            Error::Transport(_) | Error::Closed | Error::MessageTooLarge { .. } => {
                (BROKER_ERROR_CODE, BROKER_ERROR_MSG)
            }
            Error::Encode(_)
            | Error::Decode(_)
            | Error::Codec(_)
            | Error::NotInBatch { .. }
            | Error::BatchNotSent => return RpcError::internal_error().with_data(&e.to_string()),
        };
        RpcError::new(code, message).with_data(&e.to_string())
    }
}

/// The error object a server answered with (what a generated client's
/// `From<Error>` sees as [`Error::Rpc`]).
impl From<RpcError> for Error {
    fn from(e: RpcError) -> Self {
        Error::Rpc(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reserved codes of docs/PROTOCOL.md, one per way a call can fail
    /// on its way, apart from the server's own answer.
    #[test]
    fn a_failure_on_the_way_has_its_own_code_apart_from_the_servers() {
        let cases: [(Error, i32); 7] = [
            (Error::Rpc(RpcError::new(7, "mine")), 7),
            (Error::Timeout(Duration::from_millis(300)), -32002),
            (
                Error::Transport(TransportError::Unavailable("down".into())),
                -32003,
            ),
            (Error::Closed, -32003),
            (
                Error::NoService {
                    service: "s".into(),
                },
                -32004,
            ),
            (
                Error::NoServers {
                    service: "s".into(),
                },
                -32005,
            ),
            (Error::NotInBatch { id: 1 }, -32603),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let rpc = RpcError::from(e);
            assert_eq!(rpc.code(), code, "{shown}");
            if code != 7 {
                assert_eq!(rpc.data_as::<String>().unwrap().unwrap(), shown);
            }
        }
    }

    #[test]
    fn the_kind_of_a_call_error() {
        assert_eq!(Error::Timeout(Duration::ZERO).kind(), ErrorKind::Timeout);
        assert_eq!(Error::Rpc(RpcError::new(1, "x")).kind(), ErrorKind::Server);
        assert_eq!(
            Error::Transport(TransportError::Overloaded("q".into())).kind(),
            ErrorKind::Overloaded
        );
        assert_eq!(
            Error::NoService {
                service: "s".into()
            }
            .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            Error::NoServers {
                service: "s".into()
            }
            .kind(),
            ErrorKind::Unavailable
        );
    }
}
