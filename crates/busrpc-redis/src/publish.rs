//! Adding a request to its stream, within the stream's bound: refused
//! when full, never evicting.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use busrpc_core::transport::TransportError;
use busrpc_core::Message;
use redis::Value;

use crate::connection::{unavailable, Connection};
use crate::entries::{bounded_xadd, xadd_uncapped};

/// What a transport knows of the request streams it publishes to.
#[derive(Default)]
pub(crate) struct Admission {
    /// The SHA1 of [`BOUNDED_XADD_SCRIPT`], for `EVALSHA`: asked of Redis
    /// (`SCRIPT LOAD`) by the first request that needs the script, not at
    /// connect, where servers and consumers never need it.
    bounded_xadd_sha: tokio::sync::OnceCell<String>,
    /// What this transport last measured of each request stream it
    /// publishes to (see [`Admission::add`]).
    lengths: std::sync::Mutex<HashMap<String, KnownLength>>,
    /// Request streams this transport has added to: one of them missing
    /// later was lost by Redis (a restart without persistence), not never
    /// served (see [`Admission::add_bounded`]).
    served: std::sync::Mutex<HashSet<String>>,
}

/// How many request streams a transport remembers having served before it
/// forgets them all: a client meets few services.
const MAX_SERVED: usize = 4096;

/// A request stream's length as last measured, and requests added since.
struct KnownLength {
    at: Instant,
    len: u64,
    added: u64,
    /// A measure is on its way: one at a time.
    measuring: bool,
}

/// How [`Admission::add`] adds one request.
enum AddPlan {
    /// Far below the bound, measured recently: a plain `XADD`.
    Add,
    /// The same, and time to measure again: `XADD` and `XLEN` in one trip.
    AddAndMeasure,
    /// Near the bound, or not measured recently: the bounding script.
    Bounded,
}

/// How long a measured stream length is trusted.
const LENGTH_FRESH: Duration = Duration::from_millis(100);

/// Room kept below half the bound before the fast path is taken.
const FAST_PATH_MARGIN: u64 = 10_000;

/// The script every request is added with (see [`Admission::add`]).
const BOUNDED_XADD_SCRIPT: &str = include_str!("scripts/bounded_xadd.lua");

impl Admission {
    /// Adds a request to its stream, refused with `Overloaded` when the
    /// stream already holds `queue_max_len` entries, and never evicting.
    ///
    /// Exact where it matters, cheap where it does not: the bounding script
    /// (`scripts/bounded_xadd.lua`, checking `XLEN` and adding in one step)
    /// costs Redis a Lua call per request, so while this transport knows,
    /// from a measure under [`LENGTH_FRESH`] old, that the stream is far
    /// below its bound (under half of it, less [`FAST_PATH_MARGIN`]), it
    /// adds with a plain `XADD` and measures `XLEN` alongside now and then.
    /// No burst of other publishers can cover half a bound that large
    /// between two measures; near the bound, or for a small one, every
    /// request goes through the script.
    pub(crate) async fn add(
        &self,
        connection: &Connection,
        address: &str,
        message: &Message,
    ) -> Result<(), TransportError> {
        let bound = connection.config.queue_max_len;
        let plan = {
            let mut lengths = self.lengths.lock().unwrap_or_else(|e| e.into_inner());
            match lengths.get_mut(address) {
                Some(known)
                    if known.at.elapsed() < LENGTH_FRESH
                        && (known.len + known.added).saturating_add(FAST_PATH_MARGIN)
                            <= bound / 2 =>
                {
                    known.added += 1;
                    // Half-way through its freshness: measure again.
                    if !known.measuring && known.at.elapsed() >= LENGTH_FRESH / 2 {
                        known.measuring = true;
                        AddPlan::AddAndMeasure
                    } else {
                        AddPlan::Add
                    }
                }
                _ => AddPlan::Bounded,
            }
        };
        let measured = match plan {
            AddPlan::Add => {
                let added = xadd_uncapped(address, message)
                    .query_async::<Value>(&mut connection.commands())
                    .await;
                return match connection.unless_it_ran(added).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        self.forget_length(address);
                        Err(unavailable(e))
                    }
                };
            }
            AddPlan::AddAndMeasure => {
                let mut pipe = redis::pipe();
                pipe.add_command(xadd_uncapped(address, message)).ignore();
                pipe.cmd("XLEN").arg(address);
                let measured = pipe.query_async::<(u64,)>(&mut connection.commands()).await;
                match connection.unless_it_ran(measured).await {
                    Ok(Some((len,))) => len,
                    Ok(None) => {
                        self.forget_length(address);
                        return Ok(());
                    }
                    Err(e) => {
                        self.forget_length(address);
                        return Err(unavailable(e));
                    }
                }
            }
            AddPlan::Bounded => match self
                .add_bounded(connection, address, message, bound)
                .await?
            {
                Some(len) => len,
                None => return Ok(()),
            },
        };
        let mut lengths = self.lengths.lock().unwrap_or_else(|e| e.into_inner());
        let known = KnownLength {
            at: Instant::now(),
            len: measured,
            added: 0,
            measuring: false,
        };
        match lengths.get_mut(address) {
            Some(slot) => *slot = known,
            None => {
                lengths.insert(address.to_owned(), known);
            }
        }
        Ok(())
    }

    /// Runs the bounding script: `EVALSHA` first, `EVAL` once if Redis does
    /// not know the script (a restart flushed it), which caches it again.
    /// The stream's length with the request added (`None`: added, the
    /// length unknown, as the answer timed out).
    async fn add_bounded(
        &self,
        connection: &Connection,
        address: &str,
        message: &Message,
        bound: u64,
    ) -> Result<Option<u64>, TransportError> {
        let sha = self
            .bounded_xadd_sha
            .get_or_try_init(|| async {
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(BOUNDED_XADD_SCRIPT)
                    .query_async::<String>(&mut connection.commands())
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let evalsha = bounded_xadd("EVALSHA", sha, address, message, bound);
        let added = match evalsha.query_async::<u64>(&mut connection.commands()).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let eval = bounded_xadd("EVAL", BOUNDED_XADD_SCRIPT, address, message, bound);
                eval.query_async::<u64>(&mut connection.commands()).await
            }
            added => added,
        };
        let added = connection.unless_it_ran(added).await;
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        if added.is_ok() && !served.contains(address) {
            if served.len() >= MAX_SERVED {
                served.clear();
            }
            served.insert(address.to_owned());
        }
        added.map_err(|e| {
            self.forget_length(address);
            if e.code() == Some("BUSRPCNOSERVICE") && served.contains(address) {
                // Served before, gone now: Redis lost it, and the servers'
                // next read makes it again (XGROUP CREATE … MKSTREAM on
                // NOGROUP). Worth waiting for, within the call's deadline.
                TransportError::Unavailable(
                    format!("the stream {address} is gone: Redis lost it (a restart without persistence?); its servers make it again").into(),
                )
            } else if e.code() == Some("BUSRPCNOSERVICE") {
                TransportError::NotServed(address.to_owned())
            } else if e.code() == Some("BUSRPCFULL") {
                TransportError::Overloaded(
                    e.detail()
                        .unwrap_or("the request stream is full")
                        .to_owned(),
                )
            } else {
                unavailable(e)
            }
        })
    }

    fn forget_length(&self, address: &str) {
        let mut lengths = self.lengths.lock().unwrap_or_else(|e| e.into_inner());
        lengths.remove(address);
    }
}
