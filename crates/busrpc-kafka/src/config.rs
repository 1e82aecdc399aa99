//! `kafka://` and `kafka-mock://` URLs.

use busrpc_core::TransportError;

/// Where the brokers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Brokers {
    /// `kafka://host:port[,host:port...]`: a real cluster (Apache Kafka,
    /// Redpanda, Tansu, ...).
    Bootstrap(String),
    /// `kafka-mock://[NAME]`: librdkafka's in-process mock cluster, shared by
    /// every transport of this process that names it. No broker needed.
    Mock {
        /// The cluster's name in this process (empty for the default).
        name: String,
        /// How many mock brokers (`brokers=N`, default 1).
        brokers: i32,
    },
}

/// Where a client reads its replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxMode {
    /// `inbox=topic`: a topic of its own, created when the client connects
    /// and deleted when it closes (or by the servers once abandoned). It
    /// reads only its own replies.
    Topic,
    /// `inbox=shared`: one partition of the reply topic
    /// `{prefix}.inbox.shared`, shared by every client of the prefix that
    /// asks for it, with `partitions` partitions
    /// (`shared_inbox_partitions`, default 16). Nothing is created or
    /// deleted per client, for fleets of short-lived clients; the price is
    /// that each client reads (and skips) the replies to every other client
    /// on its partition.
    Shared {
        /// Partitions of the shared reply topic, when busrpc creates it.
        partitions: i32,
    },
}

/// Which wire format a Kafka transport speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// `dialect=busrpc` (the default): busrpc's own (docs/PROTOCOL.md),
    /// spoken by [`KafkaTransport`](crate::KafkaTransport).
    #[default]
    Busrpc,
    /// `dialect=pipeline`: the wire format of the Python library busrpc
    /// grew out of, spoken by [`PipelineTransport`](crate::PipelineTransport):
    /// requests on `S_method_requests`, replies on `method_results`,
    /// MessagePack, no headers (docs/PROTOCOL.md, "The pipeline dialect").
    Pipeline {
        /// `pipeline_group` (default `default`, the Python receivers' own):
        /// the consumer group whose committed offset on `S_method_requests`
        /// a server resumes from and commits to, so that a busrpc server
        /// takes over where a Python receiver stopped, and the other way.
        group: String,
    },
}

/// busrpc's Kafka options. Query keys busrpc does not know go to librdkafka
/// as they are (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`,
/// `fetch.wait.max.ms`, ...), so anything librdkafka can do is one URL away.
///
/// Its `Debug` output masks the values of librdkafka settings that hold
/// secrets (`sasl.password`, `ssl.key.password`, ...; see
/// [`is_secret_option`](busrpc_core::transport::is_secret_option)), so a
/// configuration can be logged.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// The brokers.
    pub brokers: Brokers,
    /// `prefix`: request topics are `{prefix}.{service}`, inboxes
    /// `{prefix}.inbox.{created_ms}.{retention_ms}.{owner}` (default `busrpc`).
    pub prefix: String,
    /// `partitions`: partitions of the request topics busrpc creates
    /// (default 8). Servers of a service share its partitions, so at most this
    /// many instances of a service do work at once.
    pub partitions: i32,
    /// `replication`: replication factor of the topics busrpc creates (default 1).
    pub replication: i32,
    /// `inbox_retention_ms`: how long replies stay in an inbox topic (default
    /// 3600000), and how long an inbox topic may stand still before servers
    /// take its client for gone and delete it. Live clients write a
    /// keep-alive record every quarter of it; servers sweep as often.
    pub inbox_retention_ms: u64,
    /// `inbox`: where a client reads its replies (default `topic`).
    pub inbox: InboxMode,
    /// `join_wait_ms`: how long joining a service's consumer group may hold
    /// up a server's start (default 30000). Starting returns once the group
    /// has given the new member its share of the partitions, so servers
    /// started one after another join one after another, and a server that
    /// has started is serving. `0` returns at once and joins in the background.
    pub join_wait: std::time::Duration,
    /// `max_deliveries`: how often a request may be delivered (default 5),
    /// deliveries to a server process that died counted, before it is moved
    /// to the dead-letter topic `{prefix}.{service}.dead` and its caller
    /// answered -32001, as on Redis. Needs a broker that keeps commit
    /// metadata (Kafka does; Tansu 0.6.0 does not).
    pub max_deliveries: u32,
    /// `dialect`: the wire format (default [`Dialect::Busrpc`]).
    pub dialect: Dialect,
    /// Everything passed to librdkafka, busrpc's defaults first, then the URL's.
    pub librdkafka: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let librdkafka: Vec<(&str, &str)> = self
            .librdkafka
            .iter()
            .map(|(key, value)| {
                let shown = if busrpc_core::transport::is_secret_option(key) {
                    "***"
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("inbox_retention_ms", &self.inbox_retention_ms)
            .field("inbox", &self.inbox)
            .field("join_wait", &self.join_wait)
            .field("max_deliveries", &self.max_deliveries)
            .field("dialect", &self.dialect)
            .field("librdkafka", &librdkafka)
            .finish()
    }
}

/// busrpc's librdkafka defaults, chosen for RPC latency; each can be
/// overridden from the URL.
pub const LIBRDKAFKA_DEFAULTS: &[(&str, &str)] = &[
    // Send at once: an RPC waits for every message.
    ("linger.ms", "0"),
    // Brokers that hold a fetch for its full wait (Tansu 0.6, the mock
    // cluster) answer in about twice this; real Kafka answers as soon as
    // data arrives, so a small value only costs idle polls.
    ("fetch.wait.max.ms", "10"),
    // A dead server's partitions move to its peers after this.
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    // A reply or request that cannot be delivered fails within this.
    ("message.timeout.ms", "30000"),
    ("socket.nagle.disable", "true"),
    // Only a server creates its service's request topic: a request to a
    // service nobody serves (a typo) fails, instead of creating its topic
    // on a broker with auto.create.topics.enable (Kafka's default) and
    // waiting for its timeout. librdkafka's default is true for producers.
    ("allow.auto.create.topics", "false"),
];

impl Brokers {
    /// `bootstrap.servers` for these brokers, starting (or joining) the mock
    /// cluster for [`Brokers::Mock`]; the cluster is returned to be kept alive.
    pub(crate) fn resolve(
        &self,
    ) -> Result<(String, Option<std::sync::Arc<crate::MockBrokers>>), TransportError> {
        match self {
            Brokers::Bootstrap(servers) => Ok((servers.clone(), None)),
            Brokers::Mock { name, brokers } => {
                let mock = crate::MockBrokers::named(name, *brokers)?;
                Ok((mock.bootstrap_servers().to_owned(), Some(mock)))
            }
        }
    }
}

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

/// `key=value` with the value masked if the key names a secret.
fn redact_option(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) if busrpc_core::transport::is_secret_option(key) => format!("{key}=***"),
        _ => pair.to_owned(),
    }
}

/// A SASL mechanism (`sasl.mechanism`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN`: the password as it is, so only over TLS outside a test.
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
    /// Any other mechanism librdkafka knows, by its name.
    Named(String),
}

impl SaslMechanism {
    /// librdkafka's name of it.
    pub fn name(&self) -> &str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::Named(name) => name,
        }
    }

    fn into_name(self) -> String {
        match self {
            Self::Named(name) => name,
            known => known.name().to_owned(),
        }
    }
}

impl KafkaConfig {
    /// Parses `kafka://[user:password@]host:port[,host:port...][?options]`
    /// or `kafka-mock://[NAME][?options]`. Option keys and values, the user
    /// and the password are percent-decoded (`%26` for '&', `%3D` for '=',
    /// `%25` for '%'; a '@' in the password needs none). A user and
    /// password mean SASL: `sasl.username` and `sasl.password`, with
    /// `sasl.mechanism` `PLAIN` and `security.protocol` `SASL_PLAINTEXT`
    /// unless the options name others (`security.protocol=SASL_SSL`,
    /// `sasl.mechanism=SCRAM-SHA-512`).
    pub fn from_url(url: &str) -> Result<Self, TransportError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid(
                url,
                "expected kafka://host:port[,host:port...] or kafka-mock://",
            )
        })?;
        if scheme == "kafka-mock" && !cfg!(feature = "mock") {
            return Err(invalid(
                url,
                "kafka-mock:// needs the cargo feature `mock` of busrpc-kafka (`kafka-mock` of busrpc)",
            ));
        }
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        // The last '@': hosts hold none, so one in a password needs no escape.
        let (credentials, authority) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, authority),
        };
        let mut mock_brokers = 1;
        let mut shared = false;
        let mut shared_partitions = 16;
        let mut pipeline = false;
        let mut pipeline_group = None;
        let mut config = KafkaConfig::new("");
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                invalid(
                    url,
                    format!("option {:?} needs a value: key=value", redact_option(pair)),
                )
            })?;
            // Percent-decoded, so that a value may hold '&', '=' or '%'
            // (a password: `sasl.password=a%26b`); '+' stays a '+'.
            let (key, value) = (decode(url, key)?, decode(url, value)?);
            let (key, value) = (key.as_str(), value.as_str());
            let number = || {
                value.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(
                        url,
                        format!("{key} must be a positive whole number, got {value:?}"),
                    )
                })
            };
            match key {
                "prefix" => config.prefix = value.to_owned(),
                "partitions" => config.partitions = i32::try_from(number()?).unwrap_or(i32::MAX),
                "replication" => config.replication = i32::try_from(number()?).unwrap_or(i32::MAX),
                "inbox_retention_ms" => config.inbox_retention_ms = number()?.unsigned_abs(),
                "inbox" => {
                    shared = match value {
                        "topic" => false,
                        "shared" => true,
                        _ => return Err(invalid(url, format!("inbox must be topic or shared, got {value:?}"))),
                    }
                }
                "shared_inbox_partitions" => shared_partitions = i32::try_from(number()?).unwrap_or(i32::MAX),
                "max_deliveries" => config.max_deliveries = u32::try_from(number()?).unwrap_or(u32::MAX),
                "join_wait_ms" => {
                    let ms = value.parse::<u64>().map_err(|_| {
                        invalid(url, format!("join_wait_ms must be a whole number of milliseconds, got {value:?}"))
                    })?;
                    config.join_wait = std::time::Duration::from_millis(ms);
                }
                "dialect" => {
                    pipeline = match value {
                        "busrpc" => false,
                        "pipeline" => true,
                        _ => return Err(invalid(url, format!("dialect must be busrpc or pipeline, got {value:?}"))),
                    }
                }
                "pipeline_group" if value.is_empty() => return Err(invalid(url, "pipeline_group is empty")),
                "pipeline_group" => pipeline_group = Some(value.to_owned()),
                "brokers" if scheme == "kafka-mock" => mock_brokers = i32::try_from(number()?).unwrap_or(1),
                _ if key.contains('.') => config = config.option(key, value),
                _ => {
                    return Err(invalid(
                        url,
                        format!("unknown option {key:?} (librdkafka's options contain a dot, like fetch.wait.max.ms)"),
                    ))
                }
            }
        }
        match (pipeline, pipeline_group) {
            (true, group) => {
                config.dialect = Dialect::Pipeline {
                    group: group.unwrap_or_else(|| "default".to_owned()),
                }
            }
            (false, Some(_)) => return Err(invalid(url, "pipeline_group needs dialect=pipeline")),
            (false, None) => {}
        }
        if shared {
            config.inbox = InboxMode::Shared {
                partitions: shared_partitions,
            };
        }
        config.brokers = match scheme {
            "kafka" if !authority.is_empty() => Brokers::Bootstrap(authority.to_owned()),
            "kafka" => return Err(invalid(url, "no brokers: kafka://host:port[,host:port...]")),
            "kafka-mock" if credentials.is_some() => {
                return Err(invalid(url, "kafka-mock:// takes no user or password"))
            }
            "kafka-mock" => Brokers::Mock {
                name: authority.trim_end_matches('/').to_owned(),
                brokers: mock_brokers,
            },
            _ => return Err(invalid(url, "expected kafka:// or kafka-mock://")),
        };
        if let Some(credentials) = credentials {
            let (user, password) = credentials.split_once(':').ok_or_else(|| {
                invalid(
                    url,
                    "credentials are user:password (SASL); percent-encode a ':' in the user",
                )
            })?;
            let (user, password) = (decode(url, user)?, decode(url, password)?);
            if user.is_empty() {
                return Err(invalid(url, "the user before ':' is empty"));
            }
            let given = ["sasl.username", "sasl.password"];
            if let Some(key) = given.iter().find(|k| config.librdkafka_value(k).is_some()) {
                return Err(invalid(
                    url,
                    format!("credentials given twice: before the '@' and as {key}"),
                ));
            }
            // SASL/PLAIN unless the URL names another mechanism.
            let mechanism = match config.librdkafka_value("sasl.mechanism") {
                Some(named) => SaslMechanism::Named(named.to_owned()),
                None => SaslMechanism::Plain,
            };
            config = config.sasl(mechanism, user, password);
        }
        config.check().map_err(|reason| invalid(url, reason))?;
        Ok(config)
    }

    /// busrpc's defaults for the cluster at `bootstrap_servers`
    /// (`host:port[,host:port...]`), to adjust with the setters below and
    /// connect with
    /// [`KafkaTransport::connect_with`](crate::KafkaTransport::connect_with).
    ///
    /// ```
    /// use busrpc_kafka::{KafkaConfig, SaslMechanism};
    ///
    /// let config = KafkaConfig::new("broker-1:9093,broker-2:9093")
    ///     .prefix("billing")
    ///     .partitions(16)
    ///     .sasl(SaslMechanism::ScramSha512, "app", "p&ss=w@rd%")
    ///     .tls()
    ///     .option("ssl.ca.location", "/etc/ssl/private-ca.pem");
    /// assert_eq!(config.librdkafka_value("security.protocol"), Some("SASL_SSL"));
    /// assert!(!format!("{config:?}").contains("p&ss"), "Debug masks the password");
    /// ```
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            brokers: Brokers::Bootstrap(bootstrap_servers.into()),
            prefix: "busrpc".to_owned(),
            partitions: 8,
            replication: 1,
            inbox_retention_ms: 3_600_000,
            inbox: InboxMode::Topic,
            join_wait: std::time::Duration::from_secs(30),
            max_deliveries: 5,
            dialect: Dialect::Busrpc,
            librdkafka: LIBRDKAFKA_DEFAULTS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// busrpc's defaults for librdkafka's in-process mock cluster `name`
    /// (see [`Brokers::Mock`]), of `brokers` brokers.
    #[cfg(feature = "mock")]
    pub fn mock(name: impl Into<String>, brokers: i32) -> Self {
        let mut config = Self::new("");
        config.brokers = Brokers::Mock {
            name: name.into(),
            brokers: brokers.max(1),
        };
        config
    }

    /// Sets [`prefix`](Self::prefix): letters, digits, '.', '_' and '-'
    /// (checked when connecting).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets [`partitions`](Self::partitions) (at least 1).
    #[must_use]
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Sets [`replication`](Self::replication) (at least 1).
    #[must_use]
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication.max(1);
        self
    }

    /// Sets [`inbox_retention_ms`](Self::inbox_retention_ms).
    #[must_use]
    pub fn inbox_retention(mut self, retention: std::time::Duration) -> Self {
        self.inbox_retention_ms = u64::try_from(retention.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self
    }

    /// Sets [`inbox`](Self::inbox).
    #[must_use]
    pub fn inbox(mut self, inbox: InboxMode) -> Self {
        self.inbox = inbox;
        self
    }

    /// Sets [`join_wait`](Self::join_wait).
    #[must_use]
    pub fn join_wait(mut self, wait: std::time::Duration) -> Self {
        self.join_wait = wait;
        self
    }

    /// Sets [`max_deliveries`](Self::max_deliveries) (at least 1).
    #[must_use]
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.max_deliveries = max.max(1);
        self
    }

    /// Sets [`dialect`](Self::dialect).
    #[must_use]
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// Sets a librdkafka option (`fetch.wait.max.ms`, `ssl.ca.location`,
    /// ...), replacing busrpc's default or an earlier value. librdkafka
    /// checks it when the transport connects.
    #[must_use]
    pub fn option(mut self, key: &str, value: impl Into<String>) -> Self {
        self.librdkafka.retain(|(k, _)| k != key);
        self.librdkafka.push((key.to_owned(), value.into()));
        self
    }

    /// Authenticates with SASL as `username`: sets `sasl.mechanism`,
    /// `sasl.username`, `sasl.password`, and `security.protocol` to
    /// `SASL_SSL` after [`tls`](Self::tls), else `SASL_PLAINTEXT`. PLAIN
    /// is built into librdkafka; SCRAM needs OpenSSL in it (busrpc-kafka's
    /// feature `ssl`, `kafka-ssl` of busrpc) and GSSAPI needs libsasl2
    /// (`sasl`, `kafka-sasl`), or librdkafka refuses the mechanism when the
    /// transport connects.
    #[must_use]
    pub fn sasl(
        self,
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        let tls = self.uses_tls();
        self.option("sasl.mechanism", mechanism.into_name())
            .option("sasl.username", username)
            .option("sasl.password", password)
            .option(
                "security.protocol",
                if tls { "SASL_SSL" } else { "SASL_PLAINTEXT" },
            )
    }

    /// Speaks TLS to the brokers: `security.protocol` becomes `SSL`, or
    /// `SASL_SSL` with [`sasl`](Self::sasl). Needs busrpc-kafka's feature
    /// `ssl` (`kafka-ssl` of busrpc). Trust a private CA with
    /// `.option("ssl.ca.location", path)`.
    #[must_use]
    pub fn tls(self) -> Self {
        let sasl = self
            .librdkafka_value("security.protocol")
            .is_some_and(|p| p.to_ascii_uppercase().starts_with("SASL"));
        self.option("security.protocol", if sasl { "SASL_SSL" } else { "SSL" })
    }

    fn uses_tls(&self) -> bool {
        self.librdkafka_value("security.protocol")
            .is_some_and(|p| p.to_ascii_uppercase().ends_with("SSL"))
    }

    /// What is wrong with these settings, if anything librdkafka does not
    /// check itself.
    pub(crate) fn check(&self) -> Result<(), String> {
        let prefix_ok = !self.prefix.is_empty()
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !prefix_ok {
            return Err(format!(
                "prefix {:?} may hold only letters, digits, '.', '_' and '-'",
                self.prefix
            ));
        }
        if matches!(&self.brokers, Brokers::Bootstrap(servers) if servers.is_empty()) {
            return Err("no brokers: give host:port[,host:port...]".into());
        }
        Ok(())
    }

    /// The value librdkafka will get for `key`.
    pub fn librdkafka_value(&self, key: &str) -> Option<&str> {
        self.librdkafka
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_lists_and_options() {
        let c = KafkaConfig::from_url(
            "kafka://a:9092,b:9092?partitions=3&prefix=app&security.protocol=ssl&fetch.wait.max.ms=100&join_wait_ms=0",
        )
        .unwrap();
        assert_eq!(c.join_wait, std::time::Duration::ZERO);
        assert_eq!(
            KafkaConfig::from_url("kafka://a:9092").unwrap().join_wait,
            std::time::Duration::from_secs(30)
        );
        assert_eq!(c.brokers, Brokers::Bootstrap("a:9092,b:9092".into()));
        assert_eq!((c.partitions, c.prefix.as_str()), (3, "app"));
        assert_eq!(c.librdkafka_value("security.protocol"), Some("ssl"));
        assert_eq!(
            c.librdkafka_value("fetch.wait.max.ms"),
            Some("100"),
            "the URL overrides the default"
        );
        assert_eq!(c.librdkafka_value("linger.ms"), Some("0"));
        assert_eq!((c.inbox, c.max_deliveries), (InboxMode::Topic, 5));
    }

    #[test]
    fn the_pipeline_dialect_is_chosen_by_the_url() {
        let default = KafkaConfig::from_url("kafka://a:9092").unwrap();
        assert_eq!(default.dialect, Dialect::Busrpc);
        let pipeline = KafkaConfig::from_url("kafka://a:9092?dialect=pipeline").unwrap();
        assert_eq!(
            pipeline.dialect,
            Dialect::Pipeline {
                group: "default".into()
            }
        );
        let grouped =
            KafkaConfig::from_url("kafka://a:9092?pipeline_group=receivers&dialect=pipeline")
                .unwrap();
        assert_eq!(
            grouped.dialect,
            Dialect::Pipeline {
                group: "receivers".into()
            }
        );
        for (url, says) in [
            (
                "kafka://a:9092?dialect=python",
                "dialect must be busrpc or pipeline",
            ),
            (
                "kafka://a:9092?pipeline_group=x",
                "pipeline_group needs dialect=pipeline",
            ),
            (
                "kafka://a:9092?dialect=pipeline&pipeline_group=",
                "pipeline_group is empty",
            ),
        ] {
            let err = KafkaConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn debug_output_masks_secret_settings() {
        let c = KafkaConfig::from_url(
            "kafka://a:9092?security.protocol=SASL_SSL&sasl.username=app&sasl.password=hunter2&ssl.key.password=k3y",
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y"),
            "{shown}"
        );
        assert!(shown.contains(r#"("sasl.password", "***")"#), "{shown}");
        assert!(shown.contains(r#"("sasl.username", "app")"#), "{shown}");
        assert!(shown.contains(r#"("linger.ms", "0")"#), "{shown}");
        // The value itself is kept for librdkafka.
        assert_eq!(c.librdkafka_value("sasl.password"), Some("hunter2"));
    }

    #[test]
    fn credentials_and_values_are_percent_decoded() {
        // '&', '=', '@' and '%' in the password; a ':' in the user escaped.
        let c = KafkaConfig::from_url("kafka://app%3Aone:p%26ss%3Dw@rd%25@a:9092,b:9092").unwrap();
        assert_eq!(c.brokers, Brokers::Bootstrap("a:9092,b:9092".into()));
        assert_eq!(c.librdkafka_value("sasl.username"), Some("app:one"));
        assert_eq!(c.librdkafka_value("sasl.password"), Some("p&ss=w@rd%"));
        assert_eq!(c.librdkafka_value("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(
            c.librdkafka_value("security.protocol"),
            Some("SASL_PLAINTEXT")
        );
        // The same as options, in any order, with TLS and SCRAM named.
        let c = KafkaConfig::from_url(
            "kafka://app:p%26ss%3Dw%40rd%25@a:9092?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512",
        )
        .unwrap();
        assert_eq!(c.librdkafka_value("sasl.password"), Some("p&ss=w@rd%"));
        assert_eq!(c.librdkafka_value("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.librdkafka_value("security.protocol"), Some("SASL_SSL"));
        let c =
            KafkaConfig::from_url("kafka://a:9092?sasl.password=p%26ss%3Dw%40rd%25&client.id=a+b")
                .unwrap();
        assert_eq!(c.librdkafka_value("sasl.password"), Some("p&ss=w@rd%"));
        assert_eq!(
            c.librdkafka_value("client.id"),
            Some("a+b"),
            "'+' is not a space"
        );
    }

    #[test]
    fn the_builder_gives_what_the_url_gives() {
        let parsed = KafkaConfig::from_url(
            "kafka://app:pw@a:9092?prefix=billing&partitions=4&max_deliveries=2&security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-256&join_wait_ms=0",
        )
        .unwrap();
        let built = KafkaConfig::new("a:9092")
            .prefix("billing")
            .partitions(4)
            .max_deliveries(2)
            .tls()
            .sasl(SaslMechanism::ScramSha256, "app", "pw")
            .join_wait(std::time::Duration::ZERO);
        let sorted = |c: &KafkaConfig| {
            let mut options = c.librdkafka.clone();
            options.sort();
            options
        };
        assert_eq!(sorted(&parsed), sorted(&built));
        assert_eq!(
            (parsed.prefix, parsed.partitions),
            (built.prefix, built.partitions)
        );
        assert_eq!(parsed.max_deliveries, built.max_deliveries);
        // TLS after SASL keeps SASL.
        let c = KafkaConfig::new("a:1")
            .sasl(SaslMechanism::Plain, "u", "p")
            .tls();
        assert_eq!(c.librdkafka_value("security.protocol"), Some("SASL_SSL"));
        assert_eq!(
            KafkaConfig::new("a:1")
                .tls()
                .librdkafka_value("security.protocol"),
            Some("SSL")
        );
        assert!(KafkaConfig::new("a:1").prefix("a b").check().is_err());
        assert!(KafkaConfig::new("").check().is_err());
    }

    #[test]
    fn secrets_stay_out_of_error_messages() {
        for url in [
            "kafka://app:hunter2@a:9092?partition=2",
            "kafka://a:9092?sasl.password=hunter2&partition=2",
            "kafka://a:9092?sasl.password=hunter2&linger.ms",
        ] {
            let err = KafkaConfig::from_url(url).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{url}: {err}");
        }
    }

    #[test]
    fn inbox_modes_and_the_poison_bound() {
        let c = KafkaConfig::from_url("kafka://a:9092?inbox=shared&max_deliveries=2").unwrap();
        assert_eq!(c.inbox, InboxMode::Shared { partitions: 16 });
        assert_eq!(c.max_deliveries, 2);
        let c =
            KafkaConfig::from_url("kafka://a:9092?shared_inbox_partitions=4&inbox=shared").unwrap();
        assert_eq!(c.inbox, InboxMode::Shared { partitions: 4 });
    }

    #[test]
    #[cfg(not(feature = "mock"))]
    fn mock_urls_need_the_mock_feature() {
        let refused = KafkaConfig::from_url("kafka-mock://").unwrap_err();
        assert!(refused.to_string().contains("feature `mock`"), "{refused}");
    }

    #[test]
    #[cfg(feature = "mock")]
    fn mock_urls() {
        let c = KafkaConfig::from_url("kafka-mock://").unwrap();
        assert_eq!(
            c.brokers,
            Brokers::Mock {
                name: String::new(),
                brokers: 1
            }
        );
        let c = KafkaConfig::from_url("kafka-mock://faults?brokers=3").unwrap();
        assert_eq!(
            c.brokers,
            Brokers::Mock {
                name: "faults".into(),
                brokers: 3
            }
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, says) in [
            ("kafka://", "no brokers"),
            ("kafka://h:1?partitions=0", "positive whole number"),
            ("kafka://h:1?partition=2", "unknown option \"partition\""),
            (
                "kafka://h:1?prefix=a b",
                "prefix \"a b\" may hold only letters",
            ),
            ("kafka://h:1?linger.ms", "needs a value"),
            (
                "kafka://h:1?join_wait_ms=soon",
                "join_wait_ms must be a whole number",
            ),
            ("redis://h", "expected kafka://"),
            ("kafka://h:1?inbox=group", "inbox must be topic or shared"),
            ("kafka://h:1?max_deliveries=0", "positive whole number"),
            ("kafka://app@h:1", "credentials are user:password"),
            ("kafka://:pw@h:1", "the user before ':' is empty"),
            ("kafka://u:p@h:1?sasl.username=v", "credentials given twice"),
            ("kafka://h:1?client.id=%FF", "does not decode to UTF-8"),
        ] {
            let err = KafkaConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
