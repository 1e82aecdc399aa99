//! busrpc's connection to one Redis: a multiplexed connection for every
//! non-blocking command, connections of their own for blocking reads, and
//! what a Redis error means for busrpc.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use busrpc_core::transport::TransportError;
use busrpc_core::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};

use crate::config::RedisConfig;
use crate::entries::xadd_reply;

/// The connection of a [`RedisTransport`](crate::RedisTransport) and its
/// clones: one client, one multiplexed connection, and the names it gives
/// its consumers and inboxes.
pub(crate) struct Connection {
    client: redis::Client,
    /// Shared, multiplexed: every non-blocking command.
    commands: ConnectionManager,
    pub(crate) config: RedisConfig,
    /// Unique to this transport: names its consumers and inboxes.
    pub(crate) instance: String,
    next_name: AtomicU64,
    /// Where inbox addresses start, so a publish can tell replies from requests.
    pub(crate) inbox_prefix: String,
}

/// What a Redis error means for busrpc: worth another try later (the
/// connection, a timeout, Redis loading or failing over), or not (no
/// permission or a wrong password: [`PermissionDenied`]; Redis out of
/// memory: [`Overloaded`]; a key of the wrong type: [`Rejected`]): a
/// server stops after a few of those in a row and reports why.
///
/// [`PermissionDenied`]: TransportError::PermissionDenied
/// [`Overloaded`]: TransportError::Overloaded
/// [`Rejected`]: TransportError::Rejected
pub(crate) fn unavailable(e: RedisError) -> TransportError {
    use redis::{ErrorKind, RetryMethod};
    let lost = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
    if lost || e.is_timeout() {
        return TransportError::Unavailable(Box::new(e));
    }
    let refused = matches!(e.code(), Some("NOPERM" | "WRONGPASS" | "NOAUTH"));
    match (e.kind(), e.retry_method()) {
        (ErrorKind::AuthenticationFailed, _) => TransportError::PermissionDenied(e.to_string()),
        _ if refused => TransportError::PermissionDenied(e.to_string()),
        // Redis at its maxmemory refuses writes: a full broker, not a bug.
        _ if e.code() == Some("OOM") => TransportError::Overloaded(e.to_string()),
        (_, RetryMethod::NoRetry) => TransportError::Rejected(e.to_string()),
        _ => TransportError::Unavailable(Box::new(e)),
    }
}

/// How many PINGs, each allowed `response_timeout_ms`, ask whether a
/// command that timed out has run (see [`Connection::ran_before_ping`]).
const PINGS_AFTER_A_TIMEOUT: u32 = 12;

/// The longest wait between two tries to connect again after a
/// connection broke. The redis crate's own backoff doubles from 100 ms
/// over six tries (up to 3.2 s between the last two), so a Redis back
/// from a 5 s cut of the network went unnoticed for up to 4 s more.
const RECONNECT_AT_MOST_EVERY: Duration = Duration::from_millis(250);

/// Tries to connect again in one round, [`RECONNECT_AT_MOST_EVERY`] apart
/// at most: about ten seconds of them, as long as the crate's default
/// round. With six (about a second), a server's shared connection did
/// not recover from a Redis restart in one run in three of
/// `survives_a_redis_restart` on a loaded machine (its keep-alive never
/// succeeded again); the redis crate starts another round only after one
/// that ended on an I/O error, which a round shorter than the outage may
/// not have.
const RECONNECT_TRIES: usize = 40;

/// How a connection of `config` reconnects and times out: responses after
/// `response_timeout`, attempts to connect after `config.response_timeout`,
/// tries to connect again at most [`RECONNECT_AT_MOST_EVERY`] apart.
fn manager_config(config: &RedisConfig, response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.response_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(RECONNECT_AT_MOST_EVERY)
        .set_number_of_retries(RECONNECT_TRIES)
}

/// A duration as the whole milliseconds Redis takes.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The client for `config`: its address and login, with the certificate
/// authority of `tls_ca_file` when one is given.
pub(crate) fn open_client(config: &RedisConfig) -> Result<redis::Client, TransportError> {
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

impl Connection {
    /// Connects to the server `config` names and checks that it answers. A
    /// server that wants a password connects without one and refuses every
    /// command: said now, not at the first call. Nobody listening is said
    /// at once too: one try first, since the connection manager tries its
    /// first connection as patiently as a broken one (about ten seconds of
    /// rounds, [`RECONNECT_TRIES`]).
    pub(crate) async fn open(config: RedisConfig) -> Result<Self, TransportError> {
        #[cfg(feature = "tls")]
        if config.tls {
            // rustls needs a process-wide crypto provider; keep the
            // application's if it installed one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = open_client(&config)?;
        let once = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.response_timeout))
            .set_response_timeout(Some(config.response_timeout));
        let mut first = client
            .get_multiplexed_async_connection_with_config(&once)
            .await
            .map_err(unavailable)?;
        redis::cmd("PING")
            .query_async::<()>(&mut first)
            .await
            .map_err(unavailable)?;
        drop(first);
        let manager = manager_config(&config, config.response_timeout);
        // Its first connection is made here: answered and let in, as the
        // PING above found.
        let commands = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            commands,
            inbox_prefix: format!("{}:inbox:", config.prefix),
            config,
            instance: busrpc_core::transport::unique_id(),
            next_name: AtomicU64::new(1),
        })
    }

    /// A name no other consumer or inbox has: `{kind}-{instance}-{n}`.
    pub(crate) fn name(&self, kind: &str) -> String {
        let n = self.next_name.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{}-{n}", self.instance)
    }

    /// The multiplexed connection, for commands sent straight to it.
    pub(crate) fn commands(&self) -> ConnectionManager {
        self.commands.clone()
    }

    /// A connection of its own for blocking reads, which would otherwise
    /// hold up every command queued behind them on a shared connection.
    pub(crate) async fn blocking(&self) -> Result<BlockingConnection, TransportError> {
        let mut connection = BlockingConnection { manager: None };
        connection.get(self).await?;
        Ok(connection)
    }

    pub(crate) async fn query(&self, cmd: &redis::Cmd) -> Result<Value, TransportError> {
        cmd.query_async(&mut self.commands())
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn run(&self, pipe: &redis::Pipeline) -> Result<(), TransportError> {
        pipe.query_async::<()>(&mut self.commands())
            .await
            .map_err(unavailable)
    }

    /// Adds a reply to `pipe`, capped. `NOMKSTREAM`: a reply to an inbox that
    /// no longer exists (its client gone, its expiry passed) is discarded
    /// rather than creating a stream nobody reads.
    ///
    /// Not `.ignore()`d: the pipelines here are run for their errors only
    /// (which Redis reports either way), and every ignored command costs the
    /// pipeline a hash set insertion.
    pub(crate) fn add_reply(&self, pipe: &mut redis::Pipeline, address: &str, message: &Message) {
        pipe.add_command(xadd_reply(address, message, self.config.inbox_max_len));
    }

    /// The outcome of a command that adds a request, `Ok(None)` for one
    /// that timed out but has run. Sent, unanswered, a request sent again
    /// may run twice: a long stall (Redis stopped, busy, a host gone) had
    /// the client send each call in it several times, every try waiting in
    /// the socket to run (a 30 s stall of the chaos run: 9,843 reruns).
    pub(crate) async fn unless_it_ran<T>(
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
                .query_async::<()>(&mut self.commands())
                .await
            {
                Ok(()) => return true,
                Err(e) if e.is_timeout() => continue,
                Err(_) => return false,
            }
        }
        false
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
pub(crate) struct BlockingConnection {
    manager: Option<ConnectionManager>,
}

impl BlockingConnection {
    /// The connection, made first if the last one timed out.
    async fn get(&mut self, on: &Connection) -> Result<&mut ConnectionManager, TransportError> {
        if self.manager.is_none() {
            // redis-rs times responses out; a blocked read must outlast its BLOCK.
            let timeout = on.config.block + on.config.response_timeout;
            let config = manager_config(&on.config, timeout);
            let manager = on
                .client
                .get_connection_manager_with_config(config)
                .await
                .map_err(unavailable)?;
            self.manager = Some(manager);
        }
        Ok(self.manager.as_mut().expect("made above"))
    }

    /// Runs `cmd`; a timeout drops the connection (see above).
    pub(crate) async fn query(
        &mut self,
        on: &Connection,
        cmd: &redis::Cmd,
    ) -> Result<Result<Value, RedisError>, TransportError> {
        let result = cmd.query_async(self.get(on).await?).await;
        if matches!(&result, Err(e) if e.is_timeout()) {
            self.manager = None;
        }
        Ok(result)
    }
}
