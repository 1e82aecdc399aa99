//! Cancellation that follows the caller: the cancel notices broadcast to
//! the service's servers (see [`Transport::broadcast`]), the requests this
//! server is running that a notice may stop, and the notices that came
//! before their request, so that it is skipped when it comes.
//!
//! Only requests whose handler waits are registered (most finish in their
//! first poll), and a request is looked up among the early notices only
//! while there are any: nothing is paid per request while nobody cancels.
//!
//! [`Transport::broadcast`]: crate::transport::Transport::broadcast

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::ServerState;
use crate::wire::jsonrpc::{cancelled_id, request_id};
use crate::wire::{header, Deadline, Message};

/// One call of one caller: its `reply-to` and its id's JSON text.
type Call = (Arc<str>, Box<str>);

/// Most notices remembered for requests not seen yet; beyond it the
/// oldest give way (each is kept until its call's deadline at most).
const EARLY_KEPT: usize = 4096;

/// How long a notice without a deadline is kept for a request not seen
/// yet.
const EARLY_FOR_MS: u64 = 60_000;

#[derive(Default)]
pub(super) struct Cancels {
    /// Whether this server hears notices: if not, nothing is registered.
    listening: std::sync::atomic::AtomicBool,
    running: Mutex<HashMap<Call, CancellationToken>>,
    /// Notices for calls this server is not running, until when to keep
    /// each (Unix ms).
    early: Mutex<HashMap<Call, u64>>,
    early_len: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a running request out of the table when it ends.
pub(super) struct Running<'a> {
    cancels: &'a Cancels,
    call: Option<Call>,
    pub(super) token: CancellationToken,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            lock(&self.cancels.running).remove(&call);
        }
    }
}

impl Cancels {
    /// Registers the request `json` from `reply_to` as running, if it is one
    /// call with an id: a notice naming it cancels the token.
    pub(super) fn running(&self, reply_to: &Arc<str>, json: &[u8]) -> Option<Running<'_>> {
        if !self.listening.load(Ordering::Relaxed) {
            return None;
        }
        let call = (reply_to.clone(), request_id(json)?);
        let token = CancellationToken::new();
        lock(&self.running).insert(call.clone(), token.clone());
        // A notice that came while the handler made its first step (before
        // it was registered here) was kept as early: it stops the call now.
        // `cancel` keeps a notice as early while it holds `running`, so one
        // is either found there or finds the call registered.
        if self.early_len.load(Ordering::Relaxed) > 0 {
            let mut early = lock(&self.early);
            if early.remove(&call).is_some() {
                token.cancel();
            }
            self.early_len.store(early.len(), Ordering::Relaxed);
        }
        Some(Running {
            cancels: self,
            call: Some(call),
            token,
        })
    }

    /// Whether a notice came for the request `json` from `reply_to` before
    /// it did: then it is not run. Free while no notice waits.
    pub(super) fn came_before(&self, reply_to: Option<&Arc<str>>, json: &[u8]) -> bool {
        if self.early_len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let (Some(reply_to), Some(id)) = (reply_to, request_id(json)) else {
            return false;
        };
        let mut early = lock(&self.early);
        let found = early.remove(&(reply_to.clone(), id)).is_some();
        self.early_len.store(early.len(), Ordering::Relaxed);
        found
    }

    /// A notice naming `call`: stops it if it runs here, or remembers it
    /// until `keep_until` (Unix ms) for a request not seen yet.
    fn cancel(&self, call: Call, keep_until: u64) {
        // Held until the notice is kept: see `running`.
        let running = lock(&self.running);
        if let Some(token) = running.get(&call) {
            token.cancel();
            return;
        }
        let now = Deadline::after(std::time::Duration::ZERO).0;
        let mut early = lock(&self.early);
        if early.len() >= EARLY_KEPT {
            early.retain(|_, until| *until > now);
        }
        if early.len() >= EARLY_KEPT {
            // Still full of live ones: the soonest to expire goes.
            let soonest = early.iter().min_by_key(|(_, until)| **until);
            if let Some(call) = soonest.map(|(call, _)| call.clone()) {
                early.remove(&call);
            }
        }
        if keep_until > now {
            early.insert(call, keep_until);
        }
        self.early_len.store(early.len(), Ordering::Relaxed);
        drop(running);
    }

    /// The call a notice names, and until when to remember it.
    fn named_by(message: &Message) -> Option<(Call, u64)> {
        let reply_to = message.headers.get_shared(header::REPLY_TO)?.clone();
        let id = cancelled_id(&message.payload)?;
        let keep_until = match message.headers.deadline() {
            Ok(Some(deadline)) => deadline.0,
            _ => Deadline::after(std::time::Duration::from_millis(EARLY_FOR_MS)).0,
        };
        Some(((reply_to, id), keep_until))
    }
}

/// Subscribes to the service's cancel notices and reads them until
/// `stop`, or until the subscription ends. A server that cannot hear them
/// still serves: its handlers run to their end or their deadline.
/// `settled` is dropped once the subscription is made, or has failed.
pub(super) async fn listen(
    state: Arc<ServerState>,
    stop: CancellationToken,
    settled: tokio::sync::oneshot::Sender<()>,
) {
    let subscribed = tokio::select! {
        biased;
        () = stop.cancelled() => return,
        subscribed = state.transport.subscribe(&state.address) => subscribed,
    };
    let mut notices = match subscribed {
        Ok(Some(notices)) => notices,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(service = %state.service, error = %e, "subscribing to cancel notices failed; calls their callers give up on run on");
            return;
        }
    };
    state.cancels.listening.store(true, Ordering::Relaxed);
    drop(settled);
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            next = notices.next() => next,
        };
        match next {
            Some(Ok(message)) => match Cancels::named_by(&message) {
                Some((call, keep_until)) => state.cancels.cancel(call, keep_until),
                None => tracing::debug!(service = %state.service, "not a cancel notice; ignored"),
            },
            Some(Err(e)) => {
                tracing::debug!(service = %state.service, error = %e, "reading cancel notices failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            None => break,
        }
    }
    notices.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str) -> Call {
        ("inbox-a".into(), id.into())
    }

    const REQUEST: &[u8] = br#"{"jsonrpc":"2.0","method":"sleep","params":[9],"id":7}"#;

    #[test]
    fn a_notice_stops_the_call_it_names_and_no_other() {
        let cancels = Cancels::default();
        let inbox: Arc<str> = "inbox-a".into();
        assert!(cancels.running(&inbox, REQUEST).is_none(), "not listening");
        cancels.listening.store(true, Ordering::Relaxed);
        let running = cancels
            .running(&inbox, REQUEST)
            .expect("one call with an id");
        let other: Arc<str> = "inbox-b".into();
        let other = cancels.running(&other, REQUEST).unwrap();
        cancels.cancel(call("7"), u64::MAX);
        assert!(running.token.is_cancelled());
        assert!(!other.token.is_cancelled(), "another caller's call 7");
        drop(running);
        assert!(lock(&cancels.running).len() == 1, "taken out as it ends");
        assert!(cancels.running(&inbox, b"[]").is_none(), "a batch is not");
    }

    #[test]
    fn a_notice_during_the_first_step_stops_the_call_it_names() {
        let cancels = Cancels::default();
        cancels.listening.store(true, Ordering::Relaxed);
        let inbox: Arc<str> = "inbox-a".into();
        // The handler has started, not yet registered: the notice is kept.
        cancels.cancel(call("7"), u64::MAX);
        let running = cancels.running(&inbox, REQUEST).unwrap();
        assert!(running.token.is_cancelled());
        assert_eq!(cancels.early_len.load(Ordering::Relaxed), 0, "used up");
    }

    #[test]
    fn a_notice_before_its_request_skips_it_once_and_expires() {
        let cancels = Cancels::default();
        let inbox: Arc<str> = "inbox-a".into();
        assert!(!cancels.came_before(Some(&inbox), REQUEST));
        cancels.cancel(call("7"), u64::MAX);
        assert!(cancels.came_before(Some(&inbox), REQUEST));
        assert!(!cancels.came_before(Some(&inbox), REQUEST), "once");
        cancels.cancel(call("8"), 1);
        assert_eq!(cancels.early_len.load(Ordering::Relaxed), 0, "long past");
    }

    #[test]
    fn early_notices_are_bounded() {
        let cancels = Cancels::default();
        for n in 0..EARLY_KEPT + 10 {
            cancels.cancel(call(&n.to_string()), u64::MAX - n as u64);
        }
        assert_eq!(lock(&cancels.early).len(), EARLY_KEPT);
    }
}
