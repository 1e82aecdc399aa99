//! busrpc's logs on stderr: `RUST_LOG` filters them (`info` when unset:
//! a server's start and stop, refused replies, dead letters, a broker gone
//! and back; `RUST_LOG=busrpc=debug` for every request's path).

/// Installs the subscriber; a second call (or one set already) is ignored.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
