//! The admin-token routes: `POST /v1/admin/retrain` (full retrain, atomic swap) and
//! `POST /v1/analytics/edge-report` (the edge's cache counters).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use crate::auth::check_bearer;
use crate::retrain::RetrainReport;
use crate::snapshot::now_unix;

use super::*;

pub(crate) async fn retrain(
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

pub(crate) async fn edge_report(
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
    live.store.record_edge_report(report, now_ms).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "accepted": true })),
    ))
}
