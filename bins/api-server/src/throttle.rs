//! Failed-login throttling: after `auth.max_failed_logins` failures for one email within
//! `auth.lockout_secs`, further attempts answer 429 until the window ends, whatever the
//! password. A success clears the count. Counted in memory, per process.
//!
//! Anyone can fail a login, so the memory this takes is bounded: an email is kept as a
//! 16-byte digest of its normalised form (never the text a client sent), and at most
//! `capacity` emails are tracked. When the table is full, entries whose window has ended
//! go first; then the entry with the fewest failures (the oldest among equals). An account
//! that is locked out is therefore evicted only when every tracked entry is locked out too:
//! to unlock one early an attacker must first lock out `capacity` other emails, which
//! costs `capacity × max_failed_logins` failed logins (each one a password hash) within
//! one window.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use ledger_core::Timestamp;
use sha2::{Digest, Sha256};

/// Emails tracked at most by default (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 100_000;

type Key = [u8; 16];

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// When the current window started (ms).
    since: i64,
}

#[derive(Debug, Default)]
struct Tracked {
    entries: HashMap<Key, Entry>,
    /// Eviction order: (failures, capped at the limit; window start; key).
    by_rank: BTreeSet<(u32, i64, Key)>,
    /// Expiry order: (window start; key).
    by_start: BTreeSet<(i64, Key)>,
}

#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window_ms: i64,
    capacity: usize,
    tracked: Mutex<Tracked>,
}

fn key_of(email: &str) -> Key {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn rank(max: u32, key: &Key, e: &Entry) -> (u32, i64, Key) {
    (e.failures.min(max), e.since, *key)
}

impl Tracked {
    fn remove(&mut self, max: u32, key: &Key) {
        if let Some(e) = self.entries.remove(key) {
            let rank = rank(max, key, &e);
            self.by_rank.remove(&rank);
            self.by_start.remove(&(e.since, *key));
        }
    }

    fn put(&mut self, max: u32, key: Key, e: Entry) {
        self.remove(max, &key);
        let rank = rank(max, &key, &e);
        self.by_rank.insert(rank);
        self.by_start.insert((e.since, key));
        self.entries.insert(key, e);
    }
}

impl LoginThrottle {
    pub fn new(max_failures: u32, window_secs: u64) -> LoginThrottle {
        LoginThrottle::with_capacity(max_failures, window_secs, DEFAULT_CAPACITY)
    }

    /// At most `capacity` (≥ 1) emails tracked at once.
    pub fn with_capacity(max_failures: u32, window_secs: u64, capacity: usize) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            window_ms: window_secs as i64 * 1000,
            capacity: capacity.max(1),
            tracked: Mutex::new(Tracked::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many emails are tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }

    /// `Err(seconds to wait)` when `email` is locked out at `now`.
    pub fn check(&self, email: &str, now: Timestamp) -> Result<(), u64> {
        match self.lock().entries.get(&key_of(email)) {
            Some(e)
                if e.failures >= self.max_failures && now.millis() - e.since < self.window_ms =>
            {
                let left_ms = self.window_ms - (now.millis() - e.since);
                Err((left_ms as u64).div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login for `email` at `now`.
    pub fn failed(&self, email: &str, now: Timestamp) {
        let key = key_of(email);
        let max = self.max_failures;
        let mut t = self.lock();
        let entry = match t.entries.get(&key) {
            Some(e) if now.millis() - e.since < self.window_ms => Entry {
                failures: e.failures.saturating_add(1),
                since: e.since,
            },
            _ => Entry {
                failures: 1,
                since: now.millis(),
            },
        };
        if !t.entries.contains_key(&key) {
            // Room first: windows that ended, then the least failed entry.
            while let Some(&(since, old)) = t.by_start.first() {
                if now.millis() - since < self.window_ms {
                    break;
                }
                t.remove(max, &old);
            }
            while t.entries.len() >= self.capacity {
                let Some(&(_, _, old)) = t.by_rank.first() else {
                    break;
                };
                t.remove(max, &old);
            }
        }
        t.put(max, key, entry);
    }

    /// A successful login for `email`: its count starts again.
    pub fn succeeded(&self, email: &str) {
        let max = self.max_failures;
        self.lock().remove(max, &key_of(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_millis(1_000_000 + s * 1000)
    }

    /// `times` failed logins of `email`, all at `when`.
    fn fail(t: &LoginThrottle, email: &str, times: usize, when: Timestamp) {
        for _ in 0..times {
            t.failed(email, when);
        }
    }

    #[test]
    fn locks_out_after_the_limit_until_the_window_ends() {
        let t = LoginThrottle::new(3, 60);
        for i in 0..3 {
            assert!(t.check("a@x.io", at(i)).is_ok());
            t.failed("a@x.io", at(i));
        }
        assert_eq!(t.check("a@x.io", at(10)), Err(50));
        assert_eq!(t.check(" A@X.io", at(10)), Err(50), "the normalised email");
        assert!(t.check("b@x.io", at(10)).is_ok(), "per email");
        assert!(t.check("a@x.io", at(60)).is_ok(), "the window ended");
        t.failed("a@x.io", at(61));
        assert!(
            t.check("a@x.io", at(62)).is_ok(),
            "a new window starts from one failure"
        );
        t.succeeded("a@x.io");
        assert!(t.check("a@x.io", at(63)).is_ok());
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn memory_stays_at_the_capacity_however_many_emails_fail() {
        let t = LoginThrottle::with_capacity(3, 60, 100);
        for i in 0..1000 {
            t.failed(&format!("user{i}@x.io"), at(1));
            assert!(t.tracked() <= 100);
        }
        assert_eq!(t.tracked(), 100);
        let inner = t.lock();
        assert_eq!((inner.by_rank.len(), inner.by_start.len()), (100, 100));
    }

    #[test]
    fn a_flood_of_new_emails_does_not_unlock_a_locked_out_one() {
        let t = LoginThrottle::with_capacity(3, 60, 10);
        for i in 0..3 {
            t.failed("victim@x.io", at(i));
        }
        assert!(t.check("victim@x.io", at(3)).is_err());
        // Half-way to a lockout on the victim's neighbours, then thousands of one-off
        // failures: the victim's lockout holds.
        for i in 0..2000 {
            t.failed(&format!("flood{i}@x.io"), at(4));
        }
        assert!(t.check("victim@x.io", at(5)).is_err(), "still locked out");
        // Evicting it takes locking out `capacity` others first.
        for i in 0..10 {
            fail(&t, &format!("locked{i}@x.io"), 3, at(6));
        }
        assert!(t.check("victim@x.io", at(7)).is_ok());
        assert_eq!(t.tracked(), 10);
    }

    #[test]
    fn ended_windows_make_room_before_anything_else() {
        let t = LoginThrottle::with_capacity(3, 60, 2);
        fail(&t, "old@x.io", 3, at(0));
        t.failed("one@x.io", at(30));
        // old@'s window has ended at 61: it goes, not one@ (fewer failures).
        t.failed("two@x.io", at(61));
        assert_eq!(t.tracked(), 2);
        t.failed("one@x.io", at(62));
        t.failed("one@x.io", at(63));
        assert!(t.check("one@x.io", at(64)).is_err(), "one@ kept its count");
    }
}
