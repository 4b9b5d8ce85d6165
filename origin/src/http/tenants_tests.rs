//! Tests of the tenant registry's admin routes through the whole router: the admin
//! token first, then ids (escapes in every spelling are 400 JSON), 404/409 JSON, keys
//! shown only at create and rotate.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::auth::Secret;
use crate::store::SqliteStore;
use crate::tenants::{KeyKind, Tenants};

const TOKEN: &str = "Bearer s3cret";

struct Fixture {
    state: AppState,
    tenants: Tenants,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let path = dir.path().join("tenants.sqlite");
    let store: crate::store::SharedStore = Arc::new(SqliteStore::open(&path, 100).unwrap());
    let mut live = Live::new(store);
    live.admin_token = Some(Secret::new("s3cret"));
    let tenants = Tenants::new(Arc::new(
        crate::store::sqlite::SqliteTenants::open(&path).unwrap(),
    ));
    let state = AppState::new(
        Arc::new(snapshot),
        contract::Region::parse("us-east").unwrap(),
    )
    .with_live(live)
    .with_tenants(tenants.clone());
    Fixture {
        state,
        tenants,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    cache_control: Option<String>,
    body: Value,
}

async fn call(state: &AppState, method: &str, uri: &str, auth: Option<&str>, body: &str) -> Answer {
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
    let cache_control = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {bytes:?}"));
    Answer {
        status,
        cache_control,
        body,
    }
}

async fn create(state: &AppState, body: &str) -> Answer {
    call(state, "POST", "/v1/admin/tenants", Some(TOKEN), body).await
}

fn now() -> i64 {
    crate::snapshot::now_unix() as i64
}

#[tokio::test]
async fn a_tenant_is_created_with_its_keys_shown_once_then_listed_shown_and_deleted() {
    let f = fixture();
    let created = create(
        &f.state,
        r#"{"id":"books","name":"Bücher","quotas":{"max_items":500}}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.cache_control.as_deref(), Some("no-store"));
    assert_eq!(created.body["tenant"]["quotas"]["max_items"], 500);
    assert_eq!(created.body["tenant"]["quotas"]["requests_per_second"], 100);
    let client = created.body["client_key"].as_str().unwrap().to_owned();
    let server = created.body["server_key"].as_str().unwrap().to_owned();
    let verified = f.tenants.verify(&client, now()).await.unwrap().unwrap();
    assert_eq!(
        (verified.tenant.as_str(), verified.kind),
        ("books", KeyKind::Client)
    );

    let listed = call(&f.state, "GET", "/v1/admin/tenants", Some(TOKEN), "").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["tenants"][0]["id"], "books");
    let shown = call(&f.state, "GET", "/v1/admin/tenants/books", Some(TOKEN), "").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.body["name"], "Bücher");
    assert_eq!(shown.body["keys"].as_array().unwrap().len(), 2);
    for answer in [&listed.body, &shown.body] {
        let text = answer.to_string();
        assert!(
            !text.contains(&client[3..]) && !text.contains(&server[3..]),
            "{text}"
        );
    }

    let deleted = call(
        &f.state,
        "DELETE",
        "/v1/admin/tenants/books",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["tenant"], "books");
    assert!(deleted.body["removed"].as_array().unwrap().len() >= 2);
    let gone = call(&f.state, "GET", "/v1/admin/tenants/books", Some(TOKEN), "").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"]["code"], "tenant_not_found");
    assert!(f.tenants.verify(&client, now()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_rotated_key_is_shown_once_and_the_old_one_works_until_the_overlap_ends() {
    let f = fixture();
    let created = create(&f.state, r#"{"id":"news"}"#).await;
    let old = created.body["server_key"].as_str().unwrap().to_owned();
    let rotated = call(
        &f.state,
        "POST",
        "/v1/admin/tenants/news/keys/server/rotate?overlap_s=60",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    assert_eq!(rotated.cache_control.as_deref(), Some("no-store"));
    assert_eq!(rotated.body["kind"], "server");
    let new = rotated.body["key"].as_str().unwrap();
    let until = rotated.body["previous_valid_until"].as_i64().unwrap();
    let t = now();
    assert!((t + 59..=t + 61).contains(&until), "{until}");
    assert!(f.tenants.verify(new, t).await.unwrap().is_some());
    assert!(f.tenants.verify(&old, until - 1).await.unwrap().is_some());
    assert!(f.tenants.verify(&old, until).await.unwrap().is_none());
    let at_once = call(
        &f.state,
        "POST",
        "/v1/admin/tenants/news/keys/client/rotate?overlap_s=0",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(at_once.status, StatusCode::OK);
    let old_client = created.body["client_key"].as_str().unwrap();
    assert!(f.tenants.verify(old_client, now()).await.unwrap().is_none());
}

#[tokio::test]
async fn every_tenant_route_needs_the_admin_token_before_reading_anything() {
    let f = fixture();
    create(&f.state, r#"{"id":"shop"}"#).await;
    let routes = [
        ("GET", "/v1/admin/tenants", ""),
        ("POST", "/v1/admin/tenants", r#"{"id":"x"}"#),
        ("POST", "/v1/admin/tenants", "not json"),
        ("GET", "/v1/admin/tenants/shop", ""),
        ("GET", "/v1/admin/tenants/..", ""),
        ("DELETE", "/v1/admin/tenants/shop", ""),
        ("POST", "/v1/admin/tenants/shop/keys/server/rotate", ""),
        ("POST", "/v1/admin/tenants/shop/keys/bogus/rotate", ""),
        ("GET", "/v1/admin/tenants/a/b", ""),
    ];
    for (method, uri, body) in routes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let answer = call(&f.state, method, uri, auth, body).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {auth:?}"
            );
            assert_eq!(answer.body["error"]["code"], "unauthorized");
        }
    }
    assert!(f
        .tenants
        .show(&contract::Tenant::parse("shop").unwrap(), now())
        .await
        .is_ok());
    assert_eq!(f.tenants.list().await.unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn ids_that_try_to_escape_are_400_json_in_every_spelling() {
    let f = fixture();
    create(&f.state, r#"{"id":"shop"}"#).await;
    for (method, uri) in [
        ("GET", "/v1/admin/tenants/.."),
        ("GET", "/v1/admin/tenants/%2e%2e"),
        ("GET", "/v1/admin/tenants/%2E%2E"),
        ("GET", "/v1/admin/tenants/a%2Fb"),
        ("GET", "/v1/admin/tenants/a%2fb"),
        ("GET", "/v1/admin/tenants/a/b"),
        ("GET", "/v1/admin/tenants/shop/../other"),
        ("GET", "/v1/admin/tenants/..%2F..%2Fetc"),
        ("GET", "/v1/admin/tenants/%ff"),
        ("GET", "/v1/admin/tenants/a%00b"),
        ("GET", "/v1/admin/tenants/Shop"),
        ("DELETE", "/v1/admin/tenants/%2e%2e"),
        ("DELETE", "/v1/admin/tenants/shop%2F.."),
        ("POST", "/v1/admin/tenants/%2e%2e/keys/server/rotate"),
        ("POST", "/v1/admin/tenants/a%2Fb/keys/client/rotate"),
    ] {
        let answer = call(&f.state, method, uri, Some(TOKEN), "").await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{method} {uri}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["error"]["code"], "invalid_tenant",
            "{method} {uri}"
        );
    }
    for id in ["..", "a/b", "%2e%2e", "Shop", "", "-x", "a b"] {
        let body = serde_json::json!({ "id": id }).to_string();
        let answer = create(&f.state, &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{id:?}");
        assert_eq!(answer.body["error"]["code"], "invalid_tenant", "{id:?}");
    }
    assert_eq!(f.tenants.list().await.unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn bad_bodies_unknown_tenants_and_duplicates_get_their_json_errors() {
    let f = fixture();
    assert_eq!(
        create(&f.state, r#"{"id":"shop"}"#).await.status,
        StatusCode::CREATED
    );
    let cases = [
        (r#"{"id":"shop"}"#, StatusCode::CONFLICT, "tenant_exists"),
        (
            r#"{"id":"x","name":"a\u202eb"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            r#"{"id":"x","name":"   "}"#,
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            r#"{"id":"x","quotas":{"max_users":0}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_quota",
        ),
        (
            r#"{"id":"x","quotas":{"max_userz":1}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            r#"{"id":"x","admin":true}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            r#"{"id":"x","quotas":{"max_users":-1}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        ("{", StatusCode::BAD_REQUEST, "invalid_body"),
        ("", StatusCode::BAD_REQUEST, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let answer = create(&f.state, body).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{body}");
    }
    let long_name = serde_json::json!({ "id": "x", "name": "n".repeat(101) }).to_string();
    assert_eq!(
        create(&f.state, &long_name).await.body["error"]["code"],
        "invalid_name"
    );
    for (method, uri, status, code) in [
        (
            "GET",
            "/v1/admin/tenants/nobody",
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
        (
            "DELETE",
            "/v1/admin/tenants/nobody",
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
        (
            "POST",
            "/v1/admin/tenants/nobody/keys/client/rotate",
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
        (
            "POST",
            "/v1/admin/tenants/shop/keys/public/rotate",
            StatusCode::BAD_REQUEST,
            "invalid_key_kind",
        ),
        (
            "POST",
            "/v1/admin/tenants/shop/keys/server/rotate?overlap_s=99999999",
            StatusCode::BAD_REQUEST,
            "invalid_overlap",
        ),
        (
            "POST",
            "/v1/admin/tenants/shop/keys/server/rotate?overlap_s=-1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "POST",
            "/v1/admin/tenants/shop/keys/server/rotate?overlap=5",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "PUT",
            "/v1/admin/tenants/shop",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let answer = call(&f.state, method, uri, Some(TOKEN), "").await;
        assert_eq!(answer.status, status, "{method} {uri}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{method} {uri}");
    }
    assert_eq!(f.tenants.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn without_a_registry_or_an_admin_token_the_routes_answer_503_json() {
    let f = fixture();
    let mut no_registry = f.state.clone();
    no_registry.tenants = None;
    let answer = call(&no_registry, "GET", "/v1/admin/tenants", Some(TOKEN), "").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["error"]["code"], "tenants_disabled");
    let dir = tempfile::tempdir().unwrap();
    let store: crate::store::SharedStore =
        Arc::new(SqliteStore::open(&dir.path().join("x.sqlite"), 10).unwrap());
    let no_token = AppState::new(f.state.snapshot(), f.state.region.clone())
        .with_live(Live::new(store))
        .with_tenants(f.tenants.clone());
    let answer = call(&no_token, "GET", "/v1/admin/tenants", Some(TOKEN), "").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["error"]["code"], "admin_disabled");
}
