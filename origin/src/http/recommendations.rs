//! `GET /v1/recommendations/{user}`, `POST /v1/recommendations/batch`, `GET /v1/popular`,
//! and an item's lists, `GET /v1/items/{id}/similar` and `GET /v1/items/{id}/bought-together`
//! (see [`crate::item_lists`]).
//!
//! Answers for users with history are also published in the background (edge KV
//! and/or the CDN folder), earned and bounded by the publish gate; popular fallbacks for
//! unknown users are never published (anyone could fill the KV with made-up ids).
//!
//! Filters (`contract::params`): `exclude=` (the model ranks `n` plus the excluded
//! count, then they leave) and `category=` (items outside the category are masked
//! before the model's top-n, so the answer holds `n` items of the category whenever the
//! catalogue has that many the user has not seen). Unavailable items are never in any
//! answer (see [`crate::availability`]). The published document stays the user's
//! canonical, unfiltered one: the edge filters it for every later request. When a
//! filter leaves fewer than `n` items, the answer says how many in `X-Filter-Short`, as
//! the edge does.
//!
//! The tenant's business rules ([`crate::rules`]) shape every answer and published
//! document alike; with a fatigue rule, the user's fatigued items are read from the
//! store for each answer (one indexed query per user).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use contract::params::{Category, Filters};
use contract::{IdError, ItemId, ItemList, RecommendationDoc, Region, Tenant, UserId};
use serde::{Deserialize, Serialize};

use crate::snapshot::{now_unix, DocRequest};

use super::*;

/// Most user ids one batch request may name.
pub const MAX_BATCH_IDS: usize = 1000;

/// `n` when a request names none.
pub const DEFAULT_N: usize = 10;

/// Query parameters of the GET routes, as sent (validated by the handlers).
#[derive(Debug, Default, Deserialize)]
pub struct RecParams {
    pub n: Option<String>,
    /// Item ids left out of the answer (comma-separated; see `contract::params`).
    pub exclude: Option<String>,
    /// Only items of this category (see `contract::params`).
    pub category: Option<String>,
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
    /// Only items of this category, for every user of the batch.
    #[serde(default)]
    pub category: Option<String>,
}

/// Answer of `POST /v1/recommendations/batch`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    pub results: Vec<RecommendationDoc>,
}

pub(crate) fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Parses `category` by the contract's rule (absent or empty: none).
pub fn parse_category(raw: Option<&str>) -> Result<Option<Category>, ApiError> {
    contract::params::parse_category(raw).map_err(|e| ApiError::InvalidCategory(e.to_string()))
}

/// A filtered answer: the document, with `X-Filter-Short` when a filter left fewer
/// than `n` items.
pub struct Filtered {
    pub doc: RecommendationDoc,
    pub short: Option<usize>,
}

impl axum::response::IntoResponse for Filtered {
    fn into_response(self) -> axum::response::Response {
        let mut resp = Json(self.doc).into_response();
        if let Some(kept) = self.short {
            resp.headers_mut().insert(
                contract::params::FILTER_SHORT_HEADER,
                axum::http::HeaderValue::from(kept),
            );
        }
        resp
    }
}

/// Parses `n`: absent means [`DEFAULT_N`]; otherwise 1 to [`contract::MAX_N`].
pub fn parse_n(raw: Option<&str>) -> Result<usize, ApiError> {
    contract::params::parse_n(raw, DEFAULT_N).map_err(|e| ApiError::InvalidN(e.got))
}

pub(crate) fn check_tenant(state: &AppState, raw: Option<&str>) -> Result<(), ApiError> {
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
pub(crate) fn known_region(state: &AppState, raw: Option<&str>) -> Option<Region> {
    raw.and_then(|r| Region::parse(r).ok())
        .filter(|r| state.snapshot().regions.knows(r))
}

/// The fatigued items of `users` under the tenant's rules now (none without a fatigue
/// rule or a store).
pub(crate) async fn fatigued_of(
    state: &AppState,
    snapshot: &crate::snapshot::Snapshot,
    users: &[UserId],
) -> crate::rules::Fatigued {
    let rules = snapshot.rules.rules();
    if rules.fatigue().is_none() {
        return crate::rules::Fatigued::default();
    }
    crate::store::fatigued_for(
        state.live.as_ref().map(|l| &l.store),
        &rules,
        Some(users.to_vec()),
        now_unix() as i64,
    )
    .await
}

/// Publishes the document of a user with history in the background, at most once per
/// freshness window per user (the [`crate::freshness::PublishGate`]); never delays or
/// fails the answer.
///
/// The published document is the user's canonical one (their own region, no context,
/// at least `publish_n` items), not the answer as asked for: the edge serves it to
/// every later request of the user, whatever `n`, `context` or `region` they name.
pub(crate) fn publish_in_background(
    state: &AppState,
    user: &UserId,
    n: usize,
    trace: Option<&crate::observability::TraceContext>,
) {
    if state.publish.is_empty() {
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
        let fatigued = fatigued_of(&state, &snapshot, std::slice::from_ref(&user)).await;
        let doc = snapshot.user_doc(
            &user,
            &DocRequest {
                n: n.max(state.publish_n),
                fallback_region: Some(&state.region),
                fatigued: fatigued.of(user.as_str()),
                ..Default::default()
            },
            now_unix(),
        );
        let tenant = &snapshot.tenant;
        let content = crate::freshness::ContentHash::of(&doc.items);
        let outcome =
            crate::publish::publish_one(&state.publish, tenant, &doc, traceparent.as_deref()).await;
        let ok = outcome.all_ok();
        state.publish_gate.settle(&user, admitted, content, ok);
        if let Some(live) = &state.live {
            for (target, r) in &outcome.results {
                live.health.record(target, r);
            }
        }
    });
}

/// The trace context the middleware put into the request, when it ran.
pub(crate) type Trace = Option<axum::Extension<crate::observability::TraceContext>>;

pub(crate) async fn recommendations(
    State(state): State<AppState>,
    trace: Trace,
    user: Result<Path<String>, PathRejection>,
    ApiQuery(params): ApiQuery<RecParams>,
) -> Result<Filtered, ApiError> {
    let Path(user) = user.map_err(|_| ApiError::UndecodableUserId)?;
    answer(state, &user, params, trace).await
}

/// `GET /v1/recommendations/batch`: the static batch route shadows the user named
/// `batch`, so its GET is answered here.
pub(crate) async fn recommendations_for_user_named_batch(
    State(state): State<AppState>,
    trace: Trace,
    ApiQuery(params): ApiQuery<RecParams>,
) -> Result<Filtered, ApiError> {
    answer(state, "batch", params, trace).await
}

pub(crate) async fn answer(
    state: AppState,
    user: &str,
    params: RecParams,
    trace: Trace,
) -> Result<Filtered, ApiError> {
    let user = UserId::parse(user)?;
    check_tenant(&state, params.tenant.as_deref())?;
    let n = parse_n(params.n.as_deref())?;
    let exclude = contract::params::parse_exclude(params.exclude.as_deref())
        .map_err(|e| ApiError::InvalidExclude(e.to_string()))?;
    let category = parse_category(params.category.as_deref())?;
    let context = non_empty(&params.context).map(ItemId::parse).transpose()?;
    let region = known_region(&state, non_empty(&params.region));
    let snapshot = trained(&state)?;
    let fatigued = fatigued_of(&state, &snapshot, std::slice::from_ref(&user)).await;
    let mut doc = snapshot.user_doc(
        &user,
        &DocRequest {
            // Enough to still have `n` after the excluded ones leave.
            n: (n + exclude.len()).min(contract::MAX_N),
            context: context.as_ref(),
            region: region.as_ref(),
            fallback_region: Some(&state.region),
            category: category.as_ref(),
            fatigued: fatigued.of(user.as_str()),
        },
        now_unix(),
    );
    let filters = Filters { exclude, category };
    let kept = filters.apply(&mut doc.items, n);
    if snapshot.has_history(&user) {
        publish_in_background(&state, &user, n, trace.as_ref().map(|t| &t.0));
    }
    Ok(Filtered {
        short: filters.short(kept, n),
        doc,
    })
}

/// `GET /v1/items/{id}/{list}`: an item's similar items or bought-together list, with the
/// same `n`, `exclude=`, `category=` and `tenant=` rules as a user's list. An item the
/// model does not know gets the popular list of its catalogue category, then the popular
/// list (never a 404: a product page always has something to show). Item lists are
/// published by the bulk publish (`origin publish`), not on a miss: the edge keeps the
/// origin's answer in its cache for the answer's freshness.
pub(crate) async fn item_list(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    ApiQuery(params): ApiQuery<RecParams>,
) -> Result<Filtered, ApiError> {
    let Path((item, list)) = path.map_err(|_| ApiError::InvalidId(undecodable_item()))?;
    let list = ItemList::from_segment(&list).ok_or(ApiError::NotFound)?;
    let item = ItemId::parse(&item)?;
    check_tenant(&state, params.tenant.as_deref())?;
    let n = parse_n(params.n.as_deref())?;
    let exclude = contract::params::parse_exclude(params.exclude.as_deref())
        .map_err(|e| ApiError::InvalidExclude(e.to_string()))?;
    let category = parse_category(params.category.as_deref())?;
    let region = known_region(&state, non_empty(&params.region));
    let snapshot = trained(&state)?;
    let req = DocRequest {
        n: (n + exclude.len()).min(contract::MAX_N),
        region: region.as_ref(),
        category: category.as_ref(),
        ..Default::default()
    };
    let now = now_unix();
    let mut doc = match snapshot.item_list_doc(list, &item, &req, now) {
        Some(doc) => doc,
        None => {
            // A catalogue item newer than the model: popular in its category.
            let row = match &state.live {
                Some(live) => live.store.item(&item).await.unwrap_or_else(|e| {
                    tracing::warn!(item = %item, error = %e, "reading an item's category failed");
                    None
                }),
                None => None,
            };
            let item_category = row
                .and_then(|r| r.categories.into_iter().next())
                .and_then(|c| Category::parse(&c).ok());
            snapshot.item_fallback_doc(list, &item, item_category.as_ref(), &req, now)
        }
    };
    let filters = Filters { exclude, category };
    let kept = filters.apply(&mut doc.items, n);
    Ok(Filtered {
        short: filters.short(kept, n),
        doc,
    })
}

fn undecodable_item() -> IdError {
    IdError::BadChar {
        kind: "item id",
        found: '%',
        at: 0,
        allowed: "percent-encoded UTF-8",
    }
}

/// A raw `/` in the user id segment: the router splits it, so it is refused here.
pub(crate) async fn user_id_with_slash(
    path: Result<Path<(String, String)>, PathRejection>,
) -> ApiError {
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

pub(crate) async fn batch(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<Json<BatchResponse>, ApiError> {
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
    let category = parse_category(body.category.as_deref())?;
    let now = now_unix();
    let snapshot = trained(&state)?;
    let fallback = state.region.clone();
    let fatigued = fatigued_of(&state, &snapshot, &users).await;
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
                        category: category.as_ref(),
                        fatigued: fatigued.of(u.as_str()),
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

pub(crate) async fn popular(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<RecParams>,
) -> Result<Json<RecommendationDoc>, ApiError> {
    check_tenant(&state, params.tenant.as_deref())?;
    let n = parse_n(params.n.as_deref())?;
    let category = parse_category(params.category.as_deref())?;
    let region = match non_empty(&params.region) {
        None => state.region.clone(),
        Some(r) => known_region(&state, Some(r))
            .ok_or_else(|| ApiError::InvalidRegion(r.chars().take(40).collect()))?,
    };
    Ok(Json(trained(&state)?.popular_doc_in(
        &region,
        n,
        category.as_ref(),
        now_unix(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::CdnFolder;
    use crate::snapshot::Snapshot;
    use axum::body::Body;
    use axum::http::Request;
    use axum::http::StatusCode;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tower::ServiceExt;

    fn state(dir: &std::path::Path) -> (AppState, crate::store::sqlite::Database) {
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
    async fn an_items_similar_and_bought_together_lists_name_the_item_and_leave_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/items/i1/similar?n=5").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let doc: RecommendationDoc = serde_json::from_value(body).unwrap();
        assert_eq!(doc.list, Some(ItemList::Similar));
        assert_eq!(
            (doc.user_id.as_str(), doc.item_id.as_deref()),
            ("*", Some("i1"))
        );
        assert_eq!(doc.items.len(), 5);
        assert!(doc.items.iter().all(|i| i.item_id != "i1"));
        assert_eq!(doc.items[0].reason.as_deref(), Some("similar to i1"));

        let (status, body) = get(&state, "/v1/items/i1/bought-together?n=5&exclude=i2").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let doc: RecommendationDoc = serde_json::from_value(body).unwrap();
        assert_eq!(doc.list, Some(ItemList::BoughtTogether));
        assert!(!doc.items.is_empty());
        assert!(doc
            .items
            .iter()
            .all(|i| i.item_id != "i1" && i.item_id != "i2"));
        assert_eq!(doc.items[0].reason.as_deref(), Some("bought with i1"));
        assert!(doc.items.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[tokio::test]
    async fn an_item_the_model_does_not_know_gets_the_popular_list_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        let (status, body) = get(&state, "/v1/items/brand-new/similar?n=4").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let doc: RecommendationDoc = serde_json::from_value(body).unwrap();
        assert_eq!(doc.item_id.as_deref(), Some("brand-new"));
        assert_eq!(doc.items.len(), 4);
        let popular: RecommendationDoc =
            serde_json::from_value(get(&state, "/v1/popular?n=4").await.1).unwrap();
        assert_eq!(doc.items, popular.items);
    }

    #[tokio::test]
    async fn bad_item_list_requests_are_json_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _store) = state(dir.path());
        for (uri, status, code) in [
            ("/v1/items/i1/cheapest", StatusCode::NOT_FOUND, "not_found"),
            (
                "/v1/items/a%2Fb/similar",
                StatusCode::BAD_REQUEST,
                "invalid_item_id",
            ),
            (
                "/v1/items/%FF/similar",
                StatusCode::BAD_REQUEST,
                "invalid_item_id",
            ),
            (
                "/v1/items/i1/similar?n=0",
                StatusCode::BAD_REQUEST,
                "invalid_n",
            ),
            (
                "/v1/items/i1/similar?category=a,b",
                StatusCode::BAD_REQUEST,
                "invalid_category",
            ),
        ] {
            let (got, body) = get(&state, uri).await;
            assert_eq!(got, status, "{uri}: {body}");
            assert_eq!(body["error"]["code"], code, "{uri}: {body}");
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
    async fn readiness_is_503_while_the_first_model_trains_and_200_once_it_serves() {
        let dir = tempfile::tempdir().unwrap();
        let (trained, _store) = state(dir.path());
        let (status, body) = get(&trained, "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["ready"], true);
        let loading = AppState::new(
            Arc::new(Snapshot::loading(
                Tenant::default_tenant(),
                contract::RegionMap::builtin(),
                crate::snapshot::Freshness::default(),
            )),
            Region::parse("us-east").unwrap(),
        );
        let (status, body) = get(&loading, "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "not_ready_loading");
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
        assert!(!h.leader, "without a store nothing is scheduled");
        assert!(h.replicas.is_empty());
        // On a SQLite store, the one process always leads and has no replicas.
        let sqlite = crate::store::SqliteStore::open(&dir.path().join("live.sqlite"), 10).unwrap();
        let state = state.with_live(crate::http::Live::new(Arc::new(sqlite)));
        let (_, body) = get(&state, "/health").await;
        let h: Health = serde_json::from_value(body).unwrap();
        assert!(h.leader);
        assert!(h.replicas.is_empty());
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
        let generation = contract::keys::generation_name(1, 0);
        folder.create_generation(&generation).unwrap();
        folder.switch_current(&generation).unwrap();
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
        fn heap_bytes(&self) -> usize {
            0
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
            store.training_set().unwrap(),
            Tenant::default_tenant(),
            contract::RegionMap::builtin(),
            crate::snapshot::Freshness::default(),
            |_| Arc::new(Panics),
        );
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
