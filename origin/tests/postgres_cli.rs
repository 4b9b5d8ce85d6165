//! The origin's commands against a real PostgreSQL (a throwaway server,
//! `origin::store::postgres::test_server`; skipped with the reason printed when
//! PostgreSQL is not installed, a failure when `CI` is set): `publish` reads the
//! PostgreSQL store (and the tenant's business rules and impressions), `import` and
//! `demo-data` write it (all or nothing).

use std::process::Command;

use origin::store::{Batch, InteractionRow, ItemRow, Location};

fn origin(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(args)
        .current_dir(dir)
        .env_remove("ADMIN_TOKEN")
        .env_remove("ORIGIN_EDGE_URL")
        .env_remove("ORIGIN_DB")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run origin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reads_a_postgres_store_into_the_cdn_folder() {
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let store = origin::store::open(&Location::parse(&url).unwrap(), "default", 1)
        .await
        .unwrap();
    let items = (0..6)
        .map(|i| ItemRow {
            item_id: format!("i{i}"),
            title: format!("Item {i}"),
            ..Default::default()
        })
        .collect();
    let interactions = (0..40)
        .map(|k| InteractionRow {
            user_id: format!("u{}", k % 8),
            item_id: format!("i{}", (k * 5) % 6),
            weight: 1.0,
            ts: 1_764_000_000 + k,
        })
        .collect();
    store
        .import(Batch {
            items,
            users: Vec::new(),
            interactions,
        })
        .await
        .unwrap();
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cdn");
    let published = origin(
        &[
            "publish",
            "--db",
            &url,
            "--out",
            &out.display().to_string(),
            "--model",
            "popularity",
        ],
        dir.path(),
    );
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let users = out.join("current/default/users");
    let documents = std::fs::read_dir(&users)
        .unwrap_or_else(|e| panic!("{}: {e}", users.display()))
        .count();
    assert_eq!(documents, 8, "one document per user");
}

/// `origin publish` reads the tenant's stored rules and every user's impressions: a
/// hidden item is in no document, a fatigued item leaves only its user's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_follows_the_stored_business_rules() {
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let store = origin::store::open(&Location::parse(&url).unwrap(), "default", 1)
        .await
        .unwrap();
    let items = (0..6)
        .map(|i| ItemRow {
            item_id: format!("i{i}"),
            ..Default::default()
        })
        .collect();
    // u1 and u3 have i1, i3 and i5; u0 and u2 have i0, i2 and i4.
    let interactions = (0..40)
        .map(|k| InteractionRow {
            user_id: format!("u{}", k % 8),
            item_id: format!("i{}", (k * 5) % 6),
            weight: 1.0,
            ts: 1_764_000_000 + k,
        })
        .collect();
    store
        .import(Batch {
            items,
            users: Vec::new(),
            interactions,
        })
        .await
        .unwrap();
    let now = origin::snapshot::now_unix() as i64;
    store
        .put_rules(
            r#"{"hide_items":["i0"],"fatigue":{"impressions":1,"days":1}}"#.into(),
            now,
        )
        .await
        .unwrap();
    let shown = origin::events::Event {
        user_id: contract::UserId::parse("u1").unwrap(),
        item_id: contract::ItemId::parse("i2").unwrap(),
        kind: origin::events::EventType::RecommendationViewed,
        value: None,
        timestamp: now - 60,
        context: None,
        source: None,
        region: None,
        event_id: None,
    };
    store.append(vec![shown], None).await.unwrap();
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cdn");
    let published = origin(
        &[
            "publish",
            "--db",
            &url,
            "--out",
            &out.display().to_string(),
            "--model",
            "popularity",
        ],
        dir.path(),
    );
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let items = |user: &str| -> Vec<String> {
        let path = out.join(format!("current/default/users/{user}.json"));
        let doc: contract::RecommendationDoc =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc.items.into_iter().map(|i| i.item_id).collect()
    };
    for user in ["u1", "u3"] {
        assert!(!items(user).contains(&"i0".to_string()), "{user}: hidden");
        assert!(
            items(user).contains(&"i4".to_string()),
            "{user}: {:?}",
            items(user)
        );
    }
    assert!(!items("u1").contains(&"i2".to_string()), "fatigued for u1");
    assert!(items("u3").contains(&"i2".to_string()), "not for u3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_writes_a_csv_into_postgres_and_a_malformed_file_stores_nothing() {
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "user,item,timestamp,weight\nu1,i1,100,1\nu1,i2,101,2.5\nu2,i1,102,1\n",
    )
    .unwrap();
    let imported = origin(
        &["import", "--db", &url, "--format", "csv", "good.csv"],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&imported.stdout);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert!(
        stdout.contains("imported 3 interactions") && stdout.contains("2 new users"),
        "{stdout}"
    );
    let store = origin::store::open(&Location::parse(&url).unwrap(), "default", 1)
        .await
        .unwrap();
    let set = store.training_set().await.unwrap();
    assert_eq!(set.maps.user_ids, ["u1", "u2"]);
    assert_eq!(set.maps.item_ids, ["i1", "i2"]);
    let mut rows: Vec<(u32, u32, f32, i64)> = set
        .data
        .interactions
        .iter()
        .map(|i| (i.user, i.item, i.weight, i.timestamp))
        .collect();
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(rows, [(0, 0, 1.0, 100), (0, 1, 2.5, 101), (1, 0, 1.0, 102)]);

    // Line 3 of the second file is bad: neither file stores anything.
    let more = dir.path().join("more.csv");
    std::fs::write(&more, "u7,i7,1,1\n").unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "u8,i8,1,1\nu9,i9,2,1\nu10,i10,soon,1\n").unwrap();
    let refused = origin(
        &[
            "import", "--db", &url, "--format", "csv", "more.csv", "bad.csv",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("bad.csv:3: timestamp"), "{stderr}");
    assert_eq!(store.counts().await.unwrap(), set.counts, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_data_fills_a_postgres_tenant_and_leaves_the_others_alone() {
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    let location = Location::parse(&url).unwrap();
    let other = origin::store::open(&location, "other", 1).await.unwrap();
    other
        .import(Batch {
            interactions: vec![InteractionRow {
                user_id: "x".into(),
                item_id: "y".into(),
                weight: 1.0,
                ts: 1,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "demo-data",
        "--db",
        &url,
        "--users",
        "250",
        "--items",
        "40",
        "--interactions-per-user",
        "5",
    ];
    for _ in 0..2 {
        let out = origin(&args, dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("250 users, 40 items"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let store = origin::store::open(&location, "default", 1).await.unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.users, counts.items),
        (250, 40),
        "replaced, not doubled"
    );
    assert!(counts.interactions >= 250);
    assert_eq!(other.counts().await.unwrap().interactions, 1);
    let refused = origin(
        &["demo-data", "--db", &url, "--tenant", "no/such"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--tenant"), "{stderr}");
}
