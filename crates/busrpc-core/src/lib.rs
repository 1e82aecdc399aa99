#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, lowest first; an import only points to a lower layer
// (scripts/check-layers.sh fails on one that points up, or on a cycle).
// docs/ARCHITECTURE.md draws the map.
mod client; // calling
mod engine; // payload in, response out
mod error; // what a caller or a server is told went wrong
pub mod memory; // the in-process broker, a backend like the others
mod server; // serving: the loop, one request's path, the outcome policy
mod service; // handlers, Router, Context, middleware, OpenRPC
mod telemetry; // spans, metrics, trace context, log hygiene
pub mod transport; // the seam: Transport, deliveries, settling, inboxes
mod wire; // messages, deadlines, limits, codecs, JSON-RPC: no I/O

#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod macro_support;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// The attribute an `impl` of [`Middleware`], [`ClientMiddleware`],
/// [`Transport`] or [`Acknowledge`] carries (their methods are `async fn`s
/// behind `dyn`), re-exported so that writing one needs no crate beside
/// busrpc. Without it the compiler says E0195, "lifetime parameters or
/// bounds on method `call` do not match the trait declaration".
pub use async_trait::async_trait;
pub use client::{
    Batch, BatchCall, BatchReplies, Client, ClientConfig, ClientMiddleware, ClientNext,
    ClientStats, OutgoingCall, Reply, CHECK_SERVERS_EVERY,
};
pub use error::Error;
pub use server::{
    Server, ServerConfig, ServerHandle, ServerStats, ServerStatus, FATAL_ERRORS_TO_STOP,
};
pub use service::{
    openrpc, CallOutcome, Context, Ending, Handler, Middleware, Next, Router, WithContext,
    WithStateAndContext, DESCRIBE_METHOD, DISCOVER_METHOD,
};
pub use telemetry::metrics;
pub use transport::{
    Acknowledge, BoxError, Deliveries, Delivery, Demand, ErrorKind, Exhausted, Inbox, Member,
    OnSettled, Readiness, ReadinessSignal, Settle, SettleError, Transport, TransportError,
};
pub use wire::codec::Codec;
pub use wire::jsonrpc::RpcError;
pub use wire::{codec, header, jsonrpc, Deadline, Headers, InvalidDeadline, Limits, Message};

/// What the code `#[busrpc::service]` generates needs; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::macro_support::*;
}

/// `(&&ErrorsOf::<E>::new()).errors()`: the errors `E` declares, if it
/// implements [`openrpc::DeclaredErrors`] (see [`openrpc::errors_of`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __errors {
    ($ty:ty) => {{
        #[allow(unused_imports)]
        use $crate::openrpc::errors_of::{Declared as _, Undeclared as _};
        #[allow(clippy::needless_borrow)]
        (&&$crate::openrpc::errors_of::ErrorsOf::<$ty>::new()).errors()
    }};
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
