//! The catalogue suite: what every [`Store`] backend must do with items and users and
//! their attributes (upsert, read, delete), written once against the interface and run
//! on SQLite and PostgreSQL by [`catalogue_suite!`].

use std::sync::Arc;

use contract::{ItemId, Region, UserId};
use serde_json::json;

use super::*;
use crate::events::EventType;

fn item_id(s: &str) -> ItemId {
    ItemId::parse(s).unwrap()
}

fn user_id(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn full_item(id: &str) -> ItemRow {
    let attributes = json!({"colour": "blue", "sizes": [1, 2.5], "new": true})
        .as_object()
        .unwrap()
        .clone();
    ItemRow {
        item_id: id.into(),
        title: "Blue Lantern".into(),
        description: "Brass, for camping.\nTwo lines.".into(),
        categories: vec!["outdoor".into(), "lights".into()],
        tags: vec!["brass".into()],
        price: Some(19.5),
        currency: Some("EUR".into()),
        available: false,
        created_at: 1_700_000_000,
        attributes,
    }
}

fn view(user: &str, item: &str, ts: i64) -> Event {
    Event {
        user_id: user_id(user),
        item_id: item_id(item),
        kind: EventType::Purchase,
        value: None,
        timestamp: ts,
        context: None,
        source: None,
        region: Some(Region::parse("europe").unwrap()),
        event_id: None,
    }
}

pub(super) async fn items_read_back_with_every_field_and_a_later_row_replaces(store: SharedStore) {
    let bare = ItemRow {
        item_id: "bare".into(),
        ..Default::default()
    };
    store
        .upsert_items(vec![full_item("i1"), bare.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.item(&item_id("i1")).await.unwrap(),
        Some(full_item("i1"))
    );
    assert_eq!(store.item(&item_id("bare")).await.unwrap(), Some(bare));
    assert_eq!(store.item(&item_id("nope")).await.unwrap(), None);
    let replaced = ItemRow {
        title: "Red Lantern".into(),
        price: None,
        currency: None,
        available: true,
        attributes: serde_json::Map::new(),
        ..full_item("i1")
    };
    let last = ItemRow {
        title: "Green Lantern".into(),
        ..replaced.clone()
    };
    store
        .upsert_items(vec![replaced, last.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.item(&item_id("i1")).await.unwrap(),
        Some(last),
        "the later row of one batch wins, every field replaced"
    );
    assert_eq!(store.counts().await.unwrap().items, 2);
}

pub(super) async fn an_item_known_from_events_becomes_a_catalogue_item_with_its_text(
    store: SharedStore,
) {
    store
        .append(vec![view("u1", "e1", 10)], None)
        .await
        .unwrap();
    let from_events = store.item(&item_id("e1")).await.unwrap().unwrap();
    assert_eq!(
        from_events,
        ItemRow {
            item_id: "e1".into(),
            ..Default::default()
        },
        "an item known only from events has empty attributes"
    );
    let set = store.training_set().await.unwrap();
    assert_eq!(set.maps.item_from_events, [true]);
    store.upsert_items(vec![full_item("e1")]).await.unwrap();
    let set = store.training_set().await.unwrap();
    assert_eq!(set.maps.item_from_events, [false]);
    assert_eq!(
        set.data.item_text[0].description,
        full_item("e1").description
    );
    assert_eq!(set.data.item_text[0].categories, ["outdoor", "lights"]);
    assert_eq!(set.counts.interactions, 1);
}

pub(super) async fn a_deleted_item_leaves_training_and_its_interactions_stay(store: SharedStore) {
    store
        .upsert_items(vec![full_item("i1"), full_item("i2")])
        .await
        .unwrap();
    store
        .append(vec![view("u1", "i1", 10), view("u1", "i2", 11)], None)
        .await
        .unwrap();
    assert!(store.delete_item(&item_id("i1")).await.unwrap());
    assert!(
        !store.delete_item(&item_id("i1")).await.unwrap(),
        "gone already"
    );
    assert_eq!(store.item(&item_id("i1")).await.unwrap(), None);
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.items, counts.interactions), (1, 2));
    let set = store.training_set().await.unwrap();
    assert_eq!(set.maps.item_ids, ["i2"]);
    assert_eq!(
        set.data.interactions.len(),
        1,
        "i1's interaction is left out"
    );
    let history = store.user_history(&user_id("u1")).await.unwrap();
    assert_eq!(history.len(), 2, "the history keeps it");
    assert_eq!(store.read_events(0, i64::MAX).await.unwrap().len(), 2);
    // A later event brings it back, known only from events.
    store
        .append(vec![view("u2", "i1", 12)], None)
        .await
        .unwrap();
    let back = store.item(&item_id("i1")).await.unwrap().unwrap();
    assert_eq!(back.title, "");
    assert_eq!(
        store.training_set().await.unwrap().maps.item_from_events,
        [true, false]
    );
}

pub(super) async fn users_read_back_with_country_and_segment_and_are_deleted(store: SharedStore) {
    let u1 = UserRow {
        user_id: "u1".into(),
        country: Some("DE".into()),
        segment: Some("vip".into()),
    };
    let u2 = UserRow {
        user_id: "u2".into(),
        country: None,
        segment: None,
    };
    store
        .upsert_users(vec![u1.clone(), u2.clone()])
        .await
        .unwrap();
    assert_eq!(store.user(&user_id("u1")).await.unwrap(), Some(u1.clone()));
    assert_eq!(store.user(&user_id("u2")).await.unwrap(), Some(u2));
    assert_eq!(store.user(&user_id("u3")).await.unwrap(), None);
    let moved = UserRow {
        country: Some("FR".into()),
        segment: None,
        ..u1
    };
    store.upsert_users(vec![moved.clone()]).await.unwrap();
    assert_eq!(store.user(&user_id("u1")).await.unwrap(), Some(moved));
    assert_eq!(
        store.training_set().await.unwrap().maps.user_country,
        [Some("FR".into()), None]
    );
    assert!(store.delete_user(&user_id("u2")).await.unwrap());
    assert!(!store.delete_user(&user_id("u2")).await.unwrap());
    assert_eq!(store.counts().await.unwrap().users, 1);
}

pub(super) async fn an_import_writes_every_field_of_items_and_users(store: SharedStore) {
    store
        .import(Batch {
            items: vec![full_item("i1")],
            users: vec![UserRow {
                user_id: "u1".into(),
                country: Some("DE".into()),
                segment: Some("b2b".into()),
            }],
            interactions: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.item(&item_id("i1")).await.unwrap(),
        Some(full_item("i1"))
    );
    assert_eq!(
        store
            .user(&user_id("u1"))
            .await
            .unwrap()
            .unwrap()
            .segment
            .as_deref(),
        Some("b2b")
    );
}

/// Runs every check of the suite against the backend `$open` gives (see
/// `store/suite.rs`'s `store_suite!`).
macro_rules! catalogue_suite {
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
            check!(items_read_back_with_every_field_and_a_later_row_replaces);
            check!(an_item_known_from_events_becomes_a_catalogue_item_with_its_text);
            check!(a_deleted_item_leaves_training_and_its_interactions_stay);
            check!(users_read_back_with_country_and_segment_and_are_deleted);
            check!(an_import_writes_every_field_of_items_and_users);
        }
    };
}

async fn sqlite_store() -> Option<(tempfile::TempDir, SharedStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("catalogue.sqlite"), 100).unwrap();
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

catalogue_suite!(on_sqlite, sqlite_store);
catalogue_suite!(on_postgres, postgres_store);

/// One PostgreSQL database, two tenants: neither sees the other's catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_on_one_postgres_database_never_see_each_others_catalogue() {
    let Some(server) = postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let shop = PostgresStore::connect(&url, "shop", 10).await.unwrap();
    let other = PostgresStore::connect(&url, "other", 10).await.unwrap();
    shop.upsert_items(vec![full_item("i1")]).await.unwrap();
    shop.upsert_users(vec![UserRow {
        user_id: "u1".into(),
        ..Default::default()
    }])
    .await
    .unwrap();
    assert_eq!(other.item(&item_id("i1")).await.unwrap(), None);
    assert_eq!(other.user(&user_id("u1")).await.unwrap(), None);
    assert!(!other.delete_item(&item_id("i1")).await.unwrap());
    assert!(shop.item(&item_id("i1")).await.unwrap().is_some());
}
