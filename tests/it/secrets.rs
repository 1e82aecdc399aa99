//! No secret is ever printed: the errors of `busrpc::connect` for URLs that
//! hold a password, and the configurations, shown every way an
//! application shows them (`{}`, `{:?}`, `{:#?}`, through
//! `Box<dyn Error>` as `main` returns it, and so in an `unwrap()`'s panic,
//! and through anyhow).

use std::error::Error as StdError;

const SECRET: &str = "s3cr3t-Pw";

/// Every way an error reaches a log or a terminal.
fn shown_every_way(e: busrpc::TransportError) -> Vec<String> {
    let mut shown = vec![e.to_string(), format!("{e:?}"), format!("{e:#?}")];
    // What `fn main() -> Result<(), Box<dyn Error>>` prints on failure,
    // and what a `?` into anyhow or eyre keeps (the Display chain).
    let boxed: Box<dyn StdError + Send + Sync> = Box::new(e);
    shown.push(format!("{boxed:?}"));
    shown.push(format!("{boxed:#?}"));
    let mut source = boxed.source();
    while let Some(e) = source {
        shown.push(format!("{e} / {e:?}"));
        source = e.source();
    }
    // (An `unwrap()` panics with the `{:?}` above.) anyhow's report, as
    // `main() -> anyhow::Result<()>` prints it, and its one-line chain.
    let report = anyhow::Error::from_boxed(boxed);
    shown.push(format!("{report:?}"));
    shown.push(format!("{report:#}"));
    shown
}

fn assert_masked(url: &str, shown: &[String]) {
    for text in shown {
        assert!(!text.contains(SECRET), "{url} shows its secret: {text}");
    }
}

#[tokio::test]
async fn a_connect_error_never_shows_the_password() {
    let mut urls = vec![format!("rediz://app:{SECRET}@127.0.0.1:6379")];
    if cfg!(feature = "redis") {
        urls.extend([
            // An unknown option, a bad value, a TLS file that is not there.
            format!("redis://app:{SECRET}@127.0.0.1:6379?claim_idle=5"),
            format!("redis://app:{SECRET}@127.0.0.1:6379?claim_idle_ms=soon"),
            format!("rediss://app:{SECRET}@127.0.0.1:6379?tls_ca_file=/nonexistent/ca.pem"),
            // Nobody listens: the broker client's own error.
            format!("redis://app:{SECRET}@127.0.0.1:1"),
        ]);
    }
    if cfg!(feature = "kafka") {
        urls.extend([
            format!(
                "kafka://127.0.0.1:9092?sasl.username=app&sasl.password={SECRET}&partitions=many"
            ),
            format!("kafka://127.0.0.1:9092?sasl.password={SECRET}&no_such_option=1"),
            format!("kafka://app:{SECRET}@127.0.0.1:9092?partitions=0"),
        ]);
    }
    for url in urls {
        let Err(e) = busrpc::connect(&url).await else {
            panic!("{url}: connected");
        };
        assert_masked(&url, &shown_every_way(e));
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_configuration_never_shows_the_password() {
    let url = format!("redis://app:{SECRET}@h:6379/0");
    let config = busrpc::redis::RedisConfig::from_url(&url).unwrap();
    assert_masked(&url, &[format!("{config:?}"), format!("{config:#?}")]);
}

#[cfg(feature = "kafka")]
#[test]
fn a_kafka_configuration_never_shows_the_password() {
    let url = format!("kafka://h:9092?sasl.username=app&sasl.password={SECRET}");
    let config = busrpc::kafka::KafkaConfig::from_url(&url).unwrap();
    assert_masked(&url, &[format!("{config:?}"), format!("{config:#?}")]);
}
