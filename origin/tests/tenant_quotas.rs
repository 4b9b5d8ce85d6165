//! A tenant's quotas enforced by a real `origin serve` (issue #13): the tenant is
//! registered with `origin tenants create`, the origin started on its store, and the
//! limits hold under a bounded concurrent load: past `requests_per_second` the answer is
//! `429 quota_exceeded` naming the quota with `Retry-After`; a batch of events past
//! `events_per_day` is refused whole (nothing of it stored); `/health` shows the usage.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::free_port;

const TOKEN: &str = "quota-test-token";

fn run(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run origin");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Origin(Child);

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_of(r: &reqwest::blocking::Response) -> u16 {
    r.status().as_u16()
}

#[test]
fn a_registered_tenants_quotas_hold_under_concurrent_load_and_refuse_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("origin.sqlite");
    let db = db.to_str().unwrap();
    run(&["demo-data", "--db", db, "--users", "50", "--items", "30"]);
    run(&[
        "tenants",
        "create",
        "default",
        "--db",
        db,
        "--requests-per-second",
        "20",
        "--events-per-day",
        "50",
    ]);
    let (port, metrics) = (free_port(), free_port());
    let log = std::fs::File::create(dir.path().join("origin.log")).unwrap();
    let _origin = Origin(
        Command::new(env!("CARGO_BIN_EXE_origin"))
            .args([
                "serve",
                "--db",
                db,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            // The per-client limit off: what limits here is the tenant's quota.
            .args(["--rate-limit-rps", "0", "--retrain-every-s", "0"])
            .env("ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        if let Ok(h) = client.get(format!("{base}/health")).send() {
            let h: Value = h.json().unwrap();
            if h["status"] == "ok" {
                break h;
            }
        }
        assert!(Instant::now() < deadline, "the origin did not train");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        health["quota"]["quotas"]["requests_per_second"], 20,
        "{health}"
    );
    assert_eq!(health["quota"]["usage"]["events_today"], 0, "{health}");

    // 8 clients, 25 requests each, as fast as they can: at most the bucket (20) plus
    // 20 per second of the run are answered; the rest are 429 with Retry-After.
    let started = Instant::now();
    let answers: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (client, base) = (client.clone(), base.clone());
                s.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let r = client
                                .get(format!(
                                    "{base}/v1/recommendations/u{}?n=5",
                                    (t * 25 + i) % 50
                                ))
                                .send()
                                .unwrap();
                            let status = status_of(&r);
                            let retry = r
                                .headers()
                                .get("retry-after")
                                .map(|v| v.to_str().unwrap().to_owned());
                            (status, retry, r.json().unwrap_or(Value::Null))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    eprintln!("{ok} answered, {} limited in {elapsed:.2} s", limited.len());
    assert_eq!(ok + limited.len(), 200, "only 200 and 429 answers");
    assert!(
        ok as f64 <= 20.0 + 20.0 * elapsed + 1.0,
        "{ok} answers in {elapsed:.2} s pass 20/s with a burst of 20"
    );
    assert!(ok >= 20, "the bucket's burst is answered: {ok}");
    for (_, retry, body) in &limited {
        assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("requests_per_second (20)"), "{message}");
        let retry: u64 = retry.as_deref().expect("Retry-After").parse().unwrap();
        assert!(retry >= 1, "{retry}");
    }
    // /health is not metered.
    assert_eq!(
        status_of(&client.get(format!("{base}/health")).send().unwrap()),
        200
    );

    // Events: 40 of today's 50 are taken; a batch of 20 is refused whole.
    std::thread::sleep(Duration::from_millis(1100));
    let batch = |n: usize, tag: &str| {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"user_id": format!("{tag}-{i}"), "item_id": "i1", "type": "view"}))
            .collect();
        client
            .post(format!("{base}/v1/events"))
            .json(&json!({ "events": events }))
            .send()
            .unwrap()
    };
    let first = batch(40, "a");
    assert_eq!(status_of(&first), 202);
    let last_seq = first.json::<Value>().unwrap()["last_seq"].as_i64().unwrap();
    let refused = batch(20, "b");
    assert_eq!(status_of(&refused), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "until midnight UTC: {retry}");
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events_per_day (50)"),
        "{body}"
    );
    // Nothing of the refused batch was stored: the next event follows the first batch.
    let after = batch(10, "c");
    assert_eq!(status_of(&after), 202);
    let after: Value = after.json().unwrap();
    assert_eq!(
        after["first_seq"].as_i64().unwrap(),
        last_seq + 1,
        "{after}"
    );
    assert_eq!(status_of(&batch(1, "d")), 429, "the day's 50 are used");
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["quota"]["usage"]["events_today"], 50, "{health}");
}
