//! A small in-isolate memory cache in front of the Cache API.
//!
//! An isolate serves many requests; keeping the hottest documents in its memory for a
//! few seconds saves the Cache API round trip on most hits. Entries live at most
//! `ttl_ms` and never past their document's freshness, so a purge handled by another
//! isolate is visible everywhere within `HOT_CACHE_S` seconds (the purging isolate drops
//! its entry at once). Bounded to `capacity` entries; time is passed in.

use std::collections::HashMap;

use contract::RecommendationDoc;

#[derive(Debug)]
struct Entry {
    doc: RecommendationDoc,
    expires_ms: f64,
    inserted_ms: f64,
}

#[derive(Debug)]
pub struct HotCache {
    entries: HashMap<String, Entry>,
    capacity: usize,
    ttl_ms: f64,
}

impl HotCache {
    pub fn new(capacity: usize, ttl_ms: f64) -> Self {
        HotCache {
            entries: HashMap::new(),
            capacity,
            ttl_ms,
        }
    }

    /// The document under `key`, if it is there and not expired.
    pub fn get(&mut self, key: &str, now_ms: f64) -> Option<RecommendationDoc> {
        match self.entries.get(key) {
            Some(e) if now_ms < e.expires_ms => Some(e.doc.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `doc` for at most the TTL and never past its freshness.
    pub fn put(&mut self, key: &str, doc: &RecommendationDoc, now_ms: f64) {
        if self.capacity == 0 || self.ttl_ms <= 0.0 {
            return;
        }
        let fresh_until_ms = doc.fresh_until() as f64 * 1000.0;
        let expires_ms = (now_ms + self.ttl_ms).min(fresh_until_ms);
        if expires_ms <= now_ms {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(key) {
            self.evict(now_ms);
        }
        self.entries.insert(
            key.to_string(),
            Entry {
                doc: doc.clone(),
                expires_ms,
                inserted_ms: now_ms,
            },
        );
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired entries; if that frees nothing, the oldest quarter.
    fn evict(&mut self, now_ms: f64) {
        self.entries.retain(|_, e| now_ms < e.expires_ms);
        if self.entries.len() < self.capacity {
            return;
        }
        let mut ages: Vec<f64> = self.entries.values().map(|e| e.inserted_ms).collect();
        ages.sort_by(|a, b| a.total_cmp(b));
        let cutoff = ages[(ages.len() / 4).min(ages.len() - 1)];
        self.entries.retain(|_, e| e.inserted_ms > cutoff);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(generated_at: u64, fresh: u64) -> RecommendationDoc {
        crate::test_support::doc(generated_at, fresh, 0)
    }

    #[test]
    fn entries_live_for_the_ttl_at_most() {
        let mut c = HotCache::new(10, 5000.0);
        c.put("k", &doc(0, 1000), 1000.0);
        assert!(c.get("k", 5999.0).is_some());
        assert!(c.get("k", 6000.0).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn entries_never_outlive_their_documents_freshness() {
        let mut c = HotCache::new(10, 60_000.0);
        c.put("k", &doc(0, 10), 8000.0);
        assert!(c.get("k", 9999.0).is_some());
        assert!(c.get("k", 10_000.0).is_none());
        c.put("stale", &doc(0, 10), 11_000.0);
        assert!(c.get("stale", 11_000.0).is_none());
    }

    #[test]
    fn removal_and_zero_capacity_mean_no_hits() {
        let mut c = HotCache::new(10, 5000.0);
        c.put("k", &doc(0, 1000), 0.0);
        c.remove("k");
        assert!(c.get("k", 1.0).is_none());
        let mut off = HotCache::new(0, 5000.0);
        off.put("k", &doc(0, 1000), 0.0);
        assert!(off.get("k", 1.0).is_none());
    }

    proptest! {
        #[test]
        fn the_cache_never_grows_past_its_capacity(keys in proptest::collection::vec(0u32..500, 1..400), cap in 1usize..50) {
            let mut c = HotCache::new(cap, 1e9);
            for (t, k) in keys.iter().enumerate() {
                c.put(&k.to_string(), &doc(0, 1_000_000), t as f64);
                prop_assert!(c.len() <= cap);
            }
        }
    }
}
