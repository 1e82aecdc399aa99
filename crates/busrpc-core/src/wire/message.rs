//! What travels through a broker: a payload and a few headers.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::deadline::{Deadline, InvalidDeadline};

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
    /// On a reply, the name of the server instance that answered (its
    /// consumer's name on the broker), when the server is configured to
    /// say ([`ServerConfig::name_in_replies`](crate::ServerConfig::name_in_replies)).
    pub const SERVED_BY: &str = "served-by";

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
            SERVED_BY,
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
}
