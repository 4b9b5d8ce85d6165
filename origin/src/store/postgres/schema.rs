//! The PostgreSQL schema: versioned migrations (a `schema_migrations` table, each
//! migration a SQL text with a version) applied at open under an advisory lock, so
//! several origins may start at once, and the monthly partitions of the event log
//! created ahead.
//!
//! Every key carries a `tenant` column, so one database can hold many tenants. Id
//! columns are `COLLATE "C"` (bytewise), so every `ORDER BY` of ids sorts as SQLite's
//! does.
//!
//! - `events`: `PARTITION BY RANGE (ts)` (unix seconds), one partition per month
//!   (`events_yYYYYmMM`, the current month and the next [`MONTHS_AHEAD`]) and a
//!   DEFAULT partition, so an event of any time is stored. Its `seq` comes from the
//!   sequence `events_seq`. Every writer keeps the months ahead created, and the
//!   leader, with `--event-retention-months`, detaches and drops older ones
//!   ([`maintain`]).
//! - `event_ids(tenant, event_id) → seq`: the idempotency key. A unique index on a
//!   partitioned table must hold the partition key, so it is a table of its own,
//!   written in the same transaction as the event.
//! - per-user tables (`users`, `interactions`, `proj_user_history`):
//!   `PARTITION BY HASH (user_id)` into `--db-user-partitions` partitions (default
//!   [`USER_PARTITIONS`]), fixed when the schema is created: a later start asking for
//!   another number keeps the existing one and logs a warning (changing it means a
//!   dump and a restore into a new database).
//! - `items` (with the catalogue's attributes, a `jsonb` object), `client_users`, `proj_item_popularity`, `proj_trending`,
//!   `proj_cooccurrence`, `edge_reports`, `meta`.
//! - `tenants`, `tenant_keys`: the tenant registry (`crate::tenants`; keys as hashes).
//! - `rules`: each tenant's business rules (`crate::rules`; migration 7).
//! - `experiments`: the tenants' A/B experiments (migration 8; a partial unique index
//!   lets one run per tenant).
//!
//! Only the indexes the queries use: the primary keys, `events(tenant, ts)` (analytics
//! ranges), `events(tenant, received_at)` (real-time counts), the partial index of
//! impressions (a click counts only on an item shown), `interactions(tenant, user_id)`
//! (a user's history), `proj_user_history(tenant, user_id, last_seq)` (the recent items
//! of co-occurrence) and `edge_reports(tenant, received_at)`.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Hash partitions of each per-user table when none are asked for; the number only
/// matters when the schema is created.
pub const USER_PARTITIONS: u32 = 8;
/// The most hash partitions a per-user table may have.
pub const MAX_USER_PARTITIONS: u32 = 256;
/// Monthly partitions of `events` created ahead of the current month.
pub const MONTHS_AHEAD: u32 = 2;
/// Advisory lock key (first half) of schema changes ("RECS").
const MIGRATION_LOCK: i64 = 0x5245_4353;

/// Hash-partitions of `table` (whose `CREATE TABLE … PARTITION BY HASH (user_id)` came
/// before): `{table}_p{k}` for every k < `n`. Names are fixed and `n` an integer, never
/// text from input.
fn hash_partitions(table: &str, n: u32) -> String {
    (0..n)
        .map(|k| {
            format!(
                "CREATE TABLE {table}_p{k} PARTITION OF {table}
                     FOR VALUES WITH (MODULUS {n}, REMAINDER {k});\n"
            )
        })
        .collect()
}

/// The migrations, in order: (version, SQL); the per-user tables of the first get
/// `user_partitions` hash partitions each.
fn migrations(user_partitions: u32) -> Vec<(i64, String)> {
    let v1 = format!(
        r#"
CREATE TABLE meta(
    tenant text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (tenant, key));
CREATE TABLE items(
    tenant text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    title text NOT NULL DEFAULT '',
    categories text NOT NULL DEFAULT '',
    tags text NOT NULL DEFAULT '',
    created_at bigint NOT NULL DEFAULT 0,
    from_events boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant, item_id));
CREATE TABLE users(
    tenant text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    country text NULL,
    client text COLLATE "C" NULL,
    PRIMARY KEY (tenant, user_id)) PARTITION BY HASH (user_id);
{users}
CREATE TABLE client_users(
    tenant text COLLATE "C" NOT NULL,
    client text COLLATE "C" NOT NULL,
    users bigint NOT NULL,
    PRIMARY KEY (tenant, client));
CREATE TABLE interactions(
    tenant text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    weight double precision NOT NULL,
    ts bigint NOT NULL,
    event_seq bigint NULL) PARTITION BY HASH (user_id);
{interactions}
CREATE INDEX interactions_by_user ON interactions(tenant, user_id);
CREATE SEQUENCE events_seq AS bigint;
CREATE TABLE events(
    tenant text COLLATE "C" NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('events_seq'),
    received_at bigint NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    type text NOT NULL,
    value double precision NULL,
    ts bigint NOT NULL,
    context text NULL,
    source text NULL,
    region text NULL,
    event_id text COLLATE "C" NULL,
    client text COLLATE "C" NULL,
    PRIMARY KEY (tenant, seq, ts)) PARTITION BY RANGE (ts);
ALTER SEQUENCE events_seq OWNED BY events.seq;
CREATE TABLE events_default PARTITION OF events DEFAULT;
CREATE INDEX events_by_ts ON events(tenant, ts);
CREATE INDEX events_by_received_at ON events(tenant, received_at);
CREATE INDEX events_impressions ON events(tenant, user_id, item_id, ts)
    WHERE type = 'recommendation_viewed';
CREATE TABLE event_ids(
    tenant text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (tenant, event_id));
CREATE TABLE proj_user_history(
    tenant text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    weight double precision NOT NULL,
    events bigint NOT NULL,
    last_ts bigint NOT NULL,
    last_seq bigint NOT NULL,
    PRIMARY KEY (tenant, user_id, item_id)) PARTITION BY HASH (user_id);
{history}
CREATE INDEX proj_user_history_recent ON proj_user_history(tenant, user_id, last_seq);
CREATE TABLE proj_item_popularity(
    tenant text COLLATE "C" NOT NULL,
    region text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    events bigint NOT NULL,
    weight double precision NOT NULL,
    PRIMARY KEY (tenant, region, item_id));
CREATE TABLE proj_trending(
    tenant text COLLATE "C" NOT NULL,
    item_id text COLLATE "C" NOT NULL,
    score double precision NOT NULL,
    as_of bigint NOT NULL,
    PRIMARY KEY (tenant, item_id));
CREATE TABLE proj_cooccurrence(
    tenant text COLLATE "C" NOT NULL,
    item_a text COLLATE "C" NOT NULL,
    item_b text COLLATE "C" NOT NULL,
    users bigint NOT NULL,
    PRIMARY KEY (tenant, item_a, item_b));
CREATE TABLE edge_reports(
    tenant text COLLATE "C" NOT NULL,
    received_at bigint NOT NULL,
    region text COLLATE "C" NULL,
    requests bigint NOT NULL,
    hits bigint NOT NULL);
CREATE INDEX edge_reports_by_received_at ON edge_reports(tenant, received_at);
"#,
        users = hash_partitions("users", user_partitions),
        interactions = hash_partitions("interactions", user_partitions),
        history = hash_partitions("proj_user_history", user_partitions),
    );
    // SQLite's SUM of floats is compensated (Kahan-Babuska-Neumaier, SQLite ≥ 3.43);
    // PostgreSQL's float8 SUM is not, and drifts in the last bits. `kbn_sum` is SQLite's
    // algorithm step for step, so averages of scores are the same numbers on both.
    let v2 = r#"
CREATE FUNCTION kbn_sum_step(state float8[], r float8) RETURNS float8[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ARRAY[t, state[2] + CASE WHEN abs(state[1]) > abs(r)
                                    THEN (state[1] - t) + r
                                    ELSE (r - t) + state[1] END]
    FROM (SELECT state[1] + r AS t) AS x
$$;
CREATE FUNCTION kbn_sum_final(state float8[]) RETURNS float8
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT state[1] + state[2] $$;
CREATE AGGREGATE kbn_sum(float8) (
    SFUNC = kbn_sum_step, STYPE = float8[], FINALFUNC = kbn_sum_final,
    INITCOND = '{0,0}');
"#
    .to_owned();
    // The model the last retrain trained (see `crate::retrain`): the other origins on
    // this database train the same data and serve the same version.
    let v3 = r#"
CREATE TABLE trained_models(
    tenant text COLLATE "C" NOT NULL,
    trained_at bigint NOT NULL,
    model_version text NOT NULL,
    upto_seq bigint NULL,
    users bigint NOT NULL,
    items bigint NOT NULL,
    interactions bigint NOT NULL,
    recorded_at bigint NOT NULL,
    PRIMARY KEY (tenant, trained_at, model_version));
"#
    .to_owned();
    // The tenant registry (`crate::tenants`): tenants, and their keys as SHA-256 hashes.
    let v4 = r#"
CREATE TABLE tenants(
    tenant text COLLATE "C" PRIMARY KEY,
    name text NOT NULL,
    requests_per_second bigint NOT NULL,
    events_per_day bigint NOT NULL,
    max_users bigint NOT NULL,
    max_items bigint NOT NULL,
    created_at bigint NOT NULL);
CREATE TABLE tenant_keys(
    key_hash text COLLATE "C" PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL REFERENCES tenants(tenant) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('client', 'server')),
    hint text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NULL);
CREATE INDEX tenant_keys_by_tenant ON tenant_keys(tenant, kind);
"#
    .to_owned();
    // The catalogue's attributes (issue #15): an item's description, price and currency,
    // availability and a small JSON object; a user's segment.
    let v5 = r#"
ALTER TABLE items
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN price double precision NULL,
    ADD COLUMN currency text NULL,
    ADD COLUMN available boolean NOT NULL DEFAULT true,
    ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN segment text NULL;
"#
    .to_owned();
    // A tenant's model setting (issue #13): NULL, the origin's `--model`.
    let v6 = "ALTER TABLE tenants ADD COLUMN model text NULL;\n".to_owned();
    // A tenant's business rules (issue #15, `crate::rules`): the validated document's
    // JSON and a version one more at each change.
    let v7 = r#"
CREATE TABLE rules(
    tenant text COLLATE "C" PRIMARY KEY,
    body text NOT NULL,
    version bigint NOT NULL,
    updated_at bigint NOT NULL);
"#
    .to_owned();
    // A/B experiments (issue #15): at most one runs per tenant.
    let v8 = r#"
CREATE TABLE experiments(
    tenant text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    variants jsonb NOT NULL,
    started_at bigint NOT NULL,
    ended_at bigint NULL,
    promoted text NULL,
    PRIMARY KEY (tenant, name));
CREATE UNIQUE INDEX experiments_one_running ON experiments(tenant) WHERE ended_at IS NULL;
"#
    .to_owned();
    vec![
        (1, v1),
        (2, v2),
        (3, v3),
        (4, v4),
        (5, v5),
        (6, v6),
        (7, v7),
        (8, v8),
    ]
}

/// The newest schema version this program knows.
pub fn schema_version() -> i64 {
    migrations(USER_PARTITIONS).last().map_or(0, |m| m.0)
}

/// Checks a requested number of per-user hash partitions (1 to [`MAX_USER_PARTITIONS`]).
pub fn check_user_partitions(n: u32) -> Result<u32, StoreError> {
    match n {
        1..=MAX_USER_PARTITIONS => Ok(n),
        _ => Err(StoreError::UserPartitions(n)),
    }
}

/// What a warning says when the schema's per-user partitions (`found`) are not the
/// number asked for (`requested`); `None` when they agree or none was asked for.
pub fn partitions_note(requested: Option<u32>, found: u32) -> Option<String> {
    match requested {
        Some(n) if n != found => Some(format!(
            "--db-user-partitions {n} is ignored: the schema was created with {found} \
             hash partitions per user table, and the number only applies when the schema \
             is created (changing it needs a dump and a restore into a new database)"
        )),
        _ => None,
    }
}

/// Takes the schema lock (a session advisory lock): origins starting or maintaining
/// together take turns.
async fn lock(client: &Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(())
}

/// Releases the schema lock, keeping the first error of the work done under it.
async fn unlock<T>(client: &Client, result: Result<T, StoreError>) -> Result<T, StoreError> {
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let value = result?;
    unlocked?;
    Ok(value)
}

/// Applies the migrations not applied yet, each in its own transaction (a new schema's
/// per-user tables get `user_partitions` hash partitions), and creates the event log's
/// monthly partitions around `now` (unix seconds), all under a session advisory lock:
/// origins starting together wait for each other, and the second finds the work done.
/// Gives the number of hash partitions the per-user tables have.
pub async fn migrate(
    client: &mut Client,
    now: i64,
    user_partitions: u32,
) -> Result<u32, StoreError> {
    let user_partitions = check_user_partitions(user_partitions)?;
    lock(client).await?;
    let result = async {
        migrate_locked(client, now, user_partitions).await?;
        let found: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pg_inherits WHERE inhparent = 'users'::regclass",
                &[],
            )
            .await?
            .get(0);
        Ok(found.clamp(0, i64::from(u32::MAX)) as u32)
    }
    .await;
    unlock(client, result).await
}

/// Event-log upkeep, under the schema lock: creates the partitions of the month holding
/// `now` and the [`MONTHS_AHEAD`] after it (every writer, periodically), and with
/// `keep_months` above 0 detaches and drops every month before the `keep_months` kept
/// ([`drop_months_before`]; the leader, `crate::store::retention`). Gives the months
/// dropped.
pub async fn maintain(
    client: &Client,
    now: i64,
    keep_months: u32,
) -> Result<Vec<String>, StoreError> {
    lock(client).await?;
    let result = async {
        ensure_partitions(client, now).await?;
        match keep_months {
            0 => Ok(Vec::new()),
            keep => drop_months_before(client, now, keep).await,
        }
    }
    .await;
    unlock(client, result).await
}

async fn migrate_locked(
    client: &mut Client,
    now: i64,
    user_partitions: u32,
) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations(
                 version bigint PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: i64 = client
        .query_one(
            "SELECT coalesce(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = schema_version();
    if applied > known {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            supported: known,
        });
    }
    for (version, sql) in migrations(user_partitions) {
        if version <= applied {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(&sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations(version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, "postgres schema migrated");
    }
    ensure_partitions(client, now).await
}

/// A month as (year, month 1–12).
type Month = (i64, u32);

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The month holding unix second `t`.
fn month_of(t: i64) -> Month {
    let days = t.div_euclid(86_400);
    // civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

fn next_month((y, m): Month) -> Month {
    if m == 12 {
        (y + 1, 1)
    } else {
        (y, m + 1)
    }
}

/// Unix second at which `month` starts (UTC).
fn month_start((y, m): Month) -> i64 {
    days_from_civil(y, m, 1) * 86_400
}

/// The partition DDL of one month: name and bounds built from integers only.
fn partition_ddl(month: Month) -> String {
    let (y, m) = month;
    format!(
        "CREATE TABLE IF NOT EXISTS events_y{y:04}m{m:02} PARTITION OF events
             FOR VALUES FROM ({from}) TO ({to})",
        from = month_start(month),
        to = month_start(next_month(month)),
    )
}

/// Creates the partitions of the month holding `now` and the [`MONTHS_AHEAD`] after it
/// when missing. A month whose events already went to the DEFAULT partition cannot be
/// split off without moving them; it is left there (with a warning), still correct.
pub async fn ensure_partitions(client: &Client, now: i64) -> Result<(), StoreError> {
    let mut month = month_of(now);
    for _ in 0..=MONTHS_AHEAD {
        if let Err(e) = client.batch_execute(&partition_ddl(month)).await {
            if e.as_db_error().is_none() {
                return Err(e.into());
            }
            tracing::warn!(year = month.0, month = month.1, error = %e,
                "event partition not created; its events stay in the default partition");
        }
        month = next_month(month);
    }
    Ok(())
}

/// The month `months` before `month`.
fn months_before((y, m): Month, months: u32) -> Month {
    let index = y * 12 + i64::from(m) - 1 - i64::from(months);
    (index.div_euclid(12), (index.rem_euclid(12) + 1) as u32)
}

/// Retention: detaches from `events` every monthly partition that ended before the
/// `keep_months` months up to the one holding `now`, and gives their names. A detached
/// month is a table of its own (`events_yYYYYmMM`) to archive or drop; its events leave
/// the log, so a later replay rebuilds the projections without them (until then the
/// projections keep what they counted). The DEFAULT partition is never detached.
///
/// Partition names are rebuilt from the integers parsed out of the catalogue's, never
/// used as given.
pub async fn detach_months_before(
    client: &Client,
    now: i64,
    keep_months: u32,
) -> Result<Vec<String>, StoreError> {
    let cutoff = month_start(months_before(month_of(now), keep_months.saturating_sub(1)));
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_y[0-9]{4}m[0-9]{2}$'",
            &[],
        )
        .await?;
    let mut detached = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let (Ok(y), Ok(m)) = (name[8..12].parse::<i64>(), name[13..15].parse::<u32>()) else {
            continue;
        };
        if !(1..=12).contains(&m) || month_start(next_month((y, m))) > cutoff {
            continue;
        }
        let table = format!("events_y{y:04}m{m:02}");
        client
            .batch_execute(&format!("ALTER TABLE events DETACH PARTITION {table}"))
            .await?;
        detached.push(table);
    }
    detached.sort();
    Ok(detached)
}

/// Retention as the origin runs it: [`detach_months_before`], then drops each month
/// detached (its events are gone; archive first, e.g. with `pg_dump -t`, if they are
/// wanted). Gives the months dropped.
pub async fn drop_months_before(
    client: &Client,
    now: i64,
    keep_months: u32,
) -> Result<Vec<String>, StoreError> {
    let detached = detach_months_before(client, now, keep_months).await?;
    for table in &detached {
        // A name rebuilt from integers by `detach_months_before`.
        client.batch_execute(&format!("DROP TABLE {table}")).await?;
    }
    Ok(detached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_count_back_across_years() {
        assert_eq!(months_before((2026, 3), 0), (2026, 3));
        assert_eq!(months_before((2026, 3), 2), (2026, 1));
        assert_eq!(months_before((2026, 3), 3), (2025, 12));
        assert_eq!(months_before((2026, 3), 27), (2023, 12));
    }

    #[test]
    fn months_start_where_the_calendar_says() {
        assert_eq!(month_of(0), (1970, 1));
        assert_eq!(month_start((1970, 1)), 0);
        // 2026-12-03T09:00:00Z
        assert_eq!(month_of(1_764_752_400), (2025, 12));
        assert_eq!(month_start((2026, 12)), 1_796_083_200);
        assert_eq!(month_of(1_796_083_200), (2026, 12));
        assert_eq!(month_of(1_796_083_199), (2026, 11));
        assert_eq!(month_start((2024, 3)) - month_start((2024, 2)), 29 * 86_400);
        assert_eq!(next_month((2026, 12)), (2027, 1));
        assert!(partition_ddl((2027, 1)).contains("events_y2027m01"));
    }
}
