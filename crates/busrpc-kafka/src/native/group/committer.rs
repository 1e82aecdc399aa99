//! The committer thread: commits each partition below its watermark, with
//! a note that counts deliveries, as requests finish.

use std::sync::atomic::Ordering;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::TopicPartitionList;

use super::rebalance::{add_commit, GroupContext};
use super::Ledger;
use crate::connection::lock;
use crate::native::watermark::Commit;
use crate::native::Counters;

/// How long after a failed commit the committer commits again.
pub(super) const COMMIT_RETRY_AFTER: Duration = Duration::from_millis(200);

/// How often an idle committer looks for a commit to make again.
pub(super) const IDLE_COMMITTER_WAKES: Duration = Duration::from_secs(1);

/// Commits the watermarks as requests finish, synchronously, on a thread
/// of its own: a failed commit is seen (librdkafka reports asynchronous
/// commits only to a callback busrpc cannot set) and made again, and the
/// consumer thread's polling never waits for one. Requests that finish
/// during a commit go into the next.
pub(super) struct Committer {
    pub(super) consumer: Arc<BaseConsumer<GroupContext>>,
    pub(super) ledger: Arc<Ledger>,
    pub(super) counters: Arc<Counters>,
    /// A message on it says a request finished; disconnected once the reader
    /// and every delivery are gone.
    pub(super) finished: std_mpsc::Receiver<()>,
}

impl Committer {
    pub(super) fn run(self) {
        let context = self.consumer.context();
        // After a failed commit, the next try waits COMMIT_RETRY_AFTER
        // however many requests finish meanwhile: during a rebalance the
        // broker refuses every commit, and trying again as each request
        // finished made hundreds of refused commits a second.
        let mut retry_at: Option<Instant> = None;
        loop {
            let wait = match retry_at {
                Some(at) => at.saturating_duration_since(Instant::now()),
                None if context.recommit.load(Ordering::Relaxed) => COMMIT_RETRY_AFTER,
                None => IDLE_COMMITTER_WAKES,
            };
            match self.finished.recv_timeout(wait) {
                Ok(()) => {
                    while self.finished.try_recv().is_ok() {}
                    if retry_at.is_some_and(|at| Instant::now() < at) {
                        continue;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if retry_at.is_none() && !context.recommit.load(Ordering::Relaxed) {
                        continue;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            retry_at = self.commit().then(|| Instant::now() + COMMIT_RETRY_AFTER);
        }
        // The last commit, of everything settled.
        let _ = self.commit();
        if context.recommit.load(Ordering::Relaxed) {
            tracing::warn!("the last commit failed; finished requests may run again");
        }
    }

    /// Commits what finished; whether that failed (and is to be made again).
    pub(super) fn commit(&self) -> bool {
        let context = self.consumer.context();
        let _committing = lock(&context.committing);
        context.recommit.store(false, Ordering::Relaxed);
        let commits = self.ledger.lock().advance();
        if commits.is_empty() {
            return false;
        }
        let failed = commit_now(&self.consumer, &commits);
        let mut tracker = self.ledger.lock();
        let Err(error) = failed else {
            for commit in &commits {
                tracker.landed(commit);
            }
            return false;
        };
        for commit in &commits {
            tracker.commit_failed(&commit.partition);
        }
        drop(tracker);
        self.counters
            .commit_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%error, "a commit failed; it is made again shortly");
        context.recommit.store(true, Ordering::Relaxed);
        true
    }
}

/// Commits `commits` synchronously; the error, if the commit or any
/// partition's part of it failed.
pub(super) fn commit_now(
    consumer: &BaseConsumer<GroupContext>,
    commits: &[Commit],
) -> Result<(), String> {
    let mut list = TopicPartitionList::new();
    for commit in commits {
        add_commit(&mut list, &commit.partition, commit.offset, &commit.note);
    }
    match consumer.commit(&list, CommitMode::Sync) {
        Err(e) => Err(e.to_string()),
        // A commit can fail for some partitions only.
        Ok(()) => match list.elements().iter().find_map(|e| e.error().err()) {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        },
    }
}
