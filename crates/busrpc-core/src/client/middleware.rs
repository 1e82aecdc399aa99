//! Client middleware: code that wraps every call a handle sends.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Client, Reply};
use crate::error::Error;
use crate::wire::jsonrpc;
use crate::wire::Headers;

/// A call, notification or batch on its way out, as [`ClientMiddleware`]
/// sees it: where it goes, and the headers it will carry (which middleware
/// may add to: a token, a trace context).
#[derive(Clone, Debug)]
pub struct OutgoingCall {
    service: String,
    method: String,
    notification: bool,
    /// A batch's methods, in order; empty for a lone call.
    batch: Vec<String>,
    /// The headers sent with it, beside busrpc's own.
    pub headers: Headers,
    /// Which server answered, once the chain has run (see
    /// [`served_by`](Self::served_by)).
    served_by: Option<Arc<str>>,
}

impl OutgoingCall {
    /// The service called.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method called; empty for a batch (see [`batch`](Self::batch)).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether it is a notification, or a batch of notifications only
    /// (its outcome is `null` once published).
    pub fn is_notification(&self) -> bool {
        self.notification
    }

    /// For a batch (one message, one set of headers), the methods of its
    /// calls and notifications in order: the chain runs once for the whole
    /// batch, and its outcome is `null` once every call of it has its
    /// reply (the replies go to [`Batch::send`](crate::Batch::send)'s
    /// caller). `None` for a lone call or notification.
    pub fn batch(&self) -> Option<&[String]> {
        (!self.batch.is_empty()).then_some(self.batch.as_slice())
    }

    /// After [`ClientNext::run`] returned: the name of the server instance
    /// that answered, if its reply said (see
    /// [`ServerConfig::name_in_replies`](crate::ServerConfig::name_in_replies));
    /// `None` before, and for notifications and batches.
    pub fn served_by(&self) -> Option<&str> {
        self.served_by.as_deref()
    }
}

/// Sends a batch with the headers the chain settled on: the end of a
/// batch's chain.
pub(super) type SendBatch<'a> =
    Box<dyn FnOnce(Headers) -> BoxFuture<'a, Result<(), Error>> + Send + 'a>;

/// Code that wraps every call, notification and batch a [`Client`] handle
/// sends (see [`Client::with_middleware`]): it may add headers, time the
/// call, look at its outcome, or fail it without sending anything. A batch
/// passes once, as one [`OutgoingCall`] (see [`OutgoingCall::batch`]).
///
/// An implementation carries [`#[async_trait]`](crate::async_trait), which
/// busrpc re-exports (`#[busrpc::async_trait]`), as [`Middleware`](crate::Middleware) does.
///
/// ```
/// use busrpc_core::{ClientMiddleware, ClientNext, Error, OutgoingCall};
/// use serde_json::value::RawValue;
///
/// struct Token(&'static str);
///
/// #[busrpc_core::async_trait] // `#[busrpc::async_trait]` through the busrpc crate
/// impl ClientMiddleware for Token {
///     async fn call(&self, call: &mut OutgoingCall, next: ClientNext<'_>) -> Result<Box<RawValue>, Error> {
///         call.headers.insert("authorization", format!("Bearer {}", self.0));
///         next.run(call).await
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait ClientMiddleware: Send + Sync + 'static {
    /// Sends `call`: usually `next.run(call).await`, with work around it.
    async fn call(
        &self,
        call: &mut OutgoingCall,
        next: ClientNext<'_>,
    ) -> Result<Box<RawValue>, Error>;
}

/// The rest of a client's chain: the middleware after this one, then the
/// broker.
pub struct ClientNext<'a> {
    client: &'a Client,
    rest: &'a [Arc<dyn ClientMiddleware>],
    params: &'a RawValue,
    batch: Option<SendBatch<'a>>,
}

impl ClientNext<'_> {
    /// Runs the rest of the chain for `call`; its outcome.
    pub async fn run(self, call: &mut OutgoingCall) -> Result<Box<RawValue>, Error> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = ClientNext { rest, ..self };
                first.call(call, next).await
            }
            None if self.batch.is_some() => {
                let send = self.batch.expect("checked");
                send(call.headers.clone()).await?;
                Ok(RawValue::from_string("null".to_owned()).expect("null is JSON"))
            }
            None if call.notification => {
                let published = self.client.notify_direct(
                    &call.service,
                    &call.method,
                    self.params,
                    &call.headers,
                );
                published.await?;
                Ok(RawValue::from_string("null".to_owned()).expect("null is JSON"))
            }
            None => {
                let reply = self
                    .client
                    .call_direct(&call.service, &call.method, self.params, &call.headers)
                    .await?;
                call.served_by = reply.served_by;
                Ok(reply.value)
            }
        }
    }

    /// The call's params as they will be sent (`null` for a batch).
    pub fn params(&self) -> &RawValue {
        self.params
    }
}

impl std::fmt::Debug for ClientNext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext")
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A call or notification sent through this handle's middleware.
    pub(super) async fn through_middleware(
        &self,
        service: &str,
        method: &str,
        params: impl Serialize,
        notification: bool,
    ) -> Result<Reply<Box<RawValue>>, Error> {
        let params = jsonrpc::params_to_raw(&params)?;
        let mut call = OutgoingCall {
            service: service.to_owned(),
            method: method.to_owned(),
            notification,
            batch: Vec::new(),
            headers: (*self.headers).clone(),
            served_by: None,
        };
        let next = ClientNext {
            client: self,
            rest: &self.middleware,
            params: &params,
            batch: None,
        };
        let value = next.run(&mut call).await?;
        Ok(Reply::new(value, call.served_by))
    }

    /// A batch sent through this handle's middleware: `send` runs at the
    /// end of the chain, with the headers the middleware left.
    pub(super) async fn batch_through_middleware<'a>(
        &'a self,
        service: &str,
        methods: Vec<String>,
        only_notifications: bool,
        send: SendBatch<'a>,
    ) -> Result<(), Error> {
        let mut call = OutgoingCall {
            service: service.to_owned(),
            method: String::new(),
            notification: only_notifications,
            batch: methods,
            headers: (*self.headers).clone(),
            served_by: None,
        };
        let next = ClientNext {
            client: self,
            rest: &self.middleware,
            params: RawValue::NULL,
            batch: Some(send),
        };
        next.run(&mut call).await.map(drop)
    }
}
