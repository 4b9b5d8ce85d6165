//! The SQLite database file: its schema (checked to be ours, migrated), the item
//! catalogue (with its attributes), the users (with their country and segment) and the
//! interactions between them.
//!
//! All SQL is parameterised. Writes go in batches, each batch in one transaction, so an
//! import either lands whole or not at all. Reads turn the tables into the dense index
//! space the models train on ([`model::TrainingData`] plus [`IdMaps`]).
//!
//! # Layout
//! - [`Database`]: open/create, migrate, batch inserts, reads, and the catalogue's
//!   writes and reads of one item or user (`upsert_items`, `item`, `delete_item`, and
//!   the same for users).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::{Interaction, ItemIdx, ItemText, TrainingData, UserIdx};
use crate::store::{
    parse_attributes, Batch, Counts, IdMaps, InteractionRow, ItemRow, Load, StoreError, UserRow,
};

/// The item columns [`Database::item`] reads, in [`item_from_row`]'s order.
const ITEM_COLUMNS: &str = "item_id, title, description, categories, tags, price, currency, \
     available, created_at, attributes";

/// An item from a row of [`ITEM_COLUMNS`].
fn item_from_row(r: &rusqlite::Row<'_>) -> Result<ItemRow, StoreError> {
    let item_id: String = r.get(0)?;
    let attributes = parse_attributes(&item_id, &r.get::<_, String>(9)?)?;
    Ok(ItemRow {
        title: r.get(1)?,
        description: r.get(2)?,
        categories: split_list(&r.get::<_, String>(3)?),
        tags: split_list(&r.get::<_, String>(4)?),
        price: r.get(5)?,
        currency: r.get(6)?,
        available: r.get::<_, i64>(7)? != 0,
        created_at: r.get(8)?,
        attributes,
        item_id,
    })
}

/// Upserts `items` in the transaction `tx`; `catalogue` also marks them as catalogue
/// items (no longer known only from events).
fn upsert_item_rows(
    tx: &rusqlite::Transaction<'_>,
    items: &[ItemRow],
    catalogue: bool,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO items(item_id, title, description, categories, tags, price, currency,
             available, created_at, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(item_id) DO UPDATE SET title = excluded.title,
             description = excluded.description, categories = excluded.categories,
             tags = excluded.tags, price = excluded.price, currency = excluded.currency,
             available = excluded.available, created_at = excluded.created_at,
             attributes = excluded.attributes",
    )?;
    let mut mark = tx.prepare_cached("UPDATE items SET from_events = 0 WHERE item_id = ?1")?;
    for i in items {
        stmt.execute(params![
            i.item_id,
            i.title,
            i.description,
            i.categories.join(","),
            i.tags.join(","),
            i.price,
            i.currency,
            i.available,
            i.created_at,
            i.attributes_json(),
        ])?;
        if catalogue {
            mark.execute([&i.item_id])?;
        }
    }
    Ok(())
}

/// Upserts `users` (country and segment) in the transaction `tx`.
fn upsert_user_rows(tx: &rusqlite::Transaction<'_>, users: &[UserRow]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO users(user_id, country, segment) VALUES (?1, ?2, ?3)
         ON CONFLICT(user_id) DO UPDATE SET country = excluded.country,
             segment = excluded.segment",
    )?;
    for u in users {
        stmt.execute(params![u.user_id, u.country, u.segment])?;
    }
    Ok(())
}

/// Version of the schema created by [`Database::migrate`].
pub const SCHEMA_VERSION: i64 = 2;
/// SQLite `application_id` of our databases ("RECS"): a database file with another id,
/// or with tables but none of ours, is refused rather than adopted.
pub const APPLICATION_ID: i32 = 0x5245_4353;

/// One SQLite database file of the origin.
pub struct Database {
    conn: Connection,
    path: std::path::PathBuf,
}

/// Refuses a database that is not ours: another application's id, or tables but no
/// `meta` table with our schema version (an empty or new file is fine).
fn check_ours(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let at = |e: rusqlite::Error| StoreError::at(path, e);
    let foreign = |why: String| StoreError::Foreign {
        path: path.display().to_string(),
        why,
    };
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(at)?;
    if id == APPLICATION_ID {
        return Ok(());
    }
    if id != 0 {
        return Err(foreign(format!("its application_id is {id:#x}")));
    }
    let tables: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(at)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(at)?;
        rows.collect::<Result<_, _>>().map_err(at)?
    };
    if tables.is_empty() {
        return Ok(());
    }
    // A database of ours from before the application id was set has our meta table.
    let ours = tables.iter().any(|t| t == "meta")
        && conn
            .query_row(
                "SELECT 1 FROM meta WHERE key = 'schema_version'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(at)?
            .is_some();
    if ours {
        return Ok(());
    }
    let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
    Err(foreign(format!(
        "it has tables {} and no origin schema",
        shown.join(", ")
    )))
}

/// One item read on `conn`, when it exists.
pub fn read_item(conn: &Connection, item_id: &str) -> Result<Option<ItemRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ITEM_COLUMNS} FROM items WHERE item_id = ?1"
    ))?;
    let mut rows = stmt.query([item_id])?;
    match rows.next()? {
        Some(r) => Ok(Some(item_from_row(r)?)),
        None => Ok(None),
    }
}

/// One user read on `conn`, when they exist.
pub fn read_user(conn: &Connection, user_id: &str) -> Result<Option<UserRow>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT user_id, country, segment FROM users WHERE user_id = ?1")?
        .query_row([user_id], |r| {
            Ok(UserRow {
                user_id: r.get(0)?,
                country: r.get(1)?,
                segment: r.get(2)?,
            })
        })
        .optional()?)
}

/// Deletes the row of `id` from `table` (`items` or `users`, fixed by the caller), and
/// gives whether there was one.
pub fn delete_row(conn: &Connection, table: CatalogueTable, id: &str) -> Result<bool, StoreError> {
    let sql = match table {
        CatalogueTable::Items => "DELETE FROM items WHERE item_id = ?1",
        CatalogueTable::Users => "DELETE FROM users WHERE user_id = ?1",
    };
    Ok(conn.prepare_cached(sql)?.execute([id])? > 0)
}

/// The tables a catalogue delete may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogueTable {
    Items,
    Users,
}

/// Adds a column when the table does not have it yet (schema upgrades).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    // Names are fixed literals of this module, never user input.
    let has: bool = conn
        .prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
        ))?
        .exists([])?;
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Database {
    /// Opens (creating when missing, along with its directory) the database at `path`
    /// in WAL mode and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: path.display().to_string(),
                source,
            })?;
        }
        let at = |e: rusqlite::Error| StoreError::at(path, e);
        let conn = Connection::open(path).map_err(at)?;
        check_ours(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(at)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(at)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(at)?;
        let mut store = Database {
            conn,
            path: path.to_owned(),
        };
        store.migrate().map_err(|e| StoreError::at(path, e))?;
        Ok(store)
    }

    /// The running A/B experiment, if one runs (`origin publish` reads it).
    pub fn running_experiment(&self) -> Result<Option<crate::experiments::Experiment>, StoreError> {
        Ok(super::experiments::list(&self.conn)?
            .into_iter()
            .find(|e| e.is_running()))
    }

    /// The connection, for the writes of the modules beside this one.
    pub(super) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection, for a part of the store with queries of its own (the tenant
    /// registry).
    pub(crate) fn into_connection(self) -> Connection {
        self.conn
    }

    /// Creates the tables and indexes when missing and records the schema version.
    pub fn migrate(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(
                 key TEXT PRIMARY KEY,
                 value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS items(
                 item_id TEXT PRIMARY KEY,
                 title TEXT NOT NULL DEFAULT '',
                 categories TEXT NOT NULL DEFAULT '',
                 tags TEXT NOT NULL DEFAULT '',
                 created_at INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE IF NOT EXISTS users(
                 user_id TEXT PRIMARY KEY,
                 country TEXT NULL);
             CREATE TABLE IF NOT EXISTS client_users(
                 client TEXT PRIMARY KEY,
                 users INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS interactions(
                 user_id TEXT NOT NULL,
                 item_id TEXT NOT NULL,
                 weight REAL NOT NULL,
                 ts INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions(user_id, ts);",
        )?;
        add_column(
            &self.conn,
            "items",
            "from_events",
            "INTEGER NOT NULL DEFAULT 0",
        )?;
        add_column(&self.conn, "users", "client", "TEXT NULL")?;
        // The catalogue's attributes (issue #15).
        add_column(
            &self.conn,
            "items",
            "description",
            "TEXT NOT NULL DEFAULT ''",
        )?;
        add_column(&self.conn, "items", "price", "REAL NULL")?;
        add_column(&self.conn, "items", "currency", "TEXT NULL")?;
        add_column(
            &self.conn,
            "items",
            "available",
            "INTEGER NOT NULL DEFAULT 1",
        )?;
        add_column(
            &self.conn,
            "items",
            "attributes",
            "TEXT NOT NULL DEFAULT '{}'",
        )?;
        add_column(&self.conn, "users", "segment", "TEXT NULL")?;
        self.conn.execute_batch(super::tenants::SCHEMA)?;
        // The tenant's business rules (issue #15).
        self.conn.execute_batch(super::rules::SCHEMA)?;
        // A/B experiments (issue #15).
        self.conn.execute_batch(super::experiments::SCHEMA)?;
        // A tenant's model setting (issue #13): NULL, the origin's `--model`.
        add_column(&self.conn, "tenants", "model", "TEXT NULL")?;
        self.conn
            .pragma_update(None, "application_id", APPLICATION_ID)?;
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(v) if v == SCHEMA_VERSION => {}
            _ => self.set_meta("schema_version", &SCHEMA_VERSION.to_string())?,
        }
        Ok(())
    }

    /// Sets a value in the meta table.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Reads a value from the meta table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Prepares for a large load: drops the per-user history index (rebuilt by
    /// [`Database::end_bulk_load`], much faster than maintaining it row by row) and
    /// relaxes syncing. A crash during the load may lose the load, never older data.
    pub fn begin_bulk_load(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "DROP INDEX IF EXISTS interactions_by_user;
             PRAGMA synchronous = OFF;
             PRAGMA cache_size = -65536;",
        )?;
        Ok(())
    }

    /// Ends a large load: rebuilds the index and restores normal syncing.
    pub fn end_bulk_load(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS interactions_by_user ON interactions(user_id, ts);
             PRAGMA synchronous = NORMAL;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )?;
        Ok(())
    }

    /// Deletes all items, users and interactions (the meta table stays).
    pub fn clear(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM interactions", [])?;
        tx.execute("DELETE FROM users", [])?;
        tx.execute("DELETE FROM items", [])?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces the items, users and interactions with the batches `next` gives until
    /// [`Load::End`] (see [`crate::store::Store::replace_content`]): clears them, sets
    /// `meta`, then writes each batch in a transaction of its own, bulk-load style. A
    /// load whose source runs dry (`None`) before its end fails.
    pub fn replace_content(
        &mut self,
        meta: &[(String, String)],
        mut next: impl FnMut() -> Option<Load>,
    ) -> Result<(), StoreError> {
        self.clear()?;
        for (key, value) in meta {
            self.set_meta(key, value)?;
        }
        self.begin_bulk_load()?;
        let complete = loop {
            match next() {
                Some(Load::Batch(batch)) => self.insert_batch(&batch)?,
                Some(Load::End) => break true,
                None => break false,
            }
        };
        self.end_bulk_load()?;
        match complete {
            true => Ok(()),
            false => Err(StoreError::Task(
                "the load ended before its last batch".into(),
            )),
        }
    }

    /// Writes a batch in one transaction: all of it or, on error, none of it.
    pub fn insert_batch(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            upsert_item_rows(&tx, &batch.items, false)?;
            upsert_user_rows(&tx, &batch.users)?;
            let mut new_user =
                tx.prepare_cached("INSERT OR IGNORE INTO users(user_id) VALUES (?1)")?;
            let mut new_item =
                tx.prepare_cached("INSERT OR IGNORE INTO items(item_id) VALUES (?1)")?;
            let mut interaction = tx.prepare_cached(
                "INSERT INTO interactions(user_id, item_id, weight, ts) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut users_done: std::collections::HashSet<&str> =
                batch.users.iter().map(|u| u.user_id.as_str()).collect();
            let mut items_done: std::collections::HashSet<&str> =
                batch.items.iter().map(|i| i.item_id.as_str()).collect();
            for r in &batch.interactions {
                if users_done.insert(r.user_id.as_str()) {
                    new_user.execute([&r.user_id])?;
                }
                if items_done.insert(r.item_id.as_str()) {
                    new_item.execute([&r.item_id])?;
                }
                interaction.execute(params![r.user_id, r.item_id, f64::from(r.weight), r.ts])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Row counts of the users, items and interactions tables.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            // Table names cannot be parameters; these are fixed literals.
            let n: i64 =
                self.conn
                    .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        };
        Ok(Counts {
            users: count("users")?,
            items: count("items")?,
            interactions: count("interactions")?,
        })
    }

    /// All user ids, sorted.
    pub fn list_users(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT user_id FROM users ORDER BY user_id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One user's interactions, oldest first.
    pub fn user_history(&self, user_id: &str) -> Result<Vec<InteractionRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT user_id, item_id, weight, ts FROM interactions
             WHERE user_id = ?1 ORDER BY ts, rowid",
        )?;
        let rows = stmt.query_map([user_id], |r| {
            Ok(InteractionRow {
                user_id: r.get(0)?,
                item_id: r.get(1)?,
                weight: r.get::<_, f64>(2)? as f32,
                ts: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One item, when it exists.
    pub fn item(&self, item_id: &str) -> Result<Option<ItemRow>, StoreError> {
        read_item(&self.conn, item_id)
    }

    /// Creates or replaces catalogue items in one transaction (see
    /// [`crate::store::Store::upsert_items`]).
    pub fn upsert_items(&mut self, items: &[ItemRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        upsert_item_rows(&tx, items, true)?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes the row of `id` from `table`; gives whether there was one.
    pub fn delete_row(&mut self, table: CatalogueTable, id: &str) -> Result<bool, StoreError> {
        delete_row(&self.conn, table, id)
    }

    /// Creates or replaces users in one transaction.
    pub fn upsert_users(&mut self, users: &[UserRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        upsert_user_rows(&tx, users)?;
        tx.commit()?;
        Ok(())
    }

    /// Counts and training data read together (see [`crate::store::Store::training_set`]).
    pub fn training_set(&self) -> Result<crate::store::TrainingSet, StoreError> {
        // Read first: the data read after it holds at least the events up to it.
        let upto_seq = self.last_event_seq()?;
        let counts = self.counts().map_err(|e| StoreError::at(&self.path, e))?;
        let (data, maps) = self.training_data()?;
        Ok(crate::store::TrainingSet {
            counts,
            data,
            maps,
            upto_seq,
        })
    }

    /// The seq of the newest event in the log (`None`: no event log or no events).
    fn last_event_seq(&self) -> Result<Option<i64>, StoreError> {
        let has_log: bool = self.conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
            [],
            |r| r.get(0),
        )?;
        if !has_log {
            return Ok(None);
        }
        Ok(self
            .conn
            .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?)
    }

    /// Everything a model trains on, in dense index space, plus the ids of the indices.
    ///
    /// Users and items are numbered in id order, so the same database always gives the
    /// same indices. `user_region` is left as the user's country; callers map countries
    /// to regions.
    pub fn training_data(&self) -> Result<(TrainingData, IdMaps), StoreError> {
        self.read_training_data()
            .map_err(|e| StoreError::at(&self.path, e))
    }

    fn read_training_data(&self) -> Result<(TrainingData, IdMaps), StoreError> {
        let mut maps = IdMaps::default();
        let mut user_index: HashMap<String, UserIdx> = HashMap::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT u.user_id, u.country, COALESCE(c.users, 0) FROM users u
                 LEFT JOIN client_users c ON c.client = u.client ORDER BY u.user_id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                let country: Option<String> = r.get(1)?;
                let client_users: i64 = r.get(2)?;
                user_index.insert(id.clone(), maps.user_ids.len() as UserIdx);
                maps.user_ids.push(id);
                maps.user_country.push(country);
                maps.user_client_users
                    .push(client_users.clamp(0, i64::from(u32::MAX)) as u32);
            }
        }
        let mut item_index: HashMap<String, ItemIdx> = HashMap::new();
        let mut item_text = Vec::new();
        {
            let mut stmt = self.conn.prepare(
                "SELECT item_id, title, categories, tags, from_events, description, available
                 FROM items ORDER BY item_id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let id: String = r.get(0)?;
                item_index.insert(id.clone(), maps.item_ids.len() as ItemIdx);
                maps.item_ids.push(id);
                maps.item_from_events.push(r.get::<_, i64>(4)? != 0);
                maps.item_available.push(r.get::<_, i64>(6)? != 0);
                item_text.push(ItemText {
                    title: r.get(1)?,
                    description: r.get(5)?,
                    categories: split_list(&r.get::<_, String>(2)?),
                    tags: split_list(&r.get::<_, String>(3)?),
                });
            }
        }
        // Exact capacity: at millions of rows, doubling growth would double peak memory.
        let expected: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM interactions", [], |r| r.get(0))?;
        let mut interactions = Vec::with_capacity(expected.max(0) as usize);
        {
            let mut stmt = self
                .conn
                .prepare("SELECT user_id, item_id, weight, ts FROM interactions")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let u: String = r.get(0)?;
                let i: String = r.get(1)?;
                // Both exist: inserts create missing users and items in the same transaction.
                if let (Some(&user), Some(&item)) = (user_index.get(&u), item_index.get(&i)) {
                    interactions.push(Interaction {
                        user,
                        item,
                        weight: r.get::<_, f64>(2)? as f32,
                        timestamp: r.get(3)?,
                    });
                }
            }
        }
        let data = TrainingData {
            n_users: maps.user_ids.len(),
            n_items: maps.item_ids.len(),
            interactions,
            item_text,
            user_region: maps.user_country.clone(),
            user_weight: Vec::new(),
        };
        Ok((data, maps))
    }

    /// A hash of the whole content (items, users, interactions in a fixed order), for
    /// checking that two databases hold the same data.
    pub fn content_hash(&self) -> Result<u64, StoreError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for sql in [
            "SELECT item_id || '|' || title || '|' || categories || '|' || tags || '|' || created_at FROM items ORDER BY item_id",
            "SELECT user_id || '|' || COALESCE(country, '') FROM users ORDER BY user_id",
            "SELECT user_id || '|' || item_id || '|' || weight || '|' || ts FROM interactions ORDER BY user_id, ts, item_id, weight",
        ] {
            let mut stmt = self.conn.prepare(sql)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                r.get::<_, String>(0)?.hash(&mut h);
            }
            sql.hash(&mut h);
        }
        Ok(h.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserRow;

    fn batch() -> Batch {
        Batch {
            items: vec![ItemRow {
                item_id: "i1".into(),
                title: "Blue Lantern".into(),
                categories: vec!["books".into(), "travel".into()],
                tags: vec!["cozy".into()],
                created_at: 5,
                ..Default::default()
            }],
            users: vec![UserRow {
                user_id: "u1".into(),
                country: Some("DE".into()),
                segment: None,
            }],
            interactions: vec![
                InteractionRow {
                    user_id: "u1".into(),
                    item_id: "i1".into(),
                    weight: 1.0,
                    ts: 10,
                },
                InteractionRow {
                    user_id: "u2".into(),
                    item_id: "i2".into(),
                    weight: 2.5,
                    ts: 11,
                },
            ],
        }
    }

    #[test]
    fn a_batch_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/origin.sqlite");
        {
            let mut s = Database::open(&path).unwrap();
            s.insert_batch(&batch()).unwrap();
        }
        let s = Database::open(&path).unwrap();
        assert_eq!(
            s.counts().unwrap(),
            Counts {
                users: 2,
                items: 2,
                interactions: 2
            }
        );
        assert_eq!(s.list_users().unwrap(), vec!["u1", "u2"]);
        assert_eq!(s.item("i1").unwrap().unwrap(), batch().items[0]);
        let h = s.user_history("u2").unwrap();
        assert_eq!(h, vec![batch().interactions[1].clone()]);
        let (data, maps) = s.training_data().unwrap();
        assert_eq!(data.n_users, 2);
        assert_eq!(data.n_items, 2);
        assert_eq!(maps.user_country[0].as_deref(), Some("DE"));
        assert_eq!(data.interactions.len(), 2);
        assert_eq!(data.item_text[0].categories, vec!["books", "travel"]);
        assert_eq!(s.meta("schema_version").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn a_bulk_load_ends_with_the_history_index_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Database::open(&dir.path().join("o.sqlite")).unwrap();
        let has_index = |s: &Database| -> bool {
            s.conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'interactions_by_user'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                == 1
        };
        s.begin_bulk_load().unwrap();
        assert!(!has_index(&s));
        s.insert_batch(&batch()).unwrap();
        s.end_bulk_load().unwrap();
        assert!(has_index(&s));
        assert_eq!(s.user_history("u1").unwrap().len(), 1);
    }

    #[test]
    fn the_database_runs_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let s = Database::open(&dir.path().join("o.sqlite")).unwrap();
        let mode: String = s
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_database_of_another_program_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE accounts(id INTEGER PRIMARY KEY, name TEXT);")
                .unwrap();
        }
        let err = Database::open(&path).err().expect("refused");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Foreign { .. }), "{text}");
        assert!(
            text.contains(&path.display().to_string()) && text.contains("accounts"),
            "{text}"
        );
        // Nothing of ours was written into it.
        let conn = Connection::open(&path).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1);
        // Another application's id is refused too; ours (and a new file) open.
        conn.pragma_update(None, "application_id", 7).unwrap();
        drop(conn);
        assert!(Database::open(&path).is_err());
        let ours = dir.path().join("ours.sqlite");
        drop(Database::open(&ours).unwrap());
        assert!(Database::open(&ours).is_ok());
    }

    #[test]
    fn a_corrupt_database_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.sqlite");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let text = Database::open(&path).err().expect("refused").to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}
