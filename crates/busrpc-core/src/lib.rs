#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "auth")]
pub mod auth;
pub mod codec;
pub mod jsonrpc;
pub mod memory;
pub mod metrics;
pub mod openrpc;
#[cfg(feature = "otel")]
mod otel;
pub mod transport;

mod client;
mod context;
mod engine;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod message;
mod router;
mod server;
mod service_support;

pub use client::{
    Batch, BatchCall, BatchReplies, Client, ClientConfig, ClientMiddleware, ClientNext,
    ClientStats, OutgoingCall,
};
pub use codec::Codec;
pub use context::{CallOutcome, Context, Middleware, Next};
pub use error::Error;
pub use jsonrpc::RpcError;
pub use message::{header, Deadline, Headers, InvalidDeadline, Limits, Message};
pub use router::{
    Handler, Router, WithContext, WithStateAndContext, DESCRIBE_METHOD, DISCOVER_METHOD,
};
pub use server::{
    Server, ServerConfig, ServerHandle, ServerStats, ServerStatus, FATAL_ERRORS_TO_STOP,
};
pub use transport::{
    Acknowledge, BoxError, Deliveries, Delivery, Demand, Inbox, OnSettled, Readiness,
    ReadinessSignal, Signer, SignerSlot, Transport, TransportError,
};

/// What the code `#[busrpc::service]` generates needs; not an API.
#[doc(hidden)]
pub mod __private {
    pub use serde;
    pub use serde_json;

    pub use crate::__schema as schema;
    pub use crate::service_support::{
        assert_error, assert_param, assert_result, Params, ServiceError,
    };
}

/// `(&&SchemaOf::<T>::new()).schema(label)`: `T`'s JSON Schema if it has
/// one (see [`openrpc::schema_of`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __schema {
    ($ty:ty, $label:expr) => {{
        #[allow(unused_imports)]
        use $crate::openrpc::schema_of::{NamedOnly as _, ViaJsonSchema as _};
        #[allow(clippy::needless_borrow)]
        (&&$crate::openrpc::schema_of::SchemaOf::<$ty>::new()).schema($label)
    }};
}
