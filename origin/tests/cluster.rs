//! Several `origin serve` processes on one PostgreSQL (a throwaway server and a
//! streaming replica, `origin::store::postgres::test_server`; skipped with the reason
//! printed when PostgreSQL is not installed, a failure when `CI` is set): exactly one
//! leads, all serve the same model version and answers after a retrain on the leader,
//! reads use the replica, and when the leader is SIGKILLed another takes over within
//! the documented bound and retrains on its schedule. The origins train the default
//! model (`hybrid`): the agreement test checks that it trains the same from the same
//! data.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use origin::store::{Batch, InteractionRow, ItemRow, Location};
use serde_json::Value;

mod common;
use common::free_port;

const TOKEN: &str = "cluster-test-token";
/// `--leader-retry-ms` of these tests.
const RETRY_MS: u64 = 300;

/// The tests of this file run one at a time: each starts a replica and two origins on
/// ports picked free a moment before they are bound, and two tests picking at once
/// could be handed the same port (and their timing bounds want the CPU).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Origin {
    child: Child,
    base: String,
}

impl Origin {
    fn start(db: &str, replica: &str, log: &Path, retrain_every_s: u64) -> Origin {
        let (port, metrics_port) = (free_port(), free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["serve", "--db", db, "--db-replica", replica])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--retrain-every-s", &retrain_every_s.to_string()])
            .args(["--leader-retry-ms", &RETRY_MS.to_string()])
            .args(["--rate-limit-rps", "0"])
            .env("ADMIN_TOKEN", TOKEN)
            .env_remove("ORIGIN_EDGE_URL")
            .env_remove("ORIGIN_PUBLISH_DIR")
            .env_remove("ORIGIN_DB_REPLICAS")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start origin");
        Origin {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn health(&self) -> Option<Value> {
        let r = reqwest::get(format!("{}/health", self.base)).await.ok()?;
        r.json().await.ok()
    }

    /// Waits until `/health` answers with a trained model.
    async fn wait_trained(&mut self) -> Value {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(h) = self.health().await {
                if h["status"] == "ok" {
                    return h;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("origin exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("origin did not train its first model");
    }

    async fn leads(&self) -> bool {
        self.health()
            .await
            .is_some_and(|h| h["leader"] == Value::Bool(true))
    }

    async fn model_version(&self) -> String {
        self.health().await.unwrap()["model_version"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn recommendations(&self, user: &str) -> Vec<(String, f64)> {
        let doc: Value = reqwest::get(format!("{}/v1/recommendations/{user}?n=10", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        doc["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{doc}"))
            .iter()
            .map(|i| {
                (
                    i["item_id"].as_str().unwrap().to_owned(),
                    i["score"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    fn sigkill(&mut self) {
        // SAFETY: sending a signal to our own child process by its pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill failed");
        let _ = self.child.wait();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small shop in the database: 40 users, 12 items.
async fn seed(url: &str) {
    let store = origin::store::open(&Location::parse(url).unwrap(), "default", 10)
        .await
        .unwrap();
    let items = (0..12)
        .map(|i| ItemRow {
            item_id: format!("i{i}"),
            title: format!("Item {i}"),
            ..Default::default()
        })
        .collect();
    let interactions = (0..400)
        .map(|k| InteractionRow {
            user_id: format!("u{}", k % 40),
            item_id: format!("i{}", (k * 7 + k / 40) % 12),
            weight: 1.0 + (k % 3) as f32,
            ts: 1_764_000_000 + k,
        })
        .collect();
    store
        .import(Batch {
            items,
            users: Vec::new(),
            interactions,
        })
        .await
        .unwrap();
}

/// Waits until exactly one of `origins` leads (and still does a few retries later);
/// returns its index.
async fn the_leader(origins: &[&Origin]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut leading = Vec::new();
        for (k, o) in origins.iter().enumerate() {
            if o.leads().await {
                leading.push(k);
            }
        }
        assert!(leading.len() <= 1, "two leaders: {leading:?}");
        if let [k] = leading[..] {
            tokio::time::sleep(Duration::from_millis(RETRY_MS * 3)).await;
            let mut again = Vec::new();
            for o in origins {
                again.push(o.leads().await);
            }
            assert_eq!(
                again.iter().filter(|l| **l).count(),
                1,
                "exactly one leads: {again:?}"
            );
            if again[k] {
                return k;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events(base: &str, events: &[(&str, &str)]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body: Vec<Value> = events
        .iter()
        .map(|(u, i)| serde_json::json!({"user_id": u, "item_id": i, "type": "purchase", "timestamp": now}))
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .json(&serde_json::json!({ "events": body }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_origins_agree_on_the_model_after_a_retrain_on_the_leader_and_read_a_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    seed(&url).await;
    let replica = server.start_replica().unwrap();
    let replica_url = replica.url(url.rsplit('/').next().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("origins.log");
    let mut a = Origin::start(&url, &replica_url, &log, 0);
    a.wait_trained().await;
    let mut b = Origin::start(&url, &replica_url, &log, 0);
    let hb = b.wait_trained().await;
    let origins = [&a, &b];
    let leader = the_leader(&origins).await;
    let (leader, follower) = (origins[leader], origins[1 - leader]);
    // The replica is listed, healthy, with its lag; never a URL.
    assert_eq!(
        hb["replicas"][0]["name"],
        format!("127.0.0.1:{}", replica.port())
    );
    assert!(!hb.to_string().contains("postgres://"), "{hb}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = follower.health().await.unwrap();
        let r = &h["replicas"][0];
        if r["healthy"] == Value::Bool(true) && r["lag_ms"].is_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "replica never healthy: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A starting origin serves the model already recorded.
    assert_eq!(leader.model_version().await, follower.model_version().await);

    // New data through the follower, a retrain on the leader.
    events(
        &follower.base,
        &[
            ("u1", "i3"),
            ("u2", "i3"),
            ("u3", "i3"),
            ("u1", "i5"),
            ("newcomer", "i3"),
        ],
    )
    .await;
    let report: Value = reqwest::Client::new()
        .post(format!("{}/v1/admin/retrain", leader.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = report["new_model_version"].as_str().unwrap().to_owned();
    assert_eq!(leader.model_version().await, version);
    let started = Instant::now();
    while follower.model_version().await != version {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the follower never served {version}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the follower served {version} after {:?}",
        started.elapsed()
    );
    for user in ["u1", "u2", "u17", "newcomer"] {
        assert_eq!(
            leader.recommendations(user).await,
            follower.recommendations(user).await,
            "the same answer for {user}"
        );
    }
    let reads = |h: Value| h["replicas"][0]["reads"].as_u64().unwrap();
    assert!(
        reads(follower.health().await.unwrap()) >= 1,
        "the follower trained from the replica"
    );
    drop(a);
    drop(b);
    drop(replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_is_killed_another_leads_within_the_bound_and_retrains() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    seed(&url).await;
    let replica = server.start_replica().unwrap();
    let replica_url = replica.url(url.rsplit('/').next().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("origins.log");
    let every_s = 2;
    let mut a = Origin::start(&url, &replica_url, &log, every_s);
    let mut b = Origin::start(&url, &replica_url, &log, every_s);
    a.wait_trained().await;
    b.wait_trained().await;
    let k = the_leader(&[&a, &b]).await;
    let (leader, follower) = if k == 0 { (&mut a, &b) } else { (&mut b, &a) };
    leader.sigkill();
    let killed = Instant::now();
    let version_at_kill = follower.model_version().await;
    while !follower.leads().await {
        assert!(
            killed.elapsed() < Duration::from_millis(RETRY_MS * 2 + 2_000),
            "no takeover within the bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed();
    println!("took over after {took:?} (--leader-retry-ms {RETRY_MS})");
    // Its schedule now runs: it retrains on its own (nobody else is left to).
    let deadline = Instant::now() + Duration::from_secs(every_s * 3 + 10);
    let mut seen = version_at_kill.clone();
    let mut new_versions = 0;
    while new_versions < 2 {
        let v = follower.model_version().await;
        if v != seen {
            new_versions += 1;
            seen = v;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader did not retrain on its schedule:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(replica);
}
