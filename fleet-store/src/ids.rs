//! Snowflake ids: 41 bits of milliseconds since 2024-01-01, a 10-bit worker id unique
//! per node (center = 1, each edge its own), and a 12-bit sequence. Ids made on
//! different nodes never collide, so rows can be created anywhere and merged.

use std::sync::Mutex;

const EPOCH_MS: i64 = 1_704_067_200_000;
pub const MAX_WORKER: i64 = (1 << 10) - 1;
const MAX_SEQUENCE: i64 = (1 << 12) - 1;

#[derive(Debug)]
pub struct Snowflake {
    worker: i64,
    state: Mutex<(i64, i64)>,
}

#[derive(Debug, thiserror::Error)]
#[error("worker id {0} is outside 1..={MAX_WORKER}")]
pub struct BadWorker(pub i64);

impl Snowflake {
    pub fn new(worker: i64) -> Result<Self, BadWorker> {
        if !(1..=MAX_WORKER).contains(&worker) {
            return Err(BadWorker(worker));
        }
        Ok(Self {
            worker,
            state: Mutex::new((0, 0)),
        })
    }

    pub fn worker(&self) -> i64 {
        self.worker
    }

    pub fn next_id(&self) -> i64 {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last_ms, seq) = *state;
        // A clock that steps backwards must not reuse ids: stay on the last millisecond.
        let mut ms = (crate::now_ms() - EPOCH_MS).max(last_ms);
        let next_seq = if ms == last_ms { seq + 1 } else { 0 };
        let seq = if next_seq > MAX_SEQUENCE {
            ms = last_ms + 1;
            0
        } else {
            next_seq
        };
        *state = (ms, seq);
        (ms << 22) | (self.worker << 12) | seq
    }
}

/// The worker id an id was made by.
pub fn worker_of(id: i64) -> i64 {
    (id >> 12) & MAX_WORKER
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_increasing_and_carry_the_worker() {
        let gen = Snowflake::new(7).expect("valid worker");
        let mut seen = HashSet::new();
        let mut last = 0;
        for _ in 0..50_000 {
            let id = gen.next_id();
            assert!(id > last);
            assert_eq!(worker_of(id), 7);
            assert!(seen.insert(id));
            last = id;
        }
    }

    #[test]
    fn workers_out_of_range_are_refused() {
        assert!(Snowflake::new(0).is_err());
        assert!(Snowflake::new(1024).is_err());
    }

    #[test]
    fn two_workers_never_collide() {
        let a = Snowflake::new(1).expect("valid worker");
        let b = Snowflake::new(2).expect("valid worker");
        let ids_a: HashSet<i64> = (0..10_000).map(|_| a.next_id()).collect();
        assert!((0..10_000).all(|_| !ids_a.contains(&b.next_id())));
    }
}
