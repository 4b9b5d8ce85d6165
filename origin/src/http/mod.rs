//! The HTTP API of the origin: one route table ([`routes`]), the shared state
//! ([`state`]), one error type ([`error`]) and a file per route family.
//!
//! | route | family |
//! |---|---|
//! | `GET /v1/recommendations/{user}`, `POST /v1/recommendations/batch`, `GET /v1/popular` | [`recommendations`] |
//! | `POST /v1/events`, `POST /v1/impressions` | [`events`] |
//! | `GET /v1/analytics/{recommendations,real-time,timeline,latency}` | [`analytics`] |
//! | `POST /v1/admin/retrain`, `POST /v1/analytics/edge-report` | [`admin`] |
//! | `GET, POST /v1/admin/tenants`, `GET, DELETE /v1/admin/tenants/{id}`, `POST /v1/admin/tenants/{id}/keys/{kind}/rotate`, `PUT /v1/admin/tenants/{id}/model` | [`tenants`] |
//! | `PUT, PATCH, GET, DELETE /v1/items/{id}`, `POST /v1/items`, the same for `/v1/users` | [`catalogue`] |
//! | `GET, PUT, DELETE /v1/admin/rules` | [`rules`] |
//! | `GET, POST /v1/admin/experiments`, `GET /v1/admin/experiments/{name}`, `POST /v1/admin/experiments/{name}/end`, `GET /v1/analytics/experiments[/{name}]` | [`experiments`] |
//! | `GET /health`, `GET /dashboard`, JSON 404/405 | here |
//!
//! Every answer is JSON; errors are `{"error":{"code","message"}}` ([`ApiError`]). The
//! crate's `app` wraps [`routes`] with the body limit, rate limits and request metrics.
//!
//! # Layout
//! - `state`: [`AppState`], [`Live`].
//! - `access`: which tenant key a registered tenant's routes need ([`access::KeyNeed`]).
//! - `quota`: the served tenant's quotas on the API ([`quota::QuotaGuard`]).
//! - `error`: [`ApiError`].
//! - `recommendations`, `events`, `analytics`, `admin`, `tenants`, `catalogue`,
//!   `rules`, `experiments`: the handlers.
//! - tests beside them: `tests`, `catalogue_tests`, `tenants_tests`, `filters_tests`
//!   (request filters and availability), `rules_tests` (business rules),
//!   `experiments_tests`.

pub mod access;
pub mod admin;
pub mod analytics;
pub mod catalogue;
#[cfg(test)]
mod catalogue_tests;
pub mod error;
pub mod events;
pub mod experiments;
#[cfg(test)]
mod experiments_tests;
#[cfg(test)]
mod filters_tests;
pub mod quota;
pub mod recommendations;
pub mod rules;
#[cfg(test)]
mod rules_tests;
pub mod state;
pub mod tenants;
#[cfg(test)]
mod tenants_tests;
#[cfg(test)]
mod tests;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub(crate) use error::body_error;
pub use error::{ApiError, ApiJson, ApiQuery};
pub use events::{Accepted, EVENTS_MAX_BODY_BYTES};
pub use recommendations::{
    parse_n, BatchRequest, BatchResponse, RecParams, DEFAULT_N, MAX_BATCH_IDS,
};
pub use state::*;

/// Answer of `GET /health`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// `ok`; `loading` until the first model is trained; `degraded` when the store
    /// refuses writes (events are then answered 503).
    pub status: String,
    /// Whether the last write to the store (event commit or probe) succeeded, and why not.
    #[serde(default)]
    pub store: Option<StoreHealth>,
    /// Items the model trained on, those left out (too few users, over the cap) and
    /// the cap; absent while loading.
    #[serde(default)]
    pub model_items: Option<crate::admission::Admission>,
    pub version: String,
    pub tenant: String,
    pub region: String,
    pub users: u64,
    pub items: u64,
    pub interactions: u64,
    pub model_version: String,
    /// The version of the tenant's business rules served (0: none; see
    /// [`crate::rules`]).
    #[serde(default)]
    pub rules_version: i64,
    /// Whether this origin runs the schedule (retrains): one per database; always with
    /// SQLite. `false` without a store.
    #[serde(default)]
    pub leader: bool,
    /// The read replicas and their lag (empty without `--db-replica`).
    #[serde(default)]
    pub replicas: Vec<crate::store::replicas::ReplicaStatus>,
    /// The last scheduled full publish of this process (`--publish-every-s`); absent
    /// before the first one.
    #[serde(default)]
    pub last_full_publish: Option<crate::scheduled_publish::LastPublish>,
    /// The tenant's quotas and today's usage, when the registry holds the tenant.
    #[serde(default)]
    pub quota: Option<quota::QuotaHealth>,
    /// The model cache of the other tenants this origin serves (`--model-cache-mb`).
    #[serde(default)]
    pub model_cache: Option<crate::tenants::model_cache::CacheStats>,
}

/// Whether the store takes writes (see [`crate::store::WriteHealth`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreHealth {
    pub writable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    let s = state.snapshot();
    let store = state.live.as_ref().map(|l| {
        let w = l.store.write_health();
        StoreHealth {
            writable: w.writable,
            error: w.error,
        }
    });
    let status = if store.as_ref().is_some_and(|w| !w.writable) {
        "degraded"
    } else if s.loading {
        "loading"
    } else {
        "ok"
    };
    Json(Health {
        status: status.into(),
        store,
        model_items: s.admission.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        tenant: s.tenant.as_str().into(),
        region: state.region.as_str().into(),
        users: s.counts.users,
        items: s.counts.items,
        interactions: s.counts.interactions,
        model_version: s.model_version(),
        rules_version: s.rules.get().version,
        leader: state.live.as_ref().is_some_and(|l| l.leader.is_leader()),
        replicas: state
            .live
            .as_ref()
            .map(|l| l.store.replicas())
            .unwrap_or_default(),
        last_full_publish: state.live.as_ref().and_then(|l| l.full_publish.last()),
        quota: state.quota.as_ref().and_then(|g| g.health()),
        model_cache: state
            .model_cache
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()).stats()),
    })
}

/// `GET /health/ready`: 200 when this origin should get traffic (a model is trained
/// and the store takes writes), else 503 with the reason, so a load balancer (a
/// Kubernetes readiness probe) sends requests to the other instances meanwhile.
pub(crate) async fn ready(
    State(state): State<AppState>,
) -> (axum::http::StatusCode, Json<serde_json::Value>) {
    let Json(h) = health(State(state)).await;
    match h.status.as_str() {
        "ok" => (
            axum::http::StatusCode::OK,
            Json(serde_json::json!({ "ready": true, "model_version": h.model_version })),
        ),
        status => {
            let message = match status {
                "loading" => "training the first model".to_string(),
                _ => format!(
                    "the store refuses writes: {}",
                    h.store.and_then(|s| s.error).unwrap_or_default()
                ),
            };
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "ready": false,
                    "error": { "code": format!("not_ready_{status}"), "message": message }
                })),
            )
        }
    }
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The API routes with JSON 404/405 fallbacks, without middleware.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/recommendations/batch",
            post(recommendations::batch).get(recommendations::recommendations_for_user_named_batch),
        )
        .route(
            "/v1/recommendations/{user_id}",
            get(recommendations::recommendations),
        )
        .route(
            "/v1/recommendations/{user_id}/{*rest}",
            get(recommendations::user_id_with_slash),
        )
        .route("/v1/popular", get(recommendations::popular))
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/dashboard", get(crate::dashboard::dashboard_page))
        .route(
            "/v1/events",
            post(events::post_events).route_layer(DefaultBodyLimit::max(EVENTS_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/impressions",
            post(events::post_impressions)
                .route_layer(DefaultBodyLimit::max(EVENTS_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/analytics/recommendations",
            get(analytics::recommendations_analytics),
        )
        .route("/v1/analytics/real-time", get(analytics::real_time))
        .route("/v1/analytics/latency", get(analytics::latency_analytics))
        .route("/v1/analytics/timeline", get(analytics::timeline_analytics))
        .route("/v1/analytics/edge-report", post(admin::edge_report))
        .route("/v1/admin/retrain", post(admin::retrain))
        .route(
            "/v1/admin/experiments",
            get(experiments::list).post(experiments::create),
        )
        .route("/v1/admin/experiments/{name}", get(experiments::show))
        .route("/v1/admin/experiments/{name}/end", post(experiments::end))
        .route(
            "/v1/analytics/experiments",
            get(experiments::running_results),
        )
        .route(
            "/v1/analytics/experiments/{name}",
            get(experiments::results_by_name),
        )
        .route(
            "/v1/admin/tenants",
            get(tenants::list).post(tenants::create),
        )
        .route(
            "/v1/admin/tenants/{id}",
            get(tenants::show).delete(tenants::delete),
        )
        .route(
            "/v1/admin/tenants/{id}/keys/{kind}/rotate",
            post(tenants::rotate),
        )
        .route(
            "/v1/admin/tenants/{id}/model",
            axum::routing::put(tenants::set_model),
        )
        .route(
            "/v1/admin/rules",
            get(rules::get_rules)
                .put(rules::put_rules)
                .delete(rules::delete_rules)
                .route_layer(DefaultBodyLimit::max(crate::rules::MAX_RULES_BODY_BYTES)),
        )
        .route(
            "/v1/items",
            post(catalogue::post_items)
                .route_layer(DefaultBodyLimit::max(catalogue::CATALOGUE_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/items/{id}",
            get(catalogue::get_item)
                .put(catalogue::put_item)
                .patch(catalogue::patch_item)
                .delete(catalogue::delete_item),
        )
        .route("/v1/items/{id}/{list}", get(recommendations::item_list))
        .route(
            "/v1/users",
            post(catalogue::post_users)
                .route_layer(DefaultBodyLimit::max(catalogue::CATALOGUE_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/users/{id}",
            get(catalogue::get_user)
                .put(catalogue::put_user)
                .patch(catalogue::patch_user)
                .delete(catalogue::delete_user),
        )
        .route(
            "/v1/admin/tenants/{id}/{*rest}",
            axum::routing::any(tenants::id_with_slash),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}
