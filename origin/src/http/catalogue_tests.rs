//! Tests of the catalogue routes through the whole router over a temporary SQLite
//! store: who may call them, every kind of bad input answered as JSON 4xx with nothing
//! stored, and good round trips.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::auth::Secret;
use crate::store::{SharedStore, SqliteStore};
use crate::tenants::{NewTenant, Quotas, Tenants};

const TOKEN: &str = "Bearer s3cret";

struct Fixture {
    state: AppState,
    store: SharedStore,
    tenants: Tenants,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let path = dir.path().join("catalogue.sqlite");
    let store: SharedStore = Arc::new(SqliteStore::open(&path, 100).unwrap());
    let mut live = Live::new(store.clone());
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
        store,
        tenants,
        _dir: dir,
    }
}

/// Sends a request (`headers` as name/value pairs) and reads its JSON answer.
async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = crate::app(state.clone())
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {bytes:?}"));
    (status, json)
}

/// As the admin, with a JSON body.
async fn admin(state: &AppState, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    send(
        state,
        method,
        uri,
        &[
            ("authorization", TOKEN),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

async fn item_count(store: &SharedStore) -> u64 {
    store.counts().await.unwrap().items
}

#[tokio::test]
async fn an_item_round_trips_through_put_get_patch_and_delete() {
    let f = fixture();
    let (status, put) = admin(
        &f.state,
        "PUT",
        "/v1/items/sku-1",
        r#"{"title":"Blue Lantern","description":"Brass, for camping.","categories":["outdoor"],
            "tags":["brass","light"],"price":19.5,"currency":"EUR","created_at":1700000000,
            "attributes":{"colour":"blue","sizes":[1,2]}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    let (status, got) = admin(&f.state, "GET", "/v1/items/sku-1", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, put);
    assert_eq!(
        got,
        json!({"item_id":"sku-1","title":"Blue Lantern","description":"Brass, for camping.",
               "categories":["outdoor"],"tags":["brass","light"],"price":19.5,"currency":"EUR",
               "available":true,"created_at":1700000000,
               "attributes":{"colour":"blue","sizes":[1,2]}})
    );
    let (status, patched) = send(
        &f.state,
        "PATCH",
        "/v1/items/sku-1",
        &[
            ("authorization", TOKEN),
            ("content-type", "application/merge-patch+json"),
        ],
        r#"{"available":false,"price":null,"currency":null,"attributes":{"sizes":null,"new":true}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["available"], false);
    assert_eq!(patched["price"], Value::Null);
    assert_eq!(
        patched["title"], "Blue Lantern",
        "fields not in the patch stay"
    );
    assert_eq!(patched["created_at"], 1700000000);
    assert_eq!(patched["attributes"], json!({"colour":"blue","new":true}));
    let (_, got) = admin(&f.state, "GET", "/v1/items/sku-1", "").await;
    assert_eq!(got, patched);
    let (status, deleted) = admin(&f.state, "DELETE", "/v1/items/sku-1", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted, json!({"id":"sku-1","deleted":true}));
    for method in ["GET", "DELETE"] {
        let (status, body) = admin(&f.state, method, "/v1/items/sku-1", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
        assert_eq!(body["error"]["code"], "unknown_item");
    }
    let (status, body) = admin(&f.state, "PATCH", "/v1/items/sku-1", r#"{"title":"x"}"#).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_item");
}

#[tokio::test]
async fn a_user_round_trips_and_a_bulk_of_users_lands_whole() {
    let f = fixture();
    let (status, put) = admin(
        &f.state,
        "PUT",
        "/v1/users/u1",
        r#"{"country":"DE","segment":"vip"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put, json!({"user_id":"u1","country":"DE","segment":"vip"}));
    let (status, patched) = admin(&f.state, "PATCH", "/v1/users/u1", r#"{"segment":null}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        patched,
        json!({"user_id":"u1","country":"DE","segment":null})
    );
    let (status, body) = admin(
        &f.state,
        "POST",
        "/v1/users",
        r#"{"users":[{"user_id":"u2","country":"JP"},{"user_id":"u3","country":"jp"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_user");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("users[1].country:"),
        "{body}"
    );
    let u2 = contract::UserId::parse("u2").unwrap();
    assert!(f.store.user(&u2).await.unwrap().is_none(), "nothing stored");
    let (status, body) = admin(
        &f.state,
        "POST",
        "/v1/users",
        r#"{"users":[{"user_id":"u2","country":"JP"},{"user_id":"u3"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["upserted"], 2);
    let (_, got) = admin(&f.state, "GET", "/v1/users/u2", "").await;
    assert_eq!(got["country"], "JP");
    let (status, _) = admin(&f.state, "DELETE", "/v1/users/u2", "").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = admin(&f.state, "GET", "/v1/users/u2", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "unknown_user");
}

#[tokio::test]
async fn a_bulk_of_items_lands_whole_or_names_the_bad_item_and_stores_nothing() {
    let f = fixture();
    let good = r#"{"items":[{"item_id":"a","title":"A"},{"item_id":"b","tags":["x"]}]}"#;
    let (status, body) = admin(&f.state, "POST", "/v1/items", good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["upserted"], 2);
    assert_eq!(item_count(&f.store).await, 2);
    let cases = [
        (
            r#"{"items":[{"item_id":"c"},{"item_id":"d","price":"9"}]}"#,
            "invalid_item",
            "items[1].price: invalid type",
        ),
        (
            r#"{"items":[{"item_id":"c"},{"item_id":"d/e"}]}"#,
            "invalid_item_id",
            "items[1].item_id:",
        ),
        (
            r#"{"items":[{"item_id":"c","colour":"red"}]}"#,
            "invalid_item",
            "items[0].colour: unknown field `colour`",
        ),
        (
            r#"{"items":[{"item_id":"c"},{"item_id":"c"}]}"#,
            "invalid_item",
            "items[1].item_id: \"c\" is also items[0]",
        ),
        (
            r#"{"items":[{"title":"no id"}]}"#,
            "invalid_item",
            "items[0].item_id: is required",
        ),
        (
            r#"{"items":[{"item_id":"c","tags":["a","a,b"]}]}"#,
            "invalid_item",
            "items[0].tags[1]:",
        ),
        (r#"{"items":{"item_id":"c"}}"#, "invalid_body", ""),
        (r#"{"things":[]}"#, "invalid_body", ""),
        (r#"[]"#, "invalid_body", ""),
    ];
    for (body, code, message) in cases {
        let (status, answer) = admin(&f.state, "POST", "/v1/items", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let text = answer["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{body}: {text}");
    }
    let too_many = json!({ "items": (0..1001).map(|k| json!({"item_id": format!("n{k}")})).collect::<Vec<_>>() });
    let (status, answer) = admin(&f.state, "POST", "/v1/items", &too_many.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "too_many_items");
    assert_eq!(item_count(&f.store).await, 2, "nothing of a refused bulk");
    let c = contract::ItemId::parse("c").unwrap();
    assert!(f.store.item(&c).await.unwrap().is_none());
    let full = json!({ "items": (0..1000).map(|k| json!({"item_id": format!("n{k}"), "title": "t"})).collect::<Vec<_>>() });
    let (status, answer) = admin(&f.state, "POST", "/v1/items", &full.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(item_count(&f.store).await, 1002);
}

#[tokio::test]
async fn bad_items_of_every_kind_are_json_4xx_and_store_nothing() {
    let f = fixture();
    let long = |n: usize| "x".repeat(n);
    let big_attrs = json!({"attributes": {"k": long(4100)}}).to_string();
    let long_title = json!({"title": long(201)}).to_string();
    let long_description = json!({"description": long(5001)}).to_string();
    let many_tags = json!({"tags": vec!["t"; 21]}).to_string();
    let long_tag = json!({"categories": [long(65)]}).to_string();
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "PUT",
            "/v1/items/a%2Fb",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_item_id",
        ),
        (
            "PUT",
            "/v1/items/..",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_item_id",
        ),
        (
            "PUT",
            "/v1/items/%FF",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_item_id",
        ),
        (
            "PUT",
            "/v1/items/",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PUT",
            "/v1/items/i1",
            long_title,
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            long_description,
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            many_tags,
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            long_tag,
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            big_attrs,
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"price":-0.5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"price":1e999}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"price":1,"currency":"euro"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"available":"yes"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"categories":"books"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"attributes":[1]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"attributes":{"a":"\u0000"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"title":"a\u0000"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"item_id":"i2"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"title":"a","title":"b"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"attributes":{"k":1,"k":2}}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"title":"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"[]"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/items/i1",
            r#"{"created_at":1.5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_item",
        ),
        (
            "PUT",
            "/v1/users/u1",
            r#"{"country":"Germany"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            "PUT",
            "/v1/users/u1",
            r#"{"segment":"a/b"}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_user",
        ),
        (
            "PUT",
            "/v1/users/u%20",
            "{}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "PATCH",
            "/v1/items/i1",
            r#"{"title":"x"}"#.into(),
            StatusCode::NOT_FOUND,
            "unknown_item",
        ),
        (
            "POST",
            "/v1/items/i1",
            "{}".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "PUT",
            "/v1/items",
            "{}".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let (got, answer) = admin(&f.state, method, uri, &body).await;
        assert_eq!(got, status, "{method} {uri} {body}: {answer}");
        assert_eq!(
            answer["error"]["code"], code,
            "{method} {uri} {body}: {answer}"
        );
    }
    // Not JSON at all: 415.
    let (status, answer) = send(
        &f.state,
        "PUT",
        "/v1/items/i1",
        &[("authorization", TOKEN), ("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(answer["error"]["code"], "unsupported_media_type");
    let (status, _) = send(
        &f.state,
        "PUT",
        "/v1/items/i1",
        &[("authorization", TOKEN)],
        "{}",
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        item_count(&f.store).await,
        0,
        "nothing of a refused request"
    );
    assert_eq!(f.store.counts().await.unwrap().users, 0);
}

#[tokio::test]
async fn the_catalogue_takes_the_admin_token_or_the_tenants_server_key_only() {
    let f = fixture();
    let body = r#"{"title":"t"}"#;
    let json = ("content-type", "application/json");
    for headers in [vec![json], vec![json, ("authorization", "Bearer wrong")]] {
        let (status, answer) = send(&f.state, "PUT", "/v1/items/i1", &headers, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let (status, answer) = send(&f.state, "GET", "/v1/items/i1", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reads too: {answer}");
    let (status, answer) = send(
        &f.state,
        "GET",
        "/v1/items/i1",
        &[("x-tenant-key", "sk_not_a_key")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer["error"]["code"], "invalid_key");
    let served = f.state.snapshot().tenant.clone();
    let created = f
        .tenants
        .create(
            NewTenant::parse(served.as_str(), Some("Shop"), Quotas::default()).unwrap(),
            crate::snapshot::now_unix() as i64,
        )
        .await
        .unwrap();
    let client = created.client_key.expose().to_owned();
    let server = created.server_key.expose().to_owned();
    let (status, answer) = send(
        &f.state,
        "PUT",
        "/v1/items/i1",
        &[json, ("x-tenant-key", &client)],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["error"]["code"], "server_key_required");
    assert_eq!(item_count(&f.store).await, 0);
    let (status, answer) = send(
        &f.state,
        "PUT",
        "/v1/items/i1",
        &[json, ("x-tenant-key", &server)],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = send(
        &f.state,
        "GET",
        "/v1/items/i1",
        &[("x-tenant-key", &server)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["title"], "t");
}
