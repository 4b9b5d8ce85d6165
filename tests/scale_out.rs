//! The whole system on PostgreSQL (issue #12 section 6), every part a real process:
//! `wrangler dev` running the worker, two `origin serve` of equal rank on one
//! PostgreSQL 15 primary reading from a streaming replica (`pg_basebackup -R`, both
//! throwaway servers of `origin::store::postgres::test_server`), and the static CDN.
//!
//! One scenario, in order: exactly one origin leads and its scheduled full publish
//! reaches KV and the CDN; an event at the edge changes the user's answer within
//! seconds and later full publishes do not undo it; the leader is SIGKILLed and the
//! other origin leads and publishes within the bound; one origin is stopped under load
//! and no request fails.
//!
//! Without PostgreSQL installed the test is skipped with the reason printed, except in
//! CI (`CI` set), where that is a failure.

use std::time::{Duration, Instant};

use e2e::{header, now_s, served, Stack, StackOptions};
use origin::store::postgres::test_server::{self, PgServer};
use origin::store::{Batch, InteractionRow, ItemRow, Location, UserRow};
use serde_json::{json, Value};

const GROUP: [&str; 2] = ["europe-a", "europe-b"];
/// An address the GeoIP database places in Europe.
const EU_IP: &str = "81.2.69.160";
/// `--leader-retry-ms` of the origins.
const RETRY_MS: u64 = 300;
/// `--publish-every-s` of the origins.
const PUBLISH_EVERY_S: u64 = 2;
const USERS: usize = 40;

/// A small shop: 40 users in Germany, 12 items.
fn seed(url: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
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
        let users = (0..USERS)
            .map(|u| UserRow {
                user_id: format!("u{u}"),
                country: Some("DE".into()),
                segment: None,
            })
            .collect();
        let interactions = (0..400)
            .map(|k| InteractionRow {
                user_id: format!("u{}", k % USERS),
                item_id: format!("i{}", (k * 7 + k / 40) % 12),
                weight: 1.0 + (k % 3) as f32,
                ts: 1_764_000_000 + k as i64,
            })
            .collect();
        store
            .import(Batch {
                items,
                users,
                interactions,
            })
            .await
            .unwrap();
    });
}

fn origin_health(stack: &Stack, i: usize) -> Option<Value> {
    stack
        .client
        .get(format!("http://127.0.0.1:{}/health", stack.origin_port(i)))
        .send()
        .ok()?
        .json()
        .ok()
}

/// The leader among the running origins once exactly one leads.
fn the_leader(stack: &Stack, running: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leading: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&i| origin_health(stack, i).is_some_and(|h| h["leader"] == true))
            .collect();
        assert!(leading.len() <= 1, "two leaders: {leading:?}");
        if let [i] = leading[..] {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader among {running:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a scheduled full publish of origin `i` finished at or after `after`
/// (unix seconds); returns it.
fn next_full_publish(stack: &Stack, i: usize, after: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(p) = origin_health(stack, i).map(|h| h["last_full_publish"].clone()) {
            if p["finished_at"].as_u64().is_some_and(|t| t >= after) {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "origin {} made no full publish after {after} within {within:?}",
            GROUP[i]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn items_of(doc: &Value) -> Vec<String> {
    doc["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"))
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The user's answer read from KV (the edge cache purged first).
fn from_kv(stack: &Stack, user: &str) -> Value {
    stack.purge(user);
    let r = stack.get_as(&format!("/v1/recommendations/{user}"), EU_IP);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "kv", "{user} not from KV");
    served(r)
}

#[test]
fn the_system_on_postgresql_with_two_origins_survives_losing_the_leader_and_an_origin() {
    if test_server::require().is_none() {
        return;
    }
    let primary = PgServer::start().expect("start PostgreSQL");
    let replica = primary.start_replica().expect("start a streaming replica");
    let db = primary.url("postgres");
    seed(&db);
    let mut stack = Stack::start(StackOptions {
        origins: GROUP.to_vec(),
        origin_regions: vec![("europe-a", "europe"), ("europe-b", "europe")],
        vars: vec![
            ("BREAKER_FAILURES", "3".to_string()),
            ("BREAKER_OPEN_S", "2".to_string()),
        ],
        extra_config: "REGION_ORIGINS = '{\"europe\": [[\"europe-a\", \"europe-b\"]]}'\n".into(),
        db_url: Some(db.clone()),
        origin_args: [
            "--db-replica",
            &replica.url("postgres"),
            "--leader-retry-ms",
            &RETRY_MS.to_string(),
            "--publish-every-s",
            &PUBLISH_EVERY_S.to_string(),
            "--retrain-every-s",
            "0",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });

    // Exactly one leads; both read through the replica and serve one model.
    let leader = the_leader(&stack, &[0, 1]);
    let follower = 1 - leader;
    let (hl, hf) = (
        origin_health(&stack, leader).unwrap(),
        origin_health(&stack, follower).unwrap(),
    );
    assert_eq!(hl["model_version"], hf["model_version"], "{hl}\n{hf}");
    for h in [&hl, &hf] {
        assert_eq!(h["replicas"][0]["healthy"], true, "{h}");
    }

    // The leader's scheduled full publish reaches the CDN and KV: every user is there.
    let first = next_full_publish(&stack, leader, 0, Duration::from_secs(30));
    assert_eq!(first["users"], USERS, "{first}");
    assert_eq!(stack.cdn_users().len(), USERS);
    assert!(
        origin_health(&stack, follower).unwrap()["last_full_publish"].is_null(),
        "the follower published"
    );
    let before = from_kv(&stack, "u5");
    let bought = items_of(&before)[0].clone();

    // An event at the edge changes the user's answer within seconds.
    let sent = Instant::now();
    let r = stack
        .client
        .post(stack.edge_url("/v1/events"))
        .header("CF-Connecting-IP", EU_IP)
        .json(&json!({ "user_id": "u5", "item_id": bought, "type": "purchase" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    loop {
        let now = served(stack.get_as("/v1/recommendations/u5", EU_IP));
        if !items_of(&now).contains(&bought) {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "u5's answer still holds {bought} 15 s after the purchase: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("event to changed answer at the edge: {:?}", sent.elapsed());

    // Later full publishes come from a model trained before the purchase; the leader
    // republishes u5 after each, so KV keeps the answer without the bought item.
    let after = now_s() + 1;
    let later = next_full_publish(&stack, leader, after, Duration::from_secs(20));
    assert!(later["republished"].as_u64().unwrap() >= 1, "{later}");
    let settled = Instant::now();
    loop {
        let doc = from_kv(&stack, "u5");
        if !items_of(&doc).contains(&bought) {
            break;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(5),
            "after the full publish {later}, KV holds {bought} for u5 again: {doc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGKILL the leader: the other origin leads and publishes within the bound
    // (`--leader-retry-ms` + one publish period + the publish).
    let killed_at = now_s();
    let killed = Instant::now();
    stack.origins[leader]
        .proc
        .as_mut()
        .unwrap()
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(5))
        .expect("the leader exits on SIGKILL");
    stack.origins[leader].proc = None;
    assert_eq!(the_leader(&stack, &[follower]), follower);
    let took_over = next_full_publish(&stack, follower, killed_at, Duration::from_secs(15));
    let bound = Duration::from_millis(RETRY_MS) + Duration::from_secs(PUBLISH_EVERY_S + 5);
    assert!(
        killed.elapsed() < bound,
        "the new leader published {:?} after the kill (bound {bound:?})",
        killed.elapsed()
    );
    eprintln!(
        "leader killed; the other published {} after {:?}",
        took_over["generation"],
        killed.elapsed()
    );
    assert_eq!(stack.cdn_users().len(), USERS);

    // The killed origin comes back as a follower; then one origin stops under load
    // (3 clients, misses for new users and hits for known ones): no request fails.
    stack.start_origin(leader);
    assert_eq!(the_leader(&stack, &[0, 1]), follower);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|t| {
            let (stop, url) = (stop.clone(), stack.edge_url("/v1/recommendations/"));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .unwrap();
                let mut answers = Vec::new();
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let user = match i % 2 {
                        0 => format!("load-{t}-{i}"),
                        _ => format!("u{}", i % USERS),
                    };
                    let r = client
                        .get(format!("{url}{user}"))
                        .header("CF-Connecting-IP", EU_IP)
                        .send()
                        .map(|r| r.status().as_u16());
                    answers.push((user, r.map_err(|e| e.to_string())));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    stack.stop_origin(follower);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<_> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let failed: Vec<_> = answers.iter().filter(|(_, a)| *a != Ok(200)).collect();
    assert!(failed.is_empty(), "failed under load: {failed:?}");
    assert!(answers.len() >= 10, "{} answers", answers.len());
    eprintln!(
        "one origin stopped under load: {} answers, all 200",
        answers.len()
    );

    // The remaining origin leads again and keeps publishing.
    assert_eq!(the_leader(&stack, &[leader]), leader);
    next_full_publish(&stack, leader, now_s(), Duration::from_secs(15));
    assert!(stack.panics().is_empty(), "{:?}", stack.panics());
}
