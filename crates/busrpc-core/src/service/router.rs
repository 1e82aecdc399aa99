//! Methods by name: a [`Router`] of handlers, and what the engine
//! dispatches on.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::context::{CallInfo, Context};
use super::handler::{ErasedHandler, Handler, HandlerFuture};
use super::openrpc::{self, MethodDoc};
use crate::wire::jsonrpc::RpcError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::jsonrpc::{INVALID_PARAMS_CODE, METHOD_NOT_FOUND_CODE};

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
            server: &service,
            method,
            id: None,
            headers: &headers,
            deadline: None,
            arrival: crate::service::Arrival::default(),
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
                server: &service,
                method,
                id: Some(&id),
                headers: &headers,
                deadline: None,
                arrival: crate::service::Arrival {
                    attempt: Some(3),
                    queue_wait: None,
                },
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
