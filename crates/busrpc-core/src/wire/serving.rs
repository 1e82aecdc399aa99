//! The request being served on this thread: its deadline and its trace
//! context, set around each poll of its handler, so that the calls the
//! handler makes inherit them (a chain of services shares one deadline and
//! one trace, as gRPC's calls do) without the handler passing anything.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use super::deadline::Deadline;
use super::message::{header, Headers};

/// What a call made while serving a request inherits from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Serving {
    /// When the request's caller stops waiting.
    pub(crate) deadline: Option<Deadline>,
    /// Its `traceparent` and `tracestate` headers, forwarded as they came
    /// when no tracer makes a child of them (feature `otel` off).
    pub(crate) trace: Option<(Arc<str>, Option<Arc<str>>)>,
}

thread_local! {
    /// The request whose handler is being polled on this thread. A `Cell`
    /// moved in and out around each poll rather than tokio's task-local,
    /// which cost the engine bench 4% of its throughput (decision 0014).
    static CURRENT: Cell<Option<Serving>> = const { Cell::new(None) };
}

/// Puts back what a poll found, and keeps what the poll had, even if the
/// poll panics.
struct Restore<'a> {
    outer: Option<Serving>,
    mine: &'a mut Option<Serving>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        *self.mine = CURRENT.with(|current| current.replace(self.outer.take()));
    }
}

impl Serving {
    /// What a request with `deadline` and `headers` passes on; `None` when
    /// it has nothing to pass (no deadline, no trace context).
    pub(crate) fn of(deadline: Option<Deadline>, headers: &Headers) -> Option<Self> {
        let trace = headers.get_shared(header::TRACEPARENT).map(|parent| {
            let state = headers.get_shared(header::TRACESTATE).cloned();
            (parent.clone(), state)
        });
        (deadline.is_some() || trace.is_some()).then_some(Self { deadline, trace })
    }

    /// The request being served where this is called, if any.
    #[cfg(test)]
    pub(crate) fn current() -> Option<Self> {
        Self::read(|serving| Some(serving.clone()))
    }

    /// `f` of the request being served, without a copy of it.
    pub(crate) fn read<T>(f: impl FnOnce(&Self) -> Option<T>) -> Option<T> {
        CURRENT.with(|current| {
            let serving = current.take();
            let out = serving.as_ref().and_then(f);
            current.set(serving);
            out
        })
    }

    /// Runs `work` with this as the request being served while it is
    /// polled.
    pub(crate) async fn scope<F: Future>(self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        let mut mine = Some(self);
        std::future::poll_fn(|cx| {
            let outer = CURRENT.with(|current| current.replace(mine.take()));
            let _restore = Restore {
                outer,
                mine: &mut mine,
            };
            work.as_mut().poll(cx)
        })
        .await
    }
}

impl Deadline {
    /// The deadline of the request being handled, when called from a
    /// handler (or anything it awaits) and the caller sent one: a handler
    /// can size its own work or timeouts to it, e.g. pass
    /// [`remaining`](Self::remaining) to a database call. `None` elsewhere,
    /// and for a request without a `deadline` header. A busrpc call the
    /// handler makes waits at most until it, and carries it.
    ///
    /// ```
    /// # use busrpc_core::{Deadline, Router, RpcError};
    /// let router = Router::new().method("budget", |(): ()| async move {
    ///     let left = Deadline::current().map(|d| d.remaining().as_millis() as u64);
    ///     Ok::<_, RpcError>(left)
    /// });
    /// # let _ = router;
    /// ```
    pub fn current() -> Option<Deadline> {
        Serving::read(|serving| serving.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scope_is_seen_inside_it_only_and_nests() {
        assert_eq!(Serving::current(), None);
        let outer = Serving {
            deadline: Some(Deadline(5)),
            trace: None,
        };
        let inner = Serving {
            deadline: Some(Deadline(3)),
            trace: Some(("00-a-b-01".into(), None)),
        };
        let seen = outer
            .clone()
            .scope(async {
                let before = Serving::current();
                tokio::task::yield_now().await;
                let nested = inner.clone().scope(async {
                    tokio::task::yield_now().await;
                    Serving::current()
                });
                let nested = nested.await;
                (before, nested, Serving::current())
            })
            .await;
        assert_eq!(seen, (Some(outer.clone()), Some(inner), Some(outer)));
        assert_eq!(Serving::current(), None);
    }

    #[test]
    fn a_request_passes_on_its_deadline_and_trace_context() {
        let none = Headers::new();
        assert_eq!(Serving::of(None, &none), None);
        let traced = Headers::new()
            .with(header::TRACEPARENT, "00-t-p-01")
            .with(header::TRACESTATE, "k=v");
        let serving = Serving::of(None, &traced).unwrap();
        assert_eq!(serving.deadline, None);
        let (parent, state) = serving.trace.unwrap();
        assert_eq!((&*parent, state.as_deref()), ("00-t-p-01", Some("k=v")));
        let timed = Serving::of(Some(Deadline(9)), &none).unwrap();
        assert_eq!((timed.deadline, timed.trace), (Some(Deadline(9)), None));
    }

    #[test]
    fn a_panicking_poll_leaves_the_thread_as_it_found_it() {
        let serving = Serving {
            deadline: Some(Deadline(1)),
            trace: None,
        };
        let panicked = std::panic::catch_unwind(|| {
            futures_executor_block_on(serving.scope(async { panic!("handler") }))
        });
        assert!(panicked.is_err());
        assert_eq!(Serving::current(), None);
    }

    fn futures_executor_block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
