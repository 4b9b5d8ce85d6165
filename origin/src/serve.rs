//! The composition root of `origin serve`: opens the store (with its event log), wires
//! the publish targets, the republisher, the retrainer, rate limits and timeouts, and
//! serves until SIGTERM / Ctrl-C.
//!
//! The origin **listens before it trains**: it binds its port and answers at once
//! (`/health` says `loading`, recommendation routes `503 model_loading`, so the edge
//! serves what it holds; events are taken), while the first model trains in the
//! background under the [`crate::admission`] limits. A training that fails leaves the
//! previous model (or the placeholder) serving.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use contract::RegionMap;

use crate::clients::RateLimits;
use crate::config::{Secret, ServeConfig};
use crate::freshness::PublishGate;
use crate::leader::Leadership;
use crate::publish::EdgeClient;
use crate::snapshot::{Freshness, Snapshot};
use crate::store::{Location, TenantStores};
use crate::tenant_host::{tenant_state, HostSettings, TenantHost};
use crate::tenants::model_cache::ModelCache;
use crate::AppState;

/// Runs `origin serve` with `c` until `shutdown` completes.
pub async fn serve(
    c: ServeConfig,
    regions: RegionMap,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (tenant, region) = c.validate(&regions)?;
    // Not fatal: several origins on one host (tests, dev) must not fail on the
    // shared default port; the API matters more than its metrics.
    match crate::observability::install_metrics(c.metrics_listen) {
        Ok(()) => tracing::info!(addr = %c.metrics_listen, "metrics listening"),
        Err(e) => tracing::error!(
            addr = %c.metrics_listen,
            error = %e,
            "metrics exporter not started; set --metrics-listen to a free address"
        ),
    }
    let freshness = Freshness {
        fresh_for_s: c.fresh_for_s,
        stale_for_s: c.stale_for_s,
    };
    let policy = c.policy.policy();
    let train_with = |choice: crate::training::ModelChoice| -> crate::retrain::TrainFn {
        Arc::new(move |data| crate::training::train_or_popularity(data, &choice))
    };
    let mut train = train_with(c.model.choice.clone());
    // Opened (and checked to be ours) before anything listens.
    let location = Location::parse(&c.store.db.to_string_lossy())?;
    let store = crate::store::open_with_replicas(
        &location,
        &c.db_replicas,
        std::time::Duration::from_millis(c.replica_max_lag_ms),
        tenant.as_str(),
        c.event_group_max,
        c.schema_options(),
    )
    .await
    .with_context(|| format!("opening the store {}", location.display()))?;
    // The tenant registry of the admin routes, in the same store.
    let tenants = crate::store::open_tenants(&location)
        .await
        .with_context(|| format!("opening the tenant registry {}", location.display()))?;
    // One origin per database runs the schedule (see `leader`).
    let leader = match &location {
        Location::Sqlite(_) => Leadership::always(),
        Location::Postgres(url) => Leadership::elect(
            url,
            tenant.as_str(),
            std::time::Duration::from_millis(c.leader_retry_ms),
        ),
    };
    // The leader drops months of the event log past retention (see `store::retention`).
    if c.event_retention_months > 0 {
        let retention_leader = leader.clone();
        crate::store::retention::spawn(
            &store,
            c.event_retention_months,
            crate::store::retention::RETENTION_EVERY,
            std::time::Duration::from_millis(c.leader_retry_ms),
            move || retention_leader.is_leader(),
        );
    }
    let token = Secret::admin_token_from_env();
    let tenants = crate::tenants::Tenants::new(tenants);
    // The tenant's quotas when the registry holds it (see `http::quota`).
    let quotas = match tenants
        .show(&tenant, crate::snapshot::now_unix() as i64)
        .await
    {
        Ok(view) => {
            // A registered tenant's own model setting wins over `--model`.
            if let Some(model) = &view.tenant.model {
                tracing::info!(model = model.as_str(), "the tenant's model setting");
                train = train_with(model.choice());
            }
            Some(view.tenant.quotas)
        }
        Err(crate::tenants::TenantError::NotFound(_)) => None,
        Err(e) => return Err(e).context("reading the tenant's quotas"),
    };
    match &quotas {
        Some(q) => tracing::info!(quotas = ?q, "enforcing the tenant's quotas"),
        None => tracing::info!("the tenant is not in the registry: no quotas"),
    }
    let quota = crate::http::quota::QuotaGuard::new(tenant.as_str(), quotas);
    crate::http::quota::spawn_sync(quota.clone(), tenants.clone(), store.clone());
    // The CDN folder first, then the edge's KV, then the edge-cache purge.
    let mut targets = AppState::new(
        Arc::new(Snapshot::loading(
            tenant.clone(),
            regions.clone(),
            freshness,
        )),
        region.clone(),
    );
    if let Some(dir) = c.publish_dir.clone() {
        tracing::info!(dir = %dir.display(), "publish on miss to CDN folder");
        targets = targets.with_publish_dir_keeping(dir, c.keep_generations);
    }
    match (&c.edge_url, token.clone()) {
        (Some(url), Some(token)) => {
            tracing::info!(edge = %url, "publish on miss to edge KV");
            targets = targets.with_edge(EdgeClient::new(url, token));
        }
        (Some(_), None) => {
            tracing::warn!("--edge-url given but ADMIN_TOKEN is not set; not publishing to KV")
        }
        _ => {}
    }
    let settings = HostSettings {
        regions: regions.clone(),
        region,
        freshness,
        policy,
        train,
        publish_n: c.publish_n.clamp(1, contract::MAX_N),
        gate: PublishGate::new(c.publish_budget()),
        limits: RateLimits::new(
            c.guard.rate_limit_rps,
            c.guard.rate_limit_burst,
            token.clone(),
        ),
        publish: targets.publish,
        republish_debounce: std::time::Duration::from_millis(c.republish_debounce_ms),
        admin_token: token.clone(),
        max_future_s: i64::from(c.event_max_future_s),
        leader: leader.clone(),
        retrain_every: std::time::Duration::from_secs(c.retrain_every_s),
    };
    if token.is_none() {
        tracing::warn!(
            "ADMIN_TOKEN is not set: /v1/admin/*, edge reports and impressions answer 503"
        );
    }
    let full_publish = Arc::new(crate::scheduled_publish::PublishRecord::default());
    let (state, retrainer) = tenant_state(
        &settings,
        tenant.clone(),
        store.clone(),
        tenants.clone(),
        quota.clone(),
        full_publish.clone(),
    );
    let cache = Arc::new(std::sync::Mutex::new(ModelCache::new(
        (c.model_cache_mb * 1024.0 * 1024.0) as u64,
    )));
    let state = state.with_model_cache(cache.clone());
    if c.publish_every_s > 0 {
        if state.publish.is_empty() {
            tracing::warn!("--publish-every-s given without --publish-dir or --edge-url: nothing to publish to");
        } else {
            crate::scheduled_publish::spawn(crate::scheduled_publish::Schedule {
                snapshot: state.snapshot.clone(),
                targets: state.publish.clone(),
                n: state.publish_n,
                every: std::time::Duration::from_secs(c.publish_every_s),
                leader: leader.clone(),
                record: full_publish,
                store: store.clone(),
                republisher: state.live.as_ref().and_then(|l| l.republisher.clone()),
                gate: state.publish_gate.clone(),
            });
        }
    }
    // Every other registered tenant, on demand (see `tenant_host`).
    let stores = TenantStores::new(&location, c.event_group_max, c.schema_options())
        .await
        .with_context(|| format!("opening the tenants' stores beside {}", location.display()))?;
    let host = TenantHost::new(
        tenant.clone(),
        crate::app(state),
        quota,
        settings,
        tenants,
        stores,
        cache,
    );
    let listener = tokio::net::TcpListener::bind(c.listen)
        .await
        .with_context(|| format!("binding {}", c.listen))?;
    tracing::info!(addr = %listener.local_addr()?, ?policy, "origin listening; training the first model");
    let first = retrainer.clone();
    let schedule_leader = leader.clone();
    let every = c.retrain_every_s;
    let follow_every = std::time::Duration::from_millis(c.leader_retry_ms);
    tokio::spawn(async move {
        match first.start().await {
            Ok(version) => tracing::info!(model = %version, "first model trained and serving"),
            Err(e) => tracing::error!(error = %e, "first training failed; still loading"),
        }
        // Every origin serves the model the newest retrain recorded (see `retrain`).
        crate::retrain::spawn_follow(first.clone(), follow_every);
        if every > 0 {
            crate::retrain::spawn_schedule(
                first,
                std::time::Duration::from_secs(every),
                schedule_leader,
            );
        }
    });
    crate::server::serve(listener, host.router(), c.guard.serve_options(), shutdown).await?;
    // Spans still queued for OTLP export go out before the process ends.
    tokio::task::spawn_blocking(crate::observability::flush_traces).await?;
    Ok(())
}
