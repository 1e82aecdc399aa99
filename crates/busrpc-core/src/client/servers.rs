//! Whether anybody serves a service: asked of the broker at most once per
//! `check_servers_every` per service, never once per call, so that a call
//! to a service whose servers are all gone fails at once instead of
//! waiting out its timeout (as NATS answers "no responders").

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::{timeout_at, Instant};

use super::budget::Budget;
use super::Client;
use crate::error::Error;

/// What the client last learnt of each service it called.
pub(super) struct ServerChecks {
    /// Tells this client's entries in [`LAST`] from another's.
    id: u64,
    known: Mutex<HashMap<Box<str>, Known>>,
    /// One broker query at a time per service: the calls that find the
    /// answer stale while it runs wait for it rather than ask again.
    asking: Mutex<HashMap<Box<str>, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for ServerChecks {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            known: Mutex::default(),
            asking: Mutex::default(),
        }
    }
}

thread_local! {
    /// The verdict this thread read last, by client and service: most
    /// calls find it here, and touch no lock shared with other threads (a
    /// shared map's lock on every call cost the engine bench about a tenth
    /// of its throughput at 64 calls in flight).
    static LAST: RefCell<Option<(u64, Box<str>, Known)>> = const { RefCell::new(None) };
}

#[derive(Clone, Copy)]
struct Known {
    verdict: Verdict,
    at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// At least one live server.
    Served,
    /// A queue, but no live server.
    Unserved,
    /// The transport cannot tell, or asking it failed: calls go ahead.
    Unknown,
}

impl ServerChecks {
    /// The verdict on `service` if it is younger than `every`.
    fn fresh(&self, service: &str, every: std::time::Duration, now: Instant) -> Option<Verdict> {
        let young = |k: &Known| now.saturating_duration_since(k.at) < every;
        let cached = LAST.with(|last| {
            let last = last.borrow();
            let (id, name, k) = last.as_ref()?;
            (*id == self.id && **name == *service && young(k)).then_some(k.verdict)
        });
        if cached.is_some() {
            return cached;
        }
        let k = *self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)?;
        if !young(&k) {
            return None;
        }
        LAST.with(|last| *last.borrow_mut() = Some((self.id, service.into(), k)));
        Some(k.verdict)
    }

    fn store(&self, service: &str, verdict: Verdict) {
        let known = Known {
            verdict,
            at: Instant::now(),
        };
        let mut map = self.known.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(service.into(), known);
    }

    fn asking(&self, service: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
        asking.entry(service.into()).or_default().clone()
    }
}

impl Client {
    /// Fails with [`Error::NoServers`] when the broker counts no live
    /// server of `service`, from what it said at most
    /// `check_servers_every` ago, asking it again when that is older.
    pub(super) async fn check_served(&self, service: &str, budget: Budget) -> Result<(), Error> {
        let Some(every) = self.core.config.check_servers_every else {
            return Ok(());
        };
        let checks = &self.core.servers;
        let verdict = match checks.fresh(service, every, budget.started()) {
            Some(verdict) => verdict,
            None => {
                let asking = checks.asking(service);
                let _one_at_a_time = timeout_at(budget.at, asking.lock())
                    .await
                    .map_err(|_| self.timed_out(budget))?;
                match checks.fresh(service, every, Instant::now()) {
                    Some(verdict) => verdict,
                    None => {
                        let verdict = self.ask_broker(service, budget).await?;
                        checks.store(service, verdict);
                        verdict
                    }
                }
            }
        };
        match verdict {
            Verdict::Unserved => Err(Error::NoServers {
                service: service.to_owned(),
            }),
            Verdict::Served | Verdict::Unknown => Ok(()),
        }
    }

    async fn ask_broker(&self, service: &str, budget: Budget) -> Result<Verdict, Error> {
        let transport = &self.core.transport;
        let address = transport.service_address(service);
        let members = timeout_at(budget.at, transport.members(&address, service))
            .await
            .map_err(|_| self.timed_out(budget))?;
        Ok(match members {
            Ok(Some(members)) if members.is_empty() => Verdict::Unserved,
            Ok(Some(_)) => Verdict::Served,
            Ok(None) => Verdict::Unknown,
            Err(e) => {
                // A check that failed must not fail the call: the publish
                // will say whether the broker is there.
                tracing::debug!(%service, error = %e, "asking the broker for live servers failed");
                Verdict::Unknown
            }
        })
    }
}
