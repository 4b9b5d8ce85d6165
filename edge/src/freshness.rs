//! Fresh, stale or expired: what a stored document may still be used for at a given
//! time, and how long the edge cache may keep it. Time is passed in (unix seconds).

use contract::RecommendationDoc;

/// What a document is good for at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// May be served as fresh for `remaining_s` more seconds.
    Fresh { remaining_s: u64 },
    /// Past freshness but within `stale_for_s`: only as a last resort, marked stale.
    Stale { age_past_fresh_s: u64 },
    /// Past `stale_for_s` too: never served.
    Expired,
}

impl Freshness {
    pub fn of(doc: &RecommendationDoc, now_s: u64) -> Self {
        let fresh_until = doc.fresh_until();
        if now_s < fresh_until {
            Freshness::Fresh {
                remaining_s: fresh_until - now_s,
            }
        } else if now_s < doc.stale_until() {
            Freshness::Stale {
                age_past_fresh_s: now_s - fresh_until,
            }
        } else {
            Freshness::Expired
        }
    }

    pub fn is_fresh(self) -> bool {
        matches!(self, Freshness::Fresh { .. })
    }
}

/// Seconds the edge cache may keep a document that is fresh now: as long as it stays
/// usable (fresh, then stale for stale-while-revalidate), capped by the configured
/// TTL. `None` when it must not be cached (not fresh now, or TTL 0). The cache only
/// bounds how long a copy is kept; every hit is judged again by [`Freshness::of`].
pub fn edge_cache_ttl(doc: &RecommendationDoc, now_s: u64, max_ttl_s: u64) -> Option<u64> {
    match Freshness::of(doc, now_s) {
        Freshness::Fresh { .. } => {
            Some(doc.stale_until().saturating_sub(now_s).min(max_ttl_s)).filter(|&t| t > 0)
        }
        _ => None,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    use crate::test_support::doc;

    #[test]
    fn a_document_is_fresh_then_stale_then_expired() {
        let d = doc(1000, 300, 100);
        assert_eq!(
            Freshness::of(&d, 1000),
            Freshness::Fresh { remaining_s: 300 }
        );
        assert_eq!(Freshness::of(&d, 1299), Freshness::Fresh { remaining_s: 1 });
        assert_eq!(
            Freshness::of(&d, 1300),
            Freshness::Stale {
                age_past_fresh_s: 0
            }
        );
        assert_eq!(Freshness::of(&d, 1400), Freshness::Expired);
    }

    #[test]
    fn documents_from_the_future_count_as_fresh_for_their_full_window_only() {
        let d = doc(2000, 10, 0);
        assert_eq!(
            Freshness::of(&d, 1000),
            Freshness::Fresh { remaining_s: 1010 }
        );
    }

    #[test]
    fn cache_ttl_is_capped_by_config_and_by_the_stale_window() {
        let d = doc(1000, 300, 100);
        assert_eq!(edge_cache_ttl(&d, 1000, 60), Some(60));
        assert_eq!(edge_cache_ttl(&d, 1290, 60), Some(60));
        assert_eq!(edge_cache_ttl(&d, 1290, 600), Some(110));
        assert_eq!(edge_cache_ttl(&d, 1300, 60), None);
        assert_eq!(edge_cache_ttl(&d, 1000, 0), None);
    }
}
