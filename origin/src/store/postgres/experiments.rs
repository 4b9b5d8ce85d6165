//! The tenants' A/B experiments on PostgreSQL (`experiments`, migration 8: keyed by
//! tenant and name, the variants as `jsonb`, a partial unique index letting at most one
//! run per tenant). The definitions are in [`crate::experiments`].

use deadpool_postgres::Pool;

use crate::experiments::{Experiment, StartOutcome};
use crate::store::StoreError;

/// Every experiment of `tenant`, oldest first.
pub async fn list(pool: &Pool, tenant: &str) -> Result<Vec<Experiment>, StoreError> {
    let conn = pool.get().await?;
    let rows = conn
        .query(
            "SELECT name, variants::text, started_at, ended_at, promoted FROM experiments
             WHERE tenant = $1 ORDER BY started_at, name",
            &[&tenant],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let variants: String = r.get(1);
            crate::store::sqlite::experiments::experiment_from(
                r.get(0),
                &variants,
                r.get(2),
                r.get(3),
                r.get(4),
            )
        })
        .collect()
}

/// Starts `e` for `tenant` unless its name is taken or another experiment runs: the
/// insert does nothing on either unique key (the name, the one running), so two starts
/// at once cannot both run; then the reason is read.
pub async fn start(pool: &Pool, tenant: &str, e: &Experiment) -> Result<StartOutcome, StoreError> {
    let variants = serde_json::to_string(&e.variants).map_err(|err| StoreError::BadRow {
        table: "experiments",
        key: e.name.clone(),
        message: err.to_string(),
    })?;
    let conn = pool.get().await?;
    let inserted = conn
        .execute(
            "INSERT INTO experiments(tenant, name, variants, started_at)
             VALUES ($1, $2, $3::text::jsonb, $4) ON CONFLICT DO NOTHING",
            &[&tenant, &e.name, &variants, &e.started_at],
        )
        .await?;
    if inserted > 0 {
        return Ok(StartOutcome::Started);
    }
    let taken = conn
        .query_opt(
            "SELECT 1 FROM experiments WHERE tenant = $1 AND name = $2",
            &[&tenant, &e.name],
        )
        .await?
        .is_some();
    if taken {
        return Ok(StartOutcome::NameTaken);
    }
    let running: Option<String> = conn
        .query_opt(
            "SELECT name FROM experiments WHERE tenant = $1 AND ended_at IS NULL",
            &[&tenant],
        )
        .await?
        .map(|r| r.get(0));
    // The running one may have ended since the insert: say so all the same.
    Ok(StartOutcome::Running(running.unwrap_or_default()))
}

/// Ends `tenant`'s running experiment `name`; false when none of that name runs.
pub async fn end(
    pool: &Pool,
    tenant: &str,
    name: &str,
    ended_at: i64,
    promoted: &str,
) -> Result<bool, StoreError> {
    let conn = pool.get().await?;
    let n = conn
        .execute(
            "UPDATE experiments SET ended_at = greatest($3, started_at), promoted = $4
             WHERE tenant = $1 AND name = $2 AND ended_at IS NULL",
            &[&tenant, &name, &ended_at, &promoted],
        )
        .await?;
    Ok(n > 0)
}
