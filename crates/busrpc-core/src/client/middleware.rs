//! Client middleware: code that wraps every call a handle sends.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::Client;
use crate::error::Error;
use crate::wire::jsonrpc;
use crate::wire::Headers;

/// A call or notification on its way out, as [`ClientMiddleware`] sees it:
/// where it goes, and the headers it will carry (which middleware may add
/// to: a token, a trace context).
#[derive(Clone, Debug)]
pub struct OutgoingCall {
    service: String,
    method: String,
    notification: bool,
    /// The headers sent with it, beside busrpc's own.
    pub headers: Headers,
}

impl OutgoingCall {
    /// The service called.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether it is a notification (its outcome is `null` once published).
    pub fn is_notification(&self) -> bool {
        self.notification
    }
}

/// Code that wraps every call and notification a [`Client`] handle sends
/// (see [`Client::with_middleware`]): it may add headers, time the call,
/// look at its outcome, or fail it without sending anything.
///
/// ```
/// use busrpc_core::{ClientMiddleware, ClientNext, Error, OutgoingCall};
/// use serde_json::value::RawValue;
///
/// struct Token(&'static str);
///
/// #[async_trait::async_trait]
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
}

impl ClientNext<'_> {
    /// Runs the rest of the chain for `call`; its outcome.
    pub async fn run(self, call: &mut OutgoingCall) -> Result<Box<RawValue>, Error> {
        match self.rest.split_first() {
            Some((first, rest)) => {
                let next = ClientNext { rest, ..self };
                first.call(call, next).await
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
                self.client
                    .call_direct(&call.service, &call.method, self.params, &call.headers)
                    .await
            }
        }
    }

    /// The call's params as they will be sent.
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
    ) -> Result<Box<RawValue>, Error> {
        let params = jsonrpc::params_to_raw(&params)?;
        let mut call = OutgoingCall {
            service: service.to_owned(),
            method: method.to_owned(),
            notification,
            headers: (*self.headers).clone(),
        };
        let next = ClientNext {
            client: self,
            rest: &self.middleware,
            params: &params,
        };
        next.run(&mut call).await
    }
}
