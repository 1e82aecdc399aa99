//! The shared conformance suite against a real redis-server.

use std::sync::Arc;
use std::time::Duration;

use crate::common::Prefix;
use busrpc_conformance::{Capabilities, Harness};
use busrpc_core::Transport;

/// Each test gets its own key prefix; every connection is a new transport,
/// as another process would have.
struct Redis(Prefix);

#[async_trait::async_trait]
impl Harness for Redis {
    async fn connect(&self) -> Arc<dyn Transport> {
        Arc::new(self.0.connect("").await)
    }

    fn capabilities(&self) -> Capabilities {
        // A dead consumer's requests are claimed once idle for claim_idle_ms
        // (500 here), checked every claim_idle/2.
        // A server vouches for itself three keep-alive periods (claim_idle
        // / 3) ahead: a dead one is not counted 500 ms after it died.
        Capabilities::new(Ok(Duration::from_secs(3)), Duration::from_millis(100))
            .with_lease(Duration::from_millis(500))
            .with_servers_known(Ok(Duration::from_millis(600)))
            .with_cancels(Ok(()))
    }

    async fn connect_bounded(&self, bound: usize) -> Option<Arc<dyn Transport>> {
        Some(Arc::new(
            self.0.connect(&format!("&queue_max_len={bound}")).await,
        ))
    }
}

busrpc_conformance::suite!(Redis(Prefix::new("conformance")), current_thread);
busrpc_conformance::suite!(Redis(Prefix::new("conformance-macro")), macro_calls);
