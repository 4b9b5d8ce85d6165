//! End-to-end tests of request filters and availability (issue #15) on real parts:
//! `wrangler dev` with local KV, the origin and the static CDN.
//!
//! - A `category=` answer is picked from the stored list in KV (or the edge cache)
//!   with the origin stopped, and a filter that leaves fewer than `n` items serves
//!   them with `X-Filter-Short`.
//! - An item made unavailable through `PUT /v1/items/{id}` leaves the edge's answers
//!   within seconds: the origin republishes the documents holding it into KV and
//!   purges their edge-cache entries.
//! - A business rule set through `PUT /v1/admin/rules` reaches the edge's answers: the
//!   origin's full publish of the tenant writes every document under the new rules.

use std::time::{Duration, Instant};

use e2e::{header, served, Stack, StackOptions, ADMIN_TOKEN};
use serde_json::{json, Value};

fn ids(doc: &Value) -> Vec<String> {
    doc["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {doc}"))
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

fn categories(item: &Value) -> Vec<String> {
    item["categories"]
        .as_array()
        .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// A stack whose first users are published to KV (and every user to the CDN).
fn stack_with_kv_users() -> (Stack, Vec<String>) {
    let stack = Stack::start(StackOptions::default());
    stack.publish("cdn", None);
    let users = stack.cdn_users();
    let kv_users = users[..10].to_vec();
    stack.publish("kv", Some(&kv_users));
    (stack, kv_users)
}

#[test]
fn a_category_filter_is_answered_from_the_stored_list_without_the_origin() {
    let (mut stack, users) = stack_with_kv_users();
    let user = &users[0];
    let r = stack.get(&format!("/v1/recommendations/{user}?n=100"));
    assert_eq!(header(&r, "x-served-by"), "kv");
    let stored = served(r);
    let items = stored["items"].as_array().unwrap().clone();
    assert!(items.len() >= 20, "the published list: {}", items.len());
    assert!(
        items.iter().all(|i| !categories(i).is_empty()),
        "published items carry their categories: {stored}"
    );
    // The category most items of the stored list have.
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for i in &items {
        for c in categories(i) {
            *counts.entry(c).or_default() += 1;
        }
    }
    let (category, in_list) = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(c, n)| (c.clone(), *n))
        .unwrap();
    assert!(in_list >= 3, "{counts:?}");
    let expected: Vec<String> = items
        .iter()
        .filter(|i| categories(i).contains(&category))
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect();

    // No origin from here on: the answers come from the edge cache or KV.
    stack.stop_origin(0);
    let r = stack.get(&format!(
        "/v1/recommendations/{user}?n=3&category={category}"
    ));
    assert_eq!(r.status(), 200);
    let by = header(&r, "x-served-by");
    assert!(by == "kv" || by == "edge-cache", "served by {by}");
    assert!(r.headers().get("x-filter-short").is_none());
    let doc = served(r);
    assert_eq!(
        ids(&doc),
        expected[..3],
        "the first 3 of the category, in order"
    );
    for item in doc["items"].as_array().unwrap() {
        assert!(categories(item).contains(&category), "{item}");
    }

    // Fewer items of the category than n in the stored list: all of them, and the count.
    let r = stack.get(&format!(
        "/v1/recommendations/{user}?n=100&category={category}"
    ));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-filter-short"), in_list.to_string());
    let by = header(&r, "x-served-by");
    assert!(by == "kv" || by == "edge-cache", "served by {by}");
    assert_eq!(ids(&served(r)), expected);

    // A category the list does not hold at all: an empty answer, never the origin.
    let r = stack.get(&format!(
        "/v1/recommendations/{user}?n=5&category=no-such-shelf"
    ));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-filter-short"), "0");
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert!(ids(&served(r)).is_empty());

    // With exclude: the first of the category leaves, the next takes its place.
    let r = stack.get(&format!(
        "/v1/recommendations/{user}?n=2&category={category}&exclude={}",
        expected[0]
    ));
    assert_eq!(ids(&served(r)), expected[1..3]);

    let bad = stack.get(&format!("/v1/recommendations/{user}?category=a%2Cb"));
    assert_eq!(bad.status(), 400);
    assert_eq!(served(bad)["error"]["code"], "invalid_category");
    let health = stack.health();
    assert_eq!(
        health["counters"]["origin_fetches"], 0,
        "no answer above reached the origin: {health}"
    );
}

#[test]
fn an_item_made_unavailable_leaves_the_edges_answers_within_seconds() {
    let (stack, users) = stack_with_kv_users();
    let user = &users[1];
    let path = format!("/v1/recommendations/{user}?n=10");
    let r = stack.get(&path);
    assert_eq!(header(&r, "x-served-by"), "kv");
    let before = ids(&served(r));
    assert_eq!(before.len(), 10);
    let gone = before[0].clone();
    // Into the edge cache too, so the purge is what removes it there.
    assert_eq!(header(&stack.get(&path), "x-cache"), "HIT");

    let origin = format!("http://127.0.0.1:{}", stack.origin_port(0));
    let put = stack
        .client
        .put(format!("{origin}/v1/items/{gone}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"title": "Sold out", "available": false}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text());
    let written = Instant::now();

    // The origin's own answer leaves it out at once.
    let direct: Value = stack
        .client
        .get(format!("{origin}/v1/recommendations/{user}?n=10"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(!ids(&direct).contains(&gone), "{direct}");
    assert_eq!(ids(&direct).len(), 10);

    // The edge's answer, from KV or its cache, within seconds.
    let deadline = written + Duration::from_secs(15);
    let (after, by) = loop {
        let r = stack.get(&path);
        let by = header(&r, "x-served-by");
        let got = ids(&served(r));
        if !got.contains(&gone) {
            break (got, by);
        }
        assert!(
            Instant::now() < deadline,
            "{gone} is still served by the edge ({by}) {:?} after the write; origin log:\n{}",
            written.elapsed(),
            stack.origins[0]
                .proc
                .as_ref()
                .and_then(|p| std::fs::read_to_string(&p.log).ok())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(&format!("user={user} "))
                    || l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("catalogue"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = written.elapsed();
    eprintln!("{gone} left the edge's answer for {user} after {took:?} (served by {by})");
    assert!(by == "kv" || by == "edge-cache", "served by {by}");
    assert_eq!(after.len(), 10, "still n items: {after:?}");
    assert_eq!(after[..9], before[1..], "the rest of the list moves up");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_business_rule_reaches_the_edges_answers_through_the_full_publish_it_starts() {
    let (stack, users) = stack_with_kv_users();
    let user = &users[2];
    let path = format!("/v1/recommendations/{user}?n=10");
    let before = ids(&served(stack.get(&path)));
    assert_eq!(before.len(), 10);
    let hidden = before[0].clone();
    let origin = format!("http://127.0.0.1:{}", stack.origin_port(0));
    let put = stack
        .client
        .put(format!("{origin}/v1/admin/rules"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "hide_items": [hidden] }))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text());
    let body: Value = put.json().unwrap();
    assert_eq!(body["republish"], "full_publish", "{body}");
    let written = Instant::now();
    let deadline = written + Duration::from_secs(30);
    let (after, by) = loop {
        // The edge cache keeps the old list for its freshness; ask for a fresh read past it
        // by purging this user's entries, as an operator would after a rules change.
        stack.purge(user);
        let r = stack.get(&path);
        let by = header(&r, "x-served-by");
        let got = ids(&served(r));
        if !got.contains(&hidden) {
            break (got, by);
        }
        assert!(
            Instant::now() < deadline,
            "{hidden} is still served by the edge ({by}) {:?} after the rules change",
            written.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "{hidden} left the edge's answer for {user} after {:?} (served by {by})",
        written.elapsed()
    );
    assert_eq!(after.len(), 10, "still n items: {after:?}");
    assert_eq!(after[..9], before[1..], "the rest of the list moves up");
}
