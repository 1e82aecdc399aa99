//! Reading a `kafka://` or `kafka-mock://` URL into a [`KafkaConfig`].

use busrpc_core::TransportError;

use super::{
    Brokers, Dialect, InboxMode, KafkaConfig, SaslMechanism, BROKER_DEFAULT_REPLICATION,
    URL_OPTIONS,
};

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
            let unknown = || {
                invalid(
                    url,
                    format!(
                        "unknown option {key:?}; busrpc's are {}, and librdkafka's contain a dot, like fetch.wait.max.ms",
                        URL_OPTIONS.join(", ")
                    ),
                )
            };
            if !key.contains('.') && !URL_OPTIONS.contains(&key) {
                return Err(unknown());
            }
            match key {
                "prefix" => config.prefix = value.to_owned(),
                "name" if value.is_empty() => return Err(invalid(url, "name must not be empty")),
                "name" => config.name = Some(value.to_owned()),
                "partitions" => config.partitions = i32::try_from(number()?).unwrap_or(i32::MAX),
                "replication" => {
                    config.replication = match value {
                        "-1" | "default" => BROKER_DEFAULT_REPLICATION,
                        _ => i32::try_from(number()?).unwrap_or(i32::MAX),
                    }
                }
                "inbox_retention_ms" => config.inbox_retention_ms = number()?.unsigned_abs(),
                "inbox" => {
                    shared = match value {
                        "topic" => false,
                        "shared" => true,
                        _ => {
                            return Err(invalid(
                                url,
                                format!("inbox must be topic or shared, got {value:?}"),
                            ))
                        }
                    }
                }
                "shared_inbox_partitions" => {
                    shared_partitions = i32::try_from(number()?).unwrap_or(i32::MAX)
                }
                "max_deliveries" => {
                    config.max_deliveries = u32::try_from(number()?).unwrap_or(u32::MAX)
                }
                "cancel_notices" => {
                    config.cancel_notices = match value {
                        "true" | "1" | "on" => true,
                        "false" | "0" | "off" => false,
                        _ => {
                            return Err(invalid(
                                url,
                                format!("cancel_notices must be true or false, got {value:?}"),
                            ))
                        }
                    }
                }
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
                        _ => {
                            return Err(invalid(
                                url,
                                format!("dialect must be busrpc or pipeline, got {value:?}"),
                            ))
                        }
                    }
                }
                "pipeline_group" if value.is_empty() => {
                    return Err(invalid(url, "pipeline_group is empty"))
                }
                "pipeline_group" => pipeline_group = Some(value.to_owned()),
                "brokers" if scheme == "kafka-mock" => {
                    mock_brokers = i32::try_from(number()?).unwrap_or(1)
                }
                _ if key.contains('.') => config = config.option(key, value),
                _ => return Err(unknown()),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Topics as replicated as the broker's operators set, by default.
    #[test]
    fn topics_replicate_as_the_broker_says_by_default() {
        let c = KafkaConfig::from_url("kafka://a:9092").unwrap();
        assert_eq!(c.replication, BROKER_DEFAULT_REPLICATION);
        for (url, replication) in [
            ("kafka://a:9092?replication=3", 3),
            ("kafka://a:9092?replication=-1", -1),
            ("kafka://a:9092?replication=default", -1),
        ] {
            assert_eq!(
                KafkaConfig::from_url(url).unwrap().replication,
                replication,
                "{url}"
            );
        }
        assert!(KafkaConfig::from_url("kafka://a:9092?replication=0").is_err());
        assert_eq!(KafkaConfig::new("a:9092").replication(0).replication, 1);
        assert_eq!(KafkaConfig::new("a:9092").replication(-1).replication, -1);
    }

    #[test]
    fn cancel_notices_are_heard_only_when_asked() {
        assert!(
            !KafkaConfig::from_url("kafka://a:9092")
                .unwrap()
                .cancel_notices
        );
        for on in ["true", "1", "on"] {
            let url = format!("kafka://a:9092?cancel_notices={on}");
            assert!(KafkaConfig::from_url(&url).unwrap().cancel_notices, "{url}");
        }
        let off = KafkaConfig::from_url("kafka://a:9092?cancel_notices=false").unwrap();
        assert!(!off.cancel_notices);
    }

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
            (
                "kafka://h:1?cancel_notices=yes",
                "cancel_notices must be true or false",
            ),
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
