//! The durable event log and the projections derived from it (event sourcing).
//!
//! Events are appended to the `events` table (`seq INTEGER PRIMARY KEY`) of the
//! origin's SQLite file by one writer thread on its own connection in WAL mode with
//! `synchronous=FULL`. Requests hand their batch to the writer over a channel; the
//! writer takes every batch waiting (up to a bound) and commits them in **one**
//! transaction (group commit), then answers each request. A request is acknowledged
//! only after the transaction holding its rows has committed.
//!
//! Projections are updated **in the same transaction** as the append, so the log and
//! the projections can never disagree, even after a crash. [`replay`] rebuilds every
//! projection from the log alone; [`read_projections`] reads them all, so a test can
//! check that a rebuild equals the live state.
//!
//! Projections (all keyed by external ids):
//! - `proj_user_history(user_id, item_id)`: summed interaction weight, event count,
//!   last timestamp and last seq. Impressions (`recommendation_viewed`) are not
//!   interactions and do not appear.
//! - `proj_item_popularity(region, item_id)`: interaction count and summed weight.
//! - `proj_trending(item_id)`: a time-decayed score (half-life [`TRENDING_HALF_LIFE_S`])
//!   over event timestamps, so the rebuild does not depend on when it runs.
//! - `proj_cooccurrence(item_a, item_b)`: how many users interacted with both; when a
//!   user first interacts with an item it is paired with their [`COOCCURRENCE_RECENT`]
//!   most recent other items only, so each event does bounded work.
//! - training interactions: one `interactions` row per interaction event (tagged with
//!   `event_seq`), so a retrain sees live events next to imported data.
//!
//! # Layout
//! - [`EventLog`]: open, append (group-committed), read-only queries.
//! - [`replay`]: rebuild all projections from the log.
//! - [`read_projections`]: every projection row, for comparisons.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contract::{ItemId, Region, UserId};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::database::Database;
use crate::events::{Event, EventType};
use crate::store::{
    Appended, Projections, ReplayReport, StoreError, WriteHealth, COOCCURRENCE_RECENT, PROBE_EVERY,
    TRENDING_HALF_LIFE_S, UNKNOWN_REGION,
};

/// Requests waiting for the writer, at most; more wait for room (back pressure).
pub const QUEUE_DEPTH: usize = 1024;

/// Events to append, with the client that sent them (a hash the edge reports, or the
/// peer address): recorded per event, and per user for [`crate::admission`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Sender<'a> {
    pub client: Option<&'a str>,
}

struct Job {
    events: Vec<Event>,
    client: Option<String>,
    /// A write probe (no events): checks that the store takes writes again.
    probe: bool,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// The durable event log of one database file.
#[derive(Clone)]
pub struct EventLog {
    path: PathBuf,
    tx: mpsc::Sender<Job>,
    reader: Arc<Mutex<Connection>>,
    write_health: Arc<Mutex<WriteHealth>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Creates the log and projection tables (and the `event_seq` column of
/// `interactions`) when missing.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS events(
             seq INTEGER PRIMARY KEY,
             received_at INTEGER NOT NULL,
             user_id TEXT NOT NULL,
             item_id TEXT NOT NULL,
             type TEXT NOT NULL,
             value REAL NULL,
             ts INTEGER NOT NULL,
             context TEXT NULL,
             source TEXT NULL,
             region TEXT NULL);
         CREATE INDEX IF NOT EXISTS events_by_ts ON events(ts);
         CREATE INDEX IF NOT EXISTS events_by_received_at ON events(received_at);
         CREATE TABLE IF NOT EXISTS proj_user_history(
             user_id TEXT NOT NULL, item_id TEXT NOT NULL,
             weight REAL NOT NULL, events INTEGER NOT NULL,
             last_ts INTEGER NOT NULL, last_seq INTEGER NOT NULL,
             PRIMARY KEY(user_id, item_id)) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS proj_user_history_recent
             ON proj_user_history(user_id, last_seq);
         CREATE TABLE IF NOT EXISTS proj_item_popularity(
             region TEXT NOT NULL, item_id TEXT NOT NULL,
             events INTEGER NOT NULL, weight REAL NOT NULL,
             PRIMARY KEY(region, item_id)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS proj_trending(
             item_id TEXT PRIMARY KEY, score REAL NOT NULL, as_of INTEGER NOT NULL)
             WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS proj_cooccurrence(
             item_a TEXT NOT NULL, item_b TEXT NOT NULL, users INTEGER NOT NULL,
             PRIMARY KEY(item_a, item_b)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS edge_reports(
             received_at INTEGER NOT NULL, region TEXT NULL,
             requests INTEGER NOT NULL, hits INTEGER NOT NULL);",
    )?;
    let has_seq: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('interactions') WHERE name = 'event_seq'")?
        .exists([])?;
    if !has_seq {
        conn.execute_batch("ALTER TABLE interactions ADD COLUMN event_seq INTEGER NULL")?;
    }
    for column in ["event_id", "client"] {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('events') WHERE name = ?1")?
            .exists([column])?;
        if !has {
            // Fixed literals, never input.
            conn.execute_batch(&format!("ALTER TABLE events ADD COLUMN {column} TEXT NULL"))?;
        }
    }
    // Impressions by user and item: analytics counts a click only on an item served.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS events_impressions ON events(user_id, item_id, ts)
             WHERE type = 'recommendation_viewed';",
    )?;
    // The idempotency key: one event per id (one database per tenant today; the
    // server store keys it by tenant too).
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS events_by_event_id ON events(event_id)
             WHERE event_id IS NOT NULL;",
    )?;
    Ok(())
}

fn open_conn(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Opens `path` for writing the log: store schema, log schema, `synchronous=FULL`.
pub fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    drop(Database::open(path)?);
    let conn = open_conn(path, "FULL")?;
    migrate(&conn)?;
    Ok(conn)
}

/// Inserts one event; `Ok((seq, false))` when its `event_id` was already stored (the
/// stored event's seq, nothing written).
fn insert_event(
    tx: &Transaction<'_>,
    received_at: i64,
    e: &Event,
    client: Option<&str>,
) -> Result<(i64, bool), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO events(received_at, user_id, item_id, type, value, ts, context,
             source, region, event_id, client)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let event_id = e.event_id.as_ref().map(|id| id.as_str());
    let inserted = stmt.execute(params![
        received_at,
        e.user_id.as_str(),
        e.item_id.as_str(),
        e.kind.as_str(),
        e.value,
        e.timestamp,
        e.context,
        e.source,
        e.region.as_ref().map(|r| r.as_str()),
        event_id,
        client,
    ])?;
    if inserted == 1 {
        return Ok((tx.last_insert_rowid(), true));
    }
    let seq = tx
        .prepare_cached("SELECT seq FROM events WHERE event_id = ?1")?
        .query_row([event_id], |r| r.get(0))?;
    Ok((seq, false))
}

fn decay(dt_s: i64) -> f64 {
    0.5f64.powf(dt_s as f64 / TRENDING_HALF_LIFE_S)
}

/// Applies one logged event, sent by `client`, to every projection (inside the
/// caller's transaction).
pub fn project(
    tx: &Transaction<'_>,
    seq: i64,
    e: &Event,
    client: Option<&str>,
) -> Result<(), StoreError> {
    let Some(w) = e.weight() else {
        return Ok(());
    };
    let w = f64::from(w);
    let (user, item) = (e.user_id.as_str(), e.item_id.as_str());
    let is_new = !tx
        .prepare_cached("SELECT 1 FROM proj_user_history WHERE user_id = ?1 AND item_id = ?2")?
        .exists(params![user, item])?;
    let recent: Vec<String> = if is_new {
        let mut stmt = tx.prepare_cached(
            "SELECT item_id FROM proj_user_history WHERE user_id = ?1
             ORDER BY last_seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![user, COOCCURRENCE_RECENT as i64], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    tx.prepare_cached(
        "INSERT INTO proj_user_history(user_id, item_id, weight, events, last_ts, last_seq)
         VALUES (?1, ?2, ?3, 1, ?4, ?5)
         ON CONFLICT(user_id, item_id) DO UPDATE SET weight = weight + excluded.weight,
             events = events + 1, last_ts = max(last_ts, excluded.last_ts),
             last_seq = excluded.last_seq",
    )?
    .execute(params![user, item, w, e.timestamp, seq])?;
    {
        let mut co = tx.prepare_cached(
            "INSERT INTO proj_cooccurrence(item_a, item_b, users) VALUES (?1, ?2, 1)
             ON CONFLICT(item_a, item_b) DO UPDATE SET users = users + 1",
        )?;
        for other in &recent {
            co.execute(params![item, other])?;
            co.execute(params![other, item])?;
        }
    }
    let region = e.region.as_ref().map_or(UNKNOWN_REGION, |r| r.as_str());
    tx.prepare_cached(
        "INSERT INTO proj_item_popularity(region, item_id, events, weight) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT(region, item_id) DO UPDATE SET events = events + 1,
             weight = weight + excluded.weight",
    )?
    .execute(params![region, item, w])?;
    let trending: Option<(f64, i64)> = tx
        .prepare_cached("SELECT score, as_of FROM proj_trending WHERE item_id = ?1")?
        .query_row([item], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (score, as_of) = match trending {
        None => (w, e.timestamp),
        Some((s, t)) if e.timestamp >= t => (s * decay(e.timestamp - t) + w, e.timestamp),
        Some((s, t)) => (s + w * decay(t - e.timestamp), t),
    };
    tx.prepare_cached(
        "INSERT INTO proj_trending(item_id, score, as_of) VALUES (?1, ?2, ?3)
         ON CONFLICT(item_id) DO UPDATE SET score = excluded.score, as_of = excluded.as_of",
    )?
    .execute(params![item, score, as_of])?;
    tx.prepare_cached("INSERT OR IGNORE INTO users(user_id) VALUES (?1)")?
        .execute([user])?;
    if let Some(client) = client {
        // A user belongs to the first client that sent events for them.
        let claimed = tx
            .prepare_cached("UPDATE users SET client = ?2 WHERE user_id = ?1 AND client IS NULL")?
            .execute(params![user, client])?;
        if claimed == 1 {
            tx.prepare_cached(
                "INSERT INTO client_users(client, users) VALUES (?1, 1)
                 ON CONFLICT(client) DO UPDATE SET users = users + 1",
            )?
            .execute([client])?;
        }
    }
    // Items first seen in events are marked: they must earn their place in the model.
    tx.prepare_cached("INSERT OR IGNORE INTO items(item_id, from_events) VALUES (?1, 1)")?
        .execute([item])?;
    tx.prepare_cached(
        "INSERT INTO interactions(user_id, item_id, weight, ts, event_seq) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![user, item, w, e.timestamp, seq])?;
    Ok(())
}

/// Appends batches in one transaction, projecting each event stored (an event whose
/// id is already in the log is not stored again); returns each batch's range.
pub fn append_batches(
    conn: &mut Connection,
    batches: &[(&[Event], Sender<'_>)],
) -> Result<Vec<Appended>, StoreError> {
    let tx = conn.transaction()?;
    let received_at = now_ms();
    let mut out = Vec::with_capacity(batches.len());
    for (batch, sender) in batches {
        let mut range: Option<Appended> = None;
        for e in *batch {
            let (seq, stored) = insert_event(&tx, received_at, e, sender.client)?;
            if stored {
                project(&tx, seq, e, sender.client)?;
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
    tx.commit()?;
    Ok(out)
}

/// The columns [`row_to_event`] reads, in its order.
const EVENT_COLUMNS: &str =
    "seq, user_id, item_id, type, value, ts, context, source, region, event_id, client";

/// An event row as (seq, event or why it cannot be read, client).
type EventRow = (i64, Result<Event, String>, Option<String>);

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    let seq: i64 = r.get(0)?;
    let user: String = r.get(1)?;
    let item: String = r.get(2)?;
    let kind: String = r.get(3)?;
    let region: Option<String> = r.get(8)?;
    let event_id: Option<String> = r.get(9)?;
    let client: Option<String> = r.get(10)?;
    let parsed = (|| {
        Ok(Event {
            user_id: UserId::parse(&user).map_err(|e| e.to_string())?,
            item_id: ItemId::parse(&item).map_err(|e| e.to_string())?,
            kind: EventType::parse(&kind).ok_or_else(|| format!("unknown type {kind:?}"))?,
            value: r.get(4).map_err(|e| e.to_string())?,
            timestamp: r.get(5).map_err(|e| e.to_string())?,
            context: r.get(6).map_err(|e| e.to_string())?,
            source: r.get(7).map_err(|e| e.to_string())?,
            region: region
                .map(|s| Region::parse(&s).map_err(|e| e.to_string()))
                .transpose()?,
            event_id: event_id
                .map(|s| contract::EventId::parse(&s).map_err(|e| e.to_string()))
                .transpose()?,
        })
    })();
    Ok((seq, parsed, client))
}

/// Events with `seq` in `from..=to`, in order, with their seqs.
pub fn read_events(conn: &Connection, from: i64, to: i64) -> Result<Vec<(i64, Event)>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![from, to], row_to_event)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, e, _client) = row?;
        out.push((
            seq,
            e.map_err(|message| StoreError::Corrupt { seq, message })?,
        ));
    }
    Ok(out)
}

/// Rebuilds every projection from the log alone, in one transaction.
pub fn replay(path: &Path) -> Result<ReplayReport, StoreError> {
    let mut conn = open_writer(path)?;
    replay_conn(&mut conn)
}

/// [`replay`] on an open connection.
pub fn replay_conn(conn: &mut Connection) -> Result<ReplayReport, StoreError> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "DELETE FROM proj_user_history;
         DELETE FROM proj_item_popularity;
         DELETE FROM proj_trending;
         DELETE FROM proj_cooccurrence;
         DELETE FROM interactions WHERE event_seq IS NOT NULL;
         DELETE FROM client_users;
         UPDATE users SET client = NULL WHERE client IS NOT NULL;",
    )?;
    let mut report = ReplayReport {
        events: 0,
        interactions: 0,
        last_seq: 0,
    };
    {
        let mut stmt = tx.prepare(&format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY seq"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (seq, e, client) = row_to_event(r)?;
            let e = e.map_err(|message| StoreError::Corrupt { seq, message })?;
            project(&tx, seq, &e, client.as_deref())?;
            report.events += 1;
            report.interactions += u64::from(e.weight().is_some());
            report.last_seq = seq;
        }
    }
    tx.commit()?;
    Ok(report)
}

/// Every projection row, sorted, for comparing a rebuild with the live state.
pub fn read_projections(conn: &Connection) -> Result<Projections, StoreError> {
    fn all<T>(
        conn: &Connection,
        sql: &str,
        f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], f)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
    Ok(Projections {
        user_history: all(
            conn,
            "SELECT user_id, item_id, weight, events, last_ts, last_seq
                 FROM proj_user_history ORDER BY user_id, item_id",
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )?,
        popularity: all(
            conn,
            "SELECT region, item_id, events, weight FROM proj_item_popularity
                 ORDER BY region, item_id",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?,
        trending: all(
            conn,
            "SELECT item_id, score, as_of FROM proj_trending ORDER BY item_id",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?,
        cooccurrence: all(
            conn,
            "SELECT item_a, item_b, users FROM proj_cooccurrence ORDER BY item_a, item_b",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?,
        training: all(
            conn,
            "SELECT event_seq, user_id, item_id, weight, ts FROM interactions
                 WHERE event_seq IS NOT NULL ORDER BY event_seq",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )?,
    })
}

impl EventLog {
    /// Opens the log at `path` and starts its writer thread, which commits at most
    /// `group_max` events per transaction.
    pub fn open(path: &Path, group_max: usize) -> Result<Self, StoreError> {
        let mut writer = open_writer(path)?;
        let reader = open_conn(path, "NORMAL")?;
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let group_max = group_max.max(1);
        let write_health = Arc::new(Mutex::new(WriteHealth::default()));
        let health = write_health.clone();
        let set_health = move |result: Result<(), String>| {
            if let Ok(mut h) = health.lock() {
                *h = match result {
                    Ok(()) => WriteHealth::default(),
                    Err(e) => WriteHealth {
                        writable: false,
                        error: Some(e),
                    },
                };
            }
        };
        std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    if first.probe {
                        let probed = writer
                            .execute(
                                "INSERT INTO meta(key, value) VALUES ('write_probe', ?1)
                                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                                [now_ms().to_string()],
                            )
                            .map(|_| ())
                            .map_err(|e| e.to_string());
                        set_health(probed);
                        continue;
                    }
                    let mut jobs = vec![first];
                    let mut n = jobs[0].events.len();
                    while n < group_max {
                        match rx.try_recv() {
                            Ok(j) => {
                                n += j.events.len();
                                jobs.push(j);
                            }
                            Err(_) => break,
                        }
                    }
                    let started = Instant::now();
                    let batches: Vec<(&[Event], Sender<'_>)> = jobs
                        .iter()
                        .map(|j| {
                            (
                                j.events.as_slice(),
                                Sender {
                                    client: j.client.as_deref(),
                                },
                            )
                        })
                        .collect();
                    let result = append_batches(&mut writer, &batches);
                    metrics::histogram!("origin_event_commit_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("origin_event_group_commit_events").record(n as f64);
                    set_health(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
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
            })
            .map_err(|e| StoreError::Task(e.to_string()))?;
        let log = EventLog {
            path: path.to_owned(),
            tx,
            reader: Arc::new(Mutex::new(reader)),
            write_health,
        };
        log.spawn_probe();
        Ok(log)
    }

    /// Whether the last write to the store succeeded.
    pub fn write_health(&self) -> WriteHealth {
        self.write_health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| WriteHealth {
                writable: false,
                error: Some("health lock poisoned".into()),
            })
    }

    /// Probes a store that refused a write every [`PROBE_EVERY`], while the log lives.
    fn spawn_probe(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, health) = (self.tx.downgrade(), self.write_health.clone());
        rt.spawn(async move {
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch; returns once the batch is committed (durably: `synchronous=FULL`).
    pub async fn append(&self, events: Vec<Event>) -> Result<Appended, StoreError> {
        self.append_from(events, None).await
    }

    /// [`EventLog::append`] for events sent by `client`.
    pub async fn append_from(
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

    /// Runs `f` on the side connection (reads, and small writes such as edge reports,
    /// which wait for the event writer's lock) in a blocking task.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::Task("reader lock poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// One user's interactions (imported and live), summed per item.
    pub async fn user_history(&self, user: &UserId) -> Result<Vec<(String, f32)>, StoreError> {
        let user = user.as_str().to_owned();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT item_id, SUM(weight) FROM interactions WHERE user_id = ?1
                 GROUP BY item_id ORDER BY item_id",
            )?;
            let rows = stmt.query_map([user], |r| Ok((r.get(0)?, r.get::<_, f64>(1)? as f32)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(user: &str, item: &str, kind: EventType, ts: i64) -> Event {
        Event {
            user_id: UserId::parse(user).unwrap(),
            item_id: ItemId::parse(item).unwrap(),
            kind,
            value: (kind == EventType::Rating).then_some(4.0),
            timestamp: ts,
            context: None,
            source: None,
            region: Some(Region::parse("europe").unwrap()),
            event_id: None,
        }
    }

    #[test]
    fn projections_follow_the_weights_and_skip_impressions() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("o.sqlite")).unwrap();
        let t = 1_764_000_000;
        let batch = [
            ev("u1", "a", EventType::View, t),
            ev("u1", "a", EventType::Purchase, t + 1),
            ev("u1", "b", EventType::Rating, t + 2),
            ev("u1", "c", EventType::RecommendationViewed, t + 3),
            ev("u2", "b", EventType::Click, t + 4),
            ev("u2", "a", EventType::AddToCart, t + 5),
        ];
        let ranges = append_batches(&mut conn, &[(&batch[..], Sender::default())]).unwrap();
        assert_eq!(
            ranges,
            vec![Appended {
                first_seq: 1,
                last_seq: 6,
                duplicates: 0,
            }]
        );
        let p = read_projections(&conn).unwrap();
        let hist: Vec<(&str, &str, f64, i64)> = p
            .user_history
            .iter()
            .map(|h| (h.0.as_str(), h.1.as_str(), h.2, h.3))
            .collect();
        assert_eq!(
            hist,
            vec![
                ("u1", "a", 6.0, 2),
                ("u1", "b", 4.0, 1),
                ("u2", "a", 3.0, 1),
                ("u2", "b", 2.0, 1)
            ]
        );
        // u1 saw a then b; u2 saw b then a: each pair counted once per user.
        assert_eq!(
            p.cooccurrence,
            vec![("a".into(), "b".into(), 2), ("b".into(), "a".into(), 2)]
        );
        assert_eq!(
            p.popularity,
            vec![
                ("europe".into(), "a".into(), 3, 9.0),
                ("europe".into(), "b".into(), 2, 6.0)
            ]
        );
        assert_eq!(p.training.len(), 5, "the impression is no training row");
        let trending_a = p.trending.iter().find(|t| t.0 == "a").unwrap();
        let want = (1.0 * decay(1) + 5.0) * decay(4) + 3.0;
        assert!((trending_a.1 - want).abs() < 1e-9);
        assert_eq!(trending_a.2, t + 5);
    }

    #[test]
    fn an_older_event_adds_its_decayed_weight_without_moving_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("o.sqlite")).unwrap();
        let t = 1_764_000_000;
        let h = TRENDING_HALF_LIFE_S as i64;
        let batch = [
            ev("u1", "a", EventType::View, t),
            ev("u2", "a", EventType::Purchase, t - h),
        ];
        append_batches(&mut conn, &[(&batch[..], Sender::default())]).unwrap();
        let p = read_projections(&conn).unwrap();
        assert_eq!(p.trending, vec![("a".into(), 1.0 + 2.5, t)]);
    }

    #[test]
    fn a_replay_rebuilds_exactly_the_live_projections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let mut conn = open_writer(&path).unwrap();
        let kinds = EventType::ALL;
        let mut t = 1_764_000_000;
        for round in 0..20 {
            let batch: Vec<Event> = (0..25)
                .map(|i| {
                    t += (i * 7 % 5) as i64 - 1;
                    ev(
                        &format!("u{}", (i * 3 + round) % 9),
                        &format!("i{}", (i * i + round) % 17),
                        kinds[(i + round) % kinds.len()],
                        t,
                    )
                })
                .collect();
            append_batches(
                &mut conn,
                &[
                    (&batch[..10], Sender::default()),
                    (&batch[10..], Sender::default()),
                ],
            )
            .unwrap();
        }
        let live = read_projections(&conn).unwrap();
        assert!(!live.cooccurrence.is_empty());
        let report = replay_conn(&mut conn).unwrap();
        assert_eq!(report.events, 500);
        assert_eq!(read_projections(&conn).unwrap(), live);
    }

    #[test]
    fn a_logged_event_reads_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("o.sqlite")).unwrap();
        let mut e = ev("u1", "a", EventType::Rating, 1_764_000_000);
        e.context = Some(r#"{"page":"home"}"#.into());
        e.source = Some("kv".into());
        append_batches(&mut conn, &[(&[e.clone()][..], Sender::default())]).unwrap();
        assert_eq!(read_events(&conn, 1, 1).unwrap(), vec![(1, e)]);
    }

    #[tokio::test]
    async fn concurrent_appends_get_disjoint_committed_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.sqlite");
        let log = EventLog::open(&path, 5000).unwrap();
        let mut tasks = Vec::new();
        for k in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let batch: Vec<Event> = (0..20)
                    .map(|i| {
                        ev(
                            &format!("u{k}"),
                            &format!("i{i}"),
                            EventType::View,
                            1_764_000_000,
                        )
                    })
                    .collect();
                log.append(batch).await.unwrap()
            }));
        }
        let mut ranges = Vec::new();
        for t in tasks {
            ranges.push(t.await.unwrap());
        }
        ranges.sort_by_key(|r| r.first_seq);
        assert_eq!(ranges[0].first_seq, 1);
        for w in ranges.windows(2) {
            assert_eq!(w[0].last_seq + 1, w[1].first_seq);
        }
        assert!(ranges.iter().all(|r| r.last_seq - r.first_seq == 19));
        let h = log
            .user_history(&UserId::parse("u3").unwrap())
            .await
            .unwrap();
        assert_eq!(h.len(), 20);
        let conn = open_conn(&path, "NORMAL").unwrap();
        let events = read_events(&conn, 1, 1000).unwrap();
        assert_eq!(events.len(), 160);
    }

    #[test]
    fn an_event_id_already_in_the_log_is_acknowledged_but_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("log.sqlite")).unwrap();
        let with_id = |item: &str, id: &str| Event {
            event_id: Some(contract::EventId::parse(id).unwrap()),
            ..ev("u1", item, EventType::Purchase, 1_764_000_000)
        };
        let batch = [with_id("a", "e1"), with_id("b", "e2")];
        let client = Sender {
            client: Some("c0ffee"),
        };
        let first = append_batches(&mut conn, &[(&batch[..], client)]).unwrap();
        assert_eq!(first[0].duplicates, 0);
        // The retry (and a copy inside one batch) stores nothing and answers the same seqs.
        let retry = [with_id("a", "e1"), with_id("b", "e2"), with_id("b", "e2")];
        let again = append_batches(&mut conn, &[(&retry[..], client)]).unwrap();
        assert_eq!(
            again[0],
            Appended {
                first_seq: first[0].first_seq,
                last_seq: first[0].last_seq,
                duplicates: 3,
            }
        );
        let events: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, 2);
        let p = read_projections(&conn).unwrap();
        assert_eq!(p.user_history.len(), 2);
        assert!(
            p.user_history.iter().all(|h| h.3 == 1),
            "{:?}",
            p.user_history
        );
        // The client is recorded once per user, and a replay rebuilds the same.
        let users = |conn: &Connection| -> (Option<String>, i64) {
            conn.query_row(
                "SELECT u.client, c.users FROM users u JOIN client_users c USING (client)
                 WHERE u.user_id = 'u1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(users(&conn), (Some("c0ffee".into()), 1));
        replay_conn(&mut conn).unwrap();
        assert_eq!(users(&conn), (Some("c0ffee".into()), 1));
        assert_eq!(read_projections(&conn).unwrap(), p);
        let (id, from_events): (String, i64) = conn
            .query_row(
                "SELECT event_id, (SELECT from_events FROM items WHERE item_id = 'a')
                 FROM events WHERE seq = ?1",
                [first[0].first_seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((id.as_str(), from_events), ("e1", 1));
    }
}
