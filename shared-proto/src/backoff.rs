//! Reconnect delays: exponential with full jitter and a cap, reset once a session has
//! been stable. Randomness comes from the caller so tests can fix it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniform in [0, min(cap, base * 2^attempt)].
    pub fn next_delay(&mut self, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(30)))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.gen_range(0..=millis))
    }

    /// After a stable session the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(self.attempt.min(30)))
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_exponentially_with_full_jitter_up_to_the_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let ceiling = b.ceiling();
                let d = b.next_delay(&mut rng);
                assert!(d <= ceiling);
                u64::try_from(ceiling.as_millis()).unwrap_or(0)
            })
            .collect();
        assert_eq!(
            ceilings,
            vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
        // Full jitter: over many draws the delays spread over the whole range.
        let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_millis(1000));
        let draws: Vec<Duration> = (0..200).map(|_| b.next_delay(&mut rng)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(800)));
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        for _ in 0..5 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.ceiling(), Duration::from_millis(3200));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }
}
