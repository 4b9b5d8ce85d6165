//! Tests of the live routes (events, impressions, analytics, admin) through the whole
//! router.

use super::*;
use crate::auth::Secret;
use crate::freshness::Republisher;
use crate::retrain::Retrainer;
use crate::snapshot::now_unix;
use crate::store::SqliteStore;
use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;

struct Fixture {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn fixture(token: Option<&str>) -> Fixture {
    fixture_with(token, None)
}

/// With `cdn`, touched users are republished into that CDN folder after 20 ms.
fn fixture_with(token: Option<&str>, cdn: Option<std::path::PathBuf>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let path = dir.path().join("fixture.sqlite");
    let state = AppState::new(
        Arc::new(snapshot),
        contract::Region::parse("us-east").unwrap(),
    );
    let store: crate::store::SharedStore = Arc::new(SqliteStore::open(&path, 1000).unwrap());
    let mut live = Live::new(store.clone());
    live.admin_token = token.map(Secret::new);
    live.retrainer = Some(Arc::new(Retrainer::new(
        store,
        contract::Tenant::default_tenant(),
        contract::RegionMap::builtin(),
        crate::snapshot::Freshness::default(),
        Arc::new(crate::snapshot::fixture_model),
        state.snapshot.clone(),
    )));
    live.republisher = cdn.map(|dir| {
        Republisher::spawn(
            crate::freshness::Targets {
                store: live.store.clone(),
                snapshot: state.snapshot.clone(),
                publish: crate::publish::PublishTargets::default()
                    .with(Arc::new(crate::publish::CdnFolder::new(dir))),
                region: state.region.clone(),
                publish_n: 10,
                health: live.health.clone(),
                gate: state.publish_gate.clone(),
            },
            std::time::Duration::from_millis(20),
        )
    });
    Fixture {
        state: state.with_live(live),
        _dir: dir,
    }
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
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
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn events_are_acknowledged_with_their_seq_range_after_commit() {
    let f = fixture(None);
    let (status, body) = call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"click"},
                          {"user_id":"u2","item_id":"i2","type":"recommendation_viewed","value":0.5}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"accepted":2,"first_seq":1,"last_seq":2,"duplicates":0})
    );
    let (status, body) = call(
        &f.state,
        "POST",
        "/v1/events",
        None,
        r#"{"user_id":"u1","item_id":"i3","type":"view"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["first_seq"], 3);
    let live = f.state.live.clone().unwrap();
    let logged = live.store.read_events(1, 3).await.unwrap();
    assert_eq!(logged.len(), 3);
    let own = f
        .state
        .snapshot()
        .known_user_region(&contract::UserId::parse("u1").unwrap())
        .cloned();
    assert_eq!(
        logged[0].1.region, own,
        "a missing region is the user's own"
    );
}

#[tokio::test]
async fn a_bad_event_batch_is_refused_whole_with_400_json() {
    let f = fixture(None);
    let one = r#"{"user_id":"u1","item_id":"i1","type":"view"}"#;
    let body = format!(r#"{{"events":[{}]}}"#, vec![one; 501].join(","));
    let (status, json) = call(&f.state, "POST", "/v1/events", None, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["code"], "too_many_events");
    let (status, json) = call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"events":[{"user_id":"u1","item_id":"i1","type":"view"},{"user_id":"u1","item_id":"i1","type":"rating","value":9}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"]["code"], "invalid_value");
    let live = f.state.live.clone().unwrap();
    let logged = live.store.read_events(0, i64::MAX).await.unwrap();
    assert!(logged.is_empty(), "nothing of a refused batch is stored");
}

#[tokio::test]
async fn a_full_batch_with_context_fits_the_events_body_limit() {
    let f = fixture(None);
    let context = "x".repeat(1500);
    let one = format!(
        r#"{{"user_id":"u1","item_id":"i1","type":"view","context":{{"note":"{context}"}}}}"#
    );
    let body = format!(r#"{{"events":[{}]}}"#, vec![one; 500].join(","));
    assert!(body.len() > crate::http::MAX_BODY_BYTES);
    let (status, json) = call(&f.state, "POST", "/v1/events", None, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["accepted"], 500);
    let huge = "y".repeat(EVENTS_MAX_BODY_BYTES + 1);
    let (status, json) = call(&f.state, "POST", "/v1/events", None, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json["error"]["code"], "body_too_large");
}

#[tokio::test]
async fn retrain_needs_the_admin_token() {
    let f = fixture(Some("s3cret"));
    let (status, body) = call(&f.state, "POST", "/v1/admin/retrain", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = call(
        &f.state,
        "POST",
        "/v1/admin/retrain",
        Some("Bearer nope"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let before = f.state.snapshot().model_version();
    let (status, body) = call(
        &f.state,
        "POST",
        "/v1/admin/retrain",
        Some("Bearer s3cret"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["old_model_version"], before);
    assert_eq!(
        body["new_model_version"],
        f.state.snapshot().model_version()
    );
    assert_ne!(body["new_model_version"], before);
    assert!(body["train_seconds"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn admin_routes_are_off_without_a_token() {
    let f = fixture(None);
    let (status, body) = call(&f.state, "POST", "/v1/admin/retrain", Some("Bearer x"), "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "admin_disabled");
    let (status, _) = call(
        &f.state,
        "POST",
        "/v1/analytics/edge-report",
        Some("Bearer x"),
        r#"{"requests":1,"hits":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn impressions_in_compact_form_are_stored_as_recommendation_viewed_events() {
    let f = fixture(Some("t"));
    let now = now_unix();
    let body = format!(
        r#"{{"shown":[
              {{"user_id":"u1","source":"edge-cache","region":"europe","timestamp":{now},
                "items":[{{"item_id":"i1","score":0.8}},{{"item_id":"i2","score":0.4}}]}},
              {{"user_id":"u2","source":"kv","region":"asia","timestamp":{now},
                "items":[{{"item_id":"i3","score":0.6}}]}}]}}"#
    );
    // Only the edge (with the admin token) may report impressions.
    let (status, json) = call(&f.state, "POST", "/v1/impressions", None, &body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    let (status, json) = call(&f.state, "POST", "/v1/impressions", Some("Bearer t"), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert_eq!(json["accepted"], 3);
    let (_, r) = call(
        &f.state,
        "GET",
        "/v1/analytics/recommendations?range=1h",
        None,
        "",
    )
    .await;
    assert_eq!(r["impressions"], 3, "{r}");
    assert_eq!(r["by_source"]["edge-cache"]["impressions"], 2, "{r}");
    assert_eq!(r["by_region"]["asia"]["impressions"], 1, "{r}");
    assert!((r["avg_impression_score"].as_f64().unwrap() - 0.6).abs() < 1e-9);

    // One bad item refuses the whole body, named by answer and item.
    let bad = body.replace(r#""item_id":"i3""#, r#""item_id":"bad id""#);
    let (status, json) = call(&f.state, "POST", "/v1/impressions", Some("Bearer t"), &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("shown[1].items[0]: "), "{message}");
    let (_, r) = call(
        &f.state,
        "GET",
        "/v1/analytics/recommendations?range=1h",
        None,
        "",
    )
    .await;
    assert_eq!(
        r["impressions"], 3,
        "nothing of the refused body was stored: {r}"
    );
}

#[tokio::test]
async fn analytics_report_the_funnel_and_the_edge_hit_rate() {
    let f = fixture(Some("t"));
    let now = now_unix();
    let body = format!(
        r#"{{"events":[
              {{"user_id":"u1","item_id":"i1","type":"recommendation_viewed","value":0.8,"source":"kv","region":"europe","timestamp":{now}}},
              {{"user_id":"u1","item_id":"i2","type":"recommendation_viewed","value":0.4,"source":"kv","region":"europe","timestamp":{now}}},
              {{"user_id":"u1","item_id":"i1","type":"click","source":"kv","region":"europe","timestamp":{now}}}]}}"#
    );
    let (status, _) = call(&f.state, "POST", "/v1/events", None, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, r) = call(
        &f.state,
        "GET",
        "/v1/analytics/recommendations?range=1h",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["impressions"], 2);
    assert_eq!(r["clicks"], 1);
    assert_eq!(r["ctr"], 0.5);
    assert!((r["avg_impression_score"].as_f64().unwrap() - 0.6).abs() < 1e-9);
    assert_eq!(r["by_source"]["kv"]["impressions"], 2);
    assert_eq!(r["top_items"][0]["item_id"], "i1");
    let (status, r) = call(
        &f.state,
        "GET",
        "/v1/analytics/recommendations?range=forever",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(r["error"]["code"], "invalid_range");
    let (status, _) = call(
        &f.state,
        "POST",
        "/v1/analytics/edge-report",
        Some("Bearer t"),
        r#"{"requests":10,"hits":7,"region":"asia"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, r) = call(
        &f.state,
        "POST",
        "/v1/analytics/edge-report",
        Some("Bearer t"),
        r#"{"requests":1,"hits":7}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(r["error"]["code"], "invalid_edge_report");
    let (status, r) = call(&f.state, "GET", "/v1/analytics/real-time", None, "").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["active_users"], 1);
    assert_eq!(r["edge_cache"]["hit_rate"], 0.7);
    assert_eq!(r["store"]["ok"], true);
    assert!(r["requests_per_second"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn an_event_republishes_the_users_document_without_the_item_just_bought() {
    let root = tempfile::tempdir().unwrap();
    let cdn = root.path().join("cdn");
    let folder = crate::publish::CdnFolder::new(cdn.clone());
    let generation = contract::keys::generation_name(1, 0);
    folder.create_generation(&generation).unwrap();
    folder.switch_current(&generation).unwrap();
    let f = fixture_with(None, Some(cdn.clone()));
    let (_, doc) = call(&f.state, "GET", "/v1/recommendations/u1?n=1", None, "").await;
    let top = doc["items"][0]["item_id"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"user_id":"u1","item_id":"{top}","type":"purchase"}}"#);
    let (status, _) = call(&f.state, "POST", "/v1/events", None, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // The republish is done once its success is recorded, just after the file is
    // renamed into place: wait for the record, not for the file.
    let live = f.state.live.as_ref().unwrap();
    let mut waited = 0;
    while !live.health.snapshot().contains_key("cdn") && waited < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    let file = cdn.join("current/default/users/u1.json");
    let doc: contract::RecommendationDoc =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc.items.len(), 10);
    assert!(
        doc.items.iter().all(|i| i.item_id != top),
        "the bought item {top} is now in the history, so it is not recommended"
    );
    let health = live.health.snapshot();
    assert_eq!(health["cdn"].successes, 1, "{health:?}");
}

#[tokio::test]
async fn without_an_event_log_the_live_routes_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let state = AppState::new(Arc::new(snapshot), contract::Region::parse("asia").unwrap());
    let (status, body) = call(
        &state,
        "POST",
        "/v1/events",
        None,
        r#"{"user_id":"u1","item_id":"i1","type":"view"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "events_disabled");
}

#[tokio::test]
async fn latency_per_route_is_reported_after_requests() {
    let f = fixture(None);
    for _ in 0..3 {
        call(
            &f.state,
            "POST",
            "/v1/events",
            None,
            r#"{"user_id":"u1","item_id":"i1","type":"view"}"#,
        )
        .await;
    }
    call(&f.state, "GET", "/health", None, "").await;
    let (status, body) = call(
        &f.state,
        "GET",
        "/v1/analytics/latency?range=5m&route=/v1/events",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["step_s"], 10);
    assert_eq!(body["points"].as_array().unwrap().len(), 30);
    assert_eq!(body["total"]["requests"], 3, "only /v1/events: {body}");
    assert!(body["total"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(body["by_route"]["/health"]["requests"], 1);
    assert_eq!(body["by_route"]["/v1/events"]["requests"], 3);
    let last = body["points"].as_array().unwrap().last().unwrap().clone();
    assert!(last["t"].as_u64().unwrap() + 10 > crate::snapshot::now_unix() - 10);
}

#[tokio::test]
async fn a_bad_latency_query_is_a_400_naming_the_parameter() {
    let f = fixture(None);
    for (query, code) in [
        ("range=2h", "invalid_range"),
        ("range=soon", "invalid_range"),
        ("step=7", "invalid_step"),
        ("route=nope", "invalid_route"),
    ] {
        let (status, body) = call(
            &f.state,
            "GET",
            &format!("/v1/analytics/latency?{query}"),
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
    for (query, code) in [
        ("range=100d", "invalid_range"),
        ("step=59", "invalid_step"),
        ("range=1d&step=60", "invalid_step"),
    ] {
        let (status, body) = call(
            &f.state,
            "GET",
            &format!("/v1/analytics/timeline?{query}"),
            None,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
    }
}

#[tokio::test]
async fn the_timeline_puts_a_click_in_the_current_minute() {
    let f = fixture(None);
    let (status, _) = call(
        &f.state,
        "POST",
        "/v1/events",
        None,
        r#"{"events":[{"user_id":"u1","item_id":"i1","type":"recommendation_viewed"},
                          {"user_id":"u1","item_id":"i1","type":"click"}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = call(&f.state, "GET", "/v1/analytics/timeline", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["range"].as_str(), body["step_s"].as_u64()),
        (Some("1h"), Some(60))
    );
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    // The events are stamped with the receive time: the last step, or the one
    // before it if the minute turned between the two calls.
    let clicks: Vec<u64> = points
        .iter()
        .map(|p| p["clicks"].as_u64().unwrap())
        .collect();
    assert_eq!(clicks.iter().sum::<u64>(), 1, "{clicks:?}");
    assert!(clicks[58] + clicks[59] == 1, "{clicks:?}");
    let with_click = points.iter().find(|p| p["clicks"] == 1).unwrap();
    assert_eq!(with_click["ctr"], 1.0);
    // Events sent straight to the origin take the origin's region.
    assert_eq!(
        with_click["impressions_by_region"]["us-east"], 1,
        "{with_click}"
    );
}

/// `exclude=` leaves items out and still fills `n` from the rest of the list; a bad
/// list is 400 `invalid_exclude`.
#[tokio::test]
async fn excluded_items_leave_the_answer_which_still_holds_n() {
    let f = fixture(None);
    let items = |doc: &serde_json::Value| -> Vec<String> {
        doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = call(&f.state, "GET", "/v1/recommendations/u1?n=4", None, "").await;
    let all = items(&all);
    assert_eq!(all.len(), 4, "{all:?}");
    let uri = format!("/v1/recommendations/u1?n=3&exclude={},{}", all[0], all[2]);
    let (status, doc) = call(&f.state, "GET", &uri, None, "").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let got = items(&doc);
    assert!(!got.contains(&all[0]) && !got.contains(&all[2]), "{got:?}");
    assert_eq!(got[0], all[1]);
    assert!(got.len() <= 3);
    let (status, body) = call(
        &f.state,
        "GET",
        "/v1/recommendations/u1?exclude=a,,b",
        None,
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_exclude");
}
