//! Hybrid logical clock. A stamp packs milliseconds since 2024-01-01 (41 bits), a
//! logical counter (12 bits) and the writing node's id (10 bits, the snowflake worker
//! id) into one positive i64. Stamps compare as plain integers on every database and
//! stay close to real time; the counter orders writes within one millisecond (and
//! carries into the milliseconds under bursts, as an HLC may); and the node bits make
//! every stamp in the federation unique, so two nodes' writes never tie and the
//! node id breaks what would have been a tie, the same way everywhere.

use std::sync::Mutex;

use crate::ids::MAX_WORKER;

const NODE_BITS: u32 = 10;
const COUNTER_BITS: u32 = 12;
/// 2024-01-01T00:00:00Z, the snowflake ids' epoch too.
const EPOCH_MS: i64 = 1_704_067_200_000;
/// The largest (milliseconds, counter) pair that still packs into a positive i64.
const MAX_PACKED: i64 = i64::MAX >> NODE_BITS;
/// How far ahead of the wall clock a peer's stamp may be by default.
pub const DEFAULT_MAX_AHEAD_MS: i64 = 60_000;

#[derive(Debug)]
pub struct Hlc {
    node: i64,
    /// A peer's stamp further ahead of the wall clock than this is refused.
    max_ahead_ms: i64,
    /// The last (milliseconds, counter) issued or observed, packed without node bits.
    last: Mutex<i64>,
}

/// Why a peer's stamp was not taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    #[error("stamp {0} is not a valid stamp")]
    Invalid(i64),
    #[error("stamp is {ahead_ms} ms ahead of this node's clock")]
    Ahead { ahead_ms: i64 },
}

impl Hlc {
    pub fn new(node: i64) -> Self {
        Self {
            node: node & MAX_WORKER,
            max_ahead_ms: DEFAULT_MAX_AHEAD_MS,
            last: Mutex::new(0),
        }
    }

    /// A clock that refuses peers' stamps more than `ms` ahead of its wall clock.
    pub fn with_max_ahead_ms(mut self, ms: i64) -> Self {
        self.max_ahead_ms = ms.max(0);
        self
    }

    pub fn max_ahead_ms(&self) -> i64 {
        self.max_ahead_ms
    }

    fn wall() -> i64 {
        (crate::now_ms() - EPOCH_MS).clamp(0, MAX_PACKED >> COUNTER_BITS) << COUNTER_BITS
    }

    /// A stamp greater than every stamp this clock has issued or observed.
    pub fn tick(&self) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let wall = Self::wall();
        // Saturates rather than wraps: a clock at the end of its range keeps issuing
        // its last stamp instead of turning negative (which every peer refuses).
        *last = if wall > *last {
            wall
        } else {
            last.saturating_add(1).min(MAX_PACKED)
        };
        (*last << NODE_BITS) | self.node
    }

    /// Whether a peer's stamp may be taken in: positive, and not further ahead of the
    /// wall clock than the bound.
    pub fn check(&self, stamp: i64) -> Result<(), StampError> {
        if stamp <= 0 {
            return Err(StampError::Invalid(stamp));
        }
        let ahead_ms = physical_ms(stamp).saturating_sub(crate::now_ms());
        if ahead_ms > self.max_ahead_ms {
            return Err(StampError::Ahead { ahead_ms });
        }
        Ok(())
    }

    /// Takes in a stamp from another node, so later local writes stamp after it. A
    /// stamp that fails [`Hlc::check`] leaves the clock where it is.
    pub fn observe(&self, stamp: i64) -> Result<(), StampError> {
        self.check(stamp)?;
        self.resume_above(stamp);
        Ok(())
    }

    /// Moves the clock past a stamp this node holds itself (at start, the highest in
    /// its database), however far ahead: its own writes must stamp above it.
    pub fn resume_above(&self, stamp: i64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(stamp.max(0) >> NODE_BITS);
    }
}

/// The wall-clock milliseconds (since the Unix epoch) a stamp was made at.
pub fn physical_ms(stamp: i64) -> i64 {
    (stamp >> (NODE_BITS + COUNTER_BITS)).saturating_add(EPOCH_MS)
}

/// The stamp a clock of `node` would issue at wall-clock millisecond `ms`.
pub fn stamp_at(ms: i64, node: i64) -> i64 {
    let packed = (ms - EPOCH_MS).clamp(0, MAX_PACKED >> COUNTER_BITS) << COUNTER_BITS;
    (packed << NODE_BITS) | (node & MAX_WORKER)
}

/// The node that made a stamp.
pub fn node_of(stamp: i64) -> i64 {
    stamp & MAX_WORKER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_and_near_wall_time() {
        let clock = Hlc::new(7);
        let mut prev = clock.tick();
        for _ in 0..100_000 {
            let next = clock.tick();
            assert!(next > prev);
            assert_eq!(node_of(next), 7);
            prev = next;
        }
        assert!((physical_ms(prev) - crate::now_ms()).abs() < 5_000);
    }

    #[test]
    fn stamps_of_two_nodes_never_tie_and_observing_orders_them() {
        let (a, b) = (Hlc::new(1), Hlc::new(2));
        let ahead = stamp_at(crate::now_ms() + 30_000, 1);
        a.observe(ahead).expect("within the bound");
        let next = a.tick();
        assert!(
            next > ahead,
            "a write after seeing a stamp is stamped after it"
        );
        assert_ne!(b.tick(), a.tick());
        b.observe(next).expect("within the bound");
        assert!(b.tick() > next);
    }

    #[test]
    fn stamps_too_far_ahead_or_invalid_never_move_the_clock() {
        let clock = Hlc::new(3).with_max_ahead_ms(60_000);
        let before = clock.tick();
        let far = stamp_at(crate::now_ms() + 10 * 365 * 86_400_000, 2);
        assert!(matches!(
            clock.observe(far),
            Err(StampError::Ahead { ahead_ms }) if ahead_ms > 60_000
        ));
        for bad in [0, -1, i64::MIN] {
            assert_eq!(clock.observe(bad), Err(StampError::Invalid(bad)));
        }
        assert!(matches!(
            clock.observe(i64::MAX),
            Err(StampError::Ahead { .. })
        ));
        let after = clock.tick();
        assert!(after > before);
        assert!(
            physical_ms(after) - crate::now_ms() < 5_000,
            "the clock stayed put"
        );
    }

    #[test]
    fn a_clock_resumed_at_the_end_of_its_range_saturates_instead_of_wrapping() {
        let clock = Hlc::new(5);
        clock.resume_above(i64::MAX);
        let (a, b) = (clock.tick(), clock.tick());
        assert!(a > 0 && b > 0 && b >= a);
    }
}
