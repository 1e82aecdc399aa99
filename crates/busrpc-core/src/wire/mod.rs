//! Layer 0, the wire: what travels through a broker (messages, headers,
//! deadlines, limits), how payloads are encoded (JSON, MessagePack) and
//! JSON-RPC 2.0's own shapes. No I/O and no runtime: everything above
//! builds on these types.

pub mod codec;
mod deadline;
pub mod jsonrpc;
mod limits;
mod message;
mod serving;

pub use deadline::{Deadline, InvalidDeadline};
pub use limits::Limits;
pub use message::{header, Headers, Message};
pub(crate) use serving::Serving;
