//! Methods by name: async handlers with typed params.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::jsonrpc::RpcError;

/// What an erased handler returns: the serialized result or an error object.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<Box<RawValue>, RpcError>>;

type ErasedHandler =
    Box<dyn Fn(Option<&RawValue>) -> Result<HandlerFuture, RpcError> + Send + Sync>;

/// An async function that can serve a method. Implemented for closures and
/// functions of two shapes, whose params type `P` is deserialized from the
/// request's params (by position from an array, by name from an object):
///
/// - `Fn(P) -> impl Future<Output = Result<R, E>>`
/// - `Fn(S, P) -> impl Future<Output = Result<R, E>>`, given a clone of the
///   router's state `S` (see [`Router::with_state`])
///
/// where `R: Serialize` and `E: Into<RpcError>`. The marker `M` only tells
/// the two shapes apart.
///
/// The trait is sealed: its one method works on the engine's internal
/// types, so it is implemented here for those two shapes and nowhere else,
/// and can change without breaking anyone:
///
/// ```compile_fail
/// struct MyHandler;
/// // error: `busrpc_core::router::sealed::Call` is not implemented for `MyHandler`
/// impl busrpc_core::Handler<(), ()> for MyHandler {}
/// ```
pub trait Handler<S, M>: sealed::Call<S, M> + Send + Sync + 'static {}

impl<T: sealed::Call<S, M> + Send + Sync + 'static, S, M> Handler<S, M> for T {}

mod sealed {
    use super::{HandlerFuture, RawValue, RpcError};

    // Public in a private module: nameable as a supertrait of `Handler`,
    // implementable by no other crate.
    #[allow(unreachable_pub)]
    pub trait Call<S, M> {
        /// Parses the params and starts the call.
        fn call(&self, state: &S, params: Option<&RawValue>) -> Result<HandlerFuture, RpcError>;
    }
}

use sealed::Call;

impl<F, Fut, P, R, E, S> Call<S, (P,)> for F
where
    F: Fn(P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    P: DeserializeOwned,
    R: Serialize,
    E: Into<RpcError>,
{
    fn call(&self, _state: &S, params: Option<&RawValue>) -> Result<HandlerFuture, RpcError> {
        let fut = self(parse_params(params)?);
        Ok(Box::pin(async move { serialize_result(fut.await) }))
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
    fn call(&self, state: &S, params: Option<&RawValue>) -> Result<HandlerFuture, RpcError> {
        let fut = self(state.clone(), parse_params(params)?);
        Ok(Box::pin(async move { serialize_result(fut.await) }))
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
        }
    }

    /// Serves `name` with `handler`.
    ///
    /// # Panics
    ///
    /// If `name` is already registered, or starts with `rpc.` (reserved by
    /// the specification): both are programming errors best found at start-up.
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
        let state = self.state.clone();
        let erased: ErasedHandler = Box::new(move |params| handler.call(&state, params));
        self.methods.insert(name.into(), erased);
        self
    }

    /// The names of the registered methods, in no particular order.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(|k| &**k)
    }

    /// The methods, with [`DESCRIBE_METHOD`] answered by the engine beside them.
    pub(crate) fn into_methods(mut self) -> Methods {
        let mut names: Vec<&str> = self.methods.keys().map(|k| &**k).collect();
        names.sort_unstable();
        let description = serde_json::value::to_raw_value(&serde_json::json!({ "methods": names }))
            .expect("a list of strings serializes");
        let described: Arc<RawValue> = Arc::from(description);
        let describe: ErasedHandler = Box::new(move |_params| {
            let answer = (*described).to_owned();
            Ok(Box::pin(async move { Ok(answer) }))
        });
        self.methods.insert(DESCRIBE_METHOD.into(), describe);
        Methods(Arc::new(self.methods))
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
/// (sorted, itself not among them): what `busrpc describe` asks. The
/// specification reserves `rpc.`-names for such extensions.
pub const DESCRIBE_METHOD: &str = "rpc.describe";

/// A router with its state type erased: what the engine dispatches on.
#[derive(Clone)]
pub(crate) struct Methods(Arc<HashMap<Box<str>, ErasedHandler>>);

impl Methods {
    pub(crate) fn dispatch(
        &self,
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<HandlerFuture, RpcError> {
        match self.0.get(method) {
            Some(handler) => handler(params),
            None => Err(RpcError::method_not_found()),
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
        let fut = methods.dispatch(method, params.as_deref())?;
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
            .into_methods()
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
            .into_methods();
        call(&m, "incr", Some("[2]")).await.unwrap();
        call(&m, "incr", Some("[3]")).await.unwrap();
        assert_eq!(call(&m, "get", None).await.unwrap(), "5");
    }

    #[tokio::test]
    async fn every_router_describes_its_methods() {
        let m = Router::new()
            .method("sub", |(): ()| async { Ok::<_, RpcError>(()) })
            .method("add", |(): ()| async { Ok::<_, RpcError>(()) })
            .into_methods();
        assert_eq!(
            call(&m, DESCRIBE_METHOD, None).await.unwrap(),
            r#"{"methods":["add","sub"]}"#
        );
        let empty = Router::new().into_methods();
        assert_eq!(
            call(&empty, DESCRIBE_METHOD, Some("[]")).await.unwrap(),
            r#"{"methods":[]}"#
        );
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
