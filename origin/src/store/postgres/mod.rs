//! The PostgreSQL backend of [`Store`] (`--db postgres://…`): for running the origin on
//! an existing database server, and several origins on one database.
//!
//! The same guarantees as SQLite: an event is acknowledged only after its transaction
//! committed (`synchronous_commit` left on); group commit (one writer task per store);
//! the projections in the same transaction; every statement parameterised (DDL names
//! are built from fixed names and integers only). Reads go through a pool of
//! connections (`deadpool-postgres`). TLS to the server is set in the URL as with
//! libpq (`sslmode`, `sslrootcert`; see `tls`).
//!
//! # Layout
//! - [`PostgresStore`]: the [`Store`] implementation: connect, catalogue writes and
//!   reads, training reads.
//! - `schema`: versioned migrations under an advisory lock, event partitions.
//! - `event_log`: the writer task (group commit), replay, reads of the log.
//! - `project`: the projections of a group of events, in a few round trips.
//! - `analytics`: the analytics queries.
//! - `models`: the record of trained models (every origin serves the newest).
//! - `experiments`: the tenants' A/B experiments.
//! - `tls`: TLS to the server from the URL's `sslmode` and `sslrootcert`.
//! - `tenants`: the tenant registry ([`PostgresTenants`]).
//! - `rules`: the tenants' business rules and the impressions fatigue counts.
//! - `test_server`: a throwaway PostgreSQL server for tests (Debian's binaries).

pub mod analytics;
pub mod event_log;
pub mod experiments;
pub mod models;
pub mod project;
pub mod rules;
pub mod schema;
pub mod tenants;
#[doc(hidden)]
pub mod test_server;
pub mod tls;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use contract::{ItemId, UserId};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;

use crate::analytics::{RealTimeCounts, RecommendationAnalytics, Timeline};
use crate::events::Event;
use crate::model::{Interaction, ItemIdx, ItemText, TrainingData, UserIdx};
use crate::rules::{Fatigue, Fatigued, StoredRules};
use crate::store::{
    parse_attributes, Appended, Batch, Counts, IdMaps, ItemRow, Load, Projections, ReplayReport,
    SchemaOptions, Store, StoreError, TrainedModel, TrainingSet, UserRow, WriteHealth,
};

use event_log::Writer;
pub use tenants::PostgresTenants;

/// Connections in the pool, at most (the writer task takes one per group commit).
pub const POOL_SIZE: usize = 16;
/// Rows of one table written by one statement of an import.
pub const IMPORT_CHUNK: usize = 10_000;

/// `url` with any password replaced by `***` (in the user info and in a `password=`
/// query parameter), for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The store of one tenant in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    location: String,
    tenant: String,
    pool: Pool,
    /// `None` for a read-only connection to a replica ([`PostgresStore::connect_replica`]).
    writer: Option<Writer>,
    /// Hash partitions of each per-user table, as the schema has them.
    user_partitions: u32,
}

impl PostgresStore {
    /// Connects to `url`, applies the migrations (under a lock: several origins may
    /// start at once), creates the event partitions ahead and starts the event writer,
    /// which commits at most `group_max` events per transaction. Needs a tokio runtime.
    pub async fn connect(url: &str, tenant: &str, group_max: usize) -> Result<Self, StoreError> {
        Self::connect_with(url, tenant, group_max, SchemaOptions::default()).await
    }

    /// [`PostgresStore::connect`], creating a new schema with `options` (see
    /// [`SchemaOptions`]; an existing schema keeps its partitions, with a warning when
    /// they are not the number asked for).
    pub async fn connect_with(
        url: &str,
        tenant: &str,
        group_max: usize,
        options: SchemaOptions,
    ) -> Result<Self, StoreError> {
        let requested = options
            .user_partitions
            .map(schema::check_user_partitions)
            .transpose()?;
        let (location, pool) = Self::pool_for(url)?;
        let at = |e: StoreError| StoreError::Postgres(format!("{location}: {e}"));
        let user_partitions = {
            let mut conn = pool.get().await.map_err(|e| at(e.into()))?;
            let client: &mut tokio_postgres::Client = &mut conn;
            schema::migrate(
                client,
                event_log::now_ms() / 1000,
                requested.unwrap_or(schema::USER_PARTITIONS),
            )
            .await
            .map_err(at)?
        };
        if let Some(note) = schema::partitions_note(requested, user_partitions) {
            tracing::warn!(db = %location, "{note}");
        }
        let writer = Writer::start(pool.clone(), tenant.to_owned(), group_max);
        Ok(PostgresStore {
            location,
            tenant: tenant.to_owned(),
            pool,
            writer: Some(writer),
            user_partitions,
        })
    }

    /// A store for `tenant` on the same database and connection pool, with an event
    /// writer of its own (an origin serving several tenants opens one per tenant it
    /// serves; the schema is this store's, already migrated). Needs a tokio runtime.
    pub fn for_tenant(&self, tenant: &str, group_max: usize) -> Self {
        PostgresStore {
            location: self.location.clone(),
            tenant: tenant.to_owned(),
            pool: self.pool.clone(),
            writer: self
                .writer
                .as_ref()
                .map(|_| Writer::start(self.pool.clone(), tenant.to_owned(), group_max)),
            user_partitions: self.user_partitions,
        }
    }

    /// The hash partitions of each per-user table (0 for a replica, which does not
    /// look).
    pub fn user_partitions(&self) -> u32 {
        self.user_partitions
    }

    /// A read-only store on a streaming replica at `url`: no migrations (the primary
    /// applies them and the replica replays them), no writer; every write method fails.
    /// Connects lazily, so a replica that is down at start is only unhealthy.
    pub fn connect_replica(url: &str, tenant: &str) -> Result<Self, StoreError> {
        let (location, pool) = Self::pool_for(url)?;
        Ok(PostgresStore {
            location,
            tenant: tenant.to_owned(),
            pool,
            writer: None,
            user_partitions: 0,
        })
    }

    /// The writer, or an error naming a replica (which takes no writes).
    fn writer(&self) -> Result<&Writer, StoreError> {
        self.writer.as_ref().ok_or_else(|| {
            StoreError::Postgres(format!("{}: a read replica takes no writes", self.location))
        })
    }

    /// The redacted location and a connection pool for `url` (not connected yet).
    fn pool_for(url: &str) -> Result<(String, Pool), StoreError> {
        let location = redact(url);
        let (config, tls) = tls::config_and_connector(url)
            .map_err(|e| StoreError::BadLocation(location.clone(), e.to_string()))?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok((location, pool))
    }

    /// The tenant whose rows this store reads and writes.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Writes a batch in one transaction (all or nothing; see [`insert_rows`]).
    async fn insert_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        insert_rows(&tx, &self.tenant, batch).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::replace_content`]: one transaction that deletes the tenant's items,
    /// users and interactions, sets `meta` and writes every batch until [`Load::End`].
    async fn replace_all(
        &self,
        meta: Vec<(String, String)>,
        mut load: tokio::sync::mpsc::Receiver<Load>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        // Fixed table names, never input.
        for table in ["interactions", "users", "items"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE tenant = $1"),
                &[&tenant],
            )
            .await?;
        }
        for (key, value) in &meta {
            tx.execute(
                "INSERT INTO meta(tenant, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value",
                &[&tenant, key, value],
            )
            .await?;
        }
        loop {
            match load.recv().await {
                Some(Load::Batch(batch)) => insert_rows(&tx, tenant, &batch).await?,
                Some(Load::End) => break,
                // Dropping the transaction rolls it back.
                None => {
                    return Err(StoreError::Task(
                        "the load ended before its last batch; nothing was stored".into(),
                    ))
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
    async fn read_counts(
        &self,
        conn: &impl tokio_postgres::GenericClient,
    ) -> Result<Counts, StoreError> {
        let row = conn
            .query_one(
                "SELECT (SELECT COUNT(*) FROM users WHERE tenant = $1),
                        (SELECT COUNT(*) FROM items WHERE tenant = $1),
                        (SELECT COUNT(*) FROM interactions WHERE tenant = $1)",
                &[&self.tenant],
            )
            .await?;
        let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        Ok(Counts {
            users: n(0),
            items: n(1),
            interactions: n(2),
        })
    }

    /// The training set; with `upto`, only the interactions imported or of events with
    /// seq ≤ `upto` (see [`Store::training_set_upto`]).
    async fn read_training_set(&self, upto: Option<i64>) -> Result<TrainingSet, StoreError> {
        let tenant = self.tenant.as_str();
        let mut conn = self.pool.get().await?;
        // One snapshot for the counts and every table.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut counts = self.read_counts(&*tx).await?;
        let upto_seq: Option<i64> = tx
            .query_one(
                "SELECT MAX(event_seq) FROM interactions WHERE tenant = $1
                     AND ($2::bigint IS NULL OR event_seq <= $2)",
                &[&tenant, &upto],
            )
            .await?
            .get(0);
        // As of a watermark: users first seen in events after it are left out, as the
        // retrain that recorded the watermark did not know them (its users were those
        // of its snapshot). Read from the log's newest events only (its primary key).
        let mut later_users = std::collections::HashSet::new();
        if let Some(w) = upto {
            for r in tx
                .query(
                    "SELECT DISTINCT e.user_id FROM events e WHERE e.tenant = $1 AND e.seq > $2
                     AND NOT EXISTS (SELECT 1 FROM interactions i WHERE i.tenant = e.tenant
                         AND i.user_id = e.user_id AND (i.event_seq IS NULL OR i.event_seq <= $2))",
                    &[&tenant, &w],
                )
                .await?
            {
                later_users.insert(r.get::<_, String>(0));
            }
        }
        let mut maps = IdMaps::default();
        let mut user_index: HashMap<String, UserIdx> = HashMap::new();
        for r in tx
            .query(
                "SELECT u.user_id, u.country, COALESCE(c.users, 0) FROM users u
                 LEFT JOIN client_users c ON c.tenant = u.tenant AND c.client = u.client
                 WHERE u.tenant = $1 ORDER BY u.user_id",
                &[&tenant],
            )
            .await?
        {
            let id: String = r.get(0);
            if later_users.contains(&id) {
                continue;
            }
            let client_users: i64 = r.get(2);
            user_index.insert(id.clone(), maps.user_ids.len() as UserIdx);
            maps.user_ids.push(id);
            maps.user_country.push(r.get(1));
            maps.user_client_users
                .push(client_users.clamp(0, i64::from(u32::MAX)) as u32);
        }
        let mut item_index: HashMap<String, ItemIdx> = HashMap::new();
        let mut item_text = Vec::new();
        for r in tx
            .query(
                "SELECT item_id, title, categories, tags, from_events, description, available
                 FROM items WHERE tenant = $1 ORDER BY item_id",
                &[&tenant],
            )
            .await?
        {
            let id: String = r.get(0);
            item_index.insert(id.clone(), maps.item_ids.len() as ItemIdx);
            maps.item_ids.push(id);
            maps.item_from_events.push(r.get(4));
            maps.item_available.push(r.get(6));
            item_text.push(ItemText {
                title: r.get(1),
                description: r.get(5),
                categories: split_list(r.get(2)),
                tags: split_list(r.get(3)),
            });
        }
        // Exact capacity, and rows streamed: at millions of rows, neither doubling growth
        // nor a second copy of every row in memory.
        let mut interactions = Vec::with_capacity(counts.interactions as usize);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tenant, &upto];
        let rows = tx
            .query_raw(
                "SELECT user_id, item_id, weight, ts FROM interactions WHERE tenant = $1
                     AND ($2::bigint IS NULL OR event_seq IS NULL OR event_seq <= $2)",
                params,
            )
            .await?;
        let mut rows = std::pin::pin!(rows);
        while let Some(r) = rows.next().await {
            let r = r?;
            let (u, i): (&str, &str) = (r.get(0), r.get(1));
            // Both exist: inserts create missing users and items in the same transaction.
            if let (Some(&user), Some(&item)) = (user_index.get(u), item_index.get(i)) {
                interactions.push(Interaction {
                    user,
                    item,
                    weight: r.get::<_, f64>(2) as f32,
                    timestamp: r.get(3),
                });
            }
        }
        tx.commit().await?;
        if upto.is_some() {
            counts.interactions = interactions.len() as u64;
            counts.users = maps.user_ids.len() as u64;
        }
        let data = TrainingData {
            n_users: maps.user_ids.len(),
            n_items: maps.item_ids.len(),
            interactions,
            item_text,
            user_region: maps.user_country.clone(),
            user_weight: Vec::new(),
        };
        Ok(TrainingSet {
            counts,
            data,
            maps,
            upto_seq,
        })
    }
}

/// The rows of `rows` whose key is not repeated later (the last one wins): one
/// statement may not upsert a row twice.
fn last_of<T>(rows: &[T], key: impl Fn(&T) -> &str) -> Vec<&T> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&T> = rows.iter().rev().filter(|r| seen.insert(key(r))).collect();
    out.reverse();
    out
}

/// The item columns [`item_from_row`] reads, in its order (`attributes` as text).
const ITEM_COLUMNS: &str = "item_id, title, description, categories, tags, price, currency, \
     available, created_at, attributes::text";

/// An item from a row of [`ITEM_COLUMNS`].
fn item_from_row(r: &tokio_postgres::Row) -> Result<ItemRow, StoreError> {
    let item_id: String = r.get(0);
    let attributes = parse_attributes(&item_id, r.get(9))?;
    Ok(ItemRow {
        title: r.get(1),
        description: r.get(2),
        categories: split_list(r.get(3)),
        tags: split_list(r.get(4)),
        price: r.get(5),
        currency: r.get(6),
        available: r.get(7),
        created_at: r.get(8),
        attributes,
        item_id,
    })
}

/// Upserts `items` (every column; a later row of an id wins) in `tx`, a statement per
/// [`IMPORT_CHUNK`] rows; `catalogue` also marks them as catalogue items (no longer
/// known only from events).
async fn upsert_item_rows(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &str,
    items: &[ItemRow],
    catalogue: bool,
) -> Result<(), StoreError> {
    for chunk in last_of(items, |i| &i.item_id).chunks(IMPORT_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|i| i.item_id.as_str()).collect();
        let titles: Vec<&str> = chunk.iter().map(|i| i.title.as_str()).collect();
        let descriptions: Vec<&str> = chunk.iter().map(|i| i.description.as_str()).collect();
        let categories: Vec<String> = chunk.iter().map(|i| i.categories.join(",")).collect();
        let tags: Vec<String> = chunk.iter().map(|i| i.tags.join(",")).collect();
        let prices: Vec<Option<f64>> = chunk.iter().map(|i| i.price).collect();
        let currencies: Vec<Option<&str>> = chunk.iter().map(|i| i.currency.as_deref()).collect();
        let available: Vec<bool> = chunk.iter().map(|i| i.available).collect();
        let created: Vec<i64> = chunk.iter().map(|i| i.created_at).collect();
        let attributes: Vec<String> = chunk.iter().map(|i| i.attributes_json()).collect();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
            &tenant,
            &ids,
            &titles,
            &descriptions,
            &categories,
            &tags,
            &prices,
            &currencies,
            &available,
            &created,
            &attributes,
            &catalogue,
        ];
        tx.execute(
            "INSERT INTO items(tenant, item_id, title, description, categories, tags, price,
                     currency, available, created_at, attributes, from_events)
                 SELECT $1, x.id, x.title, x.description, x.categories, x.tags, x.price,
                     x.currency, x.available, x.created_at, x.attributes::jsonb, false
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::float8[], $8::text[], $9::bool[], $10::bigint[], $11::text[])
                     AS x(id, title, description, categories, tags, price, currency,
                          available, created_at, attributes)
                 ON CONFLICT (tenant, item_id) DO UPDATE SET title = EXCLUDED.title,
                     description = EXCLUDED.description, categories = EXCLUDED.categories,
                     tags = EXCLUDED.tags, price = EXCLUDED.price,
                     currency = EXCLUDED.currency, available = EXCLUDED.available,
                     created_at = EXCLUDED.created_at, attributes = EXCLUDED.attributes,
                     from_events = CASE WHEN $12 THEN false ELSE items.from_events END",
            &params,
        )
        .await?;
    }
    Ok(())
}

/// Upserts `users` (country and segment; a later row of an id wins) in `tx`, a
/// statement per [`IMPORT_CHUNK`] rows.
async fn upsert_user_rows(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &str,
    users: &[UserRow],
) -> Result<(), StoreError> {
    for chunk in last_of(users, |u| &u.user_id).chunks(IMPORT_CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|u| u.user_id.as_str()).collect();
        let countries: Vec<Option<&str>> = chunk.iter().map(|u| u.country.as_deref()).collect();
        let segments: Vec<Option<&str>> = chunk.iter().map(|u| u.segment.as_deref()).collect();
        tx.execute(
            "INSERT INTO users(tenant, user_id, country, segment)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[])
                 ON CONFLICT (tenant, user_id) DO UPDATE SET country = EXCLUDED.country,
                     segment = EXCLUDED.segment",
            &[&tenant, &ids, &countries, &segments],
        )
        .await?;
    }
    Ok(())
}

/// Writes a batch into the transaction `tx`: items and users a statement per
/// [`IMPORT_CHUNK`] rows (upserted, a later row replacing an earlier one; users and items
/// named only by interactions are created with empty attributes), then the interactions
/// in one binary `COPY`.
async fn insert_rows(
    tx: &tokio_postgres::Transaction<'_>,
    tenant: &str,
    batch: &Batch,
) -> Result<(), StoreError> {
    upsert_item_rows(tx, tenant, &batch.items, false).await?;
    upsert_user_rows(tx, tenant, &batch.users).await?;
    let mut users_done: std::collections::HashSet<&str> =
        batch.users.iter().map(|u| u.user_id.as_str()).collect();
    let mut items_done: std::collections::HashSet<&str> =
        batch.items.iter().map(|i| i.item_id.as_str()).collect();
    let new_users: Vec<&str> = batch
        .interactions
        .iter()
        .map(|r| r.user_id.as_str())
        .filter(|u| users_done.insert(u))
        .collect();
    let new_items: Vec<&str> = batch
        .interactions
        .iter()
        .map(|r| r.item_id.as_str())
        .filter(|i| items_done.insert(i))
        .collect();
    for chunk in new_users.chunks(IMPORT_CHUNK) {
        tx.execute(
            "INSERT INTO users(tenant, user_id) SELECT $1, u FROM UNNEST($2::text[]) AS x(u)
                 ON CONFLICT (tenant, user_id) DO NOTHING",
            &[&tenant, &chunk],
        )
        .await?;
    }
    for chunk in new_items.chunks(IMPORT_CHUNK) {
        tx.execute(
            "INSERT INTO items(tenant, item_id) SELECT $1, i FROM UNNEST($2::text[]) AS x(i)
                 ON CONFLICT (tenant, item_id) DO NOTHING",
            &[&tenant, &chunk],
        )
        .await?;
    }
    // The interactions, the bulk of a load, by binary COPY: typed values, no SQL text.
    if !batch.interactions.is_empty() {
        use tokio_postgres::types::Type;
        let sink = tx
            .copy_in(
                "COPY interactions(tenant, user_id, item_id, weight, ts) FROM STDIN (FORMAT binary)",
            )
            .await?;
        let writer = tokio_postgres::binary_copy::BinaryCopyInWriter::new(
            sink,
            &[Type::TEXT, Type::TEXT, Type::TEXT, Type::FLOAT8, Type::INT8],
        );
        let mut writer = std::pin::pin!(writer);
        for r in &batch.interactions {
            writer
                .as_mut()
                .write(&[&tenant, &r.user_id, &r.item_id, &f64::from(r.weight), &r.ts])
                .await?;
        }
        writer.finish().await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn append(
        &self,
        events: Vec<Event>,
        client: Option<String>,
    ) -> Result<Appended, StoreError> {
        self.writer()?.append(events, client).await
    }

    fn write_health(&self) -> WriteHealth {
        self.writer.as_ref().map(Writer::health).unwrap_or_default()
    }

    async fn import(&self, batch: Batch) -> Result<(), StoreError> {
        self.writer()?;
        self.insert_batch(&batch).await
    }

    async fn replace_content(
        &self,
        meta: Vec<(String, String)>,
        load: tokio::sync::mpsc::Receiver<Load>,
    ) -> Result<(), StoreError> {
        self.writer()?;
        self.replace_all(meta, load).await
    }

    async fn replay(&self) -> Result<ReplayReport, StoreError> {
        self.writer()?;
        event_log::replay(&self.pool, &self.tenant).await
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let conn = self.pool.get().await?;
        self.read_counts(&**conn).await
    }

    async fn training_set(&self) -> Result<TrainingSet, StoreError> {
        self.read_training_set(None).await
    }

    async fn training_set_upto(&self, upto_seq: Option<i64>) -> Result<TrainingSet, StoreError> {
        self.read_training_set(upto_seq).await
    }

    async fn record_model(&self, model: &TrainedModel) -> Result<(), StoreError> {
        self.writer()?;
        models::record(&self.pool, &self.tenant, model).await
    }

    async fn latest_model(&self) -> Result<Option<TrainedModel>, StoreError> {
        models::latest(&self.pool, &self.tenant).await
    }

    async fn user_history(&self, user: &UserId) -> Result<Vec<(String, f32)>, StoreError> {
        let conn = self.pool.get().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT item_id, SUM(weight) FROM interactions WHERE tenant = $1 AND user_id = $2
                 GROUP BY item_id ORDER BY item_id",
            )
            .await?;
        Ok(conn
            .query(&stmt, &[&self.tenant, &user.as_str()])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<_, f64>(1) as f32))
            .collect())
    }

    async fn recommendation_analytics(
        &self,
        range: String,
        range_s: u64,
        now: i64,
    ) -> Result<RecommendationAnalytics, StoreError> {
        analytics::recommendations(&self.pool, &self.tenant, &range, range_s, now).await
    }

    async fn timeline(
        &self,
        range: String,
        range_s: u64,
        step_s: u64,
        now: i64,
    ) -> Result<Timeline, StoreError> {
        analytics::timeline(&self.pool, &self.tenant, &range, range_s, step_s, now).await
    }

    async fn known(&self, users: &[String], items: &[String]) -> Result<(u64, u64), StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT (SELECT COUNT(*) FROM users WHERE tenant = $1 AND user_id = ANY($2)),
                        (SELECT COUNT(*) FROM items WHERE tenant = $1 AND item_id = ANY($3))",
                &[&self.tenant, &users, &items],
            )
            .await?;
        let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        Ok((n(0), n(1)))
    }

    async fn events_received_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        let n: i64 = self
            .pool
            .get()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM events WHERE tenant = $1 AND received_at >= $2
                 AND type <> 'recommendation_viewed'",
                &[&self.tenant, &since_ms],
            )
            .await?
            .get(0);
        Ok(n.max(0) as u64)
    }

    async fn real_time_counts(&self, now_ms: i64) -> Result<RealTimeCounts, StoreError> {
        analytics::real_time_counts(&self.pool, &self.tenant, now_ms).await
    }

    async fn record_edge_report(
        &self,
        report: contract::events::EdgeReport,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.writer()?;
        analytics::record_edge_report(&self.pool, &self.tenant, &report, now_ms).await
    }

    async fn read_events(&self, from: i64, to: i64) -> Result<Vec<(i64, Event)>, StoreError> {
        event_log::read_events(&self.pool, &self.tenant, from, to).await
    }

    async fn projections(&self) -> Result<Projections, StoreError> {
        event_log::read_projections(&self.pool, &self.tenant).await
    }

    async fn apply_event_retention(
        &self,
        now: i64,
        keep_months: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.writer()?;
        let conn = self.pool.get().await?;
        schema::maintain(&conn, now, keep_months).await
    }

    async fn upsert_items(&self, items: Vec<ItemRow>) -> Result<(), StoreError> {
        self.writer()?;
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        upsert_item_rows(&tx, &self.tenant, &items, true).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn item(&self, item: &ItemId) -> Result<Option<ItemRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                &format!("SELECT {ITEM_COLUMNS} FROM items WHERE tenant = $1 AND item_id = $2"),
                &[&self.tenant, &item.as_str()],
            )
            .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn delete_item(&self, item: &ItemId) -> Result<bool, StoreError> {
        self.writer()?;
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "DELETE FROM items WHERE tenant = $1 AND item_id = $2",
                &[&self.tenant, &item.as_str()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn upsert_users(&self, users: Vec<UserRow>) -> Result<(), StoreError> {
        self.writer()?;
        let mut conn = self.pool.get().await?;
        let tx = conn.transaction().await?;
        upsert_user_rows(&tx, &self.tenant, &users).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn user(&self, user: &UserId) -> Result<Option<UserRow>, StoreError> {
        let conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT user_id, country, segment FROM users WHERE tenant = $1 AND user_id = $2",
                &[&self.tenant, &user.as_str()],
            )
            .await?;
        Ok(row.map(|r| UserRow {
            user_id: r.get(0),
            country: r.get(1),
            segment: r.get(2),
        }))
    }

    async fn delete_user(&self, user: &UserId) -> Result<bool, StoreError> {
        self.writer()?;
        let conn = self.pool.get().await?;
        let n = conn
            .execute(
                "DELETE FROM users WHERE tenant = $1 AND user_id = $2",
                &[&self.tenant, &user.as_str()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn rules(&self) -> Result<Option<StoredRules>, StoreError> {
        rules::read(&self.pool, &self.tenant).await
    }

    async fn put_rules(&self, json: String, now: i64) -> Result<StoredRules, StoreError> {
        self.writer()?;
        rules::put(&self.pool, &self.tenant, &json, now).await
    }

    async fn fatigued(
        &self,
        users: Option<Vec<UserId>>,
        fatigue: Fatigue,
        now: i64,
    ) -> Result<Fatigued, StoreError> {
        rules::fatigued(&self.pool, &self.tenant, users, fatigue, now).await
    }

    async fn experiments(&self) -> Result<Vec<crate::experiments::Experiment>, StoreError> {
        experiments::list(&self.pool, &self.tenant).await
    }

    async fn start_experiment(
        &self,
        experiment: &crate::experiments::Experiment,
    ) -> Result<crate::experiments::StartOutcome, StoreError> {
        self.writer()?;
        experiments::start(&self.pool, &self.tenant, experiment).await
    }

    async fn end_experiment(
        &self,
        name: &str,
        ended_at: i64,
        promoted: &str,
    ) -> Result<bool, StoreError> {
        self.writer()?;
        experiments::end(&self.pool, &self.tenant, name, ended_at, promoted).await
    }

    async fn experiment_tallies(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<crate::experiments::UserTally>, StoreError> {
        analytics::user_tallies(&self.pool, &self.tenant, since, until).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;
    use contract::{EventId, ItemId, Region};

    #[test]
    fn a_password_never_shows_in_the_location() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db.internal:5432/recs?sslmode=disable"),
            "postgres://app:***@db.internal:5432/recs?sslmode=disable"
        );
        assert_eq!(
            redact("postgresql://db/recs?user=app&password=hunter2"),
            "postgresql://db/recs?user=app&password=***"
        );
        assert_eq!(
            redact("postgres://app@127.0.0.1/recs"),
            "postgres://app@127.0.0.1/recs"
        );
        assert_eq!(redact("postgres://h"), "postgres://h");
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

    /// A new database on the shared test server, or `None` (skipped, said why).
    async fn database() -> Option<String> {
        Some(test_server::shared()?.database().await)
    }

    async fn sql(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_origins_starting_at_once_migrate_the_schema_once() {
        let Some(url) = database().await else { return };
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PostgresStore::connect(&url, "default", 10).await })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
        let db = sql(&url).await;
        let versions: Vec<i64> = db
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, (1..=schema::schema_version()).collect::<Vec<_>>());
        let partitions: Vec<String> = db
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'events'::regclass ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            partitions.len(),
            2 + schema::MONTHS_AHEAD as usize,
            "{partitions:?}"
        );
        assert!(partitions.contains(&"events_default".to_owned()));
        let per_user: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'proj_user_history'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(per_user, i64::from(schema::USER_PARTITIONS));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_of_any_time_is_stored_in_its_month_or_the_default_partition() {
        let Some(url) = database().await else { return };
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let now = event_log::now_ms() / 1000;
        let times = [0, now, now + 20 * 365 * 86_400];
        let events = times
            .iter()
            .map(|&t| event("u1", "i1", EventType::View, t))
            .collect();
        let appended = store.append(events, None).await.unwrap();
        assert_eq!(appended.last_seq - appended.first_seq, 2);
        let db = sql(&url).await;
        let places: Vec<String> = db
            .query(
                "SELECT tableoid::regclass::text FROM events ORDER BY seq",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(places[0], "events_default");
        assert!(places[1].starts_with("events_y"), "{places:?}");
        assert_eq!(places[2], "events_default");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenants_in_one_database_never_see_each_other() {
        let Some(url) = database().await else { return };
        let a = PostgresStore::connect(&url, "shop-a", 10).await.unwrap();
        let b = PostgresStore::connect(&url, "shop-b", 10).await.unwrap();
        let mut e = event("u1", "i1", EventType::Purchase, 5);
        e.event_id = Some(EventId::parse("e-1").unwrap());
        let first = a.append(vec![e.clone()], None).await.unwrap();
        let other = b.append(vec![e.clone()], None).await.unwrap();
        assert_eq!(
            (first.duplicates, other.duplicates),
            (0, 0),
            "ids are per tenant"
        );
        b.append(vec![event("u2", "i2", EventType::View, 6)], None)
            .await
            .unwrap();
        assert_eq!(a.counts().await.unwrap().users, 1);
        assert_eq!(b.counts().await.unwrap().users, 2);
        assert_eq!(a.projections().await.unwrap().user_history.len(), 1);
        assert!(a
            .read_events(other.first_seq, other.last_seq)
            .await
            .unwrap()
            .is_empty());
        a.replay().await.unwrap();
        assert_eq!(b.projections().await.unwrap().user_history.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_origins_writing_one_tenant_agree_with_a_replay() {
        let Some(url) = database().await else { return };
        let stores = [
            PostgresStore::connect(&url, "default", 50).await.unwrap(),
            PostgresStore::connect(&url, "default", 50).await.unwrap(),
        ];
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = stores[t % 2].clone();
                tokio::spawn(async move {
                    let events = (0..6)
                        .map(|k| {
                            let kind = [EventType::View, EventType::Purchase][k % 2];
                            event(
                                &format!("u{}", t % 5),
                                &format!("i{}", (t + k) % 7),
                                kind,
                                1_000 + k as i64,
                            )
                        })
                        .collect();
                    store
                        .append(events, Some(format!("c{}", t % 3)))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let live = stores[0].projections().await.unwrap();
        assert_eq!(live.training.len(), 96);
        stores[1].replay().await.unwrap();
        assert_eq!(stores[0].projections().await.unwrap(), live);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_commit_is_not_acknowledged_and_a_probe_finds_the_store_writable_again() {
        let Some(url) = database().await else { return };
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let db = sql(&url).await;
        db.batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION 'disk full (test)'; END $$;
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON proj_trending
                 FOR EACH ROW EXECUTE FUNCTION refuse();
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON meta
                 FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
        let refused = store
            .append(vec![event("u1", "i1", EventType::View, 1)], None)
            .await;
        assert!(refused.is_err());
        let health = store.write_health();
        assert!(!health.writable);
        assert!(health.error.unwrap().contains("disk full"));
        assert_eq!(store.counts().await.unwrap().interactions, 0, "rolled back");
        db.batch_execute("DROP TRIGGER refuse ON proj_trending; DROP TRIGGER refuse ON meta;")
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + crate::store::PROBE_EVERY * 4;
        while !store.write_health().writable {
            assert!(
                std::time::Instant::now() < deadline,
                "no probe recovered it"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store
            .append(vec![event("u1", "i1", EventType::View, 1)], None)
            .await
            .unwrap();
    }

    /// The plan of `query` as text.
    async fn plan(db: &tokio_postgres::Client, query: &str) -> String {
        db.query(&format!("EXPLAIN {query}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The hot queries use the indexes made for them (and partition pruning), on a
    /// table filled like a live one. Run with `--nocapture` to see the plans. (An
    /// index of a partitioned table is named per partition: `{partition}_{columns}_idx`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hot_queries_use_their_indexes() {
        let Some(url) = database().await else { return };
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let now = event_log::now_ms() / 1000;
        let db = sql(&url).await;
        db.execute(
            "INSERT INTO events(tenant, received_at, user_id, item_id, type, ts)
             SELECT 'default', ($1::bigint - g * 2) * 1000, 'u' || (g % 2000),
                    'i' || (g % 500),
                    CASE WHEN g % 3 = 0 THEN 'recommendation_viewed' ELSE 'click' END,
                    $1::bigint - g * 2
             FROM generate_series(1, 60000) g",
            &[&now],
        )
        .await
        .unwrap();
        db.batch_execute(
            "INSERT INTO interactions(tenant, user_id, item_id, weight, ts)
                 SELECT 'default', 'u' || (g % 2000), 'i' || (g % 500), 1.0, g
                 FROM generate_series(1, 60000) g;
             INSERT INTO proj_user_history(tenant, user_id, item_id, weight, events, last_ts,
                     last_seq)
                 SELECT 'default', 'u' || (g % 2000), 'i' || (g % 577), 1.0, 1, g, g
                 FROM generate_series(1, 60000) g ON CONFLICT DO NOTHING;
             ANALYZE;",
        )
        .await
        .unwrap();
        let hour_ago = now - 3600;
        let checks = [
            (
                "a user's history (serving, republish)".to_owned(),
                "SELECT item_id, SUM(weight) FROM interactions
                 WHERE tenant = 'default' AND user_id = 'u42' GROUP BY item_id ORDER BY item_id"
                    .to_owned(),
                vec!["interactions_p", "_tenant_user_id_idx"],
            ),
            (
                "a user's recent items (co-occurrence, per event)".into(),
                "SELECT item_id FROM proj_user_history WHERE tenant = 'default'
                 AND user_id = 'u42' ORDER BY last_seq DESC LIMIT 10"
                    .into(),
                vec!["_tenant_user_id_last_seq_idx"],
            ),
            (
                "the funnel of the last hour (analytics)".into(),
                format!(
                    "SELECT type, COUNT(*) FROM events WHERE tenant = 'default'
                     AND ts BETWEEN {hour_ago} AND {now} AND {}
                     GROUP BY type",
                    analytics::SERVED
                ),
                vec!["_tenant_ts_idx", "_tenant_user_id_item_id_ts_idx"],
            ),
            (
                "active users (real time)".into(),
                format!(
                    "SELECT COUNT(DISTINCT user_id) FROM events WHERE tenant = 'default'
                     AND received_at >= {}",
                    (now - 300) * 1000
                ),
                vec!["_tenant_received_at_idx"],
            ),
            (
                "events by seq (read_events, replay)".into(),
                "SELECT * FROM events WHERE tenant = 'default' AND seq BETWEEN 100 AND 150
                 ORDER BY seq"
                    .into(),
                vec!["_pkey"],
            ),
        ];
        for (what, query, indexes) in checks {
            let plan = plan(&db, &query).await;
            println!("-- {what}\n{plan}\n");
            for index in indexes {
                assert!(plan.contains(index), "{what}: no {index} in\n{plan}");
            }
        }
        drop(store);
    }

    /// The same events, in the same batches, give PostgreSQL exactly SQLite's answers:
    /// every projection row (floats to the bit), the training set, histories and the
    /// analytics; and both rebuild the same from their logs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_answers_exactly_as_sqlite_does() {
        let Some(url) = database().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let sqlite: crate::store::SharedStore = std::sync::Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("o.sqlite"), 100).unwrap(),
        );
        let pg: crate::store::SharedStore =
            std::sync::Arc::new(PostgresStore::connect(&url, "default", 100).await.unwrap());
        let kinds = EventType::ALL;
        let mut t = 1_764_000_000;
        for round in 0..20usize {
            let batch: Vec<Event> = (0..25usize)
                .map(|i| {
                    t += (i * 7 % 5) as i64 * 900 - 1800;
                    let kind = kinds[(i + round) % kinds.len()];
                    let mut e = event(
                        &format!("u{}", (i * 3 + round) % 9),
                        &format!("i{}", (i * i + round) % 17),
                        kind,
                        t,
                    );
                    e.value = match kind {
                        EventType::Rating => Some(0.1 + (i % 5) as f64 * 0.7),
                        EventType::RecommendationViewed => Some(0.33),
                        _ => None,
                    };
                    if (i + round) % 4 == 0 {
                        e.region = None;
                    }
                    if i % 6 == 0 {
                        // Ids repeat across rounds (retries), and every fifth round
                        // inside one request too.
                        let k = if i == 6 && round % 5 == 0 { 0 } else { i };
                        e.event_id =
                            Some(EventId::parse(&format!("e{}", (round * 25 + k) % 70)).unwrap());
                    }
                    e
                })
                .collect();
            let client = [None, Some("c0"), Some("c1")][round % 3].map(str::to_owned);
            let mut acks = Vec::new();
            for store in [&sqlite, &pg] {
                let a = store
                    .append(batch[..10].to_vec(), client.clone())
                    .await
                    .unwrap();
                let b = store.append(batch[10..].to_vec(), None).await.unwrap();
                acks.push((a, b));
            }
            assert_eq!(
                acks[0], acks[1],
                "the same seqs and duplicates, round {round}"
            );
        }
        let want = sqlite.projections().await.unwrap();
        assert!(!want.cooccurrence.is_empty());
        assert_eq!(pg.projections().await.unwrap(), want);
        let (a, b) = (
            sqlite.training_set().await.unwrap(),
            pg.training_set().await.unwrap(),
        );
        assert_eq!(a.counts, b.counts);
        assert_eq!(a.maps.user_ids, b.maps.user_ids);
        assert_eq!(a.maps.item_ids, b.maps.item_ids);
        assert_eq!(a.maps.user_client_users, b.maps.user_client_users);
        assert_eq!(a.maps.item_from_events, b.maps.item_from_events);
        let rows = |s: &crate::store::TrainingSet| {
            let mut v: Vec<_> = s
                .data
                .interactions
                .iter()
                .map(|i| (i.user, i.item, i.weight.to_bits(), i.timestamp))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(rows(&a), rows(&b));
        for u in ["u0", "u4", "u8", "nobody"] {
            let u = UserId::parse(u).unwrap();
            assert_eq!(
                sqlite.user_history(&u).await.unwrap(),
                pg.user_history(&u).await.unwrap()
            );
        }
        let now = t + 60;
        let (a, b) = (
            sqlite
                .recommendation_analytics("1d".into(), 86_400, now)
                .await
                .unwrap(),
            pg.recommendation_analytics("1d".into(), 86_400, now)
                .await
                .unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let (a, b) = (
            sqlite
                .timeline("1d".into(), 86_400, 3600, now)
                .await
                .unwrap(),
            pg.timeline("1d".into(), 86_400, 3600, now).await.unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let all =
            |s: crate::store::SharedStore| async move { s.read_events(0, i64::MAX).await.unwrap() };
        assert_eq!(all(sqlite.clone()).await, all(pg.clone()).await);
        sqlite.replay().await.unwrap();
        pg.replay().await.unwrap();
        assert_eq!(pg.projections().await.unwrap(), want);
        assert_eq!(sqlite.projections().await.unwrap(), want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_lands_whole_or_not_at_all_and_later_rows_win() {
        use crate::store::{InteractionRow, ItemRow, UserRow};
        let Some(url) = database().await else { return };
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let row = |u: &str, i: &str| InteractionRow {
            user_id: u.into(),
            item_id: i.into(),
            weight: 1.5,
            ts: 7,
        };
        let item = |title: &str| ItemRow {
            item_id: "i1".into(),
            title: title.into(),
            categories: vec!["a".into(), "b".into()],
            tags: vec![],
            created_at: 3,
            ..Default::default()
        };
        store
            .import(Batch {
                items: vec![item("old"), item("new")],
                users: vec![
                    UserRow {
                        user_id: "u1".into(),
                        country: Some("FR".into()),
                        segment: None,
                    },
                    UserRow {
                        user_id: "u1".into(),
                        country: Some("DE".into()),
                        segment: Some("vip".into()),
                    },
                ],
                interactions: (0..25_000)
                    .map(|k| row(&format!("u{}", k % 300), "i1"))
                    .collect(),
            })
            .await
            .unwrap();
        let set = store.training_set().await.unwrap();
        assert_eq!(
            set.counts,
            Counts {
                users: 300,
                items: 1,
                interactions: 25_000
            }
        );
        assert_eq!(set.data.interactions.len(), 25_000);
        assert_eq!(set.data.item_text[0].title, "new");
        assert_eq!(set.data.item_text[0].categories, ["a", "b"]);
        let u1 = set.maps.user_ids.iter().position(|u| u == "u1").unwrap();
        assert_eq!(set.maps.user_country[u1].as_deref(), Some("DE"));
        // A row PostgreSQL refuses (a NUL byte) fails the whole batch.
        let refused = store
            .import(Batch {
                interactions: vec![row("u900", "i900"), row("u901", "bad\0item")],
                ..Default::default()
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(store.counts().await.unwrap(), set.counts);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_whose_connections_are_cut_takes_writes_again() {
        let Some(url) = database().await else { return };
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        store
            .append(vec![event("u1", "i1", EventType::View, 1)], None)
            .await
            .unwrap();
        let db = sql(&url).await;
        let cut: i64 = db
            .query_one(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(cut >= 1);
        // A write on a cut connection fails (unacknowledged); a fresh one takes it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let appended = loop {
            match store
                .append(vec![event("u1", "i2", EventType::View, 2)], None)
                .await
            {
                Ok(a) => break a,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert!(store.write_health().writable);
        let logged = store.read_events(0, appended.last_seq).await.unwrap();
        assert_eq!(logged.len(), 2, "nothing lost, nothing doubled");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_password_shows_neither_in_the_location_nor_in_errors() {
        let Some(url) = database().await else { return };
        let with_password = url.replacen("postgres@", "postgres:s3cret@", 1);
        let store = PostgresStore::connect(&with_password, "default", 10)
            .await
            .unwrap();
        assert!(!store.location().contains("s3cret"), "{}", store.location());
        assert!(store.location().contains("postgres:***@"));
        let closed = format!(
            "postgres://app:s3cret@127.0.0.1:{}/nowhere",
            test_server::free_port_for_tests()
        );
        let err = match PostgresStore::connect(&closed, "default", 10).await {
            Ok(_) => panic!("connected to a closed port"),
            Err(e) => e.to_string(),
        };
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("app:***@127.0.0.1"), "{err}");
    }

    /// How many partitions `table` has, and the modulus of the first.
    async fn hash_partitions(db: &tokio_postgres::Client, table: &str) -> (i64, String) {
        let row = db
            .query_one(
                "SELECT COUNT(*), MIN(pg_get_expr(c.relpartbound, c.oid))
                 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = $1::text::regclass",
                &[&table],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn user_partitions_are_set_when_the_schema_is_created_and_kept_after() {
        let Some(url) = database().await else { return };
        for bad in [0, schema::MAX_USER_PARTITIONS + 1] {
            let options = SchemaOptions {
                user_partitions: Some(bad),
            };
            let e = match PostgresStore::connect_with(&url, "default", 10, options).await {
                Ok(_) => panic!("{bad} partitions accepted"),
                Err(e) => e,
            };
            assert!(
                matches!(e, StoreError::UserPartitions(n) if n == bad),
                "{e}"
            );
            assert!(e.to_string().contains("--db-user-partitions"), "{e}");
        }
        let db = sql(&url).await;
        let created: i64 = db
            .query_one(
                "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'users'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(created, 0, "a refused number creates no schema");

        let three = SchemaOptions {
            user_partitions: Some(3),
        };
        let store = PostgresStore::connect_with(&url, "default", 10, three)
            .await
            .unwrap();
        assert_eq!(store.user_partitions(), 3);
        for table in ["users", "interactions", "proj_user_history"] {
            let (n, bound) = hash_partitions(&db, table).await;
            assert_eq!(n, 3, "{table}");
            assert!(bound.contains("modulus 3"), "{table}: {bound}");
        }
        store
            .append(
                (0..30)
                    .map(|k| event(&format!("u{k}"), "i1", EventType::View, 5))
                    .collect(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap().users, 30);

        // A later start asking for another number keeps the schema's (and says so).
        let again = PostgresStore::connect_with(
            &url,
            "default",
            10,
            SchemaOptions {
                user_partitions: Some(16),
            },
        )
        .await
        .unwrap();
        assert_eq!(again.user_partitions(), 3);
        assert_eq!(hash_partitions(&db, "users").await.0, 3);
        assert_eq!(again.counts().await.unwrap().users, 30);
        let note = schema::partitions_note(Some(16), 3).unwrap();
        assert!(note.contains("16") && note.contains("with 3"), "{note}");
        assert_eq!(schema::partitions_note(None, 3), None);
        assert_eq!(schema::partitions_note(Some(3), 3), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_detaches_the_months_before_the_ones_kept() {
        let Some(url) = database().await else { return };
        let store = PostgresStore::connect(&url, "default", 10).await.unwrap();
        let db = sql(&url).await;
        // Two old months with events, as a long-running origin would have made them.
        db.batch_execute(
            "CREATE TABLE events_y2020m01 PARTITION OF events
                 FOR VALUES FROM (1577836800) TO (1580515200);
             CREATE TABLE events_y2020m02 PARTITION OF events
                 FOR VALUES FROM (1580515200) TO (1583020800);",
        )
        .await
        .unwrap();
        let now = event_log::now_ms() / 1000;
        store
            .append(
                vec![
                    event("u1", "i1", EventType::View, 1_578_000_000),
                    event("u1", "i2", EventType::View, 1_581_000_000),
                    event("u1", "i3", EventType::View, now),
                ],
                None,
            )
            .await
            .unwrap();
        let detached = schema::detach_months_before(&db, now, 3).await.unwrap();
        assert_eq!(detached, ["events_y2020m01", "events_y2020m02"]);
        let left: i64 = db
            .query_one("SELECT COUNT(*) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1, "only this month's event is still in the log");
        let archived: i64 = db
            .query_one("SELECT COUNT(*) FROM events_y2020m01", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(archived, 1, "a detached month keeps its rows");
        assert!(schema::detach_months_before(&db, now, 3)
            .await
            .unwrap()
            .is_empty());
    }
}
