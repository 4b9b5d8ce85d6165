//! The embedded SQLite backend of [`Store`]: one file in WAL mode, written by one
//! event-writer thread (group commit, `synchronous=FULL`) and read through a side
//! connection.
//!
//! # Layout
//! - [`SqliteStore`]: the [`Store`] implementation.
//! - `database`: the file, its schema and migrations, catalogue inserts and the
//!   training read ([`Database`]; also used directly by synchronous test fixtures).
//! - `event_log`: the durable log, its writer thread, projections and replay.
//! - `analytics`: the analytics queries.
//! - `experiments`: the tenant's A/B experiments.
//! - `tenants`: the tenant registry ([`SqliteTenants`]).
//! - `rules`: the tenant's business rules and the impressions fatigue counts.

pub mod analytics;
pub mod database;
pub mod event_log;
pub mod experiments;
pub mod rules;
pub mod tenants;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use contract::{ItemId, UserId};

use crate::analytics::{RealTimeCounts, RecommendationAnalytics, Timeline};
use crate::events::Event;
use crate::experiments::{Experiment, StartOutcome, UserTally};
use crate::rules::{Fatigue, Fatigued, StoredRules};
use crate::store::{
    Appended, Batch, Counts, ItemRow, Load, Projections, ReplayReport, Store, StoreError,
    TrainingSet, UserRow, WriteHealth,
};
use database::CatalogueTable;

pub use database::{Database, APPLICATION_ID, SCHEMA_VERSION};
pub use event_log::EventLog;
pub use tenants::SqliteTenants;

/// The meta key naming the tenant whose data the main file holds.
pub const OWNER_KEY: &str = "tenant";

/// The file that holds `tenant`'s data when `--db` is the SQLite file `main`: the main
/// file when it holds that tenant — it holds the first tenant written to it, recorded
/// in its meta table ([`OWNER_KEY`]; a file with no tenant recorded is claimed now) —
/// else the tenant's own file ([`tenant_file`]).
pub fn file_of(main: &Path, tenant: &str) -> Result<PathBuf, StoreError> {
    let db = Database::open(main)?;
    let at = |e| StoreError::at(main, e);
    match db.meta(OWNER_KEY).map_err(at)? {
        Some(owner) if owner == tenant => Ok(main.to_owned()),
        Some(_) => Ok(tenant_file(main, tenant)),
        None => {
            db.set_meta(OWNER_KEY, tenant).map_err(at)?;
            Ok(main.to_owned())
        }
    }
}

/// The database file of `tenant` in an origin serving several tenants on SQLite: a
/// file of its own next to the main one, `{dir}/{main file name}.tenants/{tenant}.sqlite`.
/// (SQLite locks a whole file to write, so tenants in files of their own never wait
/// for each other's commits; deleting a tenant removes its file.) `tenant` is a
/// validated tenant id (`[a-z0-9_-]`), so it cannot leave the folder.
pub fn tenant_file(main: &Path, tenant: &str) -> PathBuf {
    let mut folder = main.file_name().unwrap_or_default().to_os_string();
    folder.push(".tenants");
    main.with_file_name(folder).join(format!("{tenant}.sqlite"))
}

/// Removes a tenant's database file and its WAL and shared-memory files; gives the
/// paths removed (none when the tenant never had a file).
pub fn remove_tenant_file(file: &Path) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.as_os_str().to_os_string();
        name.push(suffix);
        let path = PathBuf::from(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The SQLite store of one database file.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    log: EventLog,
}

impl SqliteStore {
    /// Opens (creating, checking and migrating) the file at `path` and starts its event
    /// writer, which commits at most `group_max` events per transaction.
    pub fn open(path: &Path, group_max: usize) -> Result<Self, StoreError> {
        let log = EventLog::open(path, group_max)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            log,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The event log (its writer and side connection).
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Runs `f` on a connection of its own to the file, in the blocking pool (reads
    /// that must not queue behind the side connection, and writes outside the log).
    async fn with_database<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = Database::open(&path)?;
            f(&mut db).map_err(|e| StoreError::at(&path, e))
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    async fn append(
        &self,
        events: Vec<Event>,
        client: Option<String>,
    ) -> Result<Appended, StoreError> {
        self.log.append_from(events, client).await
    }

    fn write_health(&self) -> WriteHealth {
        self.log.write_health()
    }

    async fn import(&self, batch: Batch) -> Result<(), StoreError> {
        self.with_database(move |db| db.insert_batch(&batch)).await
    }

    async fn replace_content(
        &self,
        meta: Vec<(String, String)>,
        mut load: tokio::sync::mpsc::Receiver<Load>,
    ) -> Result<(), StoreError> {
        self.with_database(move |db| db.replace_content(&meta, || load.blocking_recv()))
            .await
    }

    async fn replay(&self) -> Result<ReplayReport, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || event_log::replay(&path))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.with_database(|db| db.counts()).await
    }

    async fn training_set(&self) -> Result<TrainingSet, StoreError> {
        self.with_database(|db| db.training_set()).await
    }

    async fn user_history(&self, user: &UserId) -> Result<Vec<(String, f32)>, StoreError> {
        self.log.user_history(user).await
    }

    async fn recommendation_analytics(
        &self,
        range: String,
        range_s: u64,
        now: i64,
    ) -> Result<RecommendationAnalytics, StoreError> {
        self.log
            .read(move |conn| analytics::recommendations(conn, &range, range_s, now))
            .await
    }

    async fn timeline(
        &self,
        range: String,
        range_s: u64,
        step_s: u64,
        now: i64,
    ) -> Result<Timeline, StoreError> {
        self.log
            .read(move |conn| analytics::timeline(conn, &range, range_s, step_s, now))
            .await
    }

    async fn known(&self, users: &[String], items: &[String]) -> Result<(u64, u64), StoreError> {
        let (users, items) = (users.to_vec(), items.to_vec());
        self.log
            .read(move |conn| {
                let count = |sql: &str, ids: &[String]| -> Result<u64, StoreError> {
                    let mut stmt = conn.prepare_cached(sql)?;
                    let mut n = 0;
                    for id in ids {
                        n += u64::from(stmt.exists([id])?);
                    }
                    Ok(n)
                };
                Ok((
                    count("SELECT 1 FROM users WHERE user_id = ?1", &users)?,
                    count("SELECT 1 FROM items WHERE item_id = ?1", &items)?,
                ))
            })
            .await
    }

    async fn events_received_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        self.log
            .read(move |conn| {
                let n: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM events
                     WHERE received_at >= ?1 AND type <> 'recommendation_viewed'",
                    [since_ms],
                    |r| r.get(0),
                )?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn real_time_counts(&self, now_ms: i64) -> Result<RealTimeCounts, StoreError> {
        self.log
            .read(move |conn| analytics::real_time_counts(conn, now_ms))
            .await
    }

    async fn record_edge_report(
        &self,
        report: contract::events::EdgeReport,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.log
            .read(move |conn| analytics::record_edge_report(conn, &report, now_ms))
            .await
    }

    async fn read_events(&self, from: i64, to: i64) -> Result<Vec<(i64, Event)>, StoreError> {
        self.log
            .read(move |conn| event_log::read_events(conn, from, to))
            .await
    }

    async fn projections(&self) -> Result<Projections, StoreError> {
        self.log.read(event_log::read_projections).await
    }

    async fn upsert_items(&self, items: Vec<ItemRow>) -> Result<(), StoreError> {
        self.with_database(move |db| db.upsert_items(&items)).await
    }

    async fn item(&self, item: &ItemId) -> Result<Option<ItemRow>, StoreError> {
        let id = item.as_str().to_owned();
        self.log
            .read(move |conn| database::read_item(conn, &id))
            .await
    }

    async fn delete_item(&self, item: &ItemId) -> Result<bool, StoreError> {
        let id = item.as_str().to_owned();
        self.with_database(move |db| db.delete_row(CatalogueTable::Items, &id))
            .await
    }

    async fn upsert_users(&self, users: Vec<UserRow>) -> Result<(), StoreError> {
        self.with_database(move |db| db.upsert_users(&users)).await
    }

    async fn user(&self, user: &UserId) -> Result<Option<UserRow>, StoreError> {
        let id = user.as_str().to_owned();
        self.log
            .read(move |conn| database::read_user(conn, &id))
            .await
    }

    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        let id = user.as_str().to_owned();
        self.with_database(move |db| db.delete_row(CatalogueTable::Users, &id))
            .await
    }

    async fn rules(&self) -> Result<Option<StoredRules>, StoreError> {
        self.log.read(rules::read).await
    }

    async fn put_rules(&self, json: String, now: i64) -> Result<StoredRules, StoreError> {
        // A small write on the side connection, as edge reports are.
        self.log
            .read(move |conn| rules::put(conn, &json, now))
            .await
    }

    async fn fatigued(
        &self,
        users: Option<Vec<UserId>>,
        fatigue: Fatigue,
        now: i64,
    ) -> Result<Fatigued, StoreError> {
        self.log
            .read(move |conn| rules::fatigued(conn, users.as_deref(), fatigue, now))
            .await
    }

    async fn experiments(&self) -> Result<Vec<Experiment>, StoreError> {
        self.log.read(experiments::list).await
    }

    async fn start_experiment(&self, experiment: &Experiment) -> Result<StartOutcome, StoreError> {
        let experiment = experiment.clone();
        self.with_database(move |db| experiments::start(db.connection(), &experiment))
            .await
    }

    async fn end_experiment(
        &self,
        name: &str,
        ended_at: i64,
        promoted: &str,
    ) -> Result<bool, StoreError> {
        let (name, promoted) = (name.to_owned(), promoted.to_owned());
        self.with_database(move |db| experiments::end(db.connection(), &name, ended_at, &promoted))
            .await
    }

    async fn experiment_tallies(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<UserTally>, StoreError> {
        self.log
            .read(move |conn| analytics::user_tallies(conn, since, until))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_tenant_written_owns_the_main_file_and_the_others_get_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("origin.sqlite");
        assert_eq!(
            file_of(&main, "books").unwrap(),
            main,
            "a new file is claimed"
        );
        assert_eq!(file_of(&main, "books").unwrap(), main);
        let news = file_of(&main, "news").unwrap();
        assert_eq!(news, dir.path().join("origin.sqlite.tenants/news.sqlite"));
        assert_eq!(
            Database::open(&main)
                .unwrap()
                .meta(OWNER_KEY)
                .unwrap()
                .as_deref(),
            Some("books")
        );
        // Removing a tenant's file takes its WAL files too, and is a no-op after.
        std::fs::create_dir_all(news.parent().unwrap()).unwrap();
        Database::open(&news).unwrap();
        let removed = remove_tenant_file(&news).unwrap();
        assert!(
            removed.iter().any(|p| p.ends_with("news.sqlite")),
            "{removed:?}"
        );
        assert!(!news.exists());
        assert!(remove_tenant_file(&news).unwrap().is_empty());
    }
}
