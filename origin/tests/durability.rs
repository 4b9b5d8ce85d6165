//! Durability of the event log, end to end against the real `origin serve` binary:
//! a burst of events from several tasks, SIGKILL midway, restart on the same
//! database; every acknowledged event must be in the log, and the projections rebuilt
//! from the log (`origin replay`) must equal the live ones. Also measures ingest
//! throughput with durability on (printed; run with `--nocapture` to see it).
//!
//! Runs on both backends: a SQLite file, and a database of a throwaway PostgreSQL
//! server (`origin::store::postgres::test_server`; skipped with the reason printed
//! when PostgreSQL is not installed, a failure when `CI` is set). The log is read back
//! through the `Store` interface, so both are checked the same way.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use origin::events::EventType;
use origin::store::{Location, SharedStore};

mod common;
use common::free_port;

const TASKS: usize = 4;
const BATCH: usize = 50;
const BURST: usize = 10_000;

struct Origin {
    child: Child,
    base: String,
    metrics: String,
}

impl Origin {
    fn start(db: &str, log: &Path) -> Origin {
        let (port, metrics_port) = (free_port(), free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(["serve", "--db"])
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--retrain-every-s", "0"])
            // A burst of 10,000 events from one address: this test is about
            // durability, not the per-client limit (tests/hardening_origin.rs).
            .args(["--rate-limit-rps", "0"])
            .env_remove("ADMIN_TOKEN")
            .env_remove("ORIGIN_EDGE_URL")
            .env_remove("ORIGIN_PUBLISH_DIR")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start origin");
        Origin {
            child,
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        }
    }

    async fn wait_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = reqwest::get(format!("{}/health", self.base)).await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("origin exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("origin did not become ready");
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

/// The identity of a sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    user: String,
    item: String,
    kind: EventType,
    value: Option<f64>,
    ts: i64,
}

/// An acknowledged batch: its seq range and what was in it.
type Ack = (i64, i64, Vec<Sent>);

fn batch(phase: usize, task: usize, k: usize, now: i64) -> Vec<Sent> {
    (0..BATCH)
        .map(|j| {
            let n = k * BATCH + j;
            let kind = EventType::ALL[n % EventType::ALL.len()];
            Sent {
                user: format!("p{phase}t{task}u{}", n % 37),
                item: format!("i{}", (n * 7 + task) % 211),
                kind,
                value: match kind {
                    EventType::Rating => Some((n % 6) as f64),
                    EventType::RecommendationViewed => Some(0.5),
                    _ => None,
                },
                ts: now - (n % 600) as i64,
            }
        })
        .collect()
}

fn body(events: &[Sent]) -> String {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "user_id": e.user, "item_id": e.item, "type": e.kind.as_str(),
                "timestamp": e.ts, "source": "durability-test",
            });
            if let Some(x) = e.value {
                v["value"] = x.into();
            }
            v
        })
        .collect();
    serde_json::json!({ "events": events }).to_string()
}

/// Sends `BURST` events in batches from `TASKS` tasks; stops a task at its first
/// failed request. Returns the acknowledged batches and the elapsed time.
async fn burst(base: &str, phase: usize, acked: Arc<AtomicUsize>) -> (Vec<Ack>, Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (base, acks, acked) = (base.to_owned(), acks.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for k in 0..BURST / BATCH / TASKS {
                let events = batch(phase, task, k, now);
                let resp = client
                    .post(format!("{base}/v1/events"))
                    .header("content-type", "application/json")
                    .body(body(&events))
                    .send()
                    .await;
                let Ok(resp) = resp else { return };
                if resp.status() != 202 {
                    let status = resp.status();
                    panic!("unexpected {status}: {:?}", resp.text().await);
                }
                let Ok(json) = resp.json::<serde_json::Value>().await else {
                    return;
                };
                let (first, last) = (
                    json["first_seq"].as_i64().unwrap(),
                    json["last_seq"].as_i64().unwrap(),
                );
                assert_eq!(json["accepted"], BATCH);
                assert_eq!(last - first + 1, BATCH as i64);
                acks.lock().unwrap().push((first, last, events));
                acked.fetch_add(BATCH, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let acks = std::mem::take(&mut *acks.lock().unwrap());
    (acks, elapsed)
}

/// The store `--db` names, opened as the origin opens it.
async fn open(db: &str) -> SharedStore {
    let location = Location::parse(db).unwrap();
    origin::store::open(&location, contract::DEFAULT_TENANT, 1)
        .await
        .unwrap()
}

async fn check_acknowledged(db: &str, acks: &[Ack]) {
    let store = open(db).await;
    for (first, last, sent) in acks {
        let logged = store.read_events(*first, *last).await.unwrap();
        assert_eq!(logged.len(), sent.len(), "seqs {first}..={last} missing");
        for ((seq, got), want) in logged.iter().zip(sent) {
            let got = Sent {
                user: got.user_id.as_str().to_owned(),
                item: got.item_id.as_str().to_owned(),
                kind: got.kind,
                value: got.value,
                ts: got.timestamp,
            };
            assert_eq!(&got, want, "seq {seq}");
        }
    }
}

fn replay(db: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["replay", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill_and_projections_rebuild_equal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("origin.sqlite").display().to_string();
    survive_sigkill(
        &db,
        &dir.path().join("origin.log"),
        "SQLite synchronous=FULL",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill_and_projections_rebuild_equal_on_postgres() {
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let db = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    survive_sigkill(
        &db,
        &dir.path().join("origin.log"),
        "PostgreSQL synchronous_commit=on",
    )
    .await;
}

async fn survive_sigkill(db: &str, log: &Path, durability: &str) {
    let db = db.to_owned();
    let log = log.to_owned();

    // Phase 1: a burst, killed midway.
    let mut origin = Origin::start(&db, &log);
    origin.wait_ready().await;
    let acked = Arc::new(AtomicUsize::new(0));
    let killer = {
        let acked = acked.clone();
        async move {
            while acked.load(Ordering::SeqCst) < BURST / 2 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let base = origin.base.clone();
    let sender = tokio::spawn({
        let acked = acked.clone();
        async move { burst(&base, 1, acked).await }
    });
    killer.await;
    origin.sigkill();
    let (acks1, _) = sender.await.unwrap();
    let acked1: usize = acks1.iter().map(|a| a.2.len()).sum();
    assert!(
        (BURST / 2..BURST).contains(&acked1),
        "killed midway: {acked1}"
    );

    // Restart on the same database: everything acknowledged is there.
    let mut origin = Origin::start(&db, &log);
    origin.wait_ready().await;
    check_acknowledged(&db, &acks1).await;

    // Phase 2: a full burst against the restarted origin, timed.
    let (acks2, elapsed) = burst(&origin.base, 2, Arc::new(AtomicUsize::new(0))).await;
    let acked2: usize = acks2.iter().map(|a| a.2.len()).sum();
    assert_eq!(acked2, BURST);
    let rate = acked2 as f64 / elapsed.as_secs_f64();
    println!(
        "ingest throughput: {acked2} events in {:.2}s = {rate:.0} events/s \
         ({TASKS} concurrent clients, {BATCH} events per request, {durability}, group commit)",
        elapsed.as_secs_f64()
    );
    check_acknowledged(&db, &acks2).await;
    let metrics = reqwest::get(&origin.metrics)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("origin_events_ingested_total"),
        "{metrics}"
    );
    assert!(metrics.contains("origin_http_request_duration_seconds_bucket"));

    // Kill again; the live projections on disk equal a rebuild from the log alone.
    origin.sigkill();
    let live = open(&db).await.projections().await.unwrap();
    assert!(!live.user_history.is_empty() && !live.cooccurrence.is_empty());
    replay(&db);
    let rebuilt = open(&db).await.projections().await.unwrap();
    assert_eq!(rebuilt.user_history.len(), live.user_history.len());
    assert!(
        rebuilt == live,
        "projections rebuilt from the log differ from the live ones"
    );
}
