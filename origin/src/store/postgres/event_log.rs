//! The durable event log on PostgreSQL and its projections: the same design as SQLite's
//! (`store/sqlite/event_log.rs`, where the projections are described).
//!
//! One writer task per store takes every batch waiting (up to `group_max` events) and
//! commits them in **one** transaction with their projections, then answers each
//! request: a request is acknowledged only after COMMIT (`synchronous_commit` stays
//! on). The transaction first takes a transaction-level advisory lock per tenant, so
//! the group commits of several origins on one database run one after another and the
//! read-modify-write projections (trending, the first-seen checks) never race.
//!
//! # Layout
//! - [`Writer`]: the writer task and its queue, write health and probe.
//! - [`append_batches`], [`project`]: one group commit.
//! - [`replay`], [`read_events`], [`read_projections`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use contract::{ItemId, Region, UserId};
use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use crate::events::{Event, EventType};
use crate::store::{
    Appended, Projections, ReplayReport, StoreError, WriteHealth, COOCCURRENCE_RECENT, PROBE_EVERY,
    TRENDING_HALF_LIFE_S, UNKNOWN_REGION,
};

/// Requests waiting for the writer, at most; more wait for room (back pressure).
pub const QUEUE_DEPTH: usize = 1024;
/// Advisory lock key (first half) of the event writers; the second is the tenant's hash.
const WRITE_LOCK: i32 = 0x5245_4357;
/// How often a running store makes sure the event partitions of the coming months
/// exist (they are also created at every start).
pub const PARTITION_UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Job {
    events: Vec<Event>,
    client: Option<String>,
    /// A write probe (no events): checks that the store takes writes again.
    probe: bool,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// The event writer of one store: a queue, a task committing groups, write health.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    health: Arc<Mutex<WriteHealth>>,
}

impl Writer {
    /// Starts the writer task (and the probe) on the current tokio runtime.
    pub fn start(pool: Pool, tenant: String, group_max: usize) -> Writer {
        let upkeep_pool = pool.clone();
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let group_max = group_max.max(1);
        let health = Arc::new(Mutex::new(WriteHealth::default()));
        let set = {
            let health = health.clone();
            move |result: Result<(), String>| {
                if let Ok(mut h) = health.lock() {
                    *h = match result {
                        Ok(()) => WriteHealth::default(),
                        Err(e) => WriteHealth {
                            writable: false,
                            error: Some(e),
                        },
                    };
                }
            }
        };
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if first.probe {
                    set(probe(&pool, &tenant).await.map_err(|e| e.to_string()));
                    continue;
                }
                let mut jobs = vec![first];
                let mut n = jobs[0].events.len();
                while n < group_max {
                    match rx.try_recv() {
                        Ok(j) if j.probe => {}
                        Ok(j) => {
                            n += j.events.len();
                            jobs.push(j);
                        }
                        Err(_) => break,
                    }
                }
                let started = Instant::now();
                let batches: Vec<(&[Event], Option<&str>)> = jobs
                    .iter()
                    .map(|j| (j.events.as_slice(), j.client.as_deref()))
                    .collect();
                let result = append_batches(&pool, &tenant, &batches).await;
                metrics::histogram!("origin_event_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("origin_event_group_commit_events").record(n as f64);
                set(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                match result {
                    Ok(ranges) => {
                        for (job, range) in jobs.into_iter().zip(ranges) {
                            let _ = job.reply.send(Ok(range));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = n, "event commit failed");
                        let msg = e.to_string();
                        for job in jobs {
                            let _ = job.reply.send(Err(msg.clone()));
                        }
                    }
                }
            }
        });
        let writer = Writer { tx, health };
        writer.spawn_probe();
        writer.spawn_partition_upkeep(upkeep_pool);
        writer
    }

    /// Whether the last write succeeded.
    pub fn health(&self) -> WriteHealth {
        self.health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| WriteHealth {
                writable: false,
                error: Some("health lock poisoned".into()),
            })
    }

    /// Probes a store that refused a write every [`PROBE_EVERY`], while the writer lives.
    fn spawn_probe(&self) {
        let (tx, health) = (self.tx.downgrade(), self.health.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            loop {
                tick.tick().await;
                let Some(tx) = tx.upgrade() else { break };
                let failing = health.lock().map(|h| !h.writable).unwrap_or(true);
                if failing {
                    let (reply, _) = oneshot::channel();
                    let _ = tx.try_send(Job {
                        events: Vec::new(),
                        client: None,
                        probe: true,
                        reply,
                    });
                }
            }
        });
    }

    /// Creates the coming months' event partitions every [`PARTITION_UPKEEP_EVERY`],
    /// while the writer lives (a process running for months keeps partitions ahead).
    fn spawn_partition_upkeep(&self, pool: Pool) {
        let tx = self.tx.downgrade();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PARTITION_UPKEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                if tx.upgrade().is_none() {
                    break;
                }
                let done = async {
                    let mut conn = pool.get().await?;
                    let client: &mut tokio_postgres::Client = &mut conn;
                    super::schema::migrate(client, now_ms() / 1000).await
                };
                if let Err(e) = done.await {
                    tracing::warn!(error = %e, "event partition upkeep failed; retrying later");
                }
            }
        });
    }

    /// Appends a batch; returns once the transaction holding it committed.
    pub async fn append(
        &self,
        events: Vec<Event>,
        client: Option<String>,
    ) -> Result<Appended, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                events,
                client,
                probe: false,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match rx.await {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(message)) => Err(StoreError::Task(message)),
            Err(_) => Err(StoreError::WriterGone),
        }
    }
}

async fn probe(pool: &Pool, tenant: &str) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO meta(tenant, key, value) VALUES ($1, 'write_probe', $2)
             ON CONFLICT (tenant, key) DO UPDATE SET value = EXCLUDED.value",
            &[&tenant, &now_ms().to_string()],
        )
        .await?;
    Ok(())
}

/// Serialises the event writers (and replays) of one tenant across processes, until
/// the transaction ends.
pub(crate) async fn lock_writers(tx: &Transaction<'_>, tenant: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&WRITE_LOCK, &tenant],
    )
    .await?;
    Ok(())
}

/// Inserts one event; `(seq, false)` when its `event_id` was already stored (the
/// stored event's seq, nothing written).
async fn insert_event(
    tx: &Transaction<'_>,
    tenant: &str,
    received_at: i64,
    e: &Event,
    client: Option<&str>,
) -> Result<(i64, bool), StoreError> {
    let event_id = e.event_id.as_ref().map(|id| id.as_str());
    // With an id, the id is claimed first (with the seq the event gets); without, the
    // event takes the sequence's next value as it is inserted.
    let claimed: Option<i64> = match event_id {
        None => None,
        Some(id) => {
            let known = tx
                .prepare_cached("SELECT seq FROM event_ids WHERE tenant = $1 AND event_id = $2")
                .await?;
            if let Some(row) = tx.query_opt(&known, &[&tenant, &id]).await? {
                return Ok((row.get(0), false));
            }
            let claim = tx
                .prepare_cached(
                    "INSERT INTO event_ids(tenant, event_id, seq)
                     VALUES ($1, $2, nextval('events_seq'))
                     ON CONFLICT (tenant, event_id) DO NOTHING RETURNING seq",
                )
                .await?;
            match tx.query_opt(&claim, &[&tenant, &id]).await? {
                Some(row) => Some(row.get(0)),
                // Another origin stored it since (it committed before our insert).
                None => {
                    let row = tx.query_one(&known, &[&tenant, &id]).await?;
                    return Ok((row.get(0), false));
                }
            }
        }
    };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events(tenant, seq, received_at, user_id, item_id, type, value, ts,
                 context, source, region, event_id, client)
             VALUES ($1, coalesce($2::bigint, nextval('events_seq')), $3, $4, $5, $6, $7, $8,
                 $9, $10, $11, $12, $13)
             RETURNING seq",
        )
        .await?;
    let seq: i64 = tx
        .query_one(
            &stmt,
            &[
                &tenant,
                &claimed,
                &received_at,
                &e.user_id.as_str(),
                &e.item_id.as_str(),
                &e.kind.as_str(),
                &e.value,
                &e.timestamp,
                &e.context,
                &e.source,
                &e.region.as_ref().map(|r| r.as_str()),
                &event_id,
                &client,
            ],
        )
        .await?
        .get(0);
    Ok((seq, true))
}

fn decay(dt_s: i64) -> f64 {
    0.5f64.powf(dt_s as f64 / TRENDING_HALF_LIFE_S)
}

/// Applies one logged event, sent by `client`, to every projection (inside the
/// caller's transaction): the port of SQLite's `project`, statement for statement.
pub async fn project(
    tx: &Transaction<'_>,
    tenant: &str,
    seq: i64,
    e: &Event,
    client: Option<&str>,
) -> Result<(), StoreError> {
    let Some(w) = e.weight() else {
        return Ok(());
    };
    let w = f64::from(w);
    let (user, item) = (e.user_id.as_str(), e.item_id.as_str());
    let seen = tx
        .prepare_cached(
            "SELECT 1 FROM proj_user_history WHERE tenant = $1 AND user_id = $2 AND item_id = $3",
        )
        .await?;
    let is_new = tx
        .query_opt(&seen, &[&tenant, &user, &item])
        .await?
        .is_none();
    let recent: Vec<String> = if is_new {
        let stmt = tx
            .prepare_cached(
                "SELECT item_id FROM proj_user_history WHERE tenant = $1 AND user_id = $2
                 ORDER BY last_seq DESC LIMIT $3",
            )
            .await?;
        tx.query(&stmt, &[&tenant, &user, &(COOCCURRENCE_RECENT as i64)])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let history = tx
        .prepare_cached(
            "INSERT INTO proj_user_history(tenant, user_id, item_id, weight, events, last_ts,
                 last_seq)
             VALUES ($1, $2, $3, $4, 1, $5, $6)
             ON CONFLICT (tenant, user_id, item_id) DO UPDATE SET
                 weight = proj_user_history.weight + EXCLUDED.weight,
                 events = proj_user_history.events + 1,
                 last_ts = GREATEST(proj_user_history.last_ts, EXCLUDED.last_ts),
                 last_seq = EXCLUDED.last_seq",
        )
        .await?;
    tx.execute(&history, &[&tenant, &user, &item, &w, &e.timestamp, &seq])
        .await?;
    if !recent.is_empty() {
        let co = tx
            .prepare_cached(
                "INSERT INTO proj_cooccurrence(tenant, item_a, item_b, users) VALUES ($1, $2, $3, 1)
                 ON CONFLICT (tenant, item_a, item_b) DO UPDATE SET
                     users = proj_cooccurrence.users + 1",
            )
            .await?;
        for other in &recent {
            tx.execute(&co, &[&tenant, &item, other]).await?;
            tx.execute(&co, &[&tenant, other, &item]).await?;
        }
    }
    let region = e.region.as_ref().map_or(UNKNOWN_REGION, |r| r.as_str());
    let popularity = tx
        .prepare_cached(
            "INSERT INTO proj_item_popularity(tenant, region, item_id, events, weight)
             VALUES ($1, $2, $3, 1, $4)
             ON CONFLICT (tenant, region, item_id) DO UPDATE SET
                 events = proj_item_popularity.events + 1,
                 weight = proj_item_popularity.weight + EXCLUDED.weight",
        )
        .await?;
    tx.execute(&popularity, &[&tenant, &region, &item, &w])
        .await?;
    let read_trending = tx
        .prepare_cached("SELECT score, as_of FROM proj_trending WHERE tenant = $1 AND item_id = $2")
        .await?;
    let trending: Option<(f64, i64)> = tx
        .query_opt(&read_trending, &[&tenant, &item])
        .await?
        .map(|r| (r.get(0), r.get(1)));
    let (score, as_of) = match trending {
        None => (w, e.timestamp),
        Some((s, t)) if e.timestamp >= t => (s * decay(e.timestamp - t) + w, e.timestamp),
        Some((s, t)) => (s + w * decay(t - e.timestamp), t),
    };
    let write_trending = tx
        .prepare_cached(
            "INSERT INTO proj_trending(tenant, item_id, score, as_of) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, item_id) DO UPDATE SET score = EXCLUDED.score,
                 as_of = EXCLUDED.as_of",
        )
        .await?;
    tx.execute(&write_trending, &[&tenant, &item, &score, &as_of])
        .await?;
    let new_user = tx
        .prepare_cached(
            "INSERT INTO users(tenant, user_id) VALUES ($1, $2)
             ON CONFLICT (tenant, user_id) DO NOTHING",
        )
        .await?;
    tx.execute(&new_user, &[&tenant, &user]).await?;
    if let Some(client) = client {
        // A user belongs to the first client that sent events for them.
        let claim = tx
            .prepare_cached(
                "UPDATE users SET client = $3
                 WHERE tenant = $1 AND user_id = $2 AND client IS NULL",
            )
            .await?;
        if tx.execute(&claim, &[&tenant, &user, &client]).await? == 1 {
            let count = tx
                .prepare_cached(
                    "INSERT INTO client_users(tenant, client, users) VALUES ($1, $2, 1)
                     ON CONFLICT (tenant, client) DO UPDATE SET
                         users = client_users.users + 1",
                )
                .await?;
            tx.execute(&count, &[&tenant, &client]).await?;
        }
    }
    // Items first seen in events are marked: they must earn their place in the model.
    let new_item = tx
        .prepare_cached(
            "INSERT INTO items(tenant, item_id, from_events) VALUES ($1, $2, true)
             ON CONFLICT (tenant, item_id) DO NOTHING",
        )
        .await?;
    tx.execute(&new_item, &[&tenant, &item]).await?;
    let training = tx
        .prepare_cached(
            "INSERT INTO interactions(tenant, user_id, item_id, weight, ts, event_seq)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await?;
    tx.execute(&training, &[&tenant, &user, &item, &w, &e.timestamp, &seq])
        .await?;
    Ok(())
}

/// Appends batches in one transaction, projecting each event stored (an event whose
/// id is already in the log is not stored again); returns each batch's range once the
/// transaction committed.
pub async fn append_batches(
    pool: &Pool,
    tenant: &str,
    batches: &[(&[Event], Option<&str>)],
) -> Result<Vec<Appended>, StoreError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    lock_writers(&tx, tenant).await?;
    let received_at = now_ms();
    let mut out = Vec::with_capacity(batches.len());
    for (batch, client) in batches {
        let mut range: Option<Appended> = None;
        for e in *batch {
            let (seq, stored) = insert_event(&tx, tenant, received_at, e, *client).await?;
            if stored {
                project(&tx, tenant, seq, e, *client).await?;
            }
            let duplicate = usize::from(!stored);
            range = Some(match range {
                None => Appended {
                    first_seq: seq,
                    last_seq: seq,
                    duplicates: duplicate,
                },
                Some(a) => Appended {
                    first_seq: a.first_seq.min(seq),
                    last_seq: a.last_seq.max(seq),
                    duplicates: a.duplicates + duplicate,
                },
            });
        }
        out.push(range.unwrap_or(Appended {
            first_seq: 0,
            last_seq: -1,
            duplicates: 0,
        }));
    }
    tx.commit().await?;
    Ok(out)
}

/// The columns [`row_to_event`] reads, in its order.
const EVENT_COLUMNS: &str =
    "seq, user_id, item_id, type, value, ts, context, source, region, event_id, client";

/// An event row as (seq, event or why it cannot be read, client).
type EventRow = (i64, Result<Event, String>, Option<String>);

fn row_to_event(r: &Row) -> EventRow {
    let seq: i64 = r.get(0);
    let client: Option<String> = r.get(10);
    let parsed = (|| {
        let user: String = r.try_get(1).map_err(|e| e.to_string())?;
        let item: String = r.try_get(2).map_err(|e| e.to_string())?;
        let kind: String = r.try_get(3).map_err(|e| e.to_string())?;
        let region: Option<String> = r.try_get(8).map_err(|e| e.to_string())?;
        let event_id: Option<String> = r.try_get(9).map_err(|e| e.to_string())?;
        Ok(Event {
            user_id: UserId::parse(&user).map_err(|e| e.to_string())?,
            item_id: ItemId::parse(&item).map_err(|e| e.to_string())?,
            kind: EventType::parse(&kind).ok_or_else(|| format!("unknown type {kind:?}"))?,
            value: r.try_get(4).map_err(|e| e.to_string())?,
            timestamp: r.try_get(5).map_err(|e| e.to_string())?,
            context: r.try_get(6).map_err(|e| e.to_string())?,
            source: r.try_get(7).map_err(|e| e.to_string())?,
            region: region
                .map(|s| Region::parse(&s).map_err(|e| e.to_string()))
                .transpose()?,
            event_id: event_id
                .map(|s| contract::EventId::parse(&s).map_err(|e| e.to_string()))
                .transpose()?,
        })
    })();
    (seq, parsed, client)
}

/// Events with `seq` in `from..=to`, in order, with their seqs.
pub async fn read_events(
    pool: &Pool,
    tenant: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Event)>, StoreError> {
    let conn = pool.get().await?;
    let rows = conn
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND seq BETWEEN $2 AND $3
                 ORDER BY seq"
            ),
            &[&tenant, &from, &to],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let (seq, e, _client) = row_to_event(r);
            Ok((
                seq,
                e.map_err(|message| StoreError::Corrupt { seq, message })?,
            ))
        })
        .collect()
}

/// Events read per round trip by [`replay`].
const REPLAY_PAGE: i64 = 10_000;

/// Rebuilds every projection of `tenant` from the log alone, in one transaction (which
/// holds the writers' lock, so no group commit interleaves).
pub async fn replay(pool: &Pool, tenant: &str) -> Result<ReplayReport, StoreError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    lock_writers(&tx, tenant).await?;
    for sql in [
        "DELETE FROM proj_user_history WHERE tenant = $1",
        "DELETE FROM proj_item_popularity WHERE tenant = $1",
        "DELETE FROM proj_trending WHERE tenant = $1",
        "DELETE FROM proj_cooccurrence WHERE tenant = $1",
        "DELETE FROM interactions WHERE tenant = $1 AND event_seq IS NOT NULL",
        "DELETE FROM client_users WHERE tenant = $1",
        "UPDATE users SET client = NULL WHERE tenant = $1 AND client IS NOT NULL",
    ] {
        tx.execute(sql, &[&tenant]).await?;
    }
    let mut report = ReplayReport {
        events: 0,
        interactions: 0,
        last_seq: 0,
    };
    let page = tx
        .prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant = $1 AND seq > $2
             ORDER BY seq LIMIT $3"
        ))
        .await?;
    let mut after = i64::MIN;
    loop {
        let rows = tx.query(&page, &[&tenant, &after, &REPLAY_PAGE]).await?;
        for r in &rows {
            let (seq, e, client) = row_to_event(r);
            let e = e.map_err(|message| StoreError::Corrupt { seq, message })?;
            project(&tx, tenant, seq, &e, client.as_deref()).await?;
            report.events += 1;
            report.interactions += u64::from(e.weight().is_some());
            report.last_seq = seq;
            after = seq;
        }
        if (rows.len() as i64) < REPLAY_PAGE {
            break;
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// Every projection row of `tenant`, sorted as SQLite's [`read_projections`] sorts
/// them (ids bytewise).
///
/// [`read_projections`]: crate::store::sqlite::event_log::read_projections
pub async fn read_projections(pool: &Pool, tenant: &str) -> Result<Projections, StoreError> {
    let conn = pool.get().await?;
    let all = |sql: &'static str| {
        let conn = &conn;
        async move { conn.query(sql, &[&tenant]).await }
    };
    Ok(Projections {
        user_history: all("SELECT user_id, item_id, weight, events, last_ts, last_seq
             FROM proj_user_history WHERE tenant = $1 ORDER BY user_id, item_id")
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect(),
        popularity: all(
            "SELECT region, item_id, events, weight FROM proj_item_popularity
             WHERE tenant = $1 ORDER BY region, item_id",
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect(),
        trending: all(
            "SELECT item_id, score, as_of FROM proj_trending WHERE tenant = $1
             ORDER BY item_id",
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect(),
        cooccurrence: all(
            "SELECT item_a, item_b, users FROM proj_cooccurrence WHERE tenant = $1
             ORDER BY item_a, item_b",
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect(),
        training: all(
            "SELECT event_seq, user_id, item_id, weight, ts FROM interactions
             WHERE tenant = $1 AND event_seq IS NOT NULL ORDER BY event_seq",
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect(),
    })
}
