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
fn with_the_origin_stopped_stored_users_are_served_and_unknown_ones_get_a_quick_503() {
    let mut stack = Stack::start(StackOptions {
        users: 80,
        items: 60,
    });
    stack.publish("cdn", None);
    let users = stack.cdn_users();
    stack.publish("kv", Some(&users[..5]));
    let (kv_user, cdn_user) = (users[0].clone(), users[10].clone());
    let neither: Vec<String> = users[users.len() - 3..].to_vec();
    for u in &neither {
        stack.remove_from_cdn(u);
    }
    stack.stop_origin();

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

    // Origin down (connection refused): a 503 JSON error, at once.
    let started = Instant::now();
    let r = stack.get(&format!("/v1/recommendations/{}", neither[0]));
    assert_eq!(r.status(), 503);
    let body = served(r);
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        started.elapsed() < Duration::from_millis(SUBREQUEST_TIMEOUT_MS + 1000),
        "took {:?}",
        started.elapsed()
    );

    // Origin hanging (accepts, never answers): a 503 after the timeout, not a hang.
    let _hole = e2e::black_hole(stack.origin_port);
    let started = Instant::now();
    let r = stack.get(&format!("/v1/recommendations/{}", neither[1]));
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(served(r)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
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
