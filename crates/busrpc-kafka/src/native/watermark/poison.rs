//! The poison bound: how often a request has been delivered, kept where the
//! death of the process running it cannot lose it, in the note (metadata)
//! of its partition's committed offset.
//!
//! A request that crashes its server does so microseconds after delivery,
//! before any commit could say it was delivered; committing before every
//! delivery would cost a round trip per request. So a member commits a
//! *reservation* instead: a note saying records below `reserved` may have
//! been handed to a server. It renews it, 256 records ahead, with the
//! commits it makes anyway as requests finish, and hands out no record the
//! broker has not got a reservation for (the first record after an
//! assignment waits for one commit).
//!
//! A member given a partition reads its committed offset and note. Records
//! from that offset up to the reservation (and below the partition's end
//! then) are *suspects*: they may have been running when their last owner
//! died. Before any suspect is delivered, a synchronous commit counts the
//! delivery it is about to get, and one trial runs at a time per consumer.
//! Suspects never counted (most of them, merely running when their member
//! died or gave them up) are tried up to 64 together; one counted before
//! was in a trial that ended in a death, so it is tried alone. A request
//! that kills its server is thus counted at each death, and one that ran
//! beside it at most once more than it ran alone. A suspect delivered
//! `max_deliveries` times already is not run again: it goes to the
//! dead-letter topic `{topic}.dead`, and its caller is answered -32001.
//!
//! The note is a commit's metadata because that is one write with the
//! offset itself: a count can never disagree with what is committed, no
//! topic is needed per service, and the records of a healthy member cost
//! nothing. Brokers that drop commit metadata (Tansu 0.6.0 answers every
//! offset fetch with empty metadata) get no bound: every suspect reads as
//! fresh.

/// How far ahead of the records handed out a member reserves. Larger means
/// fewer reservations waited for under load; smaller, fewer suspects after
/// a crash (only those below the partition's end then are tried, though).
pub(crate) const RESERVE_AHEAD: i64 = 256;

/// Delivery counts a note holds at most: Kafka's `offset.metadata.max.bytes`
/// is 4096 by default, and a count takes up to 31 bytes.
const MAX_COUNTS: usize = 100;

/// What a note starts with: a note of another format (or another program)
/// is not read as one of ours.
const VERSION: &str = "busrpc1";

/// What a commit records beyond its offset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Note {
    /// Records below it may have been handed to a server.
    pub(crate) reserved: i64,
    /// Deliveries counted for suspects not done yet, by offset.
    pub(crate) counts: Vec<(i64, u32)>,
}

impl Note {
    /// The metadata committed with the offset: `busrpc1 reserved=N`, then
    /// `deliveries=O:D,O:D...` when any is counted.
    pub(crate) fn encode(&self) -> String {
        let mut text = format!("{VERSION} reserved={}", self.reserved);
        for (i, (offset, deliveries)) in self.counts.iter().take(MAX_COUNTS).enumerate() {
            text.push_str(if i == 0 { " deliveries=" } else { "," });
            text.push_str(&format!("{offset}:{deliveries}"));
        }
        text
    }

    /// The note in committed metadata; `None` for anything else (no
    /// metadata, another format).
    pub(crate) fn parse(metadata: &str) -> Option<Note> {
        let mut words = metadata.split(' ');
        if words.next()? != VERSION {
            return None;
        }
        let reserved = words.next()?.strip_prefix("reserved=")?.parse().ok()?;
        let mut counts = Vec::new();
        if let Some(word) = words.next() {
            for count in word.strip_prefix("deliveries=")?.split(',') {
                let (offset, deliveries) = count.split_once(':')?;
                counts.push((offset.parse().ok()?, deliveries.parse().ok()?));
            }
        }
        if words.next().is_some() {
            return None;
        }
        Some(Note { reserved, counts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_reads_back_as_written() {
        let plain = Note {
            reserved: 1280,
            counts: vec![],
        };
        assert_eq!(plain.encode(), "busrpc1 reserved=1280");
        let counted = Note {
            reserved: 1280,
            counts: vec![(1024, 3), (1030, 1)],
        };
        assert_eq!(
            counted.encode(),
            "busrpc1 reserved=1280 deliveries=1024:3,1030:1"
        );
        for note in [plain, counted] {
            assert_eq!(Note::parse(&note.encode()), Some(note));
        }
    }

    #[test]
    fn metadata_that_is_not_a_note_is_ignored() {
        for metadata in [
            "",
            "busrpc1",
            "busrpc2 reserved=5",
            "busrpc1 reserved=x",
            "busrpc1 reserved=5 deliveries=",
            "busrpc1 reserved=5 deliveries=7",
            "busrpc1 reserved=5 deliveries=7:2 more",
            "some other consumer's metadata",
        ] {
            assert_eq!(Note::parse(metadata), None, "{metadata:?}");
        }
    }

    #[test]
    fn a_note_fits_kafkas_default_metadata_limit() {
        let note = Note {
            reserved: i64::MAX,
            counts: (0..1000).map(|i| (i64::MAX - i, u32::MAX)).collect(),
        };
        let text = note.encode();
        assert!(text.len() <= 4096, "{} bytes", text.len());
        assert_eq!(Note::parse(&text).unwrap().counts.len(), MAX_COUNTS);
    }
}
