//! The catalogue routes: items and users with their attributes (see
//! [`crate::catalogue`] for the fields and their rules).
//!
//! | route | what |
//! |---|---|
//! | `PUT /v1/items/{id}` | create or replace one item (absent fields take their defaults) |
//! | `PATCH /v1/items/{id}` | JSON merge patch (RFC 7396) of an existing item |
//! | `GET /v1/items/{id}`, `DELETE /v1/items/{id}` | read, delete one item (404 `unknown_item`) |
//! | `POST /v1/items` | `{"items": [...]}`: at most [`MAX_BULK`] items, all or nothing |
//! | the same under `/v1/users/{id}`, `POST /v1/users` | users (`country`, `segment`) |
//!
//! Every route needs the admin token (`Authorization: Bearer`) or, for a registered
//! tenant, its **server** key in `X-Tenant-Key` (checked by
//! [`super::access::check_tenant_key`]); a client key is 403 `server_key_required`,
//! neither 401 `unauthorized`. Bodies are strict JSON (`application/json` or a
//! `+json` type, else 415; a duplicate key or an unknown field is 400). A bad document
//! is 400 naming its field, and in a bulk body its index (`items[3].price: …`); nothing
//! of a refused request is stored. A bulk body may be up to
//! [`CATALOGUE_MAX_BODY_BYTES`]; more items than [`MAX_BULK`] is 413.
//!
//! `PATCH` reads the item, merges and writes it back: two patches of one item at the
//! same moment may lose one (the last write wins).
//!
//! An item write that changes what may be served (`available`, `categories`; a delete
//! makes the item unavailable) is live at once in this origin's answers and republishes
//! the documents that hold the item within seconds ([`serving_changed`], see
//! [`crate::availability`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use contract::{ItemId, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalogue::{
    merge_patch, read_document, validate_item, validate_user, CatalogueError, FieldError, ItemDoc,
    ItemInput, UserDoc, UserInput, MAX_BULK,
};
use crate::clients::client_of;
use crate::snapshot::now_unix;

use super::access::KeyNeed;
use super::*;

/// Largest body of `POST /v1/items` and `POST /v1/users`: [`MAX_BULK`] documents of a
/// few KiB each.
pub const CATALOGUE_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Answer of a bulk write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Upserted {
    pub upserted: usize,
}

/// Answer of a delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemsBody {
    items: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersBody {
    users: Vec<Value>,
}

/// The store, once the request carries the admin token or the served tenant's server
/// key.
async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Arc<Live>, ApiError> {
    let live = live(state)?.clone();
    let admin = live.admin_token.as_ref();
    if crate::auth::check_bearer(headers, admin).is_ok() {
        return Ok(live);
    }
    if headers.contains_key(contract::auth::TENANT_KEY_HEADER) {
        let client = client_of(headers, None, admin);
        super::access::check_tenant_key(state, headers, &client, KeyNeed::Server).await?;
        return Ok(live);
    }
    Err(ApiError::CatalogueUnauthorized)
}

/// Whether the request says its body is JSON (`application/json`, or `application/…+json`
/// such as `application/merge-patch+json`), as axum's `Json` requires.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

/// The body, checked to be JSON (415 otherwise) with no duplicate key (400).
pub(crate) fn json_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(body_error)?;
    if !is_json(headers) {
        return Err(ApiError::InvalidBody {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "expected a body with Content-Type: application/json".into(),
        });
    }
    contract::json::check_no_duplicate_keys(&body).map_err(|e| ApiError::InvalidBody {
        status: StatusCode::BAD_REQUEST,
        message: e.to_string(),
    })?;
    Ok(body)
}

/// A bulk body's envelope (`{"items": [...]}`), its count checked before any document.
fn envelope<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidBody {
        status: StatusCode::BAD_REQUEST,
        message: e.to_string(),
    })
}

/// One document of a body that must be a JSON object.
fn document<T: DeserializeOwned>(value: Value, code: &'static str) -> Result<T, FieldError> {
    read_document(value, code)
}

fn item_id(path: Result<Path<String>, PathRejection>) -> Result<ItemId, ApiError> {
    let Path(raw) = path.map_err(|_| undecodable("item_id", "invalid_item_id"))?;
    Ok(ItemId::parse(&raw)?)
}

fn user_id(path: Result<Path<String>, PathRejection>) -> Result<UserId, ApiError> {
    let Path(raw) = path.map_err(|_| undecodable("user_id", "invalid_user_id"))?;
    Ok(UserId::parse(&raw)?)
}

fn undecodable(field: &str, code: &'static str) -> ApiError {
    let error = FieldError::new(code, field, "is not valid percent-encoded UTF-8");
    match field {
        "user_id" => CatalogueError::InvalidUser { index: None, error },
        _ => CatalogueError::InvalidItem { index: None, error },
    }
    .into()
}

fn bad_item(error: FieldError) -> ApiError {
    CatalogueError::InvalidItem { index: None, error }.into()
}

fn bad_user(error: FieldError) -> ApiError {
    CatalogueError::InvalidUser { index: None, error }.into()
}

/// `PUT /v1/items/{id}`: creates or replaces the item.
pub(crate) async fn put_item(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ItemDoc>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = item_id(path)?;
    let body = json_body(&headers, body)?;
    let input: ItemInput = document(envelope(&body)?, "invalid_item").map_err(bad_item)?;
    let row = validate_item(input, Some(&id), now_unix() as i64).map_err(bad_item)?;
    live.store.upsert_items(vec![row.clone()]).await?;
    serving_changed(&state, &live, std::slice::from_ref(&row));
    Ok(Json(row.into()))
}

/// `PATCH /v1/items/{id}`: merges the body into the stored item (RFC 7396).
pub(crate) async fn patch_item(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ItemDoc>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = item_id(path)?;
    let body = json_body(&headers, body)?;
    let patch: Value = envelope(&body)?;
    if !patch.is_object() {
        return Err(bad_item(FieldError::new(
            "invalid_item",
            "",
            "a merge patch of an item is a JSON object",
        )));
    }
    let stored = live
        .store
        .item(&id)
        .await?
        .ok_or_else(|| CatalogueError::UnknownItem(id.to_string()))?;
    let mut doc = serde_json::to_value(ItemDoc::from(stored))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    merge_patch(&mut doc, &patch);
    let input: ItemInput = document(doc, "invalid_item").map_err(bad_item)?;
    let row = validate_item(input, Some(&id), now_unix() as i64).map_err(bad_item)?;
    live.store.upsert_items(vec![row.clone()]).await?;
    serving_changed(&state, &live, std::slice::from_ref(&row));
    Ok(Json(row.into()))
}

/// `GET /v1/items/{id}`.
pub(crate) async fn get_item(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ItemDoc>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = item_id(path)?;
    let row = live
        .store
        .item(&id)
        .await?
        .ok_or_else(|| CatalogueError::UnknownItem(id.to_string()))?;
    Ok(Json(row.into()))
}

/// `DELETE /v1/items/{id}` (see [`crate::store::Store::delete_item`] for what stays).
pub(crate) async fn delete_item(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Deleted>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = item_id(path)?;
    if !live.store.delete_item(&id).await? {
        return Err(CatalogueError::UnknownItem(id.to_string()).into());
    }
    let gone = crate::store::ItemRow {
        item_id: id.to_string(),
        available: false,
        ..Default::default()
    };
    serving_changed(&state, &live, std::slice::from_ref(&gone));
    Ok(Json(Deleted {
        id: id.to_string(),
        deleted: true,
    }))
}

/// `POST /v1/items`: `{"items": [...]}`, each with its `item_id`; all or nothing.
pub(crate) async fn post_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Upserted>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let body = json_body(&headers, body)?;
    let ItemsBody { items } = envelope(&body)?;
    if items.len() > MAX_BULK {
        return Err(CatalogueError::TooMany {
            what: "items",
            count: items.len(),
        }
        .into());
    }
    let now = now_unix() as i64;
    let mut rows = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for (index, value) in items.into_iter().enumerate() {
        let invalid = |error| CatalogueError::InvalidItem {
            index: Some(index),
            error,
        };
        let input: ItemInput = document(value, "invalid_item").map_err(invalid)?;
        let row = validate_item(input, None, now).map_err(invalid)?;
        if let Some(first) = seen.insert(row.item_id.clone(), index) {
            return Err(invalid(FieldError::new(
                "invalid_item",
                "item_id",
                format!("{:?} is also items[{first}]", row.item_id),
            ))
            .into());
        }
        rows.push(row);
    }
    let upserted = rows.len();
    live.store.upsert_items(rows.clone()).await?;
    serving_changed(&state, &live, &rows);
    Ok(Json(Upserted { upserted }))
}

/// After items were written: records their availability and categories as live on the
/// served snapshot (this origin's answers follow at once), and, for the items the
/// model knows whose availability or categories changed, finds the users whose
/// published list holds one (a bounded scan on a blocking thread, one at a time) and
/// touches the republisher for each. Never fails the write: a scan that fails is
/// logged, and the next publish carries the change.
fn serving_changed(state: &AppState, live: &Live, rows: &[crate::store::ItemRow]) {
    let snapshot = state.snapshot();
    let at = now_unix();
    let mut changed = Vec::new();
    for row in rows {
        let before = snapshot.served_state(&row.item_id);
        let differs = before.as_ref().is_some_and(|(available, categories)| {
            *available != row.available || *categories != row.categories
        });
        // Recorded when it changes what this snapshot serves, when an earlier record
        // must be replaced, and for an unavailable item the model does not know yet (a
        // retrain already reading the store may bring it in). A write that changes
        // nothing served (an unchanged PUT, a new available item) records nothing, so
        // answers keep their cheapest path (no per-request mask; see `Snapshot::allowed`).
        let recorded = snapshot.live.get(&row.item_id).is_some();
        if differs || recorded || (before.is_none() && !row.available) {
            snapshot
                .live
                .record(&row.item_id, row.available, row.categories.clone(), at);
        }
        if let Some(idx) = snapshot.item_idx(&row.item_id).filter(|_| differs) {
            changed.push(idx);
        }
    }
    let Some(republisher) = live.republisher.clone() else {
        return;
    };
    if changed.is_empty() || snapshot.loading {
        return;
    }
    let (n, gate) = (state.publish_n, state.publish_gate.clone());
    let (state, touched) = (state.clone(), changed.clone());
    tokio::spawn(async move {
        let _one_at_a_time = snapshot.live.scanning.lock().await;
        let started = std::time::Instant::now();
        let scan = snapshot.clone();
        let found = tokio::task::spawn_blocking(move || {
            scan.users_listing(&changed, n, crate::availability::MAX_SCAN_USERS)
        })
        .await;
        match found {
            Ok((users, past)) => {
                if past > 0 {
                    tracing::warn!(
                        users_past_the_bound = past,
                        "an item change was scanned for the first users only; the others get it at the next publish"
                    );
                }
                tracing::info!(
                    users = users.len(),
                    scan_ms = started.elapsed().as_millis() as u64,
                    "republishing the documents an item change touches"
                );
                let now = tokio::time::Instant::now();
                for user in users {
                    // What the edge holds for them may come from a full publish (even
                    // for a user without history, whose answer is the popular list), so
                    // their changed answer is published whatever the gate last knew.
                    gate.with(|b| b.replaced_elsewhere(&user, now));
                    republisher.touch(user, now, None);
                }
            }
            Err(e) => tracing::error!(error = %e, "the availability scan failed"),
        }
        republish_item_lists(&state, &snapshot, &touched, n).await;
    });
}

/// The second half of an availability change: every published item list holding a
/// changed item is recomputed with the change applied, written into each target's
/// current generation and purged from the edge cache (bounded like the users' scan).
async fn republish_item_lists(
    state: &AppState,
    snapshot: &Arc<crate::snapshot::Snapshot>,
    changed: &[crate::model::ItemIdx],
    n: usize,
) {
    if state.publish.is_empty() {
        return;
    }
    let (scan, touched) = (snapshot.clone(), changed.to_vec());
    let found = tokio::task::spawn_blocking(move || {
        scan.item_lists_listing(&touched, n, crate::availability::MAX_SCAN_USERS)
    })
    .await;
    let lists = match found {
        Ok((lists, _)) => lists,
        Err(e) => return tracing::error!(error = %e, "the item-list scan failed"),
    };
    if lists.is_empty() {
        return;
    }
    // The snapshot swapped in since (if any) holds the change too.
    let current = state.snapshot();
    let now = now_unix();
    let req = crate::snapshot::DocRequest {
        n,
        ..Default::default()
    };
    let mut written = 0;
    for (list, item) in &lists {
        if let Some(doc) = current.item_list_doc(*list, item, &req, now) {
            let outcome =
                crate::publish::publish_one(&state.publish, &current.tenant, &doc, None).await;
            written += usize::from(outcome.all_ok());
        }
    }
    let subjects: Vec<contract::Subject> = lists
        .iter()
        .map(|(list, item)| contract::Subject::Item(*list, item.clone()))
        .collect();
    for target in state.publish.iter() {
        if let Err(e) = target.purge(&current.tenant, &subjects, None).await {
            tracing::warn!(target = target.name(), error = %e, "purging item lists failed");
        }
    }
    tracing::info!(
        item_lists = lists.len(),
        written,
        "republished the item lists an item change touches"
    );
}

/// `PUT /v1/users/{id}`: creates or replaces the user.
pub(crate) async fn put_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UserDoc>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = user_id(path)?;
    let body = json_body(&headers, body)?;
    let input: UserInput = document(envelope(&body)?, "invalid_user").map_err(bad_user)?;
    let row = validate_user(input, Some(&id)).map_err(bad_user)?;
    live.store.upsert_users(vec![row.clone()]).await?;
    Ok(Json(row.into()))
}

/// `PATCH /v1/users/{id}`: merges the body into the stored user (RFC 7396).
pub(crate) async fn patch_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<UserDoc>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = user_id(path)?;
    let body = json_body(&headers, body)?;
    let patch: Value = envelope(&body)?;
    if !patch.is_object() {
        return Err(bad_user(FieldError::new(
            "invalid_user",
            "",
            "a merge patch of a user is a JSON object",
        )));
    }
    let stored = live
        .store
        .user(&id)
        .await?
        .ok_or_else(|| CatalogueError::UnknownUser(id.to_string()))?;
    let mut doc = serde_json::to_value(UserDoc::from(stored))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    merge_patch(&mut doc, &patch);
    let input: UserInput = document(doc, "invalid_user").map_err(bad_user)?;
    let row = validate_user(input, Some(&id)).map_err(bad_user)?;
    live.store.upsert_users(vec![row.clone()]).await?;
    Ok(Json(row.into()))
}

/// `GET /v1/users/{id}`.
pub(crate) async fn get_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<UserDoc>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = user_id(path)?;
    let row = live
        .store
        .user(&id)
        .await?
        .ok_or_else(|| CatalogueError::UnknownUser(id.to_string()))?;
    Ok(Json(row.into()))
}

/// `DELETE /v1/users/{id}` (see [`crate::store::Store::delete_user`] for what stays).
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Deleted>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let id = user_id(path)?;
    if !live.store.delete_user(&id).await? {
        return Err(CatalogueError::UnknownUser(id.to_string()).into());
    }
    Ok(Json(Deleted {
        id: id.to_string(),
        deleted: true,
    }))
}

/// `POST /v1/users`: `{"users": [...]}`, each with its `user_id`; all or nothing.
pub(crate) async fn post_users(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Upserted>, ApiError> {
    let live = authorize(&state, &headers).await?;
    let body = json_body(&headers, body)?;
    let UsersBody { users } = envelope(&body)?;
    if users.len() > MAX_BULK {
        return Err(CatalogueError::TooMany {
            what: "users",
            count: users.len(),
        }
        .into());
    }
    let mut rows = Vec::with_capacity(users.len());
    let mut seen = std::collections::HashMap::with_capacity(users.len());
    for (index, value) in users.into_iter().enumerate() {
        let invalid = |error| CatalogueError::InvalidUser {
            index: Some(index),
            error,
        };
        let input: UserInput = document(value, "invalid_user").map_err(invalid)?;
        let row = validate_user(input, None).map_err(invalid)?;
        if let Some(first) = seen.insert(row.user_id.clone(), index) {
            return Err(invalid(FieldError::new(
                "invalid_user",
                "user_id",
                format!("{:?} is also users[{first}]", row.user_id),
            ))
            .into());
        }
        rows.push(row);
    }
    let upserted = rows.len();
    live.store.upsert_users(rows).await?;
    Ok(Json(Upserted { upserted }))
}
