//! A Kafka record as a busrpc message.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use busrpc_core::{header, Headers, Message};
use rdkafka::message::{BorrowedMessage, Header, Headers as _};
use rdkafka::Message as _;

/// A record's headers, skipping any whose name is not UTF-8: rdkafka (0.39)
/// unwraps that check and panics, and a record from a client that writes
/// other bytes there must not take the consumer thread down with it (each
/// server of the service would read it, and die, in turn). A build with
/// `panic = "abort"` cannot be saved so; a warning names the record.
pub(crate) fn record_headers<'a, M: rdkafka::Message>(
    record: &'a M,
) -> impl Iterator<Item = Header<'a, &'a [u8]>> + 'a {
    let headers = record.headers();
    let count = headers.map_or(0, |h| h.count());
    (0..count).filter_map(move |index| {
        let headers = headers?;
        match std::panic::catch_unwind(AssertUnwindSafe(|| headers.try_get(index))) {
            Ok(header) => header,
            Err(_) => {
                tracing::warn!(
                    topic = record.topic(),
                    partition = record.partition(),
                    offset = record.offset(),
                    index,
                    "a record header's name is not UTF-8; the header is skipped"
                );
                None
            }
        }
    })
}

/// The message a record carries.
pub(crate) fn to_message(record: &BorrowedMessage<'_>) -> Message {
    let mut headers = Headers::new();
    for h in record_headers(record) {
        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
        headers.insert(header::name(h.key), Arc::<str>::from(value));
    }
    Message {
        payload: record.payload().map(bytes_of).unwrap_or_default(),
        headers,
    }
}

/// When the record was made: its timestamp (the producer's clock with
/// Kafka's default `CreateTime`, the broker's with `LogAppendTime`), if it
/// has one.
pub(crate) fn published_at(record: &BorrowedMessage<'_>) -> Option<std::time::SystemTime> {
    let millis = u64::try_from(record.timestamp().to_millis()?).ok()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(millis))
}

/// A record's payload as the bytes of a message.
pub(crate) fn bytes_of(payload: &[u8]) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(payload)
}
