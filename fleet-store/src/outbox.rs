//! How far a reader of the change log has read, and which skipped positions it must
//! look at again: a link pushing its log to a peer, and a node's device cache
//! forgetting the rows that changed.
//!
//! On MySQL, change-log positions are handed out when a transaction inserts, but
//! transactions commit in their own order: a reader can see entry 11 while entry 10
//! is still uncommitted. Moving a cursor past 10 would lose it for good. So
//! positions skipped over are remembered as gaps: the entries after a gap are read at
//! once (no stall), gaps are looked for again on every read and taken when they
//! appear, and the cursor a peer stores (`upto`) stops before the oldest open gap.
//! A gap still open after [`GAP_GRACE`] was a rolled-back transaction (or positions
//! the database skipped) and is let go. On SQLite, with one writer, there are none.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How long a skipped position may take to commit before it counts as never coming.
pub const GAP_GRACE: Duration = Duration::from_secs(300);
/// A jump wider than this is positions the database skipped, not transactions in
/// flight (there are never this many at once).
const WIDEST_GAP: i64 = 1_000;
/// Open gaps remembered at most; past it the oldest are let go.
const MOST_GAPS: usize = 10_000;

#[derive(Debug)]
pub struct Outbox {
    sent: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl Outbox {
    /// Starts after `from`, what the peer has stored.
    pub fn new(from: i64) -> Self {
        Self {
            sent: from,
            gaps: BTreeMap::new(),
        }
    }

    /// The position to read on from.
    pub fn sent(&self) -> i64 {
        self.sent
    }

    /// Positions skipped earlier, to look for again.
    pub fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Takes in a push: `fresh` are the positions read after [`Outbox::sent`], in
    /// order; `filled` the gaps that have appeared since.
    pub fn took(&mut self, fresh: &[i64], filled: &[i64], now: Instant) {
        for seq in filled {
            self.gaps.remove(seq);
        }
        let mut expected = self.sent + 1;
        for &seq in fresh {
            if seq > expected && seq - expected <= WIDEST_GAP {
                for missing in expected..seq {
                    self.gaps.insert(missing, now);
                }
            }
            expected = expected.max(seq + 1);
        }
        self.sent = expected - 1;
        self.gaps
            .retain(|_, seen| now.duration_since(*seen) < GAP_GRACE);
        while self.gaps.len() > MOST_GAPS {
            self.gaps.pop_first();
        }
    }

    /// What the peer may store as merged: everything before the oldest open gap.
    pub fn upto(&self) -> i64 {
        self.gaps.keys().next().map_or(self.sent, |first| first - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contiguous_log_moves_the_cursor_to_its_end() {
        let mut o = Outbox::new(4);
        o.took(&[5, 6, 7], &[], Instant::now());
        assert_eq!((o.sent(), o.upto()), (7, 7));
        assert!(o.gaps().is_empty());
    }

    #[test]
    fn a_skipped_position_holds_the_cursor_until_it_commits() {
        let now = Instant::now();
        let mut o = Outbox::new(0);
        o.took(&[1, 3, 4], &[], now);
        assert_eq!(o.sent(), 4, "what follows the gap is sent at once");
        assert_eq!(o.upto(), 1, "but the peer's cursor stops before it");
        assert_eq!(o.gaps(), vec![2]);
        o.took(&[5], &[2], now);
        assert_eq!((o.upto(), o.gaps().len()), (5, 0));
    }

    #[test]
    fn a_gap_that_never_fills_is_let_go_after_the_grace() {
        let now = Instant::now();
        let mut o = Outbox::new(0);
        o.took(&[2], &[], now);
        assert_eq!(o.upto(), 0);
        o.took(&[], &[], now + GAP_GRACE);
        assert_eq!(o.upto(), 2);
    }

    #[test]
    fn a_wide_jump_is_not_taken_for_transactions_in_flight() {
        let mut o = Outbox::new(0);
        o.took(&[1, 1 + WIDEST_GAP + 5], &[], Instant::now());
        assert_eq!(o.upto(), 1 + WIDEST_GAP + 5);
    }
}
