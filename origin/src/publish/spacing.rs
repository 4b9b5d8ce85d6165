//! Workers KV takes at most one write per key per second. [`KeySpacing`] remembers when
//! each key was last written by this process (only for as long as that matters) and says
//! how long a write must wait so no key is written twice within the interval. A pure
//! type: the time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// KV's per-key write interval.
pub const KV_KEY_INTERVAL: Duration = Duration::from_secs(1);

/// When keys were last written, forgotten once the interval has passed.
#[derive(Debug)]
pub struct KeySpacing {
    interval: Duration,
    last: HashMap<String, Instant>,
    /// (written at, key), oldest first: what to forget.
    order: VecDeque<(Instant, String)>,
}

impl KeySpacing {
    pub fn new(interval: Duration) -> Self {
        KeySpacing {
            interval,
            last: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// How long to wait from `now` before writing all of `keys`, which are then counted
    /// as written at `now` plus that wait.
    pub fn reserve<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> Duration {
        self.forget_before(now);
        let keys: Vec<&str> = keys.into_iter().collect();
        let wait = keys
            .iter()
            .filter_map(|k| self.last.get(*k))
            .map(|&at| (at + self.interval).saturating_duration_since(now))
            .max()
            .unwrap_or(Duration::ZERO);
        let at = now + wait;
        for k in keys {
            self.last.insert(k.to_owned(), at);
            self.order.push_back((at, k.to_owned()));
        }
        wait
    }

    /// Keys remembered (written within the interval before the last reservation).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at + self.interval > now {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // A later write of the same key keeps its own entry.
                if self.last.get(&key) == Some(&at) {
                    self.last.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_written_again_within_the_interval_waits_for_the_rest_of_it() {
        let mut s = KeySpacing::new(KV_KEY_INTERVAL);
        let t0 = Instant::now();
        assert_eq!(s.reserve(["a", "b"], t0), Duration::ZERO);
        assert_eq!(
            s.reserve(["c"], t0),
            Duration::ZERO,
            "other keys never wait"
        );
        let wait = s.reserve(["x", "a"], t0 + Duration::from_millis(300));
        assert_eq!(wait, Duration::from_millis(700));
        // "a" now counts as written at t0 + 1 s.
        let wait = s.reserve(["a"], t0 + Duration::from_millis(1500));
        assert_eq!(wait, Duration::from_millis(500));
    }

    #[test]
    fn keys_are_forgotten_once_the_interval_has_passed() {
        let mut s = KeySpacing::new(KV_KEY_INTERVAL);
        let t0 = Instant::now();
        let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        s.reserve(keys.iter().map(String::as_str), t0);
        assert_eq!(s.len(), 10_000);
        assert_eq!(
            s.reserve(["k1"], t0 + Duration::from_secs(2)),
            Duration::ZERO
        );
        assert_eq!(s.len(), 1, "only the key written last is remembered");
    }
}
