//! The conformance cases. Each takes a [`Harness`](crate::harness::Harness) and
//! panics on failure.
//!
//! A case is a `pub async fn <name>(h: &dyn Harness)` in a file of one of
//! the lists' folders; the build script finds it there and `suite!` runs
//! it, so the folder is the only list a case is written in:
//!
//! - `calls/`: calls, replies and the specification's examples, run by
//!   every configuration of a backend.
//! - `failure_paths/`: handlers that panic or hang, shutdown, bad input,
//!   bounds, deadlines, signatures; run again on a current-thread runtime.
//!
//! Wire-level cases speak raw JSON through the transport, as a foreign
//! client (kcat, redis-cli, Python) would, and compare exact strings.

mod calls {
    pub(super) mod discovery;
    pub(super) mod queue_wait;
    pub(super) mod replies;
    pub(super) mod signed_replies;
    pub(super) mod spec;
}
mod failure_paths {
    pub(super) mod cancels;
    pub(super) mod chains;
    pub(super) mod deadlines;
    pub(super) mod endings;
    pub(super) mod handlers;
    pub(super) mod input;
    pub(super) mod lifecycle;
    pub(super) mod limits;
    pub(super) mod no_servers;
    pub(super) mod signed_requests;
}

pub use calls::{discovery::*, queue_wait::*, replies::*, signed_replies::*, spec::*};
pub use failure_paths::{
    cancels::*, chains::*, deadlines::*, endings::*, handlers::*, input::*, lifecycle::*,
    limits::*, no_servers::*, signed_requests::*,
};

include!(concat!(env!("OUT_DIR"), "/lists.rs"));

#[cfg(test)]
mod tests {
    /// Every module of a list's folder is declared above (a file the
    /// compiler never sees would be a list of cases nobody runs).
    #[test]
    fn every_case_file_is_compiled() {
        for list in ["calls", "failure_paths"] {
            let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/cases")
                .join(list);
            let declared = include_str!("mod.rs");
            for entry in std::fs::read_dir(&folder).expect("the folder exists") {
                let path = entry.expect("an entry").path();
                let stem = path.file_stem().and_then(|s| s.to_str()).expect("a name");
                assert!(
                    declared.contains(&format!(" mod {stem};")),
                    "{} is not declared in src/cases/mod.rs",
                    path.display()
                );
            }
        }
    }
}
