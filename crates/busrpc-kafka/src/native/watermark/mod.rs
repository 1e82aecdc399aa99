//! Which offsets may be committed when requests finish out of order.
//!
//! Committing offset N in Kafka says "everything below N is done". With
//! concurrent handlers, request 7 may finish before request 5; committing 8
//! then would lose 5 if the server died before finishing it. So each
//! partition keeps the offsets in flight, and only the lowest of them (or,
//! when none is, one past the highest taken) is ever committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub(crate) mod poison;

use poison::{Note, RESERVE_AHEAD};

use crate::consumer::ReadOffsets;

/// One partition's offsets in flight.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// What has been read and taken, what a fetch skipped.
    read: ReadOffsets,
    /// The last offset committed (or handed to the commit call), with its note.
    committed: Option<(i64, Note)>,
    /// Records below it may be handed out: the broker holds a note
    /// reserving them (see [`poison`]).
    reserved: i64,
    /// Records below it (and at or above the committed offset the partition
    /// was assigned with) may have been delivered to a member that is gone:
    /// each delivery of them is counted first (see [`Tracker::begin_trial`]).
    suspect_below: i64,
    /// Deliveries counted for suspects not done yet, this one's included.
    counts: BTreeMap<i64, u32>,
    /// The suspects being tried (or dead-lettered) now.
    trial: BTreeSet<i64>,
    /// One past the highest offset handed to the server: what was taken
    /// but is still waiting in the consumer was never delivered.
    delivered: Option<i64>,
    /// Replies being sent for requests of this partition.
    answering: usize,
}

impl Watermark {
    /// Records `offset` taken, or returns `None` if it must not be: it is in
    /// flight, or was done under this assignment already (see
    /// [`ReadOffsets::take`]). `Some(Some(gap))` says offsets from `gap` up
    /// were skipped: the consumer should read again from there.
    pub(crate) fn take(&mut self, offset: i64) -> Option<Option<i64>> {
        self.read.take(offset)
    }

    pub(crate) fn done(&mut self, offset: i64) {
        self.read.done(offset);
        self.trial.remove(&offset);
        self.counts.remove(&offset);
    }

    /// The note for a commit now: the reservation renewed
    /// [`RESERVE_AHEAD`] past the records taken once fewer than half of it
    /// are left, and the counts.
    fn note(&self) -> Note {
        let reserved = match self.read.next() {
            Some(next) if next + RESERVE_AHEAD / 2 > self.reserved => next + RESERVE_AHEAD,
            _ => self.reserved,
        };
        Note {
            reserved,
            counts: self.counts.iter().map(|(o, d)| (*o, *d)).collect(),
        }
    }

    /// The offset to commit: every offset below it is done.
    pub(crate) fn committable(&self) -> Option<i64> {
        self.read.committable()
    }

    /// The offset and note to commit now, if either moved since the last
    /// commit. The offset never goes below one committed already.
    pub(crate) fn advance(&mut self) -> Option<(i64, Note)> {
        let offset = self.committable()?;
        let note = self.note();
        if let Some((committed, last)) = &self.committed {
            if *committed >= offset && *last == note {
                return None;
            }
        }
        Some(self.commit_at(offset, note))
    }

    /// Records `offset` (or the one committed already, if higher) and
    /// `note` as committed, and returns them.
    fn commit_at(&mut self, offset: i64, note: Note) -> (i64, Note) {
        let offset = match &self.committed {
            Some((committed, _)) => offset.max(*committed),
            None => offset,
        };
        self.committed = Some((offset, note.clone()));
        (offset, note)
    }
}

/// A record taken by [`Tracker::taken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The epoch its acknowledgement must carry.
    pub(crate) epoch: u64,
    /// Offsets from here up to the record were skipped: the broker answered
    /// a fetch without them (Tansu 0.6.0 can show a record before the one
    /// below it is stored). The consumer should read again from here; the
    /// records it has taken already are then refused.
    pub(crate) read_again_from: Option<i64>,
    /// The record may have been delivered to a member that is gone: its
    /// delivery must be counted first (see [`Tracker::begin_trial`]).
    pub(crate) suspect: bool,
}

/// A commit to make: `offset` with `note`, for `partition` under `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) partition: Partition,
    pub(crate) epoch: u64,
    pub(crate) offset: i64,
    pub(crate) note: Note,
}

/// Suspects never counted tried together at most: their counts must fit in
/// a note.
pub(crate) const TRIAL_BATCH: usize = 64;

/// What [`Tracker::begin_trial`] says to do with the first waiting suspects.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Trial {
    /// Other suspects are being tried: wait for them.
    Wait,
    /// The partition is no longer ours under that epoch: drop the record.
    Gone,
    /// Delivered `max_deliveries` times already: dead-letter it, saying it
    /// has been delivered this often (the refused delivery counted, as on
    /// Redis).
    DeadLetter(u32),
    /// Make this `commit`, synchronously, then hand over the first `tried`
    /// suspects, each as its delivery number `attempt` (what the note now
    /// counts for it: 2 for a suspect never counted, whose first delivery
    /// went to the member that is gone); if the commit fails,
    /// [`Tracker::trial_failed`].
    Run {
        commit: Commit,
        tried: usize,
        attempt: u32,
    },
}

/// A partition of a topic.
pub(crate) type Partition = (Arc<str>, i32);

/// The watermarks of every partition a consumer owns, each with the epoch
/// of its assignment: an acknowledgement from before a partition was
/// revoked (and perhaps assigned back) must not count.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    partitions: HashMap<Partition, (u64, Watermark)>,
    next_epoch: u64,
}

impl Tracker {
    /// The partition is ours (again): a fresh watermark, a new epoch.
    pub(crate) fn assigned(&mut self, partition: Partition) {
        self.next_epoch += 1;
        self.partitions
            .insert(partition, (self.next_epoch, Watermark::default()));
    }

    /// The partition is no longer ours; returns the offset to commit for
    /// it: every request below it is done. Returned even if that offset
    /// was handed to an asynchronous commit already, because that commit
    /// may have failed unseen, and this is the last chance to make it.
    ///
    /// Its note reserves only what was delivered (and the suspects not
    /// tried): nothing more can be, and the next owner tries those alone.
    /// Records read ahead but never handed to the server are fresh to it.
    pub(crate) fn revoked(&mut self, partition: &Partition) -> Option<(i64, Note)> {
        let (_, mark) = self.partitions.remove(partition)?;
        let mut offset = mark.committable()?;
        if let Some((committed, _)) = &mark.committed {
            offset = offset.max(*committed);
        }
        let delivered = mark.delivered.unwrap_or(offset).max(mark.suspect_below);
        let note = Note {
            reserved: delivered.max(offset),
            counts: mark.counts.iter().map(|(o, d)| (*o, *d)).collect(),
        };
        Some((offset, note))
    }

    /// The partition, just assigned, was committed at `committed` with
    /// `note` by its last owner, and ended below `end`: records from
    /// `committed` up to the note's reservation and below `end` are
    /// suspects, and what it reserved may be handed out.
    pub(crate) fn recovered(
        &mut self,
        partition: &Partition,
        committed: i64,
        note: Note,
        end: i64,
    ) {
        if let Some((_, mark)) = self.partitions.get_mut(partition) {
            mark.reserved = note.reserved;
            mark.suspect_below = note.reserved.min(end);
            mark.counts = note
                .counts
                .into_iter()
                .filter(|(offset, _)| *offset >= committed)
                .collect();
        }
    }

    /// Whether the record at `offset` may be handed to the server: the
    /// broker holds a reservation for it (or the partition is no longer
    /// ours, and the reader drops it anyway).
    pub(crate) fn reserved(&self, partition: &Partition, epoch: u64, offset: i64) -> bool {
        match self.partitions.get(partition) {
            Some((current, mark)) if *current == epoch => offset < mark.reserved,
            _ => true,
        }
    }

    /// A commit made: what it reserved may be handed out.
    pub(crate) fn landed(&mut self, commit: &Commit) {
        if let Some((current, mark)) = self.partitions.get_mut(&commit.partition) {
            if *current == commit.epoch {
                mark.reserved = mark.reserved.max(commit.note.reserved);
            }
        }
    }

    /// Starts the trial of the first of `waiting` (suspects of `partition`,
    /// in the order read): counts their deliveries and returns the commit
    /// that must land before they are handed over, unless suspects (of any
    /// partition) are being tried already.
    ///
    /// A suspect with no count was delivered once, to a member that is gone;
    /// up to [`TRIAL_BATCH`] such suspects in a row are tried together, as
    /// most suspects are innocent (merely running when their member died or
    /// gave them up). A suspect counted before was delivered during an
    /// earlier trial that ended in a death, so it is tried alone: a death
    /// now counts against it only. The first suspect, delivered
    /// `max_deliveries` times already, is dead-lettered instead.
    pub(crate) fn begin_trial(
        &mut self,
        partition: &Partition,
        epoch: u64,
        waiting: &[i64],
        max_deliveries: u32,
    ) -> Trial {
        if !self.owns(partition, epoch) {
            return Trial::Gone;
        }
        // One trial at a time in the whole consumer, not per partition: a
        // death during a trial then counts against its suspects alone.
        if self
            .partitions
            .values()
            .any(|(_, mark)| !mark.trial.is_empty())
        {
            return Trial::Wait;
        }
        let (Some((_, mark)), Some(&first)) = (self.partitions.get_mut(partition), waiting.first())
        else {
            return Trial::Gone;
        };
        let deliveries =
            |mark: &Watermark, offset: i64| mark.counts.get(&offset).copied().unwrap_or(1);
        let first_deliveries = deliveries(mark, first);
        if first_deliveries >= max_deliveries {
            mark.trial.insert(first);
            return Trial::DeadLetter(first_deliveries.saturating_add(1));
        }
        let tried = if first_deliveries > 1 {
            1
        } else {
            waiting
                .iter()
                .take(TRIAL_BATCH)
                .take_while(|offset| deliveries(mark, **offset) == 1)
                .count()
        };
        for offset in &waiting[..tried] {
            let counted = deliveries(mark, *offset) + 1;
            mark.counts.insert(*offset, counted);
            mark.trial.insert(*offset);
        }
        // The suspects are in flight, so something is committable: no lower.
        let at = mark.committable().unwrap_or(first);
        let note = mark.note();
        let (offset, note) = mark.commit_at(at, note);
        let commit = Commit {
            partition: partition.clone(),
            epoch,
            offset,
            note,
        };
        Trial::Run {
            commit,
            tried,
            attempt: first_deliveries.saturating_add(1),
        }
    }

    /// The commit of a trial of `tried` failed: their counts are what they
    /// were, and no trial runs (the next [`Tracker::begin_trial`] makes it
    /// again).
    pub(crate) fn trial_failed(&mut self, commit: &Commit, tried: &[i64]) {
        if let Some((current, mark)) = self.partitions.get_mut(&commit.partition) {
            if *current == commit.epoch {
                for offset in tried {
                    if mark.trial.remove(offset) {
                        if let Some(deliveries) = mark.counts.get_mut(offset) {
                            *deliveries -= 1;
                        }
                    }
                }
                mark.committed = None;
            }
        }
    }

    /// Every partition is gone at once, nothing committed for them (the
    /// group's rebalance failed, or the session expired): acknowledgements
    /// of their requests no longer count, and no reply to them is sent.
    pub(crate) fn revoke_all(&mut self) {
        self.partitions.clear();
    }

    /// The partition, just assigned, is known done below `offset`: it is
    /// the committed offset, or this member finished those requests under
    /// its previous assignment and its commit of them was refused (brokers
    /// may refuse commits while the group rebalances). Records below it are
    /// skipped, a first record read above it makes the consumer go back for
    /// those between (see [`Taken::read_again_from`]), and `offset` is
    /// committed with the next [`Tracker::advance`].
    pub(crate) fn done_below(&mut self, partition: &Partition, offset: i64) {
        if let Some((_, mark)) = self.partitions.get_mut(partition) {
            if mark.read.start_at(offset) {
                mark.committed = None;
            }
        }
    }

    /// The partitions owned now.
    #[cfg(test)]
    pub(crate) fn partitions(&self) -> Vec<Partition> {
        self.partitions.keys().cloned().collect()
    }

    /// A commit for the partition failed: the next [`Tracker::advance`]
    /// returns what the partition has reached, even if nothing finishes
    /// meanwhile. (Committing it again is harmless should a later commit
    /// have landed: it is the same offset or a higher one.)
    pub(crate) fn commit_failed(&mut self, partition: &Partition) {
        if let Some((_, mark)) = self.partitions.get_mut(partition) {
            mark.committed = None;
        }
    }

    /// Records a message taken; returns the epoch its acknowledgement must
    /// carry, or `None` if the partition is not ours: a message fetched
    /// before a revocation and read after it. Its new owner reads it again
    /// from the last commit, so it must be left alone here. Handling it
    /// would answer it twice, and worse, tracking it would let this member
    /// commit the partition past requests the new owner has not finished.
    ///
    /// `None` too for an offset in flight already, one known done (see
    /// [`Tracker::done_below`]), or one inside the run taken under this
    /// assignment and done (read again after a seek back to a gap: see
    /// [`Taken::read_again_from`]). Not for one below everything taken:
    /// records can come out of order across a rebalance, and skipping the
    /// lower one would commit past it unanswered; the offsets between it and
    /// the run are awaited.
    pub(crate) fn taken(&mut self, partition: &Partition, offset: i64) -> Option<Taken> {
        let (epoch, mark) = self.partitions.get_mut(partition)?;
        let read_again_from = mark.take(offset)?;
        Some(Taken {
            epoch: *epoch,
            read_again_from,
            suspect: offset < mark.suspect_below,
        })
    }

    /// How many partitions are ours now.
    #[cfg(test)]
    pub(crate) fn owned(&self) -> usize {
        self.partitions.len()
    }

    /// Records the request at `offset` handed to the server, if the
    /// partition is still ours under `epoch` (and returns whether it is).
    pub(crate) fn deliver(&mut self, partition: &Partition, epoch: u64, offset: i64) -> bool {
        match self.partitions.get_mut(partition) {
            Some((current, mark)) if *current == epoch => {
                mark.delivered = Some(mark.delivered.map_or(offset + 1, |d| d.max(offset + 1)));
                true
            }
            _ => false,
        }
    }

    /// Whether `epoch` is the partition's current assignment.
    pub(crate) fn owns(&self, partition: &Partition, epoch: u64) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|(current, _)| *current == epoch)
    }

    /// A reply to a request of the partition is about to be sent; `false`
    /// (and it must not be sent) if the partition is no longer ours under
    /// `epoch`. Until [`Tracker::answered`], a revocation of the partition
    /// waits for it (see [`Tracker::answering`]).
    pub(crate) fn answer(&mut self, partition: &Partition, epoch: u64) -> bool {
        match self.partitions.get_mut(partition) {
            Some((current, mark)) if *current == epoch => {
                mark.answering += 1;
                true
            }
            _ => false,
        }
    }

    /// The reply begun by [`Tracker::answer`] was sent (the request `offset`
    /// is done), or `sent` is false and it was not.
    pub(crate) fn answered(&mut self, partition: &Partition, offset: i64, epoch: u64, sent: bool) {
        if let Some((current, mark)) = self.partitions.get_mut(partition) {
            if *current == epoch {
                mark.answering -= 1;
                if sent {
                    mark.done(offset);
                }
            }
        }
    }

    /// Whether a reply to a request of the partition is being sent.
    pub(crate) fn answering(&self, partition: &Partition) -> bool {
        self.partitions
            .get(partition)
            .is_some_and(|(_, mark)| mark.answering > 0)
    }

    /// Records a message done; `false` if it belongs to an earlier assignment.
    pub(crate) fn done(&mut self, partition: &Partition, offset: i64, epoch: u64) -> bool {
        match self.partitions.get_mut(partition) {
            Some((current, mark)) if *current == epoch => {
                mark.done(offset);
                true
            }
            _ => false,
        }
    }

    /// Commits to make now, for the partitions whose watermark or note moved.
    pub(crate) fn advance(&mut self) -> Vec<Commit> {
        self.partitions
            .iter_mut()
            .filter_map(|(p, (epoch, mark))| {
                let (offset, note) = mark.advance()?;
                Some(Commit {
                    partition: p.clone(),
                    epoch: *epoch,
                    offset,
                    note,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::offsets::MAX_GAP;

    fn p(n: i32) -> Partition {
        (Arc::from("t"), n)
    }

    /// A tracker given partition 0 of `t`, committed at `committed` by a
    /// member gone, whose note reserved up to `reserved` with `counts`; the
    /// partition ended at `end` then.
    fn recovered(committed: i64, reserved: i64, counts: Vec<(i64, u32)>, end: i64) -> Tracker {
        let mut t = Tracker::default();
        t.assigned(p(0));
        t.recovered(&p(0), committed, Note { reserved, counts }, end);
        t
    }

    fn offsets(commits: Vec<Commit>) -> Vec<(Partition, i64)> {
        commits
            .into_iter()
            .map(|c| (c.partition, c.offset))
            .collect()
    }

    #[test]
    fn out_of_order_completion_commits_only_below_the_slowest() {
        let mut mark = Watermark::default();
        for o in 5..=8 {
            mark.take(o);
        }
        mark.done(7);
        mark.done(8);
        assert_eq!(
            mark.committable(),
            Some(5),
            "5 and 6 still run: nothing past them"
        );
        mark.done(6);
        assert_eq!(mark.committable(), Some(5));
        mark.done(5);
        assert_eq!(mark.committable(), Some(9), "all done: past the highest");
    }

    #[test]
    fn advance_reports_only_progress() {
        let mut mark = Watermark::default();
        assert_eq!(
            mark.advance().map(|(o, _)| o),
            None,
            "nothing taken, nothing to commit"
        );
        mark.take(0);
        assert_eq!(mark.advance().map(|(o, _)| o), Some(0));
        assert_eq!(mark.advance().map(|(o, _)| o), None);
        mark.done(0);
        assert_eq!(mark.advance().map(|(o, _)| o), Some(1));
    }

    #[test]
    fn stale_acknowledgements_are_ignored_after_a_revocation() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        t.assigned(p(1));
        let old = t.taken(&p(0), 10).unwrap().epoch;
        t.taken(&p(1), 3).unwrap();
        assert_eq!(t.revoked(&p(0)).map(|(o, _)| o), Some(10));
        assert!(!t.owns(&p(0), old));
        t.assigned(p(0));
        let new = t.taken(&p(0), 10).unwrap().epoch;
        assert_ne!(old, new);
        assert!(t.owns(&p(0), new) && !t.owns(&p(0), old));
        assert!(
            !t.done(&p(0), 10, old),
            "the old delivery of offset 10 does not finish the new one"
        );
        let mut progress = offsets(t.advance());
        progress.sort();
        assert_eq!(progress, vec![(p(0), 10), (p(1), 3)]);
        assert!(t.done(&p(0), 10, new));
        assert_eq!(offsets(t.advance()), vec![(p(0), 11)]);
    }

    #[test]
    fn a_reply_being_sent_finishes_its_request_only_when_sent() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let epoch = t.taken(&p(0), 4).unwrap().epoch;
        t.taken(&p(0), 5).unwrap();
        assert!(t.answer(&p(0), epoch));
        assert!(t.answer(&p(0), epoch));
        assert!(t.answering(&p(0)));
        t.answered(&p(0), 5, epoch, false);
        assert!(t.answering(&p(0)), "one reply still on its way");
        t.answered(&p(0), 4, epoch, true);
        assert!(!t.answering(&p(0)));
        assert_eq!(offsets(t.advance()), vec![(p(0), 5)], "5 was not answered");
        assert_eq!(
            t.revoked(&p(0)).map(|(o, _)| o),
            Some(5),
            "5 still runs: committed below it"
        );
        assert!(!t.answer(&p(0), epoch), "not ours: no reply");
        t.answered(&p(0), 5, epoch, true);
        assert!(!t.answering(&p(0)));
    }

    #[test]
    fn an_offset_in_flight_is_not_taken_twice_and_a_lower_one_still_is() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let epoch = t.taken(&p(0), 5).unwrap().epoch;
        assert_eq!(t.taken(&p(0), 5), None, "in flight already");
        // Out of order across a rebalance: a record fetched before it, then
        // the partition's records from its commit. The lower one is taken,
        // or the commit would go past it unanswered.
        assert!(t.taken(&p(0), 3).is_some());
        t.done(&p(0), 5, epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 3)], "3 still runs");
        t.done(&p(0), 3, epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 4)], "4 is awaited");
        assert!(t.taken(&p(0), 4).is_some(), "and taken when it comes");
        t.done(&p(0), 4, epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 6)]);
    }

    /// A fetch that skipped an offset (Tansu 0.6.0 shows a record before
    /// the one below it is stored): the consumer is sent back to it, the
    /// watermark waits for it, and the records read again are refused.
    #[test]
    fn a_skipped_offset_is_read_again_and_never_committed_past() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let first = t.taken(&p(0), 5).unwrap();
        assert_eq!(first.read_again_from, None);
        let after_gap = t.taken(&p(0), 7).unwrap();
        assert_eq!(after_gap.read_again_from, Some(6), "read again from 6");
        t.done(&p(0), 5, first.epoch);
        t.done(&p(0), 7, first.epoch);
        assert_eq!(
            offsets(t.advance()),
            vec![(p(0), 6)],
            "not past 6, never read"
        );
        let skipped = t.taken(&p(0), 6).unwrap();
        assert_eq!(skipped.read_again_from, None);
        assert_eq!(t.taken(&p(0), 7), None, "done already: not run again");
        t.done(&p(0), 6, first.epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 8)]);
        assert!(t.taken(&p(0), 8).is_some());
    }

    /// Offsets that hold no record (transaction markers, compaction): once
    /// a read from the first of them returns a record above them, they are
    /// given up and the watermark moves on.
    #[test]
    fn a_gap_that_holds_no_record_is_given_up_after_one_read() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let epoch = t.taken(&p(0), 5).unwrap().epoch;
        assert_eq!(t.taken(&p(0), 8).unwrap().read_again_from, Some(6));
        t.done(&p(0), 5, epoch);
        t.done(&p(0), 8, epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 6)]);
        // Read again from 6, the broker returns 8 first: 6 and 7 are empty.
        assert_eq!(t.taken(&p(0), 8), None, "done already");
        assert_eq!(offsets(t.advance()), vec![(p(0), 9)]);
        // A hole wider than MAX_GAP is not waited for at all.
        assert_eq!(
            t.taken(&p(0), 9 + MAX_GAP + 1).unwrap().read_again_from,
            None
        );
    }

    #[test]
    fn requests_done_under_an_earlier_assignment_are_skipped_and_committed() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        t.done_below(&p(0), 10);
        assert_eq!(t.taken(&p(0), 8), None, "done before the rebalance");
        assert!(t.taken(&p(0), 10).is_some());
        assert_eq!(offsets(t.advance()), vec![(p(0), 10)]);
        t.done_below(&p(0), 20);
        assert_eq!(offsets(t.advance()), vec![], "only for a fresh assignment");
    }

    /// The first record read after an assignment lies above the committed
    /// offset: the fetch skipped records (Tansu 0.6.0 can), so the consumer
    /// goes back for them, and nothing is committed past them meanwhile.
    /// Records below the committed offset are done.
    #[test]
    fn a_first_record_above_the_committed_offset_sends_the_consumer_back() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        t.done_below(&p(0), 10);
        assert_eq!(t.taken(&p(0), 9), None, "committed: done");
        let first = t.taken(&p(0), 12).unwrap();
        assert_eq!(first.read_again_from, Some(10));
        t.done(&p(0), 12, first.epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 10)]);
        assert!(t.taken(&p(0), 10).is_some() && t.taken(&p(0), 11).is_some());
        assert_eq!(t.taken(&p(0), 12), None, "done already");
    }

    #[test]
    fn a_failed_commit_is_made_again() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let epoch = t.taken(&p(0), 3).unwrap().epoch;
        t.done(&p(0), 3, epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 4)]);
        assert_eq!(offsets(t.advance()), vec![], "handed to a commit already");
        t.commit_failed(&p(0));
        assert_eq!(
            offsets(t.advance()),
            vec![(p(0), 4)],
            "the failed commit again"
        );
        let epoch = t.taken(&p(0), 4).unwrap().epoch;
        t.done(&p(0), 4, epoch);
        assert_eq!(offsets(t.advance()), vec![(p(0), 5)]);
        assert_eq!(offsets(t.advance()), vec![]);
    }

    #[test]
    fn revoking_everything_drops_the_watermarks_uncommitted() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        t.assigned(p(1));
        let epoch = t.taken(&p(0), 3).unwrap().epoch;
        t.revoke_all();
        assert!(t.partitions().is_empty());
        assert!(!t.owns(&p(0), epoch));
        assert!(!t.answer(&p(0), epoch), "no reply for a lost partition");
        assert!(!t.done(&p(0), 3, epoch));
        assert_eq!(offsets(t.advance()), vec![], "nothing committed for them");
    }

    #[test]
    fn messages_of_a_partition_not_ours_are_refused() {
        let mut t = Tracker::default();
        assert_eq!(t.taken(&p(0), 5), None, "never assigned");
        t.assigned(p(0));
        t.taken(&p(0), 5).unwrap();
        t.done(&p(0), 5, 1);
        assert_eq!(offsets(t.advance()), vec![(p(0), 6)]);
        assert_eq!(
            t.revoked(&p(0)).map(|(o, _)| o),
            Some(6),
            "committed once already, and again at the revocation"
        );
        // Fetched before the revocation, read after it: not ours to handle
        // or to commit, however far it would move the watermark.
        assert_eq!(t.taken(&p(0), 9), None);
        assert_eq!(offsets(t.advance()), vec![], "nothing to commit for it");
    }

    /// No record is handed out before the broker holds a note reserving it,
    /// and the reservation is renewed once half of it is used, by a commit
    /// made even if the offset has not moved.
    #[test]
    fn a_record_is_handed_out_only_once_the_broker_holds_its_reservation() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let epoch = t.taken(&p(0), 0).unwrap().epoch;
        assert!(!t.reserved(&p(0), epoch, 0), "nothing reserved yet");
        let commits = t.advance();
        assert_eq!(commits.len(), 1);
        assert_eq!(
            (commits[0].offset, commits[0].note.reserved),
            (0, 1 + RESERVE_AHEAD)
        );
        t.landed(&commits[0]);
        assert!(t.reserved(&p(0), epoch, 0));
        assert!(t.reserved(&p(0), epoch, RESERVE_AHEAD));
        assert!(!t.reserved(&p(0), epoch, RESERVE_AHEAD + 1));
        for offset in 1..=RESERVE_AHEAD / 2 {
            t.taken(&p(0), offset).unwrap();
        }
        assert_eq!(t.advance(), vec![], "half of the reservation left");
        t.taken(&p(0), RESERVE_AHEAD / 2 + 1).unwrap();
        let renewal = t.advance();
        assert_eq!(renewal.len(), 1, "renewed while 0 still runs");
        assert_eq!(renewal[0].offset, 0);
        assert_eq!(
            renewal[0].note.reserved,
            RESERVE_AHEAD / 2 + 2 + RESERVE_AHEAD
        );
        assert!(
            !t.reserved(&p(0), epoch, RESERVE_AHEAD + 1),
            "not landed yet"
        );
        t.landed(&renewal[0]);
        assert!(t.reserved(&p(0), epoch, RESERVE_AHEAD + 1));
        assert_eq!(t.advance(), vec![], "nothing moved since");
    }

    /// After its last owner is gone, the records it may have been running
    /// are tried before anything else is, each delivery counted in the note
    /// before it is made: those never counted together, one counted before
    /// alone. Records beyond the partition's end then are not suspects.
    #[test]
    fn suspects_are_counted_before_each_delivery_and_tried_alone_once_counted() {
        let mut t = recovered(10, 300, vec![(3, 9), (12, 3)], 14);
        let epoch = t.taken(&p(0), 10).unwrap().epoch;
        for offset in 11..=13 {
            assert!(t.taken(&p(0), offset).unwrap().suspect);
        }
        assert!(!t.taken(&p(0), 14).unwrap().suspect, "beyond the end then");
        assert!(t.reserved(&p(0), epoch, 14), "reserved by the last owner");
        let Trial::Run {
            commit: first,
            tried: 2,
            attempt: 2,
        } = t.begin_trial(&p(0), epoch, &[10, 11, 12, 13], 5)
        else {
            panic!("10 and 11, never counted, are tried together");
        };
        assert_eq!(first.offset, 10);
        assert_eq!(
            first.note.counts,
            vec![(10, 2), (11, 2), (12, 3)],
            "3 is below the commit"
        );
        t.landed(&first);
        assert_eq!(t.begin_trial(&p(0), epoch, &[12, 13], 5), Trial::Wait);
        t.done(&p(0), 11, epoch);
        assert_eq!(t.begin_trial(&p(0), epoch, &[12, 13], 5), Trial::Wait);
        t.done(&p(0), 10, epoch);
        let Trial::Run {
            commit: second,
            tried: 1,
            attempt: 4,
        } = t.begin_trial(&p(0), epoch, &[12, 13], 5)
        else {
            panic!("12, counted before, is tried alone");
        };
        assert_eq!((second.offset, second.note.counts), (12, vec![(12, 4)]));
        t.done(&p(0), 12, epoch);
        let Trial::Run {
            commit: third,
            tried: 1,
            attempt: 2,
        } = t.begin_trial(&p(0), epoch, &[13], 5)
        else {
            panic!("13 is tried once 12 is done");
        };
        assert_eq!(third.note.counts, vec![(13, 2)]);
        t.done(&p(0), 13, epoch);
        t.done(&p(0), 14, epoch);
        let last = t.advance();
        assert_eq!((last[0].offset, last[0].note.counts.clone()), (15, vec![]));
    }

    #[test]
    fn uncounted_suspects_are_tried_in_batches() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let suspects = TRIAL_BATCH as i64 + 10;
        let note = Note {
            reserved: suspects,
            counts: vec![],
        };
        t.recovered(&p(0), 0, note, suspects);
        let epoch = t.taken(&p(0), 0).unwrap().epoch;
        for offset in 1..suspects {
            t.taken(&p(0), offset).unwrap();
        }
        let waiting: Vec<i64> = (0..suspects).collect();
        let Trial::Run {
            commit,
            tried,
            attempt: 2,
        } = t.begin_trial(&p(0), epoch, &waiting, 5)
        else {
            panic!("tried");
        };
        assert_eq!(tried, TRIAL_BATCH);
        assert_eq!(commit.note.counts.len(), TRIAL_BATCH);
        assert!(commit.note.encode().len() < 4096);
    }

    #[test]
    fn a_suspect_delivered_max_deliveries_times_is_dead_lettered() {
        let mut t = recovered(10, 20, vec![(10, 5)], 20);
        let epoch = t.taken(&p(0), 10).unwrap().epoch;
        t.taken(&p(0), 11).unwrap();
        assert_eq!(
            t.begin_trial(&p(0), epoch, &[10, 11], 5),
            Trial::DeadLetter(6)
        );
        assert_eq!(
            t.begin_trial(&p(0), epoch, &[11], 5),
            Trial::Wait,
            "one trial at a time"
        );
        t.done(&p(0), 10, epoch);
        assert!(matches!(
            t.begin_trial(&p(0), epoch, &[11], 5),
            Trial::Run {
                tried: 1,
                attempt: 2,
                ..
            }
        ));
        assert_eq!(t.begin_trial(&p(0), epoch + 1, &[12], 5), Trial::Gone);
    }

    #[test]
    fn a_trial_whose_commit_failed_is_counted_as_before() {
        let mut t = recovered(10, 20, vec![(10, 2)], 20);
        let epoch = t.taken(&p(0), 10).unwrap().epoch;
        let Trial::Run {
            commit,
            tried: 1,
            attempt: 3,
        } = t.begin_trial(&p(0), epoch, &[10], 5)
        else {
            panic!("tried");
        };
        assert_eq!(commit.note.counts, vec![(10, 3)]);
        t.trial_failed(&commit, &[10]);
        let Trial::Run {
            commit: again,
            tried: 1,
            attempt: 3,
        } = t.begin_trial(&p(0), epoch, &[10], 5)
        else {
            panic!("tried again");
        };
        assert_eq!(again.note.counts, vec![(10, 3)], "counted once");
    }

    /// A revocation's note reserves what was delivered, and the suspects
    /// left untried with their counts: nothing beyond can have been.
    #[test]
    fn a_revocation_reserves_only_what_was_delivered() {
        let mut t = Tracker::default();
        t.assigned(p(0));
        let epoch = t.taken(&p(0), 0).unwrap().epoch;
        t.taken(&p(0), 1).unwrap();
        t.taken(&p(0), 2).unwrap();
        let commits = t.advance();
        t.landed(&commits[0]);
        assert!(t.deliver(&p(0), epoch, 0) && t.deliver(&p(0), epoch, 1));
        t.done(&p(0), 0, epoch);
        assert_eq!(
            t.revoked(&p(0)),
            Some((
                1,
                Note {
                    reserved: 2,
                    counts: vec![]
                }
            )),
            "2 was read ahead, never delivered: fresh to the next owner"
        );
        assert!(!t.deliver(&p(0), epoch, 2), "not ours any more");
        t.assigned(p(0));
        let note = Note {
            reserved: 50,
            counts: vec![(7, 4)],
        };
        t.recovered(&p(0), 5, note, 40);
        t.taken(&p(0), 5).unwrap();
        assert_eq!(
            t.revoked(&p(0)),
            Some((
                5,
                Note {
                    reserved: 40,
                    counts: vec![(7, 4)]
                }
            )),
            "the suspects not tried stay suspects"
        );
    }

    /// One step of a consumer's life with one partition, as the property
    /// test below drives it.
    #[derive(Clone, Debug)]
    enum Step {
        /// The partition is assigned (if it is not): reading starts at the
        /// committed offset (the log's start if none), known done below it.
        Assign,
        /// The next record is read, and taken if the tracker says so.
        Take,
        /// A fetch leaves out the next few records (Tansu can).
        Skip(i64),
        /// A request in flight finishes, acknowledged directly or through
        /// a reply sent.
        Finish(usize, bool),
        /// The commits due now are made; they land, or fail.
        Advance(bool),
        /// The partition is revoked: its offset is committed on the spot.
        Revoke,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            1 => Just(Step::Assign),
            6 => Just(Step::Take),
            1 => (1..4i64).prop_map(Step::Skip),
            5 => (any::<usize>(), any::<bool>()).prop_map(|(i, reply)| Step::Finish(i, reply)),
            3 => any::<bool>().prop_map(Step::Advance),
            1 => Just(Step::Revoke),
        ]
    }

    /// Fails unless every offset below `commit` was finished: a commit is
    /// Kafka's "all done below here", and one past an unfinished request
    /// loses it if its server dies.
    fn assert_safe(commit: i64, finished: &BTreeSet<i64>, steps: &[Step]) {
        if let Some(lost) = (0..commit).find(|o| !finished.contains(o)) {
            panic!("committed {commit} past unfinished offset {lost} after {steps:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Random takes, finishes, skips, commits that land or fail,
        /// revocations and assignments: nothing is ever committed past a
        /// request not finished, and a request of an earlier assignment
        /// never counts as finished.
        #[test]
        fn commits_never_pass_an_unfinished_offset(steps in proptest::collection::vec(step(), 1..200)) {
            let mut tracker = Tracker::default();
            let mut committed = 0i64;
            // The consumer's position while the partition is ours.
            let mut position: Option<i64> = None;
            // Where a re-read the consumer was sent back for ends: the
            // highest offset read, plus one.
            let mut reread_until = 0i64;
            // The epoch of the current assignment, once a record shows it.
            let mut epoch_now: Option<u64> = None;
            let mut in_flight: Vec<(i64, u64)> = Vec::new();
            let mut finished = BTreeSet::new();
            for (n, step) in steps.iter().enumerate() {
                let so_far = &steps[..=n];
                match step {
                    Step::Assign => {
                        if position.is_none() {
                            tracker.assigned(p(0));
                            // As group.rs does: the committed offset, or the
                            // log's start (0) for a partition never committed.
                            tracker.done_below(&p(0), committed);
                            position = Some(committed);
                            reread_until = 0;
                            epoch_now = None;
                        }
                    }
                    Step::Take => {
                        if let Some(at) = position {
                            position = Some(match tracker.taken(&p(0), at) {
                                Some(taken) => {
                                    epoch_now = Some(taken.epoch);
                                    in_flight.push((at, taken.epoch));
                                    if let Some(from) = taken.read_again_from {
                                        reread_until = at + 1;
                                        from
                                    } else {
                                        at + 1
                                    }
                                }
                                None => at + 1,
                            });
                        }
                    }
                    Step::Skip(k) => {
                        // The tracker's premise: a re-read the consumer was
                        // sent back for shows what is there, and a record
                        // it still leaves out is none (a transaction
                        // marker). A record stored later than that is lost.
                        if let Some(at) = position.filter(|at| *at >= reread_until) {
                            position = Some(at + k);
                        }
                    }
                    Step::Finish(i, reply) => {
                        if !in_flight.is_empty() {
                            let (offset, epoch) = in_flight.remove(i % in_flight.len());
                            // A request of an earlier assignment is not
                            // answered: its partition's new owner does that.
                            let counted = if *reply {
                                let sending = tracker.answer(&p(0), epoch);
                                if sending {
                                    tracker.answered(&p(0), offset, epoch, true);
                                }
                                sending
                            } else {
                                tracker.done(&p(0), offset, epoch)
                            };
                            // Only a request of the current assignment counts.
                            let current = position.is_some() && Some(epoch) == epoch_now;
                            assert_eq!(counted, current, "finishing {offset} of epoch {epoch} after {so_far:?}");
                            if current {
                                finished.insert(offset);
                            }
                        }
                    }
                    Step::Advance(lands) => {
                        for commit in tracker.advance() {
                            assert_safe(commit.offset, &finished, so_far);
                            if *lands {
                                tracker.landed(&commit);
                                committed = commit.offset;
                            } else {
                                tracker.commit_failed(&commit.partition);
                            }
                        }
                    }
                    Step::Revoke => {
                        if position.take().is_some() {
                            if let Some((offset, _)) = tracker.revoked(&p(0)) {
                                assert_safe(offset, &finished, so_far);
                                committed = offset;
                            }
                        }
                    }
                }
            }
        }
    }
}
