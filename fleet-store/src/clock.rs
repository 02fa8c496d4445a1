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

#[derive(Debug)]
pub struct Hlc {
    node: i64,
    /// The last (milliseconds, counter) issued or observed, packed without node bits.
    last: Mutex<i64>,
}

impl Hlc {
    pub fn new(node: i64) -> Self {
        Self {
            node: node & MAX_WORKER,
            last: Mutex::new(0),
        }
    }

    /// A stamp greater than every stamp this clock has issued or observed.
    pub fn tick(&self) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let wall = (crate::now_ms() - EPOCH_MS).max(0) << COUNTER_BITS;
        *last = if wall > *last { wall } else { *last + 1 };
        (*last << NODE_BITS) | self.node
    }

    /// Takes in a stamp from another node, so later local writes stamp after it.
    pub fn observe(&self, stamp: i64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(stamp >> NODE_BITS);
    }
}

/// The wall-clock milliseconds (since the Unix epoch) a stamp was made at.
pub fn physical_ms(stamp: i64) -> i64 {
    (stamp >> (NODE_BITS + COUNTER_BITS)) + EPOCH_MS
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
        let ahead = (crate::now_ms() - EPOCH_MS + 60_000) << (COUNTER_BITS + NODE_BITS) | 1;
        a.observe(ahead);
        let next = a.tick();
        assert!(
            next > ahead,
            "a write after seeing a stamp is stamped after it"
        );
        assert_ne!(b.tick(), a.tick());
        b.observe(next);
        assert!(b.tick() > next);
    }
}
