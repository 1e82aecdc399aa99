//! Reaching the broker a command names: signed with `BUSRPC_KEYS` when set,
//! within `--connect-timeout`, never `memory://` (no other process's
//! service is on it).

use std::sync::Arc;

use busrpc::transport::redact_url;
use busrpc::{Client, ClientConfig, Transport};

use crate::{BrokerArgs, Failure};

/// The environment variable holding the keys messages are signed and
/// checked with: `id:hex-secret[,id:hex-secret...]`, the first signing.
/// Not a flag: a flag's value is visible to every user of the machine.
const KEYS_VARIABLE: &str = "BUSRPC_KEYS";

/// The broker at `url`, authenticated with the keys in [`KEYS_VARIABLE`]
/// when it is set.
pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Transport>, Failure> {
    let keys = match std::env::var(KEYS_VARIABLE) {
        Ok(list) if !list.trim().is_empty() => Some(
            busrpc::auth::Keys::parse(&list)
                .map_err(|e| Failure::usage(format!("{KEYS_VARIABLE}: {e}")))?,
        ),
        _ => None,
    };
    let transport = busrpc::connect(url).await.map_err(|e| Failure {
        // A URL that cannot be right is the caller's mistake, not an outage.
        code: if matches!(e, busrpc::TransportError::InvalidUrl { .. }) {
            2
        } else {
            3
        },
        message: format!("cannot use broker {}: {e}", redact_url(url)),
    })?;
    Ok(match keys {
        Some(keys) => Arc::new(busrpc::auth::Authenticated::new(transport, keys)),
        None => transport,
    })
}

/// A client of the broker `target` names, within its connect timeout: an
/// unreachable broker is reported as such, not waited on.
pub(crate) async fn client_for(
    target: &BrokerArgs,
    config: ClientConfig,
) -> Result<Client, Failure> {
    let transport = connect_within(target).await?;
    within(target, Client::connect_with(transport, config))
        .await?
        .map_err(Failure::from)
}

/// The broker `target` names (another process's: not `memory://`),
/// within its connect timeout.
pub(crate) async fn connect_within(target: &BrokerArgs) -> Result<Arc<dyn Transport>, Failure> {
    let url = &target.broker;
    if url.starts_with("memory://") {
        return Err(Failure::usage(format!(
            "cannot reach a service through {url}: the memory broker lives inside one process, and no \
             service of another process is on it; name the broker the service runs on, \
             e.g. --broker redis://127.0.0.1:6379 (or set BUSRPC_BROKER)"
        )));
    }
    within(target, connect(url)).await?
}

/// `work`, unless the broker takes longer than `--connect-timeout`.
async fn within<T>(
    target: &BrokerArgs,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(target.connect_timeout, work)
        .await
        .map_err(|_| Failure {
            code: 3,
            message: format!(
                "cannot use broker {}: no answer within {} (--connect-timeout)",
                redact_url(&target.broker),
                humantime::format_duration(target.connect_timeout)
            ),
        })
}
