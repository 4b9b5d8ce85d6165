//! The analytics queries on SQLite: the recommendation funnel, the per-step timeline,
//! real-time counts and edge reports (the definitions are in [`crate::analytics`]).

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use crate::analytics::*;
use crate::store::StoreError;

/// Counts a click only for an item the user was shown before (an impression of the same
/// user and item at or before the click); every other row counts as it is.
const SERVED: &str = "(type != 'click' OR EXISTS (SELECT 1 FROM events v
     WHERE v.type = 'recommendation_viewed' AND v.user_id = events.user_id
       AND v.item_id = events.item_id AND v.ts <= events.ts))";

/// The recommendation funnel over events with `ts` in `now - range_s ..= now`.
pub fn recommendations(
    conn: &Connection,
    range: &str,
    range_s: u64,
    now: i64,
) -> Result<RecommendationAnalytics, StoreError> {
    let since = now - range_s as i64;
    let mut total = Tally::default();
    let mut by_source: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_region: BTreeMap<String, Tally> = BTreeMap::new();
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT coalesce(source, ?3), coalesce(region, ?3), type, COUNT(*),
                    coalesce(SUM(value), 0.0), COUNT(value)
             FROM events WHERE ts BETWEEN ?1 AND ?2
               AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
             GROUP BY 1, 2, 3"
        ))?;
        let mut rows = stmt.query(params![since, now, UNKNOWN])?;
        while let Some(r) = rows.next()? {
            let (source, region, kind): (String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            let (count, sum, valued): (i64, f64, i64) = (r.get(3)?, r.get(4)?, r.get(5)?);
            let (count, valued) = (count.max(0) as u64, valued.max(0) as u64);
            total.add(&kind, count, sum, valued);
            by_source
                .entry(source)
                .or_default()
                .add(&kind, count, sum, valued);
            by_region
                .entry(region)
                .or_default()
                .add(&kind, count, sum, valued);
        }
    }
    let impressed_items: i64 = conn.query_row(
        "SELECT COUNT(DISTINCT item_id) FROM events
         WHERE ts BETWEEN ?1 AND ?2 AND type = 'recommendation_viewed'",
        params![since, now],
        |r| r.get(0),
    )?;
    let top_items = {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT item_id,
                    SUM(type = 'recommendation_viewed') AS impressions,
                    SUM(type = 'click') AS clicks,
                    SUM(type = 'purchase') AS conversions
             FROM events WHERE ts BETWEEN ?1 AND ?2
               AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
             GROUP BY item_id
             ORDER BY clicks DESC, conversions DESC, impressions DESC, item_id
             LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![since, now, TOP_ITEMS as i64], |r| {
            Ok(TopItem {
                item_id: r.get(0)?,
                impressions: r.get::<_, i64>(1)?.max(0) as u64,
                clicks: r.get::<_, i64>(2)?.max(0) as u64,
                conversions: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    Ok(RecommendationAnalytics {
        range: range.to_owned(),
        since,
        until: now,
        total: total.into(),
        impressed_items: impressed_items.max(0) as u64,
        top_items,
        by_source: by_source.into_iter().map(|(k, v)| (k, v.into())).collect(),
        by_region: by_region.into_iter().map(|(k, v)| (k, v.into())).collect(),
    })
}

/// The funnel, impressions per region and the edge cache hit rate per step, over
/// `range_s` up to `now` (unix seconds).
pub fn timeline(
    conn: &Connection,
    range: &str,
    range_s: u64,
    step_s: u64,
    now: i64,
) -> Result<Timeline, StoreError> {
    let (first, n) = steps(range_s, step_s, now);
    let step = step_s as i64;
    let end = first + n as i64 * step;
    let mut tallies = vec![Tally::default(); n as usize];
    let mut regions: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); n as usize];
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT (ts - ?1) / ?3, coalesce(region, ?4), type, COUNT(*),
                    coalesce(SUM(value), 0.0), COUNT(value)
             FROM events WHERE ts >= ?1 AND ts < ?2
               AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
             GROUP BY 1, 2, 3"
        ))?;
        let mut rows = stmt.query(params![first, end, step, UNKNOWN])?;
        while let Some(r) = rows.next()? {
            let i: i64 = r.get(0)?;
            let Some(tally) = usize::try_from(i).ok().and_then(|i| tallies.get_mut(i)) else {
                continue;
            };
            let (region, kind): (String, String) = (r.get(1)?, r.get(2)?);
            let (count, sum, valued): (i64, f64, i64) = (r.get(3)?, r.get(4)?, r.get(5)?);
            let count = count.max(0) as u64;
            tally.add(&kind, count, sum, valued.max(0) as u64);
            if kind == "recommendation_viewed" {
                *regions[i as usize].entry(region).or_default() += count;
            }
        }
    }
    let mut edge = vec![(0u64, 0u64); n as usize];
    {
        let mut stmt = conn.prepare_cached(
            "SELECT (received_at / 1000 - ?1) / ?3, TOTAL(requests), TOTAL(hits) FROM edge_reports
             WHERE received_at >= ?1 * 1000 AND received_at < ?2 * 1000 GROUP BY 1",
        )?;
        let mut rows = stmt.query(params![first, end, step])?;
        while let Some(r) = rows.next()? {
            let i: i64 = r.get(0)?;
            if let Some(e) = usize::try_from(i).ok().and_then(|i| edge.get_mut(i)) {
                *e = (
                    r.get::<_, f64>(1)?.max(0.0) as u64,
                    r.get::<_, f64>(2)?.max(0.0) as u64,
                );
            }
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

/// Per user with events of `ts` in `since ..= until`: impressions, clicks (on an item
/// shown before) and purchases, by user id (an experiment's results,
/// [`crate::experiments::results`]).
pub fn user_tallies(
    conn: &Connection,
    since: i64,
    until: i64,
) -> Result<Vec<crate::experiments::UserTally>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT user_id, SUM(type = 'recommendation_viewed'), SUM(type = 'click'),
                SUM(type = 'purchase')
         FROM events WHERE ts BETWEEN ?1 AND ?2
           AND type IN ('recommendation_viewed', 'click', 'purchase') AND {SERVED}
         GROUP BY user_id ORDER BY user_id"
    ))?;
    let rows = stmt.query_map(params![since, until], |r| {
        Ok(crate::experiments::UserTally {
            user_id: r.get(0)?,
            impressions: r.get::<_, i64>(1)?.max(0) as u64,
            clicks: r.get::<_, i64>(2)?.max(0) as u64,
            conversions: r.get::<_, i64>(3)?.max(0) as u64,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Stores one edge report at `now_ms`.
pub fn record_edge_report(
    conn: &Connection,
    report: &EdgeReport,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO edge_reports(received_at, region, requests, hits) VALUES (?1, ?2, ?3, ?4)",
        params![
            now_ms,
            report.region,
            report.requests.min(i64::MAX as u64) as i64,
            report.hits.min(i64::MAX as u64) as i64
        ],
    )?;
    Ok(())
}

/// Real-time figures from the database at `now_ms`.
pub fn real_time_counts(conn: &Connection, now_ms: i64) -> Result<RealTimeCounts, StoreError> {
    let active_users: i64 = conn.query_row(
        "SELECT COUNT(DISTINCT user_id) FROM events WHERE received_at >= ?1",
        [now_ms - ACTIVE_WINDOW_S * 1000],
        |r| r.get(0),
    )?;
    let last_minute: i64 = conn.query_row(
        "SELECT COUNT(*) FROM events WHERE received_at >= ?1",
        [now_ms - 60_000],
        |r| r.get(0),
    )?;
    let last_event_seq: i64 =
        conn.query_row("SELECT coalesce(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let mut edge_total = (0u64, 0u64);
    let mut edge_cache_by_region = BTreeMap::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT coalesce(region, ?2), TOTAL(requests), TOTAL(hits) FROM edge_reports
             WHERE received_at >= ?1 GROUP BY 1",
        )?;
        let mut rows = stmt.query(params![now_ms - EDGE_WINDOW_S * 1000, UNKNOWN])?;
        while let Some(r) = rows.next()? {
            let region: String = r.get(0)?;
            // TOTAL is a float sum: it cannot overflow, and `as` saturates.
            let req = r.get::<_, f64>(1)?.max(0.0) as u64;
            let hits = r.get::<_, f64>(2)?.max(0.0) as u64;
            edge_total.0 = edge_total.0.saturating_add(req);
            edge_total.1 = edge_total.1.saturating_add(hits);
            edge_cache_by_region.insert(region, EdgeCache::new(req, hits));
        }
    }
    Ok(RealTimeCounts {
        active_users: active_users.max(0) as u64,
        events_per_second: last_minute.max(0) as f64 / 60.0,
        edge_cache: EdgeCache::new(edge_total.0, edge_total.1),
        edge_cache_by_region,
        last_event_seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventType};
    use crate::store::sqlite::event_log::{append_batches, open_writer, Sender};
    use contract::{ItemId, Region, UserId};

    fn ev(
        item: &str,
        kind: EventType,
        value: Option<f64>,
        source: &str,
        region: &str,
        ts: i64,
    ) -> Event {
        Event {
            user_id: UserId::parse("u1").unwrap(),
            item_id: ItemId::parse(item).unwrap(),
            kind,
            value,
            timestamp: ts,
            context: None,
            source: Some(source.into()),
            region: Some(Region::parse(region).unwrap()),
            event_id: None,
        }
    }

    #[test]
    fn the_recommendation_report_breaks_down_by_source_and_region() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("o.sqlite")).unwrap();
        let now = 1_764_000_000;
        use EventType::*;
        let batch = [
            ev(
                "a",
                RecommendationViewed,
                Some(0.9),
                "kv",
                "europe",
                now - 10,
            ),
            ev(
                "b",
                RecommendationViewed,
                Some(0.5),
                "kv",
                "europe",
                now - 10,
            ),
            ev(
                "a",
                RecommendationViewed,
                None,
                "edge-cache",
                "asia",
                now - 10,
            ),
            ev(
                "c",
                RecommendationViewed,
                Some(0.1),
                "edge-cache",
                "asia",
                now - 10,
            ),
            ev("a", Click, None, "kv", "europe", now - 5),
            ev("a", Purchase, Some(20.0), "kv", "europe", now - 4),
            ev("c", Click, None, "edge-cache", "asia", now - 3),
            ev("z", Click, None, "kv", "europe", now - 7200),
        ];
        append_batches(&mut conn, &[(&batch[..], Sender::default())]).unwrap();
        let r = recommendations(&conn, "1h", 3600, now).unwrap();
        assert_eq!(r.total.impressions, 4);
        assert_eq!(
            r.total.clicks, 2,
            "the click two hours ago is outside the range"
        );
        assert_eq!(r.total.ctr, 0.5);
        assert_eq!(r.total.conversions, 1);
        assert_eq!(r.total.conversion_rate, 0.5);
        assert!((r.total.avg_impression_score.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(r.impressed_items, 3);
        let kv = r.by_source["kv"];
        assert_eq!((kv.impressions, kv.clicks, kv.conversions), (2, 1, 1));
        assert!((kv.avg_impression_score.unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(r.by_region["asia"].ctr, 0.5);
        assert_eq!(r.top_items[0].item_id, "a");
        assert_eq!(
            (
                r.top_items[0].impressions,
                r.top_items[0].clicks,
                r.top_items[0].conversions
            ),
            (2, 1, 1)
        );
        let rt = real_time_counts(&conn, i64::MAX / 2).unwrap();
        assert_eq!(rt.active_users, 0);
        assert_eq!(rt.last_event_seq, 8);
    }

    #[test]
    fn the_timeline_counts_each_step_and_the_edge_reports_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("o.sqlite")).unwrap();
        let now = 1_764_000_030; // steps of 60 s: ..., 1_763_999_940, 1_764_000_000
        use EventType::*;
        let batch = [
            ev("a", RecommendationViewed, None, "kv", "europe", now - 90),
            ev("b", RecommendationViewed, None, "kv", "asia", now - 85),
            ev("a", Click, None, "kv", "europe", now - 80),
            ev("a", RecommendationViewed, None, "kv", "europe", now - 10),
            ev("a", Purchase, None, "kv", "europe", now - 5),
            ev("z", Click, None, "kv", "europe", now - 7200),
        ];
        append_batches(&mut conn, &[(&batch[..], Sender::default())]).unwrap();
        let report = |requests, hits| EdgeReport {
            requests,
            hits,
            region: None,
        };
        record_edge_report(&conn, &report(10, 9), (now - 20) * 1000).unwrap();
        record_edge_report(&conn, &report(10, 5), (now - 3000) * 1000).unwrap();
        let t = timeline(&conn, "1h", 3600, 60, now).unwrap();
        assert_eq!(t.points.len(), 60);
        let last = &t.points[59];
        let before = &t.points[58];
        assert_eq!((last.t, before.t), (1_764_000_000, 1_763_999_940));
        assert_eq!(
            (
                before.funnel.impressions,
                before.funnel.clicks,
                before.funnel.ctr
            ),
            (2, 1, 0.5)
        );
        assert_eq!(before.impressions_by_region["asia"], 1);
        assert_eq!((last.funnel.impressions, last.funnel.conversions), (1, 1));
        assert_eq!(last.edge_cache, EdgeCache::new(10, 9));
        let sum: u64 = t.points.iter().map(|p| p.funnel.clicks).sum();
        assert_eq!(sum, 1, "the click two hours ago is outside the range");
        let edge: u64 = t.points.iter().map(|p| p.edge_cache.requests).sum();
        assert_eq!(edge, 20);
    }

    #[test]
    fn edge_reports_add_up_to_a_hit_rate_per_region() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("o.sqlite")).unwrap();
        let now = 1_764_000_000_000;
        for (req, hits, region) in [
            (100, 80, Some("europe")),
            (50, 10, Some("asia")),
            (50, 30, None),
        ] {
            let r = EdgeReport {
                requests: req,
                hits,
                region: region.map(str::to_owned),
            };
            record_edge_report(&conn, &r, now).unwrap();
        }
        let old = EdgeReport {
            requests: 1000,
            hits: 0,
            region: None,
        };
        record_edge_report(&conn, &old, now - 2 * EDGE_WINDOW_S * 1000).unwrap();
        let rt = real_time_counts(&conn, now).unwrap();
        assert_eq!(rt.edge_cache, EdgeCache::new(200, 120));
        assert_eq!(rt.edge_cache.hit_rate, 0.6);
        assert_eq!(rt.edge_cache_by_region["asia"].hit_rate, 0.2);
        assert_eq!(rt.edge_cache_by_region[UNKNOWN].requests, 50);
    }
}
