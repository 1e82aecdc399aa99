//! Methods by name: async handlers with typed params.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::context::{CallInfo, Context};
use crate::jsonrpc::RpcError;
use crate::openrpc::{self, MethodDoc};

/// What an erased handler returns: the serialized result or an error object.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<Box<RawValue>, RpcError>>;

/// A handler with its types erased: given what the engine knows of the
/// request, its params, and the [`Context`] if middleware built one already.
type ErasedHandler = Box<
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
///   [`Router::with_state`])
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

/// A set of methods, each an async handler registered under its name.
///
/// ```
/// use busrpc_core::{Router, RpcError};
///
/// let router = Router::new()
///     .method("add", |(a, b): (i64, i64)| async move { Ok::<_, RpcError>(a + b) })
///     .method("echo", |(text,): (String,)| async move { Ok::<_, RpcError>(format!("RPC {text}!")) });
/// assert_eq!(router.method_names().count(), 2);
/// ```
///
/// With state shared by all handlers (an object whose methods are served):
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicI64, Ordering}};
/// use busrpc_core::{Router, RpcError};
///
/// #[derive(Default)]
/// struct Counter(AtomicI64);
///
/// let router = Router::with_state(Arc::new(Counter::default()))
///     .method("incr", |c: Arc<Counter>, (by,): (i64,)| async move {
///         Ok::<_, RpcError>(c.0.fetch_add(by, Ordering::SeqCst) + by)
///     });
/// # let _ = router;
/// ```
pub struct Router<S = ()> {
    state: S,
    methods: HashMap<Box<str>, ErasedHandler>,
    docs: HashMap<Box<str>, MethodDoc>,
    info: openrpc::ServiceInfo,
}

impl Router<()> {
    /// A router without state.
    pub fn new() -> Self {
        Self::with_state(())
    }
}

impl Default for Router<()> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// A router whose handlers may take a clone of `state` as first argument.
    pub fn with_state(state: S) -> Self {
        Self {
            state,
            methods: HashMap::new(),
            docs: HashMap::new(),
            info: openrpc::ServiceInfo::default(),
        }
    }

    /// Serves `name` with `handler`.
    ///
    /// # Panics
    ///
    /// If `name` is already registered, or starts with `rpc.` (reserved by
    /// the specification), or if the handler's params type is a single
    /// value (`String`, `i64`, …) that no JSON-RPC params array or object
    /// can be: all programming errors best found at start-up.
    #[must_use]
    pub fn method<M, H: Handler<S, M>>(mut self, name: &str, handler: H) -> Self {
        assert!(
            !name.starts_with("rpc."),
            "method names starting with \"rpc.\" are reserved by JSON-RPC 2.0: {name:?}"
        );
        assert!(
            !self.methods.contains_key(name),
            "method {name:?} is registered twice"
        );
        handler.check_params(name);
        let state = self.state.clone();
        let erased: ErasedHandler =
            Box::new(move |info, params, ctx| handler.call(&state, info, params, ctx));
        self.methods.insert(name.into(), erased);
        self
    }

    /// Describes a registered method in the OpenRPC document the server
    /// answers `rpc.discover` with (its params, result, summary). A method
    /// without a description is listed by name, with its params unknown.
    ///
    /// # Panics
    ///
    /// If no method of that name is registered.
    #[must_use]
    pub fn document(mut self, doc: MethodDoc) -> Self {
        assert!(
            self.methods.contains_key(doc.name()),
            "method {:?} is documented but not registered",
            doc.name()
        );
        self.docs.insert(doc.name().into(), doc);
        self
    }

    /// Sets the version (default `0.0.0`) and description of the service
    /// in its OpenRPC document.
    #[must_use]
    pub fn service_info(mut self, version: &str, description: Option<&str>) -> Self {
        self.info = openrpc::ServiceInfo {
            version: version.to_owned(),
            description: description.map(str::to_owned),
        };
        self
    }

    /// The names of the registered methods, in no particular order.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(|k| &**k)
    }

    /// The OpenRPC document a server of this router under `service` answers
    /// `rpc.discover` with.
    pub fn openrpc(&self, service: &str) -> serde_json::Value {
        let mut names: Vec<&str> = self.method_names().collect();
        names.sort_unstable();
        openrpc::document(service, &self.info, &names, &self.docs)
    }

    /// The methods, with [`DESCRIBE_METHOD`] and [`DISCOVER_METHOD`]
    /// answered by the engine beside them.
    pub(crate) fn into_methods(mut self, service: &str) -> Methods {
        let mut names: Vec<&str> = self.methods.keys().map(|k| &**k).collect();
        names.sort_unstable();
        let description = serde_json::value::to_raw_value(&serde_json::json!({ "methods": names }))
            .expect("a list of strings serializes");
        let discovery = serde_json::value::to_raw_value(&self.openrpc(service))
            .expect("a JSON value serializes");
        for (name, answer) in [(DESCRIBE_METHOD, description), (DISCOVER_METHOD, discovery)] {
            let answer: Arc<RawValue> = Arc::from(answer);
            let handler: ErasedHandler = Box::new(move |_info, _params, _ctx| {
                let answer = (*answer).to_owned();
                Ok(Box::pin(async move { Ok(answer) }))
            });
            self.methods.insert(name.into(), handler);
        }
        // Arc'd names: a metric's `method` label shares them.
        let methods = self.methods.into_iter().map(|(k, v)| (Arc::from(k), v));
        Methods(Arc::new(methods.collect()))
    }
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("methods", &self.methods.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The method every server answers by itself, with `{"methods": [names]}`
/// (sorted, itself not among them). The specification reserves
/// `rpc.`-names for such extensions.
pub const DESCRIBE_METHOD: &str = "rpc.describe";

/// The method every server answers by itself with its OpenRPC document
/// (the service discovery method OpenRPC names): what `busrpc describe`
/// asks.
pub const DISCOVER_METHOD: &str = "rpc.discover";

/// A router with its state type erased: what the engine dispatches on.
#[derive(Clone)]
pub(crate) struct Methods(Arc<HashMap<Arc<str>, ErasedHandler>>);

impl Methods {
    /// The methods' names.
    pub(crate) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.keys()
    }

    pub(crate) fn dispatch_with(
        &self,
        info: &CallInfo<'_>,
        params: Option<&RawValue>,
        ctx: Option<&Context>,
    ) -> Result<HandlerFuture, RpcError> {
        match self.0.get(info.method) {
            Some(handler) => handler(info, params, ctx),
            None => Err(RpcError::method_not_found()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{INVALID_PARAMS_CODE, METHOD_NOT_FOUND_CODE};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    async fn call(
        methods: &Methods,
        method: &str,
        params: Option<&str>,
    ) -> Result<String, RpcError> {
        let params = params.map(raw);
        let service: Arc<str> = "test".into();
        let headers = crate::Headers::new();
        let info = CallInfo {
            service: &service,
            method,
            id: None,
            headers: &headers,
            deadline: None,
            attempt: None,
        };
        let fut = methods.dispatch_with(&info, params.as_deref(), None)?;
        fut.await.map(|r| r.get().to_owned())
    }

    #[derive(serde::Deserialize)]
    struct Sub {
        minuend: i64,
        subtrahend: i64,
    }

    fn methods() -> Methods {
        Router::new()
            .method("add", |(a, b): (i64, i64)| async move {
                Ok::<_, RpcError>(a + b)
            })
            .method("sub", |p: Sub| async move {
                Ok::<_, RpcError>(p.minuend - p.subtrahend)
            })
            .method("none", |(): ()| async move { Ok::<_, RpcError>("ok") })
            .method("fail", |(): ()| async move {
                Err::<(), _>(RpcError::new(7, "nope"))
            })
            .into_methods("test")
    }

    #[tokio::test]
    async fn typed_params_by_position_and_by_name() {
        let m = methods();
        assert_eq!(call(&m, "add", Some("[2, 3]")).await.unwrap(), "5");
        assert_eq!(call(&m, "sub", Some("[42, 23]")).await.unwrap(), "19");
        assert_eq!(
            call(&m, "sub", Some(r#"{"subtrahend": 23, "minuend": 42}"#))
                .await
                .unwrap(),
            "19"
        );
    }

    #[tokio::test]
    async fn absent_and_empty_params_mean_none() {
        let m = methods();
        for p in [None, Some("[]"), Some("{ }")] {
            assert_eq!(call(&m, "none", p).await.unwrap(), "\"ok\"", "{p:?}");
        }
    }

    #[tokio::test]
    async fn errors_say_what_was_wrong() {
        let m = methods();
        let e = call(&m, "add", Some(r#"[1, "x"]"#)).await.unwrap_err();
        assert_eq!(e.code(), INVALID_PARAMS_CODE);
        assert!(
            e.message()
                .starts_with("Invalid params: invalid type: string \"x\", expected i64"),
            "{e}"
        );
        let e = call(&m, "sub", Some(r#"{"minuend": 1}"#))
            .await
            .unwrap_err();
        assert!(e.message().contains("missing field `subtrahend`"), "{e}");
        let e = call(&m, "add", None).await.unwrap_err();
        assert_eq!(e.code(), INVALID_PARAMS_CODE);
        assert_eq!(
            call(&m, "nope", None).await.unwrap_err().code(),
            METHOD_NOT_FOUND_CODE
        );
        assert_eq!(
            call(&m, "fail", None).await.unwrap_err(),
            RpcError::new(7, "nope")
        );
    }

    #[tokio::test]
    async fn state_is_shared_by_handlers() {
        use std::sync::atomic::{AtomicI64, Ordering};
        let m = Router::with_state(Arc::new(AtomicI64::new(0)))
            .method("incr", |s: Arc<AtomicI64>, (by,): (i64,)| async move {
                Ok::<_, RpcError>(s.fetch_add(by, Ordering::SeqCst) + by)
            })
            .method("get", |s: Arc<AtomicI64>, (): ()| async move {
                Ok::<_, RpcError>(s.load(Ordering::SeqCst))
            })
            .into_methods("test");
        call(&m, "incr", Some("[2]")).await.unwrap();
        call(&m, "incr", Some("[3]")).await.unwrap();
        assert_eq!(call(&m, "get", None).await.unwrap(), "5");
    }

    #[tokio::test]
    async fn every_router_describes_its_methods() {
        let m = Router::new()
            .method("sub", |(): ()| async { Ok::<_, RpcError>(()) })
            .method("add", |(): ()| async { Ok::<_, RpcError>(()) })
            .into_methods("test");
        assert_eq!(
            call(&m, DESCRIBE_METHOD, None).await.unwrap(),
            r#"{"methods":["add","sub"]}"#
        );
        let empty = Router::new().into_methods("test");
        assert_eq!(
            call(&empty, DESCRIBE_METHOD, Some("[]")).await.unwrap(),
            r#"{"methods":[]}"#
        );
    }

    #[tokio::test]
    async fn handlers_that_ask_get_the_context() {
        let m = Router::with_state(5_i64)
            .method("plain", |c: Context, (): ()| async move {
                Ok::<_, RpcError>(format!("{} {} {}", c.service(), c.method(), c.id_text()))
            })
            .method("stateful", |s: i64, c: Context, (n,): (i64,)| async move {
                Ok::<_, RpcError>((s + n, c.attempt()))
            })
            .into_methods("svc");
        let service: Arc<str> = "svc".into();
        let headers = crate::Headers::new();
        let id = raw("17");
        for (method, params, expected) in [
            ("plain", None, r#""svc plain 17""#),
            ("stateful", Some(raw("[2]")), "[7,3]"),
        ] {
            let info = CallInfo {
                service: &service,
                method,
                id: Some(&id),
                headers: &headers,
                deadline: None,
                attempt: Some(3),
            };
            let fut = m.dispatch_with(&info, params.as_deref(), None).unwrap();
            assert_eq!(fut.await.unwrap().get(), expected);
        }
    }

    #[test]
    #[should_panic(
        expected = "method \"echo\": its handler takes its params as `alloc::string::String`, a string, but JSON-RPC params are an array or an object: take a tuple"
    )]
    fn a_params_type_no_params_can_fill_is_refused_at_registration() {
        let _ = Router::new().method(
            "echo",
            |text: String| async move { Ok::<_, RpcError>(text) },
        );
    }

    #[test]
    fn params_types_that_fit_are_accepted() {
        #[derive(serde::Deserialize)]
        struct Wrapped(#[allow(dead_code)] Vec<i64>);
        let _ = Router::new()
            .method("a", |(): ()| async { Ok::<_, RpcError>(()) })
            .method("b", |_: Vec<i64>| async { Ok::<_, RpcError>(()) })
            .method("c", |_: Option<Sub>| async { Ok::<_, RpcError>(()) })
            .method("d", |_: serde_json::Value| async { Ok::<_, RpcError>(()) })
            .method("e", |_: Wrapped| async { Ok::<_, RpcError>(()) })
            .method("f", |_: HashMap<String, i64>| async {
                Ok::<_, RpcError>(())
            });
    }

    #[test]
    #[should_panic(expected = "reserved")]
    fn rpc_prefix_is_reserved() {
        let _ = Router::new().method("rpc.discover", |(): ()| async { Ok::<_, RpcError>(()) });
    }

    #[test]
    #[should_panic(expected = "twice")]
    fn duplicate_methods_panic() {
        let _ = Router::new()
            .method("a", |(): ()| async { Ok::<_, RpcError>(()) })
            .method("a", |(): ()| async { Ok::<_, RpcError>(()) });
    }
}
