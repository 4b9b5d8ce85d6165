//! End-to-end tests of the whole system on real parts: `wrangler dev` (workerd) with
//! local KV, the origin service, and the static secondary CDN, each its own process.
//!
//! Most tests share one stack (started once, users split between them so they do
//! not interfere); the test that stops the origin gets a stack of its own.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e::{doc, header, now_s, served, Stack, StackOptions, ADMIN_TOKEN, SUBREQUEST_TIMEOUT_MS};
use serde_json::json;

/// The shared stack and which users live where.
struct Shared {
    stack: Stack,
    /// Published to KV (and the CDN).
    kv_users: Vec<String>,
    /// In the CDN only.
    cdn_only_users: Vec<String>,
    /// Known to the origin, in neither KV nor the CDN.
    neither_users: Vec<String>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let stack = Stack::start(StackOptions::default());
        stack.publish("cdn", None);
        let users = stack.cdn_users();
        assert!(
            users.len() >= 60,
            "demo data should have at least 60 users, has {}",
            users.len()
        );
        let kv_users = users[..10].to_vec();
        stack.publish("kv", Some(&kv_users));
        let neither_users = users[users.len() - 10..].to_vec();
        for u in &neither_users {
            stack.remove_from_cdn(u);
        }
        Shared {
            cdn_only_users: users[10..20].to_vec(),
            kv_users,
            neither_users,
            stack,
        }
    })
}

#[test]
fn a_user_published_to_kv_is_served_from_kv_then_from_the_edge_cache() {
    let s = shared();
    let user = &s.kv_users[0];
    let first = s.stack.get(&format!("/v1/recommendations/{user}"));
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-served-by"), "kv");
    assert_eq!(header(&first, "x-cache"), "MISS");
    assert!(
        header(&first, "cache-control").contains("s-maxage="),
        "{}",
        header(&first, "cache-control")
    );
    let body = served(first);
    assert_eq!(body["source"], "kv");
    assert_eq!(body["user_id"], user.as_str());
    assert_eq!(body["stale"], false);
    assert!(!body["items"].as_array().unwrap().is_empty());
    assert!(body["items"].as_array().unwrap().len() <= 10);

    let again = s.stack.get(&format!("/v1/recommendations/{user}?n=3"));
    assert_eq!(again.status(), 200);
    assert_eq!(header(&again, "x-cache"), "HIT");
    assert_eq!(header(&again, "x-served-by"), "edge-cache");
    let body = served(again);
    assert_eq!(body["source"], "edge-cache");
    assert_eq!(body["items"].as_array().unwrap().len(), 3);
}

#[test]
fn a_user_missing_from_kv_is_served_from_the_secondary_cdn() {
    let s = shared();
    let user = &s.cdn_only_users[0];
    let r = s.stack.get(&format!("/v1/recommendations/{user}"));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "secondary-cdn");
    let body = served(r);
    assert_eq!(body["source"], "secondary-cdn");
    assert_eq!(body["user_id"], user.as_str());
}

#[test]
fn a_user_in_neither_store_is_served_by_the_origin_and_then_from_kv() {
    let s = shared();
    let user = &s.neither_users[0];
    let r = s.stack.get(&format!("/v1/recommendations/{user}"));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "origin");
    let body = served(r);
    assert_eq!(body["source"], "origin");
    assert_eq!(body["user_id"], user.as_str());

    // The origin publishes its answer to KV in the background; after a purge of the
    // edge cache the next request must come from KV.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        s.stack.purge(user);
        let r = s.stack.get(&format!("/v1/recommendations/{user}"));
        assert_eq!(r.status(), 200);
        let by = header(&r, "x-served-by");
        if by == "kv" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served by {by} 15 s after the origin answered"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn with_the_origin_stopped_stored_users_are_served_and_unknown_ones_get_the_popular_list() {
    let mut stack = Stack::start(StackOptions {
        users: 80,
        items: 60,
        ..Default::default()
    });
    stack.publish("cdn", None);
    let users = stack.cdn_users();
    stack.publish("kv", Some(&users[..5]));
    let (kv_user, cdn_user) = (users[0].clone(), users[10].clone());
    let neither: Vec<String> = users[users.len() - 3..].to_vec();
    for u in &neither {
        stack.remove_from_cdn(u);
    }
    stack.stop_origin(0);

    let r = stack.get(&format!("/v1/recommendations/{kv_user}"));
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-served-by")),
        (200, "kv".to_string())
    );
    let r = stack.get(&format!("/v1/recommendations/{cdn_user}"));
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-served-by")),
        (200, "secondary-cdn".to_string())
    );

    // Origin down (connection refused): the region's popular list from KV, at once.
    let started = Instant::now();
    let r = stack.get(&format!("/v1/recommendations/{}", neither[0]));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "popular");
    assert!(
        header(&r, "server-timing").contains("popular-kv"),
        "{}",
        header(&r, "server-timing")
    );
    let body = served(r);
    assert_eq!(
        (body["source"].as_str(), body["user_id"].as_str()),
        (Some("popular"), Some(neither[0].as_str()))
    );
    assert!(!body["items"].as_array().unwrap().is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(SUBREQUEST_TIMEOUT_MS + 1000),
        "took {:?}",
        started.elapsed()
    );

    // A tenant with no list anywhere: 503 JSON, the only case left for it.
    let r = stack.get("/v1/recommendations/u1?tenant=empty-shop");
    assert_eq!(r.status(), 503);
    assert_eq!(served(r)["error"]["code"], "unavailable");

    // Origin hanging (accepts, never answers): cut at the timeout, then the popular list.
    let _hole = e2e::black_hole(stack.origin_port(0));
    let started = Instant::now();
    let r = stack.get(&format!("/v1/recommendations/{}", neither[1]));
    let took = started.elapsed();
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-served-by")),
        (200, "popular".to_string())
    );
    assert!(
        took >= Duration::from_millis(SUBREQUEST_TIMEOUT_MS - 100),
        "answered before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(SUBREQUEST_TIMEOUT_MS + 1500),
        "hung past the timeout: {took:?}"
    );
}

#[test]
fn users_are_routed_by_the_country_of_their_ip() {
    let s = shared();
    let path = format!("/v1/recommendations/{}", s.kv_users[3]);
    // Addresses whose country the shipped PDDL database is documented to know.
    let cases = [
        ("81.2.69.160", "europe"),
        ("89.160.20.112", "europe"),
        ("8.8.8.8", "us-east"),
        ("2a02:cf40::1", "europe"),
        ("2001:4860:4860::8888", "us-east"),
        ("10.0.0.1", "us-east"),
        ("127.0.0.1", "us-east"),
    ];
    for (ip, region) in cases {
        let r = s.stack.get_as(&path, ip);
        assert_eq!(r.status(), 200, "{ip}");
        assert_eq!(header(&r, "x-edge-region"), region, "{ip}");
    }
    let h = served(s.stack.get_as("/health", "81.2.69.160"));
    assert_eq!(
        (h["country"].as_str(), h["geo_source"].as_str()),
        (Some("GB"), Some("geoip")),
        "{h}"
    );
    assert_eq!(h["geo_db"]["state"], "loaded");
    let h = served(s.stack.get_as("/health", "10.0.0.1"));
    assert_eq!(
        (h["region"].as_str(), h["geo_source"].as_str()),
        (Some("us-east"), Some("default")),
        "{h}"
    );
    // Errors say the region too.
    let r = s.stack.get_as("/v1/recommendations/a%2Fb", "81.2.69.160");
    assert_eq!(
        (r.status().as_u16(), header(&r, "x-edge-region")),
        (400, "europe".to_string())
    );
}

#[test]
fn cloudflare_country_wins_over_geoip() {
    let stack = Stack::start(StackOptions {
        users: 30,
        items: 30,
        cf_country: Some("JP"),
        ..Default::default()
    });
    let r = stack.get_as("/v1/recommendations/anyone", "81.2.69.160");
    assert_eq!(header(&r, "x-edge-region"), "asia");
    let h = served(stack.get_as("/health", "81.2.69.160"));
    assert_eq!(
        (h["country"].as_str(), h["geo_source"].as_str()),
        (Some("JP"), Some("cf")),
        "{h}"
    );
}

/// The breaker entry of the origin listening on `port`, from `/health`.
fn breaker_of(stack: &Stack, port: u16) -> serde_json::Value {
    let h = stack.health();
    let url = format!("http://127.0.0.1:{port}");
    h["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["url"] == url.as_str())
        .cloned()
        .unwrap_or(json!(null))
}

#[test]
fn european_users_fail_over_to_the_next_origin_and_the_breaker_opens_and_closes() {
    let vars = vec![
        ("BREAKER_FAILURES", "3".to_string()),
        ("BREAKER_OPEN_S", "3".to_string()),
    ];
    let mut stack = Stack::start(StackOptions {
        users: 40,
        items: 40,
        origins: vec!["us-east", "europe"],
        vars,
        ..Default::default()
    });
    let europe = 1;
    let eu_ip = "81.2.69.160";
    let miss =
        |stack: &Stack, i: usize| stack.get_as(&format!("/v1/recommendations/eu-probe-{i}"), eu_ip);

    let r = miss(&stack, 0);
    assert_eq!(
        (header(&r, "x-served-by"), header(&r, "x-origin")),
        ("origin".to_string(), "europe".to_string())
    );

    stack.stop_origin(europe);
    for i in 1..=6 {
        let started = Instant::now();
        let r = miss(&stack, i);
        assert_eq!(r.status(), 200, "miss {i}");
        assert_eq!(
            header(&r, "x-origin"),
            "us-east",
            "miss {i} after europe stopped"
        );
        assert!(
            started.elapsed() < Duration::from_millis(SUBREQUEST_TIMEOUT_MS),
            "miss {i} waited {:?}",
            started.elapsed()
        );
    }
    let b = breaker_of(&stack, stack.origin_port(europe));
    assert_eq!(b["state"], "open", "{b}");
    assert!(
        b["skipped"].as_u64().unwrap() >= 3,
        "the dead origin was still contacted: {b}"
    );
    assert!(
        stack.health()["counters"]["breaker_skips"]
            .as_u64()
            .unwrap()
            >= 3
    );

    stack.start_origin(europe);
    std::thread::sleep(Duration::from_millis(3200));
    let r = miss(&stack, 7);
    assert_eq!(
        header(&r, "x-origin"),
        "europe",
        "the half-open probe should reach the returned origin"
    );
    assert_eq!(
        breaker_of(&stack, stack.origin_port(europe))["state"],
        "closed"
    );
    let r = miss(&stack, 8);
    assert_eq!(header(&r, "x-origin"), "europe");
}

/// Which of `instances` (one rank) the edge's core sends `user`'s misses to first.
fn predicted_instance(instances: &[&str], user: &str) -> String {
    use edge::origins::{order, AffinityKey, Origin};
    let rank = instances
        .iter()
        .map(|name| Origin {
            name: name.to_string(),
            url: String::new(),
            rank: 0,
        })
        .collect();
    let key = AffinityKey::User {
        tenant: "default".into(),
        user: user.into(),
    };
    order(vec![rank], &key)[0].name.clone()
}

#[test]
fn origins_of_equal_rank_split_users_by_affinity_and_take_over_a_stopped_ones_users() {
    // Two instances of Europe's origin, of equal rank; both serve region europe.
    const GROUP: [&str; 2] = ["europe-a", "europe-b"];
    let mut stack = Stack::start(StackOptions {
        users: 30,
        items: 30,
        origins: GROUP.to_vec(),
        origin_regions: vec![("europe-a", "europe"), ("europe-b", "europe")],
        vars: vec![
            ("BREAKER_FAILURES", "3".to_string()),
            ("BREAKER_OPEN_S", "2".to_string()),
        ],
        extra_config: "REGION_ORIGINS = '{\"europe\": [[\"europe-a\", \"europe-b\"]]}'\n".into(),
        ..Default::default()
    });
    let eu_ip = "81.2.69.160";
    // Users no tier has: the origin answers them (the region's popular list, never
    // published), so every miss after a purge reaches an origin again.
    let users: Vec<String> = (0..40).map(|i| format!("affinity-{i}")).collect();
    let miss = |stack: &Stack, user: &str| {
        stack.purge(user);
        let r = stack.get_as(&format!("/v1/recommendations/{user}"), eu_ip);
        let answer = (
            r.status().as_u16(),
            header(&r, "x-served-by"),
            header(&r, "x-origin"),
        );
        assert_eq!(header(&r, "x-edge-region"), "europe");
        answer
    };
    let on = |instance: &str| -> Vec<&String> {
        users
            .iter()
            .filter(|u| predicted_instance(&GROUP, u) == instance)
            .collect()
    };
    let (on_a, on_b) = (on("europe-a"), on("europe-b"));
    eprintln!(
        "affinity: {} users on europe-a, {} on europe-b",
        on_a.len(),
        on_b.len()
    );
    assert!(
        on_a.len() >= 10 && on_b.len() >= 10,
        "the core spreads 40 users: {} / {}",
        on_a.len(),
        on_b.len()
    );

    // `/health` lists the region's origins with their rank.
    let h = served(stack.get_as("/health", eu_ip));
    let listed: Vec<(String, u64)> = h["origins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().into(),
                o["rank"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [("europe-a".to_string(), 0), ("europe-b".to_string(), 0)],
        "{h}"
    );

    // Every miss of a user reaches the instance the core picks for them, every time.
    for round in 0..3 {
        for u in &users {
            let (status, served_by, origin) = miss(&stack, u);
            assert_eq!(
                (status, served_by.as_str(), origin.as_str()),
                (200, "origin", predicted_instance(&GROUP, u).as_str()),
                "round {round}, user {u}"
            );
        }
    }

    // europe-a stops: its users go to europe-b from their very first miss (the failed
    // connection is that request's failover, no 5xx), and after BREAKER_FAILURES
    // failures europe-a is skipped without being tried; europe-b's users never move.
    stack.stop_origin(0);
    for u in on_a.iter().chain(&on_b) {
        let started = Instant::now();
        let (status, served_by, origin) = miss(&stack, u);
        assert_eq!(
            (status, served_by.as_str(), origin.as_str()),
            (200, "origin", "europe-b"),
            "{u} with europe-a stopped"
        );
        assert!(
            started.elapsed() < Duration::from_millis(SUBREQUEST_TIMEOUT_MS),
            "{u} waited {:?}",
            started.elapsed()
        );
    }
    let b = breaker_of(&stack, stack.origin_port(0));
    assert_eq!(b["state"], "open", "{b}");
    assert!(
        b["skipped"].as_u64().unwrap() >= (on_a.len() - 3) as u64,
        "after 3 failures europe-a is skipped: {b}"
    );
    assert_eq!(
        breaker_of(&stack, stack.origin_port(1))["state"],
        "closed",
        "europe-b took everything"
    );

    // europe-a returns: after BREAKER_OPEN_S a probe reaches it and its users come back.
    stack.start_origin(0);
    std::thread::sleep(Duration::from_millis(2200));
    for u in &users {
        let (status, _, origin) = miss(&stack, u);
        assert_eq!(
            (status, origin),
            (200, predicted_instance(&GROUP, u)),
            "{u} after europe-a returned"
        );
    }

    // Stopping an instance under load (3 clients, a new user per request) costs no
    // answer: requests to it in flight finish or fail over, later ones fail over.
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
                    let r = client
                        .get(format!("{url}load-{t}-{i}"))
                        .header("CF-Connecting-IP", eu_ip)
                        .send()
                        .map(|r| (r.status().as_u16(), header(&r, "x-origin")));
                    answers.push(r.map_err(|e| e.to_string()));
                }
                answers
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    stack.stop_origin(0);
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers: Vec<_> = load.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let count = |origin: &str| {
        answers
            .iter()
            .filter(|a| matches!(a, Ok((200, o)) if o == origin))
            .count()
    };
    eprintln!(
        "europe-a stopped under load: {} answers, {} from europe-a, {} from europe-b",
        answers.len(),
        count("europe-a"),
        count("europe-b")
    );
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Ok((200, _))))
        .collect();
    assert!(failed.is_empty(), "failed under load: {failed:?}");
    assert!(answers.len() >= 10, "{} answers", answers.len());

    // Writes take the same order: each user's events reach that user's instance
    // (recording servers stand in for the two instances; past BREAKER_OPEN_S the first
    // event for europe-a is its breaker's probe, which closes it).
    std::thread::sleep(Duration::from_millis(2200));
    stack.stop_origin(1);
    let recorders = [
        e2e::recording_origin(stack.origin_port(0), 202),
        e2e::recording_origin(stack.origin_port(1), 202),
    ];
    for u in users.iter().take(12) {
        let r = stack
            .client
            .post(stack.edge_url("/v1/events"))
            .header("CF-Connecting-IP", eu_ip)
            .json(&json!({ "user_id": u, "item_id": "i1", "type": "view" }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    }
    for (i, recorder) in recorders.iter().enumerate() {
        let got: Vec<String> = recorder
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.head.starts_with("POST /v1/events?tenant=default "))
            .map(|r| {
                let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                body["events"][0]["user_id"].as_str().unwrap().to_string()
            })
            .collect();
        let want: Vec<String> = users
            .iter()
            .take(12)
            .filter(|u| predicted_instance(&GROUP, u) == GROUP[i])
            .cloned()
            .collect();
        assert_eq!(got, want, "events that reached {}", GROUP[i]);
    }
}

#[test]
fn concurrent_misses_for_one_user_share_one_origin_fetch() {
    // Its own stack, with the origin 600 ms away (still under the subrequest timeout), so
    // all 12 misses reach the origin tier while the first fetch is in flight. Next to a
    // nearby origin, on a busy machine a late request found the answer already in KV and
    // nothing was left to join; that is not what this test is about.
    let stack = Stack::start(StackOptions {
        users: 30,
        items: 30,
        origin_latency: Some(Duration::from_millis(600)),
        ..Default::default()
    });
    let before = stack.health()["counters"].clone();
    let path = "/v1/recommendations/coalesce-probe-user";
    // Each thread opens its own connection first (a /health call) and all send at once
    // behind a barrier.
    const CONCURRENT: usize = 12;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONCURRENT));
    let handles: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (health, url) = (stack.edge_url("/health"), stack.edge_url(path));
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                client.get(health).send().and_then(|r| r.bytes())?;
                barrier.wait();
                client
                    .get(url)
                    .send()
                    .map(|r| (r.status().as_u16(), header(&r, "x-served-by")))
            })
        })
        .collect();
    let answers: Vec<(u16, String)> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let after = stack.health()["counters"].clone();
    let fetches =
        after["origin_fetches"].as_u64().unwrap() - before["origin_fetches"].as_u64().unwrap();
    let joined = after["coalesced"].as_u64().unwrap() - before["coalesced"].as_u64().unwrap();
    eprintln!("coalescing: {fetches} origin fetches, {joined} joined; served by {answers:?}");
    assert_eq!(
        fetches, 1,
        "12 concurrent misses made {fetches} origin fetches (joined {joined})"
    );
    // A request held up past the fetch would find the answer cached and join nothing;
    // without coalescing every request in the window makes its own fetch.
    assert!(joined >= 1, "no request joined the fetch in flight");
}

#[test]
fn under_load_with_origin_and_cdn_restarting_nothing_fails_and_staleness_is_bounded() {
    let vars = vec![("BREAKER_OPEN_S", "2".to_string())];
    let mut stack = Stack::start(StackOptions {
        users: 120,
        items: 80,
        vars,
        ..Default::default()
    });
    stack.publish("cdn", None);
    let users = stack.cdn_users();
    stack.publish("kv", Some(&users[..30]));
    for u in &users[users.len() - 30..] {
        stack.remove_from_cdn(u);
    }
    let mut pool: Vec<String> = users.clone();
    pool.extend((0..40).map(|i| format!("chaos-unknown-{i}")));
    let report = e2e::chaos::run(&mut stack, &pool);
    eprintln!("{}", report.markdown());
    report.save("chaos");
    assert_eq!(report.total, 2000);
    assert_eq!(report.errors, 0, "transport errors: {report:?}");
    assert_eq!(report.status_5xx, 0, "5xx answers: {report:?}");
    assert!(
        report.max_latency < e2e::chaos::LATENCY_BUDGET,
        "slowest {:?} over budget",
        report.max_latency
    );
    assert_eq!(
        report.staleness_violations, 0,
        "served past stale_for_s: {report:?}"
    );
}

#[test]
fn a_document_past_its_freshness_is_not_served_as_fresh() {
    let s = shared();
    let user = "freshness-probe-user";
    let short = doc(user, "e2e#short-ttl", now_s(), 2);
    let r = s.stack.admin(
        "/admin/publish",
        Some(ADMIN_TOKEN),
        &json!({ "documents": [short] }),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());

    let r = s.stack.get(&format!("/v1/recommendations/{user}"));
    assert_eq!(header(&r, "x-served-by"), "kv");
    assert_eq!(served(r)["model_version"], "e2e#short-ttl");

    std::thread::sleep(Duration::from_secs(3));
    let r = s.stack.get(&format!("/v1/recommendations/{user}"));
    assert_eq!(r.status(), 200);
    let (x_cache, by) = (header(&r, "x-cache"), header(&r, "x-served-by"));
    let body = served(r);
    let served_as_fresh_copy = body["model_version"] == "e2e#short-ttl" && body["stale"] == false;
    assert!(
        !served_as_fresh_copy,
        "expired document served as fresh by {by} ({x_cache}): {body}"
    );
    assert_ne!(x_cache, "HIT");
    let (generated_at, fresh_for_s) = (
        body["generated_at"].as_u64().unwrap(),
        body["fresh_for_s"].as_u64().unwrap(),
    );
    assert!(
        body["stale"] == true || generated_at + fresh_for_s > now_s(),
        "{body}"
    );
}

#[test]
fn bad_input_gets_json_errors_and_nothing_panics() {
    let s = shared();
    let long = "a".repeat(1000);
    let bad_ids = [
        "a/b",
        "a%2Fb",
        "..%2F..%2Fetc",
        "x..y",
        ".hidden",
        "a%0Ab",
        "a%00b",
        "a%7Fb",
        "a%20b",
        "%C3%A9",
        long.as_str(),
    ];
    for id in bad_ids {
        let r = s.stack.get(&format!("/v1/recommendations/{id}"));
        assert_eq!(r.status(), 400, "id {id:?}");
        let body = served(r);
        assert!(
            body["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("invalid_"),
            "{id:?}: {body}"
        );
    }
    let user = &s.kv_users[1];
    for q in ["n=0", "n=100000", "n=abc", "n=-1"] {
        let r = s.stack.get(&format!("/v1/recommendations/{user}?{q}"));
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(served(r)["error"]["code"], "invalid_n", "{q}");
    }
    let r = s.stack.get("/no/such/route");
    assert_eq!(r.status(), 404);
    assert_eq!(served(r)["error"]["code"], "not_found");

    for path in ["/admin/publish", "/admin/purge"] {
        for token in [
            None,
            Some("wrong-token"),
            Some("e2e-admin-token-not-a-secreT"),
        ] {
            let r = s.stack.admin(path, token, &json!({ "user_ids": [] }));
            assert_eq!(r.status(), 401, "{path} with {token:?}");
            assert_eq!(served(r)["error"]["code"], "unauthorized");
        }
    }
    let r = s.stack.admin(
        "/admin/publish",
        Some(ADMIN_TOKEN),
        &json!({ "documents": [{ "user_id": "x" }] }),
    );
    assert_eq!(r.status(), 400);

    // Events are validated at the edge with the contract's rules before any forwarding.
    let post_events = |body: serde_json::Value| {
        s.stack
            .client
            .post(s.stack.edge_url("/v1/events"))
            .json(&body)
            .send()
            .unwrap()
    };
    let too_many: Vec<_> = (0..501)
        .map(|i| json!({"user_id": "u1", "item_id": format!("i{i}"), "type": "view"}))
        .collect();
    for (body, code) in [
        (
            json!({"user_id": "u1", "item_id": "i1", "type": "bogus"}),
            "invalid_event_type",
        ),
        (
            json!({"user_id": "a/b", "item_id": "i1", "type": "view"}),
            "invalid_user_id",
        ),
        (
            json!({"user_id": "u1", "item_id": "i1", "type": "rating", "value": 9}),
            "invalid_value",
        ),
        (json!({"events": too_many}), "too_many_events"),
        (json!([1, 2]), "invalid_body"),
    ] {
        let r = post_events(body);
        assert_eq!(r.status(), 400, "{code}");
        assert_eq!(served(r)["error"]["code"], code);
    }

    // The edge still answers normally afterwards, and no process panicked.
    assert_eq!(s.stack.get("/health").status(), 200);
    assert_eq!(s.stack.panics(), Vec::<String>::new());
}

#[test]
fn browsers_get_cors_headers_and_conditional_requests_get_304() {
    let s = shared();
    let user = &s.kv_users[2];
    let path = format!("/v1/recommendations/{user}?n=5");
    let r = s
        .stack
        .client
        .get(s.stack.edge_url(&path))
        .header("Origin", "https://shop.example")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(header(&r, "access-control-expose-headers").contains("X-Cache"));
    let etag = header(&r, "etag");
    assert!(etag.starts_with('"'), "etag {etag:?}");

    let pre = s
        .stack
        .client
        .request(reqwest::Method::OPTIONS, s.stack.edge_url(&path))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "if-none-match")
        .send()
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(header(&pre, "access-control-allow-origin"), "*");
    assert!(header(&pre, "access-control-allow-methods").contains("GET"));
    assert!(header(&pre, "access-control-allow-headers")
        .to_lowercase()
        .contains("if-none-match"));

    let cond = s
        .stack
        .client
        .get(s.stack.edge_url(&path))
        .header("If-None-Match", &etag)
        .send()
        .unwrap();
    assert_eq!(cond.status(), 304);
    assert_eq!(header(&cond, "etag"), etag);
    let other = s
        .stack
        .client
        .get(s.stack.edge_url(&path))
        .header("If-None-Match", "\"other\"")
        .send()
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[test]
fn an_event_sent_to_the_edge_is_stored_and_changes_the_users_answer_within_seconds() {
    let s = shared();
    let user = &s.kv_users[4];
    let path = format!("/v1/recommendations/{user}");
    let before = served(s.stack.get(&path));
    let bought = before["items"][0]["item_id"].as_str().unwrap().to_string();

    let sent = Instant::now();
    let r = s
        .stack
        .client
        .post(s.stack.edge_url("/v1/events"))
        .json(&json!({ "user_id": user, "item_id": bought, "type": "purchase", "source": "kv" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    assert_eq!(served(r)["accepted"], 1);

    // The origin rescores the user, republishes to KV and purges the edge cache: the
    // bought item leaves the answer at the edge.
    let took = loop {
        let now = served(s.stack.get(&path));
        let items: Vec<&str> = now["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["item_id"].as_str())
            .collect();
        if !items.contains(&bought.as_str()) {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(15),
            "the answer still holds {bought} 15 s after the purchase"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("event to changed answer at the edge: {took:?}");
    let report = format!(
        "| event → changed answer at the edge | {:.0} ms |\n",
        took.as_secs_f64() * 1e3
    );
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| e2e::repo_root().join("target"));
    let _ = std::fs::create_dir_all(target.join("e2e-reports"));
    let _ = std::fs::write(target.join("e2e-reports/freshness.md"), report);

    // The origin's Prometheus endpoint (its own port) counts what it ingested.
    let metrics = s
        .stack
        .client
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            s.stack.origins[0].metrics_port
        ))
        .send()
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().unwrap();
    assert!(
        text.contains("# TYPE") && text.contains("events"),
        "no event metrics in /metrics:\n{}",
        &text[..text.len().min(2000)]
    );

    // The purchase and the edge's impressions (sent in the background) reach analytics.
    let analytics = format!(
        "http://127.0.0.1:{}/v1/analytics/recommendations?range=1h",
        s.stack.origin_port(0)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a: serde_json::Value = s
            .stack
            .client
            .get(&analytics)
            .send()
            .unwrap()
            .json()
            .unwrap();
        if a["conversions"].as_u64().unwrap_or(0) >= 1
            && a["impressions"].as_u64().unwrap_or(0) >= 1
        {
            assert!(
                a["by_region"].as_object().is_some_and(|m| !m.is_empty()),
                "{a}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "analytics never showed the purchase and impressions: {a}"
        );
        // Batches leave with later traffic (every answer checks whether one is due).
        let _ = s.stack.get(&path);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The browser test's own stack: an A/B experiment runs (two variants of the stack's
/// model), and the users' documents published after it started name their variant.
fn stack_with_an_experiment() -> (Stack, String, String) {
    let stack = Stack::start(StackOptions::default());
    let origin = format!("http://127.0.0.1:{}", stack.origin_port(0));
    let name = "demo-ab";
    let started = stack
        .client
        .post(format!("{origin}/v1/admin/experiments"))
        .bearer_auth(e2e::ADMIN_TOKEN)
        .json(&serde_json::json!({
            "name": name,
            "variants": [
                {"name": "control", "model": "popularity", "share": 50},
                {"name": "knn", "model": r#"{"kind":"itemknn","k":50,"shrink":10}"#, "share": 50}
            ]
        }))
        .send()
        .unwrap();
    assert_eq!(started.status(), 201, "{:?}", started.text());
    // `origin publish` trains every variant's model itself: each user's document names
    // their variant.
    stack.publish("cdn,kv", None);
    let user = stack.cdn_users()[5].clone();
    (stack, name.to_owned(), user)
}

#[test]
fn a_click_on_the_demo_page_shows_up_on_the_dashboard() {
    let (stack, experiment, user) = stack_with_an_experiment();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/setup.sh installs Debian's chromium for this test"
    );
    let root = e2e::repo_root();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let out = target.join("e2e-reports/browser");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let origin_url = format!("http://127.0.0.1:{}", stack.origin_port(0));
    let run = std::process::Command::new("node")
        .arg(root.join("tests/browser/demo_click.mjs"))
        .args([
            stack.edge_url("").as_str(),
            origin_url.as_str(),
            out.to_str().unwrap(),
            user.as_str(),
            experiment.as_str(),
        ])
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs the browser driver");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "browser test failed:\n{said}");
    for shot in ["demo.png", "dashboard.png"] {
        let len = std::fs::metadata(out.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{shot} was not saved ({len} bytes)");
    }
}

#[test]
fn an_exclude_filter_is_answered_from_the_stored_list_without_the_origin() {
    let s = shared();
    let user = &s.kv_users[7];
    let items = |doc: &serde_json::Value| -> Vec<String> {
        doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let full = items(&served(
        s.stack.get(&format!("/v1/recommendations/{user}?n=5")),
    ));
    assert_eq!(full.len(), 5);
    let r = s.stack.get(&format!(
        "/v1/recommendations/{user}?n=5&exclude={},{}",
        full[0], full[3]
    ));
    assert_eq!(r.status(), 200);
    let by = header(&r, "x-served-by");
    assert!(by == "kv" || by == "edge-cache", "served by {by}");
    let got = items(&served(r));
    assert_eq!(got.len(), 5, "the stored list is longer than n: {got:?}");
    assert!(
        !got.contains(&full[0]) && !got.contains(&full[3]),
        "{got:?}"
    );
    assert_eq!(
        got[..3],
        [full[1].clone(), full[2].clone(), full[4].clone()]
    );
    let bad = s
        .stack
        .get(&format!("/v1/recommendations/{user}?exclude=a/b"));
    assert_eq!(bad.status(), 400);
    assert_eq!(served(bad)["error"]["code"], "invalid_exclude");
}
