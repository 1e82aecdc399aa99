//! The `redis://` URL and busrpc's own options in it.

use std::time::Duration;

use busrpc_core::TransportError;

/// Where the Redis server is, how to log in, and busrpc's options for the
/// Redis transport: parsed from a URL
/// (`redis://user:password@host:6379/0?claim_idle_ms=5000`) or built with
/// [`RedisConfig::new`] and the setters, and connected with
/// [`RedisTransport::connect_with`](crate::RedisTransport::connect_with).
///
/// Its `Debug` output masks the password, so a configuration can be logged.
///
/// ```
/// use std::time::Duration;
/// use busrpc_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis.internal", 6379)
///     .credentials("app", "p&ss=w@rd%")
///     .db(2)
///     .prefix("billing")
///     .claim_idle(Duration::from_secs(10));
/// assert_eq!(config.password.as_deref(), Some("p&ss=w@rd%"));
/// assert!(!format!("{config:?}").contains("p&ss"), "Debug masks the password");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server's host name or IP address (default `127.0.0.1`).
    pub host: String,
    /// The server's port (default 6379).
    pub port: u16,
    /// The database number (the URL's path, `/2`; default 0).
    pub db: i64,
    /// The ACL user (`AUTH user password`); `None` with a password: the
    /// `default` user.
    pub username: Option<String>,
    /// The password; masked in `Debug` output.
    pub password: Option<String>,
    /// TLS (`rediss://`); needs busrpc-redis's feature `tls`.
    pub tls: bool,
    /// With TLS, skip checking the certificate's host name (`#insecure`,
    /// or `insecure=true`): for a test server's self-signed certificate.
    pub tls_insecure: bool,
    /// RESP3 (`protocol=resp3`) instead of RESP2.
    pub resp3: bool,
    /// `prefix`: the first part of every key busrpc writes (default `busrpc`).
    /// Requests of service `S` go to the stream `{prefix}:S`.
    pub prefix: String,
    /// `name`: what this process's servers are called in their groups: the
    /// consumer of its first server is `name`, of the next `name-2`, …
    /// (see [`busrpc_core::transport::member_name`]); what
    /// `ServerHandle::name` and `Context::server_name` say. Default (`None`):
    /// `{host}-{pid}`. Must differ between processes.
    pub name: Option<String>,
    /// `claim_idle_ms`: how long a request may stay pending with a consumer
    /// that stopped before a live server claims it (default 5000, see
    /// [`DEFAULT_CLAIM_IDLE`]): the time a dead server's requests wait. A live server keeps what it holds
    /// every `claim_idle_ms / 3`, so handlers may run longer than this; a
    /// server back from a Redis outage claims nothing for this long, so
    /// that its peers keep what they held through it.
    pub claim_idle: Duration,
    /// `dead_consumer_idle_ms`: a consumer of a service's group that has
    /// not touched Redis for this long and has nothing pending (a server
    /// killed with -9, whose requests live servers have claimed) is
    /// removed from the group by a live server, so that the group lists
    /// only the living (default 60000; 0: never). A live server reads every
    /// `block_ms` and refreshes what it holds every `claim_idle_ms / 3`,
    /// and one removed by mistake is added back by its next read, losing
    /// nothing: only a consumer without pending entries is removed.
    pub dead_consumer_idle: Duration,
    /// `max_deliveries`: after this many deliveries without an answer, a
    /// request is moved to the dead-letter stream `{prefix}:S:dead` and its
    /// caller answered with an error (default 5).
    pub max_deliveries: u64,
    /// `inbox_max_len`: a reply inbox is capped near this many entries
    /// (`MAXLEN ~`, default 10000).
    pub inbox_max_len: u64,
    /// `inbox_ttl_ms`: an inbox expires this long after its client stops
    /// refreshing it (default 60000), so an abandoned inbox disappears.
    pub inbox_ttl: Duration,
    /// `block_ms`: how long one blocking read waits (default 1000). Latency
    /// does not depend on it (a blocked read returns as soon as an entry
    /// arrives); it bounds how often idle consumers poll.
    pub block: Duration,
    /// `read_count`: most entries one read takes (default 64).
    pub read_count: u64,
    /// `queue_max_len`: a request stream holds at most this many entries
    /// (default 1000000); a publish beyond it fails with `Rejected`, and
    /// nothing admitted is evicted. Answered requests are trimmed as they
    /// are acknowledged, so the bound is reached only by a backlog no
    /// server drains.
    pub queue_max_len: u64,
    /// `response_timeout_ms`: how long a non-blocking command may take before
    /// it fails (default 5000).
    pub response_timeout: Duration,
    /// `tls_ca_file`: for `rediss://`, a PEM file of the certificate
    /// authority to trust instead of the platform's roots (a private CA, a
    /// self-signed server).
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self::new("127.0.0.1", 6379)
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("tls_insecure", &self.tls_insecure)
            .field("resp3", &self.resp3)
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .field("claim_idle", &self.claim_idle)
            .field("dead_consumer_idle", &self.dead_consumer_idle)
            .field("max_deliveries", &self.max_deliveries)
            .field("inbox_max_len", &self.inbox_max_len)
            .field("inbox_ttl", &self.inbox_ttl)
            .field("block", &self.block)
            .field("read_count", &self.read_count)
            .field("queue_max_len", &self.queue_max_len)
            .field("response_timeout", &self.response_timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Every option a `redis://` URL may carry, as docs/CONFIGURATION.md lists
/// them (a test holds the two together); any other is refused, naming
/// these.
pub const URL_OPTIONS: &[&str] = &[
    "prefix",
    "name",
    "claim_idle_ms",
    "dead_consumer_idle_ms",
    "max_deliveries",
    "inbox_max_len",
    "inbox_ttl_ms",
    "block_ms",
    "read_count",
    "queue_max_len",
    "response_timeout_ms",
    "tls_ca_file",
    "protocol",
    "insecure",
];

/// The default `claim_idle_ms`: 5 s. A killed server's requests are
/// claimed 3.3–7.5 s after it died (idle 0–1.7 s at the kill, as its
/// keep-alive runs every third; then the claim scan every 2.5 s), well
/// inside a client's default 30 s timeout, so nothing is lost with every
/// default. 30 s, the old default, lost the calls a killed server held:
/// they became claimable 20–35 s after the kill, when their callers had
/// given up (5 of 2,880 calls in the run that found it). Shorter costs a
/// keep-alive `XCLAIM` per server more often and claims the requests of a
/// server that could not reach Redis for longer than this (run twice,
/// as at-least-once allows).
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(5);

fn invalid(url: &str, reason: impl Into<String>) -> TransportError {
    TransportError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

/// `text` percent-decoded, which must give UTF-8.
fn decode(url: &str, text: &str) -> Result<String, TransportError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| invalid(url, "a percent-escape in it does not decode to UTF-8"))
}

impl RedisConfig {
    /// busrpc's defaults for the server at `host:port`, no password, no TLS.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            db: 0,
            username: None,
            password: None,
            tls: false,
            tls_insecure: false,
            resp3: false,
            prefix: "busrpc".to_owned(),
            name: None,
            claim_idle: DEFAULT_CLAIM_IDLE,
            dead_consumer_idle: Duration::from_secs(60),
            max_deliveries: 5,
            inbox_max_len: 10_000,
            inbox_ttl: Duration::from_secs(60),
            block: Duration::from_secs(1),
            read_count: 64,
            queue_max_len: 1_000_000,
            response_timeout: Duration::from_secs(5),
            tls_ca_file: None,
        }
    }

    /// Parses `redis://[[user]:password@]host[:port][/db][?options]` (or
    /// `rediss://` for TLS). The user and password are percent-decoded, as
    /// are option values (`%26` for '&', `%40` for '@', `%25` for '%').
    /// Unknown options are an error, so a typo does not go unnoticed.
    pub fn from_url(url: &str) -> Result<Self, TransportError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            invalid(
                url,
                format!("{e}; expected redis://[user:password@]host:port[/db][?options] (percent-encode '@', ':', '/', '%' in a password)"),
            )
        })?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            _ => {
                return Err(invalid(
                    url,
                    "expected redis://host:port[/db][?options] or rediss://...",
                ))
            }
        };
        if tls && !cfg!(feature = "tls") {
            return Err(invalid(
                url,
                "rediss:// needs the cargo feature `tls` of busrpc-redis",
            ));
        }
        // As the redis crate has it: an IPv6 address without brackets.
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid(url, "no host")),
        };
        let mut config = Self::new(host, parsed.port().unwrap_or(6379));
        config.tls = tls;
        config.db = match parsed.path().trim_matches('/') {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| invalid(url, format!("the database must be a number, got {db:?}")))?,
        };
        if !parsed.username().is_empty() {
            config.username = Some(decode(url, parsed.username())?);
        }
        if let Some(password) = parsed.password() {
            config.password = Some(decode(url, password)?);
        }
        match parsed.fragment() {
            None => {}
            Some("insecure") => config.tls_insecure = true,
            Some(other) => {
                return Err(invalid(
                    url,
                    format!("unknown fragment #{other}: only #insecure is"),
                ))
            }
        }
        for pair in parsed
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (decode(url, key)?, decode(url, value)?);
            let (key, value) = (key.as_str(), value.as_str());
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    invalid(url, format!("{key} must be a whole number, got {value:?}"))
                })
            };
            let millis = || number().map(Duration::from_millis);
            let unknown = || {
                invalid(
                    url,
                    format!(
                        "unknown option {key:?}; the options are {}",
                        URL_OPTIONS.join(", ")
                    ),
                )
            };
            if !URL_OPTIONS.contains(&key) {
                return Err(unknown());
            }
            match key {
                "prefix" => config.prefix = value.to_owned(),
                "name" if value.is_empty() => return Err(invalid(url, "name must not be empty")),
                "name" => config.name = Some(value.to_owned()),
                "claim_idle_ms" => config.claim_idle = millis()?,
                "dead_consumer_idle_ms" => config.dead_consumer_idle = millis()?,
                "max_deliveries" => config.max_deliveries = number()?.max(1),
                "inbox_max_len" => config.inbox_max_len = number()?.max(1),
                "inbox_ttl_ms" => config.inbox_ttl = millis()?.max(Duration::from_millis(100)),
                "block_ms" => config.block = millis()?.max(Duration::from_millis(1)),
                "read_count" => config.read_count = number()?.max(1),
                "queue_max_len" => config.queue_max_len = number()?.max(1),
                "response_timeout_ms" => config.response_timeout = millis()?,
                "tls_ca_file" if !value.is_empty() => config.tls_ca_file = Some(value.into()),
                "protocol" => {
                    config.resp3 = match value.to_ascii_lowercase().as_str() {
                        "resp2" | "2" => false,
                        "resp3" | "3" => true,
                        _ => {
                            return Err(invalid(
                                url,
                                format!("protocol must be resp2 or resp3, got {value:?}"),
                            ))
                        }
                    }
                }
                "insecure" => config.tls_insecure = !matches!(value, "false" | "0"),
                _ => return Err(unknown()),
            }
        }
        config.check().map_err(|reason| invalid(url, reason))?;
        Ok(config)
    }

    /// What is wrong with these settings, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ']) {
            return Err(format!(
                "prefix {:?} must be non-empty, without spaces or braces",
                self.prefix
            ));
        }
        if self.host.is_empty() {
            return Err("no host".into());
        }
        if self.username.is_some() && self.password.is_none() {
            return Err("a user needs a password (user:password@host)".into());
        }
        Ok(())
    }

    /// Sets [`db`](Self::db).
    #[must_use]
    pub fn db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Logs in as the ACL user `username` with `password`.
    #[must_use]
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Logs in as the `default` user with `password` (`requirepass`).
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.username = None;
        self.password = Some(password.into());
        self
    }

    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`tls_ca_file`](Self::tls_ca_file) (and turns TLS on).
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls = true;
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Sets [`prefix`](Self::prefix) (checked when connecting).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`name`](Self::name).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`claim_idle`](Self::claim_idle).
    #[must_use]
    pub fn claim_idle(mut self, idle: Duration) -> Self {
        self.claim_idle = idle;
        self
    }

    /// Sets [`dead_consumer_idle`](Self::dead_consumer_idle) (zero: dead
    /// consumers are never removed).
    #[must_use]
    pub fn dead_consumer_idle(mut self, idle: Duration) -> Self {
        self.dead_consumer_idle = idle;
        self
    }

    /// Sets [`max_deliveries`](Self::max_deliveries) (at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, max: u64) -> Self {
        self.max_deliveries = max.max(1);
        self
    }

    /// Sets [`inbox_max_len`](Self::inbox_max_len) (at least 1).
    #[must_use]
    pub fn inbox_max_len(mut self, len: u64) -> Self {
        self.inbox_max_len = len.max(1);
        self
    }

    /// Sets [`inbox_ttl`](Self::inbox_ttl) (at least 100 ms).
    #[must_use]
    pub fn inbox_ttl(mut self, ttl: Duration) -> Self {
        self.inbox_ttl = ttl.max(Duration::from_millis(100));
        self
    }

    /// Sets [`block`](Self::block) (at least 1 ms).
    #[must_use]
    pub fn block(mut self, block: Duration) -> Self {
        self.block = block.max(Duration::from_millis(1));
        self
    }

    /// Sets [`read_count`](Self::read_count) (at least 1).
    #[must_use]
    pub fn read_count(mut self, count: u64) -> Self {
        self.read_count = count.max(1);
        self
    }

    /// Sets [`queue_max_len`](Self::queue_max_len) (at least 1).
    #[must_use]
    pub fn queue_max_len(mut self, len: u64) -> Self {
        self.queue_max_len = len.max(1);
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The redis crate's description of where to connect and how to log in.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, String> {
        use redis::IntoConnectionInfo;
        let addr = if self.tls {
            #[cfg(feature = "tls")]
            {
                redis::ConnectionAddr::TcpTls {
                    host: self.host.clone(),
                    port: self.port,
                    insecure: self.tls_insecure,
                    tls_params: None,
                }
            }
            #[cfg(not(feature = "tls"))]
            return Err("TLS needs the cargo feature `tls` of busrpc-redis".into());
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let mut login = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            login = login.set_username(username);
        }
        if let Some(password) = &self.password {
            login = login.set_password(password);
        }
        if self.resp3 {
            login = login.set_protocol(redis::ProtocolVersion::RESP3);
        }
        let info = addr.into_connection_info().map_err(|e| e.to_string())?;
        Ok(info.set_redis_settings(login))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read() {
        let c = RedisConfig::from_url(
            "redis://u:p@h:6380/2?claim_idle_ms=500&max_deliveries=3&prefix=app&protocol=resp3&dead_consumer_idle_ms=0",
        )
        .unwrap();
        assert_eq!(c.dead_consumer_idle, Duration::ZERO);
        assert_eq!((c.host.as_str(), c.port, c.db), ("h", 6380, 2));
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("p"))
        );
        assert!(c.resp3 && !c.tls);
        assert_eq!(c.claim_idle, Duration::from_millis(500));
        assert_eq!((c.max_deliveries, c.prefix.as_str()), (3, "app"));
        assert_eq!(
            RedisConfig::from_url("redis://127.0.0.1:6379").unwrap(),
            RedisConfig::default()
        );
        let c = RedisConfig::from_url("redis://[::1]/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 6379));
        let c = RedisConfig::from_url("redis://:only-a-password@h").unwrap();
        assert_eq!(
            (c.username, c.password.as_deref()),
            (None, Some("only-a-password"))
        );
    }

    #[test]
    fn user_password_and_options_are_percent_decoded() {
        // '&', '=', '@' and '%' in a password, and in an option's value.
        let c = RedisConfig::from_url(
            "redis://app%3Auser:p%26ss%3Dw%40rd%25@h:1/0?tls_ca_file=%2Fca%26b.pem&prefix=a%2Bb",
        )
        .unwrap();
        assert_eq!(c.username.as_deref(), Some("app:user"));
        assert_eq!(c.password.as_deref(), Some("p&ss=w@rd%"));
        assert_eq!(c.tls_ca_file, Some("/ca&b.pem".into()));
        assert_eq!(c.prefix, "a+b", "'+' is not a space");
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("p&ss=w@rd%"));
        assert_eq!(info.redis_settings().username(), Some("app:user"));
    }

    #[test]
    fn the_password_is_masked_in_debug_output_and_errors() {
        let c = RedisConfig::from_url("redis://app:hunter2@h:1").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains(r#"password: Some("***")"#), "{shown}");
        let err = RedisConfig::from_url("redis://app:hunter2@h:1?claim_idle=5").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let built = RedisConfig::new("h", 1).credentials("app", "hunter2");
        assert!(!format!("{built:?}").contains("hunter2"));
    }

    #[test]
    fn the_builder_gives_what_the_url_gives() {
        let parsed = RedisConfig::from_url(
            "redis://app:pw@cache:6380/3?prefix=billing&claim_idle_ms=10000&max_deliveries=2&block_ms=50",
        )
        .unwrap();
        let built = RedisConfig::new("cache", 6380)
            .credentials("app", "pw")
            .db(3)
            .prefix("billing")
            .claim_idle(Duration::from_secs(10))
            .max_deliveries(2)
            .block(Duration::from_millis(50));
        assert_eq!(parsed, built);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("kafka://x", "expected redis://"),
            ("redis://h?claim_idle=5", "unknown option \"claim_idle\""),
            ("redis://h?block_ms=soon", "block_ms must be a whole number"),
            ("redis://h?prefix=", "prefix \"\" must be non-empty"),
            ("redis://h/x", "the database must be a number"),
            (
                "redis://h?protocol=resp4",
                "protocol must be resp2 or resp3",
            ),
            ("redis://app@h", "a user needs a password"),
            ("redis://h?prefix=%FF", "does not decode to UTF-8"),
            ("redis://h#secure", "only #insecure"),
        ] {
            let err = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
