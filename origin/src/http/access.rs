//! Who may use a registered tenant's routes, by the tenant keys of `X-Tenant-Key`
//! (see [`crate::tenants`]). A tenant not in the registry (a single-tenant deployment,
//! `make dev`) keeps the open routes it always had.
//!
//! | routes | need, once the served tenant is registered |
//! |---|---|
//! | `POST /v1/events` | any of its keys (client or server) |
//! | `GET /v1/analytics/*` | its **server** key (a client key: 403 `server_key_required`) |
//! | `GET /v1/recommendations/*`, `GET /v1/popular`, `GET /v1/items/{id}/similar` and `…/bought-together` | nothing (public, as at the edge); a key sent must be one of its own |
//!
//! In both, the admin token without `X-Edge-Client` (the operator's own backends) needs
//! no key; a key of another tenant is 403 `wrong_tenant`, an unknown or rotated-out one
//! 401 `invalid_key`, none 401 `key_required`. The dashboard sends the server key it is
//! given in its URL's fragment (`/dashboard#key=sk_…`, never sent to a server or log).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::clients::{client_of, Client};
use crate::snapshot::now_unix;
use crate::tenants::KeyKind;

use super::{ApiError, AppState};

/// Which of the tenant's keys a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNeed {
    /// Client or server key.
    Any,
    /// The server key only.
    Server,
}

/// Checks the request's tenant key against the rule of the module docs.
pub async fn check_tenant_key(
    state: &AppState,
    headers: &HeaderMap,
    client: &Client,
    need: KeyNeed,
) -> Result<(), ApiError> {
    let served = state.snapshot().tenant.clone();
    let key = headers
        .get(contract::auth::TENANT_KEY_HEADER)
        .map(|v| v.to_str().unwrap_or_default().trim().to_owned());
    let Some(key) = key else {
        let registered = state.quota.as_ref().is_some_and(|g| g.registered());
        let backend = client.trusted && client.key.is_none();
        return match registered && !backend {
            true => Err(ApiError::KeyRequired(served.to_string())),
            false => Ok(()),
        };
    };
    let tenants = state.tenants.as_ref().ok_or(ApiError::TenantsDisabled)?;
    match tenants.verify(&key, now_unix() as i64).await? {
        None => Err(ApiError::InvalidKey),
        Some(v) if v.tenant != served => Err(ApiError::WrongTenant(served.to_string())),
        Some(v) if need == KeyNeed::Server && v.kind != KeyKind::Server => {
            Err(ApiError::ServerKeyRequired)
        }
        Some(_) => Ok(()),
    }
}

/// `/v1/items/{id}/{list}`: an item's public list (not the catalogue's `/v1/items/{id}`).
fn is_item_list(path: &str) -> bool {
    path.strip_prefix("/v1/items/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, list)| contract::ItemList::from_segment(list).is_some())
}

/// Middleware: the server-key rule on `GET /v1/analytics/*`, and on public reads a
/// key, when one is sent, must be the tenant's (another tenant's key is 403
/// `wrong_tenant`, an unknown one 401 `invalid_key`).
pub async fn analytics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let get = req.method() == Method::GET;
    let need = if get && path.starts_with("/v1/analytics/") {
        KeyNeed::Server
    } else if get
        && (path.starts_with("/v1/recommendations") || path == "/v1/popular" || is_item_list(path))
        && req
            .headers()
            .contains_key(contract::auth::TENANT_KEY_HEADER)
    {
        KeyNeed::Any
    } else {
        return next.run(req).await;
    };
    let admin = state.live.as_ref().and_then(|l| l.admin_token.as_ref());
    let client = client_of(req.headers(), None, admin);
    match check_tenant_key(&state, req.headers(), &client, need).await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
