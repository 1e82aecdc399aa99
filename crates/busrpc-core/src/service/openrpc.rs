//! The OpenRPC document every server answers `rpc.discover` with.
//!
//! A method registered with [`Router::method`](crate::Router::method) alone
//! is listed by name, its params marked undescribed (`x-busrpc-params`); one
//! described with [`Router::document`](crate::Router::document), as the
//! `#[busrpc::service]` macro does for every method, gets its params, their
//! JSON Schemas and its result.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// The OpenRPC specification version the documents follow.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// The service-wide part of the document.
#[derive(Clone, Debug)]
pub(crate) struct ServiceInfo {
    pub(crate) version: String,
    pub(crate) description: Option<String>,
}

impl Default for ServiceInfo {
    fn default() -> Self {
        Self {
            version: "0.0.0".to_owned(),
            description: None,
        }
    }
}

/// How a method takes its params (OpenRPC's `paramStructure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamStructure {
    /// An array, in the order of the params.
    ByPosition,
    /// An object, keyed by the params' names.
    ByName,
    /// Either.
    Either,
}

impl ParamStructure {
    fn as_str(self) -> &'static str {
        match self {
            ParamStructure::ByPosition => "by-position",
            ParamStructure::ByName => "by-name",
            ParamStructure::Either => "either",
        }
    }
}

/// The errors an error type answers with, by code: implemented for the
/// error type of a `#[busrpc::service]` trait, every method returning it
/// lists them in the service's OpenRPC document (the method's `errors`),
/// which `busrpc describe` prints.
///
/// ```
/// use busrpc_core::openrpc::DeclaredErrors;
///
/// enum BillingError { InsufficientFunds, Unauthorized }
///
/// impl DeclaredErrors for BillingError {
///     const ERRORS: &'static [(i32, &'static str)] =
///         &[(1001, "insufficient funds"), (1003, "unauthorized")];
/// }
/// ```
pub trait DeclaredErrors {
    /// Each error's code and message.
    const ERRORS: &'static [(i32, &'static str)];
}

/// One method's entry in the OpenRPC document.
///
/// ```
/// use busrpc_core::openrpc::MethodDoc;
/// use serde_json::json;
///
/// let doc = MethodDoc::new("add")
///     .summary("Adds two numbers.")
///     .param("a", json!({"type": "integer"}), true)
///     .param("b", json!({"type": "integer"}), true)
///     .result("sum", json!({"type": "integer"}));
/// assert_eq!(doc.name(), "add");
/// ```
#[derive(Clone, Debug)]
pub struct MethodDoc {
    name: String,
    summary: Option<String>,
    description: Option<String>,
    params: Vec<Value>,
    structure: ParamStructure,
    result: Option<Value>,
    notification: bool,
    errors: Vec<(i32, String)>,
}

impl MethodDoc {
    /// An entry for `name` with no params and no result yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            summary: None,
            description: None,
            params: Vec::new(),
            structure: ParamStructure::Either,
            result: None,
            notification: false,
            errors: Vec::new(),
        }
    }

    /// The method's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A one-line summary.
    #[must_use]
    pub fn summary(mut self, summary: &str) -> Self {
        self.summary = Some(summary.to_owned()).filter(|s| !s.is_empty());
        self
    }

    /// A longer description (Markdown).
    #[must_use]
    pub fn description(mut self, description: &str) -> Self {
        self.description = Some(description.to_owned()).filter(|s| !s.is_empty());
        self
    }

    /// Adds a param, in position order, with its JSON Schema.
    #[must_use]
    pub fn param(mut self, name: &str, schema: Value, required: bool) -> Self {
        let mut param = Map::new();
        param.insert("name".into(), json!(name));
        param.insert("schema".into(), schema);
        param.insert("required".into(), json!(required));
        self.params.push(Value::Object(param));
        self
    }

    /// How the params are taken (default: either way).
    #[must_use]
    pub fn param_structure(mut self, structure: ParamStructure) -> Self {
        self.structure = structure;
        self
    }

    /// The result and its JSON Schema.
    #[must_use]
    pub fn result(mut self, name: &str, schema: Value) -> Self {
        let mut result = Map::new();
        result.insert("name".into(), json!(name));
        result.insert("schema".into(), schema);
        self.result = Some(Value::Object(result));
        self
    }

    /// Adds the errors the method may answer with (code, message), in
    /// order, after those added before.
    #[must_use]
    pub fn errors(mut self, errors: &[(i32, &str)]) -> Self {
        self.errors.extend(
            errors
                .iter()
                .map(|(code, message)| (*code, (*message).to_owned())),
        );
        self
    }

    /// Marks the method as meant to be sent as a notification (no result).
    #[must_use]
    pub fn notification(mut self) -> Self {
        self.notification = true;
        self.result = None;
        self
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if let Some(s) = &self.summary {
            m.insert("summary".into(), json!(s));
        }
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        m.insert("paramStructure".into(), json!(self.structure.as_str()));
        m.insert("params".into(), Value::Array(self.params.clone()));
        if let Some(r) = &self.result {
            m.insert("result".into(), r.clone());
        }
        if self.notification {
            m.insert("x-busrpc-notification".into(), json!(true));
        }
        if !self.errors.is_empty() {
            let errors: Vec<Value> = self
                .errors
                .iter()
                .map(|(code, message)| json!({"code": code, "message": message}))
                .collect();
            m.insert("errors".into(), Value::Array(errors));
        }
        Value::Object(m)
    }
}

/// The document for `service`: its methods in `names` order, each as
/// described in `docs` or by name alone.
pub(crate) fn document(
    service: &str,
    info: &ServiceInfo,
    names: &[&str],
    docs: &HashMap<Box<str>, MethodDoc>,
) -> Value {
    let methods: Vec<Value> = names
        .iter()
        .map(|name| match docs.get(*name) {
            Some(doc) => doc.to_json(),
            None => json!({
                "name": name,
                "params": [],
                "x-busrpc-params": "undescribed",
            }),
        })
        .collect();
    let mut about = Map::new();
    about.insert("title".into(), json!(service));
    about.insert("version".into(), json!(info.version));
    if let Some(d) = &info.description {
        about.insert("description".into(), json!(d));
    }
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": about,
        "methods": methods,
    })
}

/// A JSON Schema for `T` when it implements `schemars::JsonSchema` and the
/// `schemars` feature is on, else one that only names the type: the macro
/// calls `(&&SchemaOf::<T>::new()).schema(name)`, and method resolution
/// picks the first impl below that applies (autoref specialization; it
/// works because the macro's types are concrete).
#[doc(hidden)]
pub mod schema_of {
    use std::marker::PhantomData;

    use serde_json::{json, Value};

    /// A type whose schema is wanted.
    pub struct SchemaOf<T: ?Sized>(PhantomData<T>);

    impl<T: ?Sized> SchemaOf<T> {
        /// The probe for `T`.
        pub fn new() -> Self {
            Self(PhantomData)
        }
    }

    impl<T: ?Sized> Default for SchemaOf<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Picked when `T: JsonSchema`.
    pub trait ViaJsonSchema {
        /// `T`'s schema.
        fn schema(&self, name: &str) -> Value;
    }

    #[cfg(feature = "schemars")]
    impl<T: ?Sized + schemars::JsonSchema> ViaJsonSchema for &SchemaOf<T> {
        fn schema(&self, _name: &str) -> Value {
            let mut schema =
                serde_json::to_value(schemars::schema_for!(T)).unwrap_or_else(|_| json!({}));
            // Each param's schema is a part of the document, not a document
            // of its own that names its dialect.
            if let Some(schema) = schema.as_object_mut() {
                schema.remove("$schema");
            }
            schema
        }
    }

    /// Picked otherwise: a schema that accepts anything and names the type.
    pub trait NamedOnly {
        /// A schema titled `name`.
        fn schema(&self, name: &str) -> Value;
    }

    impl<T: ?Sized> NamedOnly for SchemaOf<T> {
        fn schema(&self, name: &str) -> Value {
            json!({ "title": name })
        }
    }
}

/// The errors `T` declares when it implements [`DeclaredErrors`], else
/// none: the macro calls `(&&ErrorsOf::<E>::new()).errors()` for each
/// method's error type (autoref specialization, as [`schema_of`]).
#[doc(hidden)]
pub mod errors_of {
    use std::marker::PhantomData;

    use super::DeclaredErrors;

    /// An error type whose declared errors are wanted.
    pub struct ErrorsOf<T: ?Sized>(PhantomData<T>);

    impl<T: ?Sized> ErrorsOf<T> {
        /// The probe for `T`.
        pub fn new() -> Self {
            Self(PhantomData)
        }
    }

    impl<T: ?Sized> Default for ErrorsOf<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Picked when `T: DeclaredErrors`.
    pub trait Declared {
        /// `T`'s errors.
        fn errors(&self) -> &'static [(i32, &'static str)];
    }

    impl<T: ?Sized + DeclaredErrors> Declared for &ErrorsOf<T> {
        fn errors(&self) -> &'static [(i32, &'static str)] {
            T::ERRORS
        }
    }

    /// Picked otherwise: none.
    pub trait Undeclared {
        /// No errors.
        fn errors(&self) -> &'static [(i32, &'static str)];
    }

    impl<T: ?Sized> Undeclared for ErrorsOf<T> {
        fn errors(&self) -> &'static [(i32, &'static str)] {
            &[]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undescribed_methods_are_listed_by_name() {
        let mut docs = HashMap::new();
        docs.insert(
            "add".into(),
            MethodDoc::new("add")
                .param("a", json!({"type": "integer"}), true)
                .result("sum", json!({"type": "integer"})),
        );
        let doc = document("calc", &ServiceInfo::default(), &["add", "echo"], &docs);
        assert_eq!(
            doc.to_string(),
            r#"{"info":{"title":"calc","version":"0.0.0"},"methods":[{"name":"add","paramStructure":"either","params":[{"name":"a","required":true,"schema":{"type":"integer"}}],"result":{"name":"sum","schema":{"type":"integer"}}},{"name":"echo","params":[],"x-busrpc-params":"undescribed"}],"openrpc":"1.3.2"}"#
        );
    }

    #[test]
    #[allow(clippy::needless_borrow)] // the two borrows are the point
    fn declared_errors_are_listed_and_undeclared_types_have_none() {
        #[allow(unused_imports)]
        use errors_of::{Declared as _, ErrorsOf, Undeclared as _};
        struct Plain;
        struct Billing;
        impl DeclaredErrors for Billing {
            const ERRORS: &'static [(i32, &'static str)] = &[(1001, "insufficient funds")];
        }
        assert!((&&ErrorsOf::<Plain>::new()).errors().is_empty());
        let declared = (&&ErrorsOf::<Billing>::new()).errors();
        assert_eq!(declared, &[(1001, "insufficient funds")]);
        let doc = MethodDoc::new("charge").errors(declared).to_json();
        assert_eq!(
            doc["errors"].to_string(),
            r#"[{"code":1001,"message":"insufficient funds"}]"#
        );
        assert!(MethodDoc::new("plain").to_json().get("errors").is_none());
    }

    #[test]
    #[allow(clippy::needless_borrow)] // the two borrows are the point
    fn types_without_a_schema_are_named() {
        use schema_of::*;
        #[allow(unused_imports)]
        use schema_of::{NamedOnly as _, ViaJsonSchema as _};
        struct Opaque;
        assert_eq!(
            (&&SchemaOf::<Opaque>::new()).schema("Opaque"),
            json!({"title": "Opaque"})
        );
    }

    #[cfg(feature = "schemars")]
    #[test]
    #[allow(clippy::needless_borrow)]
    fn types_with_a_schema_get_it() {
        use schema_of::*;
        assert_eq!(
            (&&SchemaOf::<u64>::new()).schema("u64")["type"],
            json!("integer")
        );
    }
}
