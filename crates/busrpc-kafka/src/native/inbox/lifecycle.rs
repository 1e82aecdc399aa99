//! Inbox topics that cannot pile up.
//!
//! Kafka cannot expire a topic, and a client that is killed never deletes
//! its inbox. So each inbox's name carries its creation time, its client's
//! `inbox_retention_ms` and its owner
//! (`{prefix}.inbox.{created_ms}.{retention_ms}.{instance}-{n}`), a live
//! client writes a keep-alive record into its own inbox every quarter of
//! its retention (replies move it too), and every server sweeps, every
//! quarter of its own: an inbox topic whose end offset has not moved for
//! the retention its name gives while the server watched, and older than
//! that by its name, has no client left and is deleted. The retention comes
//! from the name, not the server, so a server configured with a shorter one
//! never deletes a live client's inbox between two keep-alives.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use busrpc_core::TransportError;
use rdkafka::admin::AdminOptions;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use tokio::sync::oneshot;

use crate::connection::{transport_error, Connection};
use crate::native::Counters;

/// The header of a keep-alive record; the inbox's reader skips such records.
pub(crate) const KEEPALIVE_HEADER: &str = "busrpc-keepalive";

/// The header naming the client a reply in the shared reply topic is for;
/// every other client reading its partition skips it.
pub(crate) const CLIENT_HEADER: &str = "busrpc-client";

/// The shared reply topic of the prefix whose inboxes start with
/// `inbox_prefix`. Its name is not a dated inbox's, so it is never swept.
pub(crate) fn shared_topic(inbox_prefix: &str) -> String {
    format!("{inbox_prefix}shared")
}

/// A shared inbox's address: `{topic}/{partition}/{client}`. A topic name
/// cannot hold `/`, so no per-client inbox or request topic looks like one.
pub(crate) fn shared_address(topic: &str, partition: i32, client: &str) -> String {
    format!("{topic}/{partition}/{client}")
}

/// The topic, partition and client of a shared inbox's address; `None` for
/// any other address.
pub(crate) fn parse_shared(address: &str) -> Option<(&str, i32, &str)> {
    let (topic, rest) = address.split_once('/')?;
    let (partition, client) = rest.split_once('/')?;
    let partition = partition.parse().ok().filter(|p| *p >= 0)?;
    (!topic.is_empty() && !client.is_empty()).then_some((topic, partition, client))
}

/// How often a client writes a keep-alive record, and a server sweeps.
pub(crate) fn interval(retention_ms: u64) -> Duration {
    Duration::from_millis(retention_ms / 4).max(Duration::from_millis(100))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A new inbox topic's name: `{inbox_prefix}{created_ms}.{retention_ms}.{owner}`.
pub(crate) fn name(inbox_prefix: &str, retention_ms: u64, owner: &str) -> String {
    format!("{inbox_prefix}{}.{retention_ms}.{owner}", now_ms())
}

/// The creation time and retention an inbox topic's name carries, if it is
/// one of busrpc's (a foreign client's inbox, named otherwise, is never
/// swept).
pub(crate) fn parse(topic: &str, inbox_prefix: &str) -> Option<(u64, u64)> {
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut parts = topic.strip_prefix(inbox_prefix)?.splitn(3, '.');
    let created = number(parts.next()?)?;
    let retention = number(parts.next()?)?;
    let owner = parts.next()?;
    (!owner.is_empty()).then_some((created, retention))
}

/// Writes a keep-alive record into `topic` every `every` until `closed`
/// resolves or its sender is dropped (the inbox is gone).
pub(crate) async fn keep_alive(
    connection: Weak<Connection>,
    topic: String,
    every: Duration,
    mut closed: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut closed => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(connection) = connection.upgrade() else {
            return;
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: KEEPALIVE_HEADER,
            value: Some(&b"1"[..]),
        });
        let record = FutureRecord::<(), [u8]>::to(&topic)
            .payload(&[][..])
            .headers(headers);
        if let Err((e, _)) = connection
            .producer
            .send(record, Timeout::After(every))
            .await
        {
            tracing::debug!(inbox = %topic, error = %e, "writing the inbox's keep-alive record");
        }
    }
}

/// What a sweeper has seen of each inbox topic: its end offset, and since
/// when it has not moved.
type Seen = HashMap<String, (i64, Instant)>;

/// Sweeps abandoned inbox topics every [`interval`] while the transport
/// lives. Started once per transport, by its first server.
pub(crate) async fn sweep(connection: Weak<Connection>, counters: Arc<Counters>) {
    let mut seen = Seen::new();
    loop {
        let every = {
            let Some(connection) = connection.upgrade() else {
                return;
            };
            if let Err(e) = sweep_once(&connection, &counters, &mut seen).await {
                tracing::debug!(error = %e, "sweeping abandoned inbox topics");
            }
            interval(connection.config.inbox_retention_ms)
        };
        tokio::time::sleep(every).await;
    }
}

async fn sweep_once(
    connection: &Arc<Connection>,
    counters: &Counters,
    seen: &mut Seen,
) -> Result<(), TransportError> {
    let asking = connection.clone();
    let ends = tokio::task::spawn_blocking(move || {
        let client = asking.producer.client();
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(transport_error)?;
        let mut ends = Vec::new();
        for topic in metadata.topics() {
            let Some((created, retention)) = parse(topic.name(), &asking.inbox_prefix) else {
                continue;
            };
            match client.fetch_watermarks(topic.name(), 0, Duration::from_secs(10)) {
                Ok((_, end)) => ends.push(Inbox {
                    topic: topic.name().to_owned(),
                    created,
                    retention,
                    end,
                }),
                Err(e) => {
                    tracing::debug!(inbox = topic.name(), error = %e, "reading an inbox's end offset");
                }
            }
        }
        Ok::<_, TransportError>(ends)
    })
    .await
    .map_err(|e| TransportError::Other(Box::new(e)))??;
    let stale = abandoned(seen, ends, Instant::now(), now_ms());
    if stale.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = stale.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = connection
        .admin
        .delete_topics(&names, &options)
        .await
        .map_err(transport_error)?;
    for result in results {
        match result {
            Ok(topic) => {
                tracing::info!(inbox = %topic, "deleted an abandoned inbox topic");
                counters.inboxes_removed.fetch_add(1, Ordering::Relaxed);
                seen.remove(&topic);
            }
            Err((topic, code)) => {
                tracing::debug!(inbox = %topic, %code, "deleting an abandoned inbox topic");
            }
        }
    }
    Ok(())
}

/// An inbox topic as a sweep found it.
#[derive(Clone, Debug)]
struct Inbox {
    topic: String,
    /// Its creation time and its client's retention, from its name.
    created: u64,
    retention: u64,
    /// Its end offset now.
    end: i64,
}

/// Updates `seen` with the inbox topics' end offsets now, and returns those
/// abandoned: their end has not moved for their retention while watched,
/// and their name says they are older than that.
fn abandoned(seen: &mut Seen, ends: Vec<Inbox>, now: Instant, now_ms: u64) -> Vec<String> {
    seen.retain(|topic, _| ends.iter().any(|i| i.topic == *topic));
    let mut stale = Vec::new();
    for inbox in ends {
        match seen.get_mut(&inbox.topic) {
            Some((last, since)) if *last == inbox.end => {
                if now.duration_since(*since) >= Duration::from_millis(inbox.retention)
                    && now_ms.saturating_sub(inbox.created) >= inbox.retention
                {
                    stale.push(inbox.topic);
                }
            }
            Some(entry) => *entry = (inbox.end, now),
            None => {
                seen.insert(inbox.topic, (inbox.end, now));
            }
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busrpc_inbox_names_carry_a_creation_time_and_retention() {
        let prefix = "busrpc.inbox.";
        assert_eq!(
            parse("busrpc.inbox.1764590000000.3600000.ab12-3", prefix),
            Some((1_764_590_000_000, 3_600_000))
        );
        let made = name(prefix, 2000, "ab12-3");
        assert_eq!(parse(&made, prefix).map(|(_, r)| r), Some(2000), "{made}");
        for foreign in [
            "busrpc.inbox.ab12-3",
            "busrpc.inbox.1764590000000.ab12-3",
            "busrpc.inbox.17x.2000.ab12-3",
            "busrpc.inbox.1764590000000.2000.",
            "my-inbox",
            "busrpc.svc",
        ] {
            assert_eq!(parse(foreign, prefix), None, "{foreign}");
        }
    }

    #[test]
    fn shared_inbox_addresses_name_topic_partition_and_client() {
        let topic = shared_topic("busrpc.inbox.");
        assert_eq!(topic, "busrpc.inbox.shared");
        assert_eq!(parse(&topic, "busrpc.inbox."), None, "never swept");
        let address = shared_address(&topic, 3, "8610f61c-1");
        assert_eq!(address, "busrpc.inbox.shared/3/8610f61c-1");
        assert_eq!(
            parse_shared(&address),
            Some(("busrpc.inbox.shared", 3, "8610f61c-1"))
        );
        for other in [
            "busrpc.inbox.1764590000000.3600000.ab12-3",
            "busrpc.svc",
            "t/x/c",
            "t/-1/c",
            "t/1/",
            "/1/c",
            "t/1",
        ] {
            assert_eq!(parse_shared(other), None, "{other}");
        }
    }

    #[test]
    fn an_inbox_is_abandoned_only_after_its_whole_retention_without_moving() {
        let start = Instant::now();
        let old = 1_000_000;
        let now_ms = old + 3_600_000;
        let mut seen = Seen::new();
        let ends = |end: i64| {
            vec![Inbox {
                topic: "busrpc.inbox.1.60000.a".to_owned(),
                created: old,
                retention: 60_000,
                end,
            }]
        };
        assert!(abandoned(&mut seen, ends(5), start, now_ms).is_empty());
        let later = start + Duration::from_secs(59);
        assert!(abandoned(&mut seen, ends(5), later, now_ms).is_empty());
        // It moved (a reply, or its client's keep-alive): watched afresh.
        let moved = start + Duration::from_secs(61);
        assert!(abandoned(&mut seen, ends(6), moved, now_ms).is_empty());
        let still = moved + Duration::from_secs(59);
        assert!(abandoned(&mut seen, ends(6), still, now_ms).is_empty());
        let gone = moved + Duration::from_secs(60);
        assert_eq!(
            abandoned(&mut seen, ends(6), gone, now_ms),
            vec!["busrpc.inbox.1.60000.a".to_owned()]
        );
        // A topic created less than its retention ago by its name is kept.
        let mut seen = Seen::new();
        let young = vec![Inbox {
            topic: "busrpc.inbox.2.60000.b".to_owned(),
            created: now_ms - 1_000,
            retention: 60_000,
            end: 0,
        }];
        abandoned(&mut seen, young.clone(), start, now_ms);
        let after = start + Duration::from_secs(120);
        assert!(abandoned(&mut seen, young, after, now_ms).is_empty());
    }
}
