//! The analytics queries on PostgreSQL: the same questions as SQLite's
//! (`store/sqlite/analytics.rs`), giving the same numbers (the store suite checks).

use std::collections::BTreeMap;

use deadpool_postgres::Pool;

use crate::analytics::*;
use crate::store::StoreError;

/// Counts a click only for an item the user was shown before (an impression of the same
/// user and item at or before the click); every other row counts as it is.
pub(super) const SERVED: &str = "(type <> 'click' OR EXISTS (SELECT 1 FROM events v
     WHERE v.tenant = events.tenant AND v.type = 'recommendation_viewed'
       AND v.user_id = events.user_id AND v.item_id = events.item_id
       AND v.ts <= events.ts))";

// Sums of float values (impression scores) use `kbn_sum` (schema migration 2), SQLite's
// compensated summation: a plain float8 SUM drifts in the last bits, and the averages
// must be the same numbers on both backends.

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// Per user with events of `ts` in `since ..= until`: impressions, clicks (on an item
/// shown before) and purchases, by user id (an experiment's results).
pub async fn user_tallies(
    pool: &Pool,
    tenant: &str,
    since: i64,
    until: i64,
) -> Result<Vec<crate::experiments::UserTally>, StoreError> {
    let conn = pool.get().await?;
    let rows = conn
        .query(
            &format!(
                "SELECT user_id,
                        COUNT(*) FILTER (WHERE type = 'recommendation_viewed'),
                        COUNT(*) FILTER (WHERE type = 'click'),
                        COUNT(*) FILTER (WHERE type = 'purchase')
                 FROM events WHERE tenant = $1 AND ts BETWEEN $2 AND $3
                   AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
                 GROUP BY user_id ORDER BY user_id"
            ),
            &[&tenant, &since, &until],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| crate::experiments::UserTally {
            user_id: r.get(0),
            impressions: count(r.get(1)),
            clicks: count(r.get(2)),
            conversions: count(r.get(3)),
        })
        .collect())
}

/// The recommendation funnel over events with `ts` in `now - range_s ..= now`.
pub async fn recommendations(
    pool: &Pool,
    tenant: &str,
    range: &str,
    range_s: u64,
    now: i64,
) -> Result<RecommendationAnalytics, StoreError> {
    let conn = pool.get().await?;
    let since = now - range_s as i64;
    let mut total = Tally::default();
    let mut by_source: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_region: BTreeMap<String, Tally> = BTreeMap::new();
    let rows = conn
        .query(
            &format!(
                "SELECT coalesce(source, $4::text), coalesce(region, $4::text), type, COUNT(*),
                        kbn_sum(value), COUNT(value)
                 FROM events WHERE tenant = $1 AND ts BETWEEN $2 AND $3
                   AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
                 GROUP BY 1, 2, 3"
            ),
            &[&tenant, &since, &now, &UNKNOWN],
        )
        .await?;
    for r in &rows {
        let (source, region, kind): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let (n, sum, valued): (i64, f64, i64) = (r.get(3), r.get(4), r.get(5));
        let (n, valued) = (count(n), count(valued));
        total.add(&kind, n, sum, valued);
        by_source
            .entry(source)
            .or_default()
            .add(&kind, n, sum, valued);
        by_region
            .entry(region)
            .or_default()
            .add(&kind, n, sum, valued);
    }
    let impressed_items: i64 = conn
        .query_one(
            "SELECT COUNT(DISTINCT item_id) FROM events
             WHERE tenant = $1 AND ts BETWEEN $2 AND $3 AND type = 'recommendation_viewed'",
            &[&tenant, &since, &now],
        )
        .await?
        .get(0);
    let top_items = conn
        .query(
            &format!(
                "SELECT item_id,
                        COUNT(*) FILTER (WHERE type = 'recommendation_viewed') AS impressions,
                        COUNT(*) FILTER (WHERE type = 'click') AS clicks,
                        COUNT(*) FILTER (WHERE type = 'purchase') AS conversions
                 FROM events WHERE tenant = $1 AND ts BETWEEN $2 AND $3
                   AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
                 GROUP BY item_id
                 ORDER BY clicks DESC, conversions DESC, impressions DESC, item_id
                 LIMIT $4"
            ),
            &[&tenant, &since, &now, &(TOP_ITEMS as i64)],
        )
        .await?
        .iter()
        .map(|r| TopItem {
            item_id: r.get(0),
            impressions: count(r.get(1)),
            clicks: count(r.get(2)),
            conversions: count(r.get(3)),
        })
        .collect();
    Ok(RecommendationAnalytics {
        range: range.to_owned(),
        since,
        until: now,
        total: total.into(),
        impressed_items: count(impressed_items),
        top_items,
        by_source: by_source.into_iter().map(|(k, v)| (k, v.into())).collect(),
        by_region: by_region.into_iter().map(|(k, v)| (k, v.into())).collect(),
    })
}

/// The funnel, impressions per region and the edge cache hit rate per step, over
/// `range_s` up to `now` (unix seconds).
pub async fn timeline(
    pool: &Pool,
    tenant: &str,
    range: &str,
    range_s: u64,
    step_s: u64,
    now: i64,
) -> Result<Timeline, StoreError> {
    let conn = pool.get().await?;
    let (first, n) = steps(range_s, step_s, now);
    let step = step_s as i64;
    let end = first + n as i64 * step;
    let mut tallies = vec![Tally::default(); n as usize];
    let mut regions: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); n as usize];
    let rows = conn
        .query(
            &format!(
                "SELECT (ts - $2::bigint) / $4::bigint, coalesce(region, $5::text), type,
                        COUNT(*), kbn_sum(value), COUNT(value)
                 FROM events WHERE tenant = $1 AND ts >= $2 AND ts < $3
                   AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
                 GROUP BY 1, 2, 3"
            ),
            &[&tenant, &first, &end, &step, &UNKNOWN],
        )
        .await?;
    for r in &rows {
        let i: i64 = r.get(0);
        let Some(tally) = usize::try_from(i).ok().and_then(|i| tallies.get_mut(i)) else {
            continue;
        };
        let (region, kind): (String, String) = (r.get(1), r.get(2));
        let (n, sum, valued): (i64, f64, i64) = (r.get(3), r.get(4), r.get(5));
        let n = count(n);
        tally.add(&kind, n, sum, count(valued));
        if kind == "recommendation_viewed" {
            *regions[i as usize].entry(region).or_default() += n;
        }
    }
    let mut edge = vec![(0u64, 0u64); n as usize];
    let rows = conn
        .query(
            "SELECT (received_at / 1000 - $2::bigint) / $4::bigint,
                    coalesce(SUM(requests)::float8, 0.0::float8),
                    coalesce(SUM(hits)::float8, 0.0::float8)
             FROM edge_reports
             WHERE tenant = $1 AND received_at >= $2::bigint * 1000
               AND received_at < $3::bigint * 1000
             GROUP BY 1",
            &[&tenant, &first, &end, &step],
        )
        .await?;
    for r in &rows {
        let i: i64 = r.get(0);
        if let Some(e) = usize::try_from(i).ok().and_then(|i| edge.get_mut(i)) {
            *e = (
                r.get::<_, f64>(1).max(0.0) as u64,
                r.get::<_, f64>(2).max(0.0) as u64,
            );
        }
    }
    let points = tallies
        .into_iter()
        .zip(regions)
        .zip(edge)
        .enumerate()
        .map(
            |(i, ((tally, by_region), (requests, hits)))| TimelinePoint {
                t: first + i as i64 * step,
                funnel: tally.into(),
                impressions_by_region: by_region,
                edge_cache: EdgeCache::new(requests, hits),
            },
        )
        .collect();
    Ok(Timeline {
        range: range.to_owned(),
        step_s,
        points,
        until: now,
    })
}

/// Stores one edge report at `now_ms`.
pub async fn record_edge_report(
    pool: &Pool,
    tenant: &str,
    report: &EdgeReport,
    now_ms: i64,
) -> Result<(), StoreError> {
    let conn = pool.get().await?;
    conn.execute(
        "INSERT INTO edge_reports(tenant, received_at, region, requests, hits)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &tenant,
            &now_ms,
            &report.region,
            &(report.requests.min(i64::MAX as u64) as i64),
            &(report.hits.min(i64::MAX as u64) as i64),
        ],
    )
    .await?;
    Ok(())
}

/// Real-time figures from the database at `now_ms`.
pub async fn real_time_counts(
    pool: &Pool,
    tenant: &str,
    now_ms: i64,
) -> Result<RealTimeCounts, StoreError> {
    let conn = pool.get().await?;
    let active_users: i64 = conn
        .query_one(
            "SELECT COUNT(DISTINCT user_id) FROM events WHERE tenant = $1 AND received_at >= $2",
            &[&tenant, &(now_ms - ACTIVE_WINDOW_S * 1000)],
        )
        .await?
        .get(0);
    let last_minute: i64 = conn
        .query_one(
            "SELECT COUNT(*) FROM events WHERE tenant = $1 AND received_at >= $2",
            &[&tenant, &(now_ms - 60_000)],
        )
        .await?
        .get(0);
    let last_event_seq: i64 = conn
        .query_one(
            "SELECT coalesce(MAX(seq), 0) FROM events WHERE tenant = $1",
            &[&tenant],
        )
        .await?
        .get(0);
    let mut edge_total = (0u64, 0u64);
    let mut edge_cache_by_region = BTreeMap::new();
    let rows = conn
        .query(
            "SELECT coalesce(region, $3::text), coalesce(SUM(requests)::float8, 0.0::float8),
                    coalesce(SUM(hits)::float8, 0.0::float8)
             FROM edge_reports WHERE tenant = $1 AND received_at >= $2 GROUP BY 1",
            &[&tenant, &(now_ms - EDGE_WINDOW_S * 1000), &UNKNOWN],
        )
        .await?;
    for r in &rows {
        let region: String = r.get(0);
        // A float sum, as SQLite's TOTAL: `as` saturates.
        let req = r.get::<_, f64>(1).max(0.0) as u64;
        let hits = r.get::<_, f64>(2).max(0.0) as u64;
        edge_total.0 = edge_total.0.saturating_add(req);
        edge_total.1 = edge_total.1.saturating_add(hits);
        edge_cache_by_region.insert(region, EdgeCache::new(req, hits));
    }
    Ok(RealTimeCounts {
        active_users: count(active_users),
        events_per_second: count(last_minute) as f64 / 60.0,
        edge_cache: EdgeCache::new(edge_total.0, edge_total.1),
        edge_cache_by_region,
        last_event_seq,
    })
}
