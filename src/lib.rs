//! # busrpc: JSON-RPC 2.0 over message brokers
//!
//! A service is a set of methods served under a name; clients call it
//! through a broker. Which broker is a URL, so moving from one to another is
//! a configuration change:
//!
//! | URL | broker | cargo feature |
//! |---|---|---|
//! | `memory://` or `memory://NAME` | in-process, no broker needed | always on |
//!
//! Kafka (`kafka://`) and Redis Streams (`redis://`) backends come as their
//! own crates behind cargo features of the same names.
//!
//! ```
//! use busrpc::{Client, Router, RpcError, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), busrpc::Error> {
//! let transport = busrpc::connect("memory://")?;
//!
//! let router = Router::new()
//!     .method("echo", |(text,): (String,)| async move { Ok::<_, RpcError>(format!("RPC {text}!")) });
//! let server = Server::new(transport.clone(), "test", router).start().await?;
//!
//! let client = Client::connect(transport).await?;
//! let reply: String = client.call("test", "echo", ("hello",)).await?;
//! assert_eq!(reply, "RPC hello!");
//!
//! client.close().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The wire protocol, so that any client (kcat, redis-cli, Python) can speak
//! to a service, is in `docs/PROTOCOL.md`; the architecture in
//! `docs/ARCHITECTURE.md`.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

pub use busrpc_core::{
    codec, header, jsonrpc, memory, transport, Batch, BatchCall, BatchReplies, Client,
    ClientConfig, ClientStats, Codec, Deadline, Error, Handler, Headers, Id, Limits, Message,
    Router, RpcError, Server, ServerConfig, ServerHandle, ServerStats, Transport, TransportError,
};

/// Connects to the broker a URL names, choosing the transport by its scheme.
///
/// - `memory://` (the default in-process broker) or `memory://NAME` (a
///   named one, shared by every `connect` to the same name in this process).
///
/// A scheme whose backend is not compiled in is an error that names the
/// cargo feature to turn on.
pub fn connect(url: &str) -> Result<Arc<dyn Transport>, TransportError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("memory") => Ok(Arc::new(memory::MemoryTransport::from_url(url)?)),
        Some(scheme @ ("kafka" | "redis" | "rediss")) => Err(TransportError::InvalidUrl {
            url: url.to_owned(),
            reason: format!(
                "this build of busrpc has no {scheme} backend (cargo feature `{}`)",
                if scheme == "kafka" { "kafka" } else { "redis" }
            ),
        }),
        _ => Err(TransportError::InvalidUrl {
            url: url.to_owned(),
            reason: "unknown scheme; busrpc speaks memory://".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_choose_transports() {
        assert!(connect("memory://").is_ok());
        assert!(connect("memory://orders").is_ok());
        let err = connect("kafka://127.0.0.1:9092").err().unwrap();
        assert!(
            err.to_string()
                .contains("no kafka backend (cargo feature `kafka`)"),
            "{err}"
        );
        let err = connect("amqp://x").err().unwrap();
        assert!(err.to_string().contains("unknown scheme"), "{err}");
        assert!(connect("no scheme").is_err());
    }
}
