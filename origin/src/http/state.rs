//! What the HTTP handlers share: [`AppState`] (the served snapshot, publish targets,
//! limits) and [`Live`] (store, republisher, retrainer, admin token).

use std::path::PathBuf;
use std::sync::Arc;

use contract::Region;

use crate::auth::Secret;
use crate::freshness::{PublishHealth, Republisher};
use crate::observability::Traffic;
use crate::publish::{CdnFolder, EdgeClient, EdgeKv, PublishTargets};
use crate::retrain::{Retrainer, SharedSnapshot};
use crate::snapshot::Snapshot;
use crate::store::SharedStore;

use super::*;

/// Items per document published on a miss, unless configured otherwise.
pub const DEFAULT_PUBLISH_N: usize = 50;

/// Background publishes running at once, at most; more misses are answered but not published.
pub const MAX_BACKGROUND_PUBLISHES: usize = 32;

/// Largest request body read, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The snapshot being served; a retrain replaces it in one atomic store.
    pub snapshot: SharedSnapshot,
    /// Region this origin runs in; the region of users not in the store.
    pub region: Region,
    /// Where answers for known users are published in the background (none: nowhere).
    pub publish: PublishTargets,
    /// Items per document published in the background (at least the requested `n`).
    pub publish_n: usize,
    /// Background publishes that may run at once; answers beyond that are not published.
    pub publish_slots: Arc<tokio::sync::Semaphore>,
    /// When a user may be published (shared with the republisher): once per freshness
    /// window per user here, never twice within the minimum interval.
    pub publish_gate: crate::freshness::PublishGate,
    /// Event log, freshness, retrain and analytics; `None` turns those routes off (503).
    pub live: Option<Arc<crate::http::Live>>,
    /// Request rate and latency (counted by the middleware).
    pub traffic: Arc<Traffic>,
    /// Per-client request limits (off unless configured).
    pub limits: crate::clients::RateLimits,
    /// The tenant registry of the admin routes; `None` turns them off (503).
    pub tenants: Option<crate::tenants::Tenants>,
    /// The served tenant's quotas (`None`: the tenant has none; see [`super::quota`]).
    pub quota: Option<super::quota::QuotaGuard>,
    /// The process's model cache of other tenants (`/health` shows it; see
    /// `crate::tenant_host`).
    pub model_cache: Option<Arc<std::sync::Mutex<crate::tenants::model_cache::ModelCache>>>,
}

impl AppState {
    pub fn new(snapshot: Arc<Snapshot>, region: Region) -> Self {
        AppState {
            snapshot: Arc::new(arc_swap::ArcSwap::new(snapshot)),
            region,
            publish: PublishTargets::default(),
            publish_n: DEFAULT_PUBLISH_N,
            publish_slots: Arc::new(tokio::sync::Semaphore::new(MAX_BACKGROUND_PUBLISHES)),
            publish_gate: crate::freshness::PublishGate::default(),
            live: None,
            traffic: Arc::new(Traffic::default()),
            limits: crate::clients::RateLimits::off(),
            tenants: None,
            quota: None,
            model_cache: None,
        }
    }

    /// Shows `cache` in `/health`.
    pub fn with_model_cache(
        mut self,
        cache: Arc<std::sync::Mutex<crate::tenants::model_cache::ModelCache>>,
    ) -> Self {
        self.model_cache = Some(cache);
        self
    }

    /// Turns on the tenant registry's admin routes.
    /// Enforces `guard`'s quotas on the tenant-facing routes.
    pub fn with_quota(mut self, guard: super::quota::QuotaGuard) -> Self {
        self.quota = Some(guard);
        self
    }

    pub fn with_tenants(mut self, tenants: crate::tenants::Tenants) -> Self {
        self.tenants = Some(tenants);
        self
    }

    pub fn with_limits(mut self, limits: crate::clients::RateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The snapshot serving now (held for the whole of one answer).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Turns on the live routes (events, analytics, retrain).
    pub fn with_live(mut self, live: crate::http::Live) -> Self {
        self.live = Some(Arc::new(live));
        self
    }

    pub fn with_publish_n(mut self, n: usize) -> Self {
        self.publish_n = n.clamp(1, contract::MAX_N);
        self
    }

    pub fn with_publish_gate(mut self, gate: crate::freshness::PublishGate) -> Self {
        self.publish_gate = gate;
        self
    }

    /// Publishes answers to the edge's KV through `edge` as well.
    pub fn with_edge(mut self, edge: EdgeClient) -> Self {
        self.publish = self.publish.with(Arc::new(EdgeKv::new(edge)));
        self
    }

    /// Publishes answers into the current generation of the CDN folder `dir` as well.
    pub fn with_publish_dir(self, dir: PathBuf) -> Self {
        self.with_publish_dir_keeping(dir, 0)
    }

    /// As [`AppState::with_publish_dir`], and a full publish into it keeps the newest
    /// `keep` generations (0: all).
    pub fn with_publish_dir_keeping(mut self, dir: PathBuf, keep: usize) -> Self {
        self.publish = self
            .publish
            .with(Arc::new(CdnFolder::new(dir).keeping(keep)));
        self
    }
}

/// The snapshot serving now, or `503 model_loading` while the first model trains.
pub(crate) fn trained(state: &AppState) -> Result<Arc<Snapshot>, ApiError> {
    let snapshot = state.snapshot();
    if snapshot.loading {
        return Err(ApiError::ModelLoading);
    }
    Ok(snapshot)
}

/// Default clock skew allowed for event timestamps, in seconds.
pub const DEFAULT_MAX_FUTURE_S: i64 = 300;

/// What the live routes share.
pub struct Live {
    /// The event log and everything read from the store.
    pub store: SharedStore,
    /// Republishes touched users; `None` when there is nothing to publish to.
    pub republisher: Option<Republisher>,
    pub retrainer: Option<Arc<Retrainer>>,
    /// Bearer token of the admin routes; `None` turns them off (503).
    pub admin_token: Option<Secret>,
    /// How far ahead of the origin's clock an event timestamp may be.
    pub max_future_s: i64,
    pub health: Arc<PublishHealth>,
    /// Whether this origin runs the schedule (see [`crate::leader`]).
    pub leader: Arc<crate::leader::Leadership>,
    /// The last scheduled full publish of this process (see [`crate::scheduled_publish`]).
    pub full_publish: Arc<crate::scheduled_publish::PublishRecord>,
}

impl Live {
    pub fn new(store: SharedStore) -> Self {
        Live {
            store,
            republisher: None,
            retrainer: None,
            admin_token: None,
            max_future_s: DEFAULT_MAX_FUTURE_S,
            health: Arc::new(PublishHealth::default()),
            leader: crate::leader::Leadership::always(),
            full_publish: Arc::default(),
        }
    }
}

pub(crate) fn live(state: &AppState) -> Result<&Arc<Live>, ApiError> {
    state.live.as_ref().ok_or(ApiError::LiveDisabled)
}
