//! The error of every fallible operation in busrpc-core.

use std::time::Duration;

use crate::transport::TransportError;
use crate::wire::codec::CodecError;
use crate::wire::jsonrpc::{EncodeError, RpcError};

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
}

/// A handler that calls another service can pass its failure on with `?`:
/// the other server's error object as it is, anything else (a timeout, a
/// broker failure) as -32603 saying what failed.
impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        match e {
            Error::Rpc(e) => e,
            other => RpcError::internal_error().with_data(&other.to_string()),
        }
    }
}

/// The error object a server answered with (what a generated client's
/// `From<Error>` sees as [`Error::Rpc`]).
impl From<RpcError> for Error {
    fn from(e: RpcError) -> Self {
        Error::Rpc(e)
    }
}
