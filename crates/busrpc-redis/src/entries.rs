//! Stream entries to and from busrpc messages.
//!
//! An entry's fields are `payload` (the message's bytes) and one field per
//! header, so `redis-cli` sees `payload`, `reply-to`, `deadline`, ...

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use busrpc_core::{header, Headers, Message};
use bytes::Bytes;
use redis::Value;

/// The field holding the payload.
pub(crate) const PAYLOAD: &str = "payload";

/// One entry read from a stream.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) message: Message,
}

impl Entry {
    /// When Redis added the entry, by its clock: an id Redis made starts
    /// with the Unix time in milliseconds (`1700000000000-0`). `None` for
    /// an id a publisher chose that is not one.
    pub(crate) fn added_at(&self) -> Option<std::time::SystemTime> {
        let millis = self.id.split_once('-').map_or(&*self.id, |(ms, _)| ms);
        let millis: u64 = millis.parse().ok()?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(millis))
    }
}

/// `XADD address MAXLEN ~ max_len * payload … header value …`.
pub(crate) fn xadd(address: &str, message: &Message, max_len: u64) -> redis::Cmd {
    entry_cmd(address, &["MAXLEN", "~"], Some(max_len), message)
}

/// `XADD address * payload … header value …`: never trims the stream.
pub(crate) fn xadd_uncapped(address: &str, message: &Message) -> redis::Cmd {
    entry_cmd(address, &[], None, message)
}

/// `XADD address NOMKSTREAM MAXLEN ~ max_len * …`: to a stream that must
/// exist already (an inbox), or not at all.
pub(crate) fn xadd_reply(address: &str, message: &Message, max_len: u64) -> redis::Cmd {
    entry_cmd(
        address,
        &["NOMKSTREAM", "MAXLEN", "~"],
        Some(max_len),
        message,
    )
}

/// `EVALSHA sha 1 address bound payload … header value …` (or `EVAL` with
/// the script itself): a request added unless its stream holds `bound`
/// entries already (see `bounded_xadd.lua`).
pub(crate) fn bounded_xadd(
    eval: &str,
    script: &str,
    address: &str,
    message: &Message,
    bound: u64,
) -> redis::Cmd {
    let args = 4 + FIELDS_ARGS + 2 * message.headers.len();
    let bytes = eval.len() + script.len() + 1 + address.len() + 20 + fields_bytes(message);
    let mut cmd = redis::Cmd::with_capacity(args, bytes);
    cmd.arg(eval).arg(script).arg(1).arg(address).arg(bound);
    add_fields(&mut cmd, message);
    cmd
}

/// Arguments of [`add_fields`] before the headers: `payload` and its value.
const FIELDS_ARGS: usize = 2;

/// The bytes [`add_fields`] writes.
fn fields_bytes(message: &Message) -> usize {
    PAYLOAD.len()
        + message.payload.len()
        + message
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
}

/// Appends an entry's fields: `payload` and its bytes, then a name and a
/// value per header.
fn add_fields(cmd: &mut redis::Cmd, message: &Message) {
    cmd.arg(PAYLOAD).arg(&message.payload[..]);
    for (name, value) in message.headers.iter() {
        if name == PAYLOAD {
            tracing::warn!("a header named \"payload\" cannot travel on Redis and was left out");
            continue;
        }
        cmd.arg(name).arg(value);
    }
}

/// `XADD address options… max_len * payload … header value …`, built in
/// buffers sized up front: growing them argument by argument cost several
/// allocations per message, on every request and every reply.
fn entry_cmd(
    address: &str,
    options: &[&str],
    max_len: Option<u64>,
    message: &Message,
) -> redis::Cmd {
    const XADD: &str = "XADD";
    // XADD, the address, the options, max_len, "*", then the fields.
    let args = 4 + options.len() + FIELDS_ARGS + 2 * message.headers.len();
    let bytes = XADD.len()
        + address.len()
        + options.iter().map(|o| o.len()).sum::<usize>()
        + 20 // max_len's digits, at most
        + 1 // "*"
        + fields_bytes(message);
    let mut cmd = redis::Cmd::with_capacity(args, bytes);
    cmd.arg(XADD).arg(address);
    for option in options {
        cmd.arg(*option);
    }
    if let Some(max_len) = max_len {
        cmd.arg(max_len);
    }
    cmd.arg("*");
    add_fields(&mut cmd, message);
    cmd
}

pub(crate) fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes)),
        Value::SimpleString(s) => Some(Cow::Borrowed(s)),
        _ => None,
    }
}

/// A message from an entry's flat field list. An entry without a `payload`
/// field (an inbox's creation marker, an entry some other tool wrote, one
/// deleted while pending) gives an empty payload, which a server answers
/// -32600 or counts and acknowledges: every entry read must be settled, or
/// it stays pending and stops the stream's trimming for good.
fn message(fields: Value) -> Message {
    let mut payload = Bytes::new();
    let mut headers = Headers::new();
    let mut field = |name: Value, value: Value| {
        let Some(name) = text(&name) else { return };
        if name == PAYLOAD {
            payload = match value {
                Value::BulkString(bytes) => Bytes::from(bytes),
                Value::SimpleString(s) => Bytes::from(s),
                _ => Bytes::new(),
            };
        } else if let Some(value) = text(&value) {
            headers.insert(header::name(&name), Arc::<str>::from(value));
        }
    };
    match fields {
        Value::Array(items) => {
            let mut items = items.into_iter();
            while let (Some(name), Some(value)) = (items.next(), items.next()) {
                field(name, value);
            }
        }
        Value::Map(pairs) => pairs.into_iter().for_each(|(n, v)| field(n, v)),
        _ => {}
    }
    Message { payload, headers }
}

/// An entry id, taken rather than copied when it is valid UTF-8 (always,
/// from Redis).
fn id(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Entries from `[[id, fields], ...]`, one for every item with an id,
/// whatever its fields hold (see [`message`]).
pub(crate) fn entries(list: Value) -> Vec<Entry> {
    let Value::Array(list) = list else {
        return Vec::new();
    };
    list.into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                tracing::warn!(?item, "Redis sent a stream entry that is not [id, fields]");
                return None;
            };
            let mut pair = pair.into_iter();
            let (Some(id_value), fields) = (pair.next(), pair.next().unwrap_or(Value::Nil)) else {
                return None;
            };
            Some(Entry {
                id: id(id_value)?,
                message: message(fields),
            })
        })
        .collect()
}

/// The entries of the first (only) stream of an `XREAD`/`XREADGROUP`
/// reply: `[[key, entries]]` in RESP2, `{key: entries}` in RESP3, nil on timeout.
pub(crate) fn entries_of_first_stream(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Array(streams) => match streams.into_iter().next() {
            Some(Value::Array(mut key_and_entries)) if key_and_entries.len() == 2 => {
                entries(key_and_entries.pop().unwrap_or(Value::Nil))
            }
            _ => Vec::new(),
        },
        Value::Map(streams) => streams
            .into_iter()
            .next()
            .map(|(_, e)| entries(e))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// `XPENDING key group start end count consumer` rows
/// `[id, consumer, idle, deliveries]` as id -> deliveries.
pub(crate) fn pending_counts(reply: Value) -> HashMap<String, u64> {
    let Value::Array(rows) = reply else {
        return HashMap::new();
    };
    rows.into_iter()
        .filter_map(|row| {
            let Value::Array(row) = row else { return None };
            let id = text(row.first()?)?.into_owned();
            let count = match row.get(3)? {
                Value::Int(n) => u64::try_from(*n).ok()?,
                other => text(other)?.parse().ok()?,
            };
            Some((id, count))
        })
        .collect()
}

/// The fields of an `XINFO` line (`XINFO GROUPS`, `XINFO CONSUMERS`): a
/// flat list of name and value, or a map under RESP3.
pub(crate) fn info_fields(line: &Value) -> HashMap<String, &Value> {
    let pairs: Vec<(&Value, &Value)> = match line {
        Value::Array(fields) => fields
            .chunks(2)
            .filter_map(|p| Some((p.first()?, p.get(1)?)))
            .collect(),
        Value::Map(fields) => fields.iter().map(|(k, v)| (k, v)).collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((text(k)?.into_owned(), v)))
        .collect()
}

/// A count Redis sent as an integer or as its digits; `None` for nil.
pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// Orders stream ids (`ms-seq`) numerically.
pub(crate) fn cmp_ids(a: &str, b: &str) -> Ordering {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn entries_become_messages() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("busrpc:s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("payload"),
                        bulk("{}"),
                        bulk("reply-to"),
                        bulk("in"),
                        bulk("x-custom"),
                        bulk("v"),
                    ]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Array(vec![
                    bulk("3-0"),
                    Value::Array(vec![bulk("created"), bulk("1")]),
                ]),
            ]),
        ])]);
        let got = entries_of_first_stream(reply);
        assert_eq!(got.len(), 3);
        let first = &got[0];
        assert_eq!(first.id, "1-0");
        assert_eq!(first.message.payload, "{}");
        assert_eq!(first.message.headers.get("reply-to"), Some("in"));
        assert_eq!(first.message.headers.get("x-custom"), Some("v"));
        // Deleted, and without a payload: kept with their ids, to be settled.
        assert_eq!(
            (got[1].id.as_str(), got[1].message.payload.len()),
            ("2-0", 0)
        );
        assert_eq!(
            (got[2].id.as_str(), got[2].message.payload.len()),
            ("3-0", 0)
        );
        assert_eq!(got[2].message.headers.get("created"), Some("1"));
        assert!(entries_of_first_stream(Value::Nil).is_empty());
    }

    /// The command as Redis receives it (RESP), with `|` for CRLF.
    fn wire(cmd: &redis::Cmd) -> String {
        String::from_utf8(cmd.get_packed_command())
            .unwrap()
            .replace("\r\n", "|")
    }

    #[test]
    fn requests_are_added_uncapped_or_through_the_bounding_script() {
        let message = Message::new("{}").with_header("reply-to", "r");
        assert_eq!(
            wire(&xadd_uncapped("k", &message)),
            "*7|$4|XADD|$1|k|$1|*|$7|payload|$2|{}|$8|reply-to|$1|r|"
        );
        assert_eq!(
            wire(&bounded_xadd("EVALSHA", "abc", "k", &message, 5)),
            "*9|$7|EVALSHA|$3|abc|$1|1|$1|k|$1|5|$7|payload|$2|{}|$8|reply-to|$1|r|"
        );
    }

    #[test]
    fn xadd_writes_payload_then_headers() {
        let message = Message::new("{}").with_header("reply-to", "r");
        assert_eq!(
            wire(&xadd("k", &message, 10)),
            "*10|$4|XADD|$1|k|$6|MAXLEN|$1|~|$2|10|$1|*|$7|payload|$2|{}|$8|reply-to|$1|r|"
        );
        assert_eq!(
            wire(&xadd_reply("in", &Message::new("[]"), 10_000)),
            "*9|$4|XADD|$2|in|$10|NOMKSTREAM|$6|MAXLEN|$1|~|$5|10000|$1|*|$7|payload|$2|[]|"
        );
    }

    #[test]
    fn ids_order_numerically() {
        assert_eq!(cmp_ids("10-0", "9-5"), Ordering::Greater);
        assert_eq!(cmp_ids("9-10", "9-9"), Ordering::Greater);
        assert_eq!(cmp_ids("9-1", "9-1"), Ordering::Equal);
    }

    #[test]
    fn pending_rows_give_counts() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("5-0"),
            bulk("c"),
            Value::Int(10),
            Value::Int(3),
        ])]);
        assert_eq!(pending_counts(reply).get("5-0"), Some(&3));
    }
}
