//! The tenant's A/B experiments on SQLite (`experiments`: one row per experiment, its
//! variants as JSON; a partial unique index lets at most one run). The definitions are
//! in [`crate::experiments`].

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::experiments::{Experiment, StartOutcome, Variant};
use crate::store::StoreError;

/// The table and its index (created by `Database::migrate`).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS experiments(
         name TEXT PRIMARY KEY,
         variants TEXT NOT NULL,
         started_at INTEGER NOT NULL,
         ended_at INTEGER NULL,
         promoted TEXT NULL);
     CREATE UNIQUE INDEX IF NOT EXISTS experiments_one_running
         ON experiments((ended_at IS NULL)) WHERE ended_at IS NULL;";

fn variants_json(variants: &[Variant]) -> Result<String, StoreError> {
    serde_json::to_string(variants).map_err(|e| StoreError::BadRow {
        table: "experiments",
        key: "variants".into(),
        message: e.to_string(),
    })
}

/// An experiment's columns back into an [`Experiment`].
pub(crate) fn experiment_from(
    name: String,
    variants: &str,
    started_at: i64,
    ended_at: Option<i64>,
    promoted: Option<String>,
) -> Result<Experiment, StoreError> {
    let variants = serde_json::from_str(variants).map_err(|e| StoreError::BadRow {
        table: "experiments",
        key: name.clone(),
        message: e.to_string(),
    })?;
    Ok(Experiment {
        name,
        variants,
        started_at,
        ended_at,
        promoted,
    })
}

/// Every experiment, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<Experiment>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, variants, started_at, ended_at, promoted FROM experiments
         ORDER BY started_at, name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, variants, started_at, ended_at, promoted) = row?;
        out.push(experiment_from(
            name, &variants, started_at, ended_at, promoted,
        )?);
    }
    Ok(out)
}

/// Starts `e` unless its name is taken or another experiment runs, in one immediate
/// transaction (no other writer between the check and the insert).
pub fn start(conn: &mut Connection, e: &Experiment) -> Result<StartOutcome, StoreError> {
    let variants = variants_json(&e.variants)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let taken = tx
        .prepare_cached("SELECT 1 FROM experiments WHERE name = ?1")?
        .exists([&e.name])?;
    if taken {
        return Ok(StartOutcome::NameTaken);
    }
    let running: Option<String> = tx
        .query_row(
            "SELECT name FROM experiments WHERE ended_at IS NULL",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(running) = running {
        return Ok(StartOutcome::Running(running));
    }
    tx.execute(
        "INSERT INTO experiments(name, variants, started_at, ended_at, promoted)
         VALUES (?1, ?2, ?3, NULL, NULL)",
        params![e.name, variants, e.started_at],
    )?;
    tx.commit()?;
    Ok(StartOutcome::Started)
}

/// Ends the running experiment `name`; false when none of that name runs.
pub fn end(
    conn: &Connection,
    name: &str,
    ended_at: i64,
    promoted: &str,
) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE experiments SET ended_at = max(?2, started_at), promoted = ?3
         WHERE name = ?1 AND ended_at IS NULL",
        params![name, ended_at, promoted],
    )? > 0)
}
