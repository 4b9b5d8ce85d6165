//! `origin tenants …` run as the real binary, on a SQLite file and on a throwaway
//! PostgreSQL (skipped with the reason printed when PostgreSQL is not installed, a
//! failure when `CI` is set): create shows the keys once and they verify, list and
//! show never show them, rotate-key overlaps, bad ids and unconfirmed deletes fail
//! with a message, delete says what it removed.

use std::process::{Command, Output};

use origin::store::Location;
use origin::tenants::{KeyKind, Tenants};
use serde_json::Value;

fn origin(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_origin"))
        .arg("tenants")
        .args(args)
        .args(["--db", db])
        .env_remove("ORIGIN_DB")
        .env_remove("ADMIN_TOKEN")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run origin")
}

/// Runs a command that must succeed and gives its stdout.
fn ok(db: &str, args: &[&str]) -> String {
    let out = origin(db, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail and gives its stderr.
fn fails(db: &str, args: &[&str]) -> String {
    let out = origin(db, args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn now() -> i64 {
    origin::snapshot::now_unix() as i64
}

async fn the_tenants_commands_work_on(db: &str) {
    let created: Value = serde_json::from_str(&ok(
        db,
        &[
            "create",
            "books",
            "--name",
            "Bücher",
            "--max-items",
            "500",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(created["tenant"]["id"], "books");
    assert_eq!(created["tenant"]["quotas"]["max_items"], 500);
    let client = created["client_key"].as_str().unwrap().to_owned();
    let server = created["server_key"].as_str().unwrap().to_owned();
    assert!(client.starts_with("pk_") && server.starts_with("sk_"));

    // The printed keys are the tenant's, as the library verifies them.
    let registry = origin::store::open_tenants(&Location::parse(db).unwrap())
        .await
        .unwrap();
    let tenants = Tenants::new(registry);
    let verified = tenants.verify(&server, now()).await.unwrap().unwrap();
    assert_eq!(
        (verified.tenant.as_str(), verified.kind),
        ("books", KeyKind::Server)
    );

    let text = ok(db, &["create", "news"]);
    assert!(
        text.contains("client key") && text.contains("pk_"),
        "{text}"
    );
    let listed = ok(db, &["list"]);
    assert!(
        listed.contains("books") && listed.contains("news"),
        "{listed}"
    );
    let shown = ok(db, &["show", "books", "--json"]);
    let view: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(view["name"], "Bücher");
    assert_eq!(view["keys"].as_array().unwrap().len(), 2);
    for listing in [&listed, &shown, &ok(db, &["show", "books"])] {
        assert!(!listing.contains(&client[3..]), "{listing}");
        assert!(!listing.contains(&server[3..]), "{listing}");
    }

    let rotated: Value = serde_json::from_str(&ok(
        db,
        &[
            "rotate-key",
            "books",
            "server",
            "--overlap-s",
            "0",
            "--json",
        ],
    ))
    .unwrap();
    let new_server = rotated["key"].as_str().unwrap();
    assert!(new_server.starts_with("sk_") && new_server != server);
    assert!(tenants.verify(&server, now()).await.unwrap().is_none());
    assert!(tenants.verify(new_server, now()).await.unwrap().is_some());
    assert!(tenants.verify(&client, now()).await.unwrap().is_some());

    for (args, says) in [
        (vec!["create", "books"], "already exists"),
        (vec!["create", "../x"], "not allowed"),
        (
            vec!["create", "ok", "--name", "a\u{202E}b"],
            "not printable",
        ),
        (vec!["create", "ok", "--max-users", "0"], "max_users"),
        (vec!["show", "nobody"], "no tenant nobody"),
        (vec!["rotate-key", "nobody", "client"], "no tenant nobody"),
        (vec!["delete", "books"], "--yes"),
        (vec!["delete", "a/b", "--yes"], "not allowed"),
    ] {
        let stderr = fails(db, &args);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }

    let deleted = ok(db, &["delete", "books", "--yes", "--json"]);
    let report: Value = serde_json::from_str(&deleted).unwrap();
    let rows = |table: &str| {
        report["removed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["table"] == table)
            .map(|r| r["rows"].as_u64().unwrap())
    };
    assert_eq!(rows("tenants"), Some(1));
    // The client key and the new server key: a key replaced with no overlap is gone.
    assert_eq!(rows("tenant_keys"), Some(2));
    assert!(tenants.verify(&client, now()).await.unwrap().is_none());
    let listed = ok(db, &["list", "--json"]);
    let ids: Vec<Value> = serde_json::from_str::<Vec<Value>>(&listed)
        .unwrap()
        .into_iter()
        .map(|t| t["id"].clone())
        .collect();
    assert_eq!(ids, ["news"]);

    // A tenant's model: set at create, changed, refused when not a model, cleared.
    ok(db, &["create", "mags", "--model", "ease"]);
    let shown: Value = serde_json::from_str(&ok(db, &["show", "mags", "--json"])).unwrap();
    assert_eq!(shown["model"], "ease", "{shown}");
    assert!(ok(db, &["set-model", "mags", "popularity"]).contains("popularity"));
    let err = fails(db, &["set-model", "mags", "no-such-model"]);
    assert!(err.contains("not a model"), "{err}");
    let err = fails(db, &["create", "bad-model", "--model", "{\"kind\":"]);
    assert!(err.contains("not a model"), "{err}");
    ok(db, &["set-model", "mags", "default"]);
    let shown: Value = serde_json::from_str(&ok(db, &["show", "mags", "--json"])).unwrap();
    assert!(shown.get("model").is_none(), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_commands_work_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("origin.sqlite");
    the_tenants_commands_work_on(&db.display().to_string()).await;
    let deleted = ok(&db.display().to_string(), &["delete", "news", "--yes"]);
    assert!(deleted.contains("not removed"), "{deleted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_commands_work_on_postgres() {
    let Some(server) = origin::store::postgres::test_server::shared() else {
        return;
    };
    let url = server.database().await;
    the_tenants_commands_work_on(&url).await;
    let deleted = ok(&url, &["delete", "news", "--yes"]);
    assert!(deleted.contains("events"), "{deleted}");
    assert!(!deleted.contains("not removed"), "{deleted}");
}
