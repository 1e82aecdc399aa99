//! Correlation: the calls waiting for their replies, by id, and the task
//! that reads the inbox and hands each reply to its caller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::telemetry::metrics::{self, Dropped};
use crate::transport::kit::Backoff;
use crate::transport::Inbox;
use crate::wire::codec::Codec;
use crate::wire::jsonrpc::{self, RpcError};
use crate::wire::{header, Message};

pub(super) type Outcome = Result<Box<RawValue>, RpcError>;

/// A reply handed to its caller: the call's outcome, and the name of the
/// server that answered if the reply says ([`header::SERVED_BY`]).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(super) outcome: Outcome,
    pub(super) served_by: Option<Arc<str>>,
}

/// Calls in flight by id, shared with the task reading the inbox.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    pub(super) closed: AtomicBool,
    pub(super) calls: AtomicU64,
    pub(super) replies: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(crate) dropped: AtomicU64,
    /// The last call's id: ids run from 1 up to it.
    issued: AtomicU64,
    /// The ids of the latest calls whose callers gave up before their
    /// reply came (at most [`GAVE_UP_KEPT`]), so that a reply coming for
    /// one later counts as late rather than a duplicate.
    gave_up: Mutex<std::collections::VecDeque<u64>>,
}

/// How many given-up calls a client remembers (see [`Pending::gave_up`]).
const GAVE_UP_KEPT: usize = 1024;

impl Pending {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_reply(&self, kind: Dropped, why: &str, payload: &[u8]) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::reply_dropped(kind);
        tracing::debug!(kind = kind.as_str(), why, reply = %crate::transport::kit::Excerpt(payload), "reply dropped");
    }

    /// An id for a new call.
    pub(super) fn issue_id(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Remembers that the call `id` stopped waiting unanswered.
    fn gave_up(&self, id: u64) {
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        if gave_up.len() == GAVE_UP_KEPT {
            gave_up.pop_front();
        }
        gave_up.push_back(id);
    }

    /// Why a reply with `id` has no caller waiting: its caller gave up
    /// (late: the first reply after that), it was answered already
    /// (duplicate), or no call of this client had that id (stray).
    fn unwaited(&self, id: Option<u64>) -> Dropped {
        let Some(id) = id else {
            return Dropped::Stray;
        };
        let mut gave_up = self.gave_up.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = gave_up.iter().position(|&given_up| given_up == id) {
            gave_up.remove(at);
            return Dropped::Late;
        }
        if (1..=self.issued.load(Ordering::Relaxed)).contains(&id) {
            Dropped::Duplicate
        } else {
            Dropped::Stray
        }
    }

    pub(crate) fn deliver(&self, message: &Message) {
        let json = match Codec::from_content_type(message.headers.get(header::CONTENT_TYPE))
            .and_then(|codec| codec.decode(&message.payload))
        {
            Ok(json) => json,
            Err(e) => return self.drop_reply(Dropped::Malformed, &e.to_string(), &message.payload),
        };
        let served_by = message.headers.get_shared(header::SERVED_BY);
        let responses = match jsonrpc::decode_responses(&json) {
            Ok(responses) => responses,
            Err(e) => return self.drop_reply(Dropped::Malformed, &e.to_string(), &json),
        };
        for response in responses {
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    self.drop_reply(Dropped::Malformed, &e.to_string(), &json);
                    continue;
                }
            };
            let id = response.numeric_id();
            let waiter = id.and_then(|id| self.waiting().remove(&id));
            let Some(waiter) = waiter else {
                // Late (its caller timed out), a duplicate, or not ours; a
                // null id means the server could not read which call it was.
                self.drop_reply(
                    self.unwaited(id),
                    "no caller waits for this id",
                    response.id.get().as_bytes(),
                );
                continue;
            };
            // The caller counts the reply when it takes it (see `call_unbounded`).
            if waiter
                .send(Answer {
                    outcome: response.outcome.map(ToOwned::to_owned),
                    served_by: served_by.cloned(),
                })
                .is_err()
            {
                self.drop_reply(
                    Dropped::Late,
                    "the caller gave up as the reply arrived",
                    response.id.get().as_bytes(),
                );
            }
        }
    }

    /// Adds a call waiting for the reply with `id`; the registration takes
    /// it out again when dropped, unless [`Registration::answered`].
    pub(crate) fn register(
        &self,
        id: u64,
    ) -> Result<(oneshot::Receiver<Answer>, Registration<'_>), Error> {
        let (sender, receiver) = oneshot::channel();
        let mut waiting = self.waiting();
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        waiting.insert(id, sender);
        drop(waiting);
        Ok((receiver, Registration { pending: self, id }))
    }

    /// Fails every waiting call with [`Error::Closed`], and every later
    /// registration.
    pub(super) fn close(&self) {
        // Under the lock that `register` takes: a call registering as the
        // client closes either is cleared here or sees `closed`, never
        // neither (it would wait out its whole timeout).
        let mut waiting = self.waiting();
        self.closed.store(true, Ordering::SeqCst);
        waiting.clear();
    }
}

/// Removes a call from the table when its caller stops waiting (timeout,
/// error, or the future dropped), so a late reply finds nobody.
pub(crate) struct Registration<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Registration<'_> {
    /// The reply came: the reader already took the entry out.
    pub(super) fn answered(self) {
        std::mem::forget(self);
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let waited = self.pending.waiting().remove(&self.id).is_some();
        if waited {
            self.pending.gave_up(self.id);
        }
    }
}

pub(super) async fn read_replies(
    mut inbox: Inbox,
    pending: Arc<Pending>,
    stop: CancellationToken,
) -> Option<Inbox> {
    let mut backoff = Backoff::new();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let next = tokio::select! {
            biased;
            () = &mut stopped => break,
            next = inbox.next() => next,
        };
        match next {
            Some(Ok(message)) => {
                backoff.succeeded();
                pending.deliver(&message);
            }
            Some(Err(e)) => {
                let pause = backoff.failed();
                tracing::warn!(error = %e, ?pause, "reading replies failed");
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => {
                tracing::warn!(
                    inbox = inbox.address(),
                    "the inbox closed; the client stops"
                );
                pending.close();
                return None;
            }
        }
    }
    pending.close();
    Some(inbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of the correlation table's life, as the property test
    /// below drives it.
    #[derive(Clone, Debug)]
    enum Step {
        /// A call registers the next id.
        Call,
        /// The `n`th call ever made stops waiting (timeout, or its future
        /// dropped).
        GiveUp(usize),
        /// A reply arrives for the `n`th call ever made (once more if it
        /// came already: a duplicate).
        Reply(usize),
        /// One batch response answering several calls.
        Batch(Vec<usize>),
        /// A reply for an id no call had, or a null one.
        Stray(bool),
        /// The client closes.
        Close,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Step::Call),
            2 => any::<usize>().prop_map(Step::GiveUp),
            4 => any::<usize>().prop_map(Step::Reply),
            1 => proptest::collection::vec(any::<usize>(), 1..5).prop_map(Step::Batch),
            1 => any::<bool>().prop_map(Step::Stray),
            1 => Just(Step::Close),
        ]
    }

    fn reply_to(ids: &[u64]) -> Message {
        let each: Vec<String> = ids
            .iter()
            .map(|id| format!(r#"{{"jsonrpc":"2.0","result":{id},"id":{id}}}"#))
            .collect();
        match each.as_slice() {
            [one] => Message::new(one.clone()),
            many => Message::new(format!("[{}]", many.join(","))),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// Random calls, give-ups, replies (late, duplicate, batched,
        /// stray) and a close: each call gets its own reply at most once
        /// and never another's, every other reply is counted as dropped,
        /// and the table holds exactly the calls still waiting.
        #[test]
        fn every_reply_reaches_its_own_caller_once(steps in proptest::collection::vec(step(), 1..100)) {
            let pending = Pending::default();
            // Per call ever made: its receiver, its registration while it
            // waits, and whether its reply came.
            let mut calls: Vec<(oneshot::Receiver<Answer>, Option<Registration<'_>>, bool)> = Vec::new();
            let mut dropped = 0u64;
            let mut closed = false;
            for step in &steps {
                let mut reply = |indices: &[usize], calls: &mut Vec<(oneshot::Receiver<Answer>, Option<Registration<'_>>, bool)>| {
                    if calls.is_empty() {
                        return;
                    }
                    let chosen: Vec<usize> = indices.iter().map(|i| i % calls.len()).collect();
                    let ids: Vec<u64> = chosen.iter().map(|i| *i as u64).collect();
                    pending.deliver(&reply_to(&ids));
                    for i in chosen {
                        let (_, registration, answered) = &mut calls[i];
                        match registration.take() {
                            Some(registration) => {
                                registration.answered();
                                *answered = true;
                            }
                            None => dropped += 1,
                        }
                    }
                };
                match step {
                    Step::Call => {
                        let id = calls.len() as u64;
                        match pending.register(id) {
                            Ok((receiver, registration)) => {
                                assert!(!closed, "registered after the close");
                                calls.push((receiver, Some(registration), false));
                            }
                            Err(e) => {
                                assert!(closed && matches!(e, Error::Closed), "{e}");
                                // Keep the numbering: a call that never waited.
                                let (_, receiver) = oneshot::channel();
                                calls.push((receiver, None, false));
                            }
                        }
                    }
                    Step::GiveUp(i) => {
                        if !calls.is_empty() {
                            let n = calls.len();
                            drop(calls[i % n].1.take());
                        }
                    }
                    Step::Reply(i) => reply(&[*i], &mut calls),
                    Step::Batch(is) => reply(is, &mut calls),
                    Step::Stray(null) => {
                        let id = if *null { "null".to_owned() } else { u64::MAX.to_string() };
                        let stray = format!(r#"{{"jsonrpc":"2.0","result":1,"id":{id}}}"#);
                        pending.deliver(&Message::new(stray));
                        dropped += 1;
                    }
                    Step::Close => {
                        pending.close();
                        closed = true;
                        for call in &mut calls {
                            // The table let go of them; nothing is left to remove.
                            if let Some(registration) = call.1.take() {
                                registration.answered();
                            }
                        }
                    }
                }
                let waiting = calls.iter().filter(|c| c.1.is_some()).count();
                assert_eq!(pending.waiting().len(), waiting, "after {step:?}");
                assert_eq!(pending.dropped.load(Ordering::Relaxed), dropped, "after {step:?}");
            }
            // Each answered call holds its own reply, once; the others none.
            for (n, (mut receiver, _, answered)) in calls.into_iter().enumerate() {
                match receiver.try_recv().map(|answer| answer.outcome) {
                    Ok(Ok(result)) => {
                        assert!(answered, "call {n} got a reply it was not sent");
                        assert_eq!(result.get(), n.to_string(), "call {n} got another's reply");
                    }
                    Ok(Err(e)) => panic!("call {n} got an error: {e}"),
                    Err(_) => assert!(!answered, "call {n} lost its reply"),
                }
            }
        }
    }
}
