//! The tenant's business rules (one row: the document's JSON, its version) and the
//! impression counts fatigue reads (see [`crate::rules`]), on SQLite. The file holds
//! one tenant, so the rules table holds at most one row.

use contract::UserId;
use rusqlite::{params, Connection, OptionalExtension};

use crate::rules::{Fatigue, Fatigued, StoredRules, MAX_FATIGUED_PAIRS};
use crate::store::StoreError;

/// The rules table (created by [`super::Database::migrate`]).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS rules(
     id INTEGER PRIMARY KEY CHECK (id = 1),
     body TEXT NOT NULL,
     version INTEGER NOT NULL,
     updated_at INTEGER NOT NULL);";

/// The stored rules, when there are any.
pub fn read(conn: &Connection) -> Result<Option<StoredRules>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT body, version, updated_at FROM rules WHERE id = 1")?
        .query_row([], |r| {
            Ok(StoredRules {
                json: r.get(0)?,
                version: r.get(1)?,
                updated_at: r.get(2)?,
            })
        })
        .optional()?)
}

/// Replaces the rules, one version up.
pub fn put(conn: &Connection, json: &str, now: i64) -> Result<StoredRules, StoreError> {
    let version: i64 = conn
        .prepare_cached(
            "INSERT INTO rules(id, body, version, updated_at) VALUES (1, ?1, 1, ?2)
             ON CONFLICT(id) DO UPDATE SET body = excluded.body,
                 version = rules.version + 1, updated_at = excluded.updated_at
             RETURNING version",
        )?
        .query_row(params![json, now], |r| r.get(0))?;
    Ok(StoredRules {
        json: json.to_owned(),
        version,
        updated_at: now,
    })
}

/// Impressions since `?1` after the user's last interaction with the item, at least
/// `?2` per item, in user then item order, at most `?3` rows: of every user, or of
/// the user `?4` (by the partial index of impressions).
fn fatigued_sql(one_user: bool) -> String {
    format!(
        "SELECT v.user_id, v.item_id FROM events v
         LEFT JOIN proj_user_history h ON h.user_id = v.user_id AND h.item_id = v.item_id
         WHERE v.type = 'recommendation_viewed' AND v.ts >= ?1
           AND (h.last_ts IS NULL OR v.ts > h.last_ts) {user}
         GROUP BY v.user_id, v.item_id HAVING COUNT(*) >= ?2
         ORDER BY v.user_id, v.item_id LIMIT ?3",
        user = if one_user { "AND v.user_id = ?4" } else { "" }
    )
}

/// See [`crate::store::Store::fatigued`].
pub fn fatigued(
    conn: &Connection,
    users: Option<&[UserId]>,
    fatigue: Fatigue,
    now: i64,
) -> Result<Fatigued, StoreError> {
    let mut out = Fatigued::default();
    let (since, k, limit) = (
        fatigue.since(now),
        i64::from(fatigue.impressions),
        MAX_FATIGUED_PAIRS as i64 + 1,
    );
    let mut take = |mut rows: rusqlite::Rows<'_>| -> Result<(), StoreError> {
        while let Some(r) = rows.next()? {
            let (u, i): (String, String) = (r.get(0)?, r.get(1)?);
            out.insert(&u, i);
        }
        Ok(())
    };
    match users {
        None => {
            let mut stmt = conn.prepare_cached(&fatigued_sql(false))?;
            take(stmt.query(params![since, k, limit])?)?;
        }
        Some(users) => {
            let mut stmt = conn.prepare_cached(&fatigued_sql(true))?;
            for u in users {
                take(stmt.query(params![since, k, limit, u.as_str()])?)?;
            }
        }
    }
    Ok(out)
}
