//! A consumer's own thread, on which librdkafka's rebalance and commit
//! callbacks may block, and whose panic says why instead of hanging its
//! server.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use busrpc_core::transport::TransportError;

use crate::connection::lock;

/// What a consumer thread's panic said, once it has panicked.
#[derive(Clone, Debug, Default)]
pub(crate) struct Died(Arc<Mutex<Option<String>>>);

impl Died {
    /// Whether the thread panicked.
    pub(crate) fn panicked(&self) -> bool {
        lock(&self.0).is_some()
    }

    /// The error a reader of the thread reports once the thread is gone:
    /// the panic's message if it panicked, else that the consumer closed.
    pub(crate) fn error(&self) -> TransportError {
        match lock(&self.0).clone() {
            Some(what) => {
                TransportError::Other(format!("the Kafka consumer thread panicked: {what}").into())
            }
            None => TransportError::Closed,
        }
    }
}

/// Runs `run` on a thread called `name`, then `after` with the panic's
/// message if `run` panicked (which is also logged and kept in the
/// returned [`Died`]).
pub(crate) fn spawn(
    name: &str,
    run: impl FnOnce() + Send + 'static,
    after: impl FnOnce(Option<&str>) + Send + 'static,
) -> Result<(std::thread::JoinHandle<()>, Died), TransportError> {
    let died = Died::default();
    let said = died.clone();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let ran = std::panic::catch_unwind(AssertUnwindSafe(run));
            let what = ran.err().map(|panic| panic_text(panic.as_ref()));
            if let Some(what) = &what {
                tracing::error!(panic = %what, "the Kafka consumer thread panicked; this member reads no more requests");
                *lock(&said.0) = Some(what.clone());
            }
            after(what.as_deref());
        })
        .map_err(|e| TransportError::Other(Box::new(e)))?;
    Ok((thread, died))
}

/// The topic whose consumer thread a test asked to panic.
/// The topics whose consumer threads a test asked to panic (a list: the
/// tests of both dialects may ask at once).
#[cfg(test)]
static PANIC_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Panics, once, if a test asked the thread of `topic` to.
#[cfg(test)]
pub(crate) fn panic_if_asked(topic: &str) {
    let mut asked = lock(&PANIC_ON);
    if let Some(at) = asked.iter().position(|t| t == topic) {
        asked.remove(at);
        drop(asked);
        panic!("a panic a test asked for");
    }
}

/// Serves an empty router on `transport`, makes the consumer thread of its
/// queue panic (either dialect's), and checks that the server stops saying
/// why, not with a bare "transport closed".
#[cfg(test)]
pub(crate) async fn a_panic_stops_its_server(transport: Arc<dyn busrpc_core::Transport>) {
    let server = busrpc_core::Server::new(transport.clone(), "svc", busrpc_core::Router::new())
        .start()
        .await
        .unwrap();
    lock(&PANIC_ON).push(transport.service_address("svc"));
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), server.stopped())
        .await
        .expect("stopped within 30 s");
    let err = stopped.expect_err("stopped by a failure");
    assert!(
        err.to_string()
            .contains("consumer thread panicked: a panic a test asked for"),
        "{err}"
    );
    server.shutdown().await;
}

/// What a panic said, if it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_said() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (thread, died) = spawn(
            "test-consumer",
            || panic!("the broker said no"),
            move |what| tx.send(what.map(str::to_owned)).unwrap(),
        )
        .unwrap();
        thread.join().unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("the broker said no"));
        let error = died.error().to_string();
        assert!(error.contains("panicked: the broker said no"), "{error}");
        let (thread, died) = spawn("fine", || {}, |what| assert!(what.is_none())).unwrap();
        thread.join().unwrap();
        assert!(matches!(died.error(), TransportError::Closed));
    }
}
