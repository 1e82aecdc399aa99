//! The keys a process signs with and accepts.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The MAC every key computes: HMAC-SHA256.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The shortest secret accepted: 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;

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
pub(crate) struct Key {
    pub(crate) id: Arc<str>,
    pub(crate) mac: HmacSha256,
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
    pub(crate) signing: Key,
    accepted: Vec<Key>,
    /// How far from now a request's `signed-at` may be (see
    /// [`Keys::replay_window`]).
    pub(crate) replay_window: std::time::Duration,
}

/// How old (or, for a clock ahead, how new) a signed request without a
/// `deadline` may be: 5 minutes, a generous bound on clock skew between
/// hosts plus a request's time in a queue; past it a copy of the request
/// cannot run again.
pub const DEFAULT_REPLAY_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

impl Keys {
    /// Keys that sign with (and accept) the key `id` with `secret`, at least
    /// [`MIN_SECRET_BYTES`] long (32 random bytes are best).
    pub fn new(id: &str, secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        Ok(Self {
            signing: Key::new(id, secret.as_ref())?,
            accepted: Vec::new(),
            replay_window: DEFAULT_REPLAY_WINDOW,
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

    /// These keys, accepting a signed request that carries no `deadline`
    /// only if its signed `signed-at` time is within `window` of this
    /// host's clock (default [`DEFAULT_REPLAY_WINDOW`]). A request with
    /// neither is rejected: a copy of it could run again for ever.
    #[must_use]
    pub fn replay_window(mut self, window: std::time::Duration) -> Self {
        self.replay_window = window;
        self
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

    pub(crate) fn find(&self, id: &str) -> Option<&Key> {
        self.all().find(|k| &*k.id == id)
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
            .field("replay_window", &self.replay_window)
            .finish()
    }
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(DIGITS[usize::from(b >> 4)].into());
        hex.push(DIGITS[usize::from(b & 15)].into());
    }
    hex
}

pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    hex.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> Keys {
        Keys::new("k1", SECRET).unwrap()
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
        assert_eq!(
            shown,
            r#"Keys { signing: "new", accepted: ["old"], replay_window: 300s }"#
        );
        for bad in ["", "k1", "k1:xyz", "k1:0011"] {
            let e = Keys::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("xyz") && !e.contains("0011"), "{e}");
        }
    }
}
