//! The serving loop: takes deliveries while it has handler slots, backs
//! off on failed reads, stops on fatal ones, and drains on shutdown.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cancels::listen;
use super::request::handle;
use super::{ServerConfig, ServerState, ServerStatus, FATAL_ERRORS_TO_STOP};
use crate::engine::panic_message;
use crate::telemetry::metrics::ServerEvent;
use crate::transport::kit::Backoff;
use crate::transport::{Deliveries, TransportError};

/// How long a starting server waits for its cancel-notice subscription
/// before it takes requests (it is made in a moment on memory and Redis).
const SUBSCRIPTION_WAIT: Duration = Duration::from_secs(2);

pub(super) async fn serve(
    mut deliveries: Deliveries,
    state: Arc<ServerState>,
    config: ServerConfig,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let concurrency = permits.available_permits();
    // `stopped()` resolves however this task ends: aborted, or a panic.
    let _stopped_anyway = StoppedOnDrop(state.clone());
    // Hears cancel notices until the stop, or until this task is aborted.
    // A call started before the subscription is made is not registered, so
    // its caller's notice could not stop it: serving waits for the
    // subscription, but at most SUBSCRIPTION_WAIT, so that a slow one never
    // holds serving up for long.
    let (settled, subscribed) = tokio::sync::oneshot::channel();
    let _listening = AbortOnDrop(tokio::spawn(listen(state.clone(), stop.clone(), settled)));
    let _ = tokio::time::timeout(SUBSCRIPTION_WAIT, subscribed).await;
    let _reporting = crate::telemetry::metrics::enabled()
        .then(|| AbortOnDrop(tokio::spawn(report_readiness(state.clone()))));
    // Owned here so that aborting this task aborts every handler with it.
    let mut tasks = JoinSet::new();
    let mut backoff = Backoff::new();
    let mut fatal = 0u32;
    let mut failure = None;
    // One waiter for the whole loop: a fresh `cancelled()` per select would
    // register and deregister with the token's lock twice per request.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut stopped => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let next = tokio::select! {
            biased;
            () = &mut stopped => break,
            next = deliveries.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                if backoff.succeeded() && state.own_readiness {
                    state.readiness.ready();
                }
                fatal = 0;
                state.count(ServerEvent::Received);
                if delivery.attempt().is_some_and(|n| n > 1) {
                    state.count(ServerEvent::Redelivered);
                }
                let request = handle(state.clone(), delivery, permit);
                if config.run_inline {
                    start_inline(&mut tasks, request);
                } else {
                    tasks.spawn(request);
                }
            }
            Some(Err(e)) => {
                drop(permit);
                if state.own_readiness {
                    state
                        .readiness
                        .not_ready(format!("receiving requests failed: {e}"));
                }
                if !e.is_transient() {
                    fatal += 1;
                    if fatal >= FATAL_ERRORS_TO_STOP {
                        tracing::error!(error = %e, fatal, "the broker keeps refusing to hand out requests; serving stops");
                        failure = Some(e);
                        break;
                    }
                }
                // Back off and go on.
                let pause = backoff.failed();
                if let Some(held_back) = state.receive_warnings.allow() {
                    tracing::warn!(error = %e, ?pause, held_back, "receiving requests failed");
                }
                tokio::select! {
                    () = &mut stopped => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => {
                tracing::error!("the transport closed the request queue; serving stops");
                failure = Some(TransportError::Closed);
                break;
            }
        }
        while let Some(done) = tasks.try_join_next() {
            log_task_failure(done);
        }
    }
    // Said here, not left to the reporter: its task may not run again.
    drop(_reporting);
    state.engine.meters.ready(false);
    state.status.send_replace(ServerStatus::Stopping);
    let in_hand = concurrency - permits.available_permits();
    if in_hand > 0 {
        tracing::info!(in_hand, grace = ?config.shutdown_grace, "finishing requests in hand");
    }
    let give_up_at = tokio::time::Instant::now() + config.shutdown_grace;
    let everything = u32::try_from(concurrency).expect("clamped to u32 above");
    let settled = tokio::time::timeout_at(give_up_at, permits.acquire_many(everything)).await;
    while let Some(done) = tasks.try_join_next() {
        log_task_failure(done);
    }
    if settled.is_err() {
        // Stop what is still running. Its deliveries were never settled,
        // so the broker hands them to another member once this one leaves
        // the group, just below: released, in effect. Settlements already
        // handed to the transport complete on their own.
        tasks.abort_all();
        let mut released = 0;
        while let Some(done) = tasks.join_next().await {
            match done {
                Err(e) if e.is_cancelled() => released += 1,
                done => log_task_failure(done),
            }
        }
        tracing::warn!(
            released,
            "shutdown grace ran out; releasing what is still running"
        );
        state.count_n(ServerEvent::Released, released);
    }
    // Only now leave the group, so nothing finished is handed out again;
    // `shutdown()` returns once it has.
    deliveries.close().await;
    // Only now: `stopped()` resolves once what was in hand is settled.
    state.status.send_replace(match failure {
        Some(e) => ServerStatus::Failed(Arc::new(e)),
        None => ServerStatus::Stopped,
    });
    tracing::info!("stopped");
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Marks the server stopped if its task ends without saying how (aborted,
/// or a panic), so that nobody waits on `stopped()` for ever.
/// Keeps the readiness gauge (metric `busrpc_server_ready`) what
/// [`ServerHandle::readiness`](super::ServerHandle::readiness) says, until
/// serving ends (then [`StoppedOnDrop`] sets it to 0).
async fn report_readiness(state: Arc<ServerState>) {
    let mut status = state.status.subscribe();
    let mut readiness = state.readiness.subscribe();
    loop {
        let serving = matches!(*status.borrow_and_update(), ServerStatus::Serving);
        let ready = serving && readiness.borrow_and_update().is_ready();
        state.engine.meters.ready(ready);
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            changed = readiness.changed() => if changed.is_err() { return },
        }
    }
}

pub(super) struct StoppedOnDrop(Arc<ServerState>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.engine.meters.ready(false);
        self.0.status.send_if_modified(|status| {
            let running = matches!(status, ServerStatus::Serving | ServerStatus::Stopping);
            if running {
                *status = ServerStatus::Stopped;
            }
            running
        });
    }
}

/// Runs `request` here until it first has to wait, then in a task of its
/// own. Most requests never wait (their handler is ready at once and the
/// transport queues their settlement): they cost no task, and no wake-up
/// of another worker to run it.
pub(super) fn start_inline(
    tasks: &mut JoinSet<()>,
    request: impl Future<Output = ()> + Send + 'static,
) {
    let mut request = Box::pin(request);
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    // A panic outside a handler (those the engine catches) ends this
    // request only, as it would end the request's task.
    match std::panic::catch_unwind(AssertUnwindSafe(|| request.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(())) => {}
        // Polled again at once in its task, which registers the task's
        // waker with whatever it waits for.
        Ok(Poll::Pending) => drop(tasks.spawn(request)),
        Err(panic) => {
            tracing::error!(panic = panic_message(&*panic), "a request task failed");
        }
    }
}

pub(super) fn log_task_failure(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if !e.is_cancelled() {
            tracing::error!(error = %e, "a request task failed");
        }
    }
}
