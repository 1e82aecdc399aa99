//! The conformance suite against the in-memory transport.

use std::sync::Arc;
use std::time::Duration;

use busrpc_conformance::{Capabilities, Harness};
use busrpc_core::memory::MemoryTransport;
use busrpc_core::Transport;

/// One private broker per test; each connection is a handle to it.
struct Memory(MemoryTransport);

#[async_trait::async_trait]
impl Harness for Memory {
    async fn connect(&self) -> Arc<dyn Transport> {
        Arc::new(self.0.clone())
    }

    fn capabilities(&self) -> Capabilities {
        // Redelivery is immediate when a consumer goes away, and so is its
        // leaving the group.
        Capabilities::new(Ok(Duration::from_secs(1)), Duration::from_millis(50))
            .with_servers_known(Ok(Duration::ZERO))
            .with_cancels(Ok(()))
    }

    async fn connect_bounded(&self, bound: usize) -> Option<Arc<dyn Transport>> {
        Some(Arc::new(MemoryTransport::with_capacity(bound)))
    }
}

busrpc_conformance::suite!(Memory(MemoryTransport::new()), current_thread);
busrpc_conformance::suite!(Memory(MemoryTransport::new()), macro_calls);
