//! Tenant names as metric labels with bounded cardinality: the busiest `named` tenants
//! of the last window keep their name, every other tenant is `other`, so 100,000
//! tenants make at most `named + 1` new series per metric and window (the series of a
//! name no longer named keeps its last value until the process restarts). Pure: given
//! the time.
//!
//! Requests are counted per tenant in the current window with the space-saving
//! algorithm (Metwally et al.): at most `4 × named` counters; a tenant not counted
//! when the table is full takes the smallest counter's place (and count + 1), so any
//! tenant with more than `1 / (4 × named)` of a window's requests is surely counted.
//! When a window ends, its `named` highest counters become the names of the next
//! window. A tenant that becomes busy is named from the next window on (its series
//! start then); one that goes quiet goes back to `other`.

use std::collections::{BTreeSet, HashMap};

/// The label of tenants without their own.
pub const OTHER: &str = "other";

/// Which tenants are labelled by name (see the module docs).
#[derive(Debug, Clone)]
pub struct TenantLabels {
    named: usize,
    window_s: u64,
    window_start: u64,
    counts: HashMap<String, u64>,
    current: BTreeSet<String>,
    /// Whether a window has ended yet: until then tenants are named as they come.
    rolled: bool,
}

impl TenantLabels {
    /// `named` tenants by name, chosen again every `window_s` seconds; starts at `now`.
    pub fn new(named: usize, window_s: u64, now: u64) -> Self {
        TenantLabels {
            named,
            window_s: window_s.max(1),
            window_start: now,
            counts: HashMap::new(),
            current: BTreeSet::new(),
            rolled: false,
        }
    }

    /// Counts one request of `tenant` at `now` and gives its label.
    pub fn label(&mut self, tenant: &str, now: u64) -> String {
        if now >= self.window_start + self.window_s {
            self.roll(now);
        }
        self.count(tenant);
        if self.current.contains(tenant) {
            return tenant.to_owned();
        }
        // The first window names tenants as they come (a one-tenant origin is labelled
        // by its name at once); later ones only the last window's busiest.
        if !self.rolled && self.current.len() < self.named {
            self.current.insert(tenant.to_owned());
            return tenant.to_owned();
        }
        OTHER.to_owned()
    }

    fn count(&mut self, tenant: &str) {
        if let Some(c) = self.counts.get_mut(tenant) {
            *c += 1;
            return;
        }
        if self.counts.len() < self.capacity() {
            self.counts.insert(tenant.to_owned(), 1);
            return;
        }
        // Space-saving: the smallest counter's place, with its count + 1.
        if let Some((smallest, n)) = self
            .counts
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(k, v)| (k.clone(), *v))
        {
            self.counts.remove(&smallest);
            self.counts.insert(tenant.to_owned(), n + 1);
        }
    }

    fn capacity(&self) -> usize {
        self.named.saturating_mul(4).max(1)
    }

    /// Ends the window: its busiest `named` tenants are the next window's names.
    fn roll(&mut self, now: u64) {
        let mut ranked: Vec<(String, u64)> = self.counts.drain().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.current = ranked
            .into_iter()
            .take(self.named)
            .map(|(t, _)| t)
            .collect();
        self.rolled = true;
        self.window_start = now - (now - self.window_start) % self.window_s;
    }

    /// The tenants labelled by name now.
    pub fn named(&self) -> &BTreeSet<String> {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_tenant_is_named_at_once() {
        let mut l = TenantLabels::new(3, 60, 1000);
        assert_eq!(l.label("shop", 1000), "shop");
        assert_eq!(l.label("shop", 1100), "shop", "and after the window");
    }

    #[test]
    fn the_busiest_of_the_last_window_keep_their_names_the_rest_are_other() {
        let mut l = TenantLabels::new(2, 60, 0);
        for t in ["a", "b"] {
            assert_eq!(l.label(t, 1), t, "the first window names as they come");
        }
        assert_eq!(l.label("c", 1), OTHER, "two names at most");
        for _ in 0..50 {
            l.label("c", 2);
            l.label("d", 2);
        }
        l.label("a", 3);
        // Next window: c and d were the busiest.
        assert_eq!(l.label("c", 61), "c");
        assert_eq!(l.label("d", 61), "d");
        assert_eq!(l.label("a", 61), OTHER);
        assert_eq!(l.named().len(), 2);
    }

    #[test]
    fn many_tenants_make_at_most_named_plus_one_labels_and_a_heavy_one_is_found() {
        let mut l = TenantLabels::new(10, 60, 0);
        for window in 0..3u64 {
            let mut labels = BTreeSet::new();
            for i in 0..100_000u64 {
                let t = if i % 5 == 0 {
                    "heavy".to_string()
                } else {
                    format!("t{i}")
                };
                labels.insert(l.label(&t, window * 60 + i * 60 / 100_000));
            }
            assert!(
                labels.len() <= 11,
                "window {window}: {} labels",
                labels.len()
            );
        }
        assert!(l.named().contains("heavy"), "{:?}", l.named());
        assert!(l.counts.len() <= 40);
    }
}
