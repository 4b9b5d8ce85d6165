//! End-to-end tests of the origin's publishing under hostile and concurrent traffic, on
//! real parts: `origin serve` processes, the `origin cdn` static server and `wrangler
//! dev` with local KV.
//!
//! KV writes are counted where they arrive: the origins reach the edge through a
//! [`counting_link`] in front of `wrangler dev` that counts every `POST /admin/publish`
//! request passing through it. CDN writes are counted by the origin's
//! `origin_republish_total{target="cdn"}` metric, which both publish paths (after events
//! and on an answered request) increment once per file written or failed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use contract::{ErrorBody, RecommendationDoc};
use e2e::{counting_link, Stack, StackOptions};
use reqwest::blocking::Client;
use serde_json::json;

/// The shared stack: its origin publishes to the edge through a counting link.
struct Shared {
    stack: Stack,
    /// `POST /admin/publish` requests that reached the edge.
    kv_writes: Arc<AtomicUsize>,
    /// Users of the demo data, each in the CDN folder.
    users: Vec<String>,
    /// The tests that count writes run one at a time.
    serial: Mutex<()>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut stack = Stack::start(StackOptions::default());
        stack.publish("cdn", None);
        let users = stack.cdn_users();
        assert!(users.len() >= 10, "demo data has {} users", users.len());
        let (port, kv_writes) = counting_link(stack.edge_port, "POST /admin/publish ");
        stack.stop_origin(0);
        stack.start_origin_with(0, &format!("http://127.0.0.1:{port}"), &[]);
        Shared {
            stack,
            kv_writes,
            users,
            serial: Mutex::new(()),
        }
    })
}

/// A client that calls the origin as the edge does (with the admin token, so the
/// origin's per-client rate limit, tested in hardening_origin.rs, does not apply).
fn client() -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", e2e::ADMIN_TOKEN).parse().unwrap(),
    );
    Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(64)
        .default_headers(headers)
        .build()
        .unwrap()
}

fn origin_url(stack: &Stack, i: usize, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", stack.origin_port(i))
}

/// Sum of the samples of a counter in origin `i`'s `/metrics` whose labels include `labels`.
fn metric(stack: &Stack, i: usize, name: &str, labels: &[&str]) -> f64 {
    let text = stack
        .client
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            stack.origins[i].metrics_port
        ))
        .send()
        .and_then(|r| r.text())
        .expect("origin /metrics");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CDN files origin `i` wrote (or failed to write), from its metrics.
fn cdn_writes(stack: &Stack, i: usize, result: &str) -> f64 {
    metric(
        stack,
        i,
        "origin_republish_total",
        &["target=\"cdn\"", &format!("result=\"{result}\"")],
    )
}

/// The document the bulk publish wrote for `user` into the CDN folder.
fn published_doc(stack: &Stack, user: &str) -> RecommendationDoc {
    let path = stack
        .publish_dir
        .join(format!("current/default/users/{user}.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("CDN file")).expect("CDN document")
}

fn post_events(client: &Client, url: &str, events: serde_json::Value) {
    let r = client
        .post(url)
        .json(&events)
        .send()
        .expect("POST /v1/events");
    let status = r.status();
    assert_eq!(status, 202, "{}", r.text().unwrap_or_default());
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn events_for_made_up_users_publish_nothing_to_kv_or_the_cdn() {
    let s = shared();
    let _serial = s.serial.lock().unwrap_or_else(|e| e.into_inner());
    let stack = &s.stack;
    let client = client();
    let run = unique();
    let kv_before = s.kv_writes.load(Ordering::SeqCst);
    let cdn_before = cdn_writes(stack, 0, "ok") + cdn_writes(stack, 0, "error");

    // One request, 500 new users, each buying an item nobody knows: the answer for each
    // of them is the popular list the edge serves an unknown user anyway.
    let made_up: Vec<String> = (0..500).map(|i| format!("madeup-{run}-{i}")).collect();
    let events: Vec<_> = made_up
        .iter()
        .enumerate()
        .map(|(i, u)| json!({"user_id": u, "item_id": format!("invented-{run}-{i}"), "type": "purchase"}))
        .collect();
    let events_url = origin_url(stack, 0, "/v1/events");
    post_events(&client, &events_url, json!({ "events": events }));
    // A real user buying their top item does change their answer: published once.
    let real = &s.users[0];
    let bought = published_doc(stack, real).items[0].item_id.clone();
    post_events(
        &client,
        &events_url,
        json!({"user_id": real, "item_id": bought, "type": "purchase"}),
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let unchanged = metric(
            stack,
            0,
            "origin_republish_skipped_total",
            &["reason=\"unchanged\""],
        );
        let real_done = s.kv_writes.load(Ordering::SeqCst) > kv_before;
        if (real_done && unchanged >= 500.0) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Anything still on its way would land within this.
    std::thread::sleep(Duration::from_secs(1));

    let kv = s.kv_writes.load(Ordering::SeqCst) - kv_before;
    let cdn = cdn_writes(stack, 0, "ok") + cdn_writes(stack, 0, "error") - cdn_before;
    assert_eq!(
        kv, 1,
        "KV publishes reaching the edge after 500 made-up users and 1 real one"
    );
    assert_eq!(
        cdn, 1.0,
        "CDN files written after 500 made-up users and 1 real one"
    );
    let in_cdn: Vec<String> = stack
        .cdn_users()
        .into_iter()
        .filter(|u| u.starts_with(&format!("madeup-{run}-")))
        .collect();
    assert!(
        in_cdn.is_empty(),
        "{} made-up users in the CDN folder",
        in_cdn.len()
    );
    let real_now = published_doc(stack, real);
    assert!(
        real_now.items.iter().all(|i| i.item_id != bought),
        "the real user's CDN document was republished without {bought}"
    );
    // The edge has nothing of theirs in KV: it asks the origin, which answers the popular list.
    for u in &made_up[..3] {
        let body = e2e::served(stack.get(&format!("/v1/recommendations/{u}")));
        assert_ne!(body["source"], "kv", "{u} was published to KV: {body}");
    }
    assert!(stack.panics().is_empty(), "{:?}", stack.panics());
}

#[test]
fn a_hammered_user_is_written_to_kv_and_the_cdn_at_most_once_a_second() {
    let s = shared();
    let _serial = s.serial.lock().unwrap_or_else(|e| e.into_inner());
    let stack = &s.stack;
    let user = s.users[1].clone();
    let to_buy: Vec<String> = published_doc(stack, &user)
        .items
        .iter()
        .map(|i| i.item_id.clone())
        .collect();
    let kv_before = s.kv_writes.load(Ordering::SeqCst);
    let cdn_before = cdn_writes(stack, 0, "ok") + cdn_writes(stack, 0, "error");
    let url = origin_url(stack, 0, &format!("/v1/recommendations/{user}"));
    let events_url = origin_url(stack, 0, "/v1/events");
    let started = Instant::now();
    let hammer_for = Duration::from_secs(4);
    let gets = AtomicUsize::new(0);
    let last_bought = Mutex::new(None::<String>);
    std::thread::scope(|sc| {
        for _ in 0..16 {
            sc.spawn(|| {
                let client = client();
                while started.elapsed() < hammer_for {
                    let r = client.get(&url).send().expect("origin GET");
                    assert_eq!(r.status(), 200);
                    gets.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Meanwhile the user keeps buying what they are recommended: every event
        // changes their answer, and each change must reach the edge, but not faster
        // than once a second.
        sc.spawn(|| {
            let client = client();
            for item in to_buy.iter().cycle() {
                if started.elapsed() >= hammer_for {
                    break;
                }
                post_events(
                    &client,
                    &events_url,
                    json!({"user_id": user, "item_id": item, "type": "purchase"}),
                );
                *last_bought.lock().unwrap() = Some(item.clone());
                std::thread::sleep(Duration::from_millis(150));
            }
        });
    });
    let last_bought = last_bought
        .into_inner()
        .unwrap()
        .expect("an event was sent");
    // The last change is published once the interval since the previous publish is over.
    let cdn = Client::new();
    let cdn_url = format!(
        "http://127.0.0.1:{}/default/users/{user}.json",
        stack.cdn_port
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let doc: RecommendationDoc = cdn.get(&cdn_url).send().unwrap().json().unwrap();
        if doc.items.iter().all(|i| i.item_id != last_bought) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the answer without {last_bought} was never published"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let elapsed = started.elapsed().as_secs_f64();
    let gets = gets.into_inner();
    let kv = s.kv_writes.load(Ordering::SeqCst) - kv_before;
    let cdn_files = cdn_writes(stack, 0, "ok") + cdn_writes(stack, 0, "error") - cdn_before;
    let most = elapsed.floor() as usize + 1;
    eprintln!(
        "{gets} GETs of one user in {:.1}s: {kv} KV publishes, {cdn_files} CDN files ({elapsed:.1}s in all)",
        hammer_for.as_secs_f64()
    );
    assert!(gets >= 1000, "only {gets} GETs: not a hammering");
    assert!(
        kv >= 2,
        "{kv} KV publishes: the changed answers were not published"
    );
    assert!(
        kv <= most,
        "{kv} KV publishes of one user in {elapsed:.1}s: more than one a second"
    );
    assert!(
        cdn_files <= most as f64,
        "{cdn_files} CDN writes of one user in {elapsed:.1}s: more than one a second"
    );
}

#[test]
fn the_cdn_servers_errors_are_json_with_their_status() {
    let s = shared();
    let user = &s.users[2];
    let client = client();
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", s.stack.cdn_port);
    let file = url(&format!("/default/users/{user}.json"));
    let ok = client.get(&file).send().unwrap();
    assert_eq!(ok.status(), 200);
    let cases = [
        (client.post(&file).body("{}"), 405, "method_not_allowed"),
        (client.put(&file).body("{}"), 405, "method_not_allowed"),
        (client.delete(&file), 405, "method_not_allowed"),
        (
            client.get(url("/default/users/nobody-at-all.json")),
            404,
            "not_found",
        ),
        (client.get(url("/default/users/")), 404, "not_found"),
        (client.get(url("/no/such/path")), 404, "not_found"),
    ];
    for (req, status, code) in cases {
        let r = req.send().unwrap();
        let what = format!("{} {}", r.status(), r.url().path());
        assert_eq!(r.status().as_u16(), status, "{what}");
        let content_type = e2e::header(&r, "content-type");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type}"
        );
        let text = r.text().unwrap();
        let body: ErrorBody =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text:?}"));
        assert_eq!(body.error.code, code, "{what}");
        assert!(!body.error.message.is_empty(), "{what}");
    }
}

#[test]
fn concurrent_cdn_writes_of_one_user_from_two_origins_never_serve_an_empty_or_partial_file() {
    // Two origins share the CDN folder and publish on every answer and every event (no
    // freshness window, no minimum interval), so writes of one file really overlap.
    let mut stack = Stack::start(StackOptions {
        origins: vec!["us-east", "europe"],
        ..Default::default()
    });
    stack.publish("cdn", None);
    let users = stack.cdn_users();
    let user = users[0].clone();
    let to_buy: Vec<String> = published_doc(&stack, &user)
        .items
        .iter()
        .map(|i| i.item_id.clone())
        .collect();
    let edge = stack.edge_url("");
    let every_time = [
        ("ORIGIN_FRESH_FOR_S", "0"),
        ("ORIGIN_PUBLISH_MIN_INTERVAL_MS", "0"),
        ("ORIGIN_REPUBLISH_DEBOUNCE_MS", "5"),
    ];
    for i in 0..2 {
        stack.stop_origin(i);
        stack.start_origin_with(i, &edge, &every_time);
    }
    let stack = &stack;
    let written_before: f64 = (0..2).map(|i| cdn_writes(stack, i, "ok")).sum();
    let cdn_url = format!(
        "http://127.0.0.1:{}/default/users/{user}.json",
        stack.cdn_port
    );
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let (reads, bad, not_ok) = std::thread::scope(|sc| {
        for t in 0..24 {
            let url = origin_url(stack, t % 2, &format!("/v1/recommendations/{user}"));
            let stop = &stop;
            sc.spawn(move || {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.get(&url).send();
                }
            });
        }
        for i in 0..2 {
            let (url, stop, to_buy, user) =
                (origin_url(stack, i, "/v1/events"), &stop, &to_buy, &user);
            sc.spawn(move || {
                let client = client();
                for item in to_buy.iter().cycle() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    post_events(
                        &client,
                        &url,
                        json!({"user_id": user, "item_id": item, "type": "click"}),
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let readers: Vec<_> = (0..8)
            .map(|_| {
                let (url, stop) = (&cdn_url, &stop);
                sc.spawn(move || {
                    let client = client();
                    let (mut reads, mut bad, mut not_ok) = (0usize, Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(r) = client.get(url).send() else {
                            continue;
                        };
                        let status = r.status().as_u16();
                        let body = r.bytes().unwrap_or_default();
                        if status != 200 {
                            not_ok.push(status);
                            continue;
                        }
                        reads += 1;
                        match serde_json::from_slice::<RecommendationDoc>(&body) {
                            Ok(doc) if doc.user_id == user_of(url) && !doc.items.is_empty() => {}
                            _ => bad.push(body.len()),
                        }
                    }
                    (reads, bad, not_ok)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, Ordering::Relaxed);
        readers.into_iter().map(|r| r.join().unwrap()).fold(
            (0, Vec::new(), Vec::new()),
            |(n, mut b, mut o), (rn, rb, ro)| {
                b.extend(rb);
                o.extend(ro);
                (n + rn, b, o)
            },
        )
    });
    // Publishes started before the stop finish; then the folder is quiet.
    let all_writes = || -> f64 {
        (0..2)
            .map(|i| cdn_writes(stack, i, "ok") + cdn_writes(stack, i, "error"))
            .sum()
    };
    let quiet_by = Instant::now() + Duration::from_secs(10);
    let mut last = all_writes();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = all_writes();
        if now == last || Instant::now() > quiet_by {
            break;
        }
        last = now;
    }
    let written: f64 = (0..2).map(|i| cdn_writes(stack, i, "ok")).sum::<f64>() - written_before;
    let failed: f64 = (0..2).map(|i| cdn_writes(stack, i, "error")).sum();
    eprintln!(
        "{:.1}s: {written} CDN writes of one user by 2 origins, {reads} reads over HTTP",
        started.elapsed().as_secs_f64()
    );
    assert!(
        written >= 200.0,
        "only {written} CDN writes: no real overlap"
    );
    assert!(reads >= 500, "only {reads} CDN reads");
    assert!(
        bad.is_empty(),
        "{} of {reads} 200 answers were not a complete document (body sizes {:?})",
        bad.len(),
        &bad[..bad.len().min(20)]
    );
    assert!(
        not_ok.is_empty(),
        "{} reads were not 200: {:?}",
        not_ok.len(),
        &not_ok[..not_ok.len().min(20)]
    );
    assert_eq!(failed, 0.0, "CDN writes failed");
    let leftovers: Vec<String> = std::fs::read_dir(stack.publish_dir.join("current/default/users"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".json"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert!(stack.panics().is_empty(), "{:?}", stack.panics());
}

/// The user id in a CDN user file URL (`…/users/{user}.json`).
fn user_of(url: &str) -> &str {
    url.rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".json"))
        .unwrap_or("")
}
