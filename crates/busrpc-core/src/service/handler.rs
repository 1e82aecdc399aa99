//! The handler shapes a method can be served by, and how params and
//! results cross the JSON boundary.

use std::future::Future;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use super::context::{CallInfo, Context};
use crate::wire::jsonrpc::RpcError;

/// What an erased handler returns: the serialized result or an error object.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<Box<RawValue>, RpcError>>;

/// A handler with its types erased: given what the engine knows of the
/// request, its params, and the [`Context`] if middleware built one already.
pub(crate) type ErasedHandler = Box<
    dyn Fn(&CallInfo<'_>, Option<&RawValue>, Option<&Context>) -> Result<HandlerFuture, RpcError>
        + Send
        + Sync,
>;

/// An async function that can serve a method. Implemented for closures and
/// functions of four shapes, whose params type `P` is deserialized from the
/// request's params (by position from an array, by name from an object):
///
/// - `Fn(P) -> impl Future<Output = Result<R, E>>`
/// - `Fn(S, P) -> …`, given a clone of the router's state `S` (see
///   [`Router::with_state`](crate::Router::with_state))
/// - `Fn(Context, P) -> …`, given the request's [`Context`]
/// - `Fn(S, Context, P) -> …`
///
/// where `R: Serialize` and `E: Into<RpcError>`. `P` is a tuple (by
/// position: `|(a, b): (i64, i64)|`, `|(text,): (String,)|`), a struct
/// (by name, or by position in field order), `()` for none, a `Vec` or a
/// map. The marker `M` only tells the shapes apart.
///
/// The trait is sealed: its one method works on the engine's internal
/// types, so it is implemented here for those shapes and nowhere else,
/// and can change without breaking anyone:
///
/// ```compile_fail
/// struct MyHandler;
/// // error: `MyHandler` cannot serve a method
/// impl busrpc_core::Handler<(), ()> for MyHandler {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot serve a method",
    label = "not a handler",
    note = "a handler is an async closure or fn taking its params as ONE argument, a tuple `|(a, b): (i64, i64)|`, `|(text,): (String,)|` or a struct, optionally after the router's state and a `Context`",
    note = "it returns a future of `Result<R, E>` where `R: Serialize` and `E: Into<RpcError>`: write `Ok::<_, RpcError>(value)` if the error type cannot be inferred"
)]
pub trait Handler<S, M>: sealed::Call<S, M> + Send + Sync + 'static {}

impl<T: sealed::Call<S, M> + Send + Sync + 'static, S, M> Handler<S, M> for T {}

mod sealed {
    use super::{CallInfo, Context, HandlerFuture, RawValue, RpcError};

    // Public in a private module: nameable as a supertrait of `Handler`,
    // implementable by no other crate.
    #[allow(unreachable_pub)]
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot serve a method",
        note = "a handler is an async closure or fn taking its params as ONE argument, a tuple `|(a, b): (i64, i64)|` or a struct, optionally after the router's state and a `Context`, and returning `Result<impl Serialize, impl Into<RpcError>>`"
    )]
    pub trait Call<S, M> {
        /// Parses the params and starts the call.
        fn call(
            &self,
            state: &S,
            info: &CallInfo<'_>,
            params: Option<&RawValue>,
            ctx: Option<&Context>,
        ) -> Result<HandlerFuture, RpcError>;

        /// Panics, saying what to write instead, if the params type cannot
        /// be deserialized from a JSON-RPC params array or object.
        fn check_params(&self, method: &str);
    }
}

use sealed::Call;

/// Marks the `Fn(Context, P)` shape.
pub struct WithContext<P>(std::marker::PhantomData<P>);
/// Marks the `Fn(S, Context, P)` shape.
pub struct WithStateAndContext<P>(std::marker::PhantomData<P>);

fn context_of(info: &CallInfo<'_>, ctx: Option<&Context>) -> Context {
    ctx.cloned().unwrap_or_else(|| info.context())
}

impl<F, Fut, P, R, E, S> Call<S, (P,)> for F
where
    F: Fn(P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    P: DeserializeOwned,
    R: Serialize,
    E: Into<RpcError>,
{
    fn call(
        &self,
        _state: &S,
        _info: &CallInfo<'_>,
        params: Option<&RawValue>,
        _ctx: Option<&Context>,
    ) -> Result<HandlerFuture, RpcError> {
        let fut = self(parse_params(params)?);
        Ok(Box::pin(async move { serialize_result(fut.await) }))
    }

    fn check_params(&self, method: &str) {
        shape::check::<P>(method);
    }
}

impl<F, Fut, P, R, E, S> Call<S, (S, P)> for F
where
    F: Fn(S, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    P: DeserializeOwned,
    R: Serialize,
    E: Into<RpcError>,
    S: Clone,
{
    fn call(
        &self,
        state: &S,
        _info: &CallInfo<'_>,
        params: Option<&RawValue>,
        _ctx: Option<&Context>,
    ) -> Result<HandlerFuture, RpcError> {
        let fut = self(state.clone(), parse_params(params)?);
        Ok(Box::pin(async move { serialize_result(fut.await) }))
    }

    fn check_params(&self, method: &str) {
        shape::check::<P>(method);
    }
}

impl<F, Fut, P, R, E, S> Call<S, WithContext<P>> for F
where
    F: Fn(Context, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    P: DeserializeOwned,
    R: Serialize,
    E: Into<RpcError>,
{
    fn call(
        &self,
        _state: &S,
        info: &CallInfo<'_>,
        params: Option<&RawValue>,
        ctx: Option<&Context>,
    ) -> Result<HandlerFuture, RpcError> {
        let params = parse_params(params)?;
        let fut = self(context_of(info, ctx), params);
        Ok(Box::pin(async move { serialize_result(fut.await) }))
    }

    fn check_params(&self, method: &str) {
        shape::check::<P>(method);
    }
}

impl<F, Fut, P, R, E, S> Call<S, WithStateAndContext<P>> for F
where
    F: Fn(S, Context, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    P: DeserializeOwned,
    R: Serialize,
    E: Into<RpcError>,
    S: Clone,
{
    fn call(
        &self,
        state: &S,
        info: &CallInfo<'_>,
        params: Option<&RawValue>,
        ctx: Option<&Context>,
    ) -> Result<HandlerFuture, RpcError> {
        let params = parse_params(params)?;
        let fut = self(state.clone(), context_of(info, ctx), params);
        Ok(Box::pin(async move { serialize_result(fut.await) }))
    }

    fn check_params(&self, method: &str) {
        shape::check::<P>(method);
    }
}

fn is_empty_container(text: &str) -> bool {
    let inner = || text[1..text.len() - 1].trim().is_empty();
    (text.starts_with('[') || text.starts_with('{')) && inner()
}

/// Deserializes params into the handler's type. Absent params, `[]` and `{}`
/// all mean "no params", so a handler taking `()`, an `Option`, a `Vec` or a
/// struct whose fields all have defaults accepts any of them.
pub(crate) fn parse_params<P: DeserializeOwned>(params: Option<&RawValue>) -> Result<P, RpcError> {
    let text = params.map_or("null", RawValue::get);
    match serde_json::from_str(text) {
        Ok(p) => Ok(p),
        Err(e) => {
            if text == "null" || is_empty_container(text) {
                for empty in ["null", "[]", "{}"] {
                    if let Ok(p) = serde_json::from_str(empty) {
                        return Ok(p);
                    }
                }
            }
            Err(RpcError::invalid_params(e))
        }
    }
}

fn serialize_result<R: Serialize, E: Into<RpcError>>(
    result: Result<R, E>,
) -> Result<Box<RawValue>, RpcError> {
    let value = result.map_err(Into::into)?;
    serde_json::value::to_raw_value(&value).map_err(|e| {
        tracing::error!(error = %e, "a handler's result could not be serialized");
        RpcError::internal_error().with_data(&format!("result could not be serialized: {e}"))
    })
}
/// Finds, at registration, params types no JSON-RPC params can fill: a
/// request's params are an array or an object, never a bare string or
/// number, so a handler taking `String` would compile and never be called.
mod shape {
    use std::fmt;

    use serde::de::{self, Deserialize, Visitor};

    /// What the params type asked the deserializer for.
    #[derive(Debug)]
    enum Asked {
        /// A single value, by serde's name for it (`a string`, `an i64`).
        Scalar(&'static str),
        /// An array, an object, nothing, or anything: params can be that.
        Fine,
        Other,
    }

    impl fmt::Display for Asked {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl std::error::Error for Asked {}

    impl de::Error for Asked {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Asked::Other
        }
    }

    struct Probe;

    macro_rules! scalar {
        ($($method:ident => $what:literal),* $(,)?) => {$(
            fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Asked> {
                Err(Asked::Scalar($what))
            }
        )*};
    }

    macro_rules! fine {
        ($($method:ident($($arg:ty),*)),* $(,)?) => {$(
            fn $method<V: Visitor<'de>>(self, $(_: $arg,)* _: V) -> Result<V::Value, Asked> {
                Err(Asked::Fine)
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Asked;

        scalar! {
            deserialize_bool => "a bool", deserialize_i8 => "an integer",
            deserialize_i16 => "an integer", deserialize_i32 => "an integer",
            deserialize_i64 => "an integer", deserialize_i128 => "an integer",
            deserialize_u8 => "an integer", deserialize_u16 => "an integer",
            deserialize_u32 => "an integer", deserialize_u64 => "an integer",
            deserialize_u128 => "an integer", deserialize_f32 => "a number",
            deserialize_f64 => "a number", deserialize_char => "a char",
            deserialize_str => "a string", deserialize_string => "a string",
            deserialize_bytes => "bytes", deserialize_byte_buf => "bytes",
            deserialize_identifier => "a string",
        }

        fine! {
            deserialize_any(), deserialize_unit(), deserialize_seq(), deserialize_map(),
            deserialize_ignored_any(), deserialize_unit_struct(&'static str),
            deserialize_tuple(usize), deserialize_tuple_struct(&'static str, usize),
            deserialize_struct(&'static str, &'static [&'static str]),
            deserialize_enum(&'static str, &'static [&'static str]),
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Asked> {
            visitor.visit_some(Probe)
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Asked> {
            visitor.visit_newtype_struct(Probe)
        }
    }

    pub(super) fn check<'de, P: Deserialize<'de>>(method: &str) {
        if let Err(Asked::Scalar(what)) = P::deserialize(Probe) {
            let ty = std::any::type_name::<P>();
            panic!(
                "method {method:?}: its handler takes its params as `{ty}`, {what}, but JSON-RPC params are an array or an object: \
                 take a tuple (`|(value,): ({ty},)|` for one param by position) or a struct with named fields"
            );
        }
    }
}
