//! A circuit breaker per origin: closed → open after `failure_threshold` consecutive
//! failures → half-open (one probe) after `open_for_ms` → closed on the probe's
//! success or open again on its failure. While open, the origin is skipped without
//! waiting for a timeout. Time is passed in (milliseconds); the glue keeps one breaker
//! per origin URL per isolate.
//!
//! Reads have fallbacks (stale copies, popular lists), writes do not: when every origin
//! of a write's region is open, [`last_resort`] picks the one that has been refusing
//! longest and the write goes there anyway as its probe ([`Breaker::force_probe`]). A
//! region whose only origin was down for 5 s thus takes writes again as soon as it is
//! back, not `BREAKER_OPEN_S` later; while it is down, each such write costs one failed
//! attempt, which is all it could have had anyway.

/// Breaker settings (`BREAKER_FAILURES`, `BREAKER_OPEN_S`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub open_for_ms: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for_ms: 60_000.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        since_ms: f64,
    },
    /// One probe is in flight since `probe_started_ms`.
    HalfOpen {
        probe_started_ms: f64,
    },
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

/// Whether a request may go to the origin now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Allow,
    /// The probe of a half-open breaker.
    Probe,
    /// Skip the origin: its breaker is open.
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    pub state: BreakerState,
    pub config: BreakerConfig,
    /// Requests skipped while open (for `/health`).
    pub skipped: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
            config,
            skipped: 0,
            opened: 0,
        }
    }

    pub fn permit(&mut self, now_ms: f64) -> Permit {
        match self.state {
            BreakerState::Closed { .. } => Permit::Allow,
            BreakerState::Open { since_ms } if now_ms - since_ms >= self.config.open_for_ms => {
                self.state = BreakerState::HalfOpen {
                    probe_started_ms: now_ms,
                };
                Permit::Probe
            }
            // A probe that never reported back (isolate evicted mid-request) is replaced.
            BreakerState::HalfOpen { probe_started_ms }
                if now_ms - probe_started_ms >= self.config.open_for_ms =>
            {
                self.state = BreakerState::HalfOpen {
                    probe_started_ms: now_ms,
                };
                Permit::Probe
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.skipped += 1;
                Permit::Deny
            }
        }
    }

    /// Since when the breaker has been refusing requests (open, or probing), in ms;
    /// `None` while closed.
    pub fn refusing_since(&self) -> Option<f64> {
        match self.state {
            BreakerState::Closed { .. } => None,
            BreakerState::Open { since_ms } => Some(since_ms),
            BreakerState::HalfOpen { probe_started_ms } => Some(probe_started_ms),
        }
    }

    /// Lets one request through although the breaker refuses: a write's last resort.
    /// It is the breaker's probe: its result closes or reopens it.
    pub fn force_probe(&mut self, now_ms: f64) {
        self.state = BreakerState::HalfOpen {
            probe_started_ms: now_ms,
        };
    }

    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }

    pub fn on_failure(&mut self, now_ms: f64) {
        self.state = match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } if consecutive_failures + 1 < self.config.failure_threshold => BreakerState::Closed {
                consecutive_failures: consecutive_failures + 1,
            },
            BreakerState::Open { since_ms } => BreakerState::Open { since_ms },
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                self.opened += 1;
                BreakerState::Open { since_ms: now_ms }
            }
        };
    }
}

/// For a write every candidate refused: the index of the breaker that has been refusing
/// longest (`None` when the list is empty or some breaker is closed, so it was not
/// refused).
pub fn last_resort(breakers: &[&Breaker]) -> Option<usize> {
    let since: Option<Vec<f64>> = breakers.iter().map(|b| b.refusing_since()).collect();
    since?
        .into_iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for_ms: 1000.0,
        })
    }

    #[test]
    fn it_opens_after_consecutive_failures_and_skips_while_open() {
        let mut b = breaker();
        for t in 0..2 {
            assert_eq!(b.permit(t as f64), Permit::Allow);
            b.on_failure(t as f64);
        }
        assert_eq!(
            b.state,
            BreakerState::Closed {
                consecutive_failures: 2
            }
        );
        b.on_failure(2.0);
        assert_eq!(b.state, BreakerState::Open { since_ms: 2.0 });
        assert_eq!(b.permit(500.0), Permit::Deny);
        assert_eq!((b.skipped, b.opened), (1, 1));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut b = breaker();
        b.on_failure(0.0);
        b.on_failure(0.0);
        b.on_success();
        b.on_failure(0.0);
        assert_eq!(
            b.state,
            BreakerState::Closed {
                consecutive_failures: 1
            }
        );
    }

    #[test]
    fn after_the_wait_one_probe_goes_and_its_result_decides() {
        let mut b = breaker();
        (0..3).for_each(|_| b.on_failure(0.0));
        assert_eq!(b.permit(1000.0), Permit::Probe);
        assert_eq!(b.permit(1001.0), Permit::Deny, "only one probe at a time");
        b.on_failure(1002.0);
        assert_eq!(b.state, BreakerState::Open { since_ms: 1002.0 });
        assert_eq!(b.permit(2002.0), Permit::Probe);
        b.on_success();
        assert_eq!(b.permit(2003.0), Permit::Allow);
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_wait() {
        let mut b = breaker();
        (0..3).for_each(|_| b.on_failure(0.0));
        assert_eq!(b.permit(1000.0), Permit::Probe);
        assert_eq!(b.permit(2000.0), Permit::Probe);
    }

    #[test]
    fn the_last_resort_is_the_breaker_that_has_refused_longest() {
        let (mut a, mut b) = (breaker(), breaker());
        (0..3).for_each(|_| b.on_failure(100.0));
        (0..3).for_each(|_| a.on_failure(200.0));
        assert_eq!(last_resort(&[&a, &b]), Some(1));
        assert_eq!(last_resort(&[&a, &breaker()]), None, "one is closed");
        assert_eq!(last_resort(&[]), None);
    }

    #[test]
    fn a_write_gets_through_once_the_only_origin_is_back_not_a_wait_later() {
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 5,
            open_for_ms: 60_000.0,
        });
        // A 5 s outage: writes fail and open the breaker.
        for t in 0..5 {
            assert_eq!(b.permit(t as f64 * 100.0), Permit::Allow);
            b.on_failure(t as f64 * 100.0);
        }
        assert_eq!(b.permit(1_000.0), Permit::Deny);
        // Still down at 3 s: the last-resort attempt fails and reopens it.
        assert_eq!(last_resort(&[&b]), Some(0));
        b.force_probe(3_000.0);
        b.on_failure(3_100.0);
        assert_eq!(b.state, BreakerState::Open { since_ms: 3_100.0 });
        // Back at 5 s, 55 s before the breaker would let a probe through by itself.
        assert_eq!(b.permit(5_500.0), Permit::Deny);
        assert_eq!(last_resort(&[&b]), Some(0));
        b.force_probe(5_500.0);
        b.on_success();
        assert_eq!(b.permit(5_600.0), Permit::Allow);
    }

    proptest! {
        #[test]
        fn an_open_breaker_denies_until_its_wait_has_passed(events in proptest::collection::vec((any::<bool>(), 0u32..400), 1..60)) {
            let mut b = breaker();
            let mut now = 0.0;
            for (ok, dt) in events {
                now += dt as f64;
                let before = b.state;
                let permit = b.permit(now);
                if let BreakerState::Open { since_ms } = before {
                    prop_assert_eq!(permit == Permit::Deny, now - since_ms < 1000.0);
                }
                if permit != Permit::Deny {
                    if ok { b.on_success() } else { b.on_failure(now) }
                }
                if let BreakerState::Closed { consecutive_failures } = b.state {
                    prop_assert!(consecutive_failures < 3);
                }
            }
        }
    }
}
