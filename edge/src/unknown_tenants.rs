//! Tenants the origin said do not exist, remembered for a while in the isolate, so a
//! request naming one is answered `404 unknown_tenant` at the edge without asking the
//! origin again (a client looping over made-up tenants costs one origin call per tenant
//! per [`UNKNOWN_FOR_MS`]). Pure: the time is passed in.
//!
//! The memory is bounded ([`MAX_REMEMBERED`]; the entry closest to its end goes first)
//! and per isolate. A tenant created meanwhile is found at the latest when its entry
//! ends; publishing a tenant through this isolate forgets the entry at once.

use std::collections::HashMap;

/// How long an unknown tenant is answered from memory, in milliseconds.
pub const UNKNOWN_FOR_MS: f64 = 60_000.0;
/// Tenants remembered at most.
pub const MAX_REMEMBERED: usize = 1024;

/// Unknown tenants and when each entry ends (unix ms).
#[derive(Debug, Default)]
pub struct UnknownTenants {
    until: HashMap<String, f64>,
}

impl UnknownTenants {
    /// Whether `tenant` is known not to exist at `now_ms`.
    pub fn is_unknown(&self, tenant: &str, now_ms: f64) -> bool {
        self.until.get(tenant).is_some_and(|&u| now_ms < u)
    }

    /// Remembers that the origin said `tenant` does not exist, at `now_ms`.
    pub fn remember(&mut self, tenant: &str, now_ms: f64) {
        self.until.retain(|_, &mut u| u > now_ms);
        if self.until.len() >= MAX_REMEMBERED && !self.until.contains_key(tenant) {
            let soonest = self
                .until
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(t, _)| t.clone());
            if let Some(t) = soonest {
                self.until.remove(&t);
            }
        }
        self.until
            .insert(tenant.to_owned(), now_ms + UNKNOWN_FOR_MS);
    }

    /// Forgets `tenant` (it was just published, so it exists).
    pub fn forget(&mut self, tenant: &str) {
        self.until.remove(tenant);
    }

    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

/// Whether an origin's answer says the tenant does not exist: a 404 whose JSON error
/// code is `unknown_tenant` (a 404 for anything else is not).
pub fn says_unknown_tenant(status: u16, body: &str) -> bool {
    status == 404
        && serde_json::from_str::<contract::ErrorBody>(body)
            .is_ok_and(|e| e.error.code == "unknown_tenant")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_tenant_is_remembered_for_a_while_then_asked_again() {
        let mut u = UnknownTenants::default();
        assert!(!u.is_unknown("ghost", 0.0));
        u.remember("ghost", 1_000.0);
        assert!(u.is_unknown("ghost", 1_000.0 + UNKNOWN_FOR_MS - 1.0));
        assert!(!u.is_unknown("ghost", 1_000.0 + UNKNOWN_FOR_MS));
        assert!(!u.is_unknown("other", 1_000.0));
        u.forget("ghost");
        assert!(!u.is_unknown("ghost", 1_001.0));
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut u = UnknownTenants::default();
        for i in 0..(MAX_REMEMBERED * 3) {
            u.remember(&format!("t{i}"), i as f64);
        }
        assert_eq!(u.len(), MAX_REMEMBERED);
        let last = MAX_REMEMBERED * 3 - 1;
        assert!(u.is_unknown(&format!("t{last}"), last as f64));
        assert!(!u.is_unknown("t0", last as f64), "the oldest went first");
    }

    #[test]
    fn only_an_unknown_tenant_error_counts() {
        let body = r#"{"error":{"code":"unknown_tenant","message":"no tenant \"x\""}}"#;
        assert!(says_unknown_tenant(404, body));
        assert!(!says_unknown_tenant(
            404,
            r#"{"error":{"code":"not_found","message":"no"}}"#
        ));
        assert!(!says_unknown_tenant(404, "not json"));
        assert!(!says_unknown_tenant(503, body));
    }
}
