#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod entries;

/// Entry points for the fuzz targets in `fuzz/`, compiled only under
/// `--cfg fuzzing` (which `cargo fuzz` sets).
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    /// The messages of the entries in an `XREADGROUP` reply given as RESP
    /// bytes (`None` if they are not RESP), as a server reads them.
    pub fn read_entries(resp: &[u8]) -> Option<Vec<(String, busrpc_core::Message)>> {
        let reply = redis::parse_redis_value(resp).ok()?;
        let entries = crate::entries::entries_of_first_stream(reply);
        Some(entries.into_iter().map(|e| (e.id, e.message)).collect())
    }
}
#[cfg(feature = "raw")]
#[cfg_attr(docsrs, doc(cfg(feature = "raw")))]
pub mod raw;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::transport::{
    Acknowledge, Deliveries, Delivery, Demand, Exhausted, Inbox, OnSettled, Readiness,
    ReadinessSignal, Settle, SettleError, Transport, TransportError,
};
use busrpc_core::Message;
use futures_util::stream;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use tokio::sync::{mpsc, oneshot};

pub use config::RedisConfig;
use entries::{bounded_xadd, entries_of_first_stream, xadd, xadd_reply, xadd_uncapped, Entry};

/// The Redis Streams transport.
///
/// - Requests of service `S` are entries of the stream `{prefix}:S`, read by
///   the consumer group `S`; each server instance is a consumer of its own.
/// - A reply inbox is the stream `{prefix}:inbox:{id}`, capped and expiring.
/// - Entry fields: `payload` (the JSON-RPC bytes) and one field per header.
///
/// Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTransport")
            .field("config", &self.inner.config)
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: redis::Client,
    /// Shared, multiplexed: every non-blocking command.
    commands: ConnectionManager,
    config: RedisConfig,
    /// Unique to this transport: names its consumers and inboxes.
    instance: String,
    next_name: AtomicU64,
    /// Where inbox addresses start, so a publish can tell replies from requests.
    inbox_prefix: String,
    /// The SHA1 of [`BOUNDED_XADD_SCRIPT`], for `EVALSHA`: asked of Redis
    /// (`SCRIPT LOAD`) by the first request that needs the script, not at
    /// connect, where servers and consumers never need it.
    bounded_xadd_sha: tokio::sync::OnceCell<String>,
    /// What this transport last measured of each request stream it
    /// publishes to (see [`Inner::add_request`]).
    lengths: std::sync::Mutex<HashMap<String, KnownLength>>,
    /// Request streams this transport has added to: one of them missing
    /// later was lost by Redis (a restart without persistence), not never
    /// served (see [`Inner::add_bounded`]).
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

/// How [`Inner::add_request`] adds one request.
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

/// The script every request is added with (see [`Inner::add_request`]).
const BOUNDED_XADD_SCRIPT: &str = include_str!("bounded_xadd.lua");

/// What a Redis error means for busrpc: worth another try later (the
/// connection, a timeout, Redis loading or failing over), or not (no
/// permission, a wrong password, a key of the wrong type): a server stops
/// after a few of those in a row and reports why.
fn unavailable(e: RedisError) -> TransportError {
    use redis::{ErrorKind, RetryMethod};
    let lost = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
    if lost || e.is_timeout() {
        return TransportError::Unavailable(Box::new(e));
    }
    match (e.kind(), e.retry_method()) {
        (ErrorKind::AuthenticationFailed, _) | (_, RetryMethod::NoRetry) => {
            TransportError::Rejected(e.to_string())
        }
        _ => TransportError::Unavailable(Box::new(e)),
    }
}

/// How many PINGs, each allowed `response_timeout_ms`, ask whether a
/// command that timed out has run (see `Inner::ran_before_ping`).
const PINGS_AFTER_A_TIMEOUT: u32 = 12;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisTransport {
    /// Connects to `redis://[user:password@]host:port[/db][?options]` (or
    /// `rediss://` with the `tls` feature); see [`RedisConfig`] for the options.
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        let config = RedisConfig::from_url(url)?;
        // A setting refused below came from the URL: say so with it.
        Self::connect_with(config).await.map_err(|e| match e {
            TransportError::InvalidConfig(reason) => TransportError::InvalidUrl {
                url: url.to_owned(),
                reason,
            },
            e => e,
        })
    }

    /// Connects with `config`, built with [`RedisConfig::new`] and its
    /// setters (or parsed from a URL). A wrong password or an unknown ACL
    /// user fails with [`TransportError::Rejected`] (Redis' own words, no
    /// secret in them); settings that cannot be used with
    /// [`TransportError::InvalidConfig`].
    pub async fn connect_with(config: RedisConfig) -> Result<Self, TransportError> {
        config.check().map_err(TransportError::InvalidConfig)?;
        #[cfg(feature = "tls")]
        if config.tls {
            // rustls needs a process-wide crypto provider; keep the
            // application's if it installed one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = open_client(&config)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.response_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let mut commands = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(unavailable)?;
        // A server that wants a password connects without one and refuses
        // every command: say so now, not at the first call.
        redis::cmd("PING")
            .query_async::<()>(&mut commands)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                commands,
                inbox_prefix: format!("{}:inbox:", config.prefix),
                bounded_xadd_sha: tokio::sync::OnceCell::new(),
                lengths: std::sync::Mutex::default(),
                served: std::sync::Mutex::default(),
                config,
                instance: busrpc_core::transport::unique_id(),
                next_name: AtomicU64::new(1),
            }),
        })
    }

    /// The options in force.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The dead-letter stream of the queue at `address`.
    pub fn dead_letter_address(address: &str) -> String {
        format!("{address}:dead")
    }
}

fn open_client(config: &RedisConfig) -> Result<redis::Client, TransportError> {
    let info = config
        .connection_info()
        .map_err(TransportError::InvalidConfig)?;
    let invalid = |e: redis::RedisError| TransportError::InvalidConfig(e.to_string());
    let Some(ca_file) = &config.tls_ca_file else {
        return redis::Client::open(info).map_err(invalid);
    };
    #[cfg(feature = "tls")]
    {
        let root_cert = std::fs::read(ca_file).map_err(|e| {
            TransportError::InvalidConfig(format!("tls_ca_file {}: {e}", ca_file.display()))
        })?;
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        redis::Client::build_with_tls(info, certificates).map_err(invalid)
    }
    #[cfg(not(feature = "tls"))]
    Err(TransportError::InvalidConfig(format!(
        "tls_ca_file={} needs the cargo feature `tls` of busrpc-redis",
        ca_file.display()
    )))
}

impl Inner {
    fn name(&self, kind: &str) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{}-{n}", self.instance)
    }

    /// A connection of its own for blocking reads, which would otherwise
    /// hold up every command queued behind them on a shared connection.
    async fn blocking_connection(&self) -> Result<BlockingConnection, TransportError> {
        let mut connection = BlockingConnection { manager: None };
        connection.get(self).await?;
        Ok(connection)
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, TransportError> {
        cmd.query_async(&mut self.commands.clone())
            .await
            .map_err(unavailable)
    }

    async fn run(&self, pipe: &redis::Pipeline) -> Result<(), TransportError> {
        pipe.query_async::<()>(&mut self.commands.clone())
            .await
            .map_err(unavailable)
    }

    /// Creates the group, and the stream if need be, reading from the
    /// beginning so that requests sent before any server started are served.
    async fn create_group(&self, address: &str, group: &str) -> Result<(), TransportError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(address)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM");
        match cmd.query_async::<Value>(&mut self.commands.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Adds a reply to `pipe`, capped. `NOMKSTREAM`: a reply to an inbox that
    /// no longer exists (its client gone, its expiry passed) is discarded
    /// rather than creating a stream nobody reads.
    ///
    /// Not `.ignore()`d: the pipelines here are run for their errors only
    /// (which Redis reports either way), and every ignored command costs the
    /// pipeline a hash set insertion.
    fn add_reply(&self, pipe: &mut redis::Pipeline, address: &str, message: &Message) {
        pipe.add_command(xadd_reply(address, message, self.config.inbox_max_len));
    }

    /// How many times each of `ids` (pending in `group`) has been
    /// delivered: one `XPENDING key group id id 1` per id, pipelined, so each
    /// count is that entry's own. (One range query over all of them also
    /// returns whatever else is pending between them, and its count then
    /// cuts off some of the ids asked for.) An id no longer pending has no
    /// count.
    async fn delivery_counts(
        &self,
        address: &str,
        group: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, u64>, TransportError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::Pipeline::with_capacity(ids.len());
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(address)
                .arg(group)
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let rows: Vec<Value> = pipe
            .query_async(&mut self.commands.clone())
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().flat_map(entries::pending_counts).collect())
    }

    /// Adds a request to its stream, refused with `Rejected` when the
    /// stream already holds `queue_max_len` entries, and never evicting.
    ///
    /// Exact where it matters, cheap where it does not: the bounding script
    /// (`bounded_xadd.lua`, checking `XLEN` and adding in one step) costs
    /// Redis a Lua call per request, so while this transport knows, from a
    /// measure under [`LENGTH_FRESH`] old, that the stream is far below its
    /// bound (under half of it, less [`FAST_PATH_MARGIN`]), it adds with a
    /// plain `XADD` and measures `XLEN` alongside now and then. No burst of
    /// other publishers can cover half a bound that large between two
    /// measures; near the bound, or for a small one, every request goes
    /// through the script.
    /// The outcome of a command that adds a request, `Ok(None)` for one
    /// that timed out but has run. Sent, unanswered, a request sent again
    /// may run twice: a long stall (Redis stopped, busy, a host gone) had
    /// the client send each call in it several times, every try waiting in
    /// the socket to run (a 30 s stall of the chaos run: 9,843 reruns).
    async fn unless_it_ran<T>(
        &self,
        result: redis::RedisResult<T>,
    ) -> redis::RedisResult<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_timeout() && self.ran_before_ping().await => {
                tracing::debug!("a request whose publish timed out had reached Redis");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// After a command on the shared connection timed out: whether Redis
    /// has run it. Redis runs a connection's commands in order, so it has
    /// once it answers a PING sent after it on the same connection; while
    /// PINGs time out too, Redis is still stalled, and they are sent again
    /// (up to [`PINGS_AFTER_A_TIMEOUT`]); a connection that broke (or was
    /// made again) leaves it unknown. The one case this misjudges: the
    /// connection lost and made again between the timeout and the PING.
    async fn ran_before_ping(&self) -> bool {
        for _ in 0..PINGS_AFTER_A_TIMEOUT {
            match redis::cmd("PING")
                .query_async::<()>(&mut self.commands.clone())
                .await
            {
                Ok(()) => return true,
                Err(e) if e.is_timeout() => continue,
                Err(_) => return false,
            }
        }
        false
    }

    async fn add_request(&self, address: &str, message: &Message) -> Result<(), TransportError> {
        let bound = self.config.queue_max_len;
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
                    .query_async::<Value>(&mut self.commands.clone())
                    .await;
                return match self.unless_it_ran(added).await {
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
                let measured = pipe.query_async::<(u64,)>(&mut self.commands.clone()).await;
                match self.unless_it_ran(measured).await {
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
            AddPlan::Bounded => match self.add_bounded(address, message, bound).await? {
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
                    .query_async::<String>(&mut self.commands.clone())
                    .await
                    .map_err(unavailable)
            })
            .await?;
        let evalsha = bounded_xadd("EVALSHA", sha, address, message, bound);
        let added = match evalsha.query_async::<u64>(&mut self.commands.clone()).await {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                let eval = bounded_xadd("EVAL", BOUNDED_XADD_SCRIPT, address, message, bound);
                eval.query_async::<u64>(&mut self.commands.clone()).await
            }
            added => added,
        };
        let added = self.unless_it_ran(added).await;
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
                TransportError::Rejected(
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

    /// Creates an inbox stream (empty, expiring) and returns the id reading starts after.
    async fn create_inbox(&self, address: &str) -> Result<String, TransportError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XADD")
            .arg(address)
            .arg("MAXLEN")
            .arg(0)
            .arg("*")
            .arg("created")
            .arg(1);
        pipe.cmd("PEXPIRE")
            .arg(address)
            .arg(millis(self.config.inbox_ttl))
            .ignore();
        let (id,): (String,) = pipe
            .query_async(&mut self.commands.clone())
            .await
            .map_err(unavailable)?;
        Ok(id)
    }
}

#[async_trait]
impl Transport for RedisTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        let inner = &*self.inner;
        if address.starts_with(&inner.inbox_prefix) {
            inner
                .query(&xadd_reply(address, &message, inner.config.inbox_max_len))
                .await
                .map(drop)
        } else {
            inner.add_request(address, &message).await
        }
    }

    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        let inner = self.inner.clone();
        inner.create_group(address, group).await?;
        let (address, group): (Arc<str>, Arc<str>) = (address.into(), group.into());
        let consumer: Arc<str> = inner.name("consumer").into();
        let settle = SettleQueue::start(inner.clone(), address.clone(), group.clone());
        let in_hand = Arc::new(InHand::default());
        let (stop_keeping, stopped) = oneshot::channel();
        let (closing, left_in_hand) = oneshot::channel();
        tokio::spawn(keep_alive(
            inner.clone(),
            [address.clone(), group.clone(), consumer.clone()],
            in_hand.clone(),
            stopped,
        ));
        let readiness = ReadinessSignal::new(Readiness::Ready);
        let reader = GroupReader {
            readiness: readiness.clone(),
            reported_ready: true,
            connection: inner.blocking_connection().await?,
            consumer,
            settle,
            address,
            group,
            buffer: VecDeque::new(),
            next_claim: Instant::now(),
            in_hand,
            demand,
            _stop_keeping: stop_keeping,
            closing: Some(closing),
            inner: inner.clone(),
        };
        let names = [
            reader.address.clone(),
            reader.group.clone(),
            reader.consumer.clone(),
        ];
        tracing::debug!(address = %reader.address, group = %reader.group, consumer = %reader.consumer, "joined the group");
        let deliveries = Deliveries::new(stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await;
            Some((next, reader))
        }));
        Ok(deliveries
            .with_readiness(readiness)
            .on_close(leave(inner, names, left_in_hand)))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        let inner = self.inner.clone();
        let address = format!("{}{}", inner.inbox_prefix, inner.name("client"));
        let last_id = inner.create_inbox(&address).await?;
        let reader = InboxReader {
            connection: inner.blocking_connection().await?,
            address: address.clone(),
            last_id,
            buffer: VecDeque::new(),
            next_refresh: Instant::now() + inner.config.inbox_ttl / 3,
            recreate: false,
            inner: inner.clone(),
        };
        let messages = stream::unfold(reader, |mut reader| async move {
            let next = reader.next().await;
            Some((next, reader))
        });
        let key = address.clone();
        Ok(Inbox::new(address, messages).on_close(async move {
            if let Err(e) = inner.query(redis::cmd("DEL").arg(&key)).await {
                tracing::warn!(inbox = %key, error = %e, "deleting the inbox failed; it will expire");
            }
        }))
    }

    fn service_address(&self, service: &str) -> String {
        // Called on every call: one allocation, where format! takes two.
        let prefix = &self.inner.config.prefix;
        let mut address = String::with_capacity(prefix.len() + 1 + service.len());
        address.push_str(prefix);
        address.push(':');
        address.push_str(service);
        address
    }
}

/// The ids of the entries a consumer holds: read (buffered, or handed out
/// and running) and not yet settled.
#[derive(Default)]
struct InHand(std::sync::Mutex<HashSet<String>>);

impl InHand {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ids(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }
}

/// A connection for blocking reads (XREADGROUP, XREAD … BLOCK) that is
/// replaced after a timeout. The reads sent while Redis was away (stopped,
/// or a host gone) wait in its socket, and once it is back Redis runs each
/// of them, BLOCK and all, before the next: on one connection, the reads
/// after them time out one after another for as long (seen: a 5 s outage
/// queued ~30 reads, and the server read nothing for ~5 s after Redis was
/// back). A fresh connection leaves them on the old one, which Redis drops
/// with its queue.
struct BlockingConnection {
    manager: Option<ConnectionManager>,
}

impl BlockingConnection {
    /// The connection, made first if the last one timed out.
    async fn get(&mut self, inner: &Inner) -> Result<&mut ConnectionManager, TransportError> {
        if self.manager.is_none() {
            // redis-rs times responses out; a blocked read must outlast its BLOCK.
            let timeout = inner.config.block + inner.config.response_timeout;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(inner.config.response_timeout))
                .set_response_timeout(Some(timeout));
            let manager = inner
                .client
                .get_connection_manager_with_config(config)
                .await
                .map_err(unavailable)?;
            self.manager = Some(manager);
        }
        Ok(self.manager.as_mut().expect("made above"))
    }

    /// Runs `cmd`; a timeout drops the connection (see above).
    async fn query(
        &mut self,
        inner: &Inner,
        cmd: &redis::Cmd,
    ) -> Result<Result<Value, RedisError>, TransportError> {
        let result = cmd.query_async(self.get(inner).await?).await;
        if matches!(&result, Err(e) if e.is_timeout()) {
            self.manager = None;
        }
        Ok(result)
    }
}

/// Keeps the entries a live consumer holds from being claimed: every
/// `claim_idle / 3`, `XCLAIM … 0 <ids> JUSTID` to itself resets their idle
/// time (JUSTID leaves their delivery counts alone). A handler slower than
/// `claim_idle`, or a request waiting in the buffer for a handler slot,
/// is then never taken and run again by another server, nor dead-lettered
/// while it runs; only a consumer that stopped (its process dead, so this
/// task too) leaves entries to claim. Ends when the consumer is dropped.
async fn keep_alive(
    inner: Arc<Inner>,
    [address, group, consumer]: [Arc<str>; 3],
    in_hand: Arc<InHand>,
    mut stopped: oneshot::Receiver<()>,
) {
    let period = (inner.config.claim_idle / 3).max(Duration::from_millis(10));
    let mut failed = false;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(period) => {}
        }
        let ids = in_hand.ids();
        if ids.is_empty() {
            continue;
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&*address).arg(&*group).arg(&*consumer).arg(0);
        for id in &ids {
            cmd.arg(id);
        }
        cmd.arg("JUSTID");
        match inner.query(&cmd).await {
            Ok(_) => failed = false,
            // Once per outage, not every period.
            Err(e) if !failed => {
                failed = true;
                tracing::warn!(%address, in_hand = ids.len(), error = %e, "keeping requests in hand failed; past claim_idle another server may take them");
            }
            Err(_) => {}
        }
    }
}

/// One consumer of a service's group: claims what dead consumers left
/// pending, then reads new entries, no more at a time than its server can
/// take now.
struct GroupReader {
    inner: Arc<Inner>,
    /// Ready while the group's commands succeed; told only of changes
    /// (`reported_ready` is what it was last told).
    readiness: ReadinessSignal,
    reported_ready: bool,
    settle: SettleQueue,
    connection: BlockingConnection,
    address: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
    /// Taken entries not yet handed out, each with which delivery it is.
    buffer: VecDeque<(Entry, u64)>,
    next_claim: Instant,
    in_hand: Arc<InHand>,
    demand: Demand,
    /// Dropped with the reader: stops [`keep_alive`].
    _stop_keeping: oneshot::Sender<()>,
    /// Where the reader, dropped, hands what it still holds to a clean
    /// close ([`leave`]) instead of handing it back in the background.
    closing: Option<oneshot::Sender<Vec<String>>>,
}

/// A clean close of a consumer: makes what it still held claimable at once
/// and, if nothing is left pending with it, removes it from the group, so
/// that restarts do not pile up consumers (`XGROUP DELCONSUMER` drops a
/// consumer's pending entries, hence only when it has none; the check and
/// the removal are one script).
async fn leave(
    inner: Arc<Inner>,
    [address, group, consumer]: [Arc<str>; 3],
    left_in_hand: oneshot::Receiver<Vec<String>>,
) {
    let ids = left_in_hand.await.unwrap_or_default();
    if !ids.is_empty() {
        let cmd = release_cmd(&inner, &address, &group, &consumer, &ids);
        if let Err(e) = inner.query(&cmd).await {
            tracing::warn!(%address, error = %e, "handing back requests in hand failed; they will be claimed after claim_idle");
        }
        return;
    }
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(LEAVE_SCRIPT)
        .arg(1)
        .arg(&*address)
        .arg(&*group)
        .arg(&*consumer);
    match inner.query(&cmd).await {
        Ok(Value::Int(0..)) => tracing::debug!(%address, %consumer, "left the group"),
        Ok(_) => {
            tracing::debug!(%address, %consumer, "requests still pending; staying in the group until claimed")
        }
        Err(e) => tracing::warn!(%address, %consumer, error = %e, "leaving the group failed"),
    }
}

/// `EVAL`'d with the stream as its key and the group and consumer as
/// arguments: deletes the consumer if nothing is pending with it.
const LEAVE_SCRIPT: &str = "\
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1";

impl GroupReader {
    /// Most entries to read or claim now: what the server can take.
    fn wanted(&self) -> u64 {
        let demand = u64::try_from(self.demand.now()).unwrap_or(u64::MAX);
        self.inner.config.read_count.min(demand).max(1)
    }

    /// Adds `entry` to what this consumer holds and will hand out.
    fn hold(&mut self, entry: Entry, attempt: u64) {
        self.in_hand.lock().insert(entry.id.clone());
        self.buffer.push_back((entry, attempt));
    }

    fn claim_interval(&self) -> Duration {
        (self.inner.config.claim_idle / 2).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    async fn next(&mut self) -> Result<Delivery, TransportError> {
        loop {
            if let Some((entry, deliveries)) = self.buffer.pop_front() {
                let request = Arc::new(entry.message);
                let acker = RedisAck {
                    inner: self.inner.clone(),
                    address: self.address.clone(),
                    group: self.group.clone(),
                    consumer: self.consumer.clone(),
                    id: entry.id,
                    deliveries,
                    request: request.clone(),
                    settle: self.settle.clone(),
                    in_hand: self.in_hand.clone(),
                };
                let attempt = u32::try_from(deliveries).unwrap_or(u32::MAX);
                let delivery = Delivery::shared(request, acker).with_attempt(attempt);
                let max = self.inner.config.max_deliveries;
                if deliveries > max {
                    let dead = RedisTransport::dead_letter_address(&self.address);
                    return Ok(delivery.exhausted(Exhausted::new(deliveries, max, dead)));
                }
                return Ok(delivery);
            }
            let now = Instant::now();
            if now >= self.next_claim {
                self.next_claim = now + self.claim_interval();
                self.claim().await?;
                continue;
            }
            let block = self
                .next_claim
                .saturating_duration_since(now)
                .min(self.inner.config.block);
            self.read_new(block.max(Duration::from_millis(1))).await?;
        }
    }

    /// Runs a group command on this consumer's connection, expected to take
    /// about `expected` (a read's BLOCK; nothing otherwise); a group lost
    /// with its stream (a Redis restart without persistence) is created
    /// again.
    async fn query(
        &mut self,
        cmd: &redis::Cmd,
        expected: Duration,
    ) -> Result<Value, TransportError> {
        let started = Instant::now();
        let result = match self.connection.query(&self.inner, cmd).await {
            Ok(result) => result,
            Err(e) => {
                self.defer_claims(false);
                self.report(Err(&e));
                return Err(e);
            }
        };
        // A failure, or a stall long enough that the keep-alives of every
        // consumer stalled as well (they run every claim_idle / 3), is an
        // outage: while Redis was away, the entries live peers hold grew
        // idle without their owners being able to say otherwise. Claiming
        // them the moment Redis is back would take them from their owners
        // and run them twice, so claims wait claim_idle from here, which
        // gives each peer's keep-alive three tries first.
        let stalled = started.elapsed() > expected + self.inner.config.claim_idle / 2;
        if result.is_err() || stalled {
            self.defer_claims(stalled);
        }
        let result = match result {
            Ok(value) => Ok(value),
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(address = %self.address, group = %self.group, "the group is gone; creating it again");
                self.inner
                    .create_group(&self.address, &self.group)
                    .await
                    .map(|()| Value::Nil)
            }
            Err(e) => Err(unavailable(e)),
        };
        self.report(result.as_ref().map(|_| ()));
        result
    }

    /// Tells the server's readiness how the last group command went.
    fn report(&mut self, outcome: Result<(), &TransportError>) {
        match outcome {
            Ok(()) if !self.reported_ready => {
                self.reported_ready = true;
                self.readiness.ready();
            }
            Ok(()) => {}
            Err(e) => {
                self.reported_ready = false;
                self.readiness
                    .not_ready(format!("reading the request stream failed: {e}"));
            }
        }
    }

    /// After an outage (see [`GroupReader::query`]): no claim for
    /// claim_idle from now.
    fn defer_claims(&mut self, stalled: bool) {
        let after = Instant::now() + self.inner.config.claim_idle;
        if after > self.next_claim {
            tracing::debug!(address = %self.address, stalled, "Redis was away; claims wait claim_idle");
            self.next_claim = after;
        }
    }

    async fn read_new(&mut self, block: Duration) -> Result<(), TransportError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&*self.group)
            .arg(&*self.consumer)
            .arg("COUNT")
            .arg(self.wanted())
            .arg("BLOCK")
            .arg(millis(block))
            .arg("STREAMS")
            .arg(&*self.address)
            .arg(">");
        let reply = self.query(&cmd, block).await?;
        // `>`: entries never delivered to the group before.
        for entry in entries_of_first_stream(reply) {
            self.hold(entry, 1);
        }
        Ok(())
    }

    /// Takes over requests left pending longer than `claim_idle` by
    /// consumers that died; dead-letters those delivered too often.
    async fn claim(&mut self) -> Result<(), TransportError> {
        let inner = self.inner.clone();
        let config = &inner.config;
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(&*self.address)
            .arg(&*self.group)
            .arg(&*self.consumer)
            .arg(millis(config.claim_idle))
            .arg("0-0")
            .arg("COUNT")
            .arg(self.wanted());
        let reply = self.query(&cmd, Duration::ZERO).await?;
        let Value::Array(mut parts) = reply else {
            return Ok(());
        };
        if parts.len() < 2 {
            return Ok(());
        }
        let claimed = entries::entries(parts.swap_remove(1));
        if claimed.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = claimed.iter().map(|e| e.id.as_str()).collect();
        let deliveries = inner
            .delivery_counts(&self.address, &self.group, &ids)
            .await?;
        for entry in claimed {
            let Some(&count) = deliveries.get(&entry.id) else {
                // Acknowledged since the claim: nobody's to run any more.
                continue;
            };
            // One delivered too often is handed out all the same, marked
            // exhausted: its server dead-letters it (see `RedisAck`).
            tracing::info!(address = %self.address, id = %entry.id, deliveries = count, "claimed a request a dead consumer left");
            self.hold(entry, count);
        }
        Ok(())
    }
}

impl Drop for GroupReader {
    fn drop(&mut self) {
        // Entries read but never handed out, and any handed out still
        // unsettled (a server drops its deliveries only once everything
        // finished is settled): make them claimable at once rather than
        // after `claim_idle`.
        self.buffer.clear();
        let ids = self.in_hand.ids();
        let ids = match self.closing.take() {
            // A clean close hands them back, and waits for it.
            Some(closing) => match closing.send(ids) {
                Ok(()) => return,
                Err(ids) => ids,
            },
            None => ids,
        };
        self.hand_back_in_background(ids);
    }
}

impl GroupReader {
    fn hand_back_in_background(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (inner, address, group, consumer) = (
            self.inner.clone(),
            self.address.clone(),
            self.group.clone(),
            self.consumer.clone(),
        );
        runtime.spawn(async move {
            let cmd = release_cmd(&inner, &address, &group, &consumer, &ids);
            if let Err(e) = inner.query(&cmd).await {
                tracing::debug!(error = %e, "handing back unread entries failed; they will be claimed after claim_idle");
            }
        });
    }
}

/// `XCLAIM … IDLE claim_idle JUSTID`: keeps the entries pending but makes
/// them look idle long enough for any consumer's next claim to take them.
/// JUSTID leaves their delivery count alone.
fn release_cmd(
    inner: &Inner,
    address: &str,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> redis::Cmd {
    let mut cmd = redis::cmd("XCLAIM");
    cmd.arg(address).arg(group).arg(consumer).arg(0);
    for id in ids {
        cmd.arg(id);
    }
    cmd.arg("IDLE")
        .arg(millis(inner.config.claim_idle))
        .arg("JUSTID");
    cmd
}

struct RedisAck {
    inner: Arc<Inner>,
    address: Arc<str>,
    group: Arc<str>,
    consumer: Arc<str>,
    id: String,
    /// Which delivery of the entry this is (Redis' delivery count).
    deliveries: u64,
    /// The request as read: what a dead letter keeps.
    request: Arc<Message>,
    settle: SettleQueue,
    in_hand: Arc<InHand>,
}

impl Drop for RedisAck {
    /// Settled, or dropped unsettled: either way no longer kept alive; one
    /// left unsettled is claimed after `claim_idle`.
    fn drop(&mut self) {
        self.in_hand.lock().remove(&self.id);
    }
}

impl RedisAck {
    /// `XCLAIM … IDLE claim_idle JUSTID`: claimable at once by any
    /// consumer's next claim.
    async fn release(self: Box<Self>) -> Result<(), SettleError> {
        let ids = [self.id.clone()];
        let cmd = release_cmd(
            &self.inner,
            &self.address,
            &self.group,
            &self.consumer,
            &ids,
        );
        match self.inner.query(&cmd).await {
            Ok(_) => Ok(()),
            Err(e) => Err(SettleError::unsettled(e, self)),
        }
    }

    /// Moves the request to the dead-letter stream `{stream}:dead` (its
    /// fields kept, with `dead-deliveries` and `dead-id` added), sends
    /// `reply` if there is one, and acknowledges and deletes the request,
    /// all in one transaction: the keys of one service, on one Redis.
    async fn dead_letter(
        self: Box<Self>,
        reply: Option<(Arc<str>, Message)>,
    ) -> Result<(), SettleError> {
        let inner = &self.inner;
        let dead = RedisTransport::dead_letter_address(&self.address);
        let mut dead_message = Message::clone(&self.request);
        dead_message
            .headers
            .insert("dead-deliveries", self.deliveries.to_string());
        dead_message.headers.insert("dead-id", self.id.as_str());
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.add_command(xadd(&dead, &dead_message, inner.config.queue_max_len))
            .ignore();
        if let Some((reply_to, reply)) = &reply {
            inner.add_reply(&mut pipe, reply_to, reply);
        }
        pipe.cmd("XACK")
            .arg(&*self.address)
            .arg(&*self.group)
            .arg(&self.id)
            .ignore();
        // Rare: not worth leaving to a trim. It lives on in the dead letters.
        pipe.cmd("XDEL").arg(&*self.address).arg(&self.id).ignore();
        match inner.run(&pipe).await {
            Ok(()) => {
                tracing::debug!(address = %self.address, id = %self.id, deliveries = self.deliveries, %dead, "dead-lettered");
                Ok(())
            }
            Err(e) => Err(SettleError::unsettled(e, self)),
        }
    }

    /// Hands an acknowledgement (after `reply`, if any) to the settling
    /// task, which reports it to `waiter`.
    fn queue(self: Box<Self>, reply: Option<(Arc<str>, Message)>, waiter: Waiter) {
        let settle = self.settle.clone();
        let settlement = Settlement {
            acker: self,
            reply,
            waiter,
        };
        if let Err(mpsc::error::SendError(settlement)) = settle.0.send(settlement) {
            // The settling task is gone with its consumer.
            settlement
                .waiter
                .report(Err(SettleError::settled(TransportError::Closed)));
        }
    }
}

#[async_trait]
impl Acknowledge for RedisAck {
    /// Replies and acknowledgements go through the consumer's settling
    /// task, coalesced with those of the requests finishing alongside (see
    /// [`SettleQueue`]); releases and dead letters go out on their own.
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), SettleError> {
        let (done, confirmed) = oneshot::channel();
        match how {
            Settle::Ack => self.queue(None, Waiter::Confirm(done)),
            Settle::Reply { to, message } => self.queue(Some((to, message)), Waiter::Confirm(done)),
            Settle::Release => return self.release().await,
            Settle::DeadLetter { reply } => return self.dead_letter(reply).await,
        }
        confirmed
            .await
            .unwrap_or(Err(SettleError::settled(TransportError::Closed)))
    }

    /// Queues an acknowledgement (and its reply) and returns: the settling
    /// task reports the outcome.
    async fn settle_then(self: Box<Self>, how: Settle, then: OnSettled) {
        match how {
            Settle::Ack => self.queue(None, Waiter::Report(then)),
            Settle::Reply { to, message } => self.queue(Some((to, message)), Waiter::Report(then)),
            other => then(self.settle(other).await),
        }
    }
}

/// A request to settle: its acknowledger, the reply to write first if
/// any, and who learns the outcome.
struct Settlement {
    acker: Box<RedisAck>,
    reply: Option<(Arc<str>, Message)>,
    waiter: Waiter,
}

/// Who learns how a settlement went.
enum Waiter {
    /// A caller awaiting [`Acknowledge::settle`].
    Confirm(oneshot::Sender<Result<(), SettleError>>),
    /// The server, through [`Acknowledge::settle_then`].
    Report(OnSettled),
}

impl Waiter {
    fn report(self, outcome: Result<(), SettleError>) {
        match self {
            Waiter::Confirm(done) => {
                let _ = done.send(outcome);
            }
            Waiter::Report(then) => then(outcome),
        }
    }
}

/// The replies and acknowledgements of one consumer, coalesced. A task
/// takes everything queued while its previous round trip was out and sends
/// it as one pipeline: every reply's `XADD`, then one `XACK` for all the
/// ids. Redis runs a connection's commands in order, so no request is
/// acknowledged before its reply is written. A lone request costs one round
/// trip, as it would alone; under load, one write and one round trip settle
/// many, sparing Redis and the client the per-command work that otherwise
/// dominates. The task reports each batch's outcome to every request in it
/// (to the server's [`OnSettled`], or to a caller awaiting
/// [`Acknowledge::settle`]) only once Redis has answered, so "acknowledged"
/// still means acknowledged; a server request holds its concurrency permit
/// until then. Reporting from here, rather than waking each request's task
/// to learn its outcome, spares a wake-up per request. A batch that fails
/// as a whole gives each request's acknowledger back, unsettled, for its
/// server to release.
///
/// Answered requests then leave the stream in bulk rather than one `XDEL`
/// each (which cost Redis more than the `XACK`s): after every
/// [`TRIM_EVERY`] settlements, and once the queue has been quiet for
/// [`TRIM_WHEN_QUIET`], the task trims the stream's head of everything
/// acknowledged ([`TRIM_SCRIPT`]).
#[derive(Clone)]
struct SettleQueue(mpsc::UnboundedSender<Settlement>);

/// Most requests settled in one round trip.
const MAX_SETTLE_BATCH: usize = 256;

/// Settlements after which a consumer trims its stream.
const TRIM_EVERY: usize = 512;

/// Quiet after which a consumer trims what it settled since its last trim.
const TRIM_WHEN_QUIET: Duration = Duration::from_millis(100);

/// `EVAL`'d with the stream as its key: removes, atomically, the entries at
/// the stream's head that every group has acknowledged (see the script).
const TRIM_SCRIPT: &str = include_str!("trim.lua");

impl SettleQueue {
    fn start(inner: Arc<Inner>, address: Arc<str>, group: Arc<str>) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Settlement>();
        // Ends when the consumer and every delivery of it are gone.
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut untrimmed = 0;
            loop {
                let received = if untrimmed == 0 {
                    rx.recv_many(&mut batch, MAX_SETTLE_BATCH).await
                } else {
                    let next = rx.recv_many(&mut batch, MAX_SETTLE_BATCH);
                    match tokio::time::timeout(TRIM_WHEN_QUIET, next).await {
                        Ok(received) => received,
                        Err(_quiet) => {
                            trim(&inner, &address).await;
                            untrimmed = 0;
                            continue;
                        }
                    }
                };
                if received == 0 {
                    if untrimmed > 0 {
                        trim(&inner, &address).await;
                    }
                    return;
                }
                let outcome = settle_batch(&inner, &address, &group, &batch).await;
                if outcome.is_ok() {
                    untrimmed += batch.len();
                }
                for (n, Settlement { acker, waiter, .. }) in batch.drain(..).enumerate() {
                    let result = match &outcome {
                        Err(e) => Err(SettleError::unsettled(
                            TransportError::Unavailable(e.clone().into()),
                            acker,
                        )),
                        // Refused, but acknowledged in the same pipeline.
                        Ok(refused) => match refused.get(n).cloned().flatten() {
                            Some(e) => Err(SettleError::settled(TransportError::Rejected(e))),
                            None => Ok(()),
                        },
                    };
                    waiter.report(result);
                }
                if untrimmed >= TRIM_EVERY {
                    trim(&inner, &address).await;
                    untrimmed = 0;
                }
            }
        });
        SettleQueue(tx)
    }
}

/// Writes a batch's replies, then acknowledges all its requests, in one
/// pipeline. `Err` if the pipeline failed as a whole (or its `XACK` did);
/// otherwise, per settlement in order, why Redis refused its reply if it did.
async fn settle_batch(
    inner: &Inner,
    address: &str,
    group: &str,
    batch: &[Settlement],
) -> Result<Vec<Option<String>>, String> {
    let mut pipe = redis::Pipeline::with_capacity(batch.len() + 1);
    let mut xack = redis::Cmd::with_capacity(
        3 + batch.len(),
        4 + address.len() + group.len() + batch.len() * 16,
    );
    xack.arg("XACK").arg(address).arg(group);
    for Settlement { acker, reply, .. } in batch {
        if let Some((to, message)) = reply {
            inner.add_reply(&mut pipe, to, message);
        }
        xack.arg(&acker.id);
    }
    pipe.add_command(xack);
    // Each command's own outcome: one reply refused must not fail the
    // others, whose replies were written all the same.
    pipe.ignore_errors();
    let results: Vec<redis::RedisResult<Value>> = pipe
        .query_async(&mut inner.commands.clone())
        .await
        .map_err(|e| e.to_string())?;
    match results.last() {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("Redis answered the pipeline with nothing".to_owned()),
    }
    let mut replies = results.into_iter();
    Ok(batch
        .iter()
        .map(|settlement| {
            let (to, _) = settlement.reply.as_ref()?;
            match replies.next() {
                Some(Err(e)) => Some(format!(
                    "Redis refused the reply to {to:?} ({e}); the request is acknowledged, as another try would be refused alike"
                )),
                _ => None,
            }
        })
        .collect())
}

/// Removes the answered requests at the head of the stream at `address`.
/// A failure costs only memory until the next trim, so it is logged, not
/// reported.
async fn trim(inner: &Inner, address: &str) {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(TRIM_SCRIPT).arg(1).arg(address);
    match inner.query(&cmd).await {
        Ok(Value::Int(removed)) => tracing::trace!(address, removed, "trimmed answered requests"),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(address, error = %e, "trimming answered requests failed; the next trim will")
        }
    }
}

/// Reads a client's inbox, keeping it alive (its expiry refreshed) and
/// recreating it after a Redis restart.
struct InboxReader {
    inner: Arc<Inner>,
    connection: BlockingConnection,
    address: String,
    last_id: String,
    buffer: VecDeque<Message>,
    next_refresh: Instant,
    recreate: bool,
}

impl InboxReader {
    async fn next(&mut self) -> Result<Message, TransportError> {
        loop {
            if let Some(message) = self.buffer.pop_front() {
                return Ok(message);
            }
            let now = Instant::now();
            if self.recreate || now >= self.next_refresh {
                self.refresh().await?;
                self.next_refresh = now + self.inner.config.inbox_ttl / 3;
            }
            let block = self
                .next_refresh
                .saturating_duration_since(now)
                .min(self.inner.config.block);
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(self.inner.config.read_count)
                .arg("BLOCK")
                .arg(millis(block).max(1))
                .arg("STREAMS")
                .arg(&self.address)
                .arg(&self.last_id);
            let read = self.connection.query(&self.inner, &cmd).await;
            let reply = match read.and_then(|reply| reply.map_err(unavailable)) {
                Ok(reply) => reply,
                Err(e) => {
                    // Perhaps Redis restarted and the inbox is gone with it.
                    self.recreate = true;
                    return Err(e);
                }
            };
            for entry in entries_of_first_stream(reply) {
                self.last_id.clone_from(&entry.id);
                // The creation marker, or an entry with no reply in it.
                if !entry.message.payload.is_empty() {
                    self.buffer.push_back(entry.message);
                }
            }
        }
    }

    /// Extends the inbox's life; creates it again if it is gone.
    async fn refresh(&mut self) -> Result<(), TransportError> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(&self.address)
            .arg(millis(self.inner.config.inbox_ttl));
        let alive = matches!(self.inner.query(&cmd).await?, Value::Int(1));
        if !alive {
            tracing::warn!(inbox = %self.address, "the inbox was gone; creating it again");
            let created = self.inner.create_inbox(&self.address).await?;
            if entries::cmp_ids(&created, &self.last_id).is_gt() {
                self.last_id = created;
            }
        }
        self.recreate = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Redis of the integration tests (scripts/test.sh starts one).
    async fn transport(test: &str) -> RedisTransport {
        let base =
            std::env::var("BUSRPC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("busrpc-unit-{test}-{}", busrpc_core::transport::unique_id());
        RedisTransport::connect(&format!("{base}?prefix={prefix}"))
            .await
            .expect("Redis at BUSRPC_REDIS_URL")
    }

    /// Ids claimed in a later round, with this consumer's own pending
    /// entries between them: each gets its own count, none a default.
    #[tokio::test]
    async fn delivery_counts_are_exact_for_interleaved_ids() {
        let t = transport("counts").await;
        let inner = &t.inner;
        let address = t.service_address("svc");
        inner.create_group(&address, "svc").await.unwrap();
        let mut ids = Vec::new();
        for n in 0..4 {
            let message = Message::new(format!("{n}"));
            let id: String = xadd(&address, &message, 100)
                .query_async(&mut inner.commands.clone())
                .await
                .unwrap();
            ids.push(id);
        }
        // One consumer holds all four; two have been delivered many times.
        let _: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("svc")
            .arg("me")
            .arg("STREAMS")
            .arg(&address)
            .arg(">")
            .query_async(&mut inner.commands.clone())
            .await
            .unwrap();
        for (id, count) in [(&ids[1], 7), (&ids[3], 9)] {
            let _: Value = redis::cmd("XCLAIM")
                .arg(&address)
                .arg("svc")
                .arg("me")
                .arg(0)
                .arg(id)
                .arg("RETRYCOUNT")
                .arg(count)
                .query_async(&mut inner.commands.clone())
                .await
                .unwrap();
        }
        // Asked for the second and fourth only, with the third in between.
        let asked = [ids[1].as_str(), ids[3].as_str()];
        let counts = inner
            .delivery_counts(&address, "svc", &asked)
            .await
            .unwrap();
        assert_eq!(counts.get(&ids[1]), Some(&7));
        assert_eq!(counts.get(&ids[3]), Some(&9));
        assert_eq!(counts.len(), 2);
        // An id no longer pending has no count.
        let _: Value = redis::cmd("XACK")
            .arg(&address)
            .arg("svc")
            .arg(&ids[3])
            .query_async(&mut inner.commands.clone())
            .await
            .unwrap();
        let counts = inner
            .delivery_counts(&address, "svc", &asked)
            .await
            .unwrap();
        assert_eq!(counts.get(&ids[3]), None);
        let _: Value = redis::cmd("DEL")
            .arg(&address)
            .query_async(&mut inner.commands.clone())
            .await
            .unwrap();
    }
}
