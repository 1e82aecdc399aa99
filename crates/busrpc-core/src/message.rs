//! What travels through a broker: a payload and a few headers.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Header names busrpc reads and writes. On Kafka they are record headers, on
/// Redis stream-entry fields; see docs/PROTOCOL.md.
pub mod header {
    /// The address the response goes to. A request without it is executed,
    /// but its response has nowhere to go.
    pub const REPLY_TO: &str = "reply-to";
    /// The payload's encoding: `application/json` (the default when absent)
    /// or `application/msgpack`.
    pub const CONTENT_TYPE: &str = "content-type";
    /// When the caller stops waiting: absolute time in Unix milliseconds.
    pub const DEADLINE: &str = "deadline";
    /// A W3C trace context, passed through and recorded in the server's span.
    pub const TRACEPARENT: &str = "traceparent";
    /// The vendor part of a W3C trace context, passed through beside
    /// [`TRACEPARENT`].
    pub const TRACESTATE: &str = "tracestate";
    /// A message's signature, `v1;kid=<key id>;mac=<hex>`, written and
    /// checked by an authenticated transport (feature `auth`; see
    /// docs/PROTOCOL.md).
    pub const SIGNATURE: &str = "busrpc-sig";

    /// A header name as stored in [`Headers`](super::Headers): borrowed for
    /// busrpc's own names, so a transport decoding messages allocates no
    /// name per message.
    pub fn name(name: &str) -> std::borrow::Cow<'static, str> {
        for known in [
            REPLY_TO,
            CONTENT_TYPE,
            DEADLINE,
            TRACEPARENT,
            TRACESTATE,
            SIGNATURE,
        ] {
            if name == known {
                return std::borrow::Cow::Borrowed(known);
            }
        }
        std::borrow::Cow::Owned(name.to_owned())
    }
}

/// Message headers: a short list of name/value pairs, in insertion order.
/// Names are compared exactly (busrpc writes them lower-case).
///
/// Names are usually `&'static str` constants and values shared strings, so
/// copying headers (a broker fanning a message out to groups, a client
/// stamping its inbox address on every call) allocates little.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, Arc<str>)>);

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| &**v)
    }

    /// The value of `name` as the shared string it is stored as.
    pub fn get_shared(&self, name: &str) -> Option<&Arc<str>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Arc<str>>) {
        let (name, value) = (name.into(), value.into());
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<Arc<str>>) -> Self {
        self.insert(name, value);
        self
    }

    /// All headers, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `deadline` header: `None` when absent, an error when it is not
    /// a Unix time in milliseconds (a server answers such a request -32600
    /// rather than guess what the caller meant).
    pub fn deadline(&self) -> Result<Option<Deadline>, InvalidDeadline> {
        self.get(header::DEADLINE).map(str::parse).transpose()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<N: Into<Cow<'static, str>>, V: Into<Arc<str>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (n, v) in iter {
            headers.insert(n, v);
        }
        headers
    }
}

/// One message on a broker: the payload and its headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The encoded JSON-RPC request, notification, batch or response.
    pub payload: Bytes,
    /// Routing and metadata; see [`header`].
    pub headers: Headers,
}

impl Message {
    /// A message with no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            headers: Headers::new(),
        }
    }

    /// Builder form: adds a header.
    #[must_use]
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Arc<str>>,
    ) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// The moment a caller stops waiting, as absolute Unix milliseconds, so that
/// it means the same on every machine whose clock is synchronised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub u64);

thread_local! {
    /// The deadline of the request whose handler is being polled on this
    /// thread: set around each poll (see [`Deadline::scope`]), so it follows
    /// the handler from thread to thread. A `Cell` rather than tokio's
    /// task-local, which cost the engine bench 4% of its throughput.
    static CURRENT: std::cell::Cell<Option<Deadline>> = const { std::cell::Cell::new(None) };
}

/// Puts back the deadline a poll found, even if the poll panics.
struct Restore(Option<Deadline>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

impl Deadline {
    /// The deadline of the request being handled, when called from a
    /// handler (or anything it awaits) and the caller sent one: a handler
    /// can size its own work or timeouts to it, e.g. pass
    /// [`remaining`](Self::remaining) to a database call. `None` elsewhere,
    /// and for a request without a `deadline` header.
    ///
    /// ```
    /// # use busrpc_core::{Deadline, Router, RpcError};
    /// let router = Router::new().method("budget", |(): ()| async move {
    ///     let left = Deadline::current().map(|d| d.remaining().as_millis() as u64);
    ///     Ok::<_, RpcError>(left)
    /// });
    /// # let _ = router;
    /// ```
    pub fn current() -> Option<Deadline> {
        CURRENT.with(std::cell::Cell::get)
    }

    /// Runs `f` with `deadline` as [`current`](Self::current) while it is
    /// polled.
    pub(crate) async fn scope<F: std::future::Future>(deadline: Deadline, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| {
            let _restore = Restore(CURRENT.with(|current| current.replace(Some(deadline))));
            f.as_mut().poll(cx)
        })
        .await
    }

    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Deadline(unix_ms_now().saturating_add(ms))
    }

    /// Whether the deadline has passed.
    pub fn has_passed(self) -> bool {
        unix_ms_now() > self.0
    }

    /// Time left until the deadline, zero when passed.
    pub fn remaining(self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(unix_ms_now()))
    }
}

/// A `deadline` header that is not a Unix time in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the deadline header {0:?} is not a Unix time in milliseconds (digits only, at most 18446744073709551615)")]
pub struct InvalidDeadline(pub String);

impl std::str::FromStr for Deadline {
    type Err = InvalidDeadline;

    /// Decimal digits only: no sign, no fraction, no exponent, no spaces,
    /// and within a `u64`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        match value.parse() {
            Ok(ms) if digits => Ok(Deadline(ms)),
            _ => Err(InvalidDeadline(value.chars().take(64).collect())),
        }
    }
}

impl fmt::Display for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Deadline> for Arc<str> {
    /// The header value. One allocation, where `to_string()` and then
    /// `Arc::from` take two; every call sends one.
    fn from(deadline: Deadline) -> Self {
        Arc::from(itoa::Buffer::new().format(deadline.0))
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bounds on what a client sends and a server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload in bytes, of a request and of a reply (default
    /// 1 MiB). A transport may have a smaller limit of its own (Kafka:
    /// librdkafka's `message.max.bytes`, 1,000,000 bytes by default, less
    /// room for headers); a server answers a reply over either with a small
    /// -32603 instead of sending it.
    pub max_message_bytes: usize,
    /// Most requests in one batch. Default 1000.
    pub max_batch_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            max_batch_len: 1000,
        }
    }
}

impl Limits {
    /// Sets the largest payload in bytes.
    #[must_use]
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets the most requests in one batch.
    #[must_use]
    pub fn max_batch_len(mut self, len: usize) -> Self {
        self.max_batch_len = len;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_replace_and_keep_order() {
        let mut h = Headers::new().with("a", "1").with("b", "2");
        h.insert("a", "3");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", "3"), ("b", "2")]);
        assert_eq!(h.get("b"), Some("2"));
        assert_eq!(h.get("c"), None);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn deadline_header_parses_or_is_refused() {
        let h = Headers::new().with(header::DEADLINE, "1700000000000");
        assert_eq!(h.deadline(), Ok(Some(Deadline(1_700_000_000_000))));
        let written = Headers::new().with(header::DEADLINE, Deadline(1_700_000_000_000));
        assert_eq!(written.get(header::DEADLINE), Some("1700000000000"));
        assert!(h.deadline().unwrap().unwrap().has_passed());
        assert_eq!(Headers::new().deadline(), Ok(None));
        for bad in [
            "soon",
            "-5",
            "+5",
            "1.5",
            "1e3",
            " 5",
            "",
            "18446744073709551616",
            &"9".repeat(26),
        ] {
            let got = Headers::new().with(header::DEADLINE, bad).deadline();
            assert_eq!(got, Err(InvalidDeadline(bad.to_owned())), "{bad:?}");
        }
        assert_eq!(
            InvalidDeadline("soon".into()).to_string(),
            r#"the deadline header "soon" is not a Unix time in milliseconds (digits only, at most 18446744073709551615)"#
        );
        let d = Deadline::after(Duration::from_secs(60));
        assert!(!d.has_passed());
        assert!(d.remaining() > Duration::from_secs(58));
    }
}
