//! Tests of the publish targets and the bulk publish.

use std::path::Path;
use std::sync::{Arc, Mutex};

use contract::admin::{PublishRequest, PublishResponse};
use contract::{ErrorBody, RecommendationDoc, Tenant, UserId};

use super::*;
use crate::auth::Secret;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

fn job(tenant: &Tenant, cdn: Option<CdnFolder>, kv: Option<EdgeClient>) -> PublishJob {
    let mut targets = PublishTargets::default();
    if let Some(cdn) = cdn {
        targets = targets.with(Arc::new(cdn));
    }
    if let Some(kv) = kv {
        targets = targets.with(Arc::new(EdgeKv::new(kv)));
    }
    PublishJob {
        tenant: tenant.clone(),
        n: 20,
        users: None,
        chunk: 64,
        targets,
        progress: None,
        delta: None,
        keep_until: None,
        item_lists: false,
        fatigued: Default::default(),
    }
}

fn read_doc(path: &Path) -> RecommendationDoc {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_publish_writes_a_generation_and_points_current_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let snapshot = Arc::new(snapshot);
    let tenant = Tenant::default_tenant();
    let out = dir.path().join("cdn");
    let folder = CdnFolder::new(out.clone());

    let first = publish_all(snapshot.clone(), job(&tenant, Some(folder.clone()), None))
        .await
        .unwrap();
    assert_eq!(first.users, 200);
    assert_eq!(first.documents("cdn"), 200 + 4);
    let target = std::fs::read_link(out.join("current")).unwrap();
    assert_eq!(
        target,
        Path::new("generations").join(&first.generation),
        "current is a relative link to the generation"
    );
    let doc = read_doc(&out.join("current/default/users/u1.json"));
    assert_eq!(doc.user_id, "u1");
    assert_eq!(doc.items.len(), 20);
    for region in snapshot.regions.regions() {
        let p = out.join(format!("current/default/popular/{}.json", region.as_str()));
        let doc = read_doc(&p);
        assert_eq!(doc.user_id, "*");
        assert_eq!(doc.region, region.as_str());
        assert_eq!(doc.items.len(), contract::MAX_N.min(80));
    }

    let second = publish_all(snapshot.clone(), job(&tenant, Some(folder), None))
        .await
        .unwrap();
    assert_ne!(second.generation, first.generation);
    assert_eq!(
        std::fs::read_link(out.join("current")).unwrap(),
        Path::new("generations").join(&second.generation)
    );
    assert!(out
        .join("generations")
        .join(&first.generation)
        .join("default/users/u1.json")
        .exists());
}

#[tokio::test]
async fn publishing_one_tenant_keeps_the_other_tenants_files_served() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let snapshot = Arc::new(snapshot);
    let out = dir.path().join("cdn");
    let folder = CdnFolder::new(out.clone()).keeping(1);
    let books = Tenant::parse("books").unwrap();
    publish_all(
        snapshot.clone(),
        job(&Tenant::default_tenant(), Some(folder.clone()), None),
    )
    .await
    .unwrap();
    let before = std::fs::read(out.join("current/default/users/u1.json")).unwrap();
    // Another tenant's publish: a new generation, the only one kept.
    publish_all(snapshot.clone(), job(&books, Some(folder.clone()), None))
        .await
        .unwrap();
    assert!(out.join("current/books/users/u1.json").exists());
    assert_eq!(
        std::fs::read(out.join("current/default/users/u1.json")).unwrap(),
        before,
        "the default tenant's documents are still served after books published"
    );
    let generations = std::fs::read_dir(out.join("generations")).unwrap().count();
    assert_eq!(
        generations, 1,
        "the old generation was pruned, the files live on"
    );
}

#[tokio::test]
async fn old_generations_are_pruned_but_current_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let snapshot = Arc::new(snapshot);
    let tenant = Tenant::default_tenant();
    let out = dir.path().join("cdn");
    let mut last = String::new();
    for _ in 0..4 {
        let mut j = job(&tenant, Some(CdnFolder::new(out.clone()).keeping(2)), None);
        j.users = Some(vec![UserId::parse("u1").unwrap()]);
        last = publish_all(snapshot.clone(), j).await.unwrap().generation;
    }
    let left: Vec<_> = std::fs::read_dir(out.join("generations"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(out.join("current/default/users/u1.json").exists());
    assert_eq!(
        std::fs::read_link(out.join("current")).unwrap(),
        Path::new("generations").join(last)
    );
}

#[tokio::test]
async fn a_publish_limited_to_some_users_writes_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let tenant = Tenant::default_tenant();
    let out = dir.path().join("cdn");
    let mut j = job(&tenant, Some(CdnFolder::new(out.clone())), None);
    j.users = Some(vec![
        UserId::parse("u2").unwrap(),
        UserId::parse("u7").unwrap(),
    ]);
    let report = publish_all(Arc::new(snapshot), j).await.unwrap();
    assert_eq!(report.users, 2);
    let mut files: Vec<String> = std::fs::read_dir(out.join("current/default/users"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["u2.json", "u7.json"]);
}

/// The `Authorization` header and body of each request the fake edge received.
type Received = Vec<(Option<String>, PublishRequest)>;

#[derive(Clone, Default)]
struct FakeEdge {
    seen: Arc<Mutex<Received>>,
    refuse: bool,
}

async fn fake_publish(
    State(edge): State<FakeEdge>,
    headers: HeaderMap,
    Json(req): Json<PublishRequest>,
) -> Result<Json<PublishResponse>, (StatusCode, Json<ErrorBody>)> {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    edge.seen.lock().unwrap().push((auth, req.clone()));
    if edge.refuse {
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(ErrorBody::new("unauthorized", "bad admin token")),
        ));
    }
    Ok(Json(PublishResponse {
        tenant: req.tenant.clone().unwrap_or_default(),
        generation: req.generation.clone().unwrap_or_else(|| "gcur".into()),
        written: req.documents.len() + req.popular.len(),
        activated: req.activate,
    }))
}

async fn start_fake_edge(edge: FakeEdge) -> String {
    let app = axum::Router::new()
        .route("/admin/publish", axum::routing::post(fake_publish))
        .layer(axum::extract::DefaultBodyLimit::max(
            contract::admin::MAX_ADMIN_BODY_BYTES,
        ))
        .with_state(edge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_kv_publish_sends_batches_then_activates_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let edge = FakeEdge::default();
    let url = start_fake_edge(edge.clone()).await;
    let tenant = Tenant::default_tenant();
    let mut j = job(
        &tenant,
        None,
        Some(EdgeClient::new(&url, Secret::new("s3cret"))),
    );
    j.chunk = 1000;
    let seen_progress = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen_progress.clone();
    j.progress = Some(Box::new(move |p| recorder.lock().unwrap().push(p)));
    let report = publish_all(Arc::new(snapshot), j).await.unwrap();
    assert_eq!(report.documents("kv"), 200 + 4);
    assert_eq!(
        *seen_progress.lock().unwrap(),
        [
            Progress {
                done: 0,
                total: 200
            },
            Progress {
                done: 200,
                total: 200
            }
        ]
    );
    let seen = edge.seen.lock().unwrap();
    assert!(seen
        .iter()
        .all(|(auth, _)| auth.as_deref() == Some("Bearer s3cret")));
    let (last, rest) = seen.split_last().unwrap();
    assert!(last.1.activate);
    assert!(last.1.popular.is_empty() && last.1.documents.is_empty());
    assert_eq!(
        last.1.generation.as_deref(),
        Some(report.generation.as_str())
    );
    let (popular, batches) = rest.split_last().unwrap();
    assert_eq!(popular.1.popular.len(), 4);
    assert!(!popular.1.activate && popular.1.documents.is_empty());
    assert!(batches.iter().all(|(_, r)| !r.activate
        && r.documents.len() <= KV_BATCH
        && r.generation.as_deref() == Some(report.generation.as_str())
        && r.tenant.as_deref() == Some("default")));
    assert_eq!(
        batches
            .iter()
            .map(|(_, r)| r.documents.len())
            .sum::<usize>(),
        200
    );
}

#[tokio::test]
async fn an_edge_refusal_is_an_error_with_the_edges_message() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let edge = FakeEdge {
        refuse: true,
        ..Default::default()
    };
    let url = start_fake_edge(edge).await;
    let tenant = Tenant::default_tenant();
    let j = job(&tenant, None, Some(EdgeClient::new(&url, Secret::new("x"))));
    let err = publish_all(Arc::new(snapshot), j).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("bad admin token"), "{msg}");
}

#[test]
fn concurrent_writers_of_one_users_file_leave_readers_only_complete_documents() {
    let dir = tempfile::tempdir().unwrap();
    let folder = CdnFolder::new(dir.path().to_owned());
    let generation = contract::keys::generation_name(1, 0);
    folder.create_generation(&generation).unwrap();
    folder.switch_current(&generation).unwrap();
    let tenant = Tenant::default_tenant();
    let file = dir.path().join("current/default/users/u1.json");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (reads, bad) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (folder, tenant) = (&folder, &tenant);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..300 {
                        let mut doc = RecommendationDoc {
                            tenant: "default".into(),
                            user_id: "u1".into(),
                            region: "us-east".into(),
                            items: Vec::new(),
                            model_version: format!("w{w}#{i}"),
                            generated_at: i,
                            fresh_for_s: 300,
                            stale_for_s: 86_400,
                            list: None,
                            item_id: None,
                            variant: None,
                        };
                        doc.items = (0..(20 + (i as usize * 7 + w) % 80))
                            .map(|k| contract::RecItem {
                                item_id: format!("item-{k}"),
                                score: 1.0 / (k + 1) as f64,
                                reason: Some("a reason long enough to need several writes".into()),
                                categories: Vec::new(),
                            })
                            .collect();
                        if let Err(e) = folder.write_current_user(tenant, &doc) {
                            failed.push(e.to_string());
                        }
                    }
                    failed
                })
            })
            .collect();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (mut reads, mut bad) = (0, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok(bytes) = std::fs::read(&file) else {
                            continue;
                        };
                        reads += 1;
                        if serde_json::from_slice::<RecommendationDoc>(&bytes).is_err() {
                            bad.push(bytes.len());
                        }
                    }
                    (reads, bad)
                })
            })
            .collect();
        let failed: Vec<String> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            failed.is_empty(),
            "{} writes failed, e.g. {:?}",
            failed.len(),
            failed.first()
        );
        readers.into_iter().map(|r| r.join().unwrap()).fold(
            (0, Vec::new()),
            |(n, mut b), (rn, rb)| {
                b.extend(rb);
                (n + rn, b)
            },
        )
    });
    assert!(reads > 100, "only {reads} reads");
    assert!(
        bad.is_empty(),
        "{} of {reads} reads were not whole documents (sizes {:?})",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    let left: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["u1.json"], "no temporary files are left behind");
}

#[tokio::test]
async fn publish_on_miss_sends_one_document_into_the_current_kv_generation() {
    let edge = FakeEdge::default();
    let url = start_fake_edge(edge.clone()).await;
    let targets = PublishTargets::default().with(Arc::new(EdgeKv::new(EdgeClient::new(
        &url,
        Secret::new("t"),
    ))));
    let doc = RecommendationDoc {
        tenant: "default".into(),
        user_id: "u1".into(),
        region: "europe".into(),
        items: Vec::new(),
        model_version: "x#y".into(),
        generated_at: 1,
        fresh_for_s: 300,
        stale_for_s: 86_400,
        list: None,
        item_id: None,
        variant: None,
    };
    let outcome = publish_one(&targets, &Tenant::default_tenant(), &doc, None).await;
    assert!(matches!(outcome.of("kv"), Some(Ok(()))));
    assert!(outcome.of("cdn").is_none());
    let seen = edge.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let req = &seen[0].1;
    assert_eq!(req.generation, None);
    assert!(!req.activate);
    assert_eq!(req.documents, vec![doc]);
}

/// A local server implementing Cloudflare's documented KV bulk-write and read-value
/// endpoints. There is no local version of Cloudflare's REST API, so this stands in
/// for it: it checks every request's shape and the documented limits (auth, at most
/// 10,000 pairs and 100 MB per call, keys of 1–512 bytes, values up to 25 MiB,
/// `expiration_ttl` at least 60) and answers with the API's envelope. It can refuse
/// the first calls with a given status to exercise retries.
#[derive(Clone, Default)]
struct FakeKvApi {
    values: Arc<Mutex<std::collections::HashMap<String, String>>>,
    ttls: Arc<Mutex<std::collections::HashMap<String, Option<u64>>>>,
    /// Keys in the order they were written.
    order: Arc<Mutex<Vec<String>>>,
    calls: Arc<Mutex<Vec<usize>>>,
    violations: Arc<Mutex<Vec<String>>>,
    /// (status, how many calls) to refuse before answering normally.
    refuse: Arc<Mutex<(u16, usize)>>,
}

async fn fake_bulk(
    State(api): State<FakeKvApi>,
    axum::extract::Path((account, namespace)): axum::extract::Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let envelope_error = |status: u16, msg: &str| {
        (
            StatusCode::from_u16(status).unwrap(),
            Json(
                serde_json::json!({"success": false, "errors": [{"code": 10000 + status, "message": msg}], "messages": [], "result": null}),
            ),
        )
    };
    {
        let mut refuse = api.refuse.lock().unwrap();
        if refuse.1 > 0 {
            refuse.1 -= 1;
            return envelope_error(refuse.0, "try again later");
        }
    }
    let mut bad = Vec::new();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer cf-token") {
        bad.push("authorization".to_owned());
    }
    if (account.as_str(), namespace.as_str()) != ("acc1", "ns1") {
        bad.push(format!("path {account}/{namespace}"));
    }
    if body.len() > 100_000_000 {
        bad.push(format!("body of {} bytes", body.len()));
    }
    let pairs: Vec<BulkPair> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            bad.push(format!("body: {e}"));
            Vec::new()
        }
    };
    if pairs.is_empty() || pairs.len() > 10_000 {
        bad.push(format!("{} pairs", pairs.len()));
    }
    for p in &pairs {
        if p.key.is_empty() || p.key.len() > 512 || p.value.len() > 25 * 1024 * 1024 {
            bad.push(format!("pair {}", p.key));
        }
        if p.expiration_ttl.is_some_and(|t| t < 60) {
            bad.push(format!("ttl of {}", p.key));
        }
    }
    if !bad.is_empty() {
        api.violations.lock().unwrap().extend(bad.clone());
        return envelope_error(400, &bad.join("; "));
    }
    api.calls.lock().unwrap().push(pairs.len());
    let n = pairs.len();
    for p in pairs {
        api.order.lock().unwrap().push(p.key.clone());
        api.ttls
            .lock()
            .unwrap()
            .insert(p.key.clone(), p.expiration_ttl);
        api.values.lock().unwrap().insert(p.key, p.value);
    }
    (
        StatusCode::OK,
        Json(
            serde_json::json!({"success": true, "errors": [], "messages": [],
            "result": {"successful_key_count": n, "unsuccessful_keys": []}}),
        ),
    )
}

async fn fake_value(
    State(api): State<FakeKvApi>,
    axum::extract::Path((_, _, key)): axum::extract::Path<(String, String, String)>,
) -> Result<String, StatusCode> {
    api.values
        .lock()
        .unwrap()
        .get(&key)
        .cloned()
        .ok_or(StatusCode::NOT_FOUND)
}

async fn start_fake_kv_api(api: FakeKvApi) -> String {
    let app = axum::Router::new()
        .route(
            "/client/v4/accounts/{account}/storage/kv/namespaces/{namespace}/bulk",
            axum::routing::put(fake_bulk),
        )
        .route(
            "/client/v4/accounts/{account}/storage/kv/namespaces/{namespace}/values/{key}",
            axum::routing::get(fake_value),
        )
        .layer(axum::extract::DefaultBodyLimit::max(120_000_000))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/client/v4")
}

fn kv_api(url: &str) -> KvApiSettings {
    let mut s = KvApiSettings::new(url, "acc1", "ns1", Secret::new("cf-token"));
    s.requests_per_second = 1000.0;
    s.first_backoff = std::time::Duration::from_millis(10);
    s
}

fn kv_api_job(tenant: &Tenant, settings: KvApiSettings) -> PublishJob {
    let mut j = job(tenant, None, None);
    j.targets = PublishTargets::default().with(Arc::new(KvRest::new(settings)));
    j.chunk = 1000;
    j
}

#[tokio::test]
async fn a_kv_api_publish_writes_every_key_in_bounded_batches_then_the_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let api = FakeKvApi::default();
    let url = start_fake_kv_api(api.clone()).await;
    let mut settings = kv_api(&url);
    // Small calls, so the 200 users need several batches.
    settings.max_call_bytes = 200_000;
    let tenant = Tenant::default_tenant();
    let report = publish_all(Arc::new(snapshot), kv_api_job(&tenant, settings))
        .await
        .unwrap();
    assert!(api.violations.lock().unwrap().is_empty());
    assert_eq!(report.documents("kv-api"), 200 + 4);
    let calls = api.calls.lock().unwrap().clone();
    assert!(calls.len() >= 3, "several bounded batches: {calls:?}");
    let values = api.values.lock().unwrap();
    let pointer = values.get("t/default/generation").unwrap();
    assert_eq!(pointer, &report.generation);
    let doc: RecommendationDoc = serde_json::from_str(
        values
            .get(&format!("t/default/g/{}/u/u1", report.generation))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc.user_id, "u1");
    assert!(values.contains_key(&format!("t/default/g/{}/popular/europe", report.generation)));
    let order = api.order.lock().unwrap();
    assert_eq!(
        order.last().unwrap(),
        "t/default/generation",
        "the pointer is written last"
    );
}

#[tokio::test]
async fn a_kv_api_call_refused_with_429_or_5xx_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let api = FakeKvApi::default();
    *api.refuse.lock().unwrap() = (429, 2);
    let url = start_fake_kv_api(api.clone()).await;
    let tenant = Tenant::default_tenant();
    let report = publish_all(Arc::new(snapshot), kv_api_job(&tenant, kv_api(&url)))
        .await
        .unwrap();
    assert_eq!(report.documents("kv-api"), 204);
    assert_eq!(
        api.values.lock().unwrap().get("t/default/generation"),
        Some(&report.generation)
    );
}

#[tokio::test]
async fn a_batch_that_keeps_failing_names_itself_and_leaves_the_pointer_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let api = FakeKvApi::default();
    *api.refuse.lock().unwrap() = (503, 1000);
    let url = start_fake_kv_api(api.clone()).await;
    let tenant = Tenant::default_tenant();
    let mut settings = kv_api(&url);
    settings.attempts = 3;
    let err = publish_all(Arc::new(snapshot), kv_api_job(&tenant, settings))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("batch 0"), "{msg}");
    assert!(msg.contains("503"), "{msg}");
    assert!(msg.contains("pointer was not flipped"), "{msg}");
    assert_eq!(
        api.refuse.lock().unwrap().1,
        1000 - 3,
        "three tries, then it gave up"
    );
    assert!(api.values.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_kv_api_write_after_a_miss_goes_into_the_current_generation() {
    let api = FakeKvApi::default();
    api.values
        .lock()
        .unwrap()
        .insert("t/default/generation".into(), "g7-0".into());
    let url = start_fake_kv_api(api.clone()).await;
    let target = KvRest::new(kv_api(&url));
    let mut doc = RecommendationDoc {
        tenant: "default".into(),
        user_id: "u/9".into(),
        region: "europe".into(),
        items: Vec::new(),
        model_version: "x#y".into(),
        generated_at: crate::snapshot::now_unix(),
        fresh_for_s: 300,
        stale_for_s: 86_400,
        list: None,
        item_id: None,
        variant: None,
    };
    // A user id the contract refuses is an error, never a key.
    let bad = target
        .write_current(&Tenant::default_tenant(), &doc, None)
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("u/9"), "{bad}");
    doc.user_id = "u9".into();
    target
        .write_current(&Tenant::default_tenant(), &doc, None)
        .await
        .unwrap();
    assert!(api
        .values
        .lock()
        .unwrap()
        .contains_key("t/default/g/g7-0/u/u9"));
}

#[test]
fn an_oversize_key_or_document_is_an_error_naming_the_user() {
    let mut doc = RecommendationDoc {
        tenant: "default".into(),
        user_id: "u1".into(),
        region: "europe".into(),
        items: Vec::new(),
        model_version: "x#y".into(),
        generated_at: 1,
        fresh_for_s: 300,
        stale_for_s: 86_400,
        list: None,
        item_id: None,
        variant: None,
    };
    let err = pair_for("k".repeat(513), &doc, 1, None, "user u1").unwrap_err();
    assert!(err.to_string().contains("user u1"), "{err}");
    assert!(err.to_string().contains("512"), "{err}");
    doc.items = (0..100)
        .map(|k| contract::RecItem {
            item_id: format!("item-{k}"),
            score: 1.0,
            reason: Some("r".repeat(1000)),
            categories: Vec::new(),
        })
        .collect();
    let err = pair_for("k".into(), &doc, 1, None, "user u1").unwrap_err();
    assert!(err.to_string().contains("user u1"), "{err}");
    assert!(pair_for(
        "k".repeat(512),
        &RecommendationDoc {
            items: Vec::new(),
            ..doc
        },
        1,
        None,
        "x"
    )
    .is_ok());
}

#[test]
fn batches_respect_the_pair_and_byte_limits() {
    let pair = |i: usize| BulkPair {
        key: format!("k{i}"),
        value: "v".repeat(100),
        expiration_ttl: Some(60),
    };
    let many: Vec<BulkPair> = (0..25_000).map(pair).collect();
    let b = batches(many, MAX_CALL_BYTES);
    assert_eq!(
        b.iter().map(Vec::len).collect::<Vec<_>>(),
        [10_000, 10_000, 5_000]
    );
    let small = batches((0..100).map(pair).collect(), 1_500);
    for batch in &small {
        assert!(serde_json::to_string(batch).unwrap().len() <= 1_500);
    }
    assert_eq!(small.iter().map(Vec::len).sum::<usize>(), 100);
}

#[tokio::test]
async fn two_quick_activations_write_the_pointer_a_second_apart() {
    let api = FakeKvApi::default();
    let url = start_fake_kv_api(api.clone()).await;
    let target = KvRest::new(kv_api(&url));
    let tenant = Tenant::default_tenant();
    let started = std::time::Instant::now();
    for counter in 0..2 {
        let g = contract::keys::generation_name(5, counter);
        target
            .activate(&tenant, &contract::keys::GenerationPointer::whole(g))
            .await
            .unwrap();
    }
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(950),
        "the second pointer write waited: {:?}",
        started.elapsed()
    );
    assert_eq!(
        api.values
            .lock()
            .unwrap()
            .get("t/default/generation")
            .map(String::as_str),
        Some("g5-1")
    );
}

#[tokio::test]
async fn a_delta_writes_only_changed_documents_and_points_at_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let snapshot = Arc::new(snapshot);
    let api = FakeKvApi::default();
    let url = start_fake_kv_api(api.clone()).await;
    let tenant = Tenant::default_tenant();
    let keep_until = crate::snapshot::now_unix() + 7 * 86_400;

    let mut whole = kv_api_job(&tenant, kv_api(&url));
    whole.keep_until = Some(keep_until);
    let base = publish_all(snapshot.clone(), whole).await.unwrap();
    assert_eq!(base.pointer.base, None);
    assert_eq!(base.hashes.len(), 200);
    let key = format!("t/default/g/{}/u/u1", base.generation);
    let ttl = api.ttls.lock().unwrap()[&key].unwrap();
    assert!(
        ttl + 5 >= 7 * 86_400,
        "a base outlives its documents' own window: {ttl}"
    );

    // One user's document differs from what the base holds; everyone else's is the same.
    let mut hashes = base.hashes.clone();
    *hashes.get_mut("u7").unwrap() ^= 1;
    let mut delta = kv_api_job(&tenant, kv_api(&url));
    delta.keep_until = Some(keep_until);
    delta.delta = Some(DeltaBase {
        generation: contract::keys::Generation::parse(&base.generation).unwrap(),
        hashes,
    });
    let before = api.order.lock().unwrap().len();
    let report = publish_all(snapshot.clone(), delta).await.unwrap();
    assert_eq!(report.users, 200);
    assert_eq!(report.unchanged, 199);
    assert_eq!(
        report.documents("kv-api"),
        1 + 4,
        "u7 and the popular lists"
    );
    let written: Vec<String> = api.order.lock().unwrap()[before..].to_vec();
    assert!(written.contains(&format!("t/default/g/{}/u/u7", report.generation)));
    assert!(!written.iter().any(|k| k.ends_with("/u/u1")), "{written:?}");
    let pointer = api.values.lock().unwrap()["t/default/generation"].clone();
    let pointer = contract::keys::GenerationPointer::parse(&pointer).unwrap();
    assert_eq!(pointer.generation.as_str(), report.generation);
    assert_eq!(pointer.base.unwrap().as_str(), base.generation);
    assert!(pointer.published_at > 0);
}

#[tokio::test]
async fn a_delta_to_a_target_that_cannot_hold_one_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let tenant = Tenant::default_tenant();
    let out = dir.path().join("cdn");
    let mut j = job(&tenant, Some(CdnFolder::new(out.clone())), None);
    j.delta = Some(DeltaBase {
        generation: contract::keys::generation_name(1, 0),
        hashes: Default::default(),
    });
    let err = publish_all(Arc::new(snapshot), j).await.unwrap_err();
    assert!(
        err.to_string().contains("cdn target cannot hold delta"),
        "{err}"
    );
    assert!(!out.join("generations").exists());
}

#[test]
fn content_hashes_see_items_reasons_and_scores_but_not_float_noise() {
    let item = |id: &str, score: f64| contract::RecItem {
        item_id: id.into(),
        score,
        reason: Some("r".into()),
        categories: Vec::new(),
    };
    let a = content_hash(&[item("i1", 0.5), item("i2", 0.25)]);
    assert_eq!(
        a,
        content_hash(&[item("i1", 0.500_000_01), item("i2", 0.25)])
    );
    assert_ne!(a, content_hash(&[item("i2", 0.25), item("i1", 0.5)]));
    assert_ne!(a, content_hash(&[item("i1", 0.6), item("i2", 0.25)]));
    assert_ne!(a, content_hash(&[item("i1", 0.5)]));
    // Stable across builds: the value is stored between publishes.
    assert_eq!(content_hash(&[]), content_hash(&[]));
}

#[tokio::test]
async fn a_publish_with_item_lists_writes_each_items_similar_and_bought_together_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (snapshot, _store) = crate::snapshot::fixture(dir.path());
    let items = snapshot.item_ids().len();
    let tenant = Tenant::default_tenant();
    let out = dir.path().join("cdn");
    let mut j = job(&tenant, Some(CdnFolder::new(out.clone())), None);
    j.item_lists = true;
    let report = publish_all(Arc::new(snapshot), j).await.unwrap();
    assert_eq!(report.item_lists, 2 * items);
    assert_eq!(report.documents("cdn"), 200 + 2 * items + 4);
    let similar = read_doc(&out.join("current/default/similar/i1.json"));
    similar.validate().unwrap();
    assert_eq!(
        (similar.user_id.as_str(), similar.item_id.as_deref()),
        ("*", Some("i1"))
    );
    assert_eq!(similar.list, Some(contract::ItemList::Similar));
    assert_eq!(similar.items.len(), 20);
    assert!(similar.items.iter().all(|i| i.item_id != "i1"));
    assert!(similar.items[0]
        .reason
        .as_deref()
        .unwrap()
        .starts_with("similar to i1"));
    let together = read_doc(&out.join("current/default/bought-together/i1.json"));
    assert_eq!(together.list, Some(contract::ItemList::BoughtTogether));
    assert!(!together.items.is_empty());
    assert!(together.items.iter().all(|i| i.item_id != "i1"));
    assert_eq!(report.hashes.len(), 200 + 2 * items);
    assert!(report.hashes.contains_key("similar/i1"));
}

/// While an experiment runs, a bulk publish writes each user's document from their
/// variant's model, naming the variant and that model's version; popular lists name none.
#[tokio::test]
async fn a_bulk_publish_writes_each_users_document_from_their_variant() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = crate::snapshot::fixture(dir.path());
    let experiment = crate::experiments::NewExperiment {
        name: "knn-vs-pop".into(),
        variants: vec![
            crate::experiments::Variant {
                name: "control".into(),
                model: r#"{"kind":"itemknn","k":50,"shrink":10}"#.into(),
                share: 50,
            },
            crate::experiments::Variant {
                name: "pop".into(),
                model: "popularity".into(),
                share: 50,
            },
        ],
    }
    .start(1)
    .unwrap();
    let train: crate::retrain::TrainFn = Arc::new(crate::snapshot::fixture_model);
    let snapshot = Arc::new(crate::retrain::build_with_experiment(
        store.training_set().unwrap(),
        Tenant::default_tenant(),
        contract::RegionMap::builtin(),
        crate::snapshot::Freshness::default(),
        &crate::admission::TrainingPolicy::default(),
        &train,
        Some(experiment.clone()),
    ));
    let out = dir.path().join("cdn");
    let report = publish_all(
        snapshot.clone(),
        job(
            &Tenant::default_tenant(),
            Some(CdnFolder::new(out.clone())),
            None,
        ),
    )
    .await
    .unwrap();
    assert_eq!(report.users, 200);
    let mut per_variant = std::collections::BTreeMap::new();
    for user in snapshot.user_ids() {
        let doc = read_doc(&out.join(format!("current/default/users/{user}.json")));
        let variant = &experiment.variant_of(user).name;
        assert_eq!(doc.variant.as_deref(), Some(variant.as_str()), "{user}");
        let model = if variant == "pop" {
            "#popularity"
        } else {
            "#itemknn-k50-s10"
        };
        assert!(
            doc.model_version.contains(model),
            "{user}: {}",
            doc.model_version
        );
        *per_variant.entry(variant.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_variant.len(), 2, "{per_variant:?}");
    let popular = read_doc(&out.join("current/default/popular/europe.json"));
    assert_eq!(popular.variant, None);
    assert!(popular.model_version.ends_with("#itemknn-k50-s10"));
}
