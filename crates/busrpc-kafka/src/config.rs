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

impl KafkaConfig {
    /// Parses `kafka://host:port[,host:port...][?options]` or
    /// `kafka-mock://[NAME][?options]`.
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
        let mut mock_brokers = 1;
        let mut shared = false;
        let mut shared_partitions = 16;
        let mut config = KafkaConfig {
            brokers: Brokers::Bootstrap(String::new()),
            prefix: "busrpc".to_owned(),
            partitions: 8,
            replication: 1,
            inbox_retention_ms: 3_600_000,
            inbox: InboxMode::Topic,
            join_wait: std::time::Duration::from_secs(30),
            max_deliveries: 5,
            librdkafka: LIBRDKAFKA_DEFAULTS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(url, format!("option {pair:?} needs a value: key=value")))?;
            let number = || {
                value.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(
                        url,
                        format!("{key} must be a positive whole number, got {value:?}"),
                    )
                })
            };
            match key {
                "prefix" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) => {
                    config.prefix = value.to_owned();
                }
                "prefix" => return Err(invalid(url, "prefix may hold only letters, digits, '.', '_' and '-'")),
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
                "brokers" if scheme == "kafka-mock" => mock_brokers = i32::try_from(number()?).unwrap_or(1),
                _ if key.contains('.') => {
                    config.librdkafka.retain(|(k, _)| k != key);
                    config.librdkafka.push((key.to_owned(), value.to_owned()));
                }
                _ => {
                    return Err(invalid(
                        url,
                        format!("unknown option {key:?} (librdkafka's options contain a dot, like fetch.wait.max.ms)"),
                    ))
                }
            }
        }
        if shared {
            config.inbox = InboxMode::Shared {
                partitions: shared_partitions,
            };
        }
        config.brokers = match scheme {
            "kafka" if !authority.is_empty() => Brokers::Bootstrap(authority.to_owned()),
            "kafka" => return Err(invalid(url, "no brokers: kafka://host:port[,host:port...]")),
            "kafka-mock" => Brokers::Mock {
                name: authority.trim_end_matches('/').to_owned(),
                brokers: mock_brokers,
            },
            _ => return Err(invalid(url, "expected kafka:// or kafka-mock://")),
        };
        Ok(config)
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
            ("kafka://h:1?prefix=a b", "prefix may hold only"),
            ("kafka://h:1?linger.ms", "needs a value"),
            (
                "kafka://h:1?join_wait_ms=soon",
                "join_wait_ms must be a whole number",
            ),
            ("redis://h", "expected kafka://"),
            ("kafka://h:1?inbox=group", "inbox must be topic or shared"),
            ("kafka://h:1?max_deliveries=0", "positive whole number"),
        ] {
            let err = KafkaConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
