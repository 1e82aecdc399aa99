//! Message authentication: requests and replies signed with a shared key
//! (HMAC-SHA256), and anything unsigned or wrongly signed dropped.
//!
//! Without it, anyone who can write to the broker can forge a reply to a
//! waiting call (an inbox's name is no secret: `SCAN`, a topic listing) or a
//! request to a service. [`Authenticated`] wraps any
//! [`Transport`](busrpc_core::Transport): what it
//! publishes carries a `busrpc-sig` header; what it hands out (deliveries to
//! a server, replies to a client) is checked first, and what fails is
//! settled, counted and never seen by a handler or a caller.
//!
//! ```
//! # use std::sync::Arc;
//! # use busrpc_auth::{Authenticated, Keys};
//! # use busrpc_core::{memory::MemoryTransport, Client, Router, RpcError, Server};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = Keys::new("2026-12", b"0123456789abcdef0123456789abcdef")?;
//! let broker = Arc::new(MemoryTransport::new());
//! let transport = Arc::new(Authenticated::new(broker, keys));
//! let router = Router::new().method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) });
//! let _server = Server::new(transport.clone(), "calc", router).start().await?;
//! let client = Client::connect(transport).await?;
//! assert_eq!(client.call::<i64>("calc", "add", (2, 3)).await?, 5);
//! # Ok(()) }
//! ```
//!
//! What is signed (see docs/PROTOCOL.md, which shows a foreign client doing
//! it): the key's id, the address the message is published to, every header
//! but those named `busrpc-*` (the transports' own, and the signature), and
//! the payload. The address binds a request to its service and a reply to
//! the inbox of the client that called: a reply copied into another
//! client's inbox, or a request into another service's queue, fails. Within
//! one inbox a copied reply carries the id of the call it answered, which
//! the client has taken already: it is dropped as a duplicate.
//!
//! A copied *request* runs again if it arrives before its deadline, as a
//! redelivery does (handlers must bear at-least-once delivery anyway); past
//! its deadline, which is signed, it is skipped. A request without a
//! deadline (a notification) must carry a signed `signed-at` within the
//! [replay window](Keys::replay_window) (5 minutes) of the server's clock,
//! or it is rejected: no copy runs for ever. Nothing is encrypted:
//! anyone who can read the broker reads the payloads.

//!
//! The facade re-exports this crate as `busrpc::auth` (feature `auth`).
//! It is written on busrpc-core's public seam only
//! ([`Deliveries::filter_map`](busrpc_core::Deliveries::filter_map),
//! [`Inbox::filter_map`](busrpc_core::Inbox::filter_map),
//! [`Delivery::map_acker`](busrpc_core::Delivery::map_acker)): the pattern
//! for any other decorator (compression, encryption, tenancy).

mod keys;
mod signature;
mod transport;

pub use keys::{KeyError, Keys, DEFAULT_REPLAY_WINDOW, MIN_SECRET_BYTES};
pub use signature::{Rejected, SIGNED_AT};
pub use transport::{AuthStats, Authenticated};
