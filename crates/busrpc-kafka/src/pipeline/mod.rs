//! The pipeline dialect: the wire format of the Python library busrpc grew
//! out of (JSON-RPC 2.0 over Kafka with MessagePack), so that busrpc servers
//! answer its callers and busrpc clients call its receivers, unchanged.
//!
//! The wire, as the original writes it (docs/PROTOCOL.md, "The pipeline
//! dialect"):
//!
//! - a request for service `S` is a record on `S_method_requests`,
//!   partition 0, with no key and no headers; its value a MessagePack map
//!   `jsonrpc`, `method`, `params` (never absent), `id` (a string of decimal
//!   digits; absent in a notification);
//! - every reply, for every service and caller, is a record on the one topic
//!   `method_results`, partition 0, keyed by the UTF-8 bytes of the
//!   request's id; its value a map `jsonrpc`, `id`, then `result` or `error`
//!   (`code`, `message`).
//!
//! The engine above speaks busrpc's own messages; this module translates at
//! the edge. Requests read are handed up as MessagePack with the headers the
//! wire lacks (`reply-to: method_results`); replies published to
//! `method_results` are re-encoded one record per response, keyed by id. A
//! client's numeric call ids go out as `{nonce}{id}`, its inbox's 20-digit
//! random nonce followed by the id, so its replies can be told from every
//! other caller's on the shared topic by their key alone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use busrpc_core::codec::Codec;
use busrpc_core::transport::{Deliveries, Demand, Inbox, Transport, TransportError};
use busrpc_core::{header, Message};
use rdkafka::producer::FutureRecord;
use rdkafka::producer::Producer as _;
use rdkafka::util::Timeout;
use rdkafka::{Message as _, Offset};
use serde_json::Value;

mod receiver;

use crate::config::{Dialect, KafkaConfig};
use crate::{base_config, lock, of_url, transport_error, KafkaTransport};

/// The topic every reply goes to.
pub const RESULTS_TOPIC: &str = "method_results";

/// The end of a service's request topic's name, after the service's.
const REQUESTS_SUFFIX: &str = "_method_requests";

/// The digits of a client's nonce. The original's ids (its clock in 100 ns
/// units) have 17 digits now and will for centuries, so an id of a busrpc
/// client (at least 21 digits) never equals one of a Python caller.
const NONCE_DIGITS: usize = 20;

/// The only partition either side of the original reads.
const PARTITION: i32 = 0;

/// The Kafka transport in the pipeline dialect ([`Dialect::Pipeline`],
/// `kafka://host:port?dialect=pipeline`).
///
/// - A server of `S` reads partition 0 of `S_method_requests` from the
///   offset committed by `pipeline_group` (default `default`, the Python
///   receivers' own), and commits what it has answered there: a busrpc
///   server resumes where a Python receiver stopped, and a Python receiver
///   where busrpc stopped. Records with a key are skipped, as the original
///   skips them. The busrpc servers of `S` form the consumer group
///   `busrpc.pipeline.S_method_requests`, in which one holds the partition
///   and the others stand by, taking it over when it stops or dies. Python
///   receivers form no group: never run one beside a busrpc server of its
///   service, for both would answer every request.
/// - Replies go to `method_results`, partition 0, keyed by the request's id;
///   a batch's responses as one record each. The error objects keep `code`
///   and `message` only, as the original's.
/// - A client reads `method_results` partition 0 from its end at the time
///   its inbox opens, and keeps only the records keyed by its own ids. Every
///   client reads every reply of every service: the cost of the shared
///   topic. It never commits, so the Python callers' offsets on it are
///   untouched. Its calls time out by their deadline like any busrpc call,
///   though no deadline travels (the wire has no headers; nor do trace
///   context or signatures).
/// - Both topics are created with one partition when missing.
///
/// Cheap to clone; clones share the producer.
#[derive(Clone, Debug)]
pub struct PipelineTransport {
    kafka: KafkaTransport,
    group: String,
    /// Ids of calls published without an inbox of this transport.
    nonce: Arc<str>,
}

impl PipelineTransport {
    /// Connects to `kafka://host:port[,host:port...]?dialect=pipeline[&options]`
    /// (or `kafka-mock://...?dialect=pipeline`). See [`KafkaConfig`].
    pub async fn connect(url: &str) -> Result<Self, TransportError> {
        let config = KafkaConfig::from_url(url)?;
        Self::connect_with(config).await.map_err(|e| of_url(url, e))
    }

    /// Connects with `config`, whose dialect must be [`Dialect::Pipeline`].
    pub async fn connect_with(config: KafkaConfig) -> Result<Self, TransportError> {
        let Dialect::Pipeline { group } = config.dialect.clone() else {
            return Err(TransportError::InvalidConfig(
                "the pipeline transport needs dialect=pipeline".into(),
            ));
        };
        let kafka = KafkaTransport::connect_dialect(config).await?;
        Ok(Self {
            kafka,
            group,
            nonce: new_nonce().into(),
        })
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &KafkaConfig {
        self.kafka.config()
    }

    /// The mock cluster, for `kafka-mock://` transports.
    #[cfg(feature = "mock")]
    #[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
    pub fn mock_cluster(&self) -> Option<&Arc<crate::MockBrokers>> {
        self.kafka.mock_cluster()
    }

    async fn publish_reply(&self, message: &Message) -> Result<(), TransportError> {
        let value = payload_json(message, "reply")?;
        // The key of a request answered with a null id (its id unread: it
        // was too large to read), which only a single response can use.
        let (responses, fallback) = match value {
            Value::Array(responses) => (responses, None),
            response => (vec![response], message.headers.get(REQUEST_KEY)),
        };
        for response in &responses {
            match encode_response(response, fallback) {
                Some((key, value)) => self.produce(RESULTS_TOPIC, Some(&key), &value).await?,
                // A parse error of a request whose id could not be read: no
                // original caller could match it.
                None => tracing::warn!(
                    reply = %response,
                    "a reply without an id has no key to go by on method_results; dropped"
                ),
            }
        }
        Ok(())
    }

    async fn publish_request(&self, topic: &str, message: &Message) -> Result<(), TransportError> {
        let request = payload_json(message, "request")?;
        let nonce = message
            .headers
            .get(header::REPLY_TO)
            .and_then(|to| to.strip_prefix(RESULTS_TOPIC)?.strip_prefix('/'))
            .unwrap_or(&self.nonce);
        let value = encode_request(&request, nonce).map_err(TransportError::Rejected)?;
        self.kafka.inner.check_served(topic).await?;
        self.produce(topic, None, &value).await
    }

    /// Produces to partition 0 of `topic`, with no headers.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &[u8],
    ) -> Result<(), TransportError> {
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(topic).partition(PARTITION).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.kafka
            .inner
            .producer
            .send(record, Timeout::Never)
            .await
            .map(|_| ())
            .map_err(|(e, _)| transport_error(e))
    }

    /// Creates `topic` with one partition unless it exists, and warns when
    /// it has more: the original reads partition 0 only, and so does this.
    /// Once per topic and transport: a client's every inbox asks.
    async fn ensure_topic(&self, topic: &str) -> Result<(), TransportError> {
        let inner = &self.kafka.inner;
        if lock(&inner.known_topics).contains(topic) {
            return Ok(());
        }
        // Its own lookup first: the mock cluster answers a metadata request
        // for a topic it lacks with an error, not an empty topic.
        inner.ensure_topic(topic, 1, None, false).await?;
        let partitions = inner.partition_count(topic).await?;
        if partitions > 1 {
            tracing::warn!(
                topic,
                partitions,
                "the pipeline dialect reads partition 0 only: records on the others are never read"
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for PipelineTransport {
    async fn publish(&self, address: &str, message: Message) -> Result<(), TransportError> {
        if address == RESULTS_TOPIC || address.starts_with("method_results/") {
            self.publish_reply(&message).await
        } else if address.ends_with(REQUESTS_SUFFIX) {
            self.publish_request(address, &message).await
        } else {
            Err(TransportError::NotServed(format!(
                "{address} (the pipeline dialect has only S_method_requests and method_results)"
            )))
        }
    }

    /// Joins the busrpc group of the service's servers, in which one
    /// holds the partition and the others stand by (see `receiver.rs`);
    /// reads one request ahead of the server.
    async fn consume(
        &self,
        address: &str,
        _group: &str,
        _demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        self.ensure_topic(address).await?;
        self.ensure_topic(RESULTS_TOPIC).await?;
        let inner = &self.kafka.inner;
        let mut committer = base_config(&inner.config, &inner.bootstrap);
        committer
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let committer = committer.create().map_err(transport_error)?;
        let progress = receiver::Progress::new(address, committer, self.clone());
        let mut member = base_config(&inner.config, &inner.bootstrap);
        member
            .set("group.id", format!("busrpc.pipeline.{address}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // The rebalance callback assigns and revokes the partition whole.
            .set("partition.assignment.strategy", "range");
        let consumer = member
            .create_with_context(receiver::Handover(progress.clone()))
            .map_err(transport_error)?;
        receiver::start(address, consumer, progress, inner.config.join_wait).await
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        self.ensure_topic(RESULTS_TOPIC).await?;
        let inner = self.kafka.inner.clone();
        // From the end: nothing before it can answer an id not sent yet.
        let end = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_watermarks(RESULTS_TOPIC, PARTITION, Duration::from_secs(10))
                .map(|(_, high)| high)
        })
        .await
        .map_err(|e| TransportError::Unavailable(Box::new(e)))?
        .map_err(transport_error)?;
        let nonce = new_nonce();
        // A group id of its own that never commits: the Python callers'
        // offsets in `default` stay theirs.
        let group = format!("busrpc.pipeline.{nonce}");
        let consumer =
            self.kafka
                .inner
                .reply_reader(&group, RESULTS_TOPIC, PARTITION, Offset::Offset(end))?;
        let address = format!("{RESULTS_TOPIC}/{nonce}");
        let messages =
            futures_util::stream::unfold((consumer, nonce), |(consumer, nonce)| async move {
                loop {
                    let reply = match consumer.recv().await {
                        Err(e) => Err(transport_error(e)),
                        Ok(record) => {
                            let Some(id) = record.key().and_then(|key| own_id(key, &nonce)) else {
                                continue;
                            };
                            Ok(Message::new(decode_reply(
                                record.payload().unwrap_or_default(),
                                id,
                            )))
                        }
                    };
                    return Some((reply, (consumer, nonce)));
                }
            });
        Ok(Inbox::new(address, messages))
    }

    fn service_address(&self, service: &str) -> String {
        format!("{service}{REQUESTS_SUFFIX}")
    }

    fn max_payload_bytes(&self) -> Option<usize> {
        self.kafka.max_payload_bytes()
    }
}

/// A random nonce of [`NONCE_DIGITS`] decimal digits, the first not 0.
fn new_nonce() -> String {
    let random = u128::from_str_radix(&busrpc_core::transport::unique_id(), 16).unwrap_or(0);
    let low = 10u128.pow(NONCE_DIGITS as u32 - 1);
    (low + random % (9 * low)).to_string()
}

/// The call id a record's key holds if it is `{nonce}{id}`.
fn own_id(key: &[u8], nonce: &str) -> Option<u64> {
    let rest = key.strip_prefix(nonce.as_bytes())?;
    // Digits only: u64's parser would take a leading '+'.
    if !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(rest).ok()?.parse().ok()
}

fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_str(out, text);
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    let _ = rmp_serde::encode::write(out, value);
}

/// `payload` in `codec`, as a JSON value.
fn decode(codec: Codec, payload: &[u8]) -> Result<Value, String> {
    let json = codec.decode(payload).map_err(|e| e.to_string())?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// The busrpc message about to be translated, as a JSON value, whatever
/// its encoding: a `what` (request or reply) it cannot read is refused.
fn payload_json(message: &Message, what: &str) -> Result<Value, TransportError> {
    Codec::from_content_type(message.headers.get(header::CONTENT_TYPE))
        .map_err(|e| e.to_string())
        .and_then(|codec| decode(codec, &message.payload))
        .map_err(|e| TransportError::Rejected(format!("a {what} that cannot be read: {e}")))
}

/// The text of an id as the key of its reply.
fn id_text(id: &Value) -> Option<String> {
    match id {
        Value::String(id) => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The header in which a delivery's acknowledger hands the transport the
/// key of its request, for a reply with a null id (see [`encode_response`]).
/// Never sent: the wire has no headers.
const REQUEST_KEY: &str = "busrpc-pipeline-key";

/// Whether a MessagePack reply may hold a null id: the str "id" followed by
/// nil somewhere in it. Cheap, and only ever too eager.
fn may_have_null_id(reply: &[u8]) -> bool {
    reply.windows(4).any(|w| w == [0xa2, b'i', b'd', 0xc0])
}

/// The id of a MessagePack request, as its reply's key.
fn request_key(request: &[u8]) -> Option<String> {
    id_text(decode(Codec::MessagePack, request).ok()?.get("id")?)
}

/// A busrpc request (JSON) as the original's MessagePack map: `jsonrpc`,
/// `method`, `params` (`[]` when absent), then `id` as `{nonce}{id}`.
fn encode_request(request: &Value, nonce: &str) -> Result<Vec<u8>, String> {
    let Value::Object(request) = request else {
        return Err(match request {
            Value::Array(_) => {
                "the pipeline dialect has no batches: its receivers take one call per record".into()
            }
            _ => "a request must be a JSON object".into(),
        });
    };
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or("a request needs a method")?;
    let id = match request.get("id") {
        None => None,
        Some(id) => Some(id.as_u64().ok_or_else(|| {
            format!("the pipeline dialect sends ids as decimal digits: {id} is not a whole number")
        })?),
    };
    let mut out = Vec::with_capacity(64);
    let _ = rmp::encode::write_map_len(&mut out, if id.is_some() { 4 } else { 3 });
    write_str(&mut out, "jsonrpc");
    write_str(&mut out, "2.0");
    write_str(&mut out, "method");
    write_str(&mut out, method);
    write_str(&mut out, "params");
    match request.get("params") {
        Some(params) => write_value(&mut out, params),
        None => {
            let _ = rmp::encode::write_array_len(&mut out, 0);
        }
    }
    if let Some(id) = id {
        write_str(&mut out, "id");
        write_str(&mut out, &format!("{nonce}{id}"));
    }
    Ok(out)
}

/// One response as the original's reply: the record key (the id's text)
/// and the MessagePack map `jsonrpc`, `id`, then `result` or `error`
/// (`code` and `message` only). A response with a null id is keyed by
/// `fallback` (its request's id, read by the transport), or `None` without.
fn encode_response(response: &Value, fallback: Option<&str>) -> Option<(String, Vec<u8>)> {
    let id = response.get("id").unwrap_or(&Value::Null);
    let key = id_text(id).or_else(|| fallback.map(str::to_owned))?;
    let mut out = Vec::with_capacity(64);
    let _ = rmp::encode::write_map_len(&mut out, 3);
    write_str(&mut out, "jsonrpc");
    write_str(&mut out, "2.0");
    write_str(&mut out, "id");
    write_value(&mut out, id);
    if let Some(error) = response.get("error") {
        write_str(&mut out, "error");
        let _ = rmp::encode::write_map_len(&mut out, 2);
        write_str(&mut out, "code");
        write_value(&mut out, error.get("code").unwrap_or(&Value::from(-32603)));
        write_str(&mut out, "message");
        write_value(&mut out, error.get("message").unwrap_or(&Value::from("")));
    } else {
        write_str(&mut out, "result");
        write_value(&mut out, response.get("result").unwrap_or(&Value::Null));
    }
    Some((key, out))
}

/// A reply read off `method_results` as the JSON response to call `id`.
/// The original's quirks are undone: a reply holding both `error` and
/// `result` (an unknown method called with one argument) is the error it
/// is. A reply that is not a MessagePack map is answered -32603, so that
/// the caller hears at once instead of at its deadline.
fn decode_reply(payload: &[u8], id: u64) -> Vec<u8> {
    let mut response = match decode(Codec::MessagePack, payload) {
        Ok(Value::Object(response)) => response,
        Ok(other) => return unreadable_reply(id, &format!("not a map but {other}")),
        Err(e) => return unreadable_reply(id, &e),
    };
    if response.contains_key("error") {
        response.remove("result");
    }
    response.insert("id".into(), Value::from(id));
    response.insert("jsonrpc".into(), Value::from("2.0"));
    serde_json::to_vec(&Value::Object(response)).unwrap_or_default()
}

fn unreadable_reply(id: u64, reason: &str) -> Vec<u8> {
    let data = format!("the receiver's reply could not be read: {reason}");
    let error = serde_json::json!({"code": -32603, "message": "Internal error", "data": data});
    serde_json::to_vec(&serde_json::json!({"jsonrpc": "2.0", "id": id, "error": error}))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(value: &Value) -> Vec<u8> {
        rmp_serde::to_vec(value).unwrap()
    }

    /// `items` as MessagePack writes them, each item a fixstr (a string
    /// of under 32 bytes: its length in a byte, then the bytes) or, given
    /// as `[..]`, raw bytes.
    fn packed(items: &[Item<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Str(text) => {
                    out.push(0xa0 | u8::try_from(text.len()).unwrap());
                    out.extend(text.as_bytes());
                }
                Item::Raw(raw) => out.extend(*raw),
            }
        }
        out
    }

    enum Item<'a> {
        Str(&'a str),
        Raw(&'a [u8]),
    }
    use Item::{Raw, Str};

    /// The bytes as the original's `msgpack.packb` writes them: a fixmap
    /// of str keys in the original's order.
    #[test]
    fn a_call_goes_out_as_the_originals_map_in_its_order() {
        let call =
            serde_json::json!({"jsonrpc": "2.0", "method": "echo", "params": ["hello"], "id": 7});
        let bytes = encode_request(&call, "12345678901234567890").unwrap();
        let expected = packed(&[
            Raw(&[0x84]),
            Str("jsonrpc"),
            Str("2.0"),
            Str("method"),
            Str("echo"),
            Str("params"),
            Raw(&[0x91]),
            Str("hello"),
            Str("id"),
            Str("123456789012345678907"),
        ]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn params_are_never_absent_and_a_notification_has_no_id() {
        let bytes = encode_request(
            &serde_json::json!({"jsonrpc": "2.0", "method": "tick"}),
            "12345678901234567890",
        )
        .unwrap();
        let expected = packed(&[
            Raw(&[0x83]),
            Str("jsonrpc"),
            Str("2.0"),
            Str("method"),
            Str("tick"),
            Str("params"),
            Raw(&[0x90]),
        ]);
        assert_eq!(bytes, expected);
        let named = encode_request(
            &serde_json::json!({"jsonrpc": "2.0", "method": "add", "params": {"a": 1}, "id": 1}),
            "1",
        )
        .unwrap();
        let back: Value = rmp_serde::from_slice(&named).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"jsonrpc": "2.0", "method": "add", "params": {"a": 1}, "id": "11"})
        );
    }

    #[test]
    fn batches_and_ids_that_are_not_whole_numbers_are_refused() {
        let batch = serde_json::json!([{"jsonrpc": "2.0", "method": "a", "id": 1}]);
        assert!(encode_request(&batch, "1")
            .unwrap_err()
            .contains("no batches"));
        let string_id = serde_json::json!({"jsonrpc": "2.0", "method": "a", "id": "x"});
        assert!(encode_request(&string_id, "1")
            .unwrap_err()
            .contains("decimal digits"));
    }

    #[test]
    fn a_reply_is_keyed_by_its_id_and_keeps_only_code_and_message() {
        let reply = serde_json::json!({"jsonrpc": "2.0", "error": {"code": -32602, "message": "Invalid params", "data": "why"}, "id": "16849"});
        let (key, bytes) = encode_response(&reply, None).unwrap();
        assert_eq!(key, "16849");
        let expected = packed(&[
            Raw(&[0x83]),
            Str("jsonrpc"),
            Str("2.0"),
            Str("id"),
            Str("16849"),
            Str("error"),
            Raw(&[0x82]),
            Str("code"),
            Raw(&[0xd1, 0x80, 0xa6]), // -32602, an int 16 as msgpack.packb writes it
            Str("message"),
            Str("Invalid params"),
        ]);
        assert_eq!(bytes, expected);
        let (key, bytes) = encode_response(
            &serde_json::json!({"jsonrpc": "2.0", "result": "RPC hello!", "id": 3}),
            None,
        )
        .unwrap();
        assert_eq!(key, "3");
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"jsonrpc": "2.0", "id": 3, "result": "RPC hello!"})
        );
        let unread = serde_json::json!({"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null});
        assert!(encode_response(&unread, None).is_none());
        let (key, bytes) = encode_response(&unread, Some("777")).unwrap();
        assert_eq!(key, "777", "keyed by the request's id");
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            back["id"],
            Value::Null,
            "the reply still says the id was not read"
        );
        let request = msgpack(
            &serde_json::json!({"jsonrpc": "2.0", "method": "m", "params": [], "id": "777"}),
        );
        assert_eq!(request_key(&request).as_deref(), Some("777"));
        assert!(may_have_null_id(&msgpack(&unread)));
        assert!(!may_have_null_id(&msgpack(
            &serde_json::json!({"jsonrpc": "2.0", "result": 1, "id": "777"})
        )));
    }

    #[test]
    fn replies_are_told_apart_by_their_key() {
        let nonce = new_nonce();
        assert_eq!(nonce.len(), NONCE_DIGITS);
        assert!(nonce.bytes().all(|b| b.is_ascii_digit()) && !nonce.starts_with('0'));
        assert_ne!(nonce, new_nonce());
        assert_eq!(own_id(format!("{nonce}42").as_bytes(), &nonce), Some(42));
        assert_eq!(
            own_id(nonce.as_bytes(), &nonce),
            None,
            "no id after the nonce"
        );
        assert_eq!(
            own_id(b"16849000000000000", &nonce),
            None,
            "a Python caller's id"
        );
        assert_eq!(own_id(format!("{nonce}4x").as_bytes(), &nonce), None);
    }

    #[test]
    fn an_error_beside_a_result_is_the_error() {
        let quirk = msgpack(
            &serde_json::json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -32601, "message": "Method not found"}, "result": "hello"}),
        );
        let reply: Value = serde_json::from_slice(&decode_reply(&quirk, 9)).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"jsonrpc": "2.0", "id": 9, "error": {"code": -32601, "message": "Method not found"}})
        );
    }

    #[test]
    fn an_unreadable_reply_is_answered_at_once() {
        let reply: Value = serde_json::from_slice(&decode_reply(b"\xc1", 4)).unwrap();
        assert_eq!(reply["id"], 4);
        assert_eq!(reply["error"]["code"], -32603);
        let reply: Value =
            serde_json::from_slice(&decode_reply(&msgpack(&Value::from(5)), 4)).unwrap();
        assert_eq!(reply["error"]["code"], -32603);
    }
}
