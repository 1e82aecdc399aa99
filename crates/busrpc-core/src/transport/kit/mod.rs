//! What the authors of transports (and of decorators over them) share:
//! ids, URLs fit to show, log lines that hostile input cannot flood, waits
//! that grow after failures, and the reply of a broker with no atomic
//! publish-and-acknowledge.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use super::{Acknowledge, Settle, SettleError, TransportError};

mod log;
mod url;

pub use log::{Excerpt, Throttle, EXCERPT_BYTES};
pub use url::{is_secret_option, redact_url};

/// An id that does not repeat across processes and hosts (a random
/// version-4 UUID, as 32 hex digits): for naming a transport's consumers and
/// inboxes. Random rather than time-based, so that it tells a reader of the
/// broker nothing about the host or when it started.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The name of this process among a service's servers when nobody has set
/// one: `{host}-{pid}` (the host name the kernel reports, else `$HOSTNAME`,
/// else `host`). A transport names its consumers after it (see
/// [`Deliveries::with_member`](crate::transport::Deliveries::with_member))
/// unless its configuration sets a name.
pub fn default_member_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The name of a new consumer of this process: `base` (a transport's
/// `name` option, else [`default_member_name`]) for the first consumer of
/// that base, `{base}-2`, `{base}-3`… after, so that two servers in one
/// process (of one service, on two connections) never share a consumer.
/// Names set by hand must differ between processes, as the default does.
pub fn member_name(base: Option<&str>) -> String {
    /// How many consumers of each base this process has named.
    static TAKEN: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);
    let base = base.map_or_else(default_member_name, ToOwned::to_owned);
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let n = taken.entry(base.clone()).or_insert(0);
    *n += 1;
    if *n == 1 {
        base
    } else {
        format!("{base}-{n}")
    }
}

/// Carries out [`Settle::Reply`] (or the reply of a
/// [`Settle::DeadLetter`]) for a broker that cannot publish and
/// acknowledge in one step: `publish` first, then `acker` settles with
/// [`Settle::Ack`], the order that makes delivery at-least-once. A failed
/// publish hands the acknowledger back unsettled ([`SettleError::unsettled`]):
/// whether the delivery is then acknowledged (the broker refused the reply)
/// or released is the server's to decide.
///
/// ```
/// # use async_trait::async_trait;
/// # use busrpc_core::transport::{kit, Acknowledge, Settle, SettleError, TransportError};
/// # use busrpc_core::Message;
/// # async fn send(_to: &str, _reply: Message) -> Result<(), TransportError> { Ok(()) }
/// struct MyAck;
///
/// #[async_trait]
/// impl Acknowledge for MyAck {
///     async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
///         match how {
///             Settle::Reply { to, message } => {
///                 kit::reply_then_ack(self, async move { send(&to, message).await }).await
///             }
///             Settle::Ack => Ok(()),      // ... commit, XACK, delete ...
///             _ => Ok(()),                // ... release, dead-letter ...
///         }
///     }
/// }
/// ```
pub async fn reply_then_ack(
    acker: Box<dyn Acknowledge>,
    publish: impl Future<Output = Result<(), TransportError>> + Send,
) -> Result<(), SettleError> {
    match publish.await {
        Ok(()) => acker.settle(Settle::Ack).await,
        Err(e) => Err(SettleError::unsettled(e, acker)),
    }
}

/// The waits between tries of something that keeps failing: 20 ms after
/// the first failure in a row, doubling up to 640 ms, so that a broker that
/// is away is asked about often at first, then about twice a second, and
/// its return is noticed within a second (a 1.28 s cap left a server idle
/// up to 1.28 s after a cut of the network had ended).
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// No failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more failure in a row; the wait before the next try.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(10u64 << self.failures.min(6))
    }

    /// A try succeeded: the next failure waits the shortest again.
    /// Whether the ones before had failed.
    pub fn succeeded(&mut self) -> bool {
        std::mem::take(&mut self.failures) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_the_host_and_pid_and_never_repeat_in_a_process() {
        let default = default_member_name();
        assert!(
            default.ends_with(&format!("-{}", std::process::id())),
            "{default}"
        );
        assert!(default.len() > format!("-{}", std::process::id()).len());
        let set = "kit-test-orders";
        assert_eq!(member_name(Some(set)), set);
        assert_eq!(member_name(Some(set)), format!("{set}-2"));
        assert_eq!(member_name(Some(set)), format!("{set}-3"));
        let first = member_name(None);
        assert!(first.starts_with(&default), "{first}");
        assert_ne!(member_name(None), first);
    }

    #[test]
    fn unique_ids_are_random_uuids_that_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| unique_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            // The version nibble: a v4 (random) UUID.
            assert_eq!(&id[12..13], "4", "{id}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new();
        let waits: Vec<u64> = (0..9)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 640, 640, 640, 640]);
        assert!(backoff.succeeded());
        assert!(!backoff.succeeded());
        assert_eq!(backoff.failed(), Duration::from_millis(20));
    }
}
