//! What one isolate remembers between requests: a circuit breaker per origin, the
//! GeoIP database (loaded from KV once), fetches in flight (for coalescing), each
//! tenant's KV generation, and counters shown by `/health`. Workers isolates are
//! single-threaded, so `thread_local!` + `RefCell` is enough.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use contract::keys::GenerationPointer;

use crate::breaker::{Breaker, BreakerConfig, Permit};
use crate::chain::TierFailure;
use crate::geo::GeoDb;
use crate::hot_cache::HotCache;
use crate::impressions::ImpressionBuffer;

/// The result slot of a fetch in flight, which other requests for the same URL wait
/// on. Waiters poll it with their own timers instead of awaiting the leader's promise:
/// workerd cancels a request that waits on I/O of another request as hung.
pub type InFlight = Rc<RefCell<Option<Result<(u16, String), TierFailure>>>>;

/// The GeoIP database of this isolate.
pub enum GeoState {
    NotLoaded,
    Loaded {
        db: Rc<GeoDb>,
        load_ms: f64,
    },
    /// Absent or invalid in KV; retried after `retry_after_ms`.
    Missing {
        reason: String,
        retry_after_ms: f64,
    },
}

/// Counters for `/health` (per isolate, since it started).
#[derive(Default)]
pub struct Counters {
    pub origin_fetches: Cell<u64>,
    pub coalesced: Cell<u64>,
    pub breaker_skips: Cell<u64>,
    pub background_refreshes: Cell<u64>,
    pub stale_served: Cell<u64>,
    pub popular_served: Cell<u64>,
}

impl Counters {
    pub fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

thread_local! {
    pub static BREAKERS: RefCell<HashMap<String, Breaker>> = RefCell::new(HashMap::new());
    pub static IN_FLIGHT: RefCell<HashMap<String, InFlight>> = RefCell::new(HashMap::new());
    pub static GENERATIONS: RefCell<HashMap<String, (Option<GenerationPointer>, f64)>> = RefCell::new(HashMap::new());
    pub static GEO: RefCell<GeoState> = const { RefCell::new(GeoState::NotLoaded) };
    pub static COUNTERS: Counters = Counters::default();
    pub static HOT: RefCell<Option<HotCache>> = const { RefCell::new(None) };
    pub static IMPRESSIONS: RefCell<ImpressionBuffer> = RefCell::new(ImpressionBuffer::default());
    pub static UNKNOWN_TENANTS: RefCell<crate::unknown_tenants::UnknownTenants> = RefCell::new(crate::unknown_tenants::UnknownTenants::default());
}

/// Runs `f` on the isolate's hot cache, creating it from the config on first use.
pub fn with_hot<T>(capacity: usize, ttl_s: u64, f: impl FnOnce(&mut HotCache) -> T) -> T {
    HOT.with(|h| {
        let mut h = h.borrow_mut();
        let cache = h.get_or_insert_with(|| HotCache::new(capacity, ttl_s as f64 * 1000.0));
        f(cache)
    })
}

/// Asks the breaker of `origin_url` whether a request may go now.
pub fn breaker_permit(origin_url: &str, config: BreakerConfig, now_ms: f64) -> Permit {
    BREAKERS.with(|b| {
        let mut b = b.borrow_mut();
        let breaker = b
            .entry(origin_url.to_string())
            .or_insert_with(|| Breaker::new(config));
        breaker.config = config;
        breaker.permit(now_ms)
    })
}

/// Reports an origin's answer to its breaker.
pub fn breaker_report(origin_url: &str, config: BreakerConfig, ok: bool, now_ms: f64) {
    BREAKERS.with(|b| {
        let mut b = b.borrow_mut();
        let breaker = b
            .entry(origin_url.to_string())
            .or_insert_with(|| Breaker::new(config));
        if ok {
            breaker.on_success()
        } else {
            breaker.on_failure(now_ms)
        }
    })
}

/// For a write every breaker of `urls` refused: lets it through to the origin refusing
/// longest ([`crate::breaker::last_resort`]) as that breaker's probe; its index.
pub fn force_last_resort<'a>(urls: impl Iterator<Item = &'a str>, now_ms: f64) -> Option<usize> {
    let urls: Vec<&str> = urls.collect();
    BREAKERS.with(|b| {
        let mut b = b.borrow_mut();
        let pick = {
            let breakers: Option<Vec<&Breaker>> = urls.iter().map(|u| b.get(*u)).collect();
            crate::breaker::last_resort(&breakers?)?
        };
        b.get_mut(urls[pick])?.force_probe(now_ms);
        Some(pick)
    })
}

/// `(url, state, skipped, opened)` of every breaker, for `/health`.
pub fn breaker_snapshot() -> Vec<(String, &'static str, u64, u64)> {
    BREAKERS.with(|b| {
        let mut v: Vec<_> = b
            .borrow()
            .iter()
            .map(|(url, br)| (url.clone(), br.state.name(), br.skipped, br.opened))
            .collect();
        v.sort();
        v
    })
}
