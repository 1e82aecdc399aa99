//! busrpc-kafka's integration tests, one binary: librdkafka is linked
//! once, not once per file. `quiet_shutdown` stays a binary of its own: it
//! installs a global subscriber and asserts on everything logged.

mod admin;
mod common;
mod conformance_mock;
mod conformance_pipeline;
mod conformance_tansu;
mod failover;
mod kafka;
mod pipeline;
mod processes;
#[cfg(feature = "raw")]
mod raw;
#[cfg(feature = "ssl")]
mod sasl;
