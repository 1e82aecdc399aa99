//! Gap detection: the offsets of one partition as a consumer reads them,
//! so that a request a fetch skipped is read again and never committed
//! past. Both dialects keep their partitions' offsets in one of these.

use std::collections::BTreeSet;

/// Offsets missing between two records read are remembered (and kept from
/// being committed past) only up to this many at a time; a larger hole is
/// taken for what it almost surely is on Kafka, offsets that hold no request
/// (transaction markers, compaction).
pub(crate) const MAX_GAP: i64 = 10_000;

/// The offsets of one partition under one assignment: those taken and not
/// done yet, those skipped between records read (Tansu 0.6.0's fetches can
/// skip records, answering a fetch inside a batch with the next batch),
/// and the span read so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReadOffsets {
    in_flight: BTreeSet<i64>,
    /// Offsets skipped between records read: not committed past until read,
    /// or until a read from the first of them shows they hold no record.
    gaps: BTreeSet<i64>,
    /// The first gap the consumer was sent back to read: the next record
    /// read tells whether the offsets below it hold records.
    sought: Option<i64>,
    /// The lowest offset taken.
    first: Option<i64>,
    /// One past the highest offset taken (or where reading starts).
    next: Option<i64>,
    /// Every offset below it is done: read again, it is not taken.
    done_below: Option<i64>,
}

impl ReadOffsets {
    /// Records `offset` read, or returns `None` if it must not be taken: it
    /// is in flight, or was done already (read again after the consumer was
    /// sent back to a gap, or below where reading started).
    /// `Some(Some(gap))` says offsets from `gap` up were skipped: the
    /// consumer should read again from there.
    pub(crate) fn take(&mut self, offset: i64) -> Option<Option<i64>> {
        if self.done_below.is_some_and(|below| offset < below) {
            return None;
        }
        // The first record read since the lowest gap was noticed (and the
        // consumer sent back to it): a gap below this record holds none.
        if let Some(sought) = self.sought.take() {
            if offset > sought {
                self.gaps.retain(|g| *g >= offset);
            }
        }
        let taken = self.take_unless_done(offset);
        self.sought = self.gaps.first().copied();
        taken
    }

    fn take_unless_done(&mut self, offset: i64) -> Option<Option<i64>> {
        if self.in_flight.contains(&offset) {
            return None;
        }
        let mut seek = None;
        if !self.gaps.remove(&offset) {
            match (self.first, self.next) {
                // Read again after going back to a gap: done already.
                (Some(first), Some(next)) if (first..next).contains(&offset) => return None,
                // Below everything taken (a record fetched before a
                // rebalance came first): the offsets between are awaited;
                // the consumer reads them next anyway.
                (Some(first), _) if offset < first && first - offset <= MAX_GAP => {
                    self.gaps.extend(offset + 1..first);
                }
                (_, Some(next)) if offset > next && offset - next <= MAX_GAP => {
                    self.gaps.extend(next..offset);
                    seek = Some(next);
                }
                _ => {}
            }
        }
        self.in_flight.insert(offset);
        self.first = Some(self.first.map_or(offset, |f| f.min(offset)));
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(seek)
    }

    /// The request at `offset` is done.
    pub(crate) fn done(&mut self, offset: i64) {
        self.in_flight.remove(&offset);
    }

    /// Everything below `offset` is done (a committed offset found at an
    /// assignment), if nothing is in flight and nothing at or above it was
    /// read yet: reading starts there. Whether it was taken so.
    pub(crate) fn start_at(&mut self, offset: i64) -> bool {
        let fresh = self.in_flight.is_empty() && self.next.is_none_or(|next| next < offset);
        if fresh {
            self.next = Some(offset);
            self.done_below = Some(offset);
        }
        fresh
    }

    /// The offset to commit: every offset below it is done.
    pub(crate) fn committable(&self) -> Option<i64> {
        let pending = self.in_flight.first().into_iter().chain(self.gaps.first());
        pending.min().copied().or(self.next)
    }

    /// One past the highest offset taken, or where reading starts.
    pub(crate) fn next(&self) -> Option<i64> {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_never_pass_an_offset_in_flight() {
        let mut read = ReadOffsets::default();
        assert!(read.start_at(10));
        assert_eq!(read.committable(), Some(10));
        for offset in 10..13 {
            assert_eq!(read.take(offset), Some(None));
        }
        read.done(11);
        read.done(12);
        assert_eq!(read.committable(), Some(10), "10 is still running");
        read.done(10);
        assert_eq!(read.committable(), Some(13));
    }

    #[test]
    fn skipped_offsets_are_read_again_and_never_committed_past() {
        let mut read = ReadOffsets::default();
        read.start_at(0);
        assert_eq!(read.take(0), Some(None));
        // A fetch skipped 1 and 2: read again from 1.
        assert_eq!(read.take(3), Some(Some(1)));
        read.done(0);
        read.done(3);
        assert_eq!(read.committable(), Some(1));
        assert_eq!(read.take(1), Some(None));
        assert_eq!(read.take(2), Some(None));
        assert_eq!(read.take(3), None, "done already");
        read.done(1);
        read.done(2);
        assert_eq!(read.committable(), Some(4));
    }

    #[test]
    fn gaps_that_hold_no_record_are_committed_past_once_read_again() {
        let mut read = ReadOffsets::default();
        read.start_at(0);
        assert_eq!(read.take(5), Some(Some(0)));
        read.done(5);
        // Read again from 0, the broker's first record is 5 once more: 0
        // to 4 hold none.
        assert_eq!(read.take(5), None);
        assert_eq!(read.committable(), Some(6));
    }

    #[test]
    fn offsets_below_the_start_are_done() {
        let mut read = ReadOffsets::default();
        read.start_at(7);
        assert_eq!(read.take(6), None);
        assert_eq!(read.take(7), Some(None));
        assert!(!read.start_at(9), "a start under way is not moved");
        assert_eq!(read.committable(), Some(7), "7 is in flight");
    }

    /// Seen on Tansu 0.6.0 in the pipeline dialect: assigned at 66, its
    /// fetch began at 75, and the calls of 66 to 74 were never answered.
    #[test]
    fn records_a_fetch_skipped_at_the_start_are_read_again() {
        let mut read = ReadOffsets::default();
        read.start_at(66);
        assert_eq!(read.take(75), Some(Some(66)), "go back for 66..75");
        read.done(75);
        assert_eq!(read.committable(), Some(66));
        for offset in 66..75 {
            assert_eq!(read.take(offset), Some(None), "{offset} taken");
        }
        assert_eq!(read.take(75), None, "75 was taken before");
        assert_eq!(read.committable(), Some(66), "66..75 are in flight");
        for offset in 66..75 {
            read.done(offset);
        }
        assert_eq!(read.committable(), Some(76));
    }

    #[test]
    fn a_hole_larger_than_max_gap_is_not_waited_for() {
        let mut read = ReadOffsets::default();
        assert_eq!(read.take(0), Some(None));
        assert_eq!(read.take(5), Some(Some(1)));
        // Read again from 1: the first record is 5 again, so 1..5 hold none.
        assert_eq!(read.take(5), None);
        read.done(0);
        read.done(5);
        assert_eq!(read.committable(), Some(6));
        assert_eq!(read.take(6 + MAX_GAP + 1), Some(None));
        read.done(6 + MAX_GAP + 1);
        assert_eq!(read.committable(), Some(6 + MAX_GAP + 2));
    }
}
