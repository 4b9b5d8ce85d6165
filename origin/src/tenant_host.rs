//! One origin serving every registered tenant: the request's tenant picks the app that
//! answers it, each tenant with its own store, model, quotas and republisher, its
//! trained model held in a cache bounded by memory (`--model-cache-mb`).
//!
//! # Which tenant a request is for
//! `?tenant=` when given (an invalid id is a `400`, before anything is looked up);
//! else the tenant of the `X-Tenant-Key` it carries; else the origin's own tenant
//! (`--tenant`). The registry's routes (`/v1/admin/tenants…`) are the origin's own. A
//! tenant not in the registry is a JSON `404 unknown_tenant`; the origin's own tenant
//! needs no registration (a single-tenant deployment, `make dev`).
//!
//! # A tenant's runtime
//! The origin's own tenant is built at start by `serve` and never leaves memory. Any
//! other tenant's runtime is built on its first request: its store (on SQLite a file
//! of its own next to the main one, on PostgreSQL the same database keyed by tenant:
//! [`crate::store::TenantStores`]), its state and app (the same handlers, limits,
//! quotas and publish targets as the main tenant, [`tenant_state`]) and a load in the
//! background: its popular lists first (read and counted in milliseconds for a small
//! tenant), then its model. A request waits for the popular lists at most
//! [`LOAD_WAIT`], so an unloaded tenant answers fast — from popular lists while its
//! model trains — and never stalls.
//!
//! # The model cache
//! Loaded tenants' models count their bytes ([`crate::snapshot::Snapshot::heap_bytes`])
//! against the budget in a [`ModelCache`]; admitting one evicts the least recently
//! used others, whose runtime (store handle, background tasks, model) is dropped; their
//! next request builds it again. Hits, misses, evictions, loads, load time and bytes are
//! in `/health` (`model_cache`) and `/metrics` (`origin_model_cache_*`).
//!
//! # Retrains
//! Every `--retrain-every-s`, the leader retrains each loaded tenant that received
//! events since its model was trained (the origin's own tenant keeps its own schedule).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use contract::{Region, RegionMap, Tenant};
use tower::ServiceExt;

use crate::admission::TrainingPolicy;
use crate::auth::Secret;
use crate::clients::RateLimits;
use crate::freshness::{PublishGate, PublishHealth, Republisher, Targets};
use crate::http::quota::QuotaGuard;
use crate::http::{ApiError, AppState, Live};
use crate::leader::Leadership;
use crate::publish::PublishTargets;
use crate::retrain::{Retrainer, TrainFn};
use crate::snapshot::{Freshness, Snapshot};
use crate::store::{SharedStore, TenantStores};
use crate::tenants::model_cache::ModelCache;
use crate::tenants::{TenantError, Tenants};

/// How long a request for a tenant whose runtime is loading waits for its popular
/// lists before it is answered anyway (by the loading model: `503 model_loading`).
pub const LOAD_WAIT: Duration = Duration::from_secs(2);

/// What every tenant's runtime is built from (one per process, from `origin serve`'s
/// flags).
#[derive(Clone)]
pub struct HostSettings {
    pub regions: RegionMap,
    /// This origin's region.
    pub region: Region,
    pub freshness: Freshness,
    pub policy: TrainingPolicy,
    pub train: TrainFn,
    pub publish_n: usize,
    /// The process's publish budget, shared by every tenant.
    pub gate: PublishGate,
    /// Per-client limits, shared by every tenant (a client is limited across tenants).
    pub limits: RateLimits,
    /// Where documents are published (keys carry the tenant).
    pub publish: PublishTargets,
    pub republish_debounce: Duration,
    pub admin_token: Option<Secret>,
    pub max_future_s: i64,
    pub leader: Arc<Leadership>,
    /// Between retrains of the loaded tenants (zero: none).
    pub retrain_every: Duration,
}

/// A tenant's state (the handlers' view of its store, model, quotas, publishing) and
/// the retrainer that replaces its model.
pub fn tenant_state(
    settings: &HostSettings,
    tenant: Tenant,
    store: SharedStore,
    tenants: Tenants,
    quota: QuotaGuard,
    full_publish: Arc<crate::scheduled_publish::PublishRecord>,
) -> (AppState, Arc<Retrainer>) {
    let placeholder =
        Snapshot::loading(tenant.clone(), settings.regions.clone(), settings.freshness);
    let mut state = AppState::new(Arc::new(placeholder), settings.region.clone())
        .with_publish_n(settings.publish_n)
        .with_publish_gate(settings.gate.clone())
        .with_limits(settings.limits.clone())
        .with_tenants(tenants)
        .with_quota(quota);
    state.publish = settings.publish.clone();
    let retrainer = Arc::new(
        Retrainer::new(
            store.clone(),
            tenant,
            settings.regions.clone(),
            settings.freshness,
            settings.train.clone(),
            state.snapshot.clone(),
        )
        .with_policy(settings.policy),
    );
    let health = Arc::new(PublishHealth::default());
    let republisher = (!state.publish.is_empty()).then(|| {
        Republisher::spawn(
            Targets {
                store: store.clone(),
                snapshot: state.snapshot.clone(),
                publish: state.publish.clone(),
                region: state.region.clone(),
                publish_n: state.publish_n,
                health: health.clone(),
                gate: state.publish_gate.clone(),
            },
            settings.republish_debounce,
        )
    });
    state = state.with_live(Live {
        store,
        republisher,
        retrainer: Some(retrainer.clone()),
        admin_token: settings.admin_token.clone(),
        max_future_s: settings.max_future_s,
        health,
        leader: settings.leader.clone(),
        full_publish,
    });
    (state, retrainer)
}

/// A loaded tenant: its app and what its load and retrains use. Dropping it stops its
/// background tasks (requests in flight keep their own handles).
struct Runtime {
    app: Router,
    retrainer: Arc<Retrainer>,
    store: SharedStore,
    /// True once the popular lists (or the model) serve, or the load failed.
    ready: tokio::sync::watch::Receiver<bool>,
    /// When the load began (a load's time runs until its first model is admitted).
    started: Instant,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Every tenant this origin serves.
pub struct TenantHost {
    main: Tenant,
    main_app: Router,
    settings: HostSettings,
    registry: Tenants,
    stores: TenantStores,
    /// The main tenant's quota guard, whose metric labels every tenant's guard shares.
    main_quota: QuotaGuard,
    runtimes: Mutex<HashMap<Tenant, Arc<Runtime>>>,
    /// One runtime built at a time (so two first requests build one).
    building: tokio::sync::Mutex<()>,
    cache: Arc<Mutex<ModelCache>>,
}

impl TenantHost {
    /// A host answering `main`'s requests with `main_app` and building every other
    /// registered tenant's runtime on demand, their models within `cache`.
    pub fn new(
        main: Tenant,
        main_app: Router,
        main_quota: QuotaGuard,
        settings: HostSettings,
        registry: Tenants,
        stores: TenantStores,
        cache: Arc<Mutex<ModelCache>>,
    ) -> Arc<Self> {
        let host = Arc::new(TenantHost {
            main,
            main_app,
            settings,
            registry,
            stores,
            main_quota,
            runtimes: Mutex::new(HashMap::new()),
            building: tokio::sync::Mutex::new(()),
            cache,
        });
        if !host.settings.retrain_every.is_zero() {
            spawn_retrains(Arc::downgrade(&host), host.settings.retrain_every);
        }
        host
    }

    /// The router that dispatches every request to its tenant's app.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self)
    }

    /// The tenants whose runtime is loaded now.
    pub fn loaded(&self) -> Vec<Tenant> {
        let mut loaded: Vec<Tenant> = self.lock_runtimes().keys().cloned().collect();
        loaded.sort();
        loaded
    }

    fn lock_runtimes(&self) -> std::sync::MutexGuard<'_, HashMap<Tenant, Arc<Runtime>>> {
        self.runtimes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ModelCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant a request is for (`None`: the origin's own), from what [`Asked`]
    /// read of it.
    async fn tenant_of(&self, asked: Asked) -> Result<Option<Tenant>, ApiError> {
        let tenant = match asked {
            Asked::Main => return Ok(None),
            Asked::Named(raw) => Tenant::parse(&raw)?,
            Asked::Key(key) => {
                // An unknown key is the main app's to refuse (401 invalid_key).
                match self
                    .registry
                    .verify(&key, crate::clock::now_unix() as i64)
                    .await?
                {
                    Some(v) => v.tenant,
                    None => return Ok(None),
                }
            }
        };
        Ok((tenant != self.main).then_some(tenant))
    }

    /// `tenant`'s runtime, built when it is not loaded (a registered tenant only).
    async fn runtime(self: &Arc<Self>, tenant: &Tenant) -> Result<Arc<Runtime>, ApiError> {
        if let Some(rt) = self.lock_runtimes().get(tenant).cloned() {
            self.count_request(tenant);
            return Ok(rt);
        }
        let _building = self.building.lock().await;
        if let Some(rt) = self.lock_runtimes().get(tenant).cloned() {
            self.count_request(tenant);
            return Ok(rt);
        }
        let view = match self
            .registry
            .show(tenant, crate::clock::now_unix() as i64)
            .await
        {
            Ok(view) => view,
            Err(TenantError::NotFound(_)) => {
                return Err(ApiError::TenantNotRegistered(tenant.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        self.count_request(tenant);
        let store = self
            .stores
            .open(tenant)
            .await
            .map_err(|e| ApiError::Internal(format!("opening tenant {tenant}'s store: {e}")))?;
        let quota = self
            .main_quota
            .for_tenant(tenant.as_str(), Some(view.tenant.quotas));
        // The tenant's own model, else the origin's `--model`.
        let mut settings = self.settings.clone();
        if let Some(model) = &view.tenant.model {
            let choice = model.choice();
            settings.train =
                Arc::new(move |data| crate::training::train_or_popularity(data, &choice));
        }
        let (state, retrainer) = tenant_state(
            &settings,
            tenant.clone(),
            store.clone(),
            self.registry.clone(),
            quota.clone(),
            Arc::default(),
        );
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let rt = Arc::new(Runtime {
            app: crate::app(state.with_model_cache(self.cache.clone())),
            retrainer,
            store: store.clone(),
            ready,
            started: Instant::now(),
            tasks: Mutex::new(Vec::new()),
        });
        // Every model the tenant's retrainer swaps in is counted in the cache.
        let (host, weak_rt, t) = (Arc::downgrade(self), Arc::downgrade(&rt), tenant.clone());
        rt.retrainer.on_swap(Arc::new(move |snapshot: &Snapshot| {
            if let (Some(h), Some(rt)) = (host.upgrade(), weak_rt.upgrade()) {
                h.admit(&t, &rt, snapshot.heap_bytes() as u64);
            }
        }));
        let sync = crate::http::quota::spawn_sync(quota, self.registry.clone(), store);
        let load = tokio::spawn(load(tenant.clone(), rt.clone(), ready_tx));
        rt.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([sync.abort_handle(), load.abort_handle()]);
        self.lock_runtimes().insert(tenant.clone(), rt.clone());
        metrics::gauge!("origin_tenants_loaded").set(self.lock_runtimes().len() as f64);
        Ok(rt)
    }

    fn count_request(&self, tenant: &Tenant) {
        let hit = self.lock_cache().request(tenant);
        match hit {
            true => metrics::counter!("origin_model_cache_hits_total").increment(1),
            false => metrics::counter!("origin_model_cache_misses_total").increment(1),
        }
    }

    /// Admits `tenant`'s model of `bytes` into the cache (its first admission counts
    /// the load) and drops the runtimes it evicts. Nothing happens for a tenant whose
    /// runtime is gone (evicted or deleted while it loaded).
    fn admit(&self, tenant: &Tenant, rt: &Arc<Runtime>, bytes: u64) {
        let mut runtimes = self.lock_runtimes();
        if !runtimes.get(tenant).is_some_and(|r| Arc::ptr_eq(r, rt)) {
            return;
        }
        let (evicted, stats, load_seconds) = {
            let mut cache = self.lock_cache();
            let load_seconds =
                (!cache.contains(tenant)).then(|| rt.started.elapsed().as_secs_f64());
            let evicted = cache.admit(tenant, bytes, load_seconds);
            (evicted, cache.stats(), load_seconds)
        };
        let mut dropped = Vec::with_capacity(evicted.len());
        for t in &evicted {
            if let Some(rt) = runtimes.remove(t) {
                dropped.push(rt);
            }
            tracing::info!(tenant = %t, "model evicted from the cache");
        }
        let loaded = runtimes.len();
        drop(runtimes);
        // Dropped outside the lock: their Drop aborts tasks.
        drop(dropped);
        if let Some(s) = load_seconds {
            metrics::histogram!("origin_model_cache_load_seconds").record(s);
        }
        metrics::counter!("origin_model_cache_evictions_total").increment(evicted.len() as u64);
        metrics::gauge!("origin_model_cache_bytes").set(stats.bytes as f64);
        metrics::gauge!("origin_model_cache_tenants").set(stats.tenants as f64);
        metrics::gauge!("origin_tenants_loaded").set(loaded as f64);
    }

    /// Drops a deleted tenant's runtime and model.
    pub fn forget(&self, tenant: &Tenant) {
        let rt = self.lock_runtimes().remove(tenant);
        self.lock_cache().remove(tenant);
        drop(rt);
    }
}

/// The train function of a tenant's first, fast stage: regional popularity.
fn popular_lists() -> TrainFn {
    let spec = crate::engine::ModelSpec::default_for(crate::engine::ModelKind::Popularity);
    Arc::new(move |data| {
        crate::engine::build(&spec, data).expect("popularity builds from any data")
    })
}

/// Loads a tenant: popular lists first (then requests stop waiting), then its model.
async fn load(tenant: Tenant, rt: Arc<Runtime>, ready: tokio::sync::watch::Sender<bool>) {
    let started = Instant::now();
    let first = rt.retrainer.retrain_using(popular_lists()).await;
    let _ = ready.send(true);
    if let Err(e) = first {
        tracing::error!(tenant = %tenant, error = %e, "loading a tenant failed; it answers model_loading");
        return;
    }
    // The swap hook admitted the popular lists (and counted the load).
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = rt.retrainer.retrain().await {
        tracing::error!(tenant = %tenant, error = %e, "training a tenant's model failed; its popular lists serve");
    }
    tracing::info!(
        tenant = %tenant,
        answering_after_s = seconds,
        model_after_s = started.elapsed().as_secs_f64(),
        "tenant loaded"
    );
}

/// Every `every`, on the leader: retrains each loaded tenant with events newer than
/// its model. Ends with the host.
fn spawn_retrains(host: Weak<TenantHost>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(h) = host.upgrade() else { return };
            if !h.settings.leader.is_leader() {
                continue;
            }
            let loaded: Vec<(Tenant, Arc<Runtime>)> = h
                .lock_runtimes()
                .iter()
                .map(|(t, r)| (t.clone(), r.clone()))
                .collect();
            drop(h);
            for (tenant, rt) in loaded {
                let trained_ms = rt.retrainer.snapshot.load().trained_at as i64 * 1000;
                match rt.store.events_received_since(trained_ms).await {
                    Ok(0) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, "cannot count new events");
                        continue;
                    }
                }
                if let Err(e) = rt.retrainer.retrain().await {
                    tracing::error!(tenant = %tenant, error = %e, "scheduled retrain failed");
                }
            }
        }
    });
}

/// What a request says about its tenant, read before anything is awaited.
enum Asked {
    /// An admin route, or nothing named: the origin's own tenant.
    Main,
    /// `?tenant=` (not yet validated).
    Named(String),
    /// A tenant key (`X-Tenant-Key`), key-shaped.
    Key(String),
}

impl Asked {
    fn of(req: &Request) -> Asked {
        if req.uri().path().starts_with("/v1/admin/tenants") {
            return Asked::Main;
        }
        let named = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "tenant")
                .map(|(_, v)| v.into_owned())
        });
        if let Some(raw) = named {
            return Asked::Named(raw);
        }
        req.headers()
            .get(contract::auth::TENANT_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| contract::auth::is_tenant_key_shaped(k))
            .map_or(Asked::Main, |k| Asked::Key(k.to_owned()))
    }
}

/// Answers a request with its tenant's app.
async fn dispatch(State(host): State<Arc<TenantHost>>, req: Request) -> Response {
    let tenant = match host.tenant_of(Asked::of(&req)).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let deleted = deleted_tenant(&req);
            let resp = answer(host.main_app.clone(), req).await;
            if let Some(t) = deleted.filter(|_| resp.status().is_success()) {
                host.forget(&t);
            }
            return resp;
        }
        Err(e) => return e.into_response(),
    };
    let rt = match host.runtime(&tenant).await {
        Ok(rt) => rt,
        Err(e) => return e.into_response(),
    };
    let mut ready = rt.ready.clone();
    if !*ready.borrow() {
        let _ = tokio::time::timeout(LOAD_WAIT, ready.wait_for(|r| *r)).await;
    }
    answer(rt.app.clone(), req).await
}

async fn answer(app: Router, req: Request) -> Response {
    match app.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// The tenant whose loaded runtime a successful request makes stale: a `DELETE
/// /v1/admin/tenants/{id}` (deleted) or a `PUT /v1/admin/tenants/{id}/model` (to be
/// trained with its new model on its next request).
fn deleted_tenant(req: &Request) -> Option<Tenant> {
    let rest = req.uri().path().strip_prefix("/v1/admin/tenants/")?;
    let id = match *req.method() {
        axum::http::Method::DELETE => rest,
        axum::http::Method::PUT => rest.strip_suffix("/model")?,
        _ => return None,
    };
    Tenant::parse(id).ok()
}
