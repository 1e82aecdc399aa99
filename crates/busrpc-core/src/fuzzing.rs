//! Entry points for the fuzz targets in `fuzz/`, compiled only under
//! `--cfg fuzzing` (which `cargo fuzz` sets): the decoding the engine and
//! the client do, reached without a broker or a runtime per input.

use std::sync::atomic::Ordering;

use crate::client::pending::Pending;
use crate::engine::{Engine, Envelope};
use crate::service::Router;
use crate::wire::{header, jsonrpc, Message};

/// The engine, as a server runs it, over `router`.
pub struct Requests(Engine);

impl Requests {
    /// An engine serving `router`'s methods, batches up to `max_batch_len`.
    pub fn new<S: Clone + Send + Sync + 'static>(router: Router<S>, max_batch_len: usize) -> Self {
        Self(Engine::new(
            router.into_methods("fuzz"),
            "fuzz",
            "fuzz".into(),
            Vec::new(),
            max_batch_len,
            None,
        ))
    }

    /// The response to a JSON payload, or `None` when nothing is answered.
    pub async fn respond(&self, payload: &[u8]) -> Option<Vec<u8>> {
        self.0.respond(payload, Envelope::bare()).await
    }
}

/// Decodes a reply payload as a client does, for a client waiting on the
/// ids `0..waiting`, and returns how many of them it answered and how
/// many replies it dropped.
pub fn deliver_replies(payload: &[u8], content_type: Option<&str>, waiting: u64) -> (u64, u64) {
    let pending = Pending::default();
    let mut receivers = Vec::new();
    for id in 0..waiting {
        let (receiver, registration) = pending.register(id).expect("not closed");
        std::mem::forget(registration);
        receivers.push(receiver);
    }
    let mut message = Message::new(payload.to_vec());
    if let Some(content_type) = content_type {
        message = message.with_header(header::CONTENT_TYPE, content_type.to_owned());
    }
    pending.deliver(&message);
    let answered = receivers
        .iter_mut()
        .filter_map(|r| r.try_recv().ok())
        .count() as u64;
    (answered, pending.dropped.load(Ordering::Relaxed))
}

/// Whether `payload` decodes as a response or a batch of them.
pub fn decodes_as_responses(payload: &[u8]) -> bool {
    jsonrpc::decode_responses(payload).is_ok()
}
