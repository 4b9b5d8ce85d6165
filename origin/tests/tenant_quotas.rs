//! A tenant's quotas and keys enforced by a real `origin serve` (issue #13): the
//! tenant is registered with `origin tenants create`, the origin started on its store.
//! The limits hold under a bounded concurrent load: past `requests_per_second` the
//! answer is `429 quota_exceeded` naming the quota with `Retry-After`; a batch of events
//! past `events_per_day` is refused whole (nothing of it stored); `/health` shows the
//! usage. Events need one of the tenant's keys: none, a malformed one, another
//! tenant's, or a rotated-out one are refused with JSON 401/403 and store nothing;
//! analytics need its server key (a client key is 403).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::free_port;

const TOKEN: &str = "quota-test-token";

fn run(args: &[&str]) -> String {
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
    String::from_utf8(out.stdout).unwrap()
}

/// Registers `tenant` in `db` (with extra `origin tenants create` arguments); gives its
/// client and server keys.
fn register(db: &str, tenant: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["tenants", "create", tenant, "--db", db, "--json"];
    args.extend_from_slice(extra);
    let created: Value = serde_json::from_str(&run(&args)).unwrap();
    (
        created["client_key"].as_str().unwrap().to_owned(),
        created["server_key"].as_str().unwrap().to_owned(),
    )
}

/// Starts `origin serve` on `db` (per-client limits off) and waits for its model;
/// gives the process and its base URL.
fn serve(db: &str, dir: &std::path::Path) -> (Origin, String) {
    let (origin, base, _) = serve_with_metrics(db, dir);
    (origin, base)
}

/// [`serve`], also giving the URL of its Prometheus metrics.
fn serve_with_metrics(db: &str, dir: &std::path::Path) -> (Origin, String, String) {
    let (port, metrics) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join(format!("origin-{port}.log"))).unwrap();
    let origin = Origin(
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
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(h) = reqwest::blocking::get(format!("{base}/health")) {
            if h.json::<Value>().is_ok_and(|h| h["status"] == "ok") {
                return (origin, base, format!("http://127.0.0.1:{metrics}/metrics"));
            }
        }
        assert!(Instant::now() < deadline, "the origin did not train");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let (client_key, _) = register(
        db,
        "default",
        &["--requests-per-second", "20", "--events-per-day", "50"],
    );
    let (_origin, base, metrics) = serve_with_metrics(db, dir.path());
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
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
    // Per-tenant metrics, the tenant labelled by name.
    let text = client.get(&metrics).send().unwrap().text().unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("origin_tenant_requests_total{tenant=\"default\"}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("origin_quota_exceeded_total")
                && l.contains("quota=\"requests_per_second\"")
                && l.contains("tenant=\"default\"")),
        "{text}"
    );
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
            .header("X-Tenant-Key", &client_key)
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

#[test]
fn events_need_a_valid_key_of_the_served_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("origin.sqlite");
    let db = db.to_str().unwrap();
    run(&["demo-data", "--db", db, "--users", "30", "--items", "20"]);
    let (client_key, server_key) = register(db, "default", &[]);
    let (other_client, _) = register(db, "other", &[]);
    let (_origin, base) = serve(db, dir.path());
    let client = reqwest::blocking::Client::new();
    let post = |key: Option<&str>, bearer: Option<&str>, edge: bool| {
        let mut req = client
            .post(format!("{base}/v1/events?tenant=default"))
            .json(&json!({"user_id": "k1", "item_id": "i1", "type": "view"}));
        if let Some(k) = key {
            req = req.header("X-Tenant-Key", k);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if edge {
            req = req.header("X-Edge-Client", "0123456789abcdef");
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let body = r.json::<Value>().unwrap_or(Value::Null);
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let last_seq = || -> i64 {
        let h: Value = client
            .get(format!("{base}/v1/analytics/real-time"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        h["last_event_seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("{h}"))
    };
    let refused = |status: u16, code: &str| (status, code.to_owned());
    let before = last_seq();
    assert_eq!(post(None, None, false), refused(401, "key_required"));
    // The edge forwarding a browser without a key: still required.
    assert_eq!(post(None, Some(TOKEN), true), refused(401, "key_required"));
    assert_eq!(
        post(Some("pk_nope"), None, false),
        refused(401, "invalid_key")
    );
    let unknown = format!("pk_{}", "ab".repeat(32));
    assert_eq!(
        post(Some(&unknown), None, false),
        refused(401, "invalid_key")
    );
    assert_eq!(
        post(Some(&other_client), None, false),
        refused(403, "wrong_tenant")
    );
    assert_eq!(last_seq(), before, "nothing refused was stored");

    assert_eq!(post(Some(&client_key), None, false).0, 202);
    assert_eq!(post(Some(&server_key), None, false).0, 202);
    assert_eq!(
        post(Some(&client_key), Some(TOKEN), true).0,
        202,
        "through the edge"
    );
    assert_eq!(
        post(None, Some(TOKEN), false).0,
        202,
        "the operator's backend"
    );
    assert_eq!(last_seq(), before + 4);

    // A key rotated out with no overlap stops working at once; the new one works.
    let rotated: Value = serde_json::from_str(&run(&[
        "tenants",
        "rotate-key",
        "default",
        "client",
        "--overlap-s",
        "0",
        "--db",
        db,
        "--json",
    ]))
    .unwrap();
    let new_key = rotated["key"].as_str().unwrap();

    // Analytics need the tenant's server key (or the admin token); a client key cannot.
    let analytics = |key: Option<&str>, bearer: bool| {
        let mut req = client.get(format!(
            "{base}/v1/analytics/recommendations?range=1h&tenant=default"
        ));
        if let Some(k) = key {
            req = req.header("X-Tenant-Key", k);
        }
        if bearer {
            req = req.bearer_auth(TOKEN);
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let body = r.json::<Value>().unwrap_or(Value::Null);
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(analytics(None, false), refused(401, "key_required"));
    assert_eq!(
        analytics(Some(new_key), false),
        refused(403, "server_key_required")
    );
    assert_eq!(
        analytics(Some(&other_client), false),
        refused(403, "wrong_tenant")
    );
    assert_eq!(analytics(Some(&server_key), false).0, 200);
    assert_eq!(analytics(None, true).0, 200, "the admin token");
    assert_eq!(
        post(Some(&client_key), None, false),
        refused(401, "invalid_key")
    );
    assert_eq!(post(Some(new_key), None, false).0, 202);
}

#[test]
fn a_batch_that_would_store_more_users_than_the_quota_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("origin.sqlite");
    let db = db.to_str().unwrap();
    run(&["demo-data", "--db", db, "--users", "30", "--items", "20"]);
    let (key, _) = register(db, "default", &["--max-users", "33", "--max-items", "20"]);
    let (_origin, base) = serve(db, dir.path());
    let client = reqwest::blocking::Client::new();
    let health = || -> Value {
        client
            .get(format!("{base}/health"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while health()["quota"]["users"] != 30 {
        assert!(Instant::now() < deadline, "{}", health());
        std::thread::sleep(Duration::from_millis(100));
    }
    let post = |pairs: &[(&str, &str)]| {
        let events: Vec<Value> = pairs
            .iter()
            .map(|(u, i)| json!({"user_id": u, "item_id": i, "type": "view"}))
            .collect();
        let r = client
            .post(format!("{base}/v1/events"))
            .header("X-Tenant-Key", &key)
            .json(&json!({ "events": events }))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    // Demo users are u0.., items i0..: known ids always pass, even at the limit.
    assert_eq!(post(&[("u1", "i1"), ("u2", "i2")]).0, 202);
    assert_eq!(post(&[("n1", "i1"), ("n2", "i1"), ("n3", "i3")]).0, 202);
    let (status, body) = post(&[("u1", "i1"), ("n4", "i1")]);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "quota_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_users (33)"), "{message}");
    let (status, body) = post(&[("u1", "brand-new-item")]);
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_items (20)"));
    assert_eq!(post(&[("n1", "i4"), ("u3", "i5")]).0, 202);
}
