//! The origin under hostile traffic, end to end: each test starts real `origin serve`
//! processes on free ports over their own SQLite file (in a temp dir) and talks to them
//! over HTTP (and raw TCP where a client misbehaves), as an anonymous attacker would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{run_origin, wait_for_trained, LoneOrigin, ADMIN_TOKEN};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A demo database with `users` users and `items` items.
fn demo_db(dir: &Path, users: u32, items: u32) -> String {
    let db = e2e::new_database(dir);
    run_origin(
        &[
            "demo-data",
            "--db",
            &db,
            "--users",
            &users.to_string(),
            "--items",
            &items.to_string(),
            "--interactions-per-user",
            "20",
        ],
        &[],
    );
    db
}

fn post(url: &str, body: &Value, token: Option<&str>) -> Response {
    let mut req = client().post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().unwrap()
}

fn json_of(r: Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn now_s() -> i64 {
    e2e::now_s() as i64
}

#[test]
fn a_flood_of_invented_items_leaves_training_bounded_and_the_origin_restartable() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 300, 100);
    let mut origin = LoneOrigin::start_trained(&db, dir.path(), &["--max-items", "150"]);
    // 31,000 events, each for an item nobody else has seen, as anonymous clients send.
    for chunk in 0..62 {
        let events: Vec<Value> = (0..500)
            .map(|k| {
                let n = chunk * 500 + k;
                json!({"user_id": format!("flood-{n}"), "item_id": format!("fake-{n}"), "type": "view"})
            })
            .collect();
        let (status, body) = json_of(post(
            &origin.url("/v1/events"),
            &json!({"events": events}),
            None,
        ));
        assert_eq!(status, 202, "{body}");
    }
    // And 400 items that two users each saw: they earn a place, but the cap holds.
    let pairs: Vec<Value> = (0..400)
        .flat_map(|n| {
            (0..2).map(move |u| json!({"user_id": format!("pair-{u}"), "item_id": format!("paired-{n}"), "type": "view"}))
        })
        .collect();
    for events in pairs.chunks(500) {
        assert_eq!(
            post(&origin.url("/v1/events"), &json!({"events": events}), None).status(),
            202
        );
    }
    // The hourly retrain runs inside the serving process: bounded.
    let (status, report) = json_of(post(
        &origin.url("/v1/admin/retrain"),
        &json!({}),
        Some(ADMIN_TOKEN),
    ));
    assert_eq!(status, 200, "{report}");
    let items = &origin.health()["model_items"];
    assert!(items["admitted"].as_u64().unwrap() <= 150, "{items}");
    assert!(items["unproven"].as_u64().unwrap() >= 31_000, "{items}");
    assert!(items["over_cap"].as_u64().unwrap() > 0, "{items}");

    // A restart listens at once and trains within the bound.
    origin.proc.stop();
    let started = Instant::now();
    let again = LoneOrigin::start(&db, dir.path(), &["--max-items", "150"]);
    e2e::wait_for_http(&again.url("/health"), &again.proc, Duration::from_secs(10));
    let listening = started.elapsed();
    wait_for_trained(again.port, &again.proc, Duration::from_secs(30));
    let trained = started.elapsed();
    assert!(
        listening < Duration::from_secs(5),
        "listening after {listening:?}"
    );
    let items = &again.health()["model_items"];
    assert!(items["admitted"].as_u64().unwrap() <= 150, "{items}");
    eprintln!("restart: listening after {listening:?}, trained after {trained:?}: {items}");
}

#[test]
fn fake_purchases_from_one_client_do_not_enter_the_popular_lists() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 400, 60);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &[]);
    // Three anonymous requests: 1,500 made-up users each buy the same made-up item.
    let ts = now_s();
    for batch in 0..3 {
        let events: Vec<Value> = (0..500)
            .map(|k| json!({"user_id": format!("buyer-{}", batch * 500 + k), "item_id": "fake-bestseller", "type": "purchase", "timestamp": ts}))
            .collect();
        assert_eq!(
            post(&origin.url("/v1/events"), &json!({"events": events}), None).status(),
            202
        );
    }
    // One user buying one item a thousand times counts once, too.
    let events: Vec<Value> = (0..500)
        .map(|_| json!({"user_id": "one-buyer", "item_id": "fake-hammered", "type": "purchase"}))
        .collect();
    assert_eq!(
        post(&origin.url("/v1/events"), &json!({"events": events}), None).status(),
        202
    );
    let (status, report) = json_of(post(
        &origin.url("/v1/admin/retrain"),
        &json!({}),
        Some(ADMIN_TOKEN),
    ));
    assert_eq!(status, 200, "{report}");
    for region in ["us-east", "us-west", "europe", "asia"] {
        let (status, doc) = json_of(
            client()
                .get(origin.url(&format!("/v1/popular?region={region}&n=10")))
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200, "{doc}");
        let items: Vec<&str> = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(items.len(), 10, "{doc}");
        assert!(
            !items.iter().any(|i| i.starts_with("fake-")),
            "a made-up item bought its place in {region}'s list: {items:?}"
        );
    }
}

#[test]
fn a_retried_batch_with_event_ids_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &[]);
    let batch = json!({"events": [
        {"user_id": "u-retry", "item_id": "i1", "type": "click", "event_id": "ev-1"},
        {"user_id": "u-retry", "item_id": "i2", "type": "purchase", "event_id": "ev-2"},
        {"user_id": "u-retry", "item_id": "i3", "type": "view", "event_id": "ev-3"}
    ]});
    let (status, first) = json_of(post(&origin.url("/v1/events"), &batch, None));
    assert_eq!(status, 202, "{first}");
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(3), Some(0))
    );
    let seq = |_: ()| -> i64 {
        let (_, rt) = json_of(
            client()
                .get(origin.url("/v1/analytics/real-time"))
                .send()
                .unwrap(),
        );
        rt["last_event_seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("{rt}"))
    };
    let after_first = seq(());
    // The client's retry (a timeout, a failover to another origin) stores nothing new.
    let (status, again) = json_of(post(&origin.url("/v1/events"), &batch, None));
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["duplicates"], 3, "{again}");
    assert_eq!(
        (&again["first_seq"], &again["last_seq"]),
        (&first["first_seq"], &first["last_seq"])
    );
    assert_eq!(seq(()), after_first);
    // A bad id refuses the batch with a JSON 400.
    let bad = json!({"user_id": "u", "item_id": "i1", "type": "view", "event_id": "../x"});
    let (status, body) = json_of(post(&origin.url("/v1/events"), &bad, None));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_event_id"))
    );
}

#[test]
fn past_its_limit_a_client_gets_429_json_with_retry_after_and_the_edge_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let origin = LoneOrigin::start_trained(
        &db,
        dir.path(),
        &["--rate-limit-rps", "2", "--rate-limit-burst", "5"],
    );
    let c = client();
    let statuses: Vec<Response> = (0..20)
        .map(|_| c.get(origin.url("/v1/popular?n=5")).send().unwrap())
        .collect();
    let limited: Vec<Response> = statuses.into_iter().filter(|r| r.status() == 429).collect();
    assert!(
        limited.len() >= 10,
        "only {} of 20 were limited",
        limited.len()
    );
    for r in limited {
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry), "Retry-After {retry}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    }
    // Events are limited the same way; the edge (admin token) and /health never are.
    let event = json!({"user_id": "u1", "item_id": "i1", "type": "view"});
    assert_eq!(post(&origin.url("/v1/events"), &event, None).status(), 429);
    for _ in 0..20 {
        assert_eq!(c.get(origin.url("/health")).send().unwrap().status(), 200);
        let r = c
            .get(origin.url("/v1/popular?n=5"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[test]
fn a_stalled_client_does_not_hold_shutdown_past_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let mut origin = LoneOrigin::start_trained(
        &db,
        dir.path(),
        &[
            "--shutdown-deadline-ms",
            "1500",
            "--body-timeout-ms",
            "120000",
            "--header-timeout-ms",
            "1000",
        ],
    );
    // Partial headers: the connection is closed after the header timeout.
    let mut slow_headers = TcpStream::connect(("127.0.0.1", origin.port)).unwrap();
    slow_headers
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow_headers
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = slow_headers.read_to_end(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a header-less connection stayed {:?}",
        started.elapsed()
    );
    // A body that never finishes: SIGTERM still ends the process after the deadline.
    let mut stalled = TcpStream::connect(("127.0.0.1", origin.port)).unwrap();
    stalled
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"user_id\":")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let took = origin
        .proc
        .signal_and_wait(libc_sigterm(), Duration::from_secs(8))
        .unwrap_or_else(|| {
            panic!(
                "still running 8 s after SIGTERM; log:\n{}",
                origin.proc.log_tail()
            )
        });
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    drop(stalled);
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn an_absurd_edge_report_is_refused_and_analytics_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &[]);
    let url = origin.url("/v1/analytics/edge-report");
    let (status, body) = json_of(post(
        &url,
        &json!({"requests": u64::MAX, "hits": 0}),
        Some(ADMIN_TOKEN),
    ));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_edge_report")),
        "{body}"
    );
    for _ in 0..3 {
        let (status, body) = json_of(post(
            &url,
            &json!({"requests": 10_000_000u64, "hits": 9_999_999u64}),
            Some(ADMIN_TOKEN),
        ));
        assert_eq!(status, 202, "{body}");
    }
    for path in ["/v1/analytics/timeline?range=1h", "/v1/analytics/real-time"] {
        let (status, body) = json_of(client().get(origin.url(path)).send().unwrap());
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[test]
fn clicks_count_toward_ctr_only_on_items_that_were_served_and_impressions_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &[]);
    let ts = now_s() - 10;
    let shown = json!({"shown": [{"user_id": "u-ctr", "source": "kv", "region": "europe", "timestamp": ts,
        "items": [{"item_id": "i1", "score": 0.5}]}]});
    let (status, _) = json_of(post(&origin.url("/v1/impressions"), &shown, None));
    assert_eq!(status, 401, "anyone could inflate impressions");
    assert_eq!(
        post(&origin.url("/v1/impressions"), &shown, Some(ADMIN_TOKEN)).status(),
        202
    );
    let clicks = json!({"events": [
        {"user_id": "u-ctr", "item_id": "i1", "type": "click", "timestamp": ts + 1},
        {"user_id": "u-ctr", "item_id": "i2", "type": "click", "timestamp": ts + 1},
        {"user_id": "stranger", "item_id": "i1", "type": "click", "timestamp": ts + 1}
    ]});
    assert_eq!(post(&origin.url("/v1/events"), &clicks, None).status(), 202);
    let (_, r) = json_of(
        client()
            .get(origin.url("/v1/analytics/recommendations?range=1h"))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (r["impressions"].as_u64(), r["clicks"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(r["ctr"], 1.0, "{r}");
}

#[test]
fn the_batch_route_refuses_unknown_fields_and_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &[]);
    let url = origin.url("/v1/recommendations/batch");
    for body in [
        r#"{"user_ids":["u1"],"nn":5}"#,
        r#"{"user_ids":["u1"],"n":5,"n":50}"#,
    ] {
        let r = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        let (status, json) = json_of(r);
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}: {json}"
        );
    }
}

/// Mounts a `size`-byte tmpfs at `dir` (needs root, which CI has); `false` when it cannot.
fn mount_tmpfs(dir: &Path, size: u64) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success())
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Runs `sql` on the database at `url` with `psql` (Debian's PostgreSQL client), as an
/// administrator's session that may write.
fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
        // This session writes even when the database defaults to read only.
        .env("PGOPTIONS", "-c default_transaction_read_only=off")
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every other session on the database ends (its pool reconnects with the new settings).
fn end_sessions(url: &str) {
    psql(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
}

/// PostgreSQL's counterpart of the full disk below (run with `E2E_DB=postgres`): the
/// database turns read only (as a server out of disk space or a demoted primary does),
/// events are refused with 503 JSON and `/health` says so, and once it takes writes
/// again the probe sees it and events are taken.
#[test]
fn a_database_that_refuses_writes_is_reported_by_health_refused_cleanly_and_recovered_from() {
    if !e2e::on_postgres() {
        eprintln!("the SQLite run covers this with a full disk (below); E2E_DB=postgres runs it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = demo_db(dir.path(), 50, 20);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &["--rate-limit-rps", "0"]);
    assert_eq!(origin.health()["store"]["writable"], true);
    psql(
        &db,
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$",
    );
    end_sessions(&db);
    let one = json!({"user_id": "during", "item_id": "i1", "type": "view"});
    let deadline = Instant::now() + Duration::from_secs(15);
    let (status, body) = loop {
        let (status, body) = json_of(post(&origin.url("/v1/events"), &one, None));
        if status != 202 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let health = origin.health();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["store"]["writable"], false, "{health}");
    // Reads still answer from the model while writes are refused.
    let r = client()
        .get(origin.url("/v1/recommendations/u1"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    psql(
        &db,
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$",
    );
    end_sessions(&db);
    let deadline = Instant::now() + Duration::from_secs(15);
    while origin.health()["status"] != "ok" {
        assert!(
            Instant::now() < deadline,
            "health did not recover: {}",
            origin.health()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = json!({"user_id": "after", "item_id": "i1", "type": "view"});
    assert_eq!(post(&origin.url("/v1/events"), &after, None).status(), 202);
}

#[test]
fn a_full_disk_is_reported_by_health_refused_cleanly_and_recovered_from() {
    if e2e::on_postgres() {
        eprintln!("the database is not on this disk with E2E_DB=postgres; the read-only database test above is its counterpart");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    if !mount_tmpfs(&disk, 8 << 20) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs for this test"
        );
        eprintln!("skipped locally: cannot mount a tmpfs (needs root)");
        return;
    }
    let _unmount = Unmount(disk.clone());
    let db = demo_db(&disk, 50, 20);
    let origin = LoneOrigin::start_trained(&db, dir.path(), &["--rate-limit-rps", "0"]);
    assert_eq!(origin.health()["store"]["writable"], true);
    // Fill the disk, leaving a little room, then write events until the store refuses.
    let free = {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let filler = disk.join("filler");
    std::fs::write(&filler, vec![0u8; free.saturating_sub(256 << 10) as usize]).unwrap();
    let mut refused = None;
    for k in 0..400 {
        let events: Vec<Value> = (0..200)
            .map(|j| {
                json!({"user_id": format!("w{k}-{j}"), "item_id": "i1", "type": "view",
                            "context": {"pad": "x".repeat(1500)}})
            })
            .collect();
        let (status, body) = json_of(post(
            &origin.url("/v1/events"),
            &json!({"events": events}),
            None,
        ));
        if status != 202 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the store never filled up");
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let health = origin.health();
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["store"]["writable"], false, "{health}");
    // Room again: the probe sees it and events are taken.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while origin.health()["status"] != "ok" {
        assert!(
            Instant::now() < deadline,
            "health did not recover: {}",
            origin.health()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let one = json!({"user_id": "after", "item_id": "i1", "type": "view"});
    assert_eq!(post(&origin.url("/v1/events"), &one, None).status(), 202);
}
