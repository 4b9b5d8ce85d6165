//! The live routes of the origin: event ingest, analytics, edge reports and the
//! admin retrain, with what they share ([`Live`]).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/events` | one event or `{"events":[...]}` (≤ 500); `202` after commit |
//! | `POST /v1/impressions` | the edge's impressions, `{"shown":[...]}` whole answers (≤ 1,000 answers, ≤ 10,000 items); `202` after commit |
//! | `GET /v1/analytics/recommendations?range=24h` | the recommendation funnel |
//! | `GET /v1/analytics/real-time` | request rate, active users, edge hit rate, health |
//! | `POST /v1/analytics/edge-report` | the edge's cache counters (admin token) |
//! | `POST /v1/admin/retrain` | full retrain and atomic swap (admin token) |
//!
//! Without a [`Live`] in the state these routes answer 503 `events_disabled`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::analytics::{self, RecommendationAnalytics};
use crate::api::{ApiError, AppState};
use crate::auth::check_bearer;
use crate::clients::{client_of, Client};
use crate::config::Secret;
use crate::event_log::EventLog;
use crate::events::{parse_body, parse_impressions, Event, EventError, Limits};
use crate::freshness::{PublishHealth, Republisher, TargetHealth};
use crate::observability::TraceContext;
use crate::retrain::{RetrainReport, Retrainer};
use crate::snapshot::now_unix;

/// Largest `POST /v1/events` body: 500 events with some context each.
pub const EVENTS_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Default clock skew allowed for event timestamps, in seconds.
pub const DEFAULT_MAX_FUTURE_S: i64 = 300;

/// What the live routes share.
pub struct Live {
    pub log: EventLog,
    /// Republishes touched users; `None` when there is nothing to publish to.
    pub republisher: Option<Republisher>,
    pub retrainer: Option<Arc<Retrainer>>,
    /// Bearer token of the admin routes; `None` turns them off (503).
    pub admin_token: Option<Secret>,
    /// How far ahead of the origin's clock an event timestamp may be.
    pub max_future_s: i64,
    pub health: Arc<PublishHealth>,
}

impl Live {
    pub fn new(log: EventLog) -> Self {
        Live {
            log,
            republisher: None,
            retrainer: None,
            admin_token: None,
            max_future_s: DEFAULT_MAX_FUTURE_S,
            health: Arc::new(PublishHealth::default()),
        }
    }
}

fn live(state: &AppState) -> Result<&Arc<Live>, ApiError> {
    state.live.as_ref().ok_or(ApiError::LiveDisabled)
}

/// Answer of `POST /v1/events`.
pub use contract::events::EventsAccepted as Accepted;

fn body_error(r: BytesRejection) -> ApiError {
    ApiError::InvalidBody {
        status: if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        },
        message: r.body_text(),
    }
}

/// The peer address the server loop recorded, when it did (not in `oneshot` tests).
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

/// `POST /v1/events`: one event or a batch, from browsers (through the edge) or backends.
async fn post_events(
    State(state): State<AppState>,
    trace: Option<Extension<TraceContext>>,
    peer: Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live(&state)?.clone();
    let client = client_of(
        &headers,
        peer.map(|Extension(ConnectInfo(a))| a.ip()),
        live.admin_token.as_ref(),
    );
    ingest(state, live, trace, client, body, parse_body).await
}

/// `POST /v1/impressions`: the edge's impressions as whole answers, stored as the same
/// `recommendation_viewed` events `/v1/events` would store, one per item. Only the
/// edge sends them: the admin token is required, so nobody else can inflate CTR.
async fn post_impressions(
    State(state): State<AppState>,
    trace: Option<Extension<TraceContext>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live(&state)?.clone();
    check_bearer(&headers, live.admin_token.as_ref())?;
    let client = client_of(&headers, None, live.admin_token.as_ref());
    ingest(state, live, trace, client, body, parse_impressions).await
}

/// Validates a body with `parse` (all or nothing), commits its events to the log, and
/// republishes the users whose history they changed.
async fn ingest(
    state: AppState,
    live: Arc<Live>,
    trace: Option<Extension<TraceContext>>,
    client: Client,
    body: Result<Bytes, BytesRejection>,
    parse: fn(&[u8], &Limits<'_>) -> Result<Vec<Event>, EventError>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = body.map_err(body_error)?;
    let snapshot = state.snapshot();
    let mut events = parse(
        &body,
        &Limits {
            now: now_unix() as i64,
            max_future_s: live.max_future_s,
            regions: &snapshot.regions,
        },
    )?;
    // The log records the region each event counts for, so a replay needs nothing else.
    for e in &mut events {
        if e.region.is_none() {
            e.region = Some(
                snapshot
                    .known_user_region(&e.user_id)
                    .unwrap_or(&state.region)
                    .clone(),
            );
        }
    }
    let touched: Vec<_> = {
        let mut seen = HashSet::new();
        events
            .iter()
            .filter(|e| e.weight().is_some() && seen.insert(e.user_id.clone()))
            .map(|e| e.user_id.clone())
            .collect()
    };
    let mut per_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &events {
        *per_type.entry(e.kind.as_str()).or_default() += 1;
    }
    let n = events.len();
    let appended = live.log.append_from(events, client.key).await?;
    let committed_at = tokio::time::Instant::now();
    for (kind, count) in per_type {
        metrics::counter!("origin_events_ingested_total", "type" => kind).increment(count);
    }
    if let Some(r) = &live.republisher {
        let trace = trace.map(|Extension(t)| t);
        for user in touched {
            r.touch(user, committed_at, trace.clone());
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: n,
            first_seq: appended.first_seq,
            last_seq: appended.last_seq,
            duplicates: appended.duplicates,
        }),
    ))
}

async fn retrain(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RetrainReport>, ApiError> {
    let live = live(&state)?;
    check_bearer(&headers, live.admin_token.as_ref())?;
    let retrainer = live
        .retrainer
        .as_ref()
        .ok_or_else(|| ApiError::Retrain("this origin has no retrainer".into()))?;
    let report = retrainer
        .retrain()
        .await
        .map_err(|e| ApiError::Retrain(e.to_string()))?;
    Ok(Json(report))
}

async fn edge_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let live = live(&state)?;
    check_bearer(&headers, live.admin_token.as_ref())?;
    let body = body.map_err(body_error)?;
    // The contract's rules, as the edge applies them: strict JSON (no duplicate keys),
    // hits <= requests <= a plausible maximum.
    let report = contract::events::parse_edge_report(&body)
        .map_err(|e| ApiError::InvalidEdgeReport(e.to_string()))?;
    if let Some(r) = &report.region {
        let known = contract::Region::parse(r)
            .ok()
            .is_some_and(|r| state.snapshot().regions.knows(&r));
        if !known {
            return Err(ApiError::InvalidEdgeReport(format!(
                "region {:?} is not one of the known regions",
                r.chars().take(40).collect::<String>()
            )));
        }
    }
    let now_ms = now_unix() as i64 * 1000;
    live.log
        .read(move |conn| analytics::record_edge_report(conn, &report, now_ms))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": true })),
    ))
}

/// Query of `GET /v1/analytics/recommendations`.
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    pub range: Option<String>,
}

async fn recommendations_analytics(
    State(state): State<AppState>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<RecommendationAnalytics>, ApiError> {
    let live = live(&state)?;
    let Query(params) = params?;
    let range = params.range.unwrap_or_else(|| "24h".into());
    let range_s = analytics::parse_range(&range)?;
    let now = now_unix() as i64;
    let report = live
        .log
        .read(move |conn| analytics::recommendations(conn, &range, range_s, now))
        .await?;
    Ok(Json(report))
}

/// Health of the store in `GET /v1/analytics/real-time`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreHealth {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Answer of `GET /v1/analytics/real-time`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealTime {
    /// HTTP requests per second at this origin over the last minute.
    pub requests_per_second: f64,
    pub requests_total: u64,
    #[serde(flatten)]
    pub counts: Option<analytics::RealTimeCounts>,
    pub store: StoreHealth,
    /// Last success and failure of each publish target (`kv`, `cdn`, `purge`).
    pub publishers: BTreeMap<String, TargetHealth>,
    pub model_version: String,
    pub generated_at: u64,
}

async fn real_time(State(state): State<AppState>) -> Result<Json<RealTime>, ApiError> {
    let live = live(&state)?;
    let now = now_unix();
    let counts = live
        .log
        .read(move |conn| analytics::real_time_counts(conn, now as i64 * 1000))
        .await;
    let (counts, store) = match counts {
        Ok(c) => (
            Some(c),
            StoreHealth {
                ok: true,
                error: None,
            },
        ),
        Err(e) => (
            None,
            StoreHealth {
                ok: false,
                error: Some(e.to_string()),
            },
        ),
    };
    Ok(Json(RealTime {
        requests_per_second: state.traffic.rate.per_second(now),
        requests_total: state.traffic.rate.total(),
        counts,
        store,
        publishers: live.health.snapshot(),
        model_version: state.snapshot().model_version(),
        generated_at: now,
    }))
}

/// Query of `GET /v1/analytics/timeline`.
#[derive(Debug, Deserialize)]
pub struct TimelineParams {
    pub range: Option<String>,
    pub step: Option<String>,
}

/// Whole minutes: timeline steps are multiples of this.
const TIMELINE_STEP_MULTIPLE_S: u64 = 60;

/// The funnel, region mix and edge hit rate per step (default: the last hour by minute).
async fn timeline_analytics(
    State(state): State<AppState>,
    params: Result<Query<TimelineParams>, QueryRejection>,
) -> Result<Json<analytics::Timeline>, ApiError> {
    let live = live(&state)?;
    let Query(p) = params?;
    let range = p.range.unwrap_or_else(|| "1h".into());
    let range_s = analytics::parse_range(&range)?;
    let step_s = analytics::parse_step(
        p.step.as_deref(),
        range_s,
        TIMELINE_STEP_MULTIPLE_S,
        analytics::MAX_TIMELINE_POINTS,
    )?;
    let now = now_unix() as i64;
    let timeline = live
        .log
        .read(move |conn| analytics::timeline(conn, &range, range_s, step_s, now))
        .await?;
    Ok(Json(timeline))
}

/// Query of `GET /v1/analytics/latency`.
#[derive(Debug, Deserialize)]
pub struct LatencyParams {
    pub range: Option<String>,
    pub step: Option<String>,
    pub route: Option<String>,
}

/// Request latency per step and route, from the middleware's in-memory window (works
/// without an event log too).
async fn latency_analytics(
    State(state): State<AppState>,
    params: Result<Query<LatencyParams>, QueryRejection>,
) -> Result<Json<crate::latency::LatencySeries>, ApiError> {
    let Query(p) = params?;
    let q = crate::latency::parse_query(p.range.as_deref(), p.step.as_deref(), p.route.as_deref())?;
    Ok(Json(state.traffic.latency.series(&q, now_unix())))
}

/// The live routes (merged into the API router by `api::routes`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/events",
            post(post_events).route_layer(DefaultBodyLimit::max(EVENTS_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/impressions",
            post(post_impressions).route_layer(DefaultBodyLimit::max(EVENTS_MAX_BODY_BYTES)),
        )
        .route(
            "/v1/analytics/recommendations",
            get(recommendations_analytics),
        )
        .route("/v1/analytics/real-time", get(real_time))
        .route("/v1/analytics/latency", get(latency_analytics))
        .route("/v1/analytics/timeline", get(timeline_analytics))
        .route("/v1/analytics/edge-report", post(edge_report))
        .route("/v1/admin/retrain", post(retrain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    struct Fixture {
        state: AppState,
        _dir: tempfile::TempDir,
    }

    fn fixture(token: Option<&str>) -> Fixture {
        fixture_with(token, None)
    }

    /// With `cdn`, touched users are republished into that CDN folder after 20 ms.
    fn fixture_with(token: Option<&str>, cdn: Option<std::path::PathBuf>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let path = dir.path().join("fixture.sqlite");
        let state = AppState::new(
            Arc::new(snapshot),
            contract::Region::parse("us-east").unwrap(),
        );
        let mut live = Live::new(EventLog::open(&path, 1000).unwrap());
        live.admin_token = token.map(Secret::new);
        live.retrainer = Some(Arc::new(Retrainer::new(
            path,
            contract::Tenant::default_tenant(),
            contract::RegionMap::builtin(),
            crate::snapshot::Freshness::default(),
            Arc::new(crate::snapshot::fixture_model),
            state.snapshot.clone(),
        )));
        live.republisher = cdn.map(|dir| {
            Republisher::spawn(
                crate::freshness::Targets {
                    log: live.log.clone(),
                    snapshot: state.snapshot.clone(),
                    edge: None,
                    cdn: Some(crate::publish::CdnFolder::new(dir)),
                    region: state.region.clone(),
                    publish_n: 10,
                    health: live.health.clone(),
                    gate: state.publish_gate.clone(),
                },
                std::time::Duration::from_millis(20),
            )
        });
        Fixture {
            state: state.with_live(live),
            _dir: dir,
        }
    }

    async fn call(
        state: &AppState,
        method: &str,
        uri: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = crate::app(state.clone())
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn events_are_acknowledged_with_their_seq_range_after_commit() {
        let f = fixture(None);
        let (status, body) = call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"click"},
                          {"user_id":"u2","item_id":"i2","type":"recommendation_viewed","value":0.5}]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(
            body,
            serde_json::json!({"accepted":2,"first_seq":1,"last_seq":2,"duplicates":0})
        );
        let (status, body) = call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"user_id":"u1","item_id":"i3","type":"view"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["first_seq"], 3);
        let live = f.state.live.clone().unwrap();
        let logged = live
            .log
            .read(|c| crate::event_log::read_events(c, 1, 3))
            .await
            .unwrap();
        assert_eq!(logged.len(), 3);
        let own = f
            .state
            .snapshot()
            .known_user_region(&contract::UserId::parse("u1").unwrap())
            .cloned();
        assert_eq!(
            logged[0].1.region, own,
            "a missing region is the user's own"
        );
    }

    #[tokio::test]
    async fn a_bad_event_batch_is_refused_whole_with_400_json() {
        let f = fixture(None);
        let one = r#"{"user_id":"u1","item_id":"i1","type":"view"}"#;
        let body = format!(r#"{{"events":[{}]}}"#, vec![one; 501].join(","));
        let (status, json) = call(&f.state, "POST", "/v1/events", None, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["code"], "too_many_events");
        let (status, json) = call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"view"},{"user_id":"u1","item_id":"i1","type":"rating","value":9}]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(json["error"]["code"], "invalid_value");
        let live = f.state.live.clone().unwrap();
        let logged = live
            .log
            .read(|c| crate::event_log::read_events(c, 0, i64::MAX))
            .await
            .unwrap();
        assert!(logged.is_empty(), "nothing of a refused batch is stored");
    }

    #[tokio::test]
    async fn a_full_batch_with_context_fits_the_events_body_limit() {
        let f = fixture(None);
        let context = "x".repeat(1500);
        let one = format!(
            r#"{{"user_id":"u1","item_id":"i1","type":"view","context":{{"note":"{context}"}}}}"#
        );
        let body = format!(r#"{{"events":[{}]}}"#, vec![one; 500].join(","));
        assert!(body.len() > crate::api::MAX_BODY_BYTES);
        let (status, json) = call(&f.state, "POST", "/v1/events", None, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert_eq!(json["accepted"], 500);
        let huge = "y".repeat(EVENTS_MAX_BODY_BYTES + 1);
        let (status, json) = call(&f.state, "POST", "/v1/events", None, &huge).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["error"]["code"], "body_too_large");
    }

    #[tokio::test]
    async fn retrain_needs_the_admin_token() {
        let f = fixture(Some("s3cret"));
        let (status, body) = call(&f.state, "POST", "/v1/admin/retrain", None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = call(
            &f.state,
            "POST",
            "/v1/admin/retrain",
            Some("Bearer nope"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let before = f.state.snapshot().model_version();
        let (status, body) = call(
            &f.state,
            "POST",
            "/v1/admin/retrain",
            Some("Bearer s3cret"),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["old_model_version"], before);
        assert_eq!(
            body["new_model_version"],
            f.state.snapshot().model_version()
        );
        assert_ne!(body["new_model_version"], before);
        assert!(body["train_seconds"].as_f64().unwrap() >= 0.0);
    }

    #[tokio::test]
    async fn admin_routes_are_off_without_a_token() {
        let f = fixture(None);
        let (status, body) =
            call(&f.state, "POST", "/v1/admin/retrain", Some("Bearer x"), "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "admin_disabled");
        let (status, _) = call(
            &f.state,
            "POST",
            "/v1/analytics/edge-report",
            Some("Bearer x"),
            r#"{"requests":1,"hits":1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn impressions_in_compact_form_are_stored_as_recommendation_viewed_events() {
        let f = fixture(Some("t"));
        let now = now_unix();
        let body = format!(
            r#"{{"shown":[
              {{"user_id":"u1","source":"edge-cache","region":"europe","timestamp":{now},
                "items":[{{"item_id":"i1","score":0.8}},{{"item_id":"i2","score":0.4}}]}},
              {{"user_id":"u2","source":"kv","region":"asia","timestamp":{now},
                "items":[{{"item_id":"i3","score":0.6}}]}}]}}"#
        );
        // Only the edge (with the admin token) may report impressions.
        let (status, json) = call(&f.state, "POST", "/v1/impressions", None, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
        let (status, json) =
            call(&f.state, "POST", "/v1/impressions", Some("Bearer t"), &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert_eq!(json["accepted"], 3);
        let (_, r) = call(
            &f.state,
            "GET",
            "/v1/analytics/recommendations?range=1h",
            None,
            "",
        )
        .await;
        assert_eq!(r["impressions"], 3, "{r}");
        assert_eq!(r["by_source"]["edge-cache"]["impressions"], 2, "{r}");
        assert_eq!(r["by_region"]["asia"]["impressions"], 1, "{r}");
        assert!((r["avg_impression_score"].as_f64().unwrap() - 0.6).abs() < 1e-9);

        // One bad item refuses the whole body, named by answer and item.
        let bad = body.replace(r#""item_id":"i3""#, r#""item_id":"bad id""#);
        let (status, json) =
            call(&f.state, "POST", "/v1/impressions", Some("Bearer t"), &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("shown[1].items[0]: "), "{message}");
        let (_, r) = call(
            &f.state,
            "GET",
            "/v1/analytics/recommendations?range=1h",
            None,
            "",
        )
        .await;
        assert_eq!(
            r["impressions"], 3,
            "nothing of the refused body was stored: {r}"
        );
    }

    #[tokio::test]
    async fn analytics_report_the_funnel_and_the_edge_hit_rate() {
        let f = fixture(Some("t"));
        let now = now_unix();
        let body = format!(
            r#"{{"events":[
              {{"user_id":"u1","item_id":"i1","type":"recommendation_viewed","value":0.8,"source":"kv","region":"europe","timestamp":{now}}},
              {{"user_id":"u1","item_id":"i2","type":"recommendation_viewed","value":0.4,"source":"kv","region":"europe","timestamp":{now}}},
              {{"user_id":"u1","item_id":"i1","type":"click","source":"kv","region":"europe","timestamp":{now}}}]}}"#
        );
        let (status, _) = call(&f.state, "POST", "/v1/events", None, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, r) = call(
            &f.state,
            "GET",
            "/v1/analytics/recommendations?range=1h",
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["impressions"], 2);
        assert_eq!(r["clicks"], 1);
        assert_eq!(r["ctr"], 0.5);
        assert!((r["avg_impression_score"].as_f64().unwrap() - 0.6).abs() < 1e-9);
        assert_eq!(r["by_source"]["kv"]["impressions"], 2);
        assert_eq!(r["top_items"][0]["item_id"], "i1");
        let (status, r) = call(
            &f.state,
            "GET",
            "/v1/analytics/recommendations?range=forever",
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(r["error"]["code"], "invalid_range");
        let (status, _) = call(
            &f.state,
            "POST",
            "/v1/analytics/edge-report",
            Some("Bearer t"),
            r#"{"requests":10,"hits":7,"region":"asia"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, r) = call(
            &f.state,
            "POST",
            "/v1/analytics/edge-report",
            Some("Bearer t"),
            r#"{"requests":1,"hits":7}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(r["error"]["code"], "invalid_edge_report");
        let (status, r) = call(&f.state, "GET", "/v1/analytics/real-time", None, "").await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(r["active_users"], 1);
        assert_eq!(r["edge_cache"]["hit_rate"], 0.7);
        assert_eq!(r["store"]["ok"], true);
        assert!(r["requests_per_second"].as_f64().unwrap() > 0.0);
    }

    #[tokio::test]
    async fn an_event_republishes_the_users_document_without_the_item_just_bought() {
        let root = tempfile::tempdir().unwrap();
        let cdn = root.path().join("cdn");
        let folder = crate::publish::CdnFolder::new(cdn.clone());
        folder.new_generation(1).unwrap().activate().unwrap();
        let f = fixture_with(None, Some(cdn.clone()));
        let (_, doc) = call(&f.state, "GET", "/v1/recommendations/u1?n=1", None, "").await;
        let top = doc["items"][0]["item_id"].as_str().unwrap().to_owned();
        let body = format!(r#"{{"user_id":"u1","item_id":"{top}","type":"purchase"}}"#);
        let (status, _) = call(&f.state, "POST", "/v1/events", None, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        // The republish is done once its success is recorded, just after the file is
        // renamed into place: wait for the record, not for the file.
        let live = f.state.live.as_ref().unwrap();
        let mut waited = 0;
        while !live.health.snapshot().contains_key("cdn") && waited < 500 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        let file = cdn.join("current/default/users/u1.json");
        let doc: contract::RecommendationDoc =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(doc.items.len(), 10);
        assert!(
            doc.items.iter().all(|i| i.item_id != top),
            "the bought item {top} is now in the history, so it is not recommended"
        );
        let health = live.health.snapshot();
        assert_eq!(health["cdn"].successes, 1, "{health:?}");
    }

    #[tokio::test]
    async fn without_an_event_log_the_live_routes_answer_503() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let state = AppState::new(Arc::new(snapshot), contract::Region::parse("asia").unwrap());
        let (status, body) = call(
            &state,
            "POST",
            "/v1/events",
            None,
            r#"{"user_id":"u1","item_id":"i1","type":"view"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "events_disabled");
    }

    #[tokio::test]
    async fn latency_per_route_is_reported_after_requests() {
        let f = fixture(None);
        for _ in 0..3 {
            call(
                &f.state,
                "POST",
                "/v1/events",
                None,
                r#"{"user_id":"u1","item_id":"i1","type":"view"}"#,
            )
            .await;
        }
        call(&f.state, "GET", "/health", None, "").await;
        let (status, body) = call(
            &f.state,
            "GET",
            "/v1/analytics/latency?range=5m&route=/v1/events",
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["step_s"], 10);
        assert_eq!(body["points"].as_array().unwrap().len(), 30);
        assert_eq!(body["total"]["requests"], 3, "only /v1/events: {body}");
        assert!(body["total"]["p99_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(body["by_route"]["/health"]["requests"], 1);
        assert_eq!(body["by_route"]["/v1/events"]["requests"], 3);
        let last = body["points"].as_array().unwrap().last().unwrap().clone();
        assert!(last["t"].as_u64().unwrap() + 10 > crate::snapshot::now_unix() - 10);
    }

    #[tokio::test]
    async fn a_bad_latency_query_is_a_400_naming_the_parameter() {
        let f = fixture(None);
        for (query, code) in [
            ("range=2h", "invalid_range"),
            ("range=soon", "invalid_range"),
            ("step=7", "invalid_step"),
            ("route=nope", "invalid_route"),
        ] {
            let (status, body) = call(
                &f.state,
                "GET",
                &format!("/v1/analytics/latency?{query}"),
                None,
                "",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"]["code"], code, "{query}: {body}");
        }
        for (query, code) in [
            ("range=100d", "invalid_range"),
            ("step=59", "invalid_step"),
            ("range=1d&step=60", "invalid_step"),
        ] {
            let (status, body) = call(
                &f.state,
                "GET",
                &format!("/v1/analytics/timeline?{query}"),
                None,
                "",
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"]["code"], code, "{query}: {body}");
        }
    }

    #[tokio::test]
    async fn the_timeline_puts_a_click_in_the_current_minute() {
        let f = fixture(None);
        let (status, _) = call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"recommendation_viewed"},
                          {"user_id":"u1","item_id":"i1","type":"click"}]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, body) = call(&f.state, "GET", "/v1/analytics/timeline", None, "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["range"].as_str(), body["step_s"].as_u64()),
            (Some("1h"), Some(60))
        );
        let points = body["points"].as_array().unwrap();
        assert_eq!(points.len(), 60);
        // The events are stamped with the receive time: the last step, or the one
        // before it if the minute turned between the two calls.
        let clicks: Vec<u64> = points
            .iter()
            .map(|p| p["clicks"].as_u64().unwrap())
            .collect();
        assert_eq!(clicks.iter().sum::<u64>(), 1, "{clicks:?}");
        assert!(clicks[58] + clicks[59] == 1, "{clicks:?}");
        let with_click = points.iter().find(|p| p["clicks"] == 1).unwrap();
        assert_eq!(with_click["ctr"], 1.0);
        // Events sent straight to the origin take the origin's region.
        assert_eq!(
            with_click["impressions_by_region"]["us-east"], 1,
            "{with_click}"
        );
    }
}
