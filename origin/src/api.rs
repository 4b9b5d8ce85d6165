//! The HTTP API: recommendations for one user or a batch, regional popular lists and
//! health, all JSON, all input validated, errors as `{"error":{"code","message"}}`.
//!
//! Answers for users with history are also published in the background (edge KV
//! and/or the CDN folder's current generation), at most once per user per freshness
//! window (`freshness::PublishGate`), so the next request is served at the edge; popular fallbacks for unknown users are never published (anyone could fill
//! the KV with made-up ids).
//!
//! # Layout
//! - [`AppState`]: the trained snapshot and the serving settings, shared by handlers.
//! - [`ApiError`]: every way a request can fail, with its status and code.
//! - [`routes`]: the router (the crate's `app` wraps it with middleware).

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::{ErrorBody, IdError, ItemId, RecommendationDoc, Region, Tenant, UserId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::observability::Traffic;
use crate::publish::{CdnFolder, EdgeClient};
use crate::retrain::SharedSnapshot;
use crate::snapshot::{now_unix, DocRequest, Snapshot};

/// Most user ids one batch request may name.
pub const MAX_BATCH_IDS: usize = 1000;
/// `n` when a request names none.
pub const DEFAULT_N: usize = 10;
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
    /// Where answers for known users are published in the background, if anywhere.
    pub edge: Option<EdgeClient>,
    pub cdn: Option<CdnFolder>,
    /// Items per document published in the background (at least the requested `n`).
    pub publish_n: usize,
    /// Background publishes that may run at once; answers beyond that are not published.
    pub publish_slots: Arc<tokio::sync::Semaphore>,
    /// When a user may be published (shared with the republisher): once per freshness
    /// window per user here, never twice within the minimum interval.
    pub publish_gate: crate::freshness::PublishGate,
    /// Event log, freshness, retrain and analytics; `None` turns those routes off (503).
    pub live: Option<Arc<crate::live::Live>>,
    /// Request rate and latency (counted by the middleware).
    pub traffic: Arc<Traffic>,
    /// Per-client request limits (off unless configured).
    pub limits: crate::clients::RateLimits,
}

impl AppState {
    pub fn new(snapshot: Arc<Snapshot>, region: Region) -> Self {
        AppState {
            snapshot: Arc::new(arc_swap::ArcSwap::new(snapshot)),
            region,
            edge: None,
            cdn: None,
            publish_n: DEFAULT_PUBLISH_N,
            publish_slots: Arc::new(tokio::sync::Semaphore::new(MAX_BACKGROUND_PUBLISHES)),
            publish_gate: crate::freshness::PublishGate::default(),
            live: None,
            traffic: Arc::new(Traffic::default()),
            limits: crate::clients::RateLimits::off(),
        }
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
    pub fn with_live(mut self, live: crate::live::Live) -> Self {
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

    pub fn with_edge(mut self, edge: EdgeClient) -> Self {
        self.edge = Some(edge);
        self
    }

    pub fn with_publish_dir(mut self, dir: PathBuf) -> Self {
        self.cdn = Some(CdnFolder::new(dir));
        self
    }
}

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidId(#[from] IdError),
    #[error("this origin serves tenant {served:?}, not {asked:?}")]
    UnknownTenant { asked: String, served: String },
    #[error("n must be a whole number from 1 to {max}, not {0:?}", max = contract::MAX_N)]
    InvalidN(String),
    #[error("region {0:?} is not one of the known regions")]
    InvalidRegion(String),
    #[error("at most {MAX_BATCH_IDS} user ids per batch, not {0}")]
    TooManyIds(usize),
    #[error("user_ids[{index}]: {source}")]
    InvalidBatchId { index: usize, source: IdError },
    #[error("bad query string: {0}")]
    InvalidQuery(String),
    #[error("bad request body: {message}")]
    InvalidBody { status: StatusCode, message: String },
    #[error("user id is not valid percent-encoded UTF-8")]
    UndecodableUserId,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Events(#[from] crate::events::EventError),
    #[error("{0}")]
    InvalidRange(#[from] crate::analytics::RangeError),
    #[error("{0}")]
    InvalidStep(#[from] crate::analytics::StepError),
    #[error("{0}")]
    InvalidLatencyQuery(#[from] crate::latency::LatencyQueryError),
    #[error("bad edge report: {0}")]
    InvalidEdgeReport(String),
    #[error("missing or wrong admin token (Authorization: Bearer <ADMIN_TOKEN>)")]
    Unauthorized,
    #[error("admin routes are off: the origin has no ADMIN_TOKEN")]
    AdminDisabled,
    #[error("this origin runs without an event log")]
    LiveDisabled,
    #[error("the event log is unavailable: {0}")]
    EventLog(String),
    #[error("retrain failed: {0}")]
    Retrain(String),
    #[error("the model is still being trained; retry shortly")]
    ModelLoading,
    #[error("answering failed: {0}")]
    Internal(String),
}

impl From<crate::auth::AuthFailure> for ApiError {
    fn from(f: crate::auth::AuthFailure) -> Self {
        match f {
            crate::auth::AuthFailure::Disabled => ApiError::AdminDisabled,
            crate::auth::AuthFailure::Unauthorized => ApiError::Unauthorized,
        }
    }
}

impl From<crate::event_log::EventLogError> for ApiError {
    fn from(e: crate::event_log::EventLogError) -> Self {
        ApiError::EventLog(e.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownTenant { .. } | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled | ApiError::LiveDisabled | ApiError::EventLog(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Retrain(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ModelLoading => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidId(e) | ApiError::InvalidBatchId { source: e, .. } => e.code(),
            ApiError::UndecodableUserId => "invalid_user_id",
            ApiError::UnknownTenant { .. } => "unknown_tenant",
            ApiError::InvalidN(_) => "invalid_n",
            ApiError::InvalidRegion(_) => "invalid_region",
            ApiError::TooManyIds(_) => "too_many_ids",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidBody { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Events(e) => e.code(),
            ApiError::InvalidRange(_) => "invalid_range",
            ApiError::InvalidStep(_) => "invalid_step",
            ApiError::InvalidLatencyQuery(crate::latency::LatencyQueryError::Range(_))
            | ApiError::InvalidLatencyQuery(crate::latency::LatencyQueryError::RangeTooLong) => {
                "invalid_range"
            }
            ApiError::InvalidLatencyQuery(crate::latency::LatencyQueryError::Step(_)) => {
                "invalid_step"
            }
            ApiError::InvalidLatencyQuery(crate::latency::LatencyQueryError::Route) => {
                "invalid_route"
            }
            ApiError::InvalidEdgeReport(_) => "invalid_edge_report",
            ApiError::Unauthorized => "unauthorized",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::LiveDisabled => "events_disabled",
            ApiError::EventLog(_) => "event_log_unavailable",
            ApiError::Retrain(_) => "retrain_failed",
            ApiError::ModelLoading => "model_loading",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(self, ApiError::ModelLoading);
        let mut resp = (
            self.status(),
            Json(ErrorBody::new(self.code(), self.to_string())),
        )
            .into_response();
        if retry {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}

/// The snapshot serving now, or `503 model_loading` while the first model trains.
fn trained(state: &AppState) -> Result<Arc<Snapshot>, ApiError> {
    let snapshot = state.snapshot();
    if snapshot.loading {
        return Err(ApiError::ModelLoading);
    }
    Ok(snapshot)
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::InvalidQuery(r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::InvalidBody {
            status: if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            },
            message: r.body_text(),
        }
    }
}

/// Query parameters of the GET routes, as sent (validated by the handlers).
#[derive(Debug, Default, Deserialize)]
pub struct RecParams {
    pub n: Option<String>,
    pub context: Option<String>,
    pub tenant: Option<String>,
    pub region: Option<String>,
}

/// Body of `POST /v1/recommendations/batch` (unknown fields are refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub user_ids: Vec<String>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
}

/// Answer of `POST /v1/recommendations/batch`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<RecommendationDoc>,
}

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
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Parses `n`: absent means [`DEFAULT_N`]; otherwise 1 to [`contract::MAX_N`].
pub fn parse_n(raw: Option<&str>) -> Result<usize, ApiError> {
    contract::params::parse_n(raw, DEFAULT_N).map_err(|e| ApiError::InvalidN(e.got))
}

fn check_tenant(state: &AppState, raw: Option<&str>) -> Result<(), ApiError> {
    if let Some(t) = raw {
        let t = Tenant::parse(t)?;
        let served = state.snapshot().tenant.clone();
        if t != served {
            return Err(ApiError::UnknownTenant {
                asked: t.as_str().to_owned(),
                served: served.as_str().to_owned(),
            });
        }
    }
    Ok(())
}

/// A region parameter that names a known region; anything else is ignored.
fn known_region(state: &AppState, raw: Option<&str>) -> Option<Region> {
    raw.and_then(|r| Region::parse(r).ok())
        .filter(|r| state.snapshot().regions.knows(r))
}

/// Publishes the document of a user with history in the background, at most once per
/// freshness window per user (the [`crate::freshness::PublishGate`]); never delays or
/// fails the answer.
///
/// The published document is the user's canonical one (their own region, no context,
/// at least `publish_n` items), not the answer as asked for: the edge serves it to
/// every later request of the user, whatever `n`, `context` or `region` they name.
fn publish_in_background(
    state: &AppState,
    user: &UserId,
    n: usize,
    trace: Option<&crate::observability::TraceContext>,
) {
    if state.edge.is_none() && state.cdn.is_none() {
        return;
    }
    let (gate, admitted) = (&state.publish_gate, tokio::time::Instant::now());
    if !gate.with(|b| b.admit_refresh(user, admitted)) {
        return;
    }
    let Ok(slot) = state.publish_slots.clone().try_acquire_owned() else {
        tracing::debug!(user = %user, "background publishes busy; not publishing");
        gate.with(|b| b.failed(user, admitted));
        return;
    };
    let (state, user) = (state.clone(), user.clone());
    let traceparent = trace.map(|t| t.child().header_value());
    tokio::spawn(async move {
        let _slot = slot;
        let snapshot = state.snapshot();
        let doc = snapshot.user_doc(
            &user,
            &DocRequest {
                n: n.max(state.publish_n),
                fallback_region: Some(&state.region),
                ..Default::default()
            },
            now_unix(),
        );
        let tenant = &snapshot.tenant;
        let content = crate::freshness::ContentHash::of(&doc.items);
        let outcome = crate::publish::publish_one_traced(
            state.edge.as_ref(),
            state.cdn.as_ref(),
            tenant,
            doc,
            traceparent.as_deref(),
        )
        .await;
        let ok = outcome.all_ok();
        state.publish_gate.settle(&user, admitted, content, ok);
        if let Some(live) = &state.live {
            if let Some(r) = &outcome.cdn {
                live.health.record("cdn", r);
            }
            if let Some(r) = &outcome.kv {
                live.health.record("kv", r);
            }
        }
    });
}

/// The trace context the middleware put into the request, when it ran.
type Trace = Option<axum::Extension<crate::observability::TraceContext>>;

async fn recommendations(
    State(state): State<AppState>,
    trace: Trace,
    user: Result<Path<String>, PathRejection>,
    params: Result<Query<RecParams>, QueryRejection>,
) -> Result<Json<RecommendationDoc>, ApiError> {
    let Path(user) = user.map_err(|_| ApiError::UndecodableUserId)?;
    answer(state, &user, params, trace).await
}

/// `GET /v1/recommendations/batch`: the static batch route shadows the user named
/// `batch`, so its GET is answered here.
async fn recommendations_for_user_named_batch(
    State(state): State<AppState>,
    trace: Trace,
    params: Result<Query<RecParams>, QueryRejection>,
) -> Result<Json<RecommendationDoc>, ApiError> {
    answer(state, "batch", params, trace).await
}

async fn answer(
    state: AppState,
    user: &str,
    params: Result<Query<RecParams>, QueryRejection>,
    trace: Trace,
) -> Result<Json<RecommendationDoc>, ApiError> {
    let user = UserId::parse(user)?;
    let Query(params) = params?;
    check_tenant(&state, params.tenant.as_deref())?;
    let n = parse_n(params.n.as_deref())?;
    let context = non_empty(&params.context).map(ItemId::parse).transpose()?;
    let region = known_region(&state, non_empty(&params.region));
    let snapshot = trained(&state)?;
    let doc = snapshot.user_doc(
        &user,
        &DocRequest {
            n,
            context: context.as_ref(),
            region: region.as_ref(),
            fallback_region: Some(&state.region),
        },
        now_unix(),
    );
    if snapshot.has_history(&user) {
        publish_in_background(&state, &user, n, trace.as_ref().map(|t| &t.0));
    }
    Ok(Json(doc))
}

/// A raw `/` in the user id segment: the router splits it, so it is refused here.
async fn user_id_with_slash(path: Result<Path<(String, String)>, PathRejection>) -> ApiError {
    let Ok(Path((user, _rest))) = path else {
        return ApiError::UndecodableUserId;
    };
    ApiError::InvalidId(IdError::BadChar {
        kind: "user id",
        found: '/',
        at: user.len(),
        allowed: "A-Z a-z 0-9 . _ @ -",
    })
}

async fn batch(
    State(state): State<AppState>,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Json<BatchResponse>, ApiError> {
    let Json(body) = body?;
    if body.user_ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::TooManyIds(body.user_ids.len()));
    }
    check_tenant(&state, body.tenant.as_deref())?;
    let n = match body.n {
        None => DEFAULT_N,
        Some(n) => parse_n(Some(&n.to_string()))?,
    };
    let users = body
        .user_ids
        .iter()
        .enumerate()
        .map(|(index, u)| {
            UserId::parse(u).map_err(|source| ApiError::InvalidBatchId { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let region = known_region(&state, non_empty(&body.region));
    let now = now_unix();
    let snapshot = trained(&state)?;
    let fallback = state.region.clone();
    let results = tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        users
            .par_iter()
            .map(|u| {
                snapshot.user_doc(
                    u,
                    &DocRequest {
                        n,
                        context: None,
                        region: region.as_ref(),
                        fallback_region: Some(&fallback),
                    },
                    now,
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "a batch answer failed");
        ApiError::Internal("a worker failed while answering the batch".into())
    })?;
    Ok(Json(BatchResponse { results }))
}

async fn popular(
    State(state): State<AppState>,
    params: Result<Query<RecParams>, QueryRejection>,
) -> Result<Json<RecommendationDoc>, ApiError> {
    let Query(params) = params?;
    check_tenant(&state, params.tenant.as_deref())?;
    let n = parse_n(params.n.as_deref())?;
    let region = match non_empty(&params.region) {
        None => state.region.clone(),
        Some(r) => known_region(&state, Some(r))
            .ok_or_else(|| ApiError::InvalidRegion(r.chars().take(40).collect()))?,
    };
    Ok(Json(trained(&state)?.popular_doc(&region, n, now_unix())))
}

/// Whether the store takes writes (see [`crate::event_log::WriteHealth`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreHealth {
    pub writable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn health(State(state): State<AppState>) -> Json<Health> {
    let s = state.snapshot();
    let store = state.live.as_ref().map(|l| {
        let w = l.log.write_health();
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
    })
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The API routes with JSON 404/405 fallbacks, without middleware.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/recommendations/batch",
            post(batch).get(recommendations_for_user_named_batch),
        )
        .route("/v1/recommendations/{user_id}", get(recommendations))
        .route(
            "/v1/recommendations/{user_id}/{*rest}",
            get(user_id_with_slash),
        )
        .route("/v1/popular", get(popular))
        .route("/health", get(health))
        .route("/dashboard", get(crate::dashboard::dashboard_page))
        .merge(crate::live::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn state(dir: &std::path::Path) -> (AppState, crate::store::Store) {
        let (snapshot, store) = crate::snapshot::fixture(dir);
        (
            AppState::new(Arc::new(snapshot), Region::parse("us-east").unwrap()),
            store,
        )
    }

    async fn call(state: &AppState, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = crate::app(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(ct.as_deref(), Some("application/json"), "status {status}");
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn get(state: &AppState, uri: &str) -> (StatusCode, serde_json::Value) {
        call(state, Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post(state: &AppState, uri: &str, body: String) -> (StatusCode, serde_json::Value) {
        call(
            state,
            Request::post(uri)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    #[tokio::test]
    async fn a_known_user_gets_personal_recommendations_without_seen_items() {
        let dir = tempfile::tempdir().unwrap();
        let (state, store) = state(dir.path());
        let (status, body) = get(&state, "/v1/recommendations/u1?n=20").await;
        assert_eq!(status, StatusCode::OK);
        let doc: RecommendationDoc = serde_json::from_value(body).unwrap();
        assert_eq!(doc.user_id, "u1");
        assert_eq!(doc.tenant, "default");
        assert_eq!(doc.items.len(), 20);
        assert!(doc.model_version.ends_with("#itemknn-k50-s10"));
        assert_eq!(doc.fresh_for_s, 300);
        let seen: Vec<String> = store
            .user_history("u1")
            .unwrap()
            .into_iter()
            .map(|r| r.item_id)
            .collect();
        assert!(!seen.is_empty());
        assert!(doc.items.iter().all(|i| !seen.contains(&i.item_id)));
        assert!(doc.items[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("similar to i"));
        assert!(doc.items.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[tokio::test]
    async fn unknown_user_gets_the_regional_popular_list() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/recommendations/nobody?region=europe").await;
        assert_eq!(status, StatusCode::OK);
        let doc: RecommendationDoc = serde_json::from_value(body).unwrap();
        assert_eq!(doc.user_id, "nobody");
        assert_eq!(doc.region, "europe");
        assert_eq!(doc.items.len(), DEFAULT_N);
        assert!(doc
            .items
            .iter()
            .all(|i| i.reason.as_deref() == Some("popular in europe")));
        let popular: RecommendationDoc =
            serde_json::from_value(get(&state, "/v1/popular?region=europe").await.1).unwrap();
        assert_eq!(popular.user_id, "*");
        assert_eq!(popular.items, doc.items);
    }

    #[tokio::test]
    async fn an_unknown_user_without_region_gets_the_origins_region() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (_, body) = get(&state, "/v1/recommendations/nobody?region=not-a-region").await;
        assert_eq!(body["region"], "us-east");
    }

    #[tokio::test]
    async fn a_cold_start_user_with_context_gets_items_like_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/recommendations/nobody?context=i1&n=3").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["items"][0]["reason"], "like i1");
    }

    #[tokio::test]
    async fn bad_user_ids_are_refused_with_400_json() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let long = "a".repeat(1000);
        for uri in [
            "/v1/recommendations/a%2Fb".to_owned(),
            "/v1/recommendations/a/b".to_owned(),
            "/v1/recommendations/..".to_owned(),
            format!("/v1/recommendations/{long}"),
            "/v1/recommendations/a%0Ab".to_owned(),
            "/v1/recommendations/a%00b".to_owned(),
            "/v1/recommendations/%FF".to_owned(),
            "/v1/recommendations/%FF/x".to_owned(),
            "/v1/recommendations/%2E%2E".to_owned(),
        ] {
            let (status, body) = get(&state, &uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(body["error"]["code"], "invalid_user_id", "{uri}");
        }
    }

    #[tokio::test]
    async fn bad_n_values_are_refused_with_400_json() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        for n in ["0", "100000", "abc", "-1", "", "101"] {
            let (status, body) = get(&state, &format!("/v1/recommendations/u1?n={n}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "n={n}");
            assert_eq!(body["error"]["code"], "invalid_n", "n={n}");
        }
        let (status, _) = get(&state, "/v1/recommendations/u1?n=100").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn another_tenant_is_a_404_and_a_bad_tenant_a_400() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/recommendations/u1?tenant=other").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "unknown_tenant");
        let (status, body) = get(&state, "/v1/popular?tenant=Bad%2F").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_tenant");
        let (status, _) = get(&state, "/v1/recommendations/u1?tenant=default").await;
        assert_eq!(status, StatusCode::OK);
        // An empty tenant is refused, as at the edge (contract::params).
        let (status, body) = get(&state, "/v1/recommendations/u1?tenant=").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_tenant");
    }

    #[tokio::test]
    async fn a_bad_context_item_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/recommendations/u1?context=..").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_item_id");
    }

    #[tokio::test]
    async fn unknown_routes_and_wrong_methods_get_json_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
        let (status, body) = post(&state, "/health", String::new()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    #[tokio::test]
    async fn a_batch_answers_every_user_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = post(
            &state,
            "/v1/recommendations/batch",
            r#"{"user_ids":["u1","u2","nobody"],"n":5}"#.into(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let resp: BatchResponse = serde_json::from_value(body).unwrap();
        let ids: Vec<&str> = resp.results.iter().map(|d| d.user_id.as_str()).collect();
        assert_eq!(ids, ["u1", "u2", "nobody"]);
        assert!(resp.results.iter().all(|d| d.items.len() == 5));
    }

    #[tokio::test]
    async fn a_user_named_batch_can_still_be_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/recommendations/batch?n=2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["user_id"], "batch");
    }

    #[tokio::test]
    async fn a_batch_over_1000_ids_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let body = serde_json::json!({ "user_ids": ids }).to_string();
        let (status, body) = post(&state, "/v1/recommendations/batch", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "too_many_ids");
    }

    #[tokio::test]
    async fn a_batch_with_a_bad_id_or_body_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = post(
            &state,
            "/v1/recommendations/batch",
            r#"{"user_ids":["u1","a/b"]}"#.into(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_user_id");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("user_ids[1]"));
        let (status, body) = post(&state, "/v1/recommendations/batch", "{not json".into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_body");
        let (status, body) = post(
            &state,
            "/v1/recommendations/batch",
            r#"{"user_ids":["u1"],"n":0}"#.into(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_n");
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_with_413_json() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let big = format!(r#"{{"user_ids":["{}"]}}"#, "a".repeat(MAX_BODY_BYTES + 10));
        let (status, body) = post(&state, "/v1/recommendations/batch", big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "body_too_large");
    }

    #[tokio::test]
    async fn health_reports_counts_and_model() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/health").await;
        assert_eq!(status, StatusCode::OK);
        let h: Health = serde_json::from_value(body).unwrap();
        assert_eq!(h.status, "ok");
        assert_eq!(h.tenant, "default");
        assert_eq!(h.region, "us-east");
        assert_eq!(h.users, 200);
        assert_eq!(h.items, 80);
        assert!(h.interactions > 0);
        assert!(
            h.model_version.ends_with("#itemknn-k50-s10"),
            "{}",
            h.model_version
        );
    }

    #[tokio::test]
    async fn an_invalid_popular_region_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/popular?region=mars").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_region");
    }

    #[tokio::test]
    async fn a_known_users_answer_is_written_into_the_current_cdn_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let cdn = dir.path().join("cdn");
        let folder = CdnFolder::new(cdn.clone());
        folder.new_generation(1).unwrap().activate().unwrap();
        let state = state.with_publish_dir(cdn.clone());
        let (status, _) = get(&state, "/v1/recommendations/u1?n=3&region=us-west").await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = get(&state, "/v1/recommendations/nobody").await;
        assert_eq!(status, StatusCode::OK);
        let user_file = cdn.join("current/default/users/u1.json");
        let mut waited = 0;
        while !user_file.exists() && waited < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            waited += 1;
        }
        let doc: RecommendationDoc =
            serde_json::from_slice(&std::fs::read(&user_file).unwrap()).unwrap();
        assert_eq!(doc.user_id, "u1");
        assert_eq!(doc.items.len(), DEFAULT_PUBLISH_N, "the canonical document");
        let snapshot = state.snapshot();
        let own = snapshot
            .known_user_region(&UserId::parse("u1").unwrap())
            .unwrap();
        assert_eq!(doc.region, own.as_str(), "the user's own region");
        assert!(!cdn.join("current/default/users/nobody.json").exists());
    }

    /// A model that fails while answering, as a bug in a model would.
    struct Panics;

    impl crate::model::Recommender for Panics {
        fn name(&self) -> String {
            "panics".into()
        }
        fn recommend(&self, _: &crate::model::Query<'_>) -> Vec<crate::model::Scored> {
            panic!("a model bug")
        }
    }

    #[tokio::test]
    async fn a_worker_failure_in_a_batch_is_a_500_json_not_an_empty_200() {
        let dir = tempfile::tempdir().unwrap();
        let (_, store) = crate::snapshot::fixture(dir.path());
        let snapshot = Snapshot::build(
            &store,
            Tenant::default_tenant(),
            contract::RegionMap::builtin(),
            crate::snapshot::Freshness::default(),
            |_| Arc::new(Panics),
        )
        .unwrap();
        let user = snapshot.user_ids()[0].clone();
        let state = AppState::new(Arc::new(snapshot), Region::parse("us-east").unwrap());
        let body = serde_json::json!({ "user_ids": [user] }).to_string();
        let req = Request::post("/v1/recommendations/batch")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, json) = call(&state, req).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{json}");
        assert_eq!(json["error"]["code"], "internal");
    }
}
