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
//! - [`append_batches`]: one group commit (the projections in `project`).
//! - [`replay`], [`read_events`], [`read_projections`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use contract::{ItemId, Region, UserId};
use deadpool_postgres::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Row;

use super::project::{project_all, Logged};
use crate::events::{Event, EventType};
use crate::store::{Appended, Projections, ReplayReport, StoreError, WriteHealth, PROBE_EVERY};

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
                    let conn = pool.get().await?;
                    super::schema::maintain(&conn, now_ms() / 1000, 0).await
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
///
/// Also makes the transaction's commit durable whatever the server's or role's default
/// (`synchronous_commit = on`): an acknowledged event must survive a crash.
pub(crate) async fn lock_writers(tx: &Transaction<'_>, tenant: &str) -> Result<(), StoreError> {
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&WRITE_LOCK, &tenant],
    )
    .await?;
    Ok(())
}

/// Appends batches in one transaction, projecting each event stored (an event whose
/// id is already in the log, or earlier in the group, is not stored again); returns
/// each batch's range once the transaction committed. A few round trips per group,
/// whatever its size: the ids known, the seqs, the events, then the projections
/// ([`project_all`]).
pub async fn append_batches(
    pool: &Pool,
    tenant: &str,
    batches: &[(&[Event], Option<&str>)],
) -> Result<Vec<Appended>, StoreError> {
    let mut conn = pool.get().await?;
    let tx = conn.transaction().await?;
    lock_writers(&tx, tenant).await?;
    let received_at = now_ms();
    let all: Vec<(&Event, Option<&str>)> = batches
        .iter()
        .flat_map(|(events, client)| events.iter().map(move |e| (e, *client)))
        .collect();
    // Ids already stored (the writers' lock makes this the final word).
    let ids: Vec<&str> = all
        .iter()
        .filter_map(|(e, _)| e.event_id.as_ref().map(|id| id.as_str()))
        .collect();
    let mut known: HashMap<String, i64> = HashMap::new();
    if !ids.is_empty() {
        for r in tx
            .query(
                "SELECT event_id, seq FROM event_ids WHERE tenant = $1 AND event_id = ANY($2)",
                &[&tenant, &ids],
            )
            .await?
        {
            known.insert(r.get(0), r.get(1));
        }
    }
    // Which events are new: those without an id, and the first of each id not stored.
    let mut fresh_ids: HashSet<&str> = HashSet::new();
    let new: Vec<bool> = all
        .iter()
        .map(|(e, _)| match e.event_id.as_ref().map(|id| id.as_str()) {
            None => true,
            Some(id) => !known.contains_key(id) && fresh_ids.insert(id),
        })
        .collect();
    let wanted = new.iter().filter(|n| **n).count() as i64;
    let mut seqs: Vec<i64> = tx
        .query(
            "SELECT nextval('events_seq') FROM generate_series(1, $1::bigint)",
            &[&wanted],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    let mut next = seqs.into_iter();
    // Each event's seq and whether it is stored now.
    let mut placed: Vec<(i64, bool)> = Vec::with_capacity(all.len());
    let mut logged: Vec<Logged<'_>> = Vec::with_capacity(wanted as usize);
    for ((e, client), is_new) in all.iter().zip(&new) {
        let id = e.event_id.as_ref().map(|id| id.as_str());
        if *is_new {
            let seq = next
                .next()
                .ok_or_else(|| StoreError::Task("the sequence gave too few values".into()))?;
            if let Some(id) = id {
                known.insert(id.to_owned(), seq);
            }
            placed.push((seq, true));
            logged.push(Logged {
                seq,
                event: e,
                client: *client,
            });
        } else {
            let seq = id.and_then(|id| known.get(id)).copied().unwrap_or_default();
            placed.push((seq, false));
        }
    }
    // The events and their projections touch different tables: sent together.
    futures_util::try_join!(
        insert_events(&tx, tenant, received_at, &logged),
        project_all(&tx, tenant, &logged)
    )?;
    tx.commit().await?;
    // Each batch's range.
    let mut out = Vec::with_capacity(batches.len());
    let mut at = 0;
    for (events, _) in batches {
        let mine = &placed[at..at + events.len()];
        at += events.len();
        out.push(
            match (
                mine.iter().map(|p| p.0).min(),
                mine.iter().map(|p| p.0).max(),
            ) {
                (Some(first_seq), Some(last_seq)) => Appended {
                    first_seq,
                    last_seq,
                    duplicates: mine.iter().filter(|p| !p.1).count(),
                },
                _ => Appended {
                    first_seq: 0,
                    last_seq: -1,
                    duplicates: 0,
                },
            },
        );
    }
    Ok(out)
}

/// Inserts the new events (and their ids) in two statements.
async fn insert_events(
    tx: &Transaction<'_>,
    tenant: &str,
    received_at: i64,
    logged: &[Logged<'_>],
) -> Result<(), StoreError> {
    if logged.is_empty() {
        return Ok(());
    }
    let (mut id_keys, mut id_seqs): (Vec<&str>, Vec<i64>) = Default::default();
    let mut seq = Vec::with_capacity(logged.len());
    let (mut user, mut item, mut kind) = (Vec::new(), Vec::new(), Vec::new());
    let (mut value, mut ts, mut context) = (Vec::new(), Vec::new(), Vec::new());
    let (mut source, mut region, mut event_id, mut client) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for l in logged {
        let e = l.event;
        let id = e.event_id.as_ref().map(|id| id.as_str());
        if let Some(id) = id {
            id_keys.push(id);
            id_seqs.push(l.seq);
        }
        seq.push(l.seq);
        user.push(e.user_id.as_str());
        item.push(e.item_id.as_str());
        kind.push(e.kind.as_str());
        value.push(e.value);
        ts.push(e.timestamp);
        context.push(e.context.as_deref());
        source.push(e.source.as_deref());
        region.push(e.region.as_ref().map(|r| r.as_str()));
        event_id.push(id);
        client.push(l.client);
    }
    if !id_keys.is_empty() {
        let claimed = tx
            .execute(
                "INSERT INTO event_ids(tenant, event_id, seq)
                 SELECT $1, * FROM UNNEST($2::text[], $3::bigint[])
                 ON CONFLICT (tenant, event_id) DO NOTHING",
                &[&tenant, &id_keys, &id_seqs],
            )
            .await?;
        if claimed != id_keys.len() as u64 {
            return Err(StoreError::Task(
                "an event id was stored by another writer meanwhile".into(),
            ));
        }
    }
    tx.execute(
        "INSERT INTO events(tenant, received_at, seq, user_id, item_id, type, value, ts,
             context, source, region, event_id, client)
         SELECT $1, $2, * FROM UNNEST($3::bigint[], $4::text[], $5::text[], $6::text[],
             $7::float8[], $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[],
             $13::text[])",
        &[
            &tenant,
            &received_at,
            &seq,
            &user,
            &item,
            &kind,
            &value,
            &ts,
            &context,
            &source,
            &region,
            &event_id,
            &client,
        ],
    )
    .await?;
    Ok(())
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
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            let (seq, e, client) = row_to_event(r);
            let e = e.map_err(|message| StoreError::Corrupt { seq, message })?;
            report.events += 1;
            report.interactions += u64::from(e.weight().is_some());
            report.last_seq = seq;
            after = seq;
            events.push((seq, e, client));
        }
        let logged: Vec<Logged<'_>> = events
            .iter()
            .map(|(seq, event, client)| Logged {
                seq: *seq,
                event,
                client: client.as_deref(),
            })
            .collect();
        project_all(&tx, tenant, &logged).await?;
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
