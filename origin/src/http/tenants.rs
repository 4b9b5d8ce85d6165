//! The tenant registry's admin routes, behind the admin token:
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/admin/tenants` | `{"tenants":[…]}`, by id |
//! | `POST /v1/admin/tenants` `{"id","name"?,"quotas"?}` | 201, the tenant and its two keys (shown this once) |
//! | `GET /v1/admin/tenants/{id}` | the tenant and its keys' kinds and hints (never the keys) |
//! | `DELETE /v1/admin/tenants/{id}` | what was removed, table by table |
//! | `POST /v1/admin/tenants/{id}/keys/{kind}/rotate?overlap_s=N` | the new key (shown this once) and until when the old one works |
//! | `PUT /v1/admin/tenants/{id}/model` `{"model": "ease" \| null}` | the tenant, with the model its recommendations train (`null`: the origin's `--model`) |
//!
//! The token is checked before anything else is read; then the id (the contract's
//! rules, after percent-decoding, so `..`, `/` and their encoded forms are 400). An
//! answer carrying a key is `Cache-Control: no-store`; no key is ever logged (the
//! request span names the route template only).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use contract::Tenant as TenantId;
use serde::{Deserialize, Serialize};

use crate::auth::check_bearer;
use crate::snapshot::now_unix;
use crate::tenants::{KeyKind, NewTenant, Quotas, Tenant, TenantError, Tenants};

use super::*;

/// Body of `POST /v1/admin/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub id: String,
    /// The display name (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Quotas; any left out take their defaults.
    #[serde(default)]
    pub quotas: Quotas,
    /// The model its recommendations train (default: the origin's `--model`).
    #[serde(default)]
    pub model: Option<String>,
}

/// Body of `PUT /v1/admin/tenants/{id}/model`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetModel {
    /// What `--model` accepts; `null` for the origin's `--model`.
    pub model: Option<String>,
}

/// The model setting of a request body, checked.
fn model_setting(raw: Option<&str>) -> Result<Option<crate::tenants::ModelSetting>, ApiError> {
    raw.map(crate::tenants::ModelSetting::parse)
        .transpose()
        .map_err(|e| TenantError::from(crate::tenants::InvalidTenant::from(e)).into())
}

/// Query of the rotate route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateParams {
    /// How long the replaced key stays valid, in seconds (default 24 h, at most 30 days).
    pub overlap_s: Option<u64>,
}

/// Answer of `GET /v1/admin/tenants`.
#[derive(Debug, Serialize)]
pub struct TenantList {
    pub tenants: Vec<Tenant>,
}

/// The registry, once the admin token is checked.
fn registry(state: &AppState, headers: &HeaderMap) -> Result<Tenants, ApiError> {
    let live = live(state)?;
    check_bearer(headers, live.admin_token.as_ref())?;
    state.tenants.clone().ok_or(ApiError::TenantsDisabled)
}

/// A tenant id from the path: percent-decoded by axum, then the contract's rules.
fn tenant_id(path: Result<Path<String>, PathRejection>) -> Result<TenantId, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::UndecodableTenant)?;
    Ok(TenantId::parse(&raw)?)
}

/// An answer holding a key: never stored by a cache.
fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn now() -> i64 {
    i64::try_from(now_unix()).unwrap_or(i64::MAX)
}

pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<TenantList>, ApiError> {
    let tenants = registry(&state, &headers)?;
    Ok(Json(TenantList {
        tenants: tenants.list().await?,
    }))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<CreateTenant>, ApiError>,
) -> Result<Response, ApiError> {
    let tenants = registry(&state, &headers)?;
    let ApiJson(body) = body?;
    let mut new =
        NewTenant::parse(&body.id, body.name.as_deref(), body.quotas).map_err(TenantError::from)?;
    new.model = model_setting(body.model.as_deref())?;
    let created = tenants.create(new, now()).await?;
    Ok(no_store(StatusCode::CREATED, created))
}

/// `PUT /v1/admin/tenants/{id}/model`: sets or clears the tenant's model. This origin
/// drops the tenant's loaded model (`crate::tenant_host`), so its next request trains
/// the new one.
pub(crate) async fn set_model(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<ApiJson<SetModel>, ApiError>,
) -> Result<Json<crate::tenants::Tenant>, ApiError> {
    let tenants = registry(&state, &headers)?;
    let id = tenant_id(path)?;
    let ApiJson(body) = body?;
    let setting = model_setting(body.model.as_deref())?;
    tenants.set_model(&id, setting.as_ref()).await?;
    Ok(Json(tenants.show(&id, now()).await?.tenant))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<crate::tenants::TenantView>, ApiError> {
    let tenants = registry(&state, &headers)?;
    let id = tenant_id(path)?;
    Ok(Json(tenants.show(&id, now()).await?))
}

/// What a delete removed: the store's rows, then the published documents at each of
/// this origin's publish targets (CDN folder files, the edge's KV pointer).
#[derive(Debug, Serialize)]
pub struct TenantDeleted {
    #[serde(flatten)]
    pub report: crate::tenants::DeleteReport,
    pub published: Vec<PublishedRemoval>,
}

/// One publish target's part of a delete.
#[derive(Debug, Serialize)]
pub struct PublishedRemoval {
    pub target: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<TenantDeleted>, ApiError> {
    let tenants = registry(&state, &headers)?;
    let id = tenant_id(path)?;
    if id == state.snapshot().tenant {
        return Err(ApiError::TenantServed(id.to_string()));
    }
    let report = tenants.delete(&id).await?;
    let mut published = Vec::new();
    for target in state.publish.iter() {
        let (removed, error) = match target.remove_tenant(&id).await {
            Ok(what) => (Some(what), None),
            Err(e) => (None, Some(e.to_string())),
        };
        published.push(PublishedRemoval {
            target: target.name(),
            removed,
            error,
        });
    }
    Ok(Json(TenantDeleted { report, published }))
}

pub(crate) async fn rotate(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<ApiQuery<RotateParams>, ApiError>,
) -> Result<Response, ApiError> {
    let tenants = registry(&state, &headers)?;
    let Path((id, kind)) = path.map_err(|_| ApiError::UndecodableTenant)?;
    let id = TenantId::parse(&id)?;
    let kind = KeyKind::parse(&kind).map_err(TenantError::from)?;
    let ApiQuery(params) = query?;
    let overlap_s = params
        .overlap_s
        .unwrap_or(crate::tenants::DEFAULT_OVERLAP_S);
    let rotated = tenants.rotate_key(&id, kind, now(), overlap_s).await?;
    Ok(no_store(StatusCode::OK, rotated))
}

/// Any other path under `/v1/admin/tenants/{id}/…`: the id would hold a `/`.
pub(crate) async fn id_with_slash(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiError {
    if let Err(e) = registry(&state, &headers) {
        return e;
    }
    let Ok(Path((id, rest))) = path else {
        return ApiError::UndecodableTenant;
    };
    // The contract's own refusal of the whole id (its first bad character).
    match TenantId::parse(&format!("{id}/{rest}")) {
        Err(e) => ApiError::InvalidId(e),
        Ok(_) => ApiError::NotFound,
    }
}
