//! A batch: refused whole when empty or too long, else its calls run in
//! waves as wide as the server's free handler slots.

use std::sync::atomic::Ordering;

use futures_util::stream::{FuturesOrdered, StreamExt};

use super::{Engine, Envelope};
use crate::telemetry::metrics::{self, Handled};
use crate::wire::jsonrpc::{self, InvalidRequest, Request, RpcError};

impl Engine {
    /// The response to a batch, `None` if it holds only notifications.
    pub(super) async fn batch(
        &self,
        items: Vec<Result<Request<'_>, InvalidRequest<'_>>>,
        env: Envelope<'_>,
    ) -> Option<Vec<u8>> {
        if items.is_empty() {
            return Some(self.refused(None, &RpcError::invalid_request()));
        }
        if items.len() > self.max_batch_len {
            return self.too_long(&items);
        }
        // Every call counts against the server's concurrency: the
        // message's own slot covers one, and the batch takes as many
        // more as are free now (never waiting for one, which could
        // wait on itself), running its calls in waves that wide.
        let wanted = items.len() - 1;
        let extra = self.slots.as_ref().map(|slots| {
            let free = slots.available_permits().min(wanted);
            let free = u32::try_from(free).unwrap_or(u32::MAX);
            slots.try_acquire_many(free).ok()
        });
        let width = match &extra {
            None => items.len(),
            Some(permit) => 1 + permit.as_ref().map_or(0, |p| p.num_permits()),
        };
        let mut answers = Vec::with_capacity(items.len());
        let mut items = items.into_iter();
        // Not `stream::iter(..).map(..).buffered(..)`: its closure
        // over borrowed requests defeats the `Send` proof the
        // server's tasks need.
        let mut running = FuturesOrdered::new();
        for item in items.by_ref().take(width) {
            running.push_back(self.answer(item, env));
        }
        while let Some(answer) = running.next().await {
            answers.push(answer);
            if let Some(item) = items.next() {
                running.push_back(self.answer(item, env));
            }
        }
        drop(extra);
        jsonrpc::join_batch(answers.into_iter().flatten())
    }

    /// Answers each call of a batch longer than the limit with its own id,
    /// so that callers learn why; nothing of it runs.
    fn too_long(&self, items: &[Result<Request<'_>, InvalidRequest<'_>>]) -> Option<Vec<u8>> {
        let reason = format!(
            "batch of {} requests exceeds this server's limit of {}",
            items.len(),
            self.max_batch_len
        );
        let error = RpcError::invalid_request().with_data(&reason);
        let answered = items
            .iter()
            .filter(|item| !matches!(item, Ok(r) if r.is_notification()));
        self.counters
            .errors
            .fetch_add(answered.count() as u64, Ordering::Relaxed);
        if metrics::enabled() {
            for item in items {
                let request = item.as_ref().ok();
                self.meters.request(
                    &Handled {
                        method: request.map(|r| &*r.method),
                        notification: request.is_some_and(Request::is_notification),
                        queue_wait: None,
                        outcome: Err(error.code()),
                    },
                    None,
                );
            }
        }
        jsonrpc::answer_each(items, &error)
    }
}
