//! A client's inbox in the busrpc dialect: a topic of its own, or a
//! partition of a shared reply topic; named, kept alive and swept as
//! [`lifecycle`] says.

use std::sync::Arc;
use std::time::Duration;

use busrpc_core::transport::{Inbox, TransportError};
use futures_util::stream;
use rdkafka::admin::AdminOptions;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::Producer as _;
use rdkafka::Offset;

use crate::connection::{transport_error, Connection};
use crate::record::{record_headers, to_message};

mod lifecycle;

pub(crate) use lifecycle::{parse_shared, sweep, CLIENT_HEADER};

/// An inbox topic of the client's own (`inbox=topic`).
pub(crate) async fn topic(connection: Arc<Connection>) -> Result<Inbox, TransportError> {
    let topic = lifecycle::name(
        &connection.inbox_prefix,
        connection.config.inbox_retention_ms,
        &connection.name(),
    );
    connection
        .ensure_topic(&topic, 1, Some(connection.config.inbox_retention_ms), true)
        .await?;
    // From the beginning of a fresh topic: a reply produced before the
    // first fetch is read all the same.
    let consumer = connection.assigned_reader(&topic, &topic, 0, Offset::Beginning)?;
    // The consumer first, then the transport: a tuple drops in that
    // order, so the brokers (a mock cluster) outlive the consumer's close.
    // Its keep-alive records tell the servers' sweepers it is alive; the
    // writer stops once the inbox is gone (its sender dropped).
    let (alive, gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(lifecycle::keep_alive(
        Arc::downgrade(&connection),
        topic.clone(),
        lifecycle::interval(connection.config.inbox_retention_ms),
        gone,
    ));
    let messages = stream::unfold((consumer, connection.clone(), alive), |state| async move {
        let next = loop {
            match state.0.recv().await {
                Ok(record) if is_keepalive(&record) => continue,
                Ok(record) => break Ok(to_message(&record)),
                Err(e) => break Err(transport_error(e)),
            }
        };
        Some((next, state))
    });
    let name = topic.clone();
    Ok(Inbox::new(topic, messages).on_close(async move {
        if connection.mock.is_some() {
            return; // the mock cluster cannot delete topics
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        if let Err(e) = connection.admin.delete_topics(&[&name], &options).await {
            tracing::warn!(inbox = %name, error = %e, "deleting the inbox topic failed");
        }
    }))
}

/// A partition of the shared reply topic (`inbox=shared`), read from its
/// end at connection, keeping only the records for this client.
pub(crate) async fn shared(
    connection: Arc<Connection>,
    partitions: i32,
) -> Result<Inbox, TransportError> {
    let topic = lifecycle::shared_topic(&connection.inbox_prefix);
    connection
        .ensure_topic(
            &topic,
            partitions,
            Some(connection.config.inbox_retention_ms),
            false,
        )
        .await?;
    let client = connection.name();
    let (partition, end) = {
        let (connection, topic, client) = (connection.clone(), topic.clone(), client.clone());
        tokio::task::spawn_blocking(move || shared_partition(&connection, &topic, &client))
            .await
            .map_err(|e| TransportError::Other(Box::new(e)))??
    };
    // From the end as it was before any request: earlier replies are
    // other clients', and a reply to this one cannot be missed.
    let group = format!("{topic}.{client}");
    let consumer = connection.assigned_reader(&group, &topic, partition, Offset::Offset(end))?;
    let address = lifecycle::shared_address(&topic, partition, &client);
    tracing::debug!(%address, end, "reading a shared inbox");
    let messages = stream::unfold((consumer, connection, client), |state| async move {
        let next = loop {
            match state.0.recv().await {
                Ok(record) if !is_for(&record, &state.2) => continue,
                Ok(record) => break Ok(to_message(&record)),
                Err(e) => break Err(transport_error(e)),
            }
        };
        Some((next, state))
    });
    Ok(Inbox::new(address, messages))
}

/// The partition of the shared reply topic `client` reads (one of those
/// the broker reports, by a hash of its name), and that partition's end.
fn shared_partition(
    connection: &Connection,
    topic: &str,
    client: &str,
) -> Result<(i32, i64), TransportError> {
    use std::hash::BuildHasher;
    let wait = Duration::from_secs(10);
    let client_of = connection.producer.client();
    // A topic just created may be reported without partitions for a moment.
    let give_up = std::time::Instant::now() + wait;
    let count = loop {
        let metadata = client_of
            .fetch_metadata(Some(topic), wait)
            .map_err(transport_error)?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len());
        if count > 0 {
            break count;
        }
        if std::time::Instant::now() >= give_up {
            return Err(TransportError::Unavailable(
                format!("the shared reply topic {topic} has no partitions").into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let hash = std::collections::hash_map::RandomState::new().hash_one(client);
    let partition = i32::try_from(hash % count as u64).unwrap_or(0);
    let (_, end) = client_of
        .fetch_watermarks(topic, partition, wait)
        .map_err(transport_error)?;
    Ok((partition, end))
}

fn is_keepalive(record: &BorrowedMessage<'_>) -> bool {
    record_headers(record).any(|h| h.key == lifecycle::KEEPALIVE_HEADER)
}

/// Whether a record of the shared reply topic is for `client`.
fn is_for(record: &BorrowedMessage<'_>, client: &str) -> bool {
    record_headers(record).any(|h| h.key == CLIENT_HEADER && h.value == Some(client.as_bytes()))
}
