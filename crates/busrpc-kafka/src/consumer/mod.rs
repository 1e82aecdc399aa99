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
