#![doc = include_str!("../README.md")]

pub mod measure;
pub mod memory;
pub mod ping;

pub use memory::TransportPingPong;
pub use ping::{Baseline, Correlator, PingError};

/// `url` on a key/topic prefix of its own, `{base}-{pid}-{id}`, so that
/// everything one measurement creates on the broker can be found and
/// deleted afterwards ([`Baseline::clean_up`]). A `prefix=` the URL already
/// has takes the place of `base`; the URL's other options are kept.
/// `memory://` keeps nothing beyond the process and is returned as it is.
pub fn on_own_prefix(url: &str, base: &str) -> String {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if !matches!(scheme, "redis" | "rediss" | "kafka" | "kafka-mock") {
        return url.to_owned();
    }
    let (address, query) = url.split_once('?').unwrap_or((url, ""));
    let mut prefix = base;
    let mut options = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("prefix=") {
            Some(given) => prefix = given,
            None => options.push(pair.to_owned()),
        }
    }
    options.push(format!(
        "prefix={prefix}-{}-{}",
        std::process::id(),
        busrpc_core::transport::unique_id()
    ));
    format!("{address}?{}", options.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_gets_a_prefix_of_its_own() {
        let url = on_own_prefix("redis://127.0.0.1:6379?claim_idle_ms=500", "busrpc-bench");
        let (address, query) = url.split_once('?').unwrap();
        assert_eq!(address, "redis://127.0.0.1:6379");
        let options: Vec<&str> = query.split('&').collect();
        assert_eq!(options[0], "claim_idle_ms=500");
        assert!(options[1].starts_with(&format!("prefix=busrpc-bench-{}-", std::process::id())));
        // A prefix of the user's own is kept as the start of the run's.
        let url = on_own_prefix("kafka://k:9092?prefix=team&partitions=4", "busrpc-bench");
        assert!(
            url.starts_with("kafka://k:9092?partitions=4&prefix=team-"),
            "{url}"
        );
        assert_ne!(
            on_own_prefix("kafka-mock://x", "b"),
            on_own_prefix("kafka-mock://x", "b")
        );
        assert_eq!(on_own_prefix("memory://", "b"), "memory://");
    }
}
