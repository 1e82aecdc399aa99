//! `#[busrpc::service]`: one Rust trait gives a busrpc server, a typed
//! client and an OpenRPC description, so that client and server cannot
//! disagree on the service's name, its methods' names or their types.
//!
//! Use it through the `busrpc` crate (feature `macros`, on by default),
//! whose documentation of [`service`] has the complete example.

use std::collections::HashMap;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{
    parse_quote, Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, PathArguments,
    ReturnType, TraitItem, TraitItemFn, Type,
};

/// Turns a trait into a busrpc service; see the `busrpc` crate's
/// documentation of `service` for the complete picture.
///
/// Options: `name = "billing"` (required: the service's name on the
/// broker), `version = "1.2.0"` (in the OpenRPC document; default: the
/// crate's version), `crate = "::busrpc"` (the path the generated code
/// names busrpc by; `::busrpc_core` inside busrpc's own crates).
///
/// On a method: `#[method(name = "refund.full")]` (the JSON-RPC method
/// name, default the Rust name), `#[method(params = "whole")]` (the one
/// param receives the request's params as a whole, array or object),
/// `#[method(timeout = "2s")]` (how long the typed client waits for this
/// method's reply unless the caller set a timeout with `with_timeout`;
/// `ms`, `s` or `m`), `#[notification]` (no result: the client sends it as
/// a notification).
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Args {
    name: Option<LitStr>,
    version: Option<LitStr>,
    krate: Option<syn::Path>,
}

fn parse_args(attr: Tokens) -> syn::Result<Args> {
    let mut args = Args::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            args.name = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("version") {
            args.version = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("crate") {
            let path: LitStr = meta.value()?.parse()?;
            args.krate = Some(path.parse()?);
        } else {
            return Err(meta.error(
                "unknown option of #[busrpc::service]: expected `name = \"...\"`, `version = \"...\"` or `crate = \"...\"`",
            ));
        }
        Ok(())
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(args)
}

/// A parameter of a method, as the wire sees it.
struct Param {
    name: Ident,
    ty: Type,
}

/// How a method receives the request's context, if it does.
enum ContextArg {
    None,
    Owned,
    Borrowed,
}

struct Method {
    ident: Ident,
    rpc_name: String,
    rpc_name_span: Span,
    params: Vec<Param>,
    context: ContextArg,
    /// `Some((ok, err))` for a call, `None` for a notification.
    result: Option<(Type, Type)>,
    whole_params: bool,
    /// `#[method(timeout = "...")]`, in milliseconds.
    timeout_ms: Option<u64>,
    docs: Vec<String>,
    attrs: Vec<Attribute>,
    span: Span,
}

/// `"250ms"`, `"2s"` or `"1m"`: a whole number and its unit, more than
/// zero, in milliseconds.
fn parse_timeout(lit: &LitStr) -> syn::Result<u64> {
    let text = lit.value();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        _ => None,
    };
    let ms = number
        .parse::<u64>()
        .ok()
        .zip(scale)
        .and_then(|(n, scale)| n.checked_mul(scale))
        .filter(|ms| *ms > 0);
    ms.ok_or_else(|| {
        syn::Error::new(
            lit.span(),
            format!("expected a timeout such as `\"250ms\"`, `\"2s\"` or `\"1m\"` (a whole number above zero and its unit), not {text:?}"),
        )
    })
}

fn doc_lines(attrs: &[Attribute]) -> Vec<String> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The first paragraph of a doc comment, and the whole of it.
fn summary_and_description(lines: &[String]) -> (String, String) {
    let summary = lines
        .iter()
        .take_while(|l| !l.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    (summary, lines.join("\n").trim().to_owned())
}

fn is_context(ty: &Type) -> Option<ContextArg> {
    let (ty, borrowed) = match ty {
        Type::Reference(r) => (&*r.elem, true),
        ty => (ty, false),
    };
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    (last.ident == "Context" && last.arguments.is_empty()).then_some(if borrowed {
        ContextArg::Borrowed
    } else {
        ContextArg::Owned
    })
}

/// `Result<T, E>` split, whatever path names `Result`.
fn result_types(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    });
    let ok = types.next()?;
    let err = types.next()?;
    types.next().is_none().then_some((ok, err))
}

fn is_option(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Option"))
}

fn parse_method(f: &TraitItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    let ident = sig.ident.clone();
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("busrpc service methods are async: write `async fn {ident}(&self, …)`"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "busrpc service methods cannot be generic: each has one set of param types on the wire",
        ));
    }
    if let Some(body) = &f.default {
        return Err(syn::Error::new(
            body.span(),
            "busrpc service methods have no default body: implement them in the `impl` of the trait",
        ));
    }
    if sig.variadic.is_some() {
        return Err(syn::Error::new(
            sig.span(),
            "variadic methods cannot be served",
        ));
    }
    let mut rpc_name = ident.to_string().trim_start_matches("r#").to_owned();
    let mut rpc_name_span = ident.span();
    let mut notification = false;
    let mut whole_params = false;
    let mut timeout: Option<LitStr> = None;
    let mut attrs = Vec::new();
    for attr in &f.attrs {
        if attr.path().is_ident("method") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let name: LitStr = meta.value()?.parse()?;
                    rpc_name = name.value();
                    rpc_name_span = name.span();
                    Ok(())
                } else if meta.path.is_ident("params") {
                    let kind: LitStr = meta.value()?.parse()?;
                    match kind.value().as_str() {
                        "whole" => whole_params = true,
                        "spread" => whole_params = false,
                        _ => {
                            return Err(syn::Error::new(
                                kind.span(),
                                "expected `params = \"whole\"` (the one param is the params array or object) or `params = \"spread\"` (the default: one param per Rust argument)",
                            ))
                        }
                    }
                    Ok(())
                } else if meta.path.is_ident("timeout") {
                    timeout = Some(meta.value()?.parse()?);
                    Ok(())
                } else {
                    Err(meta.error("unknown option of #[method]: expected `name = \"...\"`, `params = \"whole\"` or `timeout = \"2s\"`"))
                }
            })?;
        } else if attr.path().is_ident("notification") {
            if !matches!(attr.meta, syn::Meta::Path(_)) {
                return Err(syn::Error::new(
                    attr.span(),
                    "#[notification] takes no options",
                ));
            }
            notification = true;
        } else {
            attrs.push(attr.clone());
        }
    }
    if rpc_name.starts_with("rpc.") {
        return Err(syn::Error::new(
            rpc_name_span,
            format!("method names starting with `rpc.` are reserved by JSON-RPC 2.0 (and busrpc answers rpc.discover itself): {rpc_name:?}"),
        ));
    }
    if rpc_name.is_empty() {
        return Err(syn::Error::new(
            rpc_name_span,
            "a method name cannot be empty",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        other => {
            let span = other.map_or(sig.paren_token.span.join(), Spanned::span);
            return Err(syn::Error::new(
                span,
                "busrpc service methods take `&self` first: the server calls them on a shared instance",
            ));
        }
    }
    let mut params = Vec::new();
    let mut context = ContextArg::None;
    for (i, input) in inputs.enumerate() {
        let FnArg::Typed(arg) = input else {
            return Err(syn::Error::new(input.span(), "unexpected receiver"));
        };
        if let Some(kind) = is_context(&arg.ty) {
            if i != 0 {
                return Err(syn::Error::new(
                    arg.ty.span(),
                    "the `Context` param comes first, right after `&self`",
                ));
            }
            context = kind;
            continue;
        }
        let Pat::Ident(pat) = &*arg.pat else {
            return Err(syn::Error::new(
                arg.pat.span(),
                "params of a service method need plain names: they are the names params are sent by",
            ));
        };
        if pat.by_ref.is_some() || pat.subpat.is_some() {
            return Err(syn::Error::new(pat.span(), "params need plain names"));
        }
        params.push(Param {
            name: pat.ident.clone(),
            ty: (*arg.ty).clone(),
        });
    }
    if whole_params && params.len() != 1 {
        return Err(syn::Error::new(
            sig.span(),
            "`params = \"whole\"` needs exactly one param (besides the context) to receive them",
        ));
    }
    let result = match (&sig.output, notification) {
        (ReturnType::Default, true) => None,
        (ReturnType::Type(_, ty), true) => {
            if matches!(&**ty, Type::Tuple(t) if t.elems.is_empty()) {
                None
            } else {
                return Err(syn::Error::new(
                    ty.span(),
                    "a #[notification] returns nothing: nobody waits for its result",
                ));
            }
        }
        (ReturnType::Default, false) => {
            return Err(syn::Error::new(
                sig.span(),
                format!("`{ident}` is a call, so it returns `Result<T, E>`; mark it #[notification] if nobody waits for it"),
            ))
        }
        (ReturnType::Type(_, ty), false) => match result_types(ty) {
            Some(types) => Some(types),
            None => {
                return Err(syn::Error::new(
                    ty.span(),
                    format!("`{ident}` is a call, so it returns `Result<T, E>` (T: Serialize + Deserialize; E converts to and from busrpc's errors), spelled out; mark it #[notification] if nobody waits for it"),
                ))
            }
        },
    };
    let timeout_ms = match &timeout {
        None => None,
        Some(_) if notification => {
            return Err(syn::Error::new(
                timeout.span(),
                "a #[notification] waits for no reply, so it has no timeout",
            ))
        }
        Some(lit) => Some(parse_timeout(lit)?),
    };
    Ok(Method {
        ident,
        rpc_name,
        rpc_name_span,
        params,
        context,
        result,
        timeout_ms,
        whole_params,
        docs: doc_lines(&f.attrs),
        attrs,
        span: f.span(),
    })
}

fn type_label(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace("< ", "<")
        .replace(" ,", ",")
        .replace(" :: ", "::")
}

fn expand(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let args = parse_args(attr)?;
    let mut tr: ItemTrait = syn::parse2(item)?;
    let Some(service_name) = args.name.clone() else {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[busrpc::service] needs the service's name on the broker: #[busrpc::service(name = \"billing\")]",
        ));
    };
    if service_name.value().is_empty() {
        return Err(syn::Error::new(
            service_name.span(),
            "the service name cannot be empty",
        ));
    }
    if !tr.generics.params.is_empty() {
        return Err(syn::Error::new(
            tr.generics.span(),
            "a busrpc service trait cannot be generic",
        ));
    }
    let k: syn::Path = args.krate.clone().unwrap_or_else(|| parse_quote!(::busrpc));
    let mut methods = Vec::new();
    let mut seen: HashMap<String, Ident> = HashMap::new();
    for item in &tr.items {
        let TraitItem::Fn(f) = item else {
            return Err(syn::Error::new(
                item.span(),
                "a busrpc service trait holds only its methods",
            ));
        };
        let m = parse_method(f)?;
        if let Some(first) = seen.get(&m.rpc_name) {
            return Err(syn::Error::new(
                m.rpc_name_span,
                format!(
                    "method name {:?} is used twice (by `{first}` and `{}`): each method needs a name of its own",
                    m.rpc_name, m.ident
                ),
            ));
        }
        seen.insert(m.rpc_name.clone(), m.ident.clone());
        methods.push(m);
    }

    let trait_ident = tr.ident.clone();
    let vis = tr.vis.clone();
    let server_ident = format_ident!("{}Server", trait_ident);
    let client_ident = format_ident!("{}Client", trait_ident);
    let version = match &args.version {
        Some(v) => quote!(#v),
        None => quote!(::core::env!("CARGO_PKG_VERSION")),
    };
    let (_, trait_description) = summary_and_description(&doc_lines(&tr.attrs));
    let trait_description = if trait_description.is_empty() {
        quote!(::core::option::Option::None)
    } else {
        quote!(::core::option::Option::Some(#trait_description))
    };
    let serde_path = format!("{}::__private::serde", quote!(#k)).replace(' ', "");

    // The trait, its methods made `-> impl Future + Send` so that servers
    // can run them on any runtime worker.
    let mut trait_items = Vec::new();
    let mut named_structs = Vec::new();
    let mut registrations = Vec::new();
    let mut client_methods = Vec::new();
    // Only a service with a method of its own timeout needs it.
    let for_method = if methods.iter().any(|m| m.timeout_ms.is_some()) {
        quote! {
            /// The client a method whose own timeout is `timeout` calls
            /// through: with it, unless the caller set one.
            fn for_method(&self, timeout: ::core::time::Duration) -> ::std::borrow::Cow<'_, #k::Client> {
                if self.timeout_set {
                    ::std::borrow::Cow::Borrowed(&self.client)
                } else {
                    ::std::borrow::Cow::Owned(self.client.with_timeout(timeout))
                }
            }
        }
    } else {
        quote!()
    };
    let mut assertions = Vec::new();
    for m in &methods {
        let ident = &m.ident;
        let attrs = &m.attrs;
        let ctx_arg = match m.context {
            ContextArg::None => quote!(),
            ContextArg::Owned => quote!(ctx: #k::Context,),
            ContextArg::Borrowed => quote!(ctx: &#k::Context,),
        };
        let names: Vec<&Ident> = m.params.iter().map(|p| &p.name).collect();
        let types: Vec<&Type> = m.params.iter().map(|p| &p.ty).collect();
        let output = match &m.result {
            Some((ok, err)) => quote!(::core::result::Result<#ok, #err>),
            None => quote!(()),
        };
        trait_items.push(quote_spanned! {m.span=>
            #(#attrs)*
            fn #ident(&self, #ctx_arg #(#names: #types),*)
                -> impl ::core::future::Future<Output = #output> + ::core::marker::Send;
        });

        for ty in &types {
            assertions.push(quote_spanned! {ty.span()=> #k::__private::assert_param::<#ty>();});
        }
        if let Some((ok, err)) = &m.result {
            assertions.push(quote_spanned! {ok.span()=> #k::__private::assert_result::<#ok>();});
            assertions.push(quote_spanned! {err.span()=> #k::__private::assert_error::<#err>();});
        }

        // The server's side: params by position or by name.
        let rpc_name = &m.rpc_name;
        let (ctx_closure_arg, ctx_pass) = match m.context {
            ContextArg::None => (quote!(), quote!()),
            ContextArg::Owned => (quote!(__ctx: #k::Context,), quote!(__ctx,)),
            ContextArg::Borrowed => (quote!(__ctx: #k::Context,), quote!(&__ctx,)),
        };
        let (params_ty, unpack) = if m.whole_params {
            let ty = types[0];
            let name = names[0];
            (quote!(#ty), quote!(let #name = __params;))
        } else {
            let named = format_ident!(
                "__{}{}Params",
                trait_ident,
                ident.to_string().trim_start_matches("r#")
            );
            named_structs.push(quote! {
                #[doc(hidden)]
                #[allow(non_camel_case_types, dead_code)]
                #[derive(#k::__private::serde::Deserialize)]
                #[serde(crate = #serde_path, deny_unknown_fields)]
                struct #named { #(#names: #types),* }
            });
            (
                quote!(#k::__private::Params<(#(#types,)*), #named>),
                quote!(let (#(#names,)*) = __params.into_positional(|__n: #named| (#(__n.#names,)*));),
            )
        };
        let call = quote!(__service.#ident(#ctx_pass #(#names),*).await);
        let body = match &m.result {
            Some(_) => quote!(#call),
            None => quote! {
                #call;
                ::core::result::Result::<(), #k::RpcError>::Ok(())
            },
        };
        let (summary, description) = summary_and_description(&m.docs);
        let mut doc = quote!(#k::openrpc::MethodDoc::new(#rpc_name).summary(#summary).description(#description));
        for p in &m.params {
            let name = p.name.to_string();
            let name = name.trim_start_matches("r#");
            let ty = &p.ty;
            let label = type_label(ty);
            let required = !is_option(ty);
            doc = quote!(#doc.param(#name, #k::__private::schema!(#ty, #label), #required));
        }
        if m.whole_params {
            doc = quote!(#doc.param_structure(#k::openrpc::ParamStructure::Either));
        }
        match &m.result {
            Some((ok, err)) => {
                let label = type_label(ok);
                doc = quote!(#doc
                    .result("result", #k::__private::schema!(#ok, #label))
                    .errors(#k::__private::errors!(#err)));
            }
            None => doc = quote!(#doc.notification()),
        }
        registrations.push(quote! {
            .method(#rpc_name, |__service: ::std::sync::Arc<__T>, #ctx_closure_arg __params: #params_ty| async move {
                #unpack
                #body
            })
            .document(#doc)
        });

        // The client's side: the same signature, the context left out.
        let docs: Vec<&Attribute> = m
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .collect();
        let sent = if m.whole_params {
            let name = names[0];
            quote!(#name)
        } else {
            quote!((#(#names,)*))
        };
        client_methods.push(match &m.result {
            Some((ok, err)) => {
                let client = match m.timeout_ms {
                    Some(ms) => quote!(self.for_method(::core::time::Duration::from_millis(#ms))),
                    None => quote!(self.client),
                };
                quote! {
                #(#docs)*
                pub async fn #ident(&self, #(#names: #types),*) -> ::core::result::Result<#ok, #err> {
                    #client
                        .call::<#ok>(Self::SERVICE, #rpc_name, #sent)
                        .await
                        .map_err(::core::convert::From::from)
                }
                }
            }
            None => quote! {
                #(#docs)*
                ///
                /// A notification: this returns once the broker has it.
                pub async fn #ident(&self, #(#names: #types),*) -> ::core::result::Result<(), #k::Error> {
                    self.client.notify(Self::SERVICE, #rpc_name, #sent).await
                }
            },
        });
    }

    tr.items = trait_items
        .into_iter()
        .map(syn::parse2)
        .collect::<syn::Result<Vec<TraitItem>>>()?;
    tr.supertraits.push(parse_quote!(::core::marker::Send));
    tr.supertraits.push(parse_quote!(::core::marker::Sync));
    tr.supertraits.push(parse_quote!('static));
    if tr.colon_token.is_none() {
        tr.colon_token = Some(Default::default());
    }

    let name_doc = format!(
        "The service's name on the broker: `{}`.",
        service_name.value()
    );
    let server_doc = format!(
        "Serves an implementation of [`{trait_ident}`] as the service `{}`: its router, or a server of it.",
        service_name.value()
    );
    let client_doc = format!(
        "Calls the service `{}` ([`{trait_ident}`]) through a busrpc client, with the trait's signatures.",
        service_name.value()
    );
    Ok(quote! {
        #tr

        #(#named_structs)*

        #[doc = #server_doc]
        #vis struct #server_ident<__T> {
            service: ::std::sync::Arc<__T>,
        }

        impl<__T> #server_ident<__T> {
            #[doc = #name_doc]
            pub const SERVICE: &'static str = #service_name;
        }

        impl<__T: #trait_ident> #server_ident<__T> {
            /// Serves `service`.
            pub fn new(service: __T) -> Self {
                Self::from_arc(::std::sync::Arc::new(service))
            }

            /// Serves a shared `service`.
            pub fn from_arc(service: ::std::sync::Arc<__T>) -> Self {
                Self { service }
            }

            /// The router of the service's methods, each answering params by
            /// position and by name, and described in its OpenRPC document.
            pub fn router(self) -> #k::Router<::std::sync::Arc<__T>> {
                #k::Router::with_state(self.service)
                    #(#registrations)*
                    .service_info(#version, #trait_description)
            }

            /// A server of the service through `transport`, under its name:
            /// configure it, then `start()` it.
            pub fn into_server(self, transport: ::std::sync::Arc<dyn #k::Transport>) -> #k::Server {
                #k::Server::new(transport, Self::SERVICE, self.router())
            }
        }

        impl<__T> ::core::fmt::Debug for #server_ident<__T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server_ident))
                    .field("service", &Self::SERVICE)
                    .finish_non_exhaustive()
            }
        }

        #[doc = #client_doc]
        #[derive(Clone, Debug)]
        #vis struct #client_ident {
            client: #k::Client,
            /// Whether the caller set the timeout (`with_timeout`), which
            /// then wins over the methods' own.
            timeout_set: bool,
        }

        impl #client_ident {
            #[doc = #name_doc]
            pub const SERVICE: &'static str = #service_name;

            /// Calls through `client`.
            pub fn new(client: #k::Client) -> Self {
                Self { client, timeout_set: false }
            }

            /// The client underneath.
            pub fn client(&self) -> &#k::Client {
                &self.client
            }

            /// A handle whose calls wait `timeout` for their reply, those of
            /// methods with a `#[method(timeout = ...)]` of their own too.
            #[must_use]
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self { client: self.client.with_timeout(timeout), timeout_set: true }
            }


            /// A handle whose calls also carry the header `name: value`.
            #[must_use]
            pub fn with_header(
                &self,
                name: impl ::core::convert::Into<::std::borrow::Cow<'static, str>>,
                value: impl ::core::convert::Into<::std::sync::Arc<str>>,
            ) -> Self {
                Self { client: self.client.with_header(name, value), timeout_set: self.timeout_set }
            }

            /// The service's OpenRPC document, as its servers describe it.
            pub async fn discover(&self) -> ::core::result::Result<#k::__private::serde_json::Value, #k::Error> {
                self.client.call(Self::SERVICE, #k::DISCOVER_METHOD, ()).await
            }

            #for_method

            #(#client_methods)*
        }

        const _: () = {
            #[allow(dead_code)]
            fn __busrpc_type_checks() {
                #(#assertions)*
            }
        };
    })
}
