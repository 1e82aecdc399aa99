//! Message authentication: requests and replies signed with a shared key
//! (HMAC-SHA256), and anything unsigned or wrongly signed dropped.
//!
//! Without it, anyone who can write to the broker can forge a reply to a
//! waiting call (an inbox's name is no secret: `SCAN`, a topic listing) or a
//! request to a service. [`Authenticated`] wraps any [`Transport`]: what it
//! publishes carries a `busrpc-sig` header; what it hands out (deliveries to
//! a server, replies to a client) is checked first, and what fails is
//! settled, counted and never seen by a handler or a caller.
//!
//! ```
//! # use std::sync::Arc;
//! # use busrpc_core::{auth::{Authenticated, Keys}, memory::MemoryTransport, Client, Router, RpcError, Server};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = Keys::new("2026-12", b"0123456789abcdef0123456789abcdef")?;
//! let broker = Arc::new(MemoryTransport::new());
//! let transport = Arc::new(Authenticated::new(broker, keys));
//! let router = Router::new().method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) });
//! let _server = Server::new(transport.clone(), "calc", router).start().await?;
//! let client = Client::connect(transport).await?;
//! assert_eq!(client.call::<i64>("calc", "add", (2, 3)).await?, 5);
//! # Ok(()) }
//! ```
//!
//! What is signed (see docs/PROTOCOL.md, which shows a foreign client doing
//! it): the key's id, the address the message is published to, every header
//! but those named `busrpc-*` (the transports' own, and the signature), and
//! the payload. The address binds a request to its service and a reply to
//! the inbox of the client that called: a reply copied into another
//! client's inbox, or a request into another service's queue, fails. Within
//! one inbox a copied reply carries the id of the call it answered, which
//! the client has taken already: it is dropped as a duplicate.
//!
//! A copied *request* runs again if it arrives before its deadline, as a
//! redelivery does (handlers must bear at-least-once delivery anyway); past
//! its deadline, which is signed, it is skipped. Nothing is encrypted:
//! anyone who can read the broker reads the payloads.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::transport::kit::Throttle;
use crate::transport::{
    Acknowledge, Deliveries, Demand, Inbox, OnSettled, Settle, SettleError, Transport,
    TransportError,
};
use crate::wire::{header, Message};

type HmacSha256 = Hmac<Sha256>;

/// The version tag that starts the signed bytes and the header's value.
const VERSION: &str = "v1";
/// What the signed bytes start with: a MAC over busrpc's bytes cannot be
/// mistaken for one over anything else signed with the same key.
const DOMAIN: &[u8] = b"busrpc-sig:v1";
/// Header names starting so are the transports' own (a Kafka shared
/// inbox's client tag, a keepalive) or the signature itself: not signed.
const UNSIGNED_PREFIX: &str = "busrpc-";
/// The shortest secret accepted: 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;
/// How often a warning about rejected messages is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a set of keys could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A key id must be 1 to 64 characters of `A-Z a-z 0-9 . _ -`: it
    /// travels in a header beside `;` and `=`.
    #[error("invalid key id {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidId(String),
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the secret of key {id:?} has {len} bytes; at least {MIN_SECRET_BYTES} are needed (32 random bytes are best)")]
    ShortSecret {
        /// The key's id.
        id: String,
        /// How many bytes it had.
        len: usize,
    },
    /// Two keys with one id.
    #[error("key id {0:?} is given twice")]
    DuplicateId(String),
    /// A key list (see [`Keys::parse`]) that cannot be read.
    #[error("invalid key list: {0}")]
    InvalidList(String),
}

/// One key: its id and the HMAC keyed with its secret (kept so, the secret
/// itself is not kept at all).
#[derive(Clone)]
struct Key {
    id: Arc<str>,
    mac: HmacSha256,
}

impl Key {
    fn new(id: &str, secret: &[u8]) -> Result<Self, KeyError> {
        let valid_id = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_id {
            return Err(KeyError::InvalidId(id.to_owned()));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::ShortSecret {
                id: id.to_owned(),
                len: secret.len(),
            });
        }
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        Ok(Self { id: id.into(), mac })
    }
}

/// The keys a process signs with and accepts: one that signs (and is
/// accepted), and any number accepted besides, each with an id that travels
/// with the signature.
///
/// Rotating a key without a moment where some message fails: give every
/// process the new key as [`accept`](Self::accept)ed; then make it the
/// signing key everywhere (the old one accepted); then drop the old one.
///
/// Debug output shows the ids, never the secrets.
#[derive(Clone)]
pub struct Keys {
    signing: Key,
    accepted: Vec<Key>,
}

impl Keys {
    /// Keys that sign with (and accept) the key `id` with `secret`, at least
    /// [`MIN_SECRET_BYTES`] long (32 random bytes are best).
    pub fn new(id: &str, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Ok(Self {
            signing: Key::new(id, secret.as_ref())?,
            accepted: Vec::new(),
        })
    }

    /// These keys, also accepting messages signed with the key `id`
    /// (another process's signing key during a rotation).
    pub fn accept(mut self, id: &str, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        if self.ids().any(|known| known == id) {
            return Err(KeyError::DuplicateId(id.to_owned()));
        }
        self.accepted.push(Key::new(id, secret.as_ref())?);
        Ok(self)
    }

    /// Keys from a list `id:hex-secret[,id:hex-secret...]`, the first the
    /// signing key, as `busrpc call` reads it from `BUSRPC_KEYS`. The
    /// error never shows a secret.
    pub fn parse(list: &str) -> Result<Self, KeyError> {
        let mut keys: Option<Keys> = None;
        for entry in list.split(',').map(str::trim) {
            let Some((id, hex)) = entry.split_once(':') else {
                return Err(KeyError::InvalidList(
                    "each key is id:hex-secret, separated by commas".into(),
                ));
            };
            let secret = decode_hex(hex.trim()).ok_or_else(|| {
                KeyError::InvalidList(format!("the secret of key {id:?} is not hexadecimal"))
            })?;
            keys = Some(match keys {
                None => Keys::new(id, &secret)?,
                Some(keys) => keys.accept(id, &secret)?,
            });
        }
        keys.ok_or_else(|| KeyError::InvalidList("no key".into()))
    }

    /// The id of the signing key.
    pub fn signing_id(&self) -> &str {
        &self.signing.id
    }

    /// The ids of every key accepted, the signing key's first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.all().map(|k| &*k.id)
    }

    /// Every key accepted, the signing key first.
    fn all(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.signing).chain(&self.accepted)
    }

    fn find(&self, id: &str) -> Option<&Key> {
        self.all().find(|k| &*k.id == id)
    }

    /// Signs `message` for `address`: sets its `busrpc-sig` header.
    pub fn sign(&self, address: &str, message: &mut Message) {
        let key = &self.signing;
        let mac = mac_of(key, address, message).finalize().into_bytes();
        let value = format!("{VERSION};kid={};mac={}", key.id, encode_hex(&mac));
        message.headers.insert(header::SIGNATURE, value);
    }

    /// Checks the signature of `message`, received at `address`.
    pub fn verify(&self, address: &str, message: &Message) -> Result<(), Rejected> {
        let value = message
            .headers
            .get(header::SIGNATURE)
            .ok_or(Rejected::Unsigned)?;
        let (kid, mac) = parse_signature(value).ok_or(Rejected::Malformed)?;
        let key = self.find(kid).ok_or(Rejected::UnknownKey)?;
        let expected = decode_hex(mac).ok_or(Rejected::Malformed)?;
        // Constant time: a forger learns nothing from how long it took.
        mac_of(key, address, message)
            .verify_slice(&expected)
            .map_err(|_| Rejected::Forged)
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("signing", &self.signing_id())
            .field(
                "accepted",
                &self.accepted.iter().map(|k| &*k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `v1;kid=<id>;mac=<hex>` as its id and MAC.
fn parse_signature(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.split(';');
    if parts.next()? != VERSION {
        return None;
    }
    let kid = parts.next()?.strip_prefix("kid=")?;
    let mac = parts.next()?.strip_prefix("mac=")?;
    parts.next().is_none().then_some((kid, mac))
}

/// The HMAC over what is signed: the domain tag, then, each preceded by its
/// length as 4 bytes big-endian, the key id, the address, the number of
/// signed headers (4 bytes), each signed header's name and value (sorted by
/// name), and the payload.
fn mac_of(key: &Key, address: &str, message: &Message) -> HmacSha256 {
    fn field(mac: &mut HmacSha256, bytes: &[u8]) {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        mac.update(&len.to_be_bytes());
        mac.update(bytes);
    }
    let mut mac = key.mac.clone();
    mac.update(DOMAIN);
    field(&mut mac, key.id.as_bytes());
    field(&mut mac, address.as_bytes());
    let mut signed: Vec<(&str, &str)> = message
        .headers
        .iter()
        .filter(|(name, _)| !name.starts_with(UNSIGNED_PREFIX))
        .collect();
    signed.sort_unstable();
    let count = u32::try_from(signed.len()).unwrap_or(u32::MAX);
    mac.update(&count.to_be_bytes());
    for (name, value) in signed {
        field(&mut mac, name.as_bytes());
        field(&mut mac, value.as_bytes());
    }
    field(&mut mac, &message.payload);
    mac
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)].into());
        hex.push(DIGITS[usize::from(b & 15)].into());
    }
    hex
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Why a message was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// It has no `busrpc-sig` header.
    #[error("the message is not signed")]
    Unsigned,
    /// Its `busrpc-sig` header is not `v1;kid=<id>;mac=<hex>`.
    #[error("the message's signature cannot be read")]
    Malformed,
    /// It is signed with a key that is not accepted here.
    #[error("the message is signed with a key not accepted here")]
    UnknownKey,
    /// Its MAC is wrong: changed, signed for another address, or forged.
    #[error("the message's signature does not match it")]
    Forged,
}

impl Rejected {
    /// The reason as a label: `unsigned`, `malformed`, `unknown_key` or
    /// `forged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
        }
    }
}

/// How many messages an [`Authenticated`] transport rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AuthStats {
    /// Requests and notifications (deliveries to a server) rejected, and
    /// acknowledged unrun.
    pub requests_rejected: u64,
    /// Replies (messages to a client's inbox) rejected and dropped.
    pub replies_rejected: u64,
}

struct Shared {
    inner: Arc<dyn Transport>,
    keys: Keys,
    requests_rejected: AtomicU64,
    replies_rejected: AtomicU64,
    warnings: Throttle,
}

impl Shared {
    /// Counts and logs a rejected message.
    fn rejected(&self, address: &str, message: &Message, why: Rejected, request: bool) {
        let (counter, kind) = if request {
            (&self.requests_rejected, "request")
        } else {
            (&self.replies_rejected, "reply")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::metrics::auth_rejected(kind, why.as_str());
        if let Some(held_back) = self.warnings.allow() {
            let signature = message.headers.get(header::SIGNATURE).unwrap_or("");
            tracing::warn!(%address, kind, reason = %why, signature = %crate::transport::kit::Excerpt(signature.as_bytes()), held_back, "a message failed authentication; dropped");
        }
    }
}

/// A [`Transport`] whose messages are signed and checked with [`Keys`]:
/// clients and servers on it need nothing else (see the [module](self)).
///
/// A request that fails the check is acknowledged and never run, unanswered
/// (an answer would tell a forger what it got wrong, and let anyone bounce
/// messages into inboxes); a reply that fails it is dropped, and its caller
/// waits on. Both are counted ([`stats`](Self::stats), metric
/// `busrpc_auth_rejected_total`) and logged at warn, at most once per 10 s.
#[derive(Clone)]
pub struct Authenticated {
    shared: Arc<Shared>,
}

impl Authenticated {
    /// `inner`, signing and checking with `keys`. Everything a server
    /// sends goes through a delivery's settlement or through `publish`, the
    /// answer to a dead letter included, so all of it is signed.
    pub fn new(inner: Arc<dyn Transport>, keys: Keys) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner,
                keys,
                requests_rejected: AtomicU64::new(0),
                replies_rejected: AtomicU64::new(0),
                warnings: Throttle::new(WARN_EVERY),
            }),
        }
    }

    /// The keys it signs and checks with.
    pub fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// How many messages it has rejected so far.
    pub fn stats(&self) -> AuthStats {
        AuthStats {
            requests_rejected: self.shared.requests_rejected.load(Ordering::Relaxed),
            replies_rejected: self.shared.replies_rejected.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for Authenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticated")
            .field("keys", &self.shared.keys)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for Authenticated {
    async fn publish(&self, address: &str, mut message: Message) -> Result<(), TransportError> {
        self.shared.keys.sign(address, &mut message);
        self.shared.inner.publish(address, message).await
    }

    async fn consume(
        &self,
        address: &str,
        group: &str,
        demand: Demand,
    ) -> Result<Deliveries, TransportError> {
        let deliveries = self.shared.inner.consume(address, group, demand).await?;
        let shared = self.shared.clone();
        let address: Arc<str> = address.into();
        Ok(deliveries.filter_map(move |delivery| {
            let shared = shared.clone();
            let address = address.clone();
            async move {
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(e) => return Some(Err(e)),
                };
                match shared.keys.verify(&address, delivery.message()) {
                    Ok(()) => Some(Ok(delivery.map_acker(|acker| SigningAck {
                        acker,
                        shared: shared.clone(),
                    }))),
                    Err(why) => {
                        shared.rejected(&address, delivery.message(), why, true);
                        // Settled, or it would come back to every server in turn.
                        if let Err(e) = delivery.settle(Settle::Ack).await {
                            tracing::warn!(%address, error = %e, "acknowledging a rejected message failed");
                        }
                        None
                    }
                }
            }
        }))
    }

    async fn inbox(&self) -> Result<Inbox, TransportError> {
        let inbox = self.shared.inner.inbox().await?;
        let shared = self.shared.clone();
        let address: Arc<str> = inbox.address().into();
        Ok(inbox.filter_map(move |message| {
            let checked = match message {
                Ok(message) => match shared.keys.verify(&address, &message) {
                    Ok(()) => Some(Ok(message)),
                    Err(why) => {
                        shared.rejected(&address, &message, why, false);
                        None
                    }
                },
                Err(e) => Some(Err(e)),
            };
            std::future::ready(checked)
        }))
    }

    fn service_address(&self, service: &str) -> String {
        self.shared.inner.service_address(service)
    }

    fn max_payload_bytes(&self) -> Option<usize> {
        self.shared.inner.max_payload_bytes()
    }
}

/// A delivery's acknowledger that signs the reply (a response, or the
/// answer to a dead letter) before the transport's own acknowledger sends
/// it through the inner transport: signed once.
struct SigningAck {
    acker: Box<dyn Acknowledge>,
    shared: Arc<Shared>,
}

impl SigningAck {
    fn sign(&self, how: &mut Settle) {
        if let Some((address, message)) = how.reply_mut() {
            self.shared.keys.sign(address, message);
        }
    }
}

#[async_trait]
impl Acknowledge for SigningAck {
    async fn settle(self: Box<Self>, mut how: Settle) -> Result<(), SettleError> {
        self.sign(&mut how);
        self.acker.settle(how).await
    }

    async fn settle_then(self: Box<Self>, mut how: Settle, then: OnSettled) {
        self.sign(&mut how);
        self.acker.settle_then(how, then).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> Keys {
        Keys::new("k1", SECRET).unwrap()
    }

    fn request() -> Message {
        Message::new(r#"{"jsonrpc":"2.0","method":"add","params":[2,3],"id":1}"#)
            .with_header(header::REPLY_TO, "busrpc.inbox.abc")
            .with_header(header::DEADLINE, "1900000000000")
            .with_header("tenant", "acme")
    }

    #[test]
    fn the_signature_is_the_documented_hmac_of_the_documented_bytes() {
        // The bytes docs/PROTOCOL.md describes, built by hand: a foreign
        // client that follows the text gets this MAC.
        let mut message = request();
        keys().sign("busrpc.calc", &mut message);
        let mut signed = b"busrpc-sig:v1".to_vec();
        let mut field = |bytes: &[u8]| {
            signed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            signed.extend_from_slice(bytes);
        };
        field(b"k1");
        field(b"busrpc.calc");
        let mut tail = 3u32.to_be_bytes().to_vec();
        for (n, v) in [
            ("deadline", "1900000000000"),
            ("reply-to", "busrpc.inbox.abc"),
            ("tenant", "acme"),
        ] {
            for bytes in [n.as_bytes(), v.as_bytes()] {
                tail.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                tail.extend_from_slice(bytes);
            }
        }
        signed.extend_from_slice(&tail);
        let payload = message.payload.clone();
        signed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        signed.extend_from_slice(&payload);
        let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
        mac.update(&signed);
        let expected = format!("v1;kid=k1;mac={}", encode_hex(&mac.finalize().into_bytes()));
        assert_eq!(message.headers.get(header::SIGNATURE), Some(&*expected));
        assert_eq!(keys().verify("busrpc.calc", &message), Ok(()));
    }

    #[test]
    fn a_known_vector_matches_the_one_in_the_protocol_document() {
        // The same vector is printed in docs/PROTOCOL.md and checked by the
        // Python client test: change one, change all three.
        let mut message = Message::new(r#"{"jsonrpc":"2.0","method":"ping","id":1}"#)
            .with_header(header::REPLY_TO, "busrpc.inbox.1");
        Keys::new("k1", SECRET)
            .unwrap()
            .sign("busrpc.calc", &mut message);
        assert_eq!(
            message.headers.get(header::SIGNATURE),
            Some("v1;kid=k1;mac=3b601e2520f74b5ec01d39f70223c526cdd20f4100585dfe2fcc40c48db3c5a2")
        );
    }

    #[test]
    fn any_change_to_what_is_signed_fails_the_check() {
        let keys = keys();
        let mut signed = request();
        keys.sign("busrpc.calc", &mut signed);
        assert_eq!(keys.verify("busrpc.calc", &signed), Ok(()));
        // Another address: a request replayed to another service, a reply
        // to another inbox.
        assert_eq!(keys.verify("busrpc.other", &signed), Err(Rejected::Forged));
        let mut payload = signed.clone();
        payload.payload = r#"{"jsonrpc":"2.0","method":"add","params":[2,4],"id":1}"#.into();
        assert_eq!(keys.verify("busrpc.calc", &payload), Err(Rejected::Forged));
        for (name, value) in [
            (header::REPLY_TO, "busrpc.inbox.mallory"),
            (header::DEADLINE, "4000000000000"),
            ("tenant", "evil"),
            ("added", "x"),
        ] {
            let changed = signed.clone().with_header(name, value);
            assert_eq!(
                keys.verify("busrpc.calc", &changed),
                Err(Rejected::Forged),
                "{name}"
            );
        }
        // A transport's own header is not signed: a Kafka shared inbox
        // tags replies with the client.
        let tagged = signed.clone().with_header("busrpc-client", "c1");
        assert_eq!(keys.verify("busrpc.calc", &tagged), Ok(()));
        // Header order does not matter.
        let reordered: crate::Headers = signed
            .headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let reordered = Message {
            payload: signed.payload.clone(),
            headers: reordered,
        };
        assert_eq!(keys.verify("busrpc.calc", &reordered), Ok(()));
    }

    #[test]
    fn unsigned_malformed_and_unknown_key_messages_say_why() {
        let keys = keys();
        assert_eq!(
            keys.verify("busrpc.calc", &request()),
            Err(Rejected::Unsigned)
        );
        for bad in [
            "",
            "v2;kid=k1;mac=00",
            "v1;kid=k1",
            "v1;mac=00;kid=k1",
            "v1;kid=k1;mac=zz",
            "v1;kid=k1;mac=0",
            "v1;kid=k1;mac=00;x=1",
        ] {
            let message = request().with_header(header::SIGNATURE, bad);
            assert_eq!(
                keys.verify("busrpc.calc", &message),
                Err(Rejected::Malformed),
                "{bad}"
            );
        }
        let mut other = request();
        Keys::new("k9", SECRET)
            .unwrap()
            .sign("busrpc.calc", &mut other);
        assert_eq!(
            keys.verify("busrpc.calc", &other),
            Err(Rejected::UnknownKey)
        );
        // Same id, another secret: a forger guessing the id.
        let mut forged = request();
        Keys::new("k1", b"not the secret, but long enough")
            .unwrap()
            .sign("busrpc.calc", &mut forged);
        assert_eq!(keys.verify("busrpc.calc", &forged), Err(Rejected::Forged));
        // A truncated MAC is no MAC.
        let mut short = request();
        keys.sign("busrpc.calc", &mut short);
        let value = short.headers.get(header::SIGNATURE).unwrap().to_owned();
        let short = short.with_header(header::SIGNATURE, &value[..value.len() - 2]);
        assert_eq!(keys.verify("busrpc.calc", &short), Err(Rejected::Forged));
    }

    #[test]
    fn accepted_keys_verify_and_only_the_signing_key_signs() {
        let old = Keys::new("old", SECRET).unwrap();
        let rotating = Keys::new("new", b"fedcba9876543210fedcba9876543210")
            .unwrap()
            .accept("old", SECRET)
            .unwrap();
        let mut from_old = request();
        old.sign("a", &mut from_old);
        assert_eq!(rotating.verify("a", &from_old), Ok(()));
        let mut from_new = request();
        rotating.sign("a", &mut from_new);
        assert!(from_new
            .headers
            .get(header::SIGNATURE)
            .unwrap()
            .starts_with("v1;kid=new;"));
        assert_eq!(old.verify("a", &from_new), Err(Rejected::UnknownKey));
        assert_eq!(
            rotating.ids().collect::<Vec<_>>(),
            ["new", "old"],
            "the signing key first"
        );
    }

    #[test]
    fn keys_are_checked_and_never_shown() {
        assert_eq!(
            Keys::new("k1", b"short").unwrap_err(),
            KeyError::ShortSecret {
                id: "k1".into(),
                len: 5
            }
        );
        for id in ["", "a;b", "a=b", "x y", &"k".repeat(65)] {
            assert_eq!(
                Keys::new(id, SECRET).unwrap_err(),
                KeyError::InvalidId(id.into())
            );
        }
        assert_eq!(
            keys().accept("k1", SECRET).unwrap_err(),
            KeyError::DuplicateId("k1".into())
        );
        let parsed = Keys::parse(
            "new:00112233445566778899aabbccddeeff, old:ffeeddccbbaa99887766554433221100",
        )
        .unwrap();
        assert_eq!(parsed.ids().collect::<Vec<_>>(), ["new", "old"]);
        let shown = format!("{parsed:?}");
        assert_eq!(shown, r#"Keys { signing: "new", accepted: ["old"] }"#);
        for bad in ["", "k1", "k1:xyz", "k1:0011"] {
            let e = Keys::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("xyz") && !e.contains("0011"), "{e}");
        }
    }
}
