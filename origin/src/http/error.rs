//! The one error type of the HTTP API, [`ApiError`]: every way a request can fail, with its
//! status and stable code, answered as `{"error":{"code","message"}}`; axum's own
//! rejections (bad JSON, query, path) become it too.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use contract::{ErrorBody, IdError};
use thiserror::Error;

use super::*;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidId(#[from] IdError),
    #[error("this origin serves tenant {served:?}, not {asked:?}")]
    UnknownTenant { asked: String, served: String },
    #[error("no tenant {0:?} is registered (create it with `origin tenants create` or POST /v1/admin/tenants)")]
    TenantNotRegistered(String),
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
    #[error(transparent)]
    Tenant(#[from] crate::tenants::TenantError),
    #[error("tenant id is not valid percent-encoded UTF-8")]
    UndecodableTenant,
    #[error("this origin has no tenant registry")]
    TenantsDisabled,
    #[error("{0}")]
    InvalidExclude(String),
    #[error("{0}")]
    InvalidCategory(String),
    #[error("tenant {0} is the one this origin serves: stop it (or serve another tenant) before deleting it")]
    TenantServed(String),
    #[error("tenant {0} takes events only with one of its keys in the X-Tenant-Key header")]
    KeyRequired(String),
    #[error("the X-Tenant-Key header is not a valid key of any tenant")]
    InvalidKey,
    #[error("this route needs the tenant's server key (sk_…), not its client key")]
    ServerKeyRequired,
    #[error("the key in X-Tenant-Key belongs to another tenant than {0}")]
    WrongTenant(String),
    /// A catalogue request that fails (invalid item or user, too many, unknown).
    #[error(transparent)]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    /// An experiment request that fails (invalid, unknown, conflicting).
    #[error(transparent)]
    Experiment(#[from] crate::experiments::ExperimentError),
    #[error("the catalogue needs the admin token (Authorization: Bearer <ADMIN_TOKEN>) or, for a registered tenant, its server key (X-Tenant-Key: sk_…)")]
    CatalogueUnauthorized,
    /// A business rules document that is refused (400 `invalid_rules`, 413
    /// `too_many_rules`).
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    /// 429 `quota_exceeded` naming the quota, with `Retry-After`.
    #[error("{0}; retry after {s} s", s = retry_after_s(.0.retry_after()))]
    Quota(crate::tenants::quota::QuotaExceeded),
}

/// Whole seconds of a `Retry-After` (at least 1).
fn retry_after_s(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

impl From<crate::auth::AuthFailure> for ApiError {
    fn from(f: crate::auth::AuthFailure) -> Self {
        match f {
            crate::auth::AuthFailure::Disabled => ApiError::AdminDisabled,
            crate::auth::AuthFailure::Unauthorized => ApiError::Unauthorized,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::EventLog(e.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownTenant { .. }
            | ApiError::TenantNotRegistered(_)
            | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidBody { status, .. } => *status,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled | ApiError::LiveDisabled | ApiError::EventLog(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Retrain(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::ModelLoading | ApiError::TenantsDisabled => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Tenant(e) => tenant_status(e),
            ApiError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::KeyRequired(_) | ApiError::InvalidKey => StatusCode::UNAUTHORIZED,
            ApiError::WrongTenant(_) | ApiError::ServerKeyRequired => StatusCode::FORBIDDEN,
            ApiError::TenantServed(_) => StatusCode::CONFLICT,
            ApiError::Catalogue(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::CatalogueUnauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Rules(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            ApiError::Experiment(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidId(e) | ApiError::InvalidBatchId { source: e, .. } => e.code(),
            ApiError::UndecodableUserId => "invalid_user_id",
            ApiError::UnknownTenant { .. } | ApiError::TenantNotRegistered(_) => "unknown_tenant",
            ApiError::InvalidN(_) => "invalid_n",
            ApiError::InvalidRegion(_) => "invalid_region",
            ApiError::TooManyIds(_) => "too_many_ids",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::InvalidBody { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            ApiError::InvalidBody { status, .. }
                if *status == StatusCode::UNSUPPORTED_MEDIA_TYPE =>
            {
                "unsupported_media_type"
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
            ApiError::Tenant(e) => tenant_code(e),
            ApiError::UndecodableTenant => "invalid_tenant",
            ApiError::TenantsDisabled => "tenants_disabled",
            ApiError::Quota(_) => "quota_exceeded",
            ApiError::KeyRequired(_) => "key_required",
            ApiError::InvalidKey => "invalid_key",
            ApiError::WrongTenant(_) => "wrong_tenant",
            ApiError::ServerKeyRequired => "server_key_required",
            ApiError::TenantServed(_) => "tenant_served",
            ApiError::InvalidExclude(_) => "invalid_exclude",
            ApiError::InvalidCategory(_) => "invalid_category",
            ApiError::Catalogue(e) => e.code(),
            ApiError::CatalogueUnauthorized => "unauthorized",
            ApiError::Rules(e) => e.code(),
            ApiError::Experiment(e) => e.code(),
        }
    }
}

fn tenant_status(e: &crate::tenants::TenantError) -> StatusCode {
    use crate::tenants::TenantError as E;
    match e {
        E::Invalid(_) | E::InvalidKind(_) | E::InvalidOverlap(_) => StatusCode::BAD_REQUEST,
        E::Exists(_) => StatusCode::CONFLICT,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::Randomness(_) => StatusCode::INTERNAL_SERVER_ERROR,
        E::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn tenant_code(e: &crate::tenants::TenantError) -> &'static str {
    use crate::tenants::{InvalidTenant, TenantError as E};
    match e {
        E::Invalid(InvalidTenant::Id(id)) => id.code(),
        E::Invalid(InvalidTenant::Name(_)) => "invalid_name",
        E::Invalid(InvalidTenant::Quota(_)) => "invalid_quota",
        E::Invalid(InvalidTenant::Model(_)) => "invalid_model",
        E::InvalidKind(_) => "invalid_key_kind",
        E::InvalidOverlap(_) => "invalid_overlap",
        E::Exists(_) => "tenant_exists",
        E::NotFound(_) => "tenant_not_found",
        E::Randomness(_) => "internal",
        E::Storage(_) => "tenant_registry_unavailable",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = match &self {
            ApiError::ModelLoading => Some(5),
            ApiError::Quota(q) => Some(retry_after_s(q.retry_after())),
            _ => None,
        };
        let body = ErrorBody::new(self.code(), self.to_string());
        let mut resp = (self.status(), Json(body)).into_response();
        if let Some(s) = retry {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from(s));
        }
        resp
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::InvalidQuery(r.body_text())
    }
}

/// A body axum could not read or parse: 413 when it was too large, else 400.
fn invalid_body(status: StatusCode, message: String) -> ApiError {
    ApiError::InvalidBody {
        status: if status == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        },
        message,
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        invalid_body(r.status(), r.body_text())
    }
}

pub(crate) fn body_error(r: BytesRejection) -> ApiError {
    invalid_body(r.status(), r.body_text())
}

/// `Json<T>` whose rejection (bad JSON, wrong content type, too large) is an [`ApiError`],
/// answered in the API's JSON error shape.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `Query<T>` whose rejection is an [`ApiError`] (`invalid_query`).
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
