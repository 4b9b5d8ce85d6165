//! The object-storage publish target against a real S3-compatible server: `s3s-fs`
//! (crates.io, installed by `scripts/setup.sh`), started in its own process on a free
//! port with a temporary root, and stopped when the test ends (also on failure).
//!
//! Without `s3s-fs` the test fails when `CI` is set; locally it skips and says so.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::{RecommendationDoc, RegionMap, Tenant};
use origin::auth::Secret;
use origin::publish::{
    publish_all, ObjectStorage, ObjectStorageSettings, PublishJob, PublishTarget, PublishTargets,
};
use origin::snapshot::{Freshness, Snapshot};
use origin::store::sqlite::Database;

mod common;
use common::free_port;

const ACCESS_KEY: &str = "recs-test-key";
const SECRET_KEY: &str = "recs-test-secret-0123456789";
const BUCKET: &str = "recs";

/// A running `s3s-fs`, killed on drop.
struct S3Server {
    child: Child,
    endpoint: String,
    root: PathBuf,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home.map(|h| h.join(".cargo/bin")));
    candidates.map(|d| d.join("s3s-fs")).find(|p| p.is_file())
}

fn start_s3(root: &Path) -> Option<S3Server> {
    let Some(bin) = s3s_fs() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "s3s-fs is not installed (scripts/setup.sh installs it); CI must run this test"
        );
        eprintln!("SKIPPED locally: s3s-fs is not installed (run scripts/setup.sh)");
        return None;
    };
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let server = S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        root: root.to_owned(),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "s3s-fs did not listen within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

fn snapshot(dir: &Path) -> Arc<Snapshot> {
    let mut db = Database::open(&dir.join("o.sqlite")).unwrap();
    origin::demo_data::generate_into(
        &mut db,
        &origin::demo_data::DemoSpec {
            users: 300,
            items: 60,
            seed: 3,
            interactions_per_user: 6,
            catalogue: Default::default(),
        },
        |_| {},
    )
    .unwrap();
    Arc::new(Snapshot::build(
        db.training_set().unwrap(),
        Tenant::default_tenant(),
        RegionMap::builtin(),
        Freshness::default(),
        |d| {
            let choice: origin::training::ModelChoice = "itemknn".parse().unwrap();
            origin::training::train_or_popularity(d, &choice)
        },
    ))
}

fn target(server: &S3Server, keep: usize) -> ObjectStorage {
    ObjectStorage::new(ObjectStorageSettings {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.into(),
        region: "auto".into(),
        access_key: ACCESS_KEY.into(),
        secret_key: Secret::new(SECRET_KEY),
        prefix: "cdn".into(),
        keep_generations: keep,
    })
    .unwrap()
}

fn job(target: ObjectStorage) -> PublishJob {
    PublishJob {
        tenant: Tenant::default_tenant(),
        n: 10,
        users: None,
        chunk: 128,
        targets: PublishTargets::default().with(Arc::new(target)),
        progress: None,
        delta: None,
        keep_until: None,
        item_lists: false,
        fatigued: Default::default(),
    }
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                let p = e.path();
                if p.is_dir() {
                    files_under(&p)
                } else {
                    usize::from(!p.to_string_lossy().contains(".s3s"))
                }
            })
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_go_under_a_prefix_with_a_pointer_object_and_old_ones_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = start_s3(&dir.path().join("s3")) else {
        return;
    };
    let snap = snapshot(dir.path());
    let store = target(&server, 2);

    let first = publish_all(snap.clone(), job(store.clone())).await.unwrap();
    assert_eq!(first.users, 300);
    assert_eq!(first.documents("object-storage"), 300 + 4);
    assert_eq!(
        store.current_generation().await.unwrap().unwrap().as_str(),
        first.generation
    );
    let key = format!("cdn/generations/{}/default/users/u1.json", first.generation);
    let doc: RecommendationDoc =
        serde_json::from_slice(&store.get(&key).await.unwrap().expect("u1 stored")).unwrap();
    assert_eq!(doc.user_id, "u1");
    assert_eq!(doc.items.len(), 10);
    let gen_dir = server
        .root
        .join(BUCKET)
        .join("cdn/generations")
        .join(&first.generation);
    assert_eq!(
        files_under(&gen_dir),
        300 + 4 + 1,
        "every document and the marker, as real files of the S3 server"
    );

    let second = publish_all(snap.clone(), job(store.clone())).await.unwrap();
    let third = publish_all(snap.clone(), job(store.clone())).await.unwrap();
    assert_eq!(third.pruned_generations(), 1);
    assert_eq!(
        store.current_generation().await.unwrap().unwrap().as_str(),
        third.generation
    );
    assert!(
        store.get(&key).await.unwrap().is_none(),
        "the oldest generation is gone"
    );
    let kept = format!(
        "cdn/generations/{}/default/users/u1.json",
        second.generation
    );
    assert!(store.get(&kept).await.unwrap().is_some());

    // A document replaced after a miss lands in the current generation.
    let mut changed = doc.clone();
    changed.model_version = "changed#1".into();
    store
        .write_current(&Tenant::default_tenant(), &changed, None)
        .await
        .unwrap();
    let now = format!("cdn/generations/{}/default/users/u1.json", third.generation);
    let read: RecommendationDoc =
        serde_json::from_slice(&store.get(&now).await.unwrap().unwrap()).unwrap();
    assert_eq!(read.model_version, "changed#1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_an_error_and_nothing_is_activated() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = start_s3(&dir.path().join("s3")) else {
        return;
    };
    let snap = snapshot(dir.path());
    let bad = ObjectStorage::new(ObjectStorageSettings {
        endpoint: server.endpoint.clone(),
        bucket: BUCKET.into(),
        region: "auto".into(),
        access_key: ACCESS_KEY.into(),
        secret_key: Secret::new("not-the-secret"),
        prefix: String::new(),
        keep_generations: 0,
    })
    .unwrap();
    let err = publish_all(snap, job(bad)).await.unwrap_err().to_string();
    assert!(err.contains("object storage"), "{err}");
    assert!(!server.root.join(BUCKET).join("current").exists());
}
