//! busrpc-redis's integration tests, one binary (one link).

mod common;
mod conformance;
#[cfg(feature = "raw")]
mod raw;
mod redis;
