//! # busrpc: JSON-RPC 2.0 over message brokers
//!
//! A service is a set of methods served under a name; clients call it
//! through a broker. Which broker is a URL, so moving from one to another is
//! a configuration change:
//!
//! | URL | broker | cargo feature |
//! |---|---|---|
//! | `memory://` or `memory://NAME` | in-process, no broker needed | always on |
//! | `redis://host:port[/db][?options]`, `rediss://…` | Redis Streams ≥ 7.0 | `redis` (`redis-tls` for `rediss://`) |
//! | `kafka://host:port[,host:port…][?options]` | Kafka (Apache Kafka, Redpanda, Tansu, …) | `kafka` |
//! | `kafka-mock://[NAME]` | librdkafka's in-process mock cluster | `kafka-mock` |
//!
//! ```
//! use busrpc::{Client, Router, RpcError, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), busrpc::Error> {
//! let transport = busrpc::connect("memory://").await?;
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
//! `docs/ARCHITECTURE.md`; running it in production (health, traces) in
//! `docs/OPERATIONS.md`.
//!
//! Feature `otel`: the client writes the W3C `traceparent` of its
//! `busrpc.call` span and the server makes its `busrpc.request` span the
//! child of it, through `tracing-opentelemetry`, so that one trace crosses
//! the broker. Install `tracing_opentelemetry::layer()` in your subscriber.
//!
//! Feature `auth`: `busrpc::auth::Authenticated` wraps any transport so that
//! clients and servers on it sign what they send (HMAC-SHA256 with a shared
//! key, several for rotation) and drop, unseen and counted, whatever is
//! unsigned, forged, or a genuine message copied to another address.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

pub use busrpc_core::{
    async_trait, codec, header, jsonrpc, memory, metrics, openrpc, transport, Batch, BatchCall,
    BatchReplies, CallOutcome, Client, ClientConfig, ClientMiddleware, ClientNext, ClientStats,
    Codec, Context, Deadline, Ending, Error, ErrorKind, Handler, Headers, InvalidDeadline, Limits,
    Message, Middleware, Next, OutgoingCall, Reply, Router, RpcError, Server, ServerConfig,
    ServerHandle, ServerStats, ServerStatus, Transport, TransportError, DESCRIBE_METHOD,
    DISCOVER_METHOD,
};

#[doc(hidden)]
pub use busrpc_core::__private;

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub use busrpc_auth as auth;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use busrpc_core::testing;

/// Makes a busrpc service of a trait: `NameServer` serves any
/// implementation of it, `NameClient` calls it with the trait's own
/// signatures, and every server of it answers `rpc.discover` with an
/// OpenRPC document of its methods.
///
/// - `#[busrpc::service(name = "billing")]`: the service's name on the
///   broker (required), shared by server and client so they cannot
///   disagree; `version = "1.2.0"` for the document (default: the crate's
///   version).
/// - Each method is an `async fn(&self, …)`. A call returns
///   `Result<T, E>`: `T` serializes, and `E` converts into
///   [`RpcError`] (what the server sends: code, message, data) and from
///   [`Error`] (what the client returns: the server's error object as
///   [`Error::Rpc`], or a timeout, a broker failure); `RpcError` and
///   `Error` themselves will do. `#[notification]` methods return nothing
///   and are sent without waiting.
/// - `#[method(name = "refund.full")]` names a method on the wire (default:
///   its Rust name); `#[method(params = "whole")]` gives its one param the
///   params array or object as a whole; `#[method(timeout = "2s")]` (`ms`,
///   `s` or `m`) is how long the typed client waits for that method's
///   reply, unless the caller set a timeout with `with_timeout`.
/// - A [`Context`] as the first param (after `&self`) gives the method its
///   request's headers, deadline, trace context and attempt; the client's
///   method leaves it out.
/// - Params are taken by position or by name (the Rust param names); the
///   client sends them by position. See docs/PROTOCOL.md.
///
/// ```
/// use busrpc::{Client, Context, Error, RpcError};
///
/// #[derive(Debug)]
/// enum BillingError {
///     InsufficientFunds { balance: u64 },
///     Other(Error),
/// }
///
/// impl From<BillingError> for RpcError {
///     fn from(e: BillingError) -> Self {
///         match e {
///             BillingError::InsufficientFunds { balance } => {
///                 RpcError::new(1001, "insufficient funds").with_data(&balance)
///             }
///             BillingError::Other(e) => e.into(),
///         }
///     }
/// }
///
/// impl From<Error> for BillingError {
///     fn from(e: Error) -> Self {
///         match &e {
///             Error::Rpc(rpc) if rpc.code() == 1001 => BillingError::InsufficientFunds {
///                 balance: rpc.data_as().and_then(Result::ok).unwrap_or(0),
///             },
///             _ => BillingError::Other(e),
///         }
///     }
/// }
///
/// /// Money in, money out.
/// #[busrpc::service(name = "billing")]
/// pub trait Billing {
///     /// Charges an account; returns the new balance.
///     async fn charge(&self, account: String, cents: u64) -> Result<u64, BillingError>;
///     /// Who is asking.
///     async fn whoami(&self, ctx: Context) -> Result<String, RpcError>;
///     #[notification]
///     async fn audit(&self, line: String);
/// }
///
/// struct Bank;
///
/// impl Billing for Bank {
///     async fn charge(&self, _account: String, cents: u64) -> Result<u64, BillingError> {
///         let balance: u64 = 100;
///         balance.checked_sub(cents).ok_or(BillingError::InsufficientFunds { balance })
///     }
///     async fn whoami(&self, ctx: Context) -> Result<String, RpcError> {
///         Ok(ctx.headers().get("x-caller").unwrap_or("anonymous").to_owned())
///     }
///     async fn audit(&self, _line: String) {}
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = busrpc::connect("memory://").await?;
/// let server = BillingServer::new(Bank).into_server(transport.clone()).start().await?;
///
/// let billing = BillingClient::new(Client::connect(transport).await?);
/// assert_eq!(billing.charge("alice".into(), 30).await.unwrap(), 70);
/// assert!(matches!(
///     billing.charge("alice".into(), 300).await,
///     Err(BillingError::InsufficientFunds { balance: 100 })
/// ));
/// assert_eq!(billing.with_header("x-caller", "docs").whoami().await?, "docs");
/// billing.audit("charged alice".into()).await?;
/// let document = billing.discover().await?;
/// assert_eq!(document["methods"][1]["name"], "charge");
///
/// billing.client().close().await;
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use busrpc_macros::service;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use busrpc_redis as redis;

#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use busrpc_kafka as kafka;

/// Connects to the broker a URL names, choosing the transport by its scheme.
///
/// - `memory://` (the default in-process broker) or `memory://NAME` (a
///   named one, shared by every `connect` to the same name in this process);
/// - `redis://…` and `rediss://…` with the `redis` feature (options in
///   [`redis::RedisConfig`]);
/// - `kafka://…` with the `kafka` feature, `kafka-mock://…` with
///   `kafka-mock` (options in [`kafka::KafkaConfig`]).
///
/// A scheme whose backend is not compiled in is an error that names the
/// cargo feature to turn on.
pub async fn connect(url: &str) -> Result<Arc<dyn Transport>, TransportError> {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("memory") => Ok(Arc::new(memory::MemoryTransport::from_url(url)?)),
        #[cfg(feature = "redis")]
        Some("redis" | "rediss") => Ok(Arc::new(busrpc_redis::RedisTransport::connect(url).await?)),
        #[cfg(feature = "kafka")]
        Some("kafka") => busrpc_kafka::connect(url).await,
        #[cfg(feature = "kafka-mock")]
        Some("kafka-mock") => busrpc_kafka::connect(url).await,
        // Backends this build lacks (with every feature on, none).
        #[allow(unreachable_patterns)]
        Some(scheme @ ("kafka" | "kafka-mock" | "redis" | "rediss")) => {
            Err(TransportError::InvalidUrl {
                url: url.to_owned(),
                reason: format!(
                    "this build of busrpc has no {scheme} backend (cargo feature `{}`)",
                    match scheme {
                        "kafka" => "kafka",
                        "kafka-mock" => "kafka-mock",
                        "rediss" => "redis-tls",
                        _ => "redis",
                    }
                ),
            })
        }
        _ => Err(TransportError::InvalidUrl {
            url: url.to_owned(),
            reason: format!("unknown scheme; this build speaks {}", SCHEMES.join(", ")),
        }),
    }
}

/// The URL schemes this build can connect to.
pub const SCHEMES: &[&str] = &[
    "memory://",
    #[cfg(feature = "redis")]
    "redis://",
    #[cfg(feature = "redis")]
    "rediss://",
    #[cfg(feature = "kafka")]
    "kafka://",
    #[cfg(feature = "kafka-mock")]
    "kafka-mock://",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schemes_choose_transports() {
        assert!(connect("memory://").await.is_ok());
        assert!(connect("memory://orders").await.is_ok());
        let err = connect("amqp://x").await.err().unwrap();
        assert!(
            err.to_string()
                .contains("unknown scheme; this build speaks memory://"),
            "{err}"
        );
        assert!(connect("no scheme").await.is_err());
    }

    #[cfg(not(feature = "redis"))]
    #[tokio::test]
    async fn redis_urls_name_the_missing_feature() {
        let err = connect("redis://127.0.0.1:6379").await.err().unwrap();
        assert!(err.to_string().contains("cargo feature `redis`"), "{err}");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn redis_urls_reach_the_redis_backend() {
        // A URL error from the backend proves the dispatch without a server.
        let err = connect("redis://127.0.0.1:6379?no_such_option=1")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown option"), "{err}");
    }

    #[cfg(not(feature = "kafka"))]
    #[tokio::test]
    async fn kafka_urls_name_the_missing_feature() {
        let err = connect("kafka://127.0.0.1:9092").await.err().unwrap();
        assert!(err.to_string().contains("cargo feature `kafka`"), "{err}");
    }

    #[cfg(not(feature = "kafka-mock"))]
    #[tokio::test]
    async fn mock_urls_name_the_missing_feature() {
        let err = connect("kafka-mock://").await.err().unwrap();
        assert!(
            err.to_string().contains("cargo feature `kafka-mock`"),
            "{err}"
        );
    }

    #[cfg(feature = "kafka-mock")]
    #[tokio::test]
    async fn mock_urls_reach_the_mock_cluster() {
        let mock = connect("kafka-mock://facade-test").await;
        assert!(
            mock.is_ok(),
            "the embedded mock cluster needs no broker: {:?}",
            mock.err()
        );
    }

    #[cfg(feature = "kafka")]
    #[tokio::test]
    async fn kafka_urls_reach_the_kafka_backend() {
        let err = connect("kafka://127.0.0.1:9092?no_such_option=1")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("unknown option"), "{err}");
    }
}

/// The README's code, compiled and run as a doc test so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
