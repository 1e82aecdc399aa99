//! Sending a dead letter again ([`Client::replay`]): what `busrpc dlq
//! replay` does, for an application's own tooling too.

use serde_json::value::RawValue;
use serde_json::Value;

use super::Client;
use crate::error::Error;
use crate::transport::{Admin, DeadLetter, REPLAY_OF};
use crate::wire::header;

/// Headers a replay does not carry over from the dead request: busrpc's
/// own, which the replay gets afresh.
const NOT_CARRIED: [&str; 7] = [
    header::REPLY_TO,
    header::CONTENT_TYPE,
    header::DEADLINE,
    header::TRACEPARENT,
    header::TRACESTATE,
    header::SIGNATURE,
    header::SERVED_BY,
];

impl Client {
    /// Sends the dead letter `letter` of `service` again as a fresh request
    /// (a new id and deadline, this client's inbox, signed if this
    /// client's transport signs) with the dead request's method, params and
    /// application headers, plus `replay-of: <its id>`; removes it from
    /// the dead letters through `admin` once the replay is published (a
    /// call that timed out was published; one that could not be is kept);
    /// and returns the answer, `None` for a notification.
    ///
    /// A batch cannot be replayed whole (its calls can, one by one):
    /// [`Error::Transport`] with
    /// [`TransportError::Rejected`](crate::transport::TransportError::Rejected), as for a
    /// payload that is no JSON-RPC request.
    pub async fn replay(
        &self,
        admin: &dyn Admin,
        service: &str,
        letter: &DeadLetter,
    ) -> Result<Option<Box<RawValue>>, Error> {
        let request = letter.request()?;
        let mut client = self.with_header(REPLAY_OF, letter.id.as_str());
        for (name, value) in letter.message.headers.iter() {
            if !NOT_CARRIED.contains(&name) && !name.starts_with("dead-") {
                client = client.with_header(name.to_owned(), value);
            }
        }
        let method = request["method"].as_str().unwrap_or_default();
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        if request.get("id").is_none() {
            client.notify(service, method, params).await?;
            admin.remove_dead_letter(service, &letter.id).await?;
            return Ok(None);
        }
        let outcome = client.call_raw(service, method, params).await;
        let unpublished = matches!(
            outcome,
            Err(Error::Transport(_)
                | Error::Encode(_)
                | Error::MessageTooLarge { .. }
                | Error::Closed
                | Error::NoService { .. }
                | Error::NoServers { .. })
        );
        if !unpublished {
            admin.remove_dead_letter(service, &letter.id).await?;
        }
        outcome.map(Some)
    }
}
