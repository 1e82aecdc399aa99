//! What is signed, and how a signature is written and checked.

use busrpc_core::{header, Message};
use hmac::Mac;

use crate::keys::{decode_hex, encode_hex, HmacSha256, Key, Keys};

/// The version tag that starts the signed bytes and the header's value.
const VERSION: &str = "v1";
/// What the signed bytes start with: a MAC over busrpc's bytes cannot be
/// mistaken for one over anything else signed with the same key.
const DOMAIN: &[u8] = b"busrpc-sig:v1";
/// Header names starting so are the transports' own (a Kafka shared
/// inbox's client tag, a keepalive) or the signature itself: not signed.
const UNSIGNED_PREFIX: &str = "busrpc-";

/// The header a signer sets to when it signed, in milliseconds since the
/// Unix epoch: signed like every header not starting `busrpc-`, so it
/// bounds how long a copy of the message can be replayed.
pub const SIGNED_AT: &str = "signed-at";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Keys {
    /// Signs `message` for `address`, as it is: sets its `busrpc-sig`
    /// header. What a server does to a reply.
    pub fn sign(&self, address: &str, message: &mut Message) {
        let value = self.signature_of(address, message);
        message.headers.insert(header::SIGNATURE, value);
    }

    /// Signs a request or notification for `address` as busrpc's clients
    /// do: one without a `deadline` (a notification, by default) gets a
    /// [`SIGNED_AT`] header of now (unless it has one), so a server can
    /// bound its replay (see [`verify_request`](Self::verify_request));
    /// then it is signed. A deadline bounds a call already, and replies
    /// need no time: a copy of one is a duplicate.
    pub fn sign_request(&self, address: &str, message: &mut Message) {
        let bounded = message.headers.get(header::DEADLINE).is_some()
            || message.headers.get(SIGNED_AT).is_some();
        if !bounded {
            message.headers.insert(SIGNED_AT, now_ms().to_string());
        }
        self.sign(address, message);
    }

    /// The `busrpc-sig` value of `message` for `address`, as it is.
    fn signature_of(&self, address: &str, message: &Message) -> String {
        let key = &self.signing;
        let mac = mac_of(key, address, message).finalize().into_bytes();
        format!("{VERSION};kid={};mac={}", key.id, encode_hex(&mac))
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

    /// Checks a request as [`verify`](Self::verify) does, and that a copy
    /// of it cannot run for ever: it carries a `deadline` (past which a
    /// server skips it), or a `signed-at` within the
    /// [replay window](Self::replay_window) of this host's clock.
    pub fn verify_request(&self, address: &str, message: &Message) -> Result<(), Rejected> {
        self.verify(address, message)?;
        if message.headers.get(header::DEADLINE).is_some() {
            return Ok(());
        }
        let signed_at = message
            .headers
            .get(SIGNED_AT)
            .and_then(|at| at.parse::<u64>().ok())
            .ok_or(Rejected::Stale)?;
        let window = u64::try_from(self.replay_window.as_millis()).unwrap_or(u64::MAX);
        if now_ms().abs_diff(signed_at) > window {
            return Err(Rejected::Stale);
        }
        Ok(())
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
    /// A request with no `deadline` whose `signed-at` is missing or
    /// outside the replay window: an old copy, or a clock far off.
    #[error("the request carries no deadline and was not signed within the replay window")]
    Stale,
}

impl Rejected {
    /// The reason as a label: `unsigned`, `malformed`, `unknown_key`,
    /// `forged` or `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
            Self::Stale => "stale",
        }
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
        let reordered: busrpc_core::Headers = signed
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

    /// A request without a deadline is accepted only while its signed
    /// `signed-at` is within the replay window: no copy runs for ever.
    #[test]
    fn a_request_without_a_deadline_is_stale_outside_the_replay_window() {
        let keys = keys().replay_window(std::time::Duration::from_secs(60));
        let notification = || Message::new(r#"{"jsonrpc":"2.0","method":"log","params":[1]}"#);
        let mut fresh = notification();
        keys.sign_request("busrpc.calc", &mut fresh);
        assert!(fresh.headers.get(SIGNED_AT).is_some());
        assert_eq!(keys.verify_request("busrpc.calc", &fresh), Ok(()));
        for at in [now_ms() - 61_000, now_ms() + 61_000] {
            let mut old = notification().with_header(SIGNED_AT, at.to_string());
            keys.sign_request("busrpc.calc", &mut old);
            assert_eq!(keys.verify("busrpc.calc", &old), Ok(()), "signed well");
            assert_eq!(
                keys.verify_request("busrpc.calc", &old),
                Err(Rejected::Stale)
            );
        }
        // Neither a time nor a deadline: stale (a foreign signer's).
        let mut bare = notification();
        keys.sign("busrpc.calc", &mut bare);
        assert_eq!(keys.verify("busrpc.calc", &bare), Ok(()));
        assert_eq!(
            keys.verify_request("busrpc.calc", &bare),
            Err(Rejected::Stale)
        );
        // A deadline bounds it instead, whenever it was signed.
        let mut with_deadline = request();
        keys.sign("busrpc.calc", &mut with_deadline);
        assert_eq!(keys.verify_request("busrpc.calc", &with_deadline), Ok(()));
    }
}
