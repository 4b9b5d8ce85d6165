//! Tenants end to end (issue #13), every part a real process: `wrangler dev`, an
//! origin and the CDN. Deleting a tenant removes its published documents (below).
//!
//! Keys: Once the served tenant is in the registry (`origin tenants
//! create`, picked up by the running origin within its 5 s sync), events sent to the
//! edge need one of its keys in `X-Tenant-Key`: the edge refuses a value of another
//! shape itself (401 `invalid_key`, the origin never called), forwards a well-shaped
//! one, and the origin refuses a missing or unknown key (401) and another tenant's
//! (403); the tenant's client key is accepted. Browsers may send the header (CORS).
//!
//! An unknown tenant is a JSON 404 at the edge, answered without the origin once the
//! origin has said so (below).

use std::time::{Duration, Instant};

use e2e::{header, run_origin, Stack, StackOptions};
use serde_json::{json, Value};

fn register(db: &str, tenant: &str) -> String {
    // Its JSON on stdout comes first; log lines on stderr may follow.
    let out = run_origin(&["tenants", "create", tenant, "--db", db, "--json"], &[]);
    let created: Value = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .next()
        .expect("a JSON answer")
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    created["client_key"].as_str().unwrap().to_owned()
}

#[test]
fn events_at_the_edge_need_the_tenants_key_once_it_is_registered() {
    let stack = Stack::start(StackOptions {
        users: 30,
        items: 20,
        ..Default::default()
    });
    let post = |key: Option<&str>| {
        let mut req = stack
            .client
            .post(stack.edge_url("/v1/events"))
            .json(&json!({"user_id": "u1", "item_id": "i1", "type": "view"}));
        if let Some(k) = key {
            req = req.header("X-Tenant-Key", k);
        }
        let r = req.send().unwrap();
        let (status, served_by) = (r.status().as_u16(), header(&r, "x-served-by"));
        let body: Value = r.json().unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
        (status, code, served_by)
    };
    // Not registered yet: events need no key (a single-tenant deployment).
    assert_eq!(post(None).0, 202);

    let key = register(&stack.db, "default");
    let other = register(&stack.db, "other");
    let deadline = Instant::now() + Duration::from_secs(15);
    while post(None).0 != 401 {
        assert!(Instant::now() < deadline, "the origin never required a key");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(post(None).1, "key_required");
    let (status, code, served_by) = post(Some("pk_not-a-key"));
    assert_eq!((status, code.as_str()), (401, "invalid_key"));
    assert_ne!(
        served_by, "origin",
        "the edge answered a malformed key itself"
    );
    let unknown = format!("pk_{}", "cd".repeat(32));
    let (status, code, served_by) = post(Some(&unknown));
    assert_eq!(
        (status, code.as_str(), served_by.as_str()),
        (401, "invalid_key", "origin")
    );
    assert_eq!(post(Some(&other)).1, "wrong_tenant");
    assert_eq!(post(Some(&other)).0, 403);
    assert_eq!(post(Some(&key)).0, 202);

    // A browser's preflight may send the header.
    let pre = stack
        .client
        .request(reqwest::Method::OPTIONS, stack.edge_url("/v1/events"))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, x-tenant-key",
        )
        .send()
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert!(
        header(&pre, "access-control-allow-headers").contains("X-Tenant-Key"),
        "{}",
        header(&pre, "access-control-allow-headers")
    );
}

/// Deleting a tenant through the origin's admin route removes what was published of
/// it: its files from every CDN generation and, at the edge, its KV pointer, after
/// which its users are no longer served from KV. The tenant the origin serves cannot be
/// deleted under it (409).
#[test]
fn deleting_a_tenant_removes_its_published_documents() {
    let stack = Stack::start(StackOptions {
        users: 20,
        items: 15,
        ..Default::default()
    });
    stack.publish("cdn", None);
    register(&stack.db, "gone");
    // The edge holds a generation of tenant gone, with one user.
    let now = e2e::now_s();
    let mut doc = e2e::doc("leaver", "e2e#gone", now, 600);
    doc.tenant = "gone".into();
    let r = stack.admin(
        "/admin/publish",
        Some(e2e::ADMIN_TOKEN),
        &json!({"tenant": "gone", "generation": format!("g{now}-0"), "activate": true,
                "documents": [doc]}),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    let read = || stack.get("/v1/recommendations/leaver?tenant=gone");
    assert_eq!(header(&read(), "x-served-by"), "kv");
    // And the CDN folder has files of it in its current generation.
    let current = stack.publish_dir.join("current");
    let files = current.join("gone/users");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("leaver.json"), "{}").unwrap();

    let origin = format!("http://127.0.0.1:{}", stack.origin_port(0));
    let delete = |tenant: &str| {
        let r = stack
            .client
            .delete(format!("{origin}/v1/admin/tenants/{tenant}"))
            .bearer_auth(e2e::ADMIN_TOKEN)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    register(&stack.db, "default");
    let (status, body) = delete("default");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("tenant_served"))
    );

    let (status, body) = delete("gone");
    assert_eq!(status, 200, "{body}");
    let published = body["published"].as_array().unwrap();
    let of = |target: &str| {
        published
            .iter()
            .find(|p| p["target"] == target)
            .unwrap_or_else(|| panic!("{body}"))["removed"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}"))
            .to_owned()
    };
    assert!(of("cdn").starts_with("1 files in 1 generations"), "{body}");
    assert!(of("kv").contains("pointer deleted"), "{body}");
    assert!(!files.exists(), "the CDN files are gone");
    stack.purge_tenant_user("gone", "leaver");
    let after = read();
    assert_ne!(
        header(&after, "x-served-by"),
        "kv",
        "KV no longer serves tenant gone"
    );
    // Deleting again: the registry no longer has it.
    assert_eq!(delete("gone").0, 404);
}

/// The edge limits event posts per tenant key as well as per client: clients at
/// different addresses sharing one tenant key are refused together past its limit
/// (429 JSON with `Retry-After`), while another client without a key is not.
#[test]
fn clients_sharing_a_tenant_key_are_limited_together() {
    const LIMIT: usize = 3;
    let stack = Stack::start(StackOptions {
        users: 20,
        items: 15,
        extra_config: format!(
            "[[ratelimits]]\nname = \"TENANT_EVENTS_LIMITER\"\nnamespace_id = \"1011\"\n\
             simple = {{ limit = {LIMIT}, period = 60 }}\n"
        ),
        ..Default::default()
    });
    let key = register(&stack.db, "default");
    let post = |ip: &str, key: Option<&str>| {
        let mut req = stack
            .client
            .post(stack.edge_url("/v1/events"))
            .header("CF-Connecting-IP", ip)
            .json(&json!({"user_id": "u1", "item_id": "i1", "type": "view"}));
        if let Some(k) = key {
            req = req.header("X-Tenant-Key", k);
        }
        req.send().unwrap()
    };
    // The origin takes the key once its registry sync has seen the tenant (give a loaded
    // machine, with other stacks' PostgreSQL servers, the time of several syncs).
    let deadline = Instant::now() + Duration::from_secs(30);
    while post("198.51.100.99", None).status() != 401 {
        assert!(Instant::now() < deadline, "the origin never required a key");
        std::thread::sleep(Duration::from_millis(250));
    }
    // The limiter counts in fixed 60 s windows: a run that crosses a boundary is redone.
    for attempt in 0..2 {
        let window = e2e::now_s() / 60;
        let statuses: Vec<u16> = (0..LIMIT)
            .map(|i| {
                post(&format!("198.51.{attempt}.{}", 10 + i), Some(&key))
                    .status()
                    .as_u16()
            })
            .collect();
        let over = post(&format!("198.51.{attempt}.200"), Some(&key));
        if e2e::now_s() / 60 != window || statuses.contains(&429) {
            // A previous attempt's window: wait for the next one.
            std::thread::sleep(Duration::from_secs(60 - e2e::now_s() % 60));
            continue;
        }
        assert_eq!(
            statuses,
            vec![202; LIMIT],
            "three clients within the key's limit"
        );
        assert_eq!(over.status(), 429, "a fourth client with the same key");
        let retry: u64 = header(&over, "retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let body: Value = over.json().unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        let other = post("198.51.100.250", None);
        assert_eq!(
            other.status(),
            401,
            "no key: not the key's limit (the origin wants one)"
        );
        return;
    }
    panic!("two runs crossed a minute boundary");
}

/// With `TENANT_HOST = "{tenant}.recs.test"` the host names the tenant: a request on
/// `default.recs.test` reads tenant default's KV documents without `?tenant=`; a
/// `?tenant=` naming another tenant is 400 `tenant_mismatch`; a host with two labels
/// below the pattern is 400.
#[test]
fn the_host_name_can_name_the_tenant() {
    let stack = Stack::start(StackOptions {
        users: 20,
        items: 15,
        vars: vec![("TENANT_HOST", "{tenant}.recs.test".to_string())],
        ..Default::default()
    });
    stack.publish("kv", None);
    let get = |host: &str, query: &str| {
        stack
            .client
            .get(stack.edge_url(&format!("/v1/recommendations/u1{query}")))
            .header("Host", host)
            .send()
            .unwrap()
    };
    let r = get("default.recs.test", "");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "kv");
    let body: Value = r.json().unwrap();
    assert_eq!(body["tenant"], "default");
    assert_eq!(get("default.recs.test", "?tenant=default").status(), 200);
    let code = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap();
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(
        code(get("default.recs.test", "?tenant=other")),
        (400, "tenant_mismatch".to_owned())
    );
    assert_eq!(code(get("a.b.recs.test", "")).0, 400);
    // Another host is not below the pattern: ?tenant= or the default, as before.
    let r = get("127.0.0.1", "");
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["tenant"], "default");
    // Events go to the host's tenant too.
    let post = |host: &str, query: &str| {
        stack
            .client
            .post(stack.edge_url(&format!("/v1/events{query}")))
            .header("Host", host)
            .json(&json!({"user_id": "u1", "item_id": "i1", "type": "view"}))
            .send()
            .unwrap()
    };
    assert_eq!(post("default.recs.test", "").status(), 202);
    assert_eq!(
        code(post("ghost.recs.test", "")),
        (404, "unknown_tenant".to_owned())
    );
    assert_eq!(
        code(post("default.recs.test", "?tenant=other")),
        (400, "tenant_mismatch".to_owned())
    );
}

/// A tenant the registry does not hold is a JSON 404 at the edge, for reads and events.
/// Once the origin has said so, the edge answers it alone for a minute: with the origin
/// stopped, the answer is still the 404 (not a 503 from a failed walk), while a stored
/// user of a real tenant is still served from KV.
#[test]
fn an_unknown_tenant_is_a_404_and_then_the_edge_answers_it_without_the_origin() {
    let mut stack = Stack::start(StackOptions {
        users: 20,
        items: 15,
        ..Default::default()
    });
    stack.publish("kv", None);
    let code = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap_or(Value::Null);
        (
            status,
            body["error"]["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    let read = |stack: &Stack| {
        stack
            .client
            .get(stack.edge_url("/v1/recommendations/u1?tenant=ghost"))
            .send()
            .unwrap()
    };
    let unknown = (404, "unknown_tenant".to_string());
    assert_eq!(code(read(&stack)), unknown);
    let event = stack
        .client
        .post(stack.edge_url("/v1/events?tenant=ghost"))
        .json(&json!({"user_id": "u1", "item_id": "i1", "type": "view"}))
        .send()
        .unwrap();
    assert_eq!(code(event), unknown);

    stack.stop_origin(0);
    assert_eq!(code(read(&stack)), unknown, "answered by the edge alone");
    let known = stack
        .client
        .get(stack.edge_url("/v1/recommendations/u1"))
        .send()
        .unwrap();
    assert_eq!(known.status(), 200);
    assert_eq!(header(&known, "x-served-by"), "kv");
}
