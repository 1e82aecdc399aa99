//! The kit both dialects' servers read Kafka with: librdkafka's consumer on
//! a thread of its own ([`thread`]: spawned, its panic captured and said),
//! handing requests to the async server through a queue filled no faster
//! than the server takes them ([`handoff`]), and the offsets each partition
//! has read, so that what a fetch skipped is read again and never committed
//! past ([`offsets`]).
//!
//! Why a thread: librdkafka runs rebalance and commit callbacks only from a
//! poll, and they may block (a revocation waits for the requests in hand,
//! then commits synchronously). On the async runtime that would stall a
//! worker, and on a current-thread runtime the whole process, the handlers
//! it waits for included.

pub(crate) mod handoff;
pub(crate) mod offsets;
pub(crate) mod thread;

pub(crate) use handoff::Handoff;
pub(crate) use offsets::ReadOffsets;

use std::time::Duration;

use busrpc_core::transport::TransportError;

/// The error of a server whose group did not take it in within
/// `join_wait_ms`: a broker without a working group coordinator, a group
/// ACL that librdkafka keeps retrying, or a broker too slow for the wait.
pub(crate) fn not_joined(address: &str, within: Duration) -> TransportError {
    TransportError::Unavailable(
        format!(
            "the consumer group of {address} did not take this server in within {within:?} \
             (join_wait_ms): the broker's group coordinator assigned it nothing; check the \
             broker and the group's ACLs, or set join_wait_ms=0 to start at once and join \
             in the background"
        )
        .into(),
    )
}
