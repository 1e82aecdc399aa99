//! The operator's side ([`Admin`]) of the busrpc dialect: services are the
//! topics under the prefix that are neither inboxes nor beside a service
//! (`.dead`, `.broadcast`); a queue's state is each partition's watermarks
//! and the group's committed offsets (OffsetFetch, which joins nothing);
//! dead letters are the records of `{topic}.dead`.
//!
//! A Kafka log cannot delete one record, so removing a dead letter appends
//! a marker to the same partition (an empty record with the header
//! `dead-removed: <id>`); listing leaves out the records a marker names and
//! the markers themselves.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use busrpc_core::transport::{
    Admin, DeadLetter, PartitionLag, QueueState, Transport, TransportError,
};
use busrpc_core::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::connection::{base_config, transport_error, Connection};
use crate::native::KafkaTransport;
use crate::record::{published_at, to_message};

/// The header of a record that removes the dead letter it names.
const DEAD_REMOVED: &str = "dead-removed";

/// How long one read of the broker may take.
const WAIT: Duration = Duration::from_secs(10);

#[async_trait]
impl Admin for KafkaTransport {
    async fn services(&self) -> Result<Vec<String>, TransportError> {
        let connection = self.connection().clone();
        blocking(move || {
            let metadata = connection
                .producer
                .client()
                .fetch_metadata(None, WAIT)
                .map_err(transport_error)?;
            let prefix = format!("{}.", connection.config.prefix);
            let mut found: Vec<String> = metadata
                .topics()
                .iter()
                .filter_map(|t| {
                    let name = t.name();
                    let service = name.strip_prefix(&prefix)?;
                    let beside = name.starts_with(&connection.inbox_prefix)
                        || service.ends_with(".dead")
                        || service.ends_with(".broadcast");
                    (!beside).then(|| service.to_owned())
                })
                .collect();
            found.sort();
            Ok(found)
        })
        .await
    }

    async fn queue(&self, service: &str) -> Result<Option<QueueState>, TransportError> {
        let topic = self.service_address(service);
        let connection = self.connection().clone();
        if !connection.topic_exists(&topic).await? {
            return Ok(None);
        }
        let group = format!("{}.{service}", connection.config.prefix);
        let dead = self.dead_letters(service, usize::MAX).await?.len();
        let mut state = blocking(move || {
            let count = connection
                .producer
                .client()
                .fetch_metadata(Some(&topic), WAIT)
                .map_err(transport_error)?
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            let partitions = (0..i32::try_from(count).unwrap_or(i32::MAX)).collect::<Vec<_>>();
            // A consumer of the group that never subscribes never joins it:
            // OffsetFetch only reads.
            let mut config = base_config(&connection.config, &connection.bootstrap);
            config
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false");
            let reader: BaseConsumer = config.create().map_err(transport_error)?;
            let mut asked = TopicPartitionList::new();
            for &p in &partitions {
                asked
                    .add_partition_offset(&topic, p, Offset::Invalid)
                    .map_err(transport_error)?;
            }
            let committed = reader
                .committed_offsets(asked, WAIT)
                .map_err(transport_error)?;
            let mut state = QueueState::new(0);
            let mut undelivered = Some(0u64);
            for p in partitions {
                let (low, high) = reader
                    .fetch_watermarks(&topic, p, WAIT)
                    .map_err(transport_error)?;
                let at = committed
                    .find_partition(&topic, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(n) if n >= 0 => Some(n),
                        _ => None,
                    });
                state.length += u64::try_from(high - low).unwrap_or(0);
                let lag = PartitionLag::new(p, high, at);
                undelivered = match (undelivered, lag.lag()) {
                    (Some(sum), Some(lag)) => Some(sum + u64::try_from(lag).unwrap_or(0)),
                    // Never committed: everything from the start waits.
                    (Some(sum), None) => Some(sum + u64::try_from(high - low).unwrap_or(0)),
                    (None, _) => None,
                };
                state.partitions.push(lag);
            }
            state.undelivered = undelivered;
            Ok(state)
        })
        .await?;
        state.dead_letters = dead as u64;
        Ok(Some(state))
    }

    async fn dead_letters(
        &self,
        service: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TransportError> {
        let topic = format!("{}.dead", self.service_address(service));
        let connection = self.connection().clone();
        if !connection.topic_exists(&topic).await? {
            return Ok(Vec::new());
        }
        let mut letters = blocking(move || read_dead_letters(&connection, &topic)).await?;
        letters.truncate(limit);
        Ok(letters)
    }

    async fn remove_dead_letter(&self, service: &str, id: &str) -> Result<bool, TransportError> {
        let Some((partition, _)) = parse_id(id) else {
            return Ok(false);
        };
        let listed = self.dead_letters(service, usize::MAX).await?;
        if !listed.iter().any(|l| l.id == id) {
            return Ok(false);
        }
        let topic = format!("{}.dead", self.service_address(service));
        self.connection()
            .produce(
                &topic,
                Some(partition),
                &Message::new(Vec::new()),
                Some((DEAD_REMOVED, id)),
            )
            .await
            .map_err(transport_error)?;
        Ok(true)
    }
}

/// `partition:offset`.
fn parse_id(id: &str) -> Option<(i32, i64)> {
    let (partition, offset) = id.split_once(':')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

/// Every dead letter of the dead-letter topic `topic` not removed by a
/// marker, oldest first within each partition, partitions in order.
fn read_dead_letters(
    connection: &Arc<Connection>,
    topic: &str,
) -> Result<Vec<DeadLetter>, TransportError> {
    let mut config = base_config(&connection.config, &connection.bootstrap);
    // Its own group, never joined (assigned) and never committed.
    config
        .set(
            "group.id",
            format!(
                "{}.admin.{}",
                connection.config.prefix,
                busrpc_core::transport::unique_id()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let reader: BaseConsumer = config.create().map_err(transport_error)?;
    let count = reader
        .fetch_metadata(Some(topic), WAIT)
        .map_err(transport_error)?
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    let mut ends = std::collections::BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..i32::try_from(count).unwrap_or(i32::MAX) {
        let (low, high) = reader
            .fetch_watermarks(topic, p, WAIT)
            .map_err(transport_error)?;
        if high > low {
            ends.insert(p, high);
            assignment
                .add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(transport_error)?;
        }
    }
    let mut records: Vec<(i32, i64, DeadLetter)> = Vec::new();
    let mut removed = HashSet::new();
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    reader.assign(&assignment).map_err(transport_error)?;
    let give_up = Instant::now() + WAIT * 3;
    let mut read_to: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
    while ends
        .iter()
        .any(|(p, end)| read_to.get(p).is_none_or(|at| at + 1 < *end))
    {
        if Instant::now() > give_up {
            return Err(TransportError::Unavailable(
                format!("reading {topic} to its end took longer than {:?}", WAIT * 3).into(),
            ));
        }
        let Some(record) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let record = record.map_err(transport_error)?;
        use rdkafka::Message as _;
        let (p, offset) = (record.partition(), record.offset());
        read_to.insert(p, offset);
        let message = to_message(&record);
        if let Some(named) = message.headers.get(DEAD_REMOVED) {
            removed.insert(named.to_owned());
            continue;
        }
        let mut letter = DeadLetter::new(format!("{p}:{offset}"), message);
        if let Some(at) = published_at(&record) {
            letter = letter.with_at(at);
        }
        records.push((p, offset, letter));
    }
    records.sort_by_key(|(p, offset, _)| (*p, *offset));
    Ok(records
        .into_iter()
        .map(|(_, _, letter)| letter)
        .filter(|l| !removed.contains(&l.id))
        .collect())
}

/// Runs `work` (librdkafka's blocking calls) off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TransportError> + Send + 'static,
) -> Result<T, TransportError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letters_id_is_its_partition_and_offset() {
        assert_eq!(parse_id("2:17"), Some((2, 17)));
        assert_eq!(parse_id("1796661340367-0"), None, "a Redis id is none");
        assert_eq!(parse_id("x:1"), None);
    }
}
