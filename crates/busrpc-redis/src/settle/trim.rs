//! Removing answered requests from the head of a stream in bulk.

use redis::Value;

use crate::connection::Connection;

/// `EVAL`'d with the stream as its key: removes, atomically, the entries at
/// the stream's head that every group has acknowledged (see the script).
const TRIM_SCRIPT: &str = include_str!("../scripts/trim.lua");

/// Removes the answered requests at the head of the stream at `address`.
/// A failure costs only memory until the next trim, so it is logged, not
/// reported.
pub(super) async fn trim(connection: &Connection, address: &str) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(TRIM_SCRIPT).arg(1).arg(address);
    match connection.query(&cmd).await {
        Ok(Value::Int(removed)) => tracing::trace!(address, removed, "trimmed answered requests"),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(address, error = %e, "trimming answered requests failed; the next trim will")
        }
    }
}
