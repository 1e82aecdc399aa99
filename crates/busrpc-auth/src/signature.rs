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

impl Keys {
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
}
