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
                        };
                        doc.items = (0..(20 + (i as usize * 7 + w) % 80))
                            .map(|k| contract::RecItem {
                                item_id: format!("item-{k}"),
                                score: 1.0 / (k + 1) as f64,
                                reason: Some("a reason long enough to need several writes".into()),
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
