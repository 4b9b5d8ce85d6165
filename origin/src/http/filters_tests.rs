//! Tests of the request filters (`category=`, with `exclude=`) and of availability
//! through the whole router: a category filter keeps only its items and says when the
//! answer runs short; an unavailable item is in no answer, from the snapshot's read or
//! from a catalogue write after it; and a write republishes the documents holding it.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use contract::{RecommendationDoc, Region, Tenant};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::auth::Secret;
use crate::freshness::{PublishGate, PublishHealth, Republisher, Targets};
use crate::publish::{CdnFolder, PublishTargets};
use crate::snapshot::Snapshot;
use crate::store::{ItemRow, SharedStore, SqliteStore};

struct Fixture {
    state: AppState,
    cdn: std::path::PathBuf,
    _store: crate::store::sqlite::Database,
    _dir: tempfile::TempDir,
}

/// The fixture snapshot over demo data, a live store on the same file with the admin
/// token, and a republisher writing into a CDN folder's current generation.
fn fixture_with(
    snapshot: Snapshot,
    dir: tempfile::TempDir,
    store: crate::store::sqlite::Database,
) -> Fixture {
    let live_store: SharedStore =
        Arc::new(SqliteStore::open(&dir.path().join("fixture.sqlite"), 100).unwrap());
    let cdn = dir.path().join("cdn");
    let folder = CdnFolder::new(cdn.clone());
    let generation = contract::keys::generation_name(1, 0);
    folder.create_generation(&generation).unwrap();
    folder.switch_current(&generation).unwrap();
    let shared = Arc::new(ArcSwap::from_pointee(snapshot));
    let region = Region::parse("us-east").unwrap();
    let gate = PublishGate::default();
    let publish = PublishTargets::default().with(Arc::new(CdnFolder::new(cdn.clone())));
    let republisher = Republisher::spawn(
        Targets {
            store: live_store.clone(),
            snapshot: shared.clone(),
            publish,
            region: region.clone(),
            publish_n: DEFAULT_PUBLISH_N,
            health: Arc::new(PublishHealth::default()),
            gate: gate.clone(),
        },
        Duration::from_millis(20),
    );
    let mut live = Live::new(live_store);
    live.admin_token = Some(Secret::new("s3cret"));
    live.republisher = Some(republisher);
    let mut state = AppState::new(shared.load_full(), region)
        .with_live(live)
        .with_publish_gate(gate)
        .with_publish_dir(cdn.clone());
    state.snapshot = shared;
    Fixture {
        state,
        cdn,
        _store: store,
        _dir: dir,
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, store) = crate::snapshot::fixture(dir.path());
    fixture_with(snapshot, dir, store)
}

async fn send(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req
            .header("content-type", "application/json")
            .header("authorization", "Bearer s3cret");
    }
    let resp = crate::app(state.clone())
        .oneshot(req.body(Body::from(body.unwrap_or("").to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let short = resp
        .headers()
        .get("x-filter-short")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, short, serde_json::from_slice(&bytes).unwrap())
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, Option<String>, Value) {
    send(state, "GET", uri, None).await
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
async fn every_answered_item_lists_its_catalogue_categories() {
    let f = fixture();
    let (status, _, body) = get(&f.state, "/v1/recommendations/u1?n=20").await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    assert!(
        items.iter().all(|i| !categories(i).is_empty()),
        "demo items all have a category: {body}"
    );
    let doc: RecommendationDoc = serde_json::from_value(body).unwrap();
    assert_eq!(doc.validate(), Ok(()));
}

#[tokio::test]
async fn a_category_filter_answers_n_items_of_the_category_ranked_over_the_catalogue() {
    let f = fixture();
    let (status, short, body) = get(&f.state, "/v1/recommendations/u1?n=4&category=books").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "masked before the top-n: {body}");
    assert_eq!(short, None, "a full answer has no X-Filter-Short");
    for item in items {
        assert!(categories(item).contains(&"books".to_owned()), "{item}");
    }
    // The same items rank in the same order as in the unfiltered list of every item.
    let (_, _, all) = get(&f.state, "/v1/recommendations/u1?n=100").await;
    let in_books: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| categories(i).contains(&"books".to_owned()))
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&body), in_books[..4]);
    // With exclude, the excluded item leaves and the next of the category takes its place.
    let first = &in_books[0];
    let (_, _, body) = get(
        &f.state,
        &format!("/v1/recommendations/u1?n=4&category=books&exclude={first}"),
    )
    .await;
    assert_eq!(ids(&body), in_books[1..5]);
    // The batch and the popular list take it too.
    let (status, _, batch) = send(
        &f.state,
        "POST",
        "/v1/recommendations/batch",
        Some(r#"{"user_ids":["u1","nobody"],"n":3,"category":"music"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    for doc in batch["results"].as_array().unwrap() {
        assert_eq!(doc["items"].as_array().unwrap().len(), 3);
        for item in doc["items"].as_array().unwrap() {
            assert!(categories(item).contains(&"music".to_owned()), "{item}");
        }
    }
    let (_, _, popular) = get(&f.state, "/v1/popular?n=3&category=film").await;
    for item in popular["items"].as_array().unwrap() {
        assert!(categories(item).contains(&"film".to_owned()), "{item}");
    }
}

#[tokio::test]
async fn a_filter_that_leaves_fewer_than_n_serves_them_and_says_how_many() {
    let f = fixture();
    let (status, short, body) = get(
        &f.state,
        "/v1/recommendations/u1?n=5&category=no-such-shelf",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body).len(), 0);
    assert_eq!(short.as_deref(), Some("0"));
    let (_, short, body) = get(&f.state, "/v1/recommendations/u1?n=100&category=books").await;
    let got = ids(&body).len();
    assert!(got > 0 && got < 100, "the catalogue has fewer books: {got}");
    assert_eq!(short, Some(got.to_string()));
}

#[tokio::test]
async fn a_bad_category_is_refused_with_400_json() {
    let f = fixture();
    let long = "x".repeat(65);
    for q in [
        "category=a%2Cb",
        "category=a%7Cb",
        "category=%0A",
        "category=%20%20",
    ] {
        let (status, _, body) = get(&f.state, &format!("/v1/recommendations/u1?{q}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(body["error"]["code"], "invalid_category", "{q}");
    }
    let (status, _, body) = get(&f.state, &format!("/v1/popular?category={long}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_category"))
    );
    let (status, _, body) = send(
        &f.state,
        "POST",
        "/v1/recommendations/batch",
        Some(r#"{"user_ids":["u1"],"category":"a|b"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_category");
    let (status, _, _) = get(&f.state, "/v1/recommendations/u1?category=").await;
    assert_eq!(status, StatusCode::OK, "an empty category is no filter");
}

#[tokio::test]
async fn an_item_unavailable_when_the_store_was_read_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, mut store) = crate::snapshot::fixture(dir.path());
    let (_, _, top) = get(
        &AppState::new(Arc::new(snapshot), Region::parse("us-east").unwrap()),
        "/v1/popular?n=3",
    )
    .await;
    let gone = ids(&top)[0].clone();
    let mut row = ItemRow {
        item_id: gone.clone(),
        ..Default::default()
    };
    row.available = false;
    store.upsert_items(&[row]).unwrap();
    let snapshot = Snapshot::build(
        store.training_set().unwrap(),
        Tenant::default_tenant(),
        contract::RegionMap::builtin(),
        crate::snapshot::Freshness::default(),
        crate::snapshot::fixture_model,
    );
    assert!(!snapshot.is_available(&gone));
    let state = AppState::new(Arc::new(snapshot), Region::parse("us-east").unwrap());
    let (_, _, popular) = get(&state, "/v1/popular?n=3").await;
    assert!(!ids(&popular).contains(&gone));
    assert_eq!(ids(&popular).len(), 3);
    for user in ["u1", "u2", "u3", "nobody"] {
        let (_, _, doc) = get(&state, &format!("/v1/recommendations/{user}?n=100")).await;
        assert!(!ids(&doc).contains(&gone), "{user}");
    }
}

#[tokio::test]
async fn an_item_set_unavailable_leaves_every_answer_at_once_and_its_documents_are_republished() {
    let f = fixture();
    let (_, _, before) = get(&f.state, "/v1/recommendations/u1?n=10").await;
    let gone = ids(&before)[0].clone();
    // The published document of u1 (publish on miss) holds the item.
    let user_file = f.cdn.join("current/default/users/u1.json");
    let doc_items = |path: &std::path::Path| -> Option<Vec<String>> {
        let bytes = std::fs::read(path).ok()?;
        let doc: RecommendationDoc = serde_json::from_slice(&bytes).ok()?;
        Some(doc.items.into_iter().map(|i| i.item_id).collect())
    };
    for _ in 0..200 {
        if doc_items(&user_file).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(doc_items(&user_file).unwrap().contains(&gone));
    // Who else lists it, as the origin computes their canonical list now (users
    // without history get their region's popular list, which a full publish writes
    // for them too).
    let mut listing = Vec::new();
    let snapshot = f.state.snapshot();
    for u in 0..200 {
        // A user the store does not hold has no document anywhere.
        if snapshot
            .known_user_region(&contract::UserId::parse(&format!("u{u}")).unwrap())
            .is_none()
        {
            continue;
        }
        let (_, _, doc) = get(
            &f.state,
            &format!("/v1/recommendations/u{u}?n={DEFAULT_PUBLISH_N}"),
        )
        .await;
        if ids(&doc).contains(&gone) {
            listing.push(format!("u{u}"));
        }
    }
    let (status, _, body) = send(
        &f.state,
        "PUT",
        &format!("/v1/items/{gone}"),
        Some(r#"{"title":"Sold out","categories":["books"],"available":false}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The origin's own answers leave it out at once, and still hold n items.
    let (_, _, after) = get(&f.state, "/v1/recommendations/u1?n=10").await;
    assert!(!ids(&after).contains(&gone));
    assert_eq!(ids(&after).len(), 10);
    assert_eq!(ids(&after)[..9], ids(&before)[1..]);
    let (_, _, popular) = get(&f.state, "/v1/popular?n=100").await;
    assert!(!ids(&popular).contains(&gone));
    // The scan finds exactly the users whose canonical list held it.
    let idx = snapshot.item_idx(&gone).unwrap();
    let (found, past) = snapshot.users_listing(&[idx], DEFAULT_PUBLISH_N, usize::MAX);
    let mut found: Vec<String> = found.into_iter().map(|u| u.to_string()).collect();
    found.sort();
    listing.sort();
    assert_eq!(past, 0);
    assert_eq!(found, listing);
    let (some, past) = snapshot.users_listing(&[idx], DEFAULT_PUBLISH_N, 10);
    assert!(some.len() <= 10);
    assert_eq!(
        past,
        snapshot.user_ids().len() - 10,
        "bounded: the users past the bound are counted"
    );
    // And the republisher rewrites the published document without it.
    let mut republished = false;
    for _ in 0..300 {
        if doc_items(&user_file).is_some_and(|items| !items.contains(&gone)) {
            republished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(republished, "u1's published document still holds {gone}");
    // Available again: served again.
    let (status, _, _) = send(
        &f.state,
        "PATCH",
        &format!("/v1/items/{gone}"),
        Some(r#"{"available":true}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, again) = get(&f.state, "/v1/recommendations/u1?n=10").await;
    assert_eq!(ids(&again), ids(&before));
}

#[tokio::test]
async fn a_deleted_item_or_one_made_unavailable_in_bulk_is_not_served() {
    let f = fixture();
    let (_, _, before) = get(&f.state, "/v1/recommendations/u2?n=5").await;
    let (a, b) = (ids(&before)[0].clone(), ids(&before)[1].clone());
    let body = format!(
        r#"{{"items":[{{"item_id":"{a}","available":false}},{{"item_id":"zz-new","available":false}}]}}"#
    );
    let (status, _, _) = send(&f.state, "POST", "/v1/items", Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&f.state, "PUT", &format!("/v1/items/{b}"), Some("{}")).await;
    assert_eq!(status, StatusCode::OK);
    let req = Request::delete(format!("/v1/items/{b}"))
        .header("authorization", "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let resp = crate::app(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, _, after) = get(&f.state, "/v1/recommendations/u2?n=5").await;
    let got = ids(&after);
    assert!(!got.contains(&a) && !got.contains(&b), "{got:?}");
    assert_eq!(got.len(), 5);
}

#[tokio::test]
async fn a_retrain_keeps_live_records_the_store_read_may_not_hold_and_drops_the_others() {
    let f = fixture();
    let snapshot = f.state.snapshot();
    snapshot.live.record("i1", false, Vec::new(), 10);
    snapshot.live.record("i2", false, Vec::new(), u64::MAX);
    let store = f.state.live.as_ref().unwrap().store.clone();
    let train: crate::retrain::TrainFn = Arc::new(crate::snapshot::fixture_model);
    let retrainer = crate::retrain::Retrainer::new(
        store,
        Tenant::default_tenant(),
        contract::RegionMap::builtin(),
        crate::snapshot::Freshness::default(),
        train,
        f.state.snapshot.clone(),
    );
    retrainer.retrain().await.unwrap();
    let new = f.state.snapshot();
    assert!(!Arc::ptr_eq(&new, &snapshot));
    assert!(Arc::ptr_eq(&new.live, &snapshot.live), "handed on");
    assert!(new.read_from > 10);
    assert_eq!(
        new.live.get("i1"),
        None,
        "older than the read: in the store"
    );
    assert!(new.live.get("i2").is_some(), "newer than the read: kept");
}

#[tokio::test]
async fn a_write_that_changes_nothing_served_records_nothing() {
    let f = fixture();
    let (_, _, doc) = get(&f.state, "/v1/recommendations/u3?n=1").await;
    let item = &doc["items"][0];
    let id = item["item_id"].as_str().unwrap();
    let body = serde_json::json!({ "title": "Renamed", "categories": categories(item) });
    let (status, _, _) = send(
        &f.state,
        "PUT",
        &format!("/v1/items/{id}"),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&f.state, "PUT", "/v1/items/brand-new", Some("{}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        f.state.snapshot().live.is_empty(),
        "answers keep their unmasked path"
    );
    let (_, _, after) = get(&f.state, "/v1/recommendations/u3?n=1").await;
    assert_eq!(after["items"][0]["item_id"], id);
}
