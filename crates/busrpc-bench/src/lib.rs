#![doc = include_str!("../README.md")]

pub mod measure;
pub mod memory;
pub mod ping;

pub use memory::TransportPingPong;
pub use ping::{Baseline, Correlator, PingError};
