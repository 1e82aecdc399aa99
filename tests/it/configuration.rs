//! docs/CONFIGURATION.md names every setting: each URL option the parsers
//! accept, each librdkafka default busrpc sets, and each field of every
//! configuration type (read from its `Debug`, so a field added later is
//! caught without touching this test).

const DOC: &str = include_str!("../../docs/CONFIGURATION.md");

/// The part of the document under the `## ` heading starting `heading`.
fn section(heading: &str) -> &'static str {
    let start = DOC
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("docs/CONFIGURATION.md has no section {heading:?}"));
    let rest = &DOC[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    &rest[..end]
}

/// The names of the top-level fields in a `{:#?}` rendering.
fn fields(pretty: &str) -> Vec<String> {
    pretty
        .lines()
        .filter_map(|line| line.strip_prefix("    "))
        .filter(|line| !line.starts_with(' '))
        .filter_map(|line| line.split_once(':').map(|(name, _)| name.to_owned()))
        .collect()
}

fn assert_named(section_name: &str, names: impl IntoIterator<Item = String>) {
    let text = section(section_name);
    let missing: Vec<String> = names
        .into_iter()
        .filter(|name| !text.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/CONFIGURATION.md, section {section_name:?}, does not name {missing:?}"
    );
}

#[test]
fn the_client_and_server_settings_are_documented() {
    let client = fields(&format!("{:#?}", busrpc::ClientConfig::default()));
    assert!(client.contains(&"timeout".to_owned()), "{client:?}");
    assert_named("Client", client);
    let server = fields(&format!("{:#?}", busrpc::ServerConfig::default()));
    assert!(server.contains(&"concurrency".to_owned()), "{server:?}");
    assert_named("Server", server);
    let limits = fields(&format!("{:#?}", busrpc::Limits::default()));
    assert_named("Client", limits.clone());
    assert_named("Server", limits);
}

#[cfg(feature = "redis")]
#[test]
fn every_redis_option_and_field_is_documented() {
    let options = busrpc::redis::URL_OPTIONS.iter().map(|o| (*o).to_owned());
    assert_named("Redis", options);
    let config = busrpc::redis::RedisConfig::new("h", 6379);
    assert_named("Redis", fields(&format!("{config:#?}")));
    // Each listed option is one the parser takes: never "unknown option".
    for option in busrpc::redis::URL_OPTIONS {
        let url = format!("redis://h:6379?{option}=x");
        if let Err(e) = busrpc::redis::RedisConfig::from_url(&url) {
            assert!(!e.to_string().contains("unknown option"), "{url}: {e}");
        }
    }
}

#[cfg(feature = "kafka")]
#[test]
fn every_kafka_option_default_and_field_is_documented() {
    let options = busrpc::kafka::URL_OPTIONS.iter().map(|o| (*o).to_owned());
    assert_named("Kafka", options);
    let defaults = busrpc::kafka::LIBRDKAFKA_DEFAULTS
        .iter()
        .map(|(k, _)| (*k).to_owned());
    assert_named("Kafka", defaults);
    let config = busrpc::kafka::KafkaConfig::new("h:9092");
    assert_named("Kafka", fields(&format!("{config:#?}")));
    for option in busrpc::kafka::URL_OPTIONS {
        let url = format!("kafka-mock://?{option}=x");
        if let Err(e) = busrpc::kafka::KafkaConfig::from_url(&url) {
            assert!(!e.to_string().contains("unknown option"), "{url}: {e}");
        }
    }
}
