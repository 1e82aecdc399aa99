//! The configuration of the Kafka transport: the brokers, busrpc's options
//! and librdkafka's, built in code or read from a URL ([`url`]).

use busrpc_core::TransportError;

mod url;

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
    /// `name`: what this process's servers are called: the `client.id` of
    /// its first server's consumer is `name`, of the next `name-2`, … (see
    /// [`busrpc_core::transport::member_name`]), as the group's member list
    /// shows it; what `ServerHandle::name` and `Context::server_name` say.
    /// Default (`None`): a `client.id` given in the URL, else
    /// `{host}-{pid}`.
    pub name: Option<String>,
    /// `partitions`: partitions of the request topics busrpc creates
    /// (default 8). Servers of a service share its partitions, so at most this
    /// many instances of a service do work at once.
    pub partitions: i32,
    /// `replication`: replication factor of the topics busrpc creates
    /// (default [`BROKER_DEFAULT_REPLICATION`], `-1` or `default` in a URL:
    /// the broker's `default.replication.factor`, which a production
    /// cluster sets to 3 so that a request survives a broker's loss).
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
    /// has started is serving; past it, starting fails with
    /// [`Unavailable`](busrpc_core::TransportError::Unavailable) saying so.
    /// `0` returns at once and joins in the background.
    pub join_wait: std::time::Duration,
    /// `max_deliveries`: how often a request may be delivered (default 5),
    /// deliveries to a server process that died counted, before it is moved
    /// to the dead-letter topic `{prefix}.{service}.dead` and its caller
    /// answered -32001, as on Redis. Needs a broker that keeps commit
    /// metadata (Kafka does; Tansu 0.6.0 does not).
    pub max_deliveries: u32,
    /// `cancel_notices`: whether servers hear cancel notices, so that a
    /// call its caller gives up on stops (default `false`). Each server
    /// then reads the topic `{prefix}.{service}.broadcast` from its end
    /// with a consumer of its own, and librdkafka crashed (SIGSEGV, in five
    /// runs out of five) when a broker that lost its topics came back with
    /// such a consumer reading (confluentinc/librdkafka#4898). Set it on
    /// clients too: only then do they send notices.
    pub cancel_notices: bool,
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
            .field("name", &self.name)
            .field("partitions", &self.partitions)
            .field("replication", &self.replication)
            .field("inbox_retention_ms", &self.inbox_retention_ms)
            .field("inbox", &self.inbox)
            .field("join_wait", &self.join_wait)
            .field("max_deliveries", &self.max_deliveries)
            .field("cancel_notices", &self.cancel_notices)
            .field("dialect", &self.dialect)
            .field("librdkafka", &librdkafka)
            .finish()
    }
}

/// Every busrpc option a `kafka://` or `kafka-mock://` URL may carry, as
/// docs/CONFIGURATION.md lists them (a test holds the two together); a key
/// with a dot goes to librdkafka, any other is refused, naming these.
pub const URL_OPTIONS: &[&str] = &[
    "prefix",
    "name",
    "partitions",
    "replication",
    "inbox_retention_ms",
    "inbox",
    "shared_inbox_partitions",
    "max_deliveries",
    "join_wait_ms",
    "cancel_notices",
    "dialect",
    "pipeline_group",
    "brokers",
];

/// The replication factor that asks the broker for its own
/// `default.replication.factor` (Kafka 2.4 and later, KIP-464): the
/// default, so that topics busrpc creates are as replicated as the
/// cluster's operators decided, not 1 whatever the cluster.
pub const BROKER_DEFAULT_REPLICATION: i32 = -1;

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
    // Not `reconnect.backoff.max.ms=1000`, though it reconnects within a
    // second after a cut: with it librdkafka 2.12.1 crashed on a restarted
    // Tansu that had lost its topics in 10 runs of 10 (SIGSEGV,
    // confluentinc/librdkafka#4898; about half without it). Set it in the
    // URL where brokers keep their topics.
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
    ) -> Result<(String, Option<std::sync::Arc<crate::mock::MockBrokers>>), TransportError> {
        match self {
            Brokers::Bootstrap(servers) => Ok((servers.clone(), None)),
            Brokers::Mock { name, brokers } => {
                let mock = crate::mock::MockBrokers::named(name, *brokers)?;
                Ok((mock.bootstrap_servers().to_owned(), Some(mock)))
            }
        }
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
            name: None,
            partitions: 8,
            replication: BROKER_DEFAULT_REPLICATION,
            inbox_retention_ms: 3_600_000,
            inbox: InboxMode::Topic,
            join_wait: std::time::Duration::from_secs(30),
            cancel_notices: false,
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

    /// Sets [`name`](Self::name).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name of a new consumer of this configuration's servers (see
    /// [`name`](Self::name)), unique in the process.
    pub(crate) fn member_name(&self) -> String {
        let base = self.name.as_deref().or(self.librdkafka_value("client.id"));
        busrpc_core::transport::member_name(base)
    }

    /// Sets [`partitions`](Self::partitions) (at least 1).
    #[must_use]
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// Sets [`replication`](Self::replication): at least 1, or
    /// [`BROKER_DEFAULT_REPLICATION`].
    #[must_use]
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = if replication == BROKER_DEFAULT_REPLICATION {
            replication
        } else {
            replication.max(1)
        };
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

    /// Sets [`cancel_notices`](Self::cancel_notices).
    #[must_use]
    pub fn cancel_notices(mut self, hear: bool) -> Self {
        self.cancel_notices = hear;
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
