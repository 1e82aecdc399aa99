//! Layer 2, the service: what a server serves. Handlers of several shapes,
//! a [`Router`] of them by method name, the [`Context`] a handler may ask
//! for, [`Middleware`] around every call, and the OpenRPC document a
//! service describes itself with. No broker, no runtime of its own.

mod context;
mod handler;
mod middleware;
pub mod openrpc;
mod router;

pub use context::Context;
pub(crate) use context::{Arrival, CallInfo};
pub use handler::{Handler, WithContext, WithStateAndContext};
pub use middleware::{CallOutcome, Ending, Middleware, Next};
pub(crate) use router::Methods;
pub use router::{Router, DESCRIBE_METHOD, DISCOVER_METHOD};
