//! The `redis://` URL and busrpc's own options in it.

use std::time::Duration;

use busrpc_core::TransportError;

/// busrpc's options for the Redis transport, read from the URL's query string
/// (`redis://host:6379/0?claim_idle_ms=5000&max_deliveries=3`). Every other
/// part of the URL (user, password, host, port, database, `protocol`) goes to
/// the redis crate unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `prefix`: the first part of every key busrpc writes (default `busrpc`).
    /// Requests of service `S` go to the stream `{prefix}:S`.
    pub prefix: String,
    /// `claim_idle_ms`: how long a request may stay pending with a consumer
    /// that stopped before a live server claims it (default 30000): the time
    /// a dead server's requests wait. A live server keeps what it holds
    /// every `claim_idle_ms / 3`, so handlers may run longer than this; a
    /// server back from a Redis outage claims nothing for this long, so
    /// that its peers keep what they held through it.
    pub claim_idle: Duration,
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
        Self {
            prefix: "busrpc".to_owned(),
            claim_idle: Duration::from_secs(30),
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
}

fn invalid(url: &str, reason: impl Into<String>) -> TransportError {
    TransportError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.into(),
    }
}

impl RedisConfig {
    /// Splits `url` into the URL for the redis crate and busrpc's options.
    /// Unknown options are an error, so a typo does not go unnoticed.
    pub fn from_url(url: &str) -> Result<(String, Self), TransportError> {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                url,
                "expected redis://host:port[/db][?options] or rediss://...",
            ));
        }
        if url.starts_with("rediss://") && !cfg!(feature = "tls") {
            return Err(invalid(
                url,
                "rediss:// needs the cargo feature `tls` of busrpc-redis",
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut config = Self::default();
        let mut passed_on = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = || {
                value.parse::<u64>().map_err(|_| {
                    invalid(url, format!("{key} must be a whole number, got {value:?}"))
                })
            };
            let millis = || number().map(Duration::from_millis);
            match key {
                "prefix" if !value.is_empty() && !value.contains(['{', '}', ' ']) => {
                    config.prefix = value.to_owned()
                }
                "prefix" => {
                    return Err(invalid(
                        url,
                        "prefix must be non-empty, without spaces or braces",
                    ))
                }
                "claim_idle_ms" => config.claim_idle = millis()?,
                "max_deliveries" => config.max_deliveries = number()?.max(1),
                "inbox_max_len" => config.inbox_max_len = number()?.max(1),
                "inbox_ttl_ms" => config.inbox_ttl = millis()?.max(Duration::from_millis(100)),
                "block_ms" => config.block = millis()?.max(Duration::from_millis(1)),
                "read_count" => config.read_count = number()?.max(1),
                "queue_max_len" => config.queue_max_len = number()?.max(1),
                "response_timeout_ms" => config.response_timeout = millis()?,
                "tls_ca_file" if !value.is_empty() => config.tls_ca_file = Some(value.into()),
                // The redis crate's own query parameters.
                "protocol" | "insecure" => passed_on.push(pair),
                _ => return Err(invalid(url, format!("unknown option {key:?}"))),
            }
        }
        let base = if passed_on.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed_on.join("&"))
        };
        Ok((base, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_and_the_rest_passed_on() {
        let (base, c) = RedisConfig::from_url(
            "redis://u:p@h:6380/2?claim_idle_ms=500&max_deliveries=3&prefix=app&protocol=resp3",
        )
        .unwrap();
        assert_eq!(base, "redis://u:p@h:6380/2?protocol=resp3");
        assert_eq!(c.claim_idle, Duration::from_millis(500));
        assert_eq!((c.max_deliveries, c.prefix.as_str()), (3, "app"));
        let (base, c) = RedisConfig::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(
            (base.as_str(), c),
            ("redis://127.0.0.1:6379", RedisConfig::default())
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("kafka://x", "expected redis://"),
            ("redis://h?claim_idle=5", "unknown option \"claim_idle\""),
            ("redis://h?block_ms=soon", "block_ms must be a whole number"),
            ("redis://h?prefix=", "prefix must be non-empty"),
        ] {
            let err = RedisConfig::from_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
        }
    }
}
