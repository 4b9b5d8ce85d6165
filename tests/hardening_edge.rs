//! End-to-end tests of the edge under hostile and concurrent traffic (issue #11, the
//! edge's part), on real parts: `wrangler dev` (workerd, with its local rate limiter),
//! the origin and the static secondary CDN, each its own process.
//!
//! - public writes are rate limited per client (429 JSON with `Retry-After`);
//! - edge-cache keys ignore the client's `Host` (a purge reaches every copy, random
//!   hosts do not multiply entries) and follow the region (a popular fallback cached
//!   for Europe is not served to Asia);
//! - oversized headers and dot-segment paths get JSON errors;
//! - writes go through again as soon as a region's only origin is back;
//! - writes carry the bearer token, the client key and ids a failover reuses.
//!
//! Most tests share one stack; the ones that need their own config or stop the origin
//! start their own.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e::{header, raw_request, served, Stack, StackOptions};
use serde_json::json;

/// An IP the shipped PDDL database places in Europe (GB).
const EU_IP: &str = "81.2.69.160";
/// Addresses of Asian networks (JP, CN, KR); the test uses the first the database places
/// in Asia.
const ASIA_CANDIDATES: [&str; 5] = [
    "202.12.27.33",
    "210.130.1.1",
    "1.0.16.1",
    "114.114.114.114",
    "168.126.63.1",
];

fn shared() -> &'static (Stack, Vec<String>) {
    static SHARED: OnceLock<(Stack, Vec<String>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let stack = Stack::start(StackOptions::default());
        stack.publish("cdn", None);
        let users = stack.cdn_users();
        assert!(users.len() >= 20, "demo data has {} users", users.len());
        let kv_users = users[..10].to_vec();
        stack.publish("kv", Some(&kv_users));
        (stack, kv_users)
    })
}

/// GET `path` with the given `Host` header.
fn get_with_host(stack: &Stack, path: &str, host: &str) -> reqwest::blocking::Response {
    stack
        .client
        .get(stack.edge_url(path))
        .header("Host", host)
        .send()
        .unwrap_or_else(|e| panic!("GET {path} (Host {host}): {e}"))
}

fn error_code(r: reqwest::blocking::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body = served(r);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn random_host_headers_do_not_create_new_cache_entries() {
    let (stack, users) = shared();
    let path = format!("/v1/recommendations/{}", users[0]);
    let first = get_with_host(stack, &path, "r1.attacker.example");
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache"), "MISS");
    for host in ["r2.attacker.example", "127.0.0.1:1", "EDGE.example"] {
        let again = get_with_host(stack, &path, host);
        assert_eq!(
            header(&again, "x-cache"),
            "HIT",
            "a request with Host {host} missed the entry cached via another host"
        );
    }
}

#[test]
fn a_purge_reaches_the_entries_cached_via_every_host() {
    let (stack, users) = shared();
    let path = format!("/v1/recommendations/{}", users[1]);
    for host in ["shop.example", "m.shop.example"] {
        get_with_host(stack, &path, host);
        let hit = get_with_host(stack, &path, host);
        assert_eq!(header(&hit, "x-cache"), "HIT", "cached via {host}");
    }
    // The purge arrives on the edge's own address, as the origin sends it; afterwards
    // neither host finds a copy (the first request after it refills the one shared entry).
    stack.purge(&users[1]);
    let after = get_with_host(stack, &path, "m.shop.example");
    assert_eq!(
        header(&after, "x-cache"),
        "MISS",
        "the entry cached via m.shop.example survived the purge"
    );
}

#[test]
fn a_popular_fallback_cached_for_europe_is_not_served_to_an_asian_caller() {
    let (stack, _) = shared();
    let asia_ip = ASIA_CANDIDATES
        .into_iter()
        .find(|ip| served(stack.get_as("/health", ip))["region"] == "asia")
        .expect("one of the Asian addresses locates to asia");
    // Known to no store and not to the origin: the origin answers the region's popular list.
    let path = "/v1/recommendations/stranger-from-nowhere";
    let eu = stack.get_as(path, EU_IP);
    assert_eq!(header(&eu, "x-served-by"), "origin");
    assert_eq!(served(eu)["region"], "europe");
    let eu_again = stack.get_as(path, EU_IP);
    assert_eq!(header(&eu_again, "x-cache"), "HIT", "cached for Europe");

    let r = stack.get_as(path, asia_ip);
    assert_eq!(header(&r, "x-edge-region"), "asia");
    let cache = header(&r, "x-cache");
    let body = served(r);
    assert_eq!(
        (cache.as_str(), body["region"].as_str()),
        ("MISS", Some("asia")),
        "an Asian caller got Europe's cached list: {body}"
    );
}

#[test]
fn headers_past_the_edge_limit_get_a_431_json_error() {
    let (stack, users) = shared();
    let r = stack
        .client
        .get(stack.edge_url(&format!("/v1/recommendations/{}", users[2])))
        .header("X-Padding", "x".repeat(40 * 1024))
        .send()
        .unwrap();
    assert_eq!(error_code(r), (431, "headers_too_large".to_string()));
    let ok = stack.get(&format!("/v1/recommendations/{}", users[2]));
    assert_eq!(ok.status(), 200, "ordinary headers still pass");
}

#[test]
fn dot_segment_user_ids_in_any_spelling_are_400_json() {
    let (stack, _) = shared();
    for path in [
        "/v1/recommendations/..",
        "/v1/recommendations/%2e%2e",
        "/v1/recommendations/%2E%2E",
        "/v1/recommendations/.%2e",
        "/v1/recommendations/x/..",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let (status, body) = raw_request(stack.edge_port, raw.as_bytes());
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("{path}: {status} with a body that is not JSON ({e}): {body:?}")
        });
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            json["error"]["code"]
                .as_str()
                .unwrap()
                .starts_with("invalid_"),
            "{path}: {body}"
        );
    }
}

/// POSTs one view event to the edge as the client at `ip`.
fn post_event(stack: &Stack, ip: &str, user: &str) -> reqwest::blocking::Response {
    stack
        .client
        .post(stack.edge_url("/v1/events"))
        .header("CF-Connecting-IP", ip)
        .json(&json!({ "user_id": user, "item_id": "i1", "type": "view" }))
        .send()
        .unwrap()
}

#[test]
fn past_the_limit_a_clients_event_posts_get_429_json_with_retry_after() {
    const LIMIT: usize = 3;
    let stack = Stack::start(StackOptions {
        users: 30,
        items: 30,
        extra_config: format!(
            "[[ratelimits]]\nname = \"EVENTS_LIMITER\"\nnamespace_id = \"1001\"\n\
             simple = {{ limit = {LIMIT}, period = 60 }}\n"
        ),
        ..Default::default()
    });
    // The limiter counts in fixed 60 s windows: a run that crosses a window boundary
    // starts again in the next one.
    for attempt in 0..2 {
        let window = e2e::now_s() / 60;
        let ip = format!("198.51.100.{}", 10 + attempt);
        let statuses: Vec<u16> = (0..LIMIT)
            .map(|_| post_event(&stack, &ip, "u-limited").status().as_u16())
            .collect();
        let over = post_event(&stack, &ip, "u-limited");
        if e2e::now_s() / 60 != window {
            continue;
        }
        assert_eq!(statuses, vec![202; LIMIT], "within the limit");
        assert_eq!(over.status(), 429);
        let retry_after: u64 = header(&over, "retry-after")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(error_code(over), (429, "rate_limited".to_string()));
        let other = post_event(&stack, "198.51.100.200", "u-other");
        assert_eq!(other.status(), 202, "another client has its own limit");
        return;
    }
    panic!("two runs crossed a minute boundary");
}

#[test]
fn an_event_is_accepted_within_seconds_after_the_regions_only_origin_returns() {
    let mut stack = Stack::start(StackOptions {
        users: 30,
        items: 30,
        ..Default::default()
    });
    let ip = "198.51.100.7";
    assert_eq!(post_event(&stack, ip, "u-outage").status(), 202);
    let down = Instant::now();
    stack.stop_origin(0);
    for _ in 0..6 {
        assert_eq!(post_event(&stack, ip, "u-outage").status(), 503);
    }
    let url = format!("http://127.0.0.1:{}", stack.origin_port(0));
    let breakers = stack.health()["breakers"].clone();
    let state = breakers
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["url"] == url.as_str())
        .map(|b| b["state"].clone());
    assert_ne!(
        state,
        Some(json!("closed")),
        "the breaker opened: {breakers}"
    );
    std::thread::sleep(Duration::from_secs(5).saturating_sub(down.elapsed()));
    stack.start_origin(0);
    let back = Instant::now();
    loop {
        let r = post_event(&stack, ip, "u-outage");
        if r.status() == 202 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "events still refused {:?} after the origin returned: {} {}",
            back.elapsed(),
            r.status(),
            r.text().unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "event accepted {:?} after the origin returned",
        back.elapsed()
    );
}

/// What the recorder took on `path`, waiting up to `within` for at least one request.
fn took(
    seen: &std::sync::Mutex<Vec<e2e::Recorded>>,
    path: &str,
    within: Duration,
) -> Vec<e2e::Recorded> {
    let started = Instant::now();
    loop {
        let found: Vec<e2e::Recorded> = seen
            .lock()
            .unwrap()
            .iter()
            // The path, with or without a query (events carry `?tenant=`).
            .filter(|r| {
                let target = r.head.split(' ').nth(1).unwrap_or_default();
                r.head.starts_with("POST ") && target.split('?').next() == Some(path)
            })
            .cloned()
            .collect();
        if !found.is_empty() || started.elapsed() > within {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn writes_to_the_origin_carry_the_bearer_the_client_key_and_ids_that_a_failover_reuses() {
    let mut stack = Stack::start(StackOptions {
        users: 30,
        items: 30,
        origins: vec!["europe", "us-east"],
        vars: vec![("IMPRESSION_FLUSH_MS", "100".to_string())],
        ..Default::default()
    });
    stack.publish("cdn", None);
    let user = stack.cdn_users()[0].clone();
    stack.publish("kv", Some(std::slice::from_ref(&user)));
    // Europe's origin fails every write; us-east takes them.
    stack.stop_origin(0);
    stack.stop_origin(1);
    let failing = e2e::recording_origin(stack.origin_port(0), 503);
    let taking = e2e::recording_origin(stack.origin_port(1), 202);

    let r = post_event(&stack, EU_IP, "u-recorded");
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let (first, second) = (
        took(&failing, "/v1/events", Duration::from_secs(5)),
        took(&taking, "/v1/events", Duration::from_secs(5)),
    );
    assert_eq!((first.len(), second.len()), (1, 1), "one failover");
    let ids: Vec<String> = [&first[0], &second[0]]
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            body["events"][0]["event_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        !ids[0].is_empty(),
        "the edge gave the event an id: {}",
        first[0].body
    );
    assert_eq!(ids[0], ids[1], "the failover resent the same id");
    let w = &second[0];
    assert_eq!(
        w.header("authorization").as_deref(),
        Some(format!("Bearer {}", e2e::ADMIN_TOKEN).as_str())
    );
    let client = w.header("x-edge-client").unwrap_or_default();
    assert!(
        client.len() == 16 && client.bytes().all(|b| b.is_ascii_hexdigit()),
        "X-Edge-Client {client:?}"
    );
    assert!(
        !w.head.contains(EU_IP) && !w.body.contains(EU_IP),
        "the raw IP left the edge"
    );

    // An answer's impressions carry an id and the bearer too.
    let r = stack.get_as(&format!("/v1/recommendations/{user}"), EU_IP);
    assert_eq!(r.status(), 200);
    // The next answer finds the first one waiting past IMPRESSION_FLUSH_MS and sends.
    std::thread::sleep(Duration::from_millis(300));
    let _ = stack.get_as(&format!("/v1/recommendations/{user}"), EU_IP);
    let sent = took(&taking, "/v1/impressions", Duration::from_secs(10));
    let batch = sent
        .first()
        .expect("an impressions batch reached the origin");
    let body: serde_json::Value = serde_json::from_str(&batch.body).unwrap();
    let id = body["shown"][0]["id"].as_str().unwrap_or("");
    assert!(
        id.len() >= 17,
        "the answer has an id of 64 bits or more: {body}"
    );
    assert_eq!(
        batch.header("authorization").as_deref(),
        Some(format!("Bearer {}", e2e::ADMIN_TOKEN).as_str())
    );
}
