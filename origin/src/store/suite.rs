//! The store test suite: what every [`Store`] backend must do, written once against
//! the interface and run for each backend by [`store_suite!`].

use std::sync::Arc;

use contract::events::EdgeReport;
use contract::{EventId, ItemId, Region, UserId};

use super::*;
use crate::events::EventType;

fn event(user: &str, item: &str, kind: EventType, ts: i64) -> Event {
    Event {
        user_id: UserId::parse(user).unwrap(),
        item_id: ItemId::parse(item).unwrap(),
        kind,
        value: (kind == EventType::Rating).then_some(4.0),
        timestamp: ts,
        context: None,
        source: Some("kv".into()),
        region: Some(Region::parse("europe").unwrap()),
        event_id: None,
    }
}

fn with_id(mut e: Event, id: &str) -> Event {
    e.event_id = Some(EventId::parse(id).unwrap());
    e
}

pub(super) async fn appends_are_acknowledged_with_ranges_that_read_back(store: SharedStore) {
    let first = store
        .append(
            vec![
                event("u1", "i1", EventType::View, 100),
                event("u1", "i2", EventType::Purchase, 101),
            ],
            Some("c1".into()),
        )
        .await
        .unwrap();
    let second = store
        .append(vec![event("u2", "i1", EventType::Click, 102)], None)
        .await
        .unwrap();
    assert_eq!(first.last_seq - first.first_seq, 1);
    assert!(second.first_seq > first.last_seq, "{first:?} {second:?}");
    assert_eq!(first.duplicates + second.duplicates, 0);
    let logged = store
        .read_events(first.first_seq, second.last_seq)
        .await
        .unwrap();
    assert_eq!(logged.len(), 3);
    assert_eq!(logged[0].1, event("u1", "i1", EventType::View, 100));
    assert_eq!(logged[2].1, event("u2", "i1", EventType::Click, 102));
    assert!(store.write_health().writable);
}

pub(super) async fn concurrent_appends_get_disjoint_ranges(store: SharedStore) {
    let tasks: Vec<_> = (0..20)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let events = (0..5)
                    .map(|k| event(&format!("u{t}"), &format!("i{k}"), EventType::View, 1))
                    .collect();
                store.append(events, None).await.unwrap()
            })
        })
        .collect();
    let mut ranges = Vec::new();
    for t in tasks {
        ranges.push(t.await.unwrap());
    }
    ranges.sort_by_key(|r| r.first_seq);
    for pair in ranges.windows(2) {
        assert!(pair[0].last_seq < pair[1].first_seq, "{pair:?}");
    }
    assert!(ranges.iter().all(|r| r.last_seq - r.first_seq == 4));
    assert_eq!(store.counts().await.unwrap().interactions, 100);
}

pub(super) async fn an_event_id_already_stored_is_acknowledged_once(store: SharedStore) {
    let e = with_id(event("u1", "i1", EventType::Purchase, 5), "e-1");
    let first = store.append(vec![e.clone()], None).await.unwrap();
    let again = store
        .append(
            vec![e, with_id(event("u1", "i2", EventType::View, 6), "e-2")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(first.duplicates, 0);
    assert_eq!(again.duplicates, 1);
    assert_eq!(again.first_seq, first.first_seq, "the stored event's seq");
    let history = store
        .user_history(&UserId::parse("u1").unwrap())
        .await
        .unwrap();
    assert_eq!(history, vec![("i1".into(), 5.0), ("i2".into(), 1.0)]);
}

pub(super) async fn history_sums_weights_and_skips_impressions(store: SharedStore) {
    store
        .import(Batch {
            interactions: vec![InteractionRow {
                user_id: "u1".into(),
                item_id: "i9".into(),
                weight: 2.5,
                ts: 1,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .append(
            vec![
                event("u1", "i1", EventType::View, 10),
                event("u1", "i1", EventType::Click, 11),
                event("u1", "i2", EventType::RecommendationViewed, 12),
                event("u1", "i3", EventType::Rating, 13),
            ],
            None,
        )
        .await
        .unwrap();
    let history = store
        .user_history(&UserId::parse("u1").unwrap())
        .await
        .unwrap();
    assert_eq!(
        history,
        vec![("i1".into(), 3.0), ("i3".into(), 4.0), ("i9".into(), 2.5)]
    );
    let none = store
        .user_history(&UserId::parse("nobody").unwrap())
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// What a tenant's `events_per_day` counts: events received since a time, impressions
/// left out.
pub(super) async fn events_received_since_counts_all_but_impressions(store: SharedStore) {
    let before = crate::store::postgres::event_log::now_ms();
    store
        .append(
            vec![
                event("u1", "i1", EventType::View, 10),
                event("u2", "i1", EventType::RecommendationViewed, 11),
                event("u3", "i2", EventType::Purchase, 12),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.events_received_since(before - 1000).await.unwrap(), 2);
    let later = crate::store::postgres::event_log::now_ms() + 60_000;
    assert_eq!(store.events_received_since(later).await.unwrap(), 0);
    // The users and items those events made are known; others are not.
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        store
            .known(
                &ids(&["u1", "u3", "nobody"]),
                &ids(&["i1", "i2", "i9", "nothing"])
            )
            .await
            .unwrap(),
        (2, 2)
    );
    assert_eq!(store.known(&[], &[]).await.unwrap(), (0, 0));
}

pub(super) async fn a_replay_rebuilds_exactly_the_live_projections(store: SharedStore) {
    let mut events = Vec::new();
    for u in 0..12 {
        for k in 0..6 {
            let kind = [
                EventType::View,
                EventType::Click,
                EventType::AddToCart,
                EventType::Purchase,
                EventType::RecommendationViewed,
                EventType::Rating,
            ][(u + k) % 6];
            events.push(event(
                &format!("u{u}"),
                &format!("i{}", (u * 7 + k * 3) % 10),
                kind,
                1_000 + (u * 10 + k) as i64 * 600,
            ));
        }
    }
    for chunk in events.chunks(7) {
        store
            .append(chunk.to_vec(), Some("client-a".into()))
            .await
            .unwrap();
    }
    let live = store.projections().await.unwrap();
    assert!(!live.user_history.is_empty() && !live.cooccurrence.is_empty());
    assert_eq!(
        live.training.len(),
        60,
        "one training row per interaction, none for impressions"
    );
    let report = store.replay().await.unwrap();
    assert_eq!(report.events, 72);
    assert_eq!(report.interactions, 60);
    let rebuilt = store.projections().await.unwrap();
    assert_eq!(rebuilt, live);
}

pub(super) async fn the_training_set_numbers_ids_in_order_with_imported_and_live_rows(
    store: SharedStore,
) {
    store
        .import(Batch {
            items: vec![ItemRow {
                item_id: "b".into(),
                title: "Bee".into(),
                categories: vec!["c1".into()],
                tags: vec!["t".into()],
                created_at: 3,
                ..Default::default()
            }],
            users: vec![UserRow {
                user_id: "zed".into(),
                country: Some("DE".into()),
                segment: None,
            }],
            interactions: vec![InteractionRow {
                user_id: "zed".into(),
                item_id: "b".into(),
                weight: 1.0,
                ts: 1,
            }],
        })
        .await
        .unwrap();
    store
        .append(vec![event("amy", "a", EventType::Purchase, 2)], None)
        .await
        .unwrap();
    let set = store.training_set().await.unwrap();
    assert_eq!(
        set.counts,
        Counts {
            users: 2,
            items: 2,
            interactions: 2
        }
    );
    assert_eq!(set.maps.user_ids, ["amy", "zed"]);
    assert_eq!(set.maps.item_ids, ["a", "b"]);
    assert_eq!(set.maps.user_country, [None, Some("DE".into())]);
    assert_eq!(set.maps.item_from_events, [true, false]);
    assert_eq!(set.data.item_text[1].title, "Bee");
    let mut pairs: Vec<(u32, u32, f32)> = set
        .data
        .interactions
        .iter()
        .map(|i| (i.user, i.item, i.weight))
        .collect();
    pairs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(pairs, [(0, 0, 5.0), (1, 1, 1.0)]);
}

pub(super) async fn analytics_count_the_funnel_and_edge_reports(store: SharedStore) {
    let now = 1_764_000_000;
    store
        .append(
            vec![
                event("u1", "i1", EventType::RecommendationViewed, now - 30),
                event("u1", "i2", EventType::RecommendationViewed, now - 30),
                event("u1", "i1", EventType::Click, now - 20),
                // A click on an item the user was never shown does not count.
                event("u1", "i7", EventType::Click, now - 20),
                event("u1", "i1", EventType::Purchase, now - 10),
            ],
            None,
        )
        .await
        .unwrap();
    let report = store
        .recommendation_analytics("1h".into(), 3600, now)
        .await
        .unwrap();
    assert_eq!(report.total.impressions, 2);
    assert_eq!(report.total.clicks, 1);
    assert_eq!(report.total.conversions, 1);
    assert!((report.total.ctr - 0.5).abs() < 1e-9);
    assert_eq!(report.by_region["europe"].impressions, 2);
    let timeline = store.timeline("1h".into(), 3600, 600, now).await.unwrap();
    let impressions: u64 = timeline.points.iter().map(|p| p.funnel.impressions).sum();
    assert_eq!(impressions, 2);
    let now_ms = now * 1000;
    store
        .record_edge_report(
            EdgeReport {
                requests: 10,
                hits: 8,
                region: Some("europe".into()),
            },
            now_ms,
        )
        .await
        .unwrap();
    let counts = store.real_time_counts(now_ms).await.unwrap();
    assert_eq!(counts.edge_cache.requests, 10);
    assert_eq!(counts.edge_cache.hits, 8);
    assert_eq!(counts.edge_cache_by_region["europe"].hits, 8);
}

pub(super) async fn a_load_replaces_the_catalogue_keeps_the_log_and_fails_when_cut(
    store: SharedStore,
) {
    let row = |u: &str, i: &str| InteractionRow {
        user_id: u.into(),
        item_id: i.into(),
        weight: 2.0,
        ts: 9,
    };
    store
        .import(Batch {
            interactions: vec![row("old", "gone")],
            ..Default::default()
        })
        .await
        .unwrap();
    let logged = store
        .append(vec![event("u1", "i1", EventType::View, 100)], None)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for batch in [
        Batch {
            items: vec![ItemRow {
                item_id: "i1".into(),
                title: "One".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        Batch {
            users: vec![UserRow {
                user_id: "u2".into(),
                country: Some("JP".into()),
                segment: None,
            }],
            interactions: vec![row("u2", "i1"), row("u3", "i2")],
            ..Default::default()
        },
    ] {
        tx.send(Load::Batch(batch)).await.unwrap();
    }
    tx.send(Load::End).await.unwrap();
    store
        .replace_content(vec![("demo_seed".into(), "1".into())], rx)
        .await
        .unwrap();
    let set = store.training_set().await.unwrap();
    assert_eq!(set.maps.user_ids, ["u2", "u3"], "the old catalogue is gone");
    assert_eq!(set.maps.item_ids, ["i1", "i2"]);
    assert_eq!(set.maps.user_country[0].as_deref(), Some("JP"));
    assert_eq!(set.data.item_text[0].title, "One");
    assert_eq!(set.data.interactions.len(), 2);
    let kept = store
        .read_events(logged.first_seq, logged.last_seq)
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "the event log stays");

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Load::Batch(Batch::default())).await.unwrap();
    drop(tx);
    assert!(
        store.replace_content(Vec::new(), rx).await.is_err(),
        "a load without its end fails"
    );
}

/// Runs every check of the suite against the backend `$open` gives: an async
/// function returning `Some((guard, SharedStore))`, the guard holding what the store
/// needs, or `None` when the backend cannot run here (it said why; never in CI).
macro_rules! store_suite {
    ($backend:ident, $open:ident) => {
        mod $backend {
            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((_guard, store)) = super::$open().await else {
                            return;
                        };
                        super::$name(store).await;
                    }
                };
            }
            check!(appends_are_acknowledged_with_ranges_that_read_back);
            check!(concurrent_appends_get_disjoint_ranges);
            check!(an_event_id_already_stored_is_acknowledged_once);
            check!(history_sums_weights_and_skips_impressions);
            check!(events_received_since_counts_all_but_impressions);
            check!(a_replay_rebuilds_exactly_the_live_projections);
            check!(the_training_set_numbers_ids_in_order_with_imported_and_live_rows);
            check!(analytics_count_the_funnel_and_edge_reports);
            check!(a_load_replaces_the_catalogue_keeps_the_log_and_fails_when_cut);
        }
    };
}

async fn sqlite_store() -> Option<(tempfile::TempDir, SharedStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("suite.sqlite"), 100).unwrap();
    Some((dir, Arc::new(store)))
}

/// A new database on the test binary's shared PostgreSQL server (see
/// `postgres::test_server`), opened through `--db`'s parser and [`open`].
async fn postgres_store() -> Option<((), SharedStore)> {
    let server = postgres::test_server::shared()?;
    let url = server.database().await;
    let location = Location::parse(&url).unwrap();
    let store = open(&location, contract::DEFAULT_TENANT, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    Some(((), store))
}

store_suite!(on_sqlite, sqlite_store);
store_suite!(on_postgres, postgres_store);
