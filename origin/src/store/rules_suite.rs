//! The rules suite: what every [`Store`] backend must do with a tenant's business rules
//! (stored, read back, versioned) and the impressions fatigue counts, written once
//! against the interface and run on SQLite and PostgreSQL by [`rules_suite!`].

use std::sync::Arc;

use contract::{ItemId, Region, UserId};

use super::*;
use crate::events::EventType;
use crate::rules::Fatigue;

/// "Now" of the fatigue checks (2027-01-15).
const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn event(user: &str, item: &str, kind: EventType, ts: i64) -> Event {
    Event {
        user_id: UserId::parse(user).unwrap(),
        item_id: ItemId::parse(item).unwrap(),
        kind,
        value: None,
        timestamp: ts,
        context: None,
        source: Some("kv".into()),
        region: Some(Region::parse("europe").unwrap()),
        event_id: None,
    }
}

fn shown(user: &str, item: &str, ts: i64) -> Event {
    event(user, item, EventType::RecommendationViewed, ts)
}

pub(super) async fn rules_read_back_and_each_change_is_one_version_up(store: SharedStore) {
    assert_eq!(store.rules().await.unwrap(), None);
    let first = r#"{"hide_items":["i1"],"max_per_category":2}"#.to_string();
    let stored = store.put_rules(first.clone(), 100).await.unwrap();
    assert_eq!((stored.version, stored.updated_at), (1, 100));
    assert_eq!(store.rules().await.unwrap(), Some(stored));
    let second = r#"{"pin":{"i2":1}}"#.to_string();
    let stored = store.put_rules(second.clone(), 200).await.unwrap();
    assert_eq!(stored.version, 2);
    let read = store.rules().await.unwrap().unwrap();
    assert_eq!((read.json, read.version, read.updated_at), (second, 2, 200));
}

pub(super) async fn fatigue_counts_impressions_in_the_window_after_the_last_interaction(
    store: SharedStore,
) {
    let t = NOW - DAY;
    let events = vec![
        // u1/i1: three impressions, no interaction: fatigued.
        shown("u1", "i1", t),
        shown("u1", "i1", t + 1),
        shown("u1", "i1", t + 2),
        // u1/i2: three, but a click after the first: two since.
        shown("u1", "i2", t),
        event("u1", "i2", EventType::Click, t + 1),
        shown("u1", "i2", t + 2),
        shown("u1", "i2", t + 3),
        // u1/i3: two.
        shown("u1", "i3", t),
        shown("u1", "i3", t + 1),
        // u1/i5: a click long ago, then three: fatigued.
        event("u1", "i5", EventType::Click, NOW - 30 * DAY),
        shown("u1", "i5", t),
        shown("u1", "i5", t + 1),
        shown("u1", "i5", t + 2),
        // u2/i1: one of the three is older than the window.
        shown("u2", "i1", NOW - 8 * DAY),
        shown("u2", "i1", t),
        shown("u2", "i1", t + 1),
        // u2/i4: fatigued.
        shown("u2", "i4", t),
        shown("u2", "i4", t + 1),
        shown("u2", "i4", t + 2),
    ];
    store.append(events, None).await.unwrap();
    let rule = Fatigue {
        impressions: 3,
        days: 7,
    };
    let all = store.fatigued(None, rule, NOW).await.unwrap();
    assert_eq!(all.of("u1"), ["i1", "i5"]);
    assert_eq!(all.of("u2"), ["i4"]);
    assert_eq!((all.users(), all.pairs(), all.truncated), (2, 3, false));
    let one = store
        .fatigued(Some(vec![UserId::parse("u1").unwrap()]), rule, NOW)
        .await
        .unwrap();
    assert_eq!(one.of("u1"), ["i1", "i5"]);
    assert!(one.of("u2").is_empty(), "only the users asked for");
    let nobody = store
        .fatigued(Some(vec![UserId::parse("nobody").unwrap()]), rule, NOW)
        .await
        .unwrap();
    assert!(nobody.is_empty());
    // A longer window takes u2's old impression in; a larger K none of the others.
    let wider = Fatigue {
        impressions: 3,
        days: 9,
    };
    assert_eq!(
        store.fatigued(None, wider, NOW).await.unwrap().of("u2"),
        ["i1", "i4"]
    );
    let more = Fatigue {
        impressions: 4,
        days: 7,
    };
    assert!(store.fatigued(None, more, NOW).await.unwrap().is_empty());
}

/// Runs every check of the suite against the backend `$open` gives (see
/// `store/suite.rs`'s `store_suite!`).
macro_rules! rules_suite {
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
            check!(rules_read_back_and_each_change_is_one_version_up);
            check!(fatigue_counts_impressions_in_the_window_after_the_last_interaction);
        }
    };
}

async fn sqlite_store() -> Option<(tempfile::TempDir, SharedStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("rules.sqlite"), 100).unwrap();
    Some((dir, Arc::new(store)))
}

/// A new database on the test binary's shared PostgreSQL server.
async fn postgres_store() -> Option<((), SharedStore)> {
    let server = postgres::test_server::shared()?;
    let url = server.database().await;
    let store = PostgresStore::connect(&url, contract::DEFAULT_TENANT, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    Some(((), Arc::new(store)))
}

rules_suite!(on_sqlite, sqlite_store);
rules_suite!(on_postgres, postgres_store);

/// One PostgreSQL database, two tenants: each has its own rules and impressions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_one_postgres_database_never_see_each_others_rules() {
    let Some(server) = postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let shop = PostgresStore::connect(&url, "shop", 10).await.unwrap();
    let other = PostgresStore::connect(&url, "other", 10).await.unwrap();
    shop.put_rules(r#"{"hide_items":["i1"]}"#.into(), 1)
        .await
        .unwrap();
    assert_eq!(other.rules().await.unwrap(), None);
    assert_eq!(other.put_rules("{}".into(), 2).await.unwrap().version, 1);
    assert_eq!(shop.rules().await.unwrap().unwrap().version, 1);
    let t = NOW - DAY;
    shop.append((0..3).map(|i| shown("u1", "i1", t + i)).collect(), None)
        .await
        .unwrap();
    let rule = Fatigue {
        impressions: 3,
        days: 7,
    };
    assert_eq!(shop.fatigued(None, rule, NOW).await.unwrap().pairs(), 1);
    assert!(other.fatigued(None, rule, NOW).await.unwrap().is_empty());
}
