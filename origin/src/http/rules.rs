//! `GET, PUT, DELETE /v1/admin/rules`: the request's tenant's business rules (see
//! [`crate::rules`] for the document and what each rule does).
//!
//! Every route needs the admin token (`Authorization: Bearer`); `?tenant=` names the
//! tenant as on the other tenant-scoped routes (the origin's own tenant without it).
//! `PUT` takes the whole document (strict JSON: `application/json`, no duplicate key,
//! no unknown field; 400 `invalid_rules` naming the field, 413 `too_many_rules` or
//! `body_too_large`) and replaces the stored one; `DELETE` stores the empty document.
//! Nothing is stored from a refused body.
//!
//! A change applies to this origin's next answer (the tenant's [`LiveRules`] cell is
//! replaced) and republishes the tenant: the same full publish as the scheduled one
//! (every user's document and the popular lists into a new generation at every
//! publish target, then the users with newer events through the republisher), started
//! in the background, so what the edge serves follows within a full publish's time.
//! Other origins on the same database take the change at their next retrain or
//! scheduled publish.
//!
//! [`LiveRules`]: crate::rules::LiveRules

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::check_bearer;
use crate::rules::{Current, RuleSet, Rules};
use crate::snapshot::now_unix;

use super::recommendations::check_tenant;
use super::*;

/// Query of the rules routes.
#[derive(Debug, Default, Deserialize)]
pub struct RulesParams {
    pub tenant: Option<String>,
}

/// What the rules routes answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RulesView {
    pub tenant: String,
    /// 0 while none were ever stored; one more at each change.
    pub version: i64,
    /// Unix seconds of the last change (absent while none were stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    pub rules: Rules,
    /// After a change: `full_publish` (started in the background), `none` (the origin
    /// has no publish target) or `unchanged` (the rules were already these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<String>,
}

/// The store, once the request carries the admin token and names the served tenant.
fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: &RulesParams,
) -> Result<Arc<Live>, ApiError> {
    let live = live(state)?.clone();
    check_bearer(headers, live.admin_token.as_ref())?;
    check_tenant(state, params.tenant.as_deref())?;
    Ok(live)
}

/// `GET /v1/admin/rules`: the rules as stored.
pub(crate) async fn get_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<RulesParams>,
) -> Result<Json<RulesView>, ApiError> {
    let live = authorize(&state, &headers, &params)?;
    let tenant = state.snapshot().tenant.to_string();
    let view = match live.store.rules().await? {
        None => RulesView {
            tenant,
            version: 0,
            updated_at: None,
            rules: Rules::default(),
            republish: None,
        },
        Some(stored) => {
            let current = Current::from_stored(&stored).map_err(|e| {
                ApiError::Internal(format!("the stored rules do not validate: {e}"))
            })?;
            RulesView {
                tenant,
                version: stored.version,
                updated_at: Some(stored.updated_at),
                rules: current.rules.doc().clone(),
                republish: None,
            }
        }
    };
    Ok(Json(view))
}

/// `PUT /v1/admin/rules`: replaces the whole document.
pub(crate) async fn put_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<RulesParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RulesView>, ApiError> {
    let live = authorize(&state, &headers, &params)?;
    let body = super::catalogue::json_body(&headers, body)?;
    let rules = Rules::parse(&body)?;
    replace(&state, &live, rules).await
}

/// `DELETE /v1/admin/rules`: no rules from now on.
pub(crate) async fn delete_rules(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<RulesParams>,
) -> Result<Json<RulesView>, ApiError> {
    let live = authorize(&state, &headers, &params)?;
    replace(&state, &live, RuleSet::default()).await
}

/// Stores `rules`, serves them at once and, when they differ from the rules served,
/// republishes the tenant.
async fn replace(
    state: &AppState,
    live: &Live,
    rules: RuleSet,
) -> Result<Json<RulesView>, ApiError> {
    let json = serde_json::to_string(rules.doc()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let stored = live.store.put_rules(json, now_unix() as i64).await?;
    let snapshot = state.snapshot();
    let changed = *snapshot.rules.rules() != rules;
    let doc = rules.doc().clone();
    snapshot.rules.replace_if_newer(Current {
        version: stored.version,
        updated_at: stored.updated_at,
        rules: Arc::new(rules),
    });
    let republish = match (changed, state.publish.is_empty()) {
        (false, _) => "unchanged",
        (true, true) => "none",
        (true, false) => {
            republish_all(state, live);
            "full_publish"
        }
    };
    tracing::info!(
        tenant = %snapshot.tenant,
        version = stored.version,
        republish,
        "business rules replaced"
    );
    Ok(Json(RulesView {
        tenant: snapshot.tenant.to_string(),
        version: stored.version,
        updated_at: Some(stored.updated_at),
        rules: doc,
        republish: Some(republish.into()),
    }))
}

/// Runs the tenant's full publish in the background (see the module docs).
fn republish_all(state: &AppState, live: &Live) {
    let schedule = crate::scheduled_publish::Schedule {
        snapshot: state.snapshot.clone(),
        targets: state.publish.clone(),
        n: state.publish_n,
        every: std::time::Duration::ZERO,
        leader: live.leader.clone(),
        record: live.full_publish.clone(),
        store: live.store.clone(),
        republisher: live.republisher.clone(),
        gate: state.publish_gate.clone(),
    };
    tokio::spawn(async move {
        crate::scheduled_publish::publish_once(&schedule, "rules").await;
    });
}
