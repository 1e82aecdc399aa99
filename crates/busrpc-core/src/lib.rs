#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
pub mod jsonrpc;
pub mod memory;
pub mod transport;

mod client;
mod engine;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod message;
mod router;
mod server;

pub use client::{Batch, BatchCall, BatchReplies, Client, ClientConfig, ClientStats};
pub use codec::Codec;
pub use error::Error;
pub use jsonrpc::RpcError;
pub use message::{header, Deadline, Headers, InvalidDeadline, Limits, Message};
pub use router::{Handler, Router, DESCRIBE_METHOD};
pub use server::{
    Server, ServerConfig, ServerHandle, ServerStats, ServerStatus, FATAL_ERRORS_TO_STOP,
};
pub use transport::{
    Acknowledge, BoxError, Deliveries, Delivery, Demand, Inbox, OnSettled, Transport,
    TransportError,
};
