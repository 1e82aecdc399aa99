//! Payload encodings. The engine works on JSON; MessagePack payloads are
//! transcoded at the edge, streaming, without building a value tree.

use std::borrow::Cow;

/// The `content-type` of JSON payloads (also assumed when the header is absent).
pub const JSON: &str = "application/json";
/// The `content-type` of MessagePack payloads.
pub const MSGPACK: &str = "application/msgpack";

/// The nesting limit of MessagePack arrays and maps: serde_json's own
/// recursion limit (both refuse the level that reaches it), so nothing is
/// refused here that a handler's params could have taken as JSON. Transcoding recurses once per level; rmp-serde's default (1,024)
/// overflowed a 2 MiB thread stack in a debug build and aborted the whole
/// process on one hostile message.
const MAX_DEPTH: usize = 128;

/// How a payload is encoded, chosen per message by its `content-type` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// UTF-8 JSON, the default.
    #[default]
    Json,
    /// MessagePack, with maps keyed by strings.
    MessagePack,
}

/// A payload that could not be transcoded, or a content type busrpc does not speak.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The `content-type` header names an encoding busrpc does not know.
    #[error("unsupported content type {0:?} (busrpc speaks {JSON} and {MSGPACK})")]
    UnsupportedContentType(String),
    /// The payload is not valid in its encoding.
    #[error("payload is not valid {codec}: {reason}")]
    Invalid {
        /// The encoding the payload claimed.
        codec: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Codec {
    /// The codec a `content-type` header value names; `None` (no header) is JSON.
    /// Parameters such as `; charset=utf-8` are ignored.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, CodecError> {
        let Some(value) = value else {
            return Ok(Codec::Json);
        };
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case(JSON) {
            Ok(Codec::Json)
        } else if essence.eq_ignore_ascii_case(MSGPACK)
            || essence.eq_ignore_ascii_case("application/x-msgpack")
        {
            Ok(Codec::MessagePack)
        } else {
            Err(CodecError::UnsupportedContentType(value.to_owned()))
        }
    }

    /// The value for the `content-type` header.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => JSON,
            Codec::MessagePack => MSGPACK,
        }
    }

    /// Decodes a payload of this codec into the JSON bytes the engine
    /// works on; borrowed when it already is JSON.
    pub fn decode(self, payload: &[u8]) -> Result<Cow<'_, [u8]>, CodecError> {
        match self {
            Codec::Json => Ok(Cow::Borrowed(payload)),
            Codec::MessagePack => {
                let mut out = Vec::with_capacity(payload.len() * 2);
                let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
                de.set_max_depth(MAX_DEPTH);
                let mut ser = serde_json::Serializer::new(&mut out);
                serde_transcode::transcode(&mut de, &mut ser).map_err(|e| CodecError::Invalid {
                    codec: "MessagePack",
                    reason: e.to_string(),
                })?;
                // One value, as JSON's parser insists: bytes after it would
                // be a second message silently dropped.
                let read = usize::try_from(de.position()).unwrap_or(usize::MAX);
                if read < payload.len() {
                    return Err(CodecError::Invalid {
                        codec: "MessagePack",
                        reason: format!(
                            "trailing bytes after the value ({} of {})",
                            payload.len() - read,
                            payload.len()
                        ),
                    });
                }
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Encodes JSON bytes as a payload of this codec; unchanged for JSON.
    pub fn encode(self, json: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Json => Ok(json),
            Codec::MessagePack => {
                let mut out = Vec::with_capacity(json.len());
                let mut de = serde_json::Deserializer::from_slice(&json);
                // Struct-as-map so field names survive, as JSON peers expect.
                let mut ser = rmp_serde::Serializer::new(&mut out).with_struct_map();
                serde_transcode::transcode(&mut de, &mut ser).map_err(|e| CodecError::Invalid {
                    codec: "JSON",
                    reason: e.to_string(),
                })?;
                Ok(out)
            }
        }
    }

    /// The payload as JSON bytes: [`decode`](Self::decode).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `decode`: it decodes a payload into JSON"
    )]
    pub fn to_json(self, payload: &[u8]) -> Result<Cow<'_, [u8]>, CodecError> {
        self.decode(payload)
    }

    /// JSON bytes in this codec: [`encode`](Self::encode).
    #[deprecated(
        since = "0.1.0",
        note = "renamed `encode`: it encodes JSON as a payload"
    )]
    pub fn from_json(self, json: Vec<u8>) -> Result<Vec<u8>, CodecError> {
        self.encode(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(Codec::from_content_type(None).unwrap(), Codec::Json);
        assert_eq!(
            Codec::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            Codec::Json
        );
        assert_eq!(
            Codec::from_content_type(Some("Application/MsgPack")).unwrap(),
            Codec::MessagePack
        );
        let err = Codec::from_content_type(Some("text/xml")).unwrap_err();
        assert!(err.to_string().contains("text/xml"), "{err}");
    }

    #[test]
    fn msgpack_round_trips_through_json() {
        let json =
            br#"{"jsonrpc":"2.0","method":"add","params":[1,-2.5,"x",null,true],"id":7}"#.to_vec();
        let packed = Codec::MessagePack.encode(json.clone()).unwrap();
        assert_ne!(packed, json);
        let back = Codec::MessagePack.decode(&packed).unwrap();
        assert_eq!(
            std::str::from_utf8(&back).unwrap(),
            std::str::from_utf8(&json).unwrap()
        );
    }

    #[test]
    fn deep_msgpack_is_an_error_not_a_stack_overflow() {
        // Arrays of one around a nil, `depth` levels deep, in both encodings.
        let packed = |depth: usize| [vec![0x91; depth], vec![0xc0]].concat();
        let json = |depth: usize| format!("{}null{}", "[".repeat(depth), "]".repeat(depth));
        // The same levels pass both.
        for depth in [MAX_DEPTH - 1, MAX_DEPTH] {
            let transcoded = Codec::MessagePack.decode(&packed(depth)).is_ok();
            let parsed = serde_json::from_str::<serde_json::Value>(&json(depth));
            assert_eq!(transcoded, parsed.is_ok(), "{depth} levels");
        }
        assert_eq!(
            &*Codec::MessagePack.decode(&packed(MAX_DEPTH - 1)).unwrap(),
            json(MAX_DEPTH - 1).as_bytes()
        );
        let err = Codec::MessagePack.decode(&packed(100_000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload is not valid MessagePack: depth limit exceeded"
        );
    }

    /// Found by the fuzzer (fuzz/fuzz_targets/msgpack.rs): a map with a
    /// float key and a float value, whose value serde_json's default parser
    /// read one ULP off, so it came back changed from its trip through JSON
    /// (and a handler taking it as params got another number than was sent).
    #[test]
    fn floats_survive_the_trip_through_json_exactly() {
        let found: &[u8] = &[
            132, 203, 203, 203, 203, 203, 203, 203, 149, 255, 255, 39, 203, 203, 203, 203, 203,
            203, 149, 255, 255, 39, 1, 61, 1,
        ];
        let json = Codec::MessagePack.decode(found).unwrap().into_owned();
        let packed = Codec::MessagePack.encode(json.clone()).unwrap();
        let again = Codec::MessagePack.decode(&packed).unwrap();
        assert_eq!(
            std::str::from_utf8(&again).unwrap(),
            std::str::from_utf8(&json).unwrap()
        );
        for x in [
            -1.3631157193741392e57,
            0.1,
            5e-324,
            f64::MAX,
            2.2250738585072014e-308,
        ] {
            let text = serde_json::to_string(&x).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), x, "{text}");
        }
    }

    #[test]
    fn garbage_msgpack_is_an_error() {
        assert!(Codec::MessagePack.decode(&[0xc1]).is_err());
        // 1, then a stray 2: one value and trailing bytes.
        let err = Codec::MessagePack.decode(&[0x01, 0x02]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload is not valid MessagePack: trailing bytes after the value (1 of 2)"
        );
        assert_eq!(&*Codec::MessagePack.decode(&[0x01]).unwrap(), b"1");
        assert!(matches!(
            Codec::Json.decode(b"{}").unwrap(),
            Cow::Borrowed(_)
        ));
    }
}
