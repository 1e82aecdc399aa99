//! The test suite every busrpc [`Transport`](busrpc_core::Transport) must pass.
//!
//! A backend hands in a [`Harness`] (how to connect to the broker under test,
//! and what that broker can do) and expands [`suite!`] in one of its
//! integration tests; every test becomes a `#[tokio::test]` of its own, on a
//! service name of its own, so the suite runs in parallel and no test sees
//! another's leftovers.
//!
//! ```ignore
//! // crates/busrpc-<broker>/tests/it/conformance.rs
//! struct MyBroker;
//! #[async_trait::async_trait]
//! impl busrpc_conformance::Harness for MyBroker { /* ... */ }
//! busrpc_conformance::suite!(MyBroker);
//! ```
//!
//! A case whose capability the broker lacks (its [`Capabilities`] say so)
//! prints `does not apply: <test>: <reason>` and passes. A test that lacks a
//! helper outside the repository (a redis-server to start, Tansu, a Python)
//! calls [`cannot_run`]: skipped on a developer's machine, a failure under
//! scripts/test.sh, which sets [`REQUIRE_HELPERS`].
//!
//! The crate is layered like the others: [`harness`](Harness) (what a
//! backend hands in), `catalogue` (the [hostile-input data](hostile)),
//! `fixture` (the suite's service, servers, clients, a raw peer, waits) and
//! [`cases`], whose folders are the lists `suite!` runs: a case is written
//! once, as a function in the folder of its list (see [`cases`]).
//!
//! Set `BUSRPC_TEST_LOG` to a tracing filter (`busrpc_kafka=debug`) to see
//! what the transports log during a run.

pub mod cases;
pub mod catalogue;
mod fixture;
mod harness;

pub use catalogue::hostile;
pub use harness::{
    cannot_run, log_if_asked, unique_service, Capabilities, Flavor, Harness, MacroBuilt,
    REQUIRE_HELPERS,
};

/// Expands to one `#[tokio::test]` per conformance test, each calling
/// [`cases`]`::<name>(&harness)` with a harness built by `$harness`, on a
/// 2-worker runtime.
///
/// `suite!(harness, current_thread)` also runs the failure-path cases
/// (slow handlers, refused replies, shutdown, bad input, bounds) again on a
/// current-thread runtime, in a module `current_thread`: services embed
/// busrpc in either flavour, and a transport that blocks its worker, or
/// leans on another worker to make progress, fails there.
///
/// `suite!(harness, macro_calls)` runs those cases of calls again, in a
/// module `macro_built`, against the same service written with
/// `#[busrpc::service]`.
///
/// `suite!(harness, calls_only)` runs only the cases of calls, replies and
/// the specification's examples, not the failure paths: for a second
/// configuration of a backend that changes how replies travel (Kafka's
/// shared inbox), whose failure paths the full suite proves already.
#[macro_export]
macro_rules! suite {
    ($harness:expr) => {
        $crate::suite!($harness, calls_only);
        $crate::suite!(@failure_paths multi_thread $harness);
    };
    ($harness:expr, calls_only) => {
        $crate::__busrpc_conformance_calls!(@each multi_thread $harness);
    };
    ($harness:expr, macro_calls) => {
        /// The calls again, the service built by `#[busrpc::service]`.
        mod macro_built {
            #[allow(unused_imports)]
            use super::*;
            $crate::suite!($crate::MacroBuilt($harness), calls_only);
        }
    };
    ($harness:expr, current_thread) => {
        $crate::suite!($harness);
        /// The failure-path cases again, on a current-thread runtime.
        mod current_thread {
            #[allow(unused_imports)]
            use super::*;
            $crate::suite!(@failure_paths current_thread $harness);
        }
    };
    (@failure_paths $flavor:ident $harness:expr) => {
        $crate::__busrpc_conformance_failure_paths!(@each $flavor $harness);
    };
    (@each multi_thread $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::log_if_asked();
                let harness = $harness;
                $crate::cases::$name(&harness).await;
            }
        )*
    };
    (@each current_thread $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "current_thread")]
            async fn $name() {
                $crate::log_if_asked();
                let harness = $harness;
                $crate::cases::$name(&harness).await;
            }
        )*
    };
}
