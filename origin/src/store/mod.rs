//! The origin's durable store, behind one interface, [`Store`]: the event log (append
//! with group commit, acknowledged only after the commit), the projections updated in
//! the same transaction, and the reads that training, serving and analytics need.
//!
//! Embedded SQLite ([`sqlite::SqliteStore`]) is the default: one file, one process.
//! Every backend keeps the same guarantees, and the same test suite
//! (`store/suite.rs`) runs against each.
//!
//! # Layout
//! - [`Store`]: the interface; [`open`] picks a backend from `--db`.
//! - [`StoreError`]: one error type for every backend.
//! - rows and results shared by every backend: [`Batch`] (and its rows), [`Counts`],
//!   [`IdMaps`], [`TrainingSet`], [`Appended`], [`WriteHealth`], [`ReplayReport`],
//!   [`Projections`].
//! - `sqlite/`: the SQLite backend (catalogue tables, the event log and its writer
//!   thread, the analytics queries).
//! - `postgres/`: the PostgreSQL backend (`--db postgres://…`): migrations, partitions,
//!   the writer task, the analytics queries, and a throwaway server for tests.
//! - `replicas`: the primary plus read replicas (`--db-replica`): writes to the
//!   primary, reads spread over healthy replicas; [`open_with_replicas`].
//! - the tenant registry (`crate::tenants::TenantRegistry`) in each backend
//!   (`sqlite/tenants.rs`, `postgres/tenants.rs`); [`open_tenants`].
//! - `retention`: the leader's task dropping old months of the event log.
//! - business rules ([`Store::rules`], [`Store::put_rules`]) and the impressions
//!   fatigue counts ([`Store::fatigued`]) on each backend; `rules_suite.rs` checks
//!   both.
//! - the tenant's A/B experiments (`crate::experiments`): each backend's
//!   `experiments.rs`; `experiments_suite.rs` runs on both.

#[cfg(test)]
mod catalogue_suite;
#[cfg(test)]
mod experiments_suite;
pub mod postgres;
pub mod replicas;
pub mod retention;
#[cfg(test)]
mod rules_suite;
pub mod sqlite;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod tenants_suite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use contract::{ItemId, UserId};
use thiserror::Error;

use crate::analytics::{RealTimeCounts, RecommendationAnalytics, Timeline};
use crate::events::Event;
use crate::experiments::{Experiment, StartOutcome, UserTally};
use crate::model::TrainingData;
use crate::rules::{Fatigue, Fatigued, StoredRules};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Half-life of the trending score, in seconds.
pub const TRENDING_HALF_LIFE_S: f64 = 6.0 * 3600.0;
/// How many of a user's most recent items a newly seen item is paired with.
pub const COOCCURRENCE_RECENT: usize = 10;
/// Region recorded for popularity when an event has none.
pub const UNKNOWN_REGION: &str = "unknown";
/// How often a store that refused a write is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the directory of {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "database schema version {found} is newer than this program understands ({supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("{path} is not an origin database ({why}); refusing to use it, give --db a new or an origin file")]
    Foreign { path: String, why: String },
    #[error("{path}: {source}")]
    At {
        path: String,
        source: rusqlite::Error,
    },
    /// A file of the store that could not be created, opened or removed.
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("--db {0:?}: {1}")]
    BadLocation(String, String),
    #[error("--db-user-partitions must be 1 to {max}, not {0}", max = postgres::schema::MAX_USER_PARTITIONS)]
    UserPartitions(u32),
    #[error("postgres: {}", with_causes(.0))]
    Pg(#[from] tokio_postgres::Error),
    #[error("postgres connection pool: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A PostgreSQL error with where it happened (the URL without its password).
    #[error("postgres {0}")]
    Postgres(String),
    #[error("the event writer has stopped")]
    WriterGone,
    #[error("the log holds an event that cannot be read back: seq {seq}: {message}")]
    Corrupt { seq: i64, message: String },
    #[error("background task failed: {0}")]
    Task(String),
    #[error("a row of {table} cannot be read back ({key}): {message}")]
    BadRow {
        table: &'static str,
        key: String,
        message: String,
    },
}

/// An error with its causes (`tokio-postgres` says only "db error" and keeps the
/// server's message as the cause).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

impl StoreError {
    /// The error, naming the database file when SQLite's own message does not.
    pub fn at(path: &std::path::Path, e: impl Into<StoreError>) -> StoreError {
        match e.into() {
            StoreError::Sqlite(source) => StoreError::At {
                path: path.display().to_string(),
                source,
            },
            other => other,
        }
    }
}

/// An item of the catalogue.
///
/// Lists are stored comma-joined, so a category or tag holds no `,` (the catalogue's
/// validation, `crate::catalogue`, refuses one).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub item_id: String,
    pub title: String,
    pub description: String,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
    /// A non-negative price, when the item has one.
    pub price: Option<f64>,
    /// ISO 4217 code of the price's currency (three upper-case letters), when given.
    pub currency: Option<String>,
    /// Whether the item may be recommended (in stock, on sale); `true` by default.
    pub available: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// A small free-form JSON object (at most `crate::catalogue::MAX_ATTRIBUTES_BYTES`
    /// serialized); empty by default.
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Default for ItemRow {
    fn default() -> Self {
        ItemRow {
            item_id: String::new(),
            title: String::new(),
            description: String::new(),
            categories: Vec::new(),
            tags: Vec::new(),
            price: None,
            currency: None,
            available: true,
            created_at: 0,
            attributes: serde_json::Map::new(),
        }
    }
}

impl ItemRow {
    /// The attributes as stored: JSON text of the object.
    pub fn attributes_json(&self) -> String {
        serde_json::Value::Object(self.attributes.clone()).to_string()
    }
}

/// Parses stored attributes (JSON text of an object; empty text is no attributes).
pub(crate) fn parse_attributes(
    item_id: &str,
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    serde_json::from_str(text).map_err(|e| StoreError::BadRow {
        table: "items",
        key: item_id.to_owned(),
        message: format!("attributes are not a JSON object: {e}"),
    })
}

/// A user, with an ISO country code and a segment when known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserRow {
    pub user_id: String,
    pub country: Option<String>,
    /// A short id-like label the shop gives the user (`vip`, `b2b`, …).
    pub segment: Option<String>,
}

/// One interaction of a user with an item.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionRow {
    pub user_id: String,
    pub item_id: String,
    pub weight: f32,
    /// Unix seconds.
    pub ts: i64,
}

/// Rows written together in one transaction.
///
/// Items and users are upserted (a later row replaces an earlier one); users and
/// items named only by interactions are created with empty attributes.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub items: Vec<ItemRow>,
    pub users: Vec<UserRow>,
    pub interactions: Vec<InteractionRow>,
}

/// One message of a [`Store::replace_content`] load.
#[derive(Debug)]
pub enum Load {
    Batch(Batch),
    /// The load is complete (a channel closed without it is a failed load).
    End,
}

/// How many rows each table holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub users: u64,
    pub items: u64,
    pub interactions: u64,
}

/// External ids of the dense indices used in [`TrainingData`].
#[derive(Debug, Clone, Default)]
pub struct IdMaps {
    /// `user_ids[idx]` is the id of user `idx`.
    pub user_ids: Vec<String>,
    /// `item_ids[idx]` is the id of item `idx`.
    pub item_ids: Vec<String>,
    /// `user_country[idx]`: the country of user `idx`, when known.
    pub user_country: Vec<Option<String>>,
    /// `item_from_events[idx]`: the item is known only from live events (not imported
    /// or loaded as catalogue), so it must earn its place in the model.
    pub item_from_events: Vec<bool>,
    /// `user_client_users[idx]`: how many users the client that first sent events for
    /// user `idx` has introduced (0: no client recorded, e.g. imported users).
    pub user_client_users: Vec<u32>,
    /// `item_available[idx]`: the catalogue's `available` of item `idx` (an
    /// unavailable item is trained on but never served); empty: every item is.
    pub item_available: Vec<bool>,
}

/// Everything a model is trained from: the data in dense index space, the ids of the
/// indices and the table counts, read together.
#[derive(Debug, Clone, Default)]
pub struct TrainingSet {
    pub counts: Counts,
    pub data: TrainingData,
    pub maps: IdMaps,
    /// The seq of the newest event whose interaction is in the set (`None`: none is;
    /// the watermark other origins train up to, see [`TrainedModel`]). The SQLite
    /// backend gives the newest event in its log when the set was read.
    pub upto_seq: Option<i64>,
}

/// What a retrain trained, recorded in the store so that every origin on the database
/// serves the same model (see `crate::retrain`): its version, the second it names, the
/// training watermark (the last event seq included) and the counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrainedModel {
    pub model_version: String,
    /// Unix seconds, as in the version.
    pub trained_at: u64,
    pub upto_seq: Option<i64>,
    pub counts: Counts,
}

/// Where a batch landed in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub first_seq: i64,
    pub last_seq: i64,
    /// Events whose `event_id` the log already held: acknowledged, not stored again
    /// (their seq is the stored one's).
    pub duplicates: usize,
}

/// Whether the store takes writes: the outcome of the last commit or probe. While it
/// does not (a full disk, a read-only file), a probe write is tried every
/// [`PROBE_EVERY`], so `/health` recovers on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteHealth {
    pub writable: bool,
    pub error: Option<String>,
}

impl Default for WriteHealth {
    fn default() -> Self {
        WriteHealth {
            writable: true,
            error: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    pub events: u64,
    pub interactions: u64,
    pub last_seq: i64,
}

/// Every projection row, sorted, for comparing a rebuild with the live state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projections {
    /// (user, item, weight, events, last_ts, last_seq)
    pub user_history: Vec<(String, String, f64, i64, i64, i64)>,
    /// (region, item, events, weight)
    pub popularity: Vec<(String, String, i64, f64)>,
    /// (item, score, as_of)
    pub trending: Vec<(String, f64, i64)>,
    /// (item_a, item_b, users)
    pub cooccurrence: Vec<(String, String, i64)>,
    /// (event_seq, user, item, weight, ts)
    pub training: Vec<(i64, String, String, f64, i64)>,
}

/// The origin's store. Writes are durable when they return; reads see every write that
/// returned before them.
#[async_trait]
pub trait Store: Send + Sync {
    /// Where the data lives, for logs and errors (a path, or a URL without secrets).
    fn location(&self) -> String;

    /// Appends a batch of events sent by `client` (a hash the edge reports, or the peer
    /// address) and projects each stored one, in a transaction shared with other
    /// waiting batches (group commit); returns once that transaction committed. An
    /// event whose `event_id` is already stored is acknowledged, not stored again.
    async fn append(
        &self,
        events: Vec<Event>,
        client: Option<String>,
    ) -> Result<Appended, StoreError>;

    /// Whether the last write succeeded (see [`WriteHealth`]).
    fn write_health(&self) -> WriteHealth;

    /// Writes catalogue rows and interactions in one transaction: all or nothing.
    async fn import(&self, batch: Batch) -> Result<(), StoreError>;

    /// Replaces this tenant's items, users and interactions with the batches `load`
    /// yields until [`Load::End`] (`origin demo-data`), and sets the `meta` pairs. The
    /// event log and its projections stay. SQLite writes each batch in a transaction of
    /// its own, bulk-load style (a crash may lose the load, never older data);
    /// PostgreSQL writes the whole load in one transaction. A load whose channel closes
    /// before [`Load::End`] fails (on PostgreSQL nothing of it is kept).
    async fn replace_content(
        &self,
        meta: Vec<(String, String)>,
        load: tokio::sync::mpsc::Receiver<Load>,
    ) -> Result<(), StoreError>;

    /// Rebuilds every projection from the event log alone, in one transaction.
    async fn replay(&self) -> Result<ReplayReport, StoreError>;

    /// Row counts of users, items and interactions.
    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Everything a model trains on. Users and items are numbered in id order, so the
    /// same data always gives the same indices; `data.user_region` holds countries.
    async fn training_set(&self) -> Result<TrainingSet, StoreError>;

    /// One user's interactions (imported and live), summed per item, by item id.
    async fn user_history(&self, user: &UserId) -> Result<Vec<(String, f32)>, StoreError>;

    /// The recommendation funnel over the `range_s` seconds before `now` (unix s).
    async fn recommendation_analytics(
        &self,
        range: String,
        range_s: u64,
        now: i64,
    ) -> Result<RecommendationAnalytics, StoreError>;

    /// The funnel per step of `step_s` over the `range_s` seconds before `now`.
    async fn timeline(
        &self,
        range: String,
        range_s: u64,
        step_s: u64,
        now: i64,
    ) -> Result<Timeline, StoreError>;

    /// Events per second, active users and the edge's hit rate around `now_ms`.
    async fn real_time_counts(&self, now_ms: i64) -> Result<RealTimeCounts, StoreError>;

    /// Events received at or after `since_ms` (unix ms), impressions
    /// (`recommendation_viewed`) left out: what a tenant's `events_per_day` counts.
    async fn events_received_since(&self, since_ms: i64) -> Result<u64, StoreError>;

    /// How many of `users` and of `items` the store holds (what a tenant's `max_users`
    /// and `max_items` check a batch's new ones against).
    async fn known(&self, users: &[String], items: &[String]) -> Result<(u64, u64), StoreError>;

    /// Stores one edge report (requests and hits, per region) received at `now_ms`.
    async fn record_edge_report(
        &self,
        report: contract::events::EdgeReport,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Events with `seq` in `from..=to`, in order, with their seqs.
    async fn read_events(&self, from: i64, to: i64) -> Result<Vec<(i64, Event)>, StoreError>;

    /// Every projection row, for comparing a replay with the live state.
    async fn projections(&self) -> Result<Projections, StoreError>;

    /// The read replicas behind this store and their health (none for a single
    /// database).
    fn replicas(&self) -> Vec<replicas::ReplicaStatus> {
        Vec::new()
    }

    /// The training set as of event `upto_seq`: imported interactions and those of
    /// events with seq ≤ `upto_seq` (`None`: everything, as [`Store::training_set`]).
    /// Users and items are the current ones. A backend without event seqs on its
    /// interactions gives everything.
    async fn training_set_upto(&self, upto_seq: Option<i64>) -> Result<TrainingSet, StoreError> {
        let _ = upto_seq;
        self.training_set().await
    }

    /// Records the model a retrain trained (for the other origins on this database).
    /// A store that only one process uses (SQLite) need not keep it.
    async fn record_model(&self, model: &TrainedModel) -> Result<(), StoreError> {
        let _ = model;
        Ok(())
    }

    /// The model the newest retrain on this database trained, if recorded.
    async fn latest_model(&self) -> Result<Option<TrainedModel>, StoreError> {
        Ok(None)
    }

    /// Event retention, run by the leader (see [`retention`]): detaches and drops every
    /// monthly event partition before the `keep_months` months up to the one holding
    /// `now` (unix seconds; 0 keeps everything), and gives the months dropped. A store
    /// without event partitions (SQLite) keeps everything.
    async fn apply_event_retention(
        &self,
        now: i64,
        keep_months: u32,
    ) -> Result<Vec<String>, StoreError> {
        let _ = (now, keep_months);
        Ok(Vec::new())
    }

    /// Creates or replaces catalogue items (every field; a later row of the same id
    /// replaces an earlier one), in one transaction: all or nothing. An item known only
    /// from events becomes a catalogue item (it no longer has to earn its place in the
    /// model, see [`IdMaps::item_from_events`]).
    async fn upsert_items(&self, items: Vec<ItemRow>) -> Result<(), StoreError>;

    /// One item of the catalogue, when the store holds it (an item known only from
    /// events is there too, with empty attributes).
    async fn item(&self, item: &ItemId) -> Result<Option<ItemRow>, StoreError>;

    /// Deletes one item's catalogue row; gives whether it existed. Its interactions
    /// stay: in the event log, its projections (history, popularity, trending,
    /// co-occurrence) and the interactions table. While the item has no row, training
    /// leaves its interactions out (a model numbers only the items the table holds),
    /// so it leaves the lists at the next retrain; a later event for it, or a replay of
    /// the log, brings it back as an item known only from events, without attributes.
    async fn delete_item(&self, item: &ItemId) -> Result<bool, StoreError>;

    /// Creates or replaces users (country and segment; a later row of the same id
    /// replaces an earlier one), in one transaction: all or nothing.
    async fn upsert_users(&self, users: Vec<UserRow>) -> Result<(), StoreError>;

    /// One user, when the store holds them.
    async fn user(&self, user: &UserId) -> Result<Option<UserRow>, StoreError>;

    /// The tenant's business rules as last stored (`None`: never stored; see
    /// [`crate::rules`]).
    async fn rules(&self) -> Result<Option<StoredRules>, StoreError>;

    /// Stores the tenant's rules (`json`: a validated [`crate::rules::Rules`]
    /// document), replacing what was stored, at `now` (unix seconds); gives the row
    /// with its new version (one more than the last; 1 for the first).
    async fn put_rules(&self, json: String, now: i64) -> Result<StoredRules, StoreError>;

    /// The items fatigue keeps out of lists: per user, those with at least
    /// `fatigue.impressions` impressions (`recommendation_viewed`) since
    /// `fatigue.since(now)` and after the user's last interaction with the item (any
    /// weighted event, a click among them). `Some(users)`: only those users (an origin
    /// answer, a republish); `None`: every user (a full publish). Bounded as
    /// [`Fatigued`] says, in user then item order.
    async fn fatigued(
        &self,
        users: Option<Vec<UserId>>,
        fatigue: Fatigue,
        now: i64,
    ) -> Result<Fatigued, StoreError>;

    /// Deletes one user's row (country, segment); gives whether it existed. Their
    /// interactions stay, as [`Store::delete_item`] says of an item's: their history
    /// is still served, training leaves them out while the user has no row, and a
    /// later event of theirs, or a replay, brings the user back without attributes.
    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError>;

    /// The tenant's A/B experiments ([`crate::experiments`]), running and ended, oldest
    /// first.
    async fn experiments(&self) -> Result<Vec<Experiment>, StoreError>;

    /// The tenant's running experiment, if one runs.
    async fn running_experiment(&self) -> Result<Option<Experiment>, StoreError> {
        Ok(self
            .experiments()
            .await?
            .into_iter()
            .find(|e| e.is_running()))
    }

    /// Stores and starts a checked experiment, unless one of its name exists or
    /// another runs: decided in one transaction (at most one runs per tenant, whatever
    /// runs at once).
    async fn start_experiment(&self, experiment: &Experiment) -> Result<StartOutcome, StoreError>;

    /// Ends the running experiment `name` at `ended_at` (unix seconds; never before it
    /// started), recording the variant `promoted`; false when no running experiment
    /// has that name.
    async fn end_experiment(
        &self,
        name: &str,
        ended_at: i64,
        promoted: &str,
    ) -> Result<bool, StoreError>;

    /// Per user with events of `ts` in `since ..= until`: impressions, clicks (on an item
    /// shown before, as the funnel counts them) and purchases; by user id.
    async fn experiment_tallies(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<UserTally>, StoreError>;
}

/// Settings that matter only when a PostgreSQL schema is created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaOptions {
    /// Hash partitions of each per-user table (`--db-user-partitions`, 1 to 256;
    /// `None`: the default, 8, and no warning when an existing schema has another
    /// number).
    pub user_partitions: Option<u32>,
}

/// A shared handle on the process's store.
pub type SharedStore = Arc<dyn Store>;

/// Where `--db` points: a SQLite file (a path, or `sqlite://PATH`) or a PostgreSQL
/// database (`postgres://…` or `postgresql://…`; its `Debug` and [`Location::display`]
/// never show a password).
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Location::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&postgres::redact(url))
                .finish(),
        }
    }
}

impl Location {
    /// Parses `--db`: `sqlite://PATH` or a plain path is SQLite, `postgres://` or
    /// `postgresql://` a PostgreSQL URL (checked here, so a typo fails at once); any
    /// other `scheme://` is refused with the schemes this build knows.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::BadLocation(postgres::redact(raw), why.to_owned());
        if raw.trim().is_empty() {
            return Err(bad("empty"));
        }
        if let Some(path) = raw.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad("sqlite:// needs a path"));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return match postgres::tls::split(raw) {
                Ok(_) => Ok(Location::Postgres(raw.to_owned())),
                Err(e) => Err(bad(&e.to_string())),
            };
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            return Err(bad(&format!(
                "unknown scheme {scheme:?}: give a file path, sqlite://PATH or postgres://…"
            )));
        }
        Ok(Location::Sqlite(PathBuf::from(raw)))
    }

    /// The location for logs and errors: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => postgres::redact(url),
        }
    }
}

/// Opens the store `--db` names for `tenant`, with the event writer committing at most
/// `group_max` events per transaction. Needs a tokio runtime (the writer, the probe).
/// On SQLite, `tenant`'s data is in the `--db` file when that file holds it, else in a
/// file of its own beside it ([`sqlite::file_of`]); a PostgreSQL database keys every
/// row by it.
pub async fn open(
    location: &Location,
    tenant: &str,
    group_max: usize,
) -> Result<SharedStore, StoreError> {
    open_with(location, tenant, group_max, SchemaOptions::default()).await
}

/// [`open`], creating a new PostgreSQL schema with `options` (SQLite ignores them).
pub async fn open_with(
    location: &Location,
    tenant: &str,
    group_max: usize,
    options: SchemaOptions,
) -> Result<SharedStore, StoreError> {
    match location {
        Location::Sqlite(path) => {
            let file = sqlite::file_of(path, tenant)?;
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            Ok(Arc::new(SqliteStore::open(&file, group_max)?))
        }
        Location::Postgres(url) => Ok(Arc::new(
            PostgresStore::connect_with(url, tenant, group_max, options).await?,
        )),
    }
}

/// [`open`], plus read replicas at `replica_urls` (PostgreSQL only) whose lag may be
/// at most `max_lag` (see [`replicas`]). Without replicas, just [`open`].
pub async fn open_with_replicas(
    location: &Location,
    replica_urls: &[String],
    max_lag: Duration,
    tenant: &str,
    group_max: usize,
    options: SchemaOptions,
) -> Result<SharedStore, StoreError> {
    if replica_urls.is_empty() {
        return open_with(location, tenant, group_max, options).await;
    }
    for url in replica_urls {
        if let Location::Sqlite(_) = Location::parse(url)? {
            return Err(StoreError::BadLocation(
                postgres::redact(url),
                "--db-replica must be a postgres:// URL".into(),
            ));
        }
    }
    match location {
        Location::Sqlite(_) => Err(StoreError::BadLocation(
            location.display(),
            "--db-replica needs a PostgreSQL --db (SQLite has no replicas)".into(),
        )),
        Location::Postgres(url) => {
            let primary = PostgresStore::connect_with(url, tenant, group_max, options).await?;
            Ok(replicas::ReplicatedStore::new(
                primary,
                replica_urls,
                max_lag,
            )?)
        }
    }
}

/// Opens the stores of the tenants an origin serves besides its own `--tenant`: on
/// SQLite a file per tenant next to the main one ([`sqlite::tenant_file`]); on
/// PostgreSQL the same database and one connection pool, every row keyed by tenant.
/// (Read replicas serve the main tenant only.)
pub struct TenantStores {
    group_max: usize,
    backend: TenantStoresBackend,
}

enum TenantStoresBackend {
    /// The main database file.
    Sqlite(PathBuf),
    /// A store on the database whose pool the tenants' stores share.
    Postgres(PostgresStore),
}

impl TenantStores {
    /// Ready to open tenants' stores beside `location` (on PostgreSQL: connects and
    /// applies the migrations now), each event writer committing at most `group_max`
    /// events per transaction.
    pub async fn new(
        location: &Location,
        group_max: usize,
        options: SchemaOptions,
    ) -> Result<Self, StoreError> {
        let backend = match location {
            Location::Sqlite(path) => TenantStoresBackend::Sqlite(path.clone()),
            Location::Postgres(url) => TenantStoresBackend::Postgres(
                PostgresStore::connect_with(url, "", group_max, options).await?,
            ),
        };
        Ok(TenantStores { group_max, backend })
    }

    /// Opens `tenant`'s store (creating its SQLite file on first use).
    pub async fn open(&self, tenant: &contract::Tenant) -> Result<SharedStore, StoreError> {
        match &self.backend {
            TenantStoresBackend::Sqlite(main) => {
                let (main, tenant) = (main.clone(), tenant.to_string());
                let group_max = self.group_max;
                let store = tokio::task::spawn_blocking(move || {
                    let file = sqlite::file_of(&main, &tenant)?;
                    if let Some(dir) = file.parent() {
                        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                            path: dir.display().to_string(),
                            source,
                        })?;
                    }
                    SqliteStore::open(&file, group_max)
                })
                .await
                .map_err(|e| StoreError::Task(e.to_string()))??;
                Ok(Arc::new(store))
            }
            TenantStoresBackend::Postgres(base) => {
                Ok(Arc::new(base.for_tenant(tenant.as_str(), self.group_max)))
            }
        }
    }
}

/// Opens the tenant registry in the store `--db` names (creating or migrating its
/// schema as [`open`] does), without an event writer: for `origin tenants` and the
/// admin routes.
pub async fn open_tenants(
    location: &Location,
) -> Result<crate::tenants::SharedRegistry, StoreError> {
    match location {
        Location::Sqlite(path) => Ok(Arc::new(sqlite::SqliteTenants::open(path)?)),
        Location::Postgres(url) => Ok(Arc::new(postgres::PostgresTenants::connect(url).await?)),
    }
}

// The business rules as the store holds them (`crate::rules` keeps the rules themselves,
// free of any store).

/// Loads the stored rules into `cell` when they are newer than what it holds (a
/// retrain, the scheduled publish and `origin publish` call it, so a change stored
/// through another origin is read there). A stored document that no longer validates
/// is logged and the cell kept as it is; a store error is returned.
pub async fn load_rules(
    store: &dyn Store,
    cell: &crate::rules::LiveRules,
) -> Result<(), StoreError> {
    let Some(stored) = store.rules().await? else {
        return Ok(());
    };
    match crate::rules::Current::from_stored(&stored) {
        Ok(current) => {
            cell.replace_if_newer(current);
        }
        Err(e) => tracing::error!(
            version = stored.version,
            error = %e,
            "the stored business rules do not validate; the rules served stay as they are"
        ),
    }
    Ok(())
}

/// The items `rules`' fatigue keeps out of the lists of `users` (`None`: every user)
/// at `now`: nothing without a fatigue rule or a store. Fatigue is soft: a store that
/// cannot answer is logged and the lists are built without it.
pub async fn fatigued_for(
    store: Option<&SharedStore>,
    rules: &crate::rules::RuleSet,
    users: Option<Vec<contract::UserId>>,
    now: i64,
) -> crate::rules::Fatigued {
    let (Some(store), Some(fatigue)) = (store, rules.fatigue()) else {
        return crate::rules::Fatigued::default();
    };
    let all = users.is_none();
    match store.fatigued(users, fatigue, now).await {
        Ok(f) => {
            if f.truncated && all {
                tracing::warn!(
                    pairs = f.pairs(),
                    "fatigue read cut at its bound; some fatigued items stay in lists"
                );
            }
            f
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the impressions fatigue counts; lists built without fatigue");
            crate::rules::Fatigued::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_or_sqlite_url_is_sqlite_and_other_schemes_are_refused() {
        assert_eq!(
            Location::parse("var/origin.sqlite").unwrap(),
            Location::Sqlite("var/origin.sqlite".into())
        );
        assert_eq!(
            Location::parse("sqlite:///tmp/x.db").unwrap(),
            Location::Sqlite("/tmp/x.db".into())
        );
        for bad in [
            "",
            "sqlite://",
            "mysql://h/db",
            "postgres://u:pw@h:notaport/db",
        ] {
            let e = Location::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--db"), "{e}");
            assert!(!e.contains("pw"), "{e}");
        }
        let pg = Location::parse("postgresql://app:hunter2@db:5432/recs").unwrap();
        assert_eq!(
            pg,
            Location::Postgres("postgresql://app:hunter2@db:5432/recs".into())
        );
        assert!(!format!("{pg:?}").contains("hunter2"));
        assert_eq!(pg.display(), "postgresql://app:***@db:5432/recs");
        assert!(matches!(
            Location::parse("postgres://localhost/recs"),
            Ok(Location::Postgres(_))
        ));
    }
}
