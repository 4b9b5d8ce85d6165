//! The origin's commands against a real PostgreSQL (a throwaway server,
//! `origin::store::postgres::test_server`; skipped with the reason printed when
//! PostgreSQL is not installed, a failure when `CI` is set): `publish` reads the
//! PostgreSQL store, and the commands that only write SQLite files refuse a URL
//! instead of creating a file named like it.

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

#[test]
fn commands_that_write_sqlite_files_refuse_a_postgres_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://app:hunter2@127.0.0.1:1/recs";
    for args in [
        vec!["import", "--db", url, "--format", "csv", "missing.csv"],
        vec!["demo-data", "--db", url],
    ] {
        let out = origin(&args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("SQLite files only"), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{args:?}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file named like the URL"
    );
}
