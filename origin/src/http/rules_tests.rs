//! Tests of the business rules through the whole router: each rule changes the
//! origin's answer as soon as `PUT /v1/admin/rules` returns (each test first shows the
//! answer without the rule, so it fails without it), bad bodies are refused with JSON
//! errors and store nothing, and a change republishes what the edge reads.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use contract::{ItemId, Region, UserId};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::auth::Secret;
use crate::events::{Event, EventType};
use crate::freshness::{PublishGate, PublishHealth, Republisher, Targets};
use crate::publish::{CdnFolder, PublishTargets};
use crate::snapshot::now_unix;
use crate::store::{SharedStore, SqliteStore};

struct Fixture {
    state: AppState,
    store: SharedStore,
    cdn: std::path::PathBuf,
    _db: crate::store::sqlite::Database,
    _dir: tempfile::TempDir,
}

/// The fixture snapshot over demo data, a live store on the same file with the admin
/// token, publishing into a CDN folder (`publish`) or nowhere.
fn fixture_publishing(publish: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, db) = crate::snapshot::fixture(dir.path());
    let store: SharedStore =
        Arc::new(SqliteStore::open(&dir.path().join("fixture.sqlite"), 100).unwrap());
    let cdn = dir.path().join("cdn");
    let shared = Arc::new(ArcSwap::from_pointee(snapshot));
    let region = Region::parse("us-east").unwrap();
    let gate = PublishGate::default();
    let mut live = Live::new(store.clone());
    live.admin_token = Some(Secret::new("s3cret"));
    let mut state =
        AppState::new(shared.load_full(), region.clone()).with_publish_gate(gate.clone());
    if publish {
        let folder = CdnFolder::new(cdn.clone());
        let generation = contract::keys::generation_name(1, 0);
        folder.create_generation(&generation).unwrap();
        folder.switch_current(&generation).unwrap();
        live.republisher = Some(Republisher::spawn(
            Targets {
                store: store.clone(),
                snapshot: shared.clone(),
                publish: PublishTargets::default().with(Arc::new(CdnFolder::new(cdn.clone()))),
                region,
                publish_n: DEFAULT_PUBLISH_N,
                health: Arc::new(PublishHealth::default()),
                gate,
            },
            Duration::from_millis(20),
        ));
        state = state.with_publish_dir(cdn.clone());
    }
    let mut state = state.with_live(live);
    state.snapshot = shared;
    Fixture {
        state,
        store,
        cdn,
        _db: db,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    fixture_publishing(false)
}

async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = crate::app(state.clone())
        .oneshot(req.body(Body::from(body.unwrap_or("").to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn put(f: &Fixture, body: &str) -> (StatusCode, Value) {
    send(
        &f.state,
        "PUT",
        "/v1/admin/rules",
        Some(body),
        Some("s3cret"),
    )
    .await
}

async fn answer(f: &Fixture, uri: &str) -> Value {
    let (status, body) = send(&f.state, "GET", uri, None, None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

fn ids(doc: &Value) -> Vec<String> {
    doc["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

fn categories(item: &Value) -> Vec<String> {
    item["categories"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn hidden_items_and_categories_leave_the_answer_at_once_and_n_items_stay() {
    let f = fixture();
    let before = answer(&f, "/v1/recommendations/u1?n=10").await;
    let first = ids(&before)[0].clone();
    let category = categories(&before["items"][1])[0].clone();
    assert!(categories(&before["items"][1]).contains(&category));
    let (status, body) = put(
        &f,
        &format!(r#"{{"hide_items":["{first}"],"hide_categories":["{category}"]}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    let (_, health) = send(&f.state, "GET", "/health", None, None).await;
    assert_eq!(health["rules_version"], 1, "{health}");
    assert_eq!(body["republish"], "none", "this origin publishes nowhere");
    let after = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert_eq!(ids(&after).len(), 10, "masked before the top-n: {after}");
    assert!(!ids(&after).contains(&first), "{after}");
    for item in after["items"].as_array().unwrap() {
        assert!(!categories(item).contains(&category), "{item}");
    }
    // The popular list and the batch follow the same rules.
    let popular = answer(&f, "/v1/popular?n=20").await;
    assert!(!ids(&popular).contains(&first));
    for item in popular["items"].as_array().unwrap() {
        assert!(!categories(item).contains(&category), "{item}");
    }
    let (_, batch) = send(
        &f.state,
        "POST",
        "/v1/recommendations/batch",
        Some(r#"{"user_ids":["u1"],"n":10}"#),
        None,
    )
    .await;
    assert_eq!(batch["results"][0]["items"], after["items"]);
}

#[tokio::test]
async fn items_lists_follow_the_hide_and_pin_rules_too() {
    let f = fixture();
    for list in ["similar", "bought-together"] {
        let uri = format!("/v1/items/i1/{list}?n=10");
        let before = answer(&f, &uri).await;
        assert!(!ids(&before).is_empty(), "{before}");
        let first = ids(&before)[0].clone();
        let pinned = ids(&answer(&f, "/v1/popular?n=100").await)
            .into_iter()
            .find(|i| !ids(&before).contains(i) && i != "i1")
            .expect("an item outside the list");
        let (status, body) = put(
            &f,
            &format!(r#"{{"hide_items":["{first}"],"pin":{{"{pinned}":1}}}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let after = answer(&f, &uri).await;
        assert!(
            !ids(&after).contains(&first),
            "{list}: hidden {first}: {after}"
        );
        assert_eq!(
            ids(&after)[0],
            pinned,
            "{list}: pinned {pinned} first: {after}"
        );
        assert_eq!(after["items"][0]["reason"], "pinned");
        let (status, _) = send(&f.state, "DELETE", "/v1/admin/rules", None, Some("s3cret")).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_pinned_item_is_at_its_position() {
    let f = fixture();
    let before = answer(&f, "/v1/recommendations/u1?n=40").await;
    let pinned = ids(&before)[30].clone();
    assert_ne!(ids(&before)[1], pinned);
    let (status, body) = put(&f, &format!(r#"{{"pin":{{"{pinned}":2}}}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert_eq!(ids(&after).len(), 10);
    assert_eq!(ids(&after)[1], pinned, "{after}");
    assert_eq!(after["items"][1]["reason"], "pinned");
    assert_eq!(ids(&after)[0], ids(&before)[0]);
    assert_eq!(ids(&after)[2..], ids(&before)[1..9]);
    // An item the user already has is never pinned into their list.
    let seen = f
        .store
        .user_history(&UserId::parse("u1").unwrap())
        .await
        .unwrap()[0]
        .0
        .clone();
    put(&f, &format!(r#"{{"pin":{{"{seen}":1}}}}"#)).await;
    let after = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(!ids(&after).contains(&seen));
    // In the popular list (no history) it is.
    assert_eq!(ids(&answer(&f, "/v1/popular?n=5").await)[0], seen);
}

#[tokio::test]
async fn a_boosted_item_climbs_above_better_scored_ones() {
    let f = fixture();
    let before = answer(&f, "/v1/recommendations/u1?n=10").await;
    let boosted = ids(&before)[4].clone();
    let (status, _) = put(
        &f,
        &format!(r#"{{"boost":{{"items":{{"{boosted}":100}}}}}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let after = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert_eq!(ids(&after)[0], boosted, "{after}");
    assert_eq!(ids(&after).len(), 10);
}

#[tokio::test]
async fn at_most_m_items_of_one_category_are_in_a_list() {
    let f = fixture();
    let count_max = |doc: &Value| {
        let mut counts = std::collections::HashMap::<String, usize>::new();
        for item in doc["items"].as_array().unwrap() {
            for c in categories(item) {
                *counts.entry(c).or_default() += 1;
            }
        }
        counts.values().copied().max().unwrap_or(0)
    };
    let before = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(
        count_max(&before) > 2,
        "the model's list repeats categories: {before}"
    );
    let (status, _) = put(&f, r#"{"max_per_category":2}"#).await;
    assert_eq!(status, StatusCode::OK);
    let after = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(count_max(&after) <= 2, "{after}");
    let popular = answer(&f, "/v1/popular?n=10").await;
    assert!(count_max(&popular) <= 2, "{popular}");
}

#[tokio::test]
async fn an_item_shown_k_times_without_a_click_is_not_shown_again() {
    let f = fixture();
    let (status, _) = put(&f, r#"{"fatigue":{"impressions":2,"days":1}}"#).await;
    assert_eq!(status, StatusCode::OK);
    let first = ids(&answer(&f, "/v1/recommendations/u1?n=10").await)[0].clone();
    let event = |kind, ts| Event {
        user_id: UserId::parse("u1").unwrap(),
        item_id: ItemId::parse(&first).unwrap(),
        kind,
        value: None,
        timestamp: ts,
        context: None,
        source: None,
        region: None,
        event_id: None,
    };
    let now = now_unix() as i64;
    f.store
        .append(vec![event(EventType::RecommendationViewed, now - 60)], None)
        .await
        .unwrap();
    let once = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(ids(&once).contains(&first), "shown once: still served");
    f.store
        .append(vec![event(EventType::RecommendationViewed, now - 30)], None)
        .await
        .unwrap();
    let twice = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(!ids(&twice).contains(&first), "shown twice: {twice}");
    assert_eq!(ids(&twice).len(), 10);
    // A click since counts the user's impressions afresh.
    f.store
        .append(vec![event(EventType::Click, now - 10)], None)
        .await
        .unwrap();
    let clicked = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(ids(&clicked).contains(&first), "clicked since: {clicked}");
}

#[tokio::test]
async fn rules_read_back_change_version_and_a_delete_clears_them() {
    let f = fixture();
    let before = answer(&f, "/v1/recommendations/u1?n=10").await;
    let (status, body) = send(&f.state, "GET", "/v1/admin/rules", None, Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["version"].as_i64(), &body["tenant"]),
        (Some(0), &Value::from("default"))
    );
    let doc = r#"{"hide_items":["i1"],"hide_categories":["film"],"pin":{"i2":3},
        "boost":{"items":{"i3":2.5},"categories":{"books":1.5}},"max_per_category":4,
        "fatigue":{"impressions":3,"days":7}}"#;
    let (status, put_body) = put(&f, doc).await;
    assert_eq!(status, StatusCode::OK, "{put_body}");
    let (_, got) = send(
        &f.state,
        "GET",
        "/v1/admin/rules?tenant=default",
        None,
        Some("s3cret"),
    )
    .await;
    assert_eq!(got["version"], 1);
    assert_eq!(got["rules"], put_body["rules"]);
    let expected: Value = serde_json::from_str(doc).unwrap();
    assert_eq!(got["rules"]["pin"], expected["pin"]);
    assert_eq!(got["rules"]["fatigue"], expected["fatigue"]);
    let (status, body) = send(&f.state, "DELETE", "/v1/admin/rules", None, Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], 2);
    assert_eq!(body["rules"]["hide_items"], serde_json::json!([]));
    assert_eq!(
        answer(&f, "/v1/recommendations/u1?n=10").await["items"],
        before["items"]
    );
    // The same document again changes nothing and republishes nothing.
    let (_, body) = put(&f, "{}").await;
    assert_eq!(
        (body["version"].as_i64(), &body["republish"]),
        (Some(3), &Value::from("unchanged"))
    );
}

#[tokio::test]
async fn bad_rules_are_refused_with_json_errors_and_nothing_is_stored() {
    let f = fixture();
    let (status, _) = put(&f, r#"{"hide_items":["i1"]}"#).await;
    assert_eq!(status, StatusCode::OK);
    let too_many: Vec<String> = (0..1001).map(|i| format!("i{i}")).collect();
    let too_many = serde_json::json!({ "hide_items": too_many }).to_string();
    let huge = format!(
        r#"{{"hide_items":["{}"]}}"#,
        "a".repeat(crate::rules::MAX_RULES_BODY_BYTES)
    );
    for (body, status, code) in [
        ("{not json", StatusCode::BAD_REQUEST, "invalid_body"),
        (
            r#"{"hide_items":[],"hide_items":[]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            r#"{"hide":["i1"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_rules",
        ),
        (
            r#"{"hide_items":["a/b"]}"#,
            StatusCode::BAD_REQUEST,
            "invalid_rules",
        ),
        (
            r#"{"pin":{"i2":0}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_rules",
        ),
        (
            r#"{"boost":{"items":{"i2":1e308}}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_rules",
        ),
        (
            r#"{"max_per_category":0}"#,
            StatusCode::BAD_REQUEST,
            "invalid_rules",
        ),
        (
            r#"{"fatigue":{"impressions":1,"days":365}}"#,
            StatusCode::BAD_REQUEST,
            "invalid_rules",
        ),
        ("[]", StatusCode::BAD_REQUEST, "invalid_rules"),
        (
            too_many.as_str(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_rules",
        ),
        (
            huge.as_str(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ] {
        let (got, body) = put(&f, body).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = send(&f.state, "PUT", "/v1/admin/rules", Some("{}"), None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::UNAUTHORIZED, &Value::from("unauthorized"))
    );
    let (status, body) = send(
        &f.state,
        "PUT",
        "/v1/admin/rules",
        Some("{}"),
        Some("wrong"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(
        &f.state,
        "PUT",
        "/v1/admin/rules?tenant=other",
        Some("{}"),
        Some("s3cret"),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::NOT_FOUND, &Value::from("unknown_tenant"))
    );
    let resp = crate::app(f.state.clone())
        .oneshot(
            Request::put("/v1/admin/rules")
                .header("authorization", "Bearer s3cret")
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing of any of them was stored or served.
    let (_, got) = send(&f.state, "GET", "/v1/admin/rules", None, Some("s3cret")).await;
    assert_eq!(got["version"], 1);
    assert_eq!(got["rules"]["hide_items"], serde_json::json!(["i1"]));
    assert_eq!(f.state.snapshot().rules.get().version, 1);
}

#[tokio::test]
async fn a_rules_change_republishes_the_documents_the_edge_reads() {
    let f = fixture_publishing(true);
    let before = answer(&f, "/v1/recommendations/u1?n=10").await;
    let hidden = ids(&before)[0].clone();
    let (status, body) = put(&f, &format!(r#"{{"hide_items":["{hidden}"]}}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["republish"], "full_publish");
    // A new generation becomes current (the first one holds what publish on miss
    // wrote before the change).
    let current = || std::fs::read_link(f.cdn.join("current")).ok();
    let first = current();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while current() == first {
        assert!(std::time::Instant::now() < deadline, "no full publish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let user_file = f.cdn.join("current/default/users/u1.json");
    let published: Value = serde_json::from_slice(&std::fs::read(&user_file).unwrap()).unwrap();
    let popular = f.cdn.join("current/default/popular/us-east.json");
    if let Ok(bytes) = std::fs::read(&popular) {
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(!ids(&doc).contains(&hidden), "{doc}");
    }
    assert!(!ids(&published).contains(&hidden), "{published}");
    // The published document and the origin's answer agree.
    let origin = answer(&f, &format!("/v1/recommendations/u1?n={DEFAULT_PUBLISH_N}")).await;
    assert_eq!(ids(&published), ids(&origin));
}

#[tokio::test]
async fn under_a_fatigue_rule_impressions_republish_the_users_document() {
    let f = fixture_publishing(true);
    let current = || std::fs::read_link(f.cdn.join("current")).ok();
    let first = current();
    let (status, body) = put(&f, r#"{"fatigue":{"impressions":1,"days":1}}"#).await;
    assert_eq!(
        (status, &body["republish"]),
        (StatusCode::OK, &Value::from("full_publish"))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while current() == first {
        assert!(std::time::Instant::now() < deadline, "no full publish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let user_file = f.cdn.join("current/default/users/u1.json");
    let read = || -> Value { serde_json::from_slice(&std::fs::read(&user_file).unwrap()).unwrap() };
    let shown = ids(&read())[0].clone();
    let body = serde_json::json!({ "shown": [{
        "user_id": "u1", "source": "kv", "region": "us-east",
        "timestamp": now_unix() - 5, "items": [{ "item_id": shown, "score": 0.5 }],
    }]})
    .to_string();
    let (status, accepted) = send(
        &f.state,
        "POST",
        "/v1/impressions",
        Some(&body),
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ids(&read()).contains(&shown) {
        assert!(
            std::time::Instant::now() < deadline,
            "the published document still holds the item shown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ids(&read()).len(), DEFAULT_PUBLISH_N);
}

#[tokio::test]
async fn rules_stored_before_a_start_are_served_from_the_first_retrain() {
    let f = fixture();
    let first = ids(&answer(&f, "/v1/recommendations/u1?n=5").await)[0].clone();
    // Stored by another process (or before this one started): not served yet.
    f.store
        .put_rules(format!(r#"{{"hide_items":["{first}"]}}"#), 1)
        .await
        .unwrap();
    assert!(ids(&answer(&f, "/v1/recommendations/u1?n=5").await).contains(&first));
    let retrainer = crate::retrain::Retrainer::new(
        f.store.clone(),
        contract::Tenant::default_tenant(),
        contract::RegionMap::builtin(),
        crate::snapshot::Freshness::default(),
        Arc::new(crate::snapshot::fixture_model),
        f.state.snapshot.clone(),
    );
    retrainer.retrain().await.unwrap();
    assert_eq!(f.state.snapshot().rules.get().version, 1);
    assert!(!ids(&answer(&f, "/v1/recommendations/u1?n=5").await).contains(&first));
}

#[tokio::test]
async fn a_catalogue_write_into_a_hidden_category_hides_the_item_at_once() {
    let f = fixture();
    let (status, _) = put(&f, r#"{"hide_categories":["clearance"]}"#).await;
    assert_eq!(status, StatusCode::OK);
    let before = answer(&f, "/v1/recommendations/u1?n=10").await;
    let moved = ids(&before)[0].clone();
    let (status, body) = send(
        &f.state,
        "PUT",
        &format!("/v1/items/{moved}"),
        Some(r#"{"categories":["clearance"]}"#),
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(!ids(&after).contains(&moved), "{after}");
    assert_eq!(ids(&after).len(), 10);
    // Moved out of it again, it is served again.
    send(
        &f.state,
        "PUT",
        &format!("/v1/items/{moved}"),
        Some(r#"{"categories":["books"]}"#),
        Some("s3cret"),
    )
    .await;
    let back = answer(&f, "/v1/recommendations/u1?n=10").await;
    assert!(ids(&back).contains(&moved), "{back}");
}
