//! The cost of request filters at an edge-cache hit, natively: the pure steps the worker
//! runs on a hit (read the stored document, cut it to `n`, ETag, serialize the answer)
//! without a filter, with `category=`, and with `category=` plus `exclude=`, over a
//! published list of 50 items with two categories each.
//! Run with `cargo bench -p edge --bench filters` (part of `make bench`).

use contract::params::{parse_category, parse_exclude, Filters};
use contract::{RecItem, RecommendationDoc, Source};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use edge::respond;

const CATEGORIES: [&str; 12] = [
    "books", "music", "film", "games", "sports", "outdoor", "kitchen", "garden", "travel",
    "fashion", "tech", "art",
];

/// A published document: 50 items, ids and reasons like the origin's, two categories each.
fn stored() -> Vec<u8> {
    let doc = RecommendationDoc {
        tenant: "default".into(),
        user_id: "u123456".into(),
        region: "europe".into(),
        items: (0..50)
            .map(|i| RecItem {
                item_id: format!("item-{:06}", i * 37 + 11),
                score: 1.0 / (i + 1) as f64,
                reason: Some(format!("similar to item-{:06}", i * 13)),
                categories: vec![
                    CATEGORIES[i % 12].to_string(),
                    CATEGORIES[(i * 5 + 3) % 12].to_string(),
                ],
            })
            .collect(),
        model_version: "2026-12-03T10:00:00Z#hybrid-0.9ease-l400-0.1userknn-k100".into(),
        generated_at: 1_764_756_000,
        fresh_for_s: 300,
        stale_for_s: 86_400,
        list: None,
        item_id: None,
        variant: None,
    };
    serde_json::to_vec(&doc).expect("a document serializes")
}

/// What a hit does once it has the stored bytes: parse and validate, filter and cut,
/// ETag, serialize the answer.
fn answer(bytes: &[u8], n: usize, filters: &Filters) -> Vec<u8> {
    let doc = contract::parse_doc(bytes).expect("a valid document");
    let served = respond::served_doc(doc, Source::EdgeCache, false, n, filters);
    let etag = respond::etag(&served);
    let short = respond::filter_short_header(&served, n, filters);
    black_box((etag, short));
    serde_json::to_vec(&served).expect("an answer serializes")
}

fn filters(c: &mut Criterion) {
    let bytes = stored();
    let none = Filters::default();
    // "tech" is the category of 8 of the 50 items: a full answer of 5.
    let category = Filters {
        exclude: Vec::new(),
        category: parse_category(Some("tech")).unwrap(),
    };
    let both = Filters {
        exclude: parse_exclude(Some("item-000011,item-000048,item-000085")).unwrap(),
        category: parse_category(Some("tech")).unwrap(),
    };
    let mut group = c.benchmark_group("edge_cache_hit");
    group.bench_function("unfiltered n=5", |b| {
        b.iter(|| answer(black_box(&bytes), 5, &none))
    });
    group.bench_function("category n=5", |b| {
        b.iter(|| answer(black_box(&bytes), 5, &category))
    });
    group.bench_function("category+exclude(3) n=5", |b| {
        b.iter(|| answer(black_box(&bytes), 5, &both))
    });
    group.finish();
    // The filter step alone, on a parsed document (the isolate's hot cache holds one).
    let doc = contract::parse_doc(&bytes).unwrap();
    let mut group = c.benchmark_group("filter_step");
    group.bench_function("unfiltered n=5", |b| {
        b.iter(|| {
            let mut items = doc.items.clone();
            black_box(none.apply(&mut items, 5))
        })
    });
    group.bench_function("category n=5", |b| {
        b.iter(|| {
            let mut items = doc.items.clone();
            black_box(category.apply(&mut items, 5))
        })
    });
    group.finish();
}

criterion_group!(benches, filters);
criterion_main!(benches);
