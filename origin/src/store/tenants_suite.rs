//! The tenant registry suite: what every backend's [`TenantRegistry`] must do, written
//! once against [`Tenants`] (the operations every route and command uses) and run on
//! each backend by [`tenants_suite!`].

use std::sync::Arc;

use contract::Tenant as TenantId;

use super::*;
use crate::tenants::{
    KeyKind, ModelSetting, NewTenant, Quotas, SharedRegistry, TenantError, Tenants, Verified,
};

const NOW: i64 = 1_764_000_000;

fn new_tenant(id: &str, name: &str) -> NewTenant {
    NewTenant::parse(id, Some(name), Quotas::default()).unwrap()
}

fn id(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub(super) async fn a_created_tenant_is_listed_and_shown_with_its_quotas(registry: SharedRegistry) {
    let tenants = Tenants::new(registry);
    let quotas = Quotas {
        requests_per_second: 7,
        events_per_day: 70,
        max_users: 700,
        max_items: 7_000,
    };
    let created = tenants
        .create(
            NewTenant::parse("books", Some("Bücher & Co."), quotas).unwrap(),
            NOW,
        )
        .await
        .unwrap();
    tenants
        .create(new_tenant("apparel", "Apparel"), NOW + 1)
        .await
        .unwrap();
    let listed = tenants.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["apparel", "books"], "by id");
    assert_eq!(listed[1], created.tenant);
    let shown = tenants.show(&id("books"), NOW).await.unwrap();
    assert_eq!(shown.tenant.name.as_str(), "Bücher & Co.");
    assert_eq!(shown.tenant.quotas, quotas);
    assert_eq!(shown.tenant.created_at, NOW);
    let kinds: Vec<KeyKind> = shown.keys.iter().map(|k| k.kind).collect();
    assert_eq!(kinds, [KeyKind::Client, KeyKind::Server]);
    assert!(created.client_key.expose().starts_with(&shown.keys[0].hint));
    assert!(created.server_key.expose().starts_with(&shown.keys[1].hint));
    assert!(matches!(
        tenants.show(&id("nobody"), NOW).await,
        Err(TenantError::NotFound(_))
    ));
}

pub(super) async fn a_duplicate_id_is_refused_and_changes_nothing(registry: SharedRegistry) {
    let tenants = Tenants::new(registry);
    let first = tenants
        .create(new_tenant("shop", "First"), NOW)
        .await
        .unwrap();
    let again = tenants.create(new_tenant("shop", "Second"), NOW + 5).await;
    assert!(matches!(again, Err(TenantError::Exists(ref t)) if t.as_str() == "shop"));
    let shown = tenants.show(&id("shop"), NOW).await.unwrap();
    assert_eq!(shown.tenant.name.as_str(), "First");
    assert_eq!(shown.keys.len(), 2, "no keys of the refused tenant");
    let verified = tenants
        .verify(first.server_key.expose(), NOW)
        .await
        .unwrap();
    assert!(verified.is_some());
}

pub(super) async fn keys_verify_to_their_tenant_and_kind_only(registry: SharedRegistry) {
    let tenants = Tenants::new(registry);
    let a = tenants.create(new_tenant("a", "A"), NOW).await.unwrap();
    let b = tenants.create(new_tenant("b", "B"), NOW).await.unwrap();
    let check = |key: String, tenant: &str, kind: KeyKind| {
        let tenants = tenants.clone();
        let want = Verified {
            tenant: id(tenant),
            kind,
        };
        async move {
            assert_eq!(tenants.verify(&key, NOW + 10).await.unwrap(), Some(want));
        }
    };
    check(a.client_key.expose().into(), "a", KeyKind::Client).await;
    check(a.server_key.expose().into(), "a", KeyKind::Server).await;
    check(b.client_key.expose().into(), "b", KeyKind::Client).await;
    check(b.server_key.expose().into(), "b", KeyKind::Server).await;
    let client_digits_as_server = format!("sk_{}", &a.client_key.expose()[3..]);
    let unknown = format!("pk_{}", "0".repeat(64));
    for bad in [
        "",
        "pk_",
        client_digits_as_server.as_str(),
        unknown.as_str(),
        &a.client_key.expose().to_uppercase(),
    ] {
        assert_eq!(tenants.verify(bad, NOW).await.unwrap(), None, "{bad:?}");
    }
}

pub(super) async fn a_rotated_key_overlaps_then_only_the_new_one_works(registry: SharedRegistry) {
    let tenants = Tenants::new(registry);
    let created = tenants
        .create(new_tenant("news", "News"), NOW)
        .await
        .unwrap();
    let old = created.server_key.expose().to_owned();
    let rotated = tenants
        .rotate_key(&id("news"), KeyKind::Server, NOW + 100, 3_600)
        .await
        .unwrap();
    assert_eq!(rotated.previous_valid_until, NOW + 3_700);
    let new = rotated.key.expose().to_owned();
    assert!(new.starts_with("sk_") && new != old);
    for (key, at, valid) in [
        (&old, NOW + 100, true),
        (&old, NOW + 3_699, true),
        (&old, NOW + 3_700, false),
        (&new, NOW + 100, true),
        (&new, NOW + 1_000_000, true),
    ] {
        assert_eq!(
            tenants.verify(key, at).await.unwrap().is_some(),
            valid,
            "{key} at {at}"
        );
    }
    // The client key is untouched by a server key rotation.
    assert!(tenants
        .verify(created.client_key.expose(), NOW + 1_000_000)
        .await
        .unwrap()
        .is_some());
    let shown = tenants.show(&id("news"), NOW + 200).await.unwrap();
    let servers: Vec<Option<i64>> = shown
        .keys
        .iter()
        .filter(|k| k.kind == KeyKind::Server)
        .map(|k| k.expires_at)
        .collect();
    assert_eq!(servers, [None, Some(NOW + 3_700)], "current key first");
    // A second rotation within the overlap keeps the first deadline for the oldest key
    // and drops keys already expired.
    let third = tenants
        .rotate_key(&id("news"), KeyKind::Server, NOW + 5_000, 0)
        .await
        .unwrap();
    assert!(tenants.verify(&new, NOW + 5_000).await.unwrap().is_none());
    assert!(tenants
        .verify(third.key.expose(), NOW + 5_000)
        .await
        .unwrap()
        .is_some());
    let shown = tenants.show(&id("news"), NOW + 5_000).await.unwrap();
    assert_eq!(
        shown
            .keys
            .iter()
            .filter(|k| k.kind == KeyKind::Server)
            .count(),
        1
    );
    assert!(matches!(
        tenants
            .rotate_key(&id("nobody"), KeyKind::Client, NOW, 60)
            .await,
        Err(TenantError::NotFound(_))
    ));
    assert!(matches!(
        tenants
            .rotate_key(&id("news"), KeyKind::Client, NOW, 31 * 86_400)
            .await,
        Err(TenantError::InvalidOverlap(_))
    ));
}

pub(super) async fn a_deleted_tenant_and_its_keys_are_gone_and_others_stay(
    registry: SharedRegistry,
) {
    let tenants = Tenants::new(registry);
    let gone = tenants
        .create(new_tenant("gone", "Gone"), NOW)
        .await
        .unwrap();
    let kept = tenants
        .create(new_tenant("kept", "Kept"), NOW)
        .await
        .unwrap();
    tenants
        .rotate_key(&id("gone"), KeyKind::Client, NOW, 60)
        .await
        .unwrap();
    let report = tenants.delete(&id("gone")).await.unwrap();
    assert_eq!(report.tenant.as_str(), "gone");
    assert_eq!(report.rows("tenants"), 1);
    assert_eq!(report.rows("tenant_keys"), 3);
    assert_eq!(
        report.removed.last().map(|r| r.table.as_str()),
        Some("tenants"),
        "the registry row last"
    );
    assert!(tenants
        .verify(gone.server_key.expose(), NOW)
        .await
        .unwrap()
        .is_none());
    assert!(tenants
        .verify(kept.server_key.expose(), NOW)
        .await
        .unwrap()
        .is_some());
    let ids: Vec<String> = tenants
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id.to_string())
        .collect();
    assert_eq!(ids, ["kept"]);
    assert!(matches!(
        tenants.delete(&id("gone")).await,
        Err(TenantError::NotFound(_))
    ));
    // The id may be registered again, with new keys.
    let again = tenants
        .create(new_tenant("gone", "Back"), NOW + 1)
        .await
        .unwrap();
    assert_ne!(again.server_key, gone.server_key);
}

pub(super) async fn a_tenants_model_is_kept_changed_and_cleared(registry: SharedRegistry) {
    let tenants = Tenants::new(registry);
    let mut new = new_tenant("modelled", "Modelled");
    new.model = Some(ModelSetting::parse("ease").unwrap());
    tenants.create(new, NOW).await.unwrap();
    tenants
        .create(new_tenant("plain", "Plain"), NOW)
        .await
        .unwrap();
    let model = |t: &str| {
        let tenants = tenants.clone();
        let t = id(t);
        async move {
            let view = tenants.show(&t, NOW).await.unwrap();
            view.tenant.model.map(|m| m.as_str().to_owned())
        }
    };
    assert_eq!(model("modelled").await.as_deref(), Some("ease"));
    assert_eq!(model("plain").await, None);
    let spec = ModelSetting::parse(r#"{"kind":"ease","lambda":400}"#).unwrap();
    tenants.set_model(&id("plain"), Some(&spec)).await.unwrap();
    assert_eq!(model("plain").await.as_deref(), Some(spec.as_str()));
    tenants.set_model(&id("modelled"), None).await.unwrap();
    assert_eq!(model("modelled").await, None);
    assert!(matches!(
        tenants.set_model(&id("nobody"), None).await,
        Err(TenantError::NotFound(_))
    ));
    assert!(ModelSetting::parse("no-such-model").is_err());
    assert!(ModelSetting::parse(&"x".repeat(2000)).is_err());
}

/// Runs every check of the suite against the registry `$open` gives: an async
/// function returning `Some((guard, SharedRegistry))`, or `None` when the backend
/// cannot run here (it said why; never in CI).
macro_rules! tenants_suite {
    ($backend:ident, $open:ident) => {
        mod $backend {
            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((_guard, registry)) = super::$open().await else {
                            return;
                        };
                        super::$name(registry).await;
                    }
                };
            }
            check!(a_created_tenant_is_listed_and_shown_with_its_quotas);
            check!(a_duplicate_id_is_refused_and_changes_nothing);
            check!(keys_verify_to_their_tenant_and_kind_only);
            check!(a_rotated_key_overlaps_then_only_the_new_one_works);
            check!(a_deleted_tenant_and_its_keys_are_gone_and_others_stay);
            check!(a_tenants_model_is_kept_changed_and_cleared);
        }
    };
}

async fn sqlite_registry() -> Option<(tempfile::TempDir, SharedRegistry)> {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::parse(&dir.path().join("tenants.sqlite").to_string_lossy()).unwrap();
    let registry = open_tenants(&location).await.unwrap();
    Some((dir, registry))
}

/// A new database on the test binary's shared PostgreSQL server, opened through
/// `--db`'s parser and [`open_tenants`].
async fn postgres_registry() -> Option<((), SharedRegistry)> {
    let server = postgres::test_server::shared()?;
    let url = server.database().await;
    let location = Location::parse(&url).unwrap();
    let registry = open_tenants(&location)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    Some(((), registry))
}

tenants_suite!(on_sqlite, sqlite_registry);
tenants_suite!(on_postgres, postgres_registry);

/// Deleting a tenant from PostgreSQL removes its rows from every table with a tenant
/// column (events, catalogue, projections…) and leaves another tenant's rows alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_postgres_tenant_removes_its_data_rows_and_no_others() {
    let Some(server) = postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let location = Location::parse(&url).unwrap();
    let tenants = Tenants::new(open_tenants(&location).await.unwrap());
    for t in ["gone", "kept"] {
        tenants.create(new_tenant(t, t), NOW).await.unwrap();
        let store = open(&location, t, 10).await.unwrap();
        store
            .import(Batch {
                items: vec![ItemRow {
                    item_id: "i1".into(),
                    ..Default::default()
                }],
                users: Vec::new(),
                interactions: vec![InteractionRow {
                    user_id: "u1".into(),
                    item_id: "i1".into(),
                    weight: 1.0,
                    ts: NOW,
                }],
            })
            .await
            .unwrap();
        let event = crate::events::Event {
            user_id: contract::UserId::parse("u2").unwrap(),
            item_id: contract::ItemId::parse("i1").unwrap(),
            kind: crate::events::EventType::Purchase,
            value: None,
            timestamp: NOW,
            context: None,
            source: None,
            region: None,
            event_id: Some(contract::EventId::parse("e1").unwrap()),
        };
        store.append(vec![event], Some("c".into())).await.unwrap();
    }
    let report = tenants.delete(&id("gone")).await.unwrap();
    assert_eq!(report.kept, None);
    assert_eq!(report.rows("events"), 1);
    assert_eq!(report.rows("event_ids"), 1);
    assert_eq!(report.rows("users"), 2);
    assert_eq!(report.rows("items"), 1);
    assert_eq!(report.rows("interactions"), 2);
    assert!(report.rows("proj_user_history") >= 1);
    assert_eq!(report.rows("tenant_keys"), 2);
    assert!(
        report.removed.iter().all(|r| {
            let partition = r.table.starts_with("events_")
                || r.table
                    .rsplit_once("_p")
                    .is_some_and(|(_, k)| k.parse::<u32>().is_ok());
            !partition
        }),
        "partitioned tables as a whole: {report:?}"
    );
    let gone = open(&location, "gone", 10).await.unwrap();
    assert_eq!(gone.counts().await.unwrap(), Counts::default());
    assert!(gone.projections().await.unwrap().user_history.is_empty());
    let kept = open(&location, "kept", 10).await.unwrap();
    assert_eq!(
        kept.counts().await.unwrap(),
        Counts {
            users: 2,
            items: 1,
            interactions: 2
        }
    );
}

/// A SQLite file holds one tenant's data: deleting a tenant there removes its registry
/// rows only, says so, and leaves the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_sqlite_tenant_removes_its_registry_rows_and_says_what_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.sqlite");
    let store = SqliteStore::open(&path, 10).unwrap();
    store
        .import(Batch {
            interactions: vec![InteractionRow {
                user_id: "u1".into(),
                item_id: "i1".into(),
                weight: 1.0,
                ts: NOW,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let tenants = Tenants::new(Arc::new(sqlite::SqliteTenants::open(&path).unwrap()));
    tenants
        .create(new_tenant("default", "Default"), NOW)
        .await
        .unwrap();
    let report = tenants.delete(&id("default")).await.unwrap();
    assert_eq!(report.rows("tenants"), 1);
    assert_eq!(report.rows("tenant_keys"), 2);
    assert_eq!(report.removed.len(), 2);
    assert!(report.kept.as_deref().unwrap().contains("no tenant column"));
    assert_eq!(store.counts().await.unwrap().interactions, 1);
}
