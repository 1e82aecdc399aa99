//! What the authors of transports share: ids, URLs fit to show, and the
//! signer of a transport's own messages.

use std::fmt;
use std::sync::Arc;

use crate::wire::Message;

/// Signs a message about to be published to an address (see
/// [`Transport::sign_own_messages`](crate::Transport::sign_own_messages)).
pub type Signer = Arc<dyn Fn(&str, &mut Message) + Send + Sync + 'static>;

/// Where a transport keeps the [`Signer`] of its own messages: none until
/// one is given, the latest after.
#[derive(Default)]
pub struct SignerSlot(std::sync::RwLock<Option<Signer>>);

impl SignerSlot {
    /// Signs with `signer` from now on.
    pub fn set(&self, signer: Signer) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(signer);
    }

    /// Signs `message` for `address`, if a signer was given.
    pub fn sign(&self, address: &str, message: &mut Message) {
        if let Some(sign) = &*self.0.read().unwrap_or_else(|e| e.into_inner()) {
            sign(address, message);
        }
    }
}

impl fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.0.read().unwrap_or_else(|e| e.into_inner()).is_some();
        f.debug_tuple("SignerSlot").field(&set).finish()
    }
}

/// Whether a URL option or broker-client setting named `key` holds a
/// secret (a password, a token, a private key), so that its value is never
/// shown: `sasl.password`, `ssl.key.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, `password`, `token`, ...
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
}

/// `url` fit for an error message or a log line: the password of its user
/// info and the value of every option that [holds a
/// secret](is_secret_option) replaced by `***`. Works on URLs the `url`
/// crate cannot parse too (`kafka://a:9092,b:9092`).
///
/// ```
/// use busrpc_core::transport::redact_url;
/// assert_eq!(
///     redact_url("redis://app:s3cr%40t@db:6379/0?prefix=x"),
///     "redis://app:***@db:6379/0?prefix=x"
/// );
/// assert_eq!(
///     redact_url("kafka://k:9092?sasl.username=u&sasl.password=p%26q"),
///     "kafka://k:9092?sasl.username=u&sasl.password=***"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let authority_end = base.find('/').unwrap_or(base.len());
    let (authority, path) = base.split_at(authority_end);
    let mut shown = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    shown.push_str(user);
                    shown.push_str(":***");
                }
                // A lone user name may be a token (`redis://TOKEN@host`).
                None if scheme.is_some() && userinfo.len() > 20 => shown.push_str("***"),
                None => shown.push_str(userinfo),
            }
            shown.push('@');
            shown.push_str(host);
        }
        None => shown.push_str(authority),
    }
    shown.push_str(path);
    if let Some(query) = query {
        shown.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                shown.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if is_secret_option(key) => {
                    shown.push_str(key);
                    shown.push_str("=***");
                }
                _ => shown.push_str(pair),
            }
        }
    }
    shown
}

/// An id that does not repeat across processes and hosts (a random
/// version-4 UUID, as 32 hex digits): for naming a transport's consumers and
/// inboxes. Random rather than time-based, so that it tells a reader of the
/// broker nothing about the host or when it started.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The reply owed to the caller of a request a transport gave up on after
/// `deliveries` deliveries (more than `max_deliveries`) and moved to the
/// dead-letter queue `dead_letter`: each of its calls answered with
/// [`DEAD_LETTER_CODE`](crate::wire::jsonrpc::DEAD_LETTER_CODE), in the request's
/// own encoding, and signed with `signer` when an authenticated transport
/// wraps this one (see [`Transport::sign_own_messages`](crate::Transport::sign_own_messages)). Returns the
/// address to send it to and the reply, or `None` when nobody waits for one
/// (a notification, no `reply-to`, an encoding not understood).
pub fn dead_letter_reply(
    request: &Message,
    deliveries: u64,
    max_deliveries: u64,
    dead_letter: &str,
    signer: &SignerSlot,
) -> Option<(String, Message)> {
    use crate::wire::codec::Codec;
    use crate::wire::header;
    use crate::wire::jsonrpc::{self, RpcError};
    let reply_to = request.headers.get(header::REPLY_TO)?;
    let codec =
        Codec::from_content_type(request.headers.get(header::CONTENT_TYPE)).unwrap_or_default();
    let json = codec.to_json(&request.payload).ok()?;
    let data = serde_json::json!({
        "deliveries": deliveries,
        "max_deliveries": max_deliveries,
        "dead_letter": dead_letter,
    });
    let error = RpcError::new(jsonrpc::DEAD_LETTER_CODE, jsonrpc::DEAD_LETTER_MSG).with_data(&data);
    let answer = jsonrpc::answer_all(&json, &error)?;
    let mut reply = Message::new(codec.from_json(answer).ok()?);
    if codec != Codec::Json {
        reply
            .headers
            .insert(header::CONTENT_TYPE, codec.content_type());
    }
    signer.sign(reply_to, &mut reply);
    Some((reply_to.to_owned(), reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_secrets() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://u:p@h:1/2?prefix=a", "redis://u:***@h:1/2?prefix=a"),
            ("rediss://:only-a-password@h", "rediss://:***@h"),
            ("redis://a%40b:c%3Ad@h", "redis://a%40b:***@h"),
            ("redis://user@h", "redis://user@h"),
            (
                "redis://0123456789abcdef0123456789@h",
                "redis://***@h",
            ),
            (
                "kafka://a:1,b:2?security.protocol=SASL_SSL&sasl.password=x%26y&ssl.key.password=k&ssl.key.pem=PEM&sasl.oauthbearer.client.secret=s&fetch.wait.max.ms=5",
                "kafka://a:1,b:2?security.protocol=SASL_SSL&sasl.password=***&ssl.key.password=***&ssl.key.pem=***&sasl.oauthbearer.client.secret=***&fetch.wait.max.ms=5",
            ),
            ("kafka://u:p@k:9092?x=1", "kafka://u:***@k:9092?x=1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn unique_ids_are_random_uuids_that_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| unique_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            // The version nibble: a v4 (random) UUID.
            assert_eq!(&id[12..13], "4", "{id}");
        }
    }
}
