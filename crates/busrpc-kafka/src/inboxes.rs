//! Inbox topics that cannot pile up.
//!
//! Kafka cannot expire a topic, and a client that is killed never deletes
//! its inbox. So each inbox's name carries its creation time and its
//! owner (`{prefix}.inbox.{created_ms}.{instance}-{n}`), a live client
//! writes a keep-alive record into its own inbox every quarter of
//! `inbox_retention_ms` (replies move it too), and every server sweeps, as
//! often: an inbox topic whose end offset has not moved for
//! `inbox_retention_ms` while the server watched, and older than that by
//! its name, has no client left and is deleted.

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

use crate::{transport_error, Inner};

/// The header of a keep-alive record; the inbox's reader skips such records.
pub(crate) const KEEPALIVE_HEADER: &str = "busrpc-keepalive";

/// How often a client writes a keep-alive record, and a server sweeps.
pub(crate) fn interval(retention_ms: u64) -> Duration {
    Duration::from_millis(retention_ms / 4).max(Duration::from_millis(100))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A new inbox topic's name: `{inbox_prefix}{created_ms}.{owner}`.
pub(crate) fn name(inbox_prefix: &str, owner: &str) -> String {
    format!("{inbox_prefix}{}.{owner}", now_ms())
}

/// The creation time an inbox topic's name carries, if it is one of
/// busrpc's (a foreign client's inbox, named otherwise, is never swept).
pub(crate) fn created_ms(topic: &str, inbox_prefix: &str) -> Option<u64> {
    let rest = topic.strip_prefix(inbox_prefix)?;
    let (created, owner) = rest.split_once('.')?;
    if owner.is_empty() || created.is_empty() || !created.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    created.parse().ok()
}

/// Writes a keep-alive record into `topic` every [`interval`] until
/// `closed` resolves or its sender is dropped (the inbox is gone).
pub(crate) async fn keep_alive(
    inner: Weak<Inner>,
    topic: String,
    mut closed: oneshot::Receiver<()>,
) {
    loop {
        let every = match inner.upgrade() {
            Some(inner) => interval(inner.config.inbox_retention_ms),
            None => return,
        };
        tokio::select! {
            _ = &mut closed => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: KEEPALIVE_HEADER,
            value: Some(&b"1"[..]),
        });
        let record = FutureRecord::<(), [u8]>::to(&topic)
            .payload(&[][..])
            .headers(headers);
        if let Err((e, _)) = inner.producer.send(record, Timeout::After(every)).await {
            tracing::debug!(inbox = %topic, error = %e, "writing the inbox's keep-alive record");
        }
    }
}

/// What a sweeper has seen of each inbox topic: its end offset, and since
/// when it has not moved.
type Seen = HashMap<String, (i64, Instant)>;

/// Sweeps abandoned inbox topics every [`interval`] while the transport
/// lives. Started once per transport, by its first server.
pub(crate) async fn sweep(inner: Weak<Inner>) {
    let mut seen = Seen::new();
    loop {
        let every = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if let Err(e) = sweep_once(&inner, &mut seen).await {
                tracing::debug!(error = %e, "sweeping abandoned inbox topics");
            }
            interval(inner.config.inbox_retention_ms)
        };
        tokio::time::sleep(every).await;
    }
}

async fn sweep_once(inner: &Arc<Inner>, seen: &mut Seen) -> Result<(), TransportError> {
    let asking = inner.clone();
    let ends = tokio::task::spawn_blocking(move || {
        let client = asking.producer.client();
        let metadata = client
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(transport_error)?;
        let mut ends = Vec::new();
        for topic in metadata.topics() {
            let Some(created) = created_ms(topic.name(), &asking.inbox_prefix) else {
                continue;
            };
            match client.fetch_watermarks(topic.name(), 0, Duration::from_secs(10)) {
                Ok((_, end)) => ends.push((topic.name().to_owned(), created, end)),
                Err(e) => {
                    tracing::debug!(inbox = topic.name(), error = %e, "reading an inbox's end offset");
                }
            }
        }
        Ok::<_, TransportError>(ends)
    })
    .await
    .map_err(|e| TransportError::Other(Box::new(e)))??;
    let retention = Duration::from_millis(inner.config.inbox_retention_ms);
    let stale = abandoned(seen, ends, Instant::now(), now_ms(), retention);
    if stale.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = stale.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = inner
        .admin
        .delete_topics(&names, &options)
        .await
        .map_err(transport_error)?;
    for result in results {
        match result {
            Ok(topic) => {
                tracing::info!(inbox = %topic, "deleted an abandoned inbox topic");
                inner
                    .counters
                    .inboxes_removed
                    .fetch_add(1, Ordering::Relaxed);
                seen.remove(&topic);
            }
            Err((topic, code)) => {
                tracing::debug!(inbox = %topic, %code, "deleting an abandoned inbox topic");
            }
        }
    }
    Ok(())
}

/// Updates `seen` with the inbox topics' end offsets now, and returns those
/// abandoned: their end has not moved for `retention` while watched, and
/// their name says they are older than that.
fn abandoned(
    seen: &mut Seen,
    ends: Vec<(String, u64, i64)>,
    now: Instant,
    now_ms: u64,
    retention: Duration,
) -> Vec<String> {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    seen.retain(|topic, _| ends.iter().any(|(t, ..)| t == topic));
    let mut stale = Vec::new();
    for (topic, created, end) in ends {
        match seen.get_mut(&topic) {
            Some((last, since)) if *last == end => {
                if now.duration_since(*since) >= retention
                    && now_ms.saturating_sub(created) >= retention_ms
                {
                    stale.push(topic);
                }
            }
            Some(entry) => *entry = (end, now),
            None => {
                seen.insert(topic, (end, now));
            }
        }
    }
    stale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_busrpc_inbox_names_carry_a_creation_time() {
        let prefix = "busrpc.inbox.";
        assert_eq!(
            created_ms("busrpc.inbox.1764590000000.ab12-3", prefix),
            Some(1_764_590_000_000)
        );
        let made = name(prefix, "ab12-3");
        assert!(created_ms(&made, prefix).is_some(), "{made}");
        for foreign in [
            "busrpc.inbox.ab12-3",
            "busrpc.inbox.17x.ab12-3",
            "busrpc.inbox.1764590000000.",
            "my-inbox",
            "busrpc.svc",
        ] {
            assert_eq!(created_ms(foreign, prefix), None, "{foreign}");
        }
    }

    #[test]
    fn an_inbox_is_abandoned_only_after_a_whole_retention_without_moving() {
        let retention = Duration::from_secs(60);
        let start = Instant::now();
        let old = 1_000_000;
        let now_ms = old + 3_600_000;
        let mut seen = Seen::new();
        let ends = |end: i64| vec![("busrpc.inbox.1.a".to_owned(), old, end)];
        assert!(abandoned(&mut seen, ends(5), start, now_ms, retention).is_empty());
        let later = start + Duration::from_secs(59);
        assert!(abandoned(&mut seen, ends(5), later, now_ms, retention).is_empty());
        // It moved (a reply, or its client's keep-alive): watched afresh.
        let moved = start + Duration::from_secs(61);
        assert!(abandoned(&mut seen, ends(6), moved, now_ms, retention).is_empty());
        let still = moved + Duration::from_secs(59);
        assert!(abandoned(&mut seen, ends(6), still, now_ms, retention).is_empty());
        let gone = moved + Duration::from_secs(60);
        assert_eq!(
            abandoned(&mut seen, ends(6), gone, now_ms, retention),
            vec!["busrpc.inbox.1.a".to_owned()]
        );
        // A topic created less than a retention ago by its name is kept.
        let mut seen = Seen::new();
        let young = vec![("busrpc.inbox.2.b".to_owned(), now_ms - 1_000, 0)];
        abandoned(&mut seen, young.clone(), start, now_ms, retention);
        let after = start + Duration::from_secs(120);
        assert!(abandoned(&mut seen, young, after, now_ms, retention).is_empty());
    }
}
