//! Brute-force protection for logins. A key (a source address, an account, or both)
//! that fails too often within a window is refused (429, with Retry-After) until its
//! oldest failure ages out, whatever it sends, so guessing stays slow even with the
//! right password.
//!
//! Machine logins (devices, edges, log uploads) use the per-source methods
//! `check`/`failed`/`succeeded`. Operator password logins use `try_begin`, which counts
//! per (source, account), per account and per source, and takes its place under the
//! same lock it checks under: N guesses sent at once cannot all pass the check before
//! any of them is counted. A success clears only its own account's counts, so a friend
//! logging in from the attacker's address does not reset the attacker's guesses at a
//! victim account.
//!
//! Memory: an entry exists only for a key that failed within the window, and every
//! operator failure costs the server a password hash, so the maps hold at most as many
//! entries as failures the CPU can verify in one window; past `PRUNE_ABOVE` entries the
//! ones with no recent failure are dropped.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failures allowed per source (machine logins) and per (source, account) (operators).
pub const MAX_FAILURES: usize = 10;
/// Failures allowed per operator account from all sources together: slows a guesser
/// who spreads over many addresses, at the price that they can hold the account's
/// password logins back for one window.
pub const MAX_FAILURES_PER_ACCOUNT: usize = 50;
/// Failures allowed per source over all operator accounts: slows trying one password
/// on many accounts. Never cleared by a success, which would let a friend reset it.
pub const MAX_FAILURES_PER_SOURCE: usize = 100;
pub const WINDOW: Duration = Duration::from_secs(300);
/// Past this many tracked keys in a map, keys with no recent failure are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// The failure times of each key within the window, at most `limit` per key.
#[derive(Debug)]
struct Failures<K> {
    limit: usize,
    map: HashMap<K, VecDeque<Instant>>,
}

impl<K: Hash + Eq> Failures<K> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            map: HashMap::new(),
        }
    }

    /// Ages out old failures of `key`; `Err(wait)` when it is at its limit.
    fn check(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        let Some(times) = self.map.get_mut(key) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        match times.front() {
            None => {
                self.map.remove(key);
                Ok(())
            }
            Some(oldest) if times.len() >= self.limit => {
                Err(WINDOW.saturating_sub(now.duration_since(*oldest)))
            }
            Some(_) => Ok(()),
        }
    }

    /// Counts a failure of `key` at `now`; answers how many it has in the window.
    fn add(&mut self, key: K, now: Instant) -> usize {
        if self.map.len() > PRUNE_ABOVE {
            self.map.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        let times = self.map.entry(key).or_default();
        times.push_back(now);
        while times.len() > self.limit {
            times.pop_front();
        }
        times.len()
    }

    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }

    /// Takes back one failure counted at `at`.
    fn refund(&mut self, key: &K, at: Instant) {
        if let Some(times) = self.map.get_mut(key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                self.map.remove(key);
            }
        }
    }

    #[cfg(test)]
    fn count(&self, key: &K) -> usize {
        self.map.get(key).map_or(0, VecDeque::len)
    }
}

/// The three counts of operator logins, behind one lock so that check and count are
/// one step.
#[derive(Debug)]
struct Accounts {
    pairs: Failures<(IpAddr, String)>,
    accounts: Failures<String>,
    sources: Failures<IpAddr>,
}

impl Default for Accounts {
    fn default() -> Self {
        Self {
            pairs: Failures::new(MAX_FAILURES),
            accounts: Failures::new(MAX_FAILURES_PER_ACCOUNT),
            sources: Failures::new(MAX_FAILURES_PER_SOURCE),
        }
    }
}

#[derive(Debug)]
pub struct LoginThrottle {
    sources: Mutex<Failures<IpAddr>>,
    accounts: Mutex<Accounts>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            sources: Mutex::new(Failures::new(MAX_FAILURES)),
            accounts: Mutex::new(Accounts::default()),
        }
    }
}

/// A lock poisoned by a panic elsewhere still holds consistent counts (every change
/// is a single push or removal), so keep using it rather than fail open or panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One IPv6 host usually owns a whole /64, so it counts as one source; an IPv4
/// address mapped into IPv6 counts as that IPv4 address.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Names that the database may take for the same account (MariaDB compares usernames
/// without case and trailing spaces) count as one.
fn account_key(account: &str) -> String {
    account.trim_end_matches(' ').to_lowercase()
}

/// An operator login attempt that passed the throttle and is already counted as a
/// failure. Drop it (or call `failed`) when the password was wrong; call `succeeded`
/// when it was right.
#[must_use = "an attempt counts as a failure unless it succeeded"]
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    source: IpAddr,
    account: String,
    at: Instant,
    account_failures: usize,
}

impl Attempt<'_> {
    /// Failures of this account within the window, this attempt included (counted when
    /// the attempt began, so attempts under way together each see a different number).
    pub fn account_failures(&self) -> usize {
        self.account_failures
    }

    /// The password was right: clears this account's counts (from this source and
    /// overall) and takes back this attempt from the source's count, leaving other
    /// accounts' failures from the same source in place.
    pub fn succeeded(self) {
        let mut a = lock(&self.throttle.accounts);
        a.pairs.clear(&(self.source, self.account.clone()));
        a.accounts.clear(&self.account);
        a.sources.refund(&self.source, self.at);
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {}
}

impl LoginThrottle {
    /// `Err(wait)` when `source` must wait before trying again.
    pub fn check(&self, source: IpAddr) -> Result<(), Duration> {
        lock(&self.sources).check(&source, Instant::now())
    }

    pub fn failed(&self, source: IpAddr) {
        lock(&self.sources).add(source, Instant::now());
    }

    pub fn succeeded(&self, source: IpAddr) {
        lock(&self.sources).clear(&source);
    }

    /// Begins an operator password check of `account` from `source`: `Err(wait)` when
    /// the pair, the account or the source is at its limit; otherwise the attempt,
    /// already counted as a failure everywhere.
    pub fn try_begin(&self, source: IpAddr, account: &str) -> Result<Attempt<'_>, Duration> {
        let source = source_key(source);
        let account = account_key(account);
        let pair = (source, account.clone());
        let now = Instant::now();
        let mut a = lock(&self.accounts);
        let waits = [
            a.pairs.check(&pair, now),
            a.accounts.check(&account, now),
            a.sources.check(&source, now),
        ];
        if let Some(wait) = waits.iter().filter_map(|w| w.err()).max() {
            return Err(wait);
        }
        a.pairs.add(pair, now);
        let account_failures = a.accounts.add(account.clone(), now);
        a.sources.add(source, now);
        Ok(Attempt {
            throttle: self,
            source,
            account,
            at: now,
            account_failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_source_is_held_back_after_too_many_failures() {
        let throttle = LoginThrottle::default();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        for _ in 0..MAX_FAILURES {
            assert!(throttle.check(a).is_ok());
            throttle.failed(a);
        }
        let wait = throttle.check(a).expect_err("held back");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(throttle.check(b).is_ok(), "other sources are not affected");
        throttle.succeeded(a);
        assert!(throttle.check(a).is_ok());
    }

    #[test]
    fn parallel_guesses_cannot_pass_the_limit() {
        let throttle = Arc::new(LoginThrottle::default());
        let passed = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let throttle = throttle.clone();
                let passed = passed.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        if let Ok(attempt) = throttle.try_begin(ip("10.0.0.9"), "victim") {
                            passed.fetch_add(1, Ordering::SeqCst);
                            attempt.failed();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("guessing thread");
        }
        assert_eq!(passed.load(Ordering::SeqCst), MAX_FAILURES);
    }

    #[test]
    fn a_friends_success_does_not_clear_guesses_at_another_account() {
        let throttle = LoginThrottle::default();
        let shared = ip("192.0.2.7");
        for _ in 0..MAX_FAILURES - 1 {
            throttle
                .try_begin(shared, "victim")
                .expect("under the limit")
                .failed();
        }
        throttle
            .try_begin(shared, "friend")
            .expect("the friend may try")
            .succeeded();
        throttle
            .try_begin(shared, "victim")
            .expect("one guess left")
            .failed();
        assert!(
            throttle.try_begin(shared, "victim").is_err(),
            "the friend's login reset nothing"
        );
        assert!(throttle.try_begin(shared, "friend").is_ok());
        // Case and trailing spaces do not make a new account to guess at.
        assert!(throttle.try_begin(shared, "Victim  ").is_err());
    }

    #[test]
    fn an_account_is_held_back_across_many_sources() {
        let throttle = LoginThrottle::default();
        let mut passed = 0;
        for i in 0..=255u8 {
            if let Ok(a) = throttle.try_begin(IpAddr::from([10, 1, 0, i]), "admin") {
                passed += 1;
                assert_eq!(a.account_failures(), passed);
                a.failed();
            }
        }
        assert_eq!(passed, MAX_FAILURES_PER_ACCOUNT);
        assert!(throttle.try_begin(ip("10.9.9.9"), "other").is_ok());
    }

    #[test]
    fn a_source_is_held_back_across_many_accounts() {
        let throttle = LoginThrottle::default();
        let source = ip("2001:db8::1");
        let passed = (0..MAX_FAILURES_PER_SOURCE + 20)
            .filter_map(|i| throttle.try_begin(source, &format!("user{i}")).ok())
            .map(Attempt::failed)
            .count();
        assert_eq!(passed, MAX_FAILURES_PER_SOURCE);
        assert!(
            throttle.try_begin(ip("2001:db8::2"), "fresh").is_err(),
            "one /64 is one source"
        );
        assert!(throttle.try_begin(ip("2001:db8:0:1::1"), "fresh").is_ok());
    }

    #[test]
    fn a_success_clears_its_own_account_and_refunds_its_attempt() {
        let throttle = LoginThrottle::default();
        let source = ip("10.0.0.3");
        for _ in 0..3 {
            throttle.try_begin(source, "carol").expect("ok").failed();
        }
        throttle.try_begin(source, "dave").expect("ok").failed();
        throttle.try_begin(source, "carol").expect("ok").succeeded();
        let a = lock(&throttle.accounts);
        assert_eq!(a.pairs.count(&(source, "carol".into())), 0);
        assert_eq!(a.accounts.count(&"carol".into()), 0);
        assert_eq!(a.accounts.count(&"dave".into()), 1, "dave's failure stays");
        assert_eq!(a.sources.count(&source), 4, "the source keeps the failures");
    }

    #[test]
    fn idle_keys_are_pruned() {
        let mut f = Failures::new(MAX_FAILURES);
        let long_ago = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            f.add(i, long_ago);
        }
        f.add(usize::MAX, long_ago + WINDOW);
        assert_eq!(f.map.len(), 1);
    }
}
