//! The bookkeeping of the origin's model cache (our spec's algorithm cache): which
//! tenants' trained models are in memory, how many bytes each holds, which was used
//! least recently, and the counts `/metrics` and `/health` show. Pure: the caller
//! (`crate::tenant_host`) loads and drops the models; this type decides which go.
//!
//! The budget (`--model-cache-mb`) bounds the sum of the models' bytes. Admitting a
//! model evicts the least recently used others until the sum fits; a model larger
//! than the whole budget is still admitted alone (a tenant is never refused for
//! being big), with everything else evicted.

use std::collections::HashMap;

use contract::Tenant;
use serde::Serialize;

/// What `/health` shows of the cache, and what `/metrics` counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// The budget in bytes.
    pub budget_bytes: u64,
    /// Bytes of the models in the cache now.
    pub bytes: u64,
    /// Tenants whose model is in the cache now.
    pub tenants: u64,
    /// Requests for a tenant whose model was in the cache.
    pub hits: u64,
    /// Requests for a tenant whose model was not (each starts a load).
    pub misses: u64,
    /// Models dropped to make room.
    pub evictions: u64,
    /// Loads: a tenant's model brought into the cache (its popular lists answer; the
    /// full model replaces them without counting again).
    pub loads: u64,
    /// Seconds from a load's start until the tenant answered, summed over `loads`.
    pub load_seconds: f64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    last_used: u64,
}

/// The cache's entries and counts.
#[derive(Debug)]
pub struct ModelCache {
    budget: u64,
    entries: HashMap<Tenant, Entry>,
    /// Logical clock of uses (larger: more recent).
    tick: u64,
    stats: CacheStats,
}

impl ModelCache {
    /// An empty cache holding at most `budget_bytes` of models.
    pub fn new(budget_bytes: u64) -> Self {
        ModelCache {
            budget: budget_bytes,
            entries: HashMap::new(),
            tick: 0,
            stats: CacheStats {
                budget_bytes,
                ..CacheStats::default()
            },
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// A request for `tenant`: a hit (marked used now) when its model is in the cache,
    /// else a miss (the caller starts a load).
    pub fn request(&mut self, tenant: &Tenant) -> bool {
        let now = self.next_tick();
        match self.entries.get_mut(tenant) {
            Some(e) => {
                e.last_used = now;
                self.stats.hits += 1;
                true
            }
            None => {
                self.stats.misses += 1;
                false
            }
        }
    }

    /// Whether `tenant`'s model is in the cache (not counted as a use).
    pub fn contains(&self, tenant: &Tenant) -> bool {
        self.entries.contains_key(tenant)
    }

    /// Admits (or resizes) `tenant`'s model of `bytes`, marked used now, and gives the
    /// tenants evicted to make room, least recently used first. A first admission
    /// counts a load of `load_seconds`.
    pub fn admit(&mut self, tenant: &Tenant, bytes: u64, load_seconds: Option<f64>) -> Vec<Tenant> {
        let now = self.next_tick();
        self.entries.insert(
            tenant.clone(),
            Entry {
                bytes,
                last_used: now,
            },
        );
        if let Some(s) = load_seconds {
            self.stats.loads += 1;
            self.stats.load_seconds += s;
        }
        let mut evicted = Vec::new();
        while self.used() > self.budget && self.entries.len() > 1 {
            let Some(oldest) = self
                .entries
                .iter()
                .filter(|(t, _)| *t != tenant)
                .min_by_key(|(t, e)| (e.last_used, (*t).clone()))
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
            self.stats.evictions += 1;
            evicted.push(oldest);
        }
        evicted
    }

    /// Forgets `tenant` (deleted): not counted as an eviction.
    pub fn remove(&mut self, tenant: &Tenant) -> bool {
        self.entries.remove(tenant).is_some()
    }

    fn used(&self) -> u64 {
        self.entries.values().map(|e| e.bytes).sum()
    }

    /// The counts and the cache's current size.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.used(),
            tenants: self.entries.len() as u64,
            ..self.stats.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Tenant {
        Tenant::parse(s).unwrap()
    }

    #[test]
    fn the_least_recently_used_model_goes_first_and_counts_add_up() {
        let mut c = ModelCache::new(100);
        assert!(!c.request(&t("a")));
        assert!(c.admit(&t("a"), 40, Some(0.5)).is_empty());
        assert!(!c.request(&t("b")));
        assert!(c.admit(&t("b"), 40, Some(0.25)).is_empty());
        // `a` used again: `b` is now the least recently used.
        assert!(c.request(&t("a")));
        assert!(!c.request(&t("c")));
        assert_eq!(c.admit(&t("c"), 40, Some(0.25)), vec![t("b")]);
        assert!(c.contains(&t("a")) && c.contains(&t("c")) && !c.contains(&t("b")));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions, s.loads), (1, 3, 1, 3));
        assert_eq!((s.bytes, s.tenants, s.budget_bytes), (80, 2, 100));
        assert!((s.load_seconds - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_model_larger_than_the_budget_is_admitted_alone() {
        let mut c = ModelCache::new(100);
        c.admit(&t("a"), 10, Some(0.0));
        c.admit(&t("b"), 10, Some(0.0));
        let evicted = c.admit(&t("big"), 500, Some(0.0));
        assert_eq!(evicted, vec![t("a"), t("b")]);
        assert_eq!(c.stats().tenants, 1);
        assert!(c.contains(&t("big")));
    }

    #[test]
    fn resizing_a_model_may_evict_others_and_removing_is_not_an_eviction() {
        let mut c = ModelCache::new(100);
        c.admit(&t("a"), 30, Some(0.0));
        c.admit(&t("b"), 30, Some(0.0));
        // `b`'s full model replaces its popular list: bigger, no new load counted.
        assert_eq!(c.admit(&t("b"), 90, None), vec![t("a")]);
        assert_eq!(c.stats().loads, 2);
        assert!(c.remove(&t("b")));
        assert!(!c.remove(&t("b")));
        let s = c.stats();
        assert_eq!((s.evictions, s.tenants, s.bytes), (1, 0, 0));
    }
}
