//! What the code `#[busrpc::service]` generates leans on: params taken by
//! position or by name, and checks that say what a type lacks. Reached by
//! the generated code as `busrpc::__private`; not an API.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use crate::error::Error;
use crate::wire::jsonrpc::RpcError;

pub use serde;
pub use serde_json;

pub use crate::__errors as errors;
pub use crate::__schema as schema;

/// A method's params, as the caller sent them: an array (`T`, a tuple of
/// the params in order) or an object (`N`, a struct with a field per
/// param).
#[derive(Debug)]
pub enum Params<T, N> {
    /// By position.
    Positional(T),
    /// By name.
    Named(N),
}

impl<T, N> Params<T, N> {
    /// The params in order, converting named ones with `from_named`.
    pub fn into_positional(self, from_named: impl FnOnce(N) -> T) -> T {
        match self {
            Params::Positional(t) => t,
            Params::Named(n) => from_named(n),
        }
    }
}

impl<'de, T: Deserialize<'de>, N: Deserialize<'de>> Deserialize<'de> for Params<T, N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<T, N>(PhantomData<(T, N)>);

        impl<'de, T: Deserialize<'de>, N: Deserialize<'de>> Visitor<'de> for Either<T, N> {
            type Value = Params<T, N>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("params by position (an array) or by name (an object)")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let params = T::deserialize(SeqAccessDeserializer::new(&mut seq))?;
                // Said here: serde_json would call them "trailing characters".
                let mut extra = 0usize;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    extra += 1;
                }
                if extra > 0 {
                    return Err(de::Error::custom(format_args!(
                        "{extra} param(s) more than the method takes"
                    )));
                }
                Ok(Params::Positional(params))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                N::deserialize(MapAccessDeserializer::new(map)).map(Params::Named)
            }

            // Absent params: right for a method without any (`T` is `()`).
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                T::deserialize(de::value::UnitDeserializer::new())
                    .map(Params::Positional)
                    .map_err(|_: E| E::invalid_type(de::Unexpected::Other("no params"), &self))
            }
        }

        deserializer.deserialize_any(Either(PhantomData))
    }
}

/// Fails to compile, naming the type, when a param cannot travel.
pub fn assert_param<T: Serialize + DeserializeOwned + Send + 'static>() {}

/// Fails to compile, naming the type, when a result cannot travel.
pub fn assert_result<T: Serialize + DeserializeOwned + Send + 'static>() {}

/// Fails to compile, naming the type, when it cannot be a service's error.
pub fn assert_error<E: ServiceError>() {}

/// A service method's error type: the server sends it as a JSON-RPC error
/// object (`Into<RpcError>`), and the generated client returns it, made
/// from whatever failed (`From<Error>`: the server's error object as
/// [`Error::Rpc`], or a timeout, a broker failure, …).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a busrpc service method",
    label = "needs `Into<RpcError>` and `From<busrpc::Error>`",
    note = "the server sends it as an error object: implement `From<{Self}> for busrpc::RpcError` (code, message, data)",
    note = "the client returns it: implement `From<busrpc::Error> for {Self}`, turning `Error::Rpc(e)` back into your error by `e.code()` and keeping the rest (timeouts, broker failures) in a variant of its own",
    note = "`busrpc::Error` and `busrpc::RpcError` can serve as they are"
)]
pub trait ServiceError: Into<RpcError> + From<Error> + Send + 'static {}

impl<E: Into<RpcError> + From<Error> + Send + 'static> ServiceError for E {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Named {
        a: i64,
        b: Option<String>,
    }

    type P = Params<(i64, Option<String>), Named>;

    fn parse(text: &str) -> Result<(i64, Option<String>), String> {
        serde_json::from_str::<P>(text)
            .map(|p| p.into_positional(|n| (n.a, n.b)))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn by_position_and_by_name() {
        assert_eq!(parse(r#"[1, "x"]"#).unwrap(), (1, Some("x".into())));
        assert_eq!(
            parse(r#"{"b": "x", "a": 1}"#).unwrap(),
            (1, Some("x".into()))
        );
        assert_eq!(parse(r#"{"a": 1}"#).unwrap(), (1, None));
    }

    #[test]
    fn wrong_params_say_what_is_wrong() {
        assert!(parse(r#"[1]"#).unwrap_err().contains("invalid length 1"));
        assert!(parse(r#"[1, "x", 3]"#)
            .unwrap_err()
            .contains("1 param(s) more than the method takes"));
        assert!(parse(r#"{"a": 1, "c": 2}"#)
            .unwrap_err()
            .contains("unknown field `c`"));
        assert!(parse(r#"{"b": "x"}"#)
            .unwrap_err()
            .contains("missing field `a`"));
        assert!(parse("7")
            .unwrap_err()
            .contains("expected params by position"));
        assert!(parse("null").unwrap_err().contains("no params"));
    }

    #[test]
    fn no_params_at_all() {
        #[derive(serde::Deserialize)]
        struct None_ {}
        assert!(serde_json::from_str::<Params<(), None_>>("null").is_ok());
        assert!(serde_json::from_str::<Params<(), None_>>("{}").is_ok());
    }
}
