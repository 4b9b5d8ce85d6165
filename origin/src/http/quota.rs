//! The served tenant's quotas on the API ([`crate::tenants::quota`] enforced here):
//! every tenant-facing request (recommendations, popular lists, events, impressions)
//! takes a request token, and an events batch is counted against the day's events
//! before it is stored. Over a quota the answer is `429 quota_exceeded` naming it, with
//! `Retry-After`; a refused batch stores nothing.
//!
//! An origin enforces the quotas of its tenant when the registry holds that tenant
//! (`origin tenants create`); a tenant not in the registry (a single-tenant
//! deployment, `make dev`) has none. `origin serve` reloads the quotas and adopts the
//! store's count of today's events every [`QUOTA_SYNC`].
//!
//! Every metered request is counted in `origin_tenant_requests_total{tenant}` (and a
//! refusal in `origin_quota_exceeded_total{quota,tenant}`), the tenant labelled with
//! bounded cardinality ([`TenantLabels`]: the [`NAMED_TENANTS`] busiest, the rest
//! `other`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::snapshot::now_unix;
use crate::tenants::labels::TenantLabels;
use crate::tenants::quota::{QuotaExceeded, QuotaMeter, Usage};
use crate::tenants::Quotas;
use crate::tenants::{TenantError, Tenants};

use super::ApiError;

/// How often a serving origin reloads its tenant's quotas and today's stored events.
pub const QUOTA_SYNC: Duration = Duration::from_secs(5);
/// Tenants labelled by name in the per-tenant metrics (the rest are `other`).
pub const NAMED_TENANTS: usize = 100;
/// How often the named tenants are chosen again (the busiest of the last window).
pub const LABEL_WINDOW_S: u64 = 300;

/// The served tenant's meter, shared by the requests of a process; cheap to clone.
/// Without quotas (the tenant is not in the registry) everything is admitted.
#[derive(Debug, Clone)]
pub struct QuotaGuard {
    tenant: String,
    meter: Arc<Mutex<Option<QuotaMeter>>>,
    /// Tenant names as metric labels, bounded (shared by every tenant's guard).
    labels: Arc<Mutex<TenantLabels>>,
    /// The monotonic clock's zero (the meter's bucket counts seconds from it).
    epoch: Instant,
    /// Whether a metered request came since the last sync (an idle tenant's sync
    /// skips the registry and the store: thousands of idle tenants cost no queries).
    active: Arc<std::sync::atomic::AtomicBool>,
}

impl QuotaGuard {
    /// A guard for `tenant`, with `quotas` when it has some.
    pub fn new(tenant: &str, quotas: Option<Quotas>) -> Self {
        let guard = QuotaGuard {
            tenant: tenant.to_owned(),
            meter: Arc::new(Mutex::new(None)),
            labels: Arc::new(Mutex::new(TenantLabels::new(
                NAMED_TENANTS,
                LABEL_WINDOW_S,
                now_unix(),
            ))),
            epoch: Instant::now(),
            active: Arc::default(),
        };
        guard.set_quotas(quotas);
        guard
    }

    /// A guard for another `tenant` of the process, sharing this one's metric labels
    /// (so the bound on labelled tenants holds across tenants).
    pub fn for_tenant(&self, tenant: &str, quotas: Option<Quotas>) -> Self {
        let guard = QuotaGuard {
            tenant: tenant.to_owned(),
            meter: Arc::new(Mutex::new(None)),
            labels: self.labels.clone(),
            epoch: Instant::now(),
            active: Arc::default(),
        };
        guard.set_quotas(quotas);
        guard
    }

    /// This tenant's label in the per-tenant metrics, counting one request.
    pub fn label(&self) -> String {
        self.active
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        labels.label(&self.tenant, now_unix())
    }

    fn now_s(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Option<QuotaMeter>) -> R) -> R {
        let mut meter = self.meter.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut meter)
    }

    pub fn admit_request(&self) -> Result<(), QuotaExceeded> {
        let now = self.now_s();
        self.with(|m| m.as_mut().map_or(Ok(()), |m| m.admit_request(now)))
    }

    pub fn admit_events(&self, batch: u64) -> Result<(), QuotaExceeded> {
        self.with(|m| {
            m.as_mut()
                .map_or(Ok(()), |m| m.admit_events(batch, now_unix()))
        })
    }

    /// Whether a batch with these distinct ids fits without asking the store.
    pub fn room_for(&self, users: u64, items: u64) -> bool {
        self.with(|m| m.as_ref().is_none_or(|m| m.room_for(users, items)))
    }

    pub fn admit_stored(&self, new_users: u64, new_items: u64) -> Result<(), QuotaExceeded> {
        self.with(|m| {
            m.as_mut()
                .map_or(Ok(()), |m| m.admit_stored(new_users, new_items))
        })
    }

    pub fn observe_counts(&self, users: u64, items: u64) {
        self.with(|m| {
            if let Some(m) = m {
                m.observe_counts(users, items)
            }
        })
    }

    pub fn refund_events(&self, batch: u64) {
        self.with(|m| {
            if let Some(m) = m {
                m.refund_events(batch, now_unix())
            }
        })
    }

    /// New quotas from the registry (`None`: the tenant has none any more).
    pub fn set_quotas(&self, quotas: Option<Quotas>) {
        let now = self.now_s();
        self.with(|m| match (m.as_mut(), quotas) {
            (Some(meter), Some(q)) => meter.set_quotas(q),
            (None, Some(q)) => *m = Some(QuotaMeter::new(&self.tenant, q, now, now_unix())),
            (_, None) => *m = None,
        })
    }

    /// The store holds `stored` of today's events (`day`, UTC days).
    pub fn observe_stored(&self, day: u64, stored: u64) {
        self.with(|m| {
            if let Some(m) = m {
                m.observe_stored(day, stored, now_unix())
            }
        })
    }

    /// Whether the tenant is in the registry (it has quotas, and its keys are required
    /// for events: see `http::events`).
    pub fn registered(&self) -> bool {
        self.with(|m| m.is_some())
    }

    /// The quotas and today's usage, when there are quotas.
    pub fn health(&self) -> Option<QuotaHealth> {
        self.with(|m| {
            m.as_mut().map(|m| QuotaHealth {
                quotas: m.quotas(),
                usage: m.usage(now_unix()),
                users: m.stored().0,
                items: m.stored().1,
            })
        })
    }
}

/// What `/health` shows of the tenant's quotas.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct QuotaHealth {
    pub quotas: Quotas,
    pub usage: Usage,
    /// Users and items stored, as last counted.
    pub users: u64,
    pub items: u64,
}

/// Every [`QUOTA_SYNC`] in which the tenant had metered requests (and once at the
/// start): the tenant's quotas from the registry (added, changed or removed since) and
/// the store's count of today's events (every origin's), logging failures; ends when
/// the guard is dropped everywhere else. An idle tenant costs no queries; its first
/// requests after a pause meet the quotas of its last sync for up to one period.
pub fn spawn_sync(
    guard: QuotaGuard,
    tenants: Tenants,
    store: crate::store::SharedStore,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(id) = contract::Tenant::parse(&guard.tenant) else {
            return;
        };
        let mut tick = tokio::time::interval(QUOTA_SYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tick.tick().await;
            if Arc::strong_count(&guard.meter) <= 1 {
                return;
            }
            // Idle since the last sync: nothing to refresh (the first sync always runs).
            let active = guard
                .active
                .swap(false, std::sync::atomic::Ordering::Relaxed);
            if !std::mem::take(&mut first) && !active {
                continue;
            }
            let now = now_unix();
            match tenants.show(&id, now as i64).await {
                Ok(view) => guard.set_quotas(Some(view.tenant.quotas)),
                Err(TenantError::NotFound(_)) => guard.set_quotas(None),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the tenant's quotas; keeping the last ones")
                }
            }
            if guard.health().is_none() {
                continue;
            }
            match store.counts().await {
                Ok(c) => guard.observe_counts(c.users, c.items),
                Err(e) => tracing::warn!(error = %e, "cannot count users and items for the quota"),
            }
            let day = now / 86_400;
            let since_ms = crate::tenants::quota::day_start(day) as i64 * 1000;
            match store.events_received_since(since_ms).await {
                Ok(stored) => guard.observe_stored(day, stored),
                Err(e) => tracing::warn!(error = %e, "cannot count today's events for the quota"),
            }
        }
    })
}

/// Whether a path is tenant-facing traffic that takes a request token.
fn metered(path: &str) -> bool {
    path.starts_with("/v1/recommendations")
        || matches!(path, "/v1/popular" | "/v1/events" | "/v1/impressions")
}

/// Middleware: a request token per metered request, or `429 quota_exceeded`.
pub async fn limit(State(guard): State<Option<QuotaGuard>>, req: Request, next: Next) -> Response {
    let Some(guard) = guard.filter(|_| metered(req.uri().path())) else {
        return next.run(req).await;
    };
    let tenant = guard.label();
    metrics::counter!("origin_tenant_requests_total", "tenant" => tenant.clone()).increment(1);
    match guard.admit_request() {
        Ok(()) => next.run(req).await,
        Err(e) => {
            metrics::counter!("origin_quota_exceeded_total", "quota" => e.quota(), "tenant" => tenant)
                .increment(1);
            ApiError::Quota(e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tenant_traffic_is_metered() {
        for path in [
            "/v1/recommendations/u1",
            "/v1/recommendations/batch",
            "/v1/popular",
            "/v1/events",
            "/v1/impressions",
        ] {
            assert!(metered(path), "{path}");
        }
        for path in [
            "/health",
            "/health/ready",
            "/v1/admin/retrain",
            "/v1/admin/tenants",
            "/v1/analytics/real-time",
            "/dashboard",
        ] {
            assert!(!metered(path), "{path}");
        }
    }

    #[tokio::test]
    async fn a_429_names_the_quota_and_says_when_to_retry() {
        let guard = QuotaGuard::new(
            "shop",
            Some(Quotas {
                events_per_day: 3,
                ..Quotas::default()
            }),
        );
        guard.admit_events(3).unwrap();
        let e = guard.admit_events(1).unwrap_err();
        let resp = ApiError::Quota(e).into_response();
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry), "{retry}");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "quota_exceeded");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("events_per_day (3)"), "{message}");
        assert_eq!(guard.health().unwrap().usage.events_today, 3);
        guard.set_quotas(None);
        guard.admit_events(1_000_000_000).unwrap();
        assert!(guard.health().is_none(), "no quotas, nothing counted");
    }
}
