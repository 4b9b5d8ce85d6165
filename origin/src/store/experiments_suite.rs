//! The experiments suite: what every [`Store`] backend must do with a tenant's A/B
//! experiments (start with one running at most, list, end with a promotion) and their
//! per-user tallies, written once against the interface and run on SQLite and
//! PostgreSQL by [`experiments_suite!`].

use std::sync::Arc;

use contract::{ItemId, Region, UserId};

use super::*;
use crate::events::EventType;
use crate::experiments::{self, NewExperiment, Status, Variant};

fn experiment(name: &str, started_at: i64) -> Experiment {
    NewExperiment {
        name: name.into(),
        variants: vec![
            Variant {
                name: "control".into(),
                model: "hybrid".into(),
                share: 50,
            },
            Variant {
                name: "ease".into(),
                model: r#"{"kind":"ease","lambda":400}"#.into(),
                share: 30,
            },
            Variant {
                name: "pop".into(),
                model: "popularity".into(),
                share: 20,
            },
        ],
    }
    .start(started_at)
    .unwrap()
}

fn event(user: &str, item: &str, kind: EventType, ts: i64) -> Event {
    Event {
        user_id: UserId::parse(user).unwrap(),
        item_id: ItemId::parse(item).unwrap(),
        kind,
        value: None,
        timestamp: ts,
        context: None,
        source: None,
        region: Some(Region::parse("europe").unwrap()),
        event_id: None,
    }
}

pub(super) async fn an_experiment_round_trips_and_at_most_one_runs(store: SharedStore) {
    assert!(store.experiments().await.unwrap().is_empty());
    assert_eq!(store.running_experiment().await.unwrap(), None);
    let first = experiment("first", 1_000);
    assert_eq!(
        store.start_experiment(&first).await.unwrap(),
        StartOutcome::Started
    );
    assert_eq!(store.experiments().await.unwrap(), vec![first.clone()]);
    assert_eq!(
        store.running_experiment().await.unwrap(),
        Some(first.clone())
    );
    // Another while it runs, and the same name again: refused, nothing stored.
    assert_eq!(
        store
            .start_experiment(&experiment("second", 1_100))
            .await
            .unwrap(),
        StartOutcome::Running("first".into())
    );
    assert_eq!(
        store
            .start_experiment(&experiment("first", 1_100))
            .await
            .unwrap(),
        StartOutcome::NameTaken
    );
    assert_eq!(store.experiments().await.unwrap().len(), 1);
    // Ending: once, never before it started, with the promoted variant.
    assert!(!store.end_experiment("nope", 1_200, "ease").await.unwrap());
    assert!(store.end_experiment("first", 900, "ease").await.unwrap());
    assert!(!store.end_experiment("first", 1_300, "pop").await.unwrap());
    let ended = store.experiments().await.unwrap().remove(0);
    assert_eq!(ended.status(), Status::Ended);
    assert_eq!(ended.ended_at, Some(1_000));
    assert_eq!(ended.promoted.as_deref(), Some("ease"));
    assert_eq!(ended.variants, first.variants);
    assert_eq!(store.running_experiment().await.unwrap(), None);
    // Then another may run; an ended one's name stays taken.
    assert_eq!(
        store
            .start_experiment(&experiment("second", 1_400))
            .await
            .unwrap(),
        StartOutcome::Started
    );
    assert_eq!(
        store
            .start_experiment(&experiment("first", 1_500))
            .await
            .unwrap(),
        StartOutcome::NameTaken
    );
    let names: Vec<String> = store
        .experiments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["first", "second"]);
}

/// Per-variant counts from the store's per-user tallies add up to the funnel's totals
/// over the same time, clicks on items never shown and events outside the time left
/// out of both.
pub(super) async fn per_variant_results_add_up_to_the_funnels_totals(store: SharedStore) {
    let now = 1_764_000_000;
    let e = experiment("totals", now - 3_600);
    let mut events = Vec::new();
    for u in 0..60 {
        let user = format!("u{u}");
        for i in 0..(1 + u % 4) {
            events.push(event(
                &user,
                &format!("i{i}"),
                EventType::RecommendationViewed,
                now - 600,
            ));
        }
        if u % 3 == 0 {
            events.push(event(&user, "i0", EventType::Click, now - 500));
        }
        if u % 7 == 0 {
            events.push(event(&user, "i0", EventType::Purchase, now - 400));
        }
        // Not counted: a click on an item never shown, events before the start.
        events.push(event(&user, "never-shown", EventType::Click, now - 300));
        events.push(event(
            &user,
            "i0",
            EventType::RecommendationViewed,
            now - 7_200,
        ));
    }
    store.append(events, None).await.unwrap();
    let (since, until) = experiments::results::period(&e, now);
    let tallies = store.experiment_tallies(since, until).await.unwrap();
    assert_eq!(tallies.len(), 60);
    let results = experiments::results::results(&e, &tallies, since, until);
    let funnel = store
        .recommendation_analytics("1h".into(), (until - since) as u64, until)
        .await
        .unwrap()
        .total;
    let sum =
        |f: fn(&experiments::VariantResult) -> u64| results.results.iter().map(f).sum::<u64>();
    assert_eq!(funnel.impressions, 150);
    assert_eq!(sum(|v| v.impressions), funnel.impressions);
    assert_eq!(sum(|v| v.clicks), funnel.clicks);
    assert_eq!(funnel.clicks, 20);
    assert_eq!(sum(|v| v.conversions), funnel.conversions);
    assert_eq!(funnel.conversions, 9);
    assert_eq!(sum(|v| v.users), 60);
    assert_eq!(results.total.impressions, funnel.impressions);
    assert!(results.results.iter().all(|v| v.users > 0));
}

/// Runs every check of the suite against the backend `$open` gives (see
/// `store/suite.rs`'s `store_suite!`).
macro_rules! experiments_suite {
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
            check!(an_experiment_round_trips_and_at_most_one_runs);
            check!(per_variant_results_add_up_to_the_funnels_totals);
        }
    };
}

async fn sqlite_store() -> Option<(tempfile::TempDir, SharedStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("experiments.sqlite"), 100).unwrap();
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

experiments_suite!(on_sqlite, sqlite_store);
experiments_suite!(on_postgres, postgres_store);

/// One PostgreSQL database, two tenants: each has its own running experiment and
/// neither sees the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_one_postgres_database_run_experiments_of_their_own() {
    let Some(server) = postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let shop = PostgresStore::connect(&url, "shop", 10).await.unwrap();
    let other = PostgresStore::connect(&url, "other", 10).await.unwrap();
    let e = experiment("same-name", 10);
    assert_eq!(
        shop.start_experiment(&e).await.unwrap(),
        StartOutcome::Started
    );
    assert_eq!(
        other.start_experiment(&e).await.unwrap(),
        StartOutcome::Started
    );
    assert!(shop.end_experiment("same-name", 20, "pop").await.unwrap());
    assert_eq!(other.running_experiment().await.unwrap(), Some(e));
}
