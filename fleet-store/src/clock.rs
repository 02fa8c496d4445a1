//! Hybrid logical clock. A stamp packs wall-clock milliseconds (high 48 bits) and a
//! logical counter (low 16 bits) into one i64, so stamps compare as plain integers on
//! every database, stay close to real time, and still order causally related writes
//! when clocks drift.

use std::sync::Mutex;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: i64 = (1 << LOGICAL_BITS) - 1;

#[derive(Debug, Default)]
pub struct Hlc {
    last: Mutex<i64>,
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stamp greater than every stamp this clock has issued or observed.
    pub fn tick(&self) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let wall = pack(crate::now_ms(), 0);
        *last = if wall > *last { wall } else { *last + 1 };
        *last
    }
}

pub fn pack(physical_ms: i64, logical: i64) -> i64 {
    (physical_ms << LOGICAL_BITS) | (logical & LOGICAL_MASK)
}

pub fn physical_ms(stamp: i64) -> i64 {
    stamp >> LOGICAL_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_and_near_wall_time() {
        let clock = Hlc::new();
        let mut prev = clock.tick();
        for _ in 0..100_000 {
            let next = clock.tick();
            assert!(next > prev);
            prev = next;
        }
        assert!((physical_ms(prev) - crate::now_ms()).abs() < 5_000);
    }
}
