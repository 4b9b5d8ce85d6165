//! End-to-end tests of items' lists (issue #15) on real parts: `wrangler dev` with
//! local KV, the origin and the static CDN.
//!
//! - `origin publish` writes every item's similar and bought-together lists next to the
//!   users' documents; the edge serves them from KV, then from its cache, with the
//!   same headers and filters as a user's list.
//! - An item no publish holds walks the same chain: the origin answers with the popular
//!   list of its category (then the popular list), under the item's name; with the
//!   origin stopped, the region's popular list from KV.

use e2e::{header, served, Stack, StackOptions};
use serde_json::Value;

fn ids(doc: &Value) -> Vec<String> {
    doc["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {doc}"))
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Items with a published similar list, sorted.
fn published_items(stack: &Stack) -> Vec<String> {
    let dir = stack.publish_dir.join("current/default/similar");
    let mut items: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    items.sort();
    items
}

#[test]
fn an_items_lists_are_served_from_kv_then_from_the_edge_cache() {
    let mut stack = Stack::start(StackOptions::default());
    let out = stack.publish("cdn,kv", None);
    assert!(out.contains(" item lists"), "{out}");
    let items = published_items(&stack);
    assert!(items.len() >= 20, "{items:?}");
    let item = &items[0];
    let on_cdn: Value = serde_json::from_slice(
        &std::fs::read(
            stack
                .publish_dir
                .join(format!("current/default/similar/{item}.json")),
        )
        .unwrap(),
    )
    .unwrap();

    // No origin from here on.
    stack.stop_origin(0);
    let r = stack.get(&format!("/v1/items/{item}/similar?n=5"));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "kv");
    assert!(header(&r, "content-type").starts_with("application/json"));
    let doc = served(r);
    assert_eq!(doc["list"], "similar");
    assert_eq!(doc["item_id"], item.as_str());
    assert_eq!(doc["source"], "kv");
    assert_eq!(ids(&doc), ids(&on_cdn)[..5], "the published list, cut to n");
    assert!(
        !ids(&doc).contains(item),
        "an item is not similar to itself"
    );

    let r = stack.get(&format!("/v1/items/{item}/similar?n=3"));
    assert_eq!(header(&r, "x-served-by"), "edge-cache");
    assert_eq!(header(&r, "x-cache"), "HIT");
    assert_eq!(ids(&served(r)), ids(&on_cdn)[..3]);

    // Filters apply to the stored list, as for users.
    let r = stack.get(&format!(
        "/v1/items/{item}/similar?n=3&exclude={}",
        ids(&on_cdn)[0]
    ));
    assert_eq!(ids(&served(r)), ids(&on_cdn)[1..4]);

    // Bought together: its own document.
    let with_basket = items
        .iter()
        .find(|i| {
            let p = stack
                .publish_dir
                .join(format!("current/default/bought-together/{i}.json"));
            let d: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            d["items"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("bought with"))
        })
        .expect("demo data has add-to-carts, so some item has a bought-together list");
    let r = stack.get(&format!("/v1/items/{with_basket}/bought-together"));
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "kv");
    let doc = served(r);
    assert_eq!(doc["list"], "bought-together");
    assert_eq!(doc["item_id"], with_basket.as_str());
    assert_eq!(
        doc["items"][0]["reason"],
        format!("bought with {with_basket}")
    );

    // An item no tier knows, with the origin down: the region's popular list from KV,
    // under the item's name.
    let r = stack.get("/v1/items/no-such-item/similar?n=4");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "popular");
    let doc = served(r);
    assert_eq!(doc["item_id"], "no-such-item");
    assert_eq!(doc["list"], "similar");
    assert_eq!(ids(&doc).len(), 4);

    let bad = stack.get("/v1/items/a%2Fb/similar");
    assert_eq!(bad.status(), 400);
    assert_eq!(served(bad)["error"]["code"], "invalid_item_id");
    assert!(stack.panics().is_empty(), "{:?}", stack.panics());
}

#[test]
fn an_item_no_publish_holds_is_answered_by_the_origin_with_the_popular_list_of_its_category() {
    let stack = Stack::start(StackOptions::default());
    stack.publish("cdn", None);
    // A new catalogue item, after the model was trained: the origin knows its category.
    let popular: Value = stack
        .client
        .get(format!(
            "http://127.0.0.1:{}/v1/popular?n=100",
            stack.origin_port(0)
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let category = popular["items"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["categories"][0].as_str())
        .expect("demo items have categories")
        .to_owned();
    let put = stack
        .client
        .put(format!(
            "http://127.0.0.1:{}/v1/items/fresh-arrival",
            stack.origin_port(0)
        ))
        .bearer_auth(e2e::ADMIN_TOKEN)
        .json(&serde_json::json!({ "title": "Fresh arrival", "categories": [category] }))
        .send()
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().unwrap());

    let r = stack.get("/v1/items/fresh-arrival/similar?n=5");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-served-by"), "origin");
    let doc = served(r);
    assert_eq!(doc["item_id"], "fresh-arrival");
    let items = doc["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for i in items {
        assert!(
            i["categories"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == category.as_str()),
            "popular in {category}: {i}"
        );
    }
    // Kept in the edge cache for its freshness.
    let r = stack.get("/v1/items/fresh-arrival/similar?n=5");
    assert_eq!(header(&r, "x-served-by"), "edge-cache");
}

#[test]
fn an_item_made_unavailable_leaves_the_item_lists_the_edge_serves_within_seconds() {
    let stack = Stack::start(StackOptions::default());
    stack.publish("cdn,kv", None);
    let items = published_items(&stack);
    let item = &items[1];
    let path = format!("/v1/items/{item}/similar?n=10");
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
        .bearer_auth(e2e::ADMIN_TOKEN)
        .json(&serde_json::json!({"title": "Sold out", "available": false}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200, "{:?}", put.text());
    let written = std::time::Instant::now();
    let deadline = written + std::time::Duration::from_secs(15);
    let (after, by) = loop {
        let r = stack.get(&path);
        let by = header(&r, "x-served-by");
        let got = ids(&served(r));
        if !got.contains(&gone) {
            break (got, by);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{gone} is still in {item}'s similar items at the edge ({by}) after {:?}",
            written.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    eprintln!(
        "{gone} left {item}'s similar items after {:?} (served by {by})",
        written.elapsed()
    );
    assert!(by == "kv" || by == "edge-cache", "served by {by}");
    assert_eq!(after.len(), 10, "still n items: {after:?}");
    assert_eq!(after[..9], before[1..], "the rest of the list moves up");
}
