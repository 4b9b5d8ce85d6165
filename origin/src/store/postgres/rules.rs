//! The tenants' business rules (a row per tenant: the document's JSON, its version)
//! and the impression counts fatigue reads (see [`crate::rules`]), on PostgreSQL:
//! the same questions as SQLite's (`store/sqlite/rules.rs`), keyed by tenant.

use contract::UserId;
use deadpool_postgres::Pool;

use crate::rules::{Fatigue, Fatigued, StoredRules, MAX_FATIGUED_PAIRS};
use crate::store::StoreError;

/// The tenant's stored rules, when there are any.
pub async fn read(pool: &Pool, tenant: &str) -> Result<Option<StoredRules>, StoreError> {
    let conn = pool.get().await?;
    let row = conn
        .query_opt(
            "SELECT body, version, updated_at FROM rules WHERE tenant = $1",
            &[&tenant],
        )
        .await?;
    Ok(row.map(|r| StoredRules {
        json: r.get(0),
        version: r.get(1),
        updated_at: r.get(2),
    }))
}

/// Replaces the tenant's rules, one version up.
pub async fn put(
    pool: &Pool,
    tenant: &str,
    json: &str,
    now: i64,
) -> Result<StoredRules, StoreError> {
    let conn = pool.get().await?;
    let version: i64 = conn
        .query_one(
            "INSERT INTO rules(tenant, body, version, updated_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (tenant) DO UPDATE SET body = excluded.body,
                 version = rules.version + 1, updated_at = excluded.updated_at
             RETURNING version",
            &[&tenant, &json, &now],
        )
        .await?
        .get(0);
    Ok(StoredRules {
        json: json.to_owned(),
        version,
        updated_at: now,
    })
}

/// See [`crate::store::Store::fatigued`]: one query, of the users named (`= ANY`,
/// through the partial index of impressions) or of every user.
pub async fn fatigued(
    pool: &Pool,
    tenant: &str,
    users: Option<Vec<UserId>>,
    fatigue: Fatigue,
    now: i64,
) -> Result<Fatigued, StoreError> {
    let conn = pool.get().await?;
    let (since, k, limit) = (
        fatigue.since(now),
        i64::from(fatigue.impressions),
        MAX_FATIGUED_PAIRS as i64 + 1,
    );
    let sql = |user: &str| {
        format!(
            "SELECT v.user_id, v.item_id FROM events v
             LEFT JOIN proj_user_history h ON h.tenant = v.tenant
                 AND h.user_id = v.user_id AND h.item_id = v.item_id
             WHERE v.tenant = $1 AND v.type = 'recommendation_viewed' AND v.ts >= $2
               AND (h.last_ts IS NULL OR v.ts > h.last_ts) {user}
             GROUP BY v.user_id, v.item_id HAVING COUNT(*) >= $3
             ORDER BY v.user_id, v.item_id LIMIT $4"
        )
    };
    let rows = match users {
        None => conn.query(&sql(""), &[&tenant, &since, &k, &limit]).await?,
        Some(users) => {
            let users: Vec<String> = users.iter().map(|u| u.as_str().to_owned()).collect();
            conn.query(
                &sql("AND v.user_id = ANY($5)"),
                &[&tenant, &since, &k, &limit, &users],
            )
            .await?
        }
    };
    let mut out = Fatigued::default();
    for r in rows {
        let (u, i): (String, String) = (r.get(0), r.get(1));
        out.insert(&u, i);
    }
    Ok(out)
}
