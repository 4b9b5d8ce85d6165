//! Read replicas (`--db-replica URL`, repeatable): a [`Store`] over the PostgreSQL
//! primary and its streaming replicas.
//!
//! - **Writes** (append, import, replay, edge reports) go to the primary.
//! - **Reads** of serving, analytics and training (`counts`, `training_set`, the
//!   analytics queries, `read_events`, `projections`) go to a healthy replica, spread
//!   round-robin; with no healthy replica, to the primary. A read that fails on a
//!   replica marks it unhealthy and is answered by the primary, so a replica going
//!   down costs no error.
//! - `training_set_upto` (a follower training the leader's data, see `crate::retrain`)
//!   reads a replica that has replayed up to the watermark, else the primary;
//!   `latest_model` reads the primary, `record_model` writes it.
//! - **`user_history` stays on the primary.** The republish right after an event reads
//!   the user's history to rescore them; it must see the event it was called for (read
//!   your own writes), and a replica may lag behind by up to `--replica-max-lag-ms`.
//!   It is one indexed query per user, cheap for the primary.
//!
//! Every [`CHECK_EVERY`] a task checks each replica: `pg_is_in_recovery()` (a server
//! that is not a replica is refused: it could be a promoted, diverging copy), and its
//! lag: 0 when it has replayed the primary's current WAL position
//! (`pg_current_wal_lsn()` on the primary vs `pg_last_wal_replay_lsn()`), otherwise
//! the age of the last replayed transaction (`now() - pg_last_xact_replay_timestamp()`).
//! A replica is unhealthy on an error or when its lag exceeds the bound
//! (`--replica-max-lag-ms`). The lag is the gauge `origin_db_replica_lag_seconds`
//! (label `replica`: host:port, never a password) and shown in `/health`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use contract::{ItemId, UserId};
use serde::{Deserialize, Serialize};

use crate::analytics::{RealTimeCounts, RecommendationAnalytics, Timeline};
use crate::events::Event;
use crate::rules::{Fatigue, Fatigued, StoredRules};
use crate::store::postgres::PostgresStore;
use crate::store::{
    Appended, Batch, Counts, ItemRow, Projections, ReplayReport, SharedStore, Store, StoreError,
    TrainedModel, TrainingSet, UserRow, WriteHealth,
};

/// How often every replica's health and lag are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long one health check may take before the replica counts as unhealthy.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The default bound on a replica's lag (`--replica-max-lag-ms`).
pub const DEFAULT_MAX_LAG_MS: u64 = 5_000;

/// What `/health` shows of one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `host:port` (never a password).
    pub name: String,
    pub healthy: bool,
    /// The lag at the last check (`None` before the first one or after an error).
    pub lag_ms: Option<u64>,
    /// Reads this replica answered since start.
    pub reads: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `host:port` of a PostgreSQL URL (the name of a replica in metrics and `/health`).
pub fn host_port(url: &str) -> String {
    let redacted = super::postgres::redact(url);
    let rest = redacted
        .split_once("://")
        .map_or(redacted.as_str(), |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

struct Replica {
    name: String,
    store: PostgresStore,
    status: Mutex<(bool, Option<u64>, Option<String>)>,
    reads: AtomicU64,
}

impl Replica {
    fn healthy(&self) -> bool {
        self.status.lock().map(|s| s.0).unwrap_or(false)
    }

    fn set(&self, healthy: bool, lag_ms: Option<u64>, error: Option<String>) {
        if let Some(ms) = lag_ms {
            metrics::gauge!("origin_db_replica_lag_seconds", "replica" => self.name.clone())
                .set(ms as f64 / 1000.0);
        }
        metrics::gauge!("origin_db_replica_healthy", "replica" => self.name.clone())
            .set(if healthy { 1.0 } else { 0.0 });
        if let Ok(mut s) = self.status.lock() {
            *s = (healthy, lag_ms, error);
        }
    }

    fn status(&self) -> ReplicaStatus {
        let (healthy, lag_ms, error) = self.status.lock().map(|s| s.clone()).unwrap_or((
            false,
            None,
            Some("status lock poisoned".into()),
        ));
        ReplicaStatus {
            name: self.name.clone(),
            healthy,
            lag_ms,
            reads: self.reads.load(Ordering::Relaxed),
            error,
        }
    }
}

/// The primary's store plus read replicas (see the module docs).
pub struct ReplicatedStore {
    primary: SharedStore,
    primary_pg: PostgresStore,
    replicas: Vec<Arc<Replica>>,
    next: AtomicUsize,
}

impl ReplicatedStore {
    /// Wraps `primary` (a connected PostgreSQL store) with read-only stores on
    /// `replica_urls`, and starts the health checks (every [`CHECK_EVERY`], bound
    /// `max_lag`). Replicas start unhealthy: reads go to the primary until a replica's
    /// first check passes (which runs at once).
    pub fn new(
        primary: PostgresStore,
        replica_urls: &[String],
        max_lag: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let replicas = replica_urls
            .iter()
            .map(|url| {
                Ok(Arc::new(Replica {
                    name: host_port(url),
                    store: PostgresStore::connect_replica(url, primary.tenant())?,
                    status: Mutex::new((false, None, Some("not checked yet".into()))),
                    reads: AtomicU64::new(0),
                }))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let store = Arc::new(ReplicatedStore {
            primary: Arc::new(primary.clone()),
            primary_pg: primary,
            replicas,
            next: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.check(max_lag).await;
            }
        });
        Ok(store)
    }

    /// Checks every replica once (see the module docs).
    pub async fn check(&self, max_lag: Duration) {
        let primary_lsn = async {
            let conn = self.primary_pg.pool().get().await?;
            let row = conn
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?;
            Ok::<String, StoreError>(row.get(0))
        };
        let primary_lsn = tokio::time::timeout(CHECK_TIMEOUT, primary_lsn)
            .await
            .ok()
            .and_then(Result::ok);
        for r in &self.replicas {
            let lag = tokio::time::timeout(CHECK_TIMEOUT, replica_lag(r, primary_lsn.as_deref()))
                .await
                .unwrap_or_else(|_| Err("health check timed out".into()));
            match lag {
                Ok(ms) if ms <= max_lag.as_millis() as u64 => r.set(true, Some(ms), None),
                Ok(ms) => r.set(
                    false,
                    Some(ms),
                    Some(format!(
                        "lag {ms} ms is over the bound of {} ms",
                        max_lag.as_millis()
                    )),
                ),
                Err(e) => {
                    if r.healthy() {
                        tracing::warn!(replica = %r.name, error = %e, "replica unhealthy");
                    }
                    r.set(false, None, Some(e))
                }
            }
        }
    }

    /// Every replica's state, for `/health`.
    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas.iter().map(|r| r.status()).collect()
    }

    /// The next healthy replica, round-robin, or `None`.
    fn pick(&self) -> Option<&Arc<Replica>> {
        let n = self.replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| &self.replicas[(start + k) % n])
            .find(|r| r.healthy())
    }

    /// Runs `read` on a healthy replica; on its failure (marking the replica
    /// unhealthy) or with no healthy replica, on the primary.
    async fn read<T, F, Fut>(&self, read: F) -> Result<T, StoreError>
    where
        F: Fn(Arc<dyn Store>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        if let Some(r) = self.pick() {
            let store: Arc<dyn Store> = Arc::new(r.store.clone());
            match read(store).await {
                Ok(v) => {
                    r.reads.fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    tracing::warn!(replica = %r.name, error = %e,
                        "read on a replica failed; marked unhealthy, reading the primary");
                    r.set(false, None, Some(e.to_string()));
                }
            }
        }
        read(self.primary.clone()).await
    }
}

/// The lag of replica `r` in milliseconds (see the module docs), or why it is unusable.
async fn replica_lag(r: &Replica, primary_lsn: Option<&str>) -> Result<u64, String> {
    let conn = r.store.pool().get().await.map_err(|e| e.to_string())?;
    let row = conn
        .query_one(
            "SELECT pg_is_in_recovery(),
                    CASE WHEN $1::text IS NULL THEN NULL
                         ELSE pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn())::float8
                    END,
                    (EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::float8",
            &[&primary_lsn],
        )
        .await
        .map_err(|e| StoreError::from(e).to_string())?;
    let in_recovery: bool = row.get(0);
    if !in_recovery {
        return Err("not in recovery: this server is not a replica".into());
    }
    let behind_bytes: Option<f64> = row.get(1);
    let age_ms: Option<f64> = row.get(2);
    Ok(match (behind_bytes, age_ms) {
        // Replayed everything the primary has written: no lag, however old the last
        // transaction (an idle primary writes nothing).
        (Some(b), _) if b <= 0.0 => 0,
        (_, Some(ms)) => ms.max(0.0) as u64,
        // Behind but never replayed a transaction: as far behind as can be said.
        (_, None) => u64::MAX,
    })
}

#[async_trait]
impl Store for ReplicatedStore {
    fn location(&self) -> String {
        let names: Vec<&str> = self.replicas.iter().map(|r| r.name.as_str()).collect();
        format!(
            "{} (replicas: {})",
            self.primary.location(),
            names.join(", ")
        )
    }

    async fn append(
        &self,
        events: Vec<Event>,
        client: Option<String>,
    ) -> Result<Appended, StoreError> {
        self.primary.append(events, client).await
    }

    fn write_health(&self) -> WriteHealth {
        self.primary.write_health()
    }

    async fn import(&self, batch: Batch) -> Result<(), StoreError> {
        self.primary.import(batch).await
    }

    async fn replace_content(
        &self,
        meta: Vec<(String, String)>,
        load: tokio::sync::mpsc::Receiver<crate::store::Load>,
    ) -> Result<(), StoreError> {
        self.primary.replace_content(meta, load).await
    }

    async fn replay(&self) -> Result<ReplayReport, StoreError> {
        self.primary.replay().await
    }

    async fn apply_event_retention(
        &self,
        now: i64,
        keep_months: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.primary.apply_event_retention(now, keep_months).await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.read(|s| async move { s.counts().await }).await
    }

    async fn training_set(&self) -> Result<TrainingSet, StoreError> {
        self.read(|s| async move { s.training_set().await }).await
    }

    /// On the primary: read your own writes (see the module docs).
    async fn user_history(&self, user: &UserId) -> Result<Vec<(String, f32)>, StoreError> {
        self.primary.user_history(user).await
    }

    async fn recommendation_analytics(
        &self,
        range: String,
        range_s: u64,
        now: i64,
    ) -> Result<RecommendationAnalytics, StoreError> {
        self.read(|s| {
            let range = range.clone();
            async move { s.recommendation_analytics(range, range_s, now).await }
        })
        .await
    }

    async fn timeline(
        &self,
        range: String,
        range_s: u64,
        step_s: u64,
        now: i64,
    ) -> Result<Timeline, StoreError> {
        self.read(|s| {
            let range = range.clone();
            async move { s.timeline(range, range_s, step_s, now).await }
        })
        .await
    }

    /// On the primary, as every quota read.
    async fn known(&self, users: &[String], items: &[String]) -> Result<(u64, u64), StoreError> {
        self.primary.known(users, items).await
    }

    /// On the primary: a quota counts what is committed, not what a replica has seen.
    async fn events_received_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        self.primary.events_received_since(since_ms).await
    }

    async fn real_time_counts(&self, now_ms: i64) -> Result<RealTimeCounts, StoreError> {
        self.read(|s| async move { s.real_time_counts(now_ms).await })
            .await
    }

    async fn record_edge_report(
        &self,
        report: contract::events::EdgeReport,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.primary.record_edge_report(report, now_ms).await
    }

    async fn read_events(&self, from: i64, to: i64) -> Result<Vec<(i64, Event)>, StoreError> {
        self.read(|s| async move { s.read_events(from, to).await })
            .await
    }

    async fn projections(&self) -> Result<Projections, StoreError> {
        self.read(|s| async move { s.projections().await }).await
    }

    fn replicas(&self) -> Vec<ReplicaStatus> {
        self.statuses()
    }

    /// On a replica that has replayed up to `upto_seq`, else on the primary.
    async fn training_set_upto(&self, upto_seq: Option<i64>) -> Result<TrainingSet, StoreError> {
        let set = self
            .read(|s| async move { s.training_set_upto(upto_seq).await })
            .await?;
        if upto_seq.is_some() && set.upto_seq < upto_seq {
            return self.primary.training_set_upto(upto_seq).await;
        }
        Ok(set)
    }

    async fn record_model(&self, model: &TrainedModel) -> Result<(), StoreError> {
        self.primary.record_model(model).await
    }

    /// On the primary: a replica may not have the newest record yet.
    async fn latest_model(&self) -> Result<Option<TrainedModel>, StoreError> {
        self.primary.latest_model().await
    }

    // The catalogue on the primary: a read right after a write sees it.
    async fn experiments(&self) -> Result<Vec<crate::experiments::Experiment>, StoreError> {
        self.primary.experiments().await
    }

    async fn start_experiment(
        &self,
        experiment: &crate::experiments::Experiment,
    ) -> Result<crate::experiments::StartOutcome, StoreError> {
        self.primary.start_experiment(experiment).await
    }

    async fn end_experiment(
        &self,
        name: &str,
        ended_at: i64,
        promoted: &str,
    ) -> Result<bool, StoreError> {
        self.primary.end_experiment(name, ended_at, promoted).await
    }

    async fn experiment_tallies(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<crate::experiments::UserTally>, StoreError> {
        self.read(|s| async move { s.experiment_tallies(since, until).await })
            .await
    }

    async fn upsert_items(&self, items: Vec<ItemRow>) -> Result<(), StoreError> {
        self.primary.upsert_items(items).await
    }

    async fn item(&self, item: &ItemId) -> Result<Option<ItemRow>, StoreError> {
        self.primary.item(item).await
    }

    async fn delete_item(&self, item: &ItemId) -> Result<bool, StoreError> {
        self.primary.delete_item(item).await
    }

    async fn upsert_users(&self, users: Vec<UserRow>) -> Result<(), StoreError> {
        self.primary.upsert_users(users).await
    }

    async fn user(&self, user: &UserId) -> Result<Option<UserRow>, StoreError> {
        self.primary.user(user).await
    }

    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        self.primary.delete_user(user).await
    }

    async fn rules(&self) -> Result<Option<StoredRules>, StoreError> {
        self.primary.rules().await
    }

    async fn put_rules(&self, json: String, now: i64) -> Result<StoredRules, StoreError> {
        self.primary.put_rules(json, now).await
    }

    async fn fatigued(
        &self,
        users: Option<Vec<UserId>>,
        fatigue: Fatigue,
        now: i64,
    ) -> Result<Fatigued, StoreError> {
        self.primary.fatigued(users, fatigue, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;
    use crate::store::postgres::test_server;
    use contract::{ItemId, Region};

    fn event(user: &str, item: &str) -> Event {
        Event {
            user_id: UserId::parse(user).unwrap(),
            item_id: ItemId::parse(item).unwrap(),
            kind: EventType::Purchase,
            value: None,
            timestamp: 1_764_000_000,
            context: None,
            source: None,
            region: Some(Region::parse("europe").unwrap()),
            event_id: None,
        }
    }

    async fn sql(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    #[test]
    fn a_replica_is_named_by_host_and_port_without_its_password() {
        assert_eq!(
            host_port("postgres://app:hunter2@db-replica-1:5433/recs?sslmode=disable"),
            "db-replica-1:5433"
        );
        assert_eq!(host_port("postgresql://10.0.0.7/recs"), "10.0.0.7");
    }

    /// Checks until `ok` holds of the replica's status (the health task runs too).
    async fn until(
        store: &ReplicatedStore,
        max_lag: Duration,
        ok: impl Fn(&ReplicaStatus) -> bool,
    ) -> ReplicaStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            store.check(max_lag).await;
            let s = store.statuses().remove(0);
            if ok(&s) {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads are answered by the replica (a replica whose replay is paused answers
    /// without the newest write, which the primary has), a replica lagging past the
    /// bound is left for the primary, writes and a user's history go to the primary,
    /// and a replica that stops costs no error: its reads fall back to the primary.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_to_a_healthy_replica_and_fall_back_to_the_primary() {
        let Some(server) = test_server::shared() else {
            return;
        };
        let url = server.database().await;
        let primary = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let replica = server.start_replica().unwrap();
        let db = url.rsplit('/').next().unwrap();
        let replica_url = replica.url(db);
        let max_lag = Duration::from_millis(2000);
        let store =
            ReplicatedStore::new(primary, std::slice::from_ref(&replica_url), max_lag).unwrap();
        assert_eq!(
            store.statuses()[0].name,
            format!("127.0.0.1:{}", replica.port())
        );

        store.append(vec![event("u1", "i1")], None).await.unwrap();
        until(&store, max_lag, |s| s.healthy && s.lag_ms.is_some()).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.counts().await.unwrap().interactions != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "replica never caught up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Replay paused: the replica keeps the old state, the primary moves on.
        let on_replica = sql(&replica_url).await;
        on_replica
            .batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap();
        store.append(vec![event("u1", "i2")], None).await.unwrap();
        let reads = store.statuses()[0].reads;
        assert_eq!(
            store.counts().await.unwrap().interactions,
            1,
            "the replica answered"
        );
        assert_eq!(store.statuses()[0].reads, reads + 1);
        let history = store
            .user_history(&UserId::parse("u1").unwrap())
            .await
            .unwrap();
        assert_eq!(
            history.len(),
            2,
            "a user's history reads the primary: {history:?}"
        );

        // Past the lag bound: unhealthy, the lag shows, reads go to the primary.
        tokio::time::sleep(max_lag + Duration::from_millis(300)).await;
        let lagging = until(&store, max_lag, |s| !s.healthy).await;
        assert!(lagging.lag_ms.unwrap() > 2000, "{lagging:?}");
        assert!(lagging.error.unwrap().contains("lag"));
        assert_eq!(store.counts().await.unwrap().interactions, 2);

        // Caught up again: healthy, lag 0, reads back on the replica.
        on_replica
            .batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .unwrap();
        until(&store, max_lag, |s| s.healthy && s.lag_ms.is_some()).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.counts().await.unwrap().interactions != 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "replica never caught up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reads = store.statuses()[0].reads;
        assert_eq!(store.training_set().await.unwrap().counts.interactions, 2);
        assert_eq!(store.read_events(0, i64::MAX).await.unwrap().len(), 2);
        assert_eq!(store.statuses()[0].reads, reads + 2);

        // The replica stops: no error, the primary answers, the replica is unhealthy.
        drop(on_replica);
        drop(replica);
        assert_eq!(store.counts().await.unwrap().interactions, 2);
        assert_eq!(store.projections().await.unwrap().training.len(), 2);
        let down = until(&store, max_lag, |s| !s.healthy).await;
        assert!(down.error.is_some());
        store.append(vec![event("u2", "i1")], None).await.unwrap();
        assert_eq!(store.counts().await.unwrap().interactions, 3);
        let shown = serde_json::to_string(&store.statuses()).unwrap();
        assert!(!shown.contains("postgres://"), "{shown}");
    }

    #[tokio::test]
    async fn a_sqlite_store_takes_no_replicas_and_a_replica_takes_no_writes() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = crate::store::Location::Sqlite(dir.path().join("o.sqlite"));
        let refused = crate::store::open_with_replicas(
            &sqlite,
            &["postgres://app:hunter2@127.0.0.1:1/db".into()],
            Duration::from_secs(5),
            "default",
            10,
            Default::default(),
        )
        .await;
        let e = refused.err().unwrap().to_string();
        assert!(e.contains("--db-replica") && !e.contains("hunter2"), "{e}");
        let replica =
            PostgresStore::connect_replica("postgres://127.0.0.1:1/db", "default").unwrap();
        let e = replica
            .append(vec![event("u1", "i1")], None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("replica"), "{e}");
        assert!(replica.write_health().writable);
    }
}
