//! Tests of the experiment routes through the whole router over the fixture's SQLite
//! store: bad input answered as JSON 4xx with nothing stored, one experiment running at
//! most, lists served from each user's variant after a retrain, results, and ending
//! with a promotion.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::auth::Secret;
use crate::retrain::Retrainer;
use crate::store::{SharedStore, SqliteStore};

struct Fixture {
    state: AppState,
    store: SharedStore,
    retrainer: Arc<Retrainer>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _db) = crate::snapshot::fixture(dir.path());
    let store: SharedStore =
        Arc::new(SqliteStore::open(&dir.path().join("fixture.sqlite"), 100).unwrap());
    let state = AppState::new(
        Arc::new(snapshot),
        contract::Region::parse("us-east").unwrap(),
    );
    let retrainer = Arc::new(Retrainer::new(
        store.clone(),
        contract::Tenant::default_tenant(),
        contract::RegionMap::builtin(),
        crate::snapshot::Freshness::default(),
        Arc::new(crate::snapshot::fixture_model),
        state.snapshot.clone(),
    ));
    let mut live = Live::new(store.clone());
    live.admin_token = Some(Secret::new("s3cret"));
    live.retrainer = Some(retrainer.clone());
    Fixture {
        state: state.with_live(live),
        store,
        retrainer,
        _dir: dir,
    }
}

async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    token: bool,
    body: &str,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if token {
        req = req.header("authorization", "Bearer s3cret");
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

async fn admin(state: &AppState, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    send(state, method, uri, true, body).await
}

const BODY: &str = r#"{"name":"pop-vs-knn","variants":[
    {"name":"control","model":"{\"kind\":\"itemknn\",\"k\":50,\"shrink\":10}","share":50},
    {"name":"pop","model":"popularity","share":50}]}"#;

#[tokio::test]
async fn bad_bodies_and_callers_are_refused_with_clear_codes_and_nothing_is_stored() {
    let f = fixture();
    let (status, _) = send(&f.state, "POST", "/v1/admin/experiments", false, BODY).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let cases = [
        ("{", "invalid_body"),
        (r#"{"name":"x","variants":[],"extra":1}"#, "invalid_body"),
        (
            r#"{"name":"x","variants":[{"name":"a","model":"ease","share":0.5},{"name":"b","model":"ease","share":50}]}"#,
            "invalid_body",
        ),
        (
            r#"{"name":"x y","variants":[{"name":"a","model":"ease","share":50},{"name":"b","model":"ease","share":50}]}"#,
            "invalid_experiment_name",
        ),
        (
            r#"{"name":"x","variants":[{"name":"a","model":"ease","share":100}]}"#,
            "invalid_variants",
        ),
        (
            r#"{"name":"x","variants":[{"name":"a","model":"ease","share":50},{"name":"a","model":"ease","share":50}]}"#,
            "duplicate_variant",
        ),
        (
            r#"{"name":"x","variants":[{"name":"a","model":"ease","share":60},{"name":"b","model":"ease","share":50}]}"#,
            "invalid_share",
        ),
        (
            r#"{"name":"x","variants":[{"name":"a","model":"ease","share":50},{"name":"b","model":"no-such-model","share":50}]}"#,
            "invalid_model",
        ),
        (
            r#"{"name":"x","variants":[{"name":"a!","model":"ease","share":50},{"name":"b","model":"ease","share":50}]}"#,
            "invalid_variant_name",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = admin(&f.state, "POST", "/v1/admin/experiments", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    assert!(f.store.experiments().await.unwrap().is_empty());
    let (status, answer) = admin(&f.state, "GET", "/v1/admin/experiments/none", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"]["code"], "experiment_not_found");
}

#[tokio::test]
async fn an_experiment_runs_serves_each_user_from_their_variant_and_ends_with_a_promotion() {
    let f = fixture();
    let (status, created) = admin(&f.state, "POST", "/v1/admin/experiments", BODY).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "running");
    assert_eq!(created["retraining"], true);
    // One at a time, names never reused.
    let other = BODY.replace("pop-vs-knn", "second");
    let (status, answer) = admin(&f.state, "POST", "/v1/admin/experiments", &other).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["error"]["code"], "experiment_running");
    let (status, answer) = admin(&f.state, "POST", "/v1/admin/experiments", BODY).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["error"]["code"], "experiment_exists");

    // After the retrain, every user's list comes from their variant's model.
    f.retrainer.retrain().await.unwrap();
    let experiment = f.store.running_experiment().await.unwrap().unwrap();
    let snapshot = f.state.snapshot();
    let mut seen = std::collections::BTreeSet::new();
    for user in snapshot.user_ids().iter().take(40) {
        let (status, doc) = send(
            &f.state,
            "GET",
            &format!("/v1/recommendations/{user}"),
            false,
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        let variant = experiment.variant_of(user).name.clone();
        assert_eq!(doc["variant"], variant.as_str(), "{user}");
        let version = doc["model_version"].as_str().unwrap();
        match variant.as_str() {
            "pop" => assert!(version.contains("#popularity"), "{version}"),
            _ => assert!(version.ends_with("#itemknn-k50-s10"), "{version}"),
        }
        seen.insert(variant);
    }
    assert_eq!(seen.len(), 2, "40 users fall in both halves");
    // Popular lists belong to no variant.
    let (status, popular) = send(&f.state, "GET", "/v1/popular", false, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(popular.get("variant").is_none(), "{popular}");

    // Results: each variant, the control first, totals over the experiment's time.
    let (status, shown) = admin(&f.state, "GET", "/v1/admin/experiments/pop-vs-knn", "").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["results"][0]["name"], "control");
    assert!(shown["results"][0]["ctr_test"].is_null());
    assert_eq!(shown["total"]["impressions"], 0);
    let (status, running) = send(&f.state, "GET", "/v1/analytics/experiments", false, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(running["experiment"]["name"], "pop-vs-knn");

    // Ending: an unknown variant changes nothing; then the promotion.
    let end = "/v1/admin/experiments/pop-vs-knn/end";
    let (status, answer) = admin(&f.state, "POST", end, r#"{"promote":"nope"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"]["code"], "unknown_variant");
    assert!(f.store.running_experiment().await.unwrap().is_some());
    let (status, ended) = admin(&f.state, "POST", end, r#"{"promote":"pop"}"#).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["promoted"], "pop");
    assert_eq!(ended["model"], "popularity");
    assert_eq!(ended["model_setting"], "not_registered");
    let (status, answer) = admin(&f.state, "POST", end, r#"{"promote":"pop"}"#).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer["error"]["code"], "experiment_ended");

    // The promoted model is the tenant's; lists carry no variant any more.
    f.retrainer.retrain().await.unwrap();
    let user = f.state.snapshot().user_ids()[0].clone();
    let (_, doc) = send(
        &f.state,
        "GET",
        &format!("/v1/recommendations/{user}"),
        false,
        "",
    )
    .await;
    assert!(doc.get("variant").is_none(), "{doc}");
    assert!(
        doc["model_version"]
            .as_str()
            .unwrap()
            .contains("#popularity"),
        "{doc}"
    );
    let (_, list) = admin(&f.state, "GET", "/v1/admin/experiments", "").await;
    assert_eq!(list["experiments"][0]["status"], json!("ended"), "{list}");
    let (_, none) = send(&f.state, "GET", "/v1/analytics/experiments", false, "").await;
    assert!(none["experiment"].is_null());
}

/// For a registered tenant, ending saves the promoted variant's model as the tenant's
/// model setting (what every origin and every restart trains).
#[tokio::test]
async fn ending_for_a_registered_tenant_saves_the_promoted_model_as_its_setting() {
    use crate::tenants::{NewTenant, Quotas, Tenants};
    let f = fixture();
    let tenants = Tenants::new(Arc::new(
        crate::store::sqlite::SqliteTenants::open(&f._dir.path().join("fixture.sqlite")).unwrap(),
    ));
    let served = f.state.snapshot().tenant.clone();
    tenants
        .create(
            NewTenant::parse(served.as_str(), None, Quotas::default()).unwrap(),
            crate::snapshot::now_unix() as i64,
        )
        .await
        .unwrap();
    let state = f.state.clone().with_tenants(tenants.clone());
    let (status, _) = admin(&state, "POST", "/v1/admin/experiments", BODY).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, ended) = admin(
        &state,
        "POST",
        "/v1/admin/experiments/pop-vs-knn/end",
        r#"{"promote":"pop"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["model_setting"], "saved");
    let view = tenants
        .show(&served, crate::snapshot::now_unix() as i64)
        .await
        .unwrap();
    assert_eq!(
        view.tenant.model.as_ref().map(|m| m.as_str()),
        Some("popularity")
    );
}
