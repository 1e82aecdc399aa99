#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

// Lowest first; an import only points to a lower one
// (scripts/check-layers.sh).
mod admin; // the operator's side: services, queue state, dead letters
mod broadcast; // cancel notices to every server of a service
mod config; // the URL and the builder
mod connection; // one Redis: commands, blocking reads, what errors mean
mod consumer; // a server's member of its service's group
mod entries; // stream entries: reading them, the XADDs that write them
mod inbox; // a client's reply stream
mod publish; // adding a request within its stream's bound
mod settle; // acknowledgements, replies, releases, dead letters, trims
mod transport; // RedisTransport

/// Entry points for the fuzz targets in `fuzz/`, compiled only under
/// `--cfg fuzzing` (which `cargo fuzz` sets).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// The messages of the entries in an `XREADGROUP` reply given as RESP
    /// bytes (`None` if they are not RESP), as a server reads them.
    pub fn read_entries(resp: &[u8]) -> Option<Vec<(String, busrpc_core::Message)>> {
        let reply = redis::parse_redis_value(resp).ok()?;
        let entries = crate::entries::entries_of_first_stream(reply);
        Some(entries.into_iter().map(|e| (e.id, e.message)).collect())
    }
}
#[cfg(feature = "raw")]
#[cfg_attr(docsrs, doc(cfg(feature = "raw")))]
pub mod raw;

pub use config::{RedisConfig, DEFAULT_CLAIM_IDLE, URL_OPTIONS};
pub use transport::RedisTransport;
