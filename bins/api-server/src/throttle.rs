//! Failed-login throttling: after `auth.max_failed_logins` failures for one email within
//! `auth.lockout_secs`, further attempts answer 429 until the window ends, whatever the
//! password. A success clears the count. Counted in memory, per process.

use std::collections::HashMap;
use std::sync::Mutex;

use ledger_core::Timestamp;

#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window_ms: i64,
    attempts: Mutex<HashMap<String, (u32, i64)>>,
}

/// Entries kept before expired ones are swept.
const SWEEP_ABOVE: usize = 10_000;

impl LoginThrottle {
    pub fn new(max_failures: u32, window_secs: u64) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            window_ms: window_secs as i64 * 1000,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, i64)>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(seconds to wait)` when `key` is locked out at `now`.
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        match self.lock().get(key) {
            Some(&(failures, since))
                if failures >= self.max_failures && now.millis() - since < self.window_ms =>
            {
                let left_ms = self.window_ms - (now.millis() - since);
                Err((left_ms as u64).div_ceil(1000).max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, key: &str, now: Timestamp) {
        let mut map = self.lock();
        if map.len() > SWEEP_ABOVE {
            let window = self.window_ms;
            map.retain(|_, (_, since)| now.millis() - *since < window);
        }
        let entry = map.entry(key.to_owned()).or_insert((0, now.millis()));
        if now.millis() - entry.1 >= self.window_ms {
            *entry = (0, now.millis());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_the_limit_until_the_window_ends() {
        let t = LoginThrottle::new(3, 60);
        let at = |s: i64| Timestamp::from_millis(1_000_000 + s * 1000);
        for i in 0..3 {
            assert!(t.check("a@x.io", at(i)).is_ok());
            t.failed("a@x.io", at(i));
        }
        assert_eq!(t.check("a@x.io", at(10)), Err(50));
        assert!(t.check("b@x.io", at(10)).is_ok(), "per email");
        assert!(t.check("a@x.io", at(60)).is_ok(), "the window ended");
        t.failed("a@x.io", at(61));
        assert!(
            t.check("a@x.io", at(62)).is_ok(),
            "a new window starts from one failure"
        );
        t.succeeded("a@x.io");
        assert!(t.check("a@x.io", at(63)).is_ok());
    }
}
