//! The analytics routes: the recommendation funnel, real-time figures, the per-minute
//! timeline and request latency over time.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::analytics::{self, RecommendationAnalytics};
use crate::freshness::TargetHealth;
use crate::snapshot::now_unix;

use super::*;

/// Query of `GET /v1/analytics/recommendations`.
#[derive(Debug, Deserialize)]
pub struct RangeParams {
    pub range: Option<String>,
}

pub(crate) async fn recommendations_analytics(
    State(state): State<AppState>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<RecommendationAnalytics>, ApiError> {
    let live = live(&state)?;
    let Query(params) = params?;
    let range = params.range.unwrap_or_else(|| "24h".into());
    let range_s = analytics::parse_range(&range)?;
    let now = now_unix() as i64;
    let report = live
        .store
        .recommendation_analytics(range, range_s, now)
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

pub(crate) async fn real_time(State(state): State<AppState>) -> Result<Json<RealTime>, ApiError> {
    let live = live(&state)?;
    let now = now_unix();
    let counts = live.store.real_time_counts(now as i64 * 1000).await;
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
pub(crate) const TIMELINE_STEP_MULTIPLE_S: u64 = 60;

/// The funnel, region mix and edge hit rate per step (default: the last hour by minute).
pub(crate) async fn timeline_analytics(
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
    let timeline = live.store.timeline(range, range_s, step_s, now).await?;
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
pub(crate) async fn latency_analytics(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<LatencyParams>,
) -> Result<Json<crate::latency::LatencySeries>, ApiError> {
    let q = crate::latency::parse_query(p.range.as_deref(), p.step.as_deref(), p.route.as_deref())?;
    Ok(Json(state.traffic.latency.series(&q, now_unix())))
}
