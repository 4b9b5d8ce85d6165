//! Analytics over the event log: the recommendation funnel (impressions → clicks →
//! conversions) over a time range, and real-time figures (request rate, active
//! users, edge cache hit rate, health of the store and the publishers).
//!
//! Definitions (also in the answers' field docs):
//! - impressions: `recommendation_viewed` events; `value`, when given, is the score of
//!   the impressed item and averages into `avg_impression_score`.
//! - clicks: `click` events on an item the user was shown (an impression of the same
//!   user and item at or before the click); `ctr = clicks / impressions`, so clicks
//!   on items nobody served cannot raise it.
//! - conversions: `purchase` events; `conversion_rate = conversions / clicks`.
//! - Ratios are 0 when their denominator is 0.
//! - Breakdowns use the event's `source` and `region` (`"unknown"` when absent).
//!
//! Time ranges are over event timestamps (`ts`); real-time figures are over receive
//! times.
//!
//! # Layout
//! - [`parse_range`], [`parse_step`]: `1h`, `24h`, `7d`, … to seconds; steps of a series.
//! - [`Tally`], [`Funnel`]: the arithmetic, pure.
//! - [`recommendations`], [`timeline`], [`real_time_counts`], [`record_edge_report`]: the
//!   queries.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event_log::EventLogError;

/// Counts a click only for an item the user was shown before (an impression of the same
/// user and item at or before the click); every other row counts as it is.
const SERVED: &str = "(type != 'click' OR EXISTS (SELECT 1 FROM events v
     WHERE v.type = 'recommendation_viewed' AND v.user_id = events.user_id
       AND v.item_id = events.item_id AND v.ts <= events.ts))";

/// Longest analytics range: 90 days.
pub const MAX_RANGE_S: u64 = 90 * 86_400;
/// Items in `top_items`.
pub const TOP_ITEMS: usize = 10;
/// Window of `active_users`, in seconds.
pub const ACTIVE_WINDOW_S: i64 = 300;
/// Window of the edge cache hit rate, in seconds.
pub const EDGE_WINDOW_S: i64 = 3600;
/// Label of a missing source or region.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RangeError {
    #[error("range must be a whole number followed by m, h or d (1m to 90d), e.g. 1h, 24h, 7d; not {0:?}")]
    Invalid(String),
}

/// Parses a range like `15m`, `1h`, `24h`, `7d` into seconds (1 minute to 90 days).
pub fn parse_range(raw: &str) -> Result<u64, RangeError> {
    let bad = || RangeError::Invalid(raw.chars().take(20).collect());
    let unit = raw.chars().last().ok_or_else(bad)?;
    let per = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = raw[..raw.len() - 1]
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(bad)?;
    n.checked_mul(per)
        .filter(|s| *s <= MAX_RANGE_S)
        .ok_or_else(bad)
}

/// Most points one timeline may hold.
pub const MAX_TIMELINE_POINTS: u64 = 500;
/// Points a timeline gets when no step is asked for (about).
pub const DEFAULT_TIMELINE_POINTS: u64 = 60;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StepError {
    #[error("step must be whole seconds, a multiple of {multiple_of}, at most the range, giving at most {max_points} points; not {raw:?}")]
    Invalid {
        raw: String,
        multiple_of: u64,
        max_points: u64,
    },
}

/// The step of a series over `range_s`: `raw` (whole seconds, a multiple of
/// `multiple_of`, at most the range, at most `max_points` points), or by default the
/// range in about [`DEFAULT_TIMELINE_POINTS`] points rounded up to a multiple.
pub fn parse_step(
    raw: Option<&str>,
    range_s: u64,
    multiple_of: u64,
    max_points: u64,
) -> Result<u64, StepError> {
    let Some(raw) = raw else {
        return Ok((range_s / DEFAULT_TIMELINE_POINTS)
            .div_ceil(multiple_of)
            .max(1)
            * multiple_of);
    };
    raw.parse::<u64>()
        .ok()
        .filter(|s| *s >= multiple_of && *s % multiple_of == 0 && *s <= range_s.max(multiple_of))
        .filter(|s| range_s.div_ceil(*s) <= max_points)
        .ok_or_else(|| StepError::Invalid {
            raw: raw.chars().take(20).collect(),
            multiple_of,
            max_points,
        })
}

/// The steps of a series of `range_s` ending with the step that holds `now`: the
/// first step's start and the number of steps. Steps start at multiples of `step_s`,
/// so the points of successive polls line up.
pub fn steps(range_s: u64, step_s: u64, now: i64) -> (i64, u64) {
    let step = step_s as i64;
    let last = now - now.rem_euclid(step);
    let n = range_s.div_ceil(step_s).max(1);
    (last - (n as i64 - 1) * step, n)
}

/// Raw counts of one slice of events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
    /// Sum and count of impression scores given in `value`.
    pub score_sum: f64,
    pub scored: u64,
}

impl Tally {
    /// Adds `count` events of `kind` (with `value_sum` over `valued` of them).
    pub fn add(&mut self, kind: &str, count: u64, value_sum: f64, valued: u64) {
        match kind {
            "recommendation_viewed" => {
                self.impressions += count;
                self.score_sum += value_sum;
                self.scored += valued;
            }
            "click" => self.clicks += count,
            "purchase" => self.conversions += count,
            _ => {}
        }
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The recommendation funnel of one slice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Funnel {
    pub impressions: u64,
    pub clicks: u64,
    /// clicks / impressions.
    pub ctr: f64,
    pub conversions: u64,
    /// conversions / clicks.
    pub conversion_rate: f64,
    /// Mean `value` of impressions that gave one; `None` when none did.
    pub avg_impression_score: Option<f64>,
}

impl From<Tally> for Funnel {
    fn from(t: Tally) -> Self {
        Funnel {
            impressions: t.impressions,
            clicks: t.clicks,
            ctr: ratio(t.clicks, t.impressions),
            conversions: t.conversions,
            conversion_rate: ratio(t.conversions, t.clicks),
            avg_impression_score: (t.scored > 0).then(|| t.score_sum / t.scored as f64),
        }
    }
}

/// One of the top items of a range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopItem {
    pub item_id: String,
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
}

/// Answer of `GET /v1/analytics/recommendations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecommendationAnalytics {
    pub range: String,
    /// Unix seconds: events with timestamps from `since` to `until`.
    pub since: i64,
    pub until: i64,
    #[serde(flatten)]
    pub total: Funnel,
    /// Distinct items impressed.
    pub impressed_items: u64,
    /// By clicks, then conversions, then impressions.
    pub top_items: Vec<TopItem>,
    pub by_source: BTreeMap<String, Funnel>,
    pub by_region: BTreeMap<String, Funnel>,
}

/// The recommendation funnel over events with `ts` in `now - range_s ..= now`.
pub fn recommendations(
    conn: &Connection,
    range: &str,
    range_s: u64,
    now: i64,
) -> Result<RecommendationAnalytics, EventLogError> {
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

/// One step of a [`Timeline`]: events with `ts` in `[t, t + step_s)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Unix second at which the step starts.
    pub t: i64,
    #[serde(flatten)]
    pub funnel: Funnel,
    /// Impressions per region (regions without any are left out).
    pub impressions_by_region: BTreeMap<String, u64>,
    /// Edge reports received during the step.
    pub edge_cache: EdgeCache,
}

/// Answer of `GET /v1/analytics/timeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub range: String,
    pub step_s: u64,
    /// Oldest step first; the last holds `until`.
    pub points: Vec<TimelinePoint>,
    pub until: i64,
}

/// The funnel, impressions per region and the edge cache hit rate per step, over
/// `range_s` up to `now` (unix seconds).
pub fn timeline(
    conn: &Connection,
    range: &str,
    range_s: u64,
    step_s: u64,
    now: i64,
) -> Result<Timeline, EventLogError> {
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

pub use contract::events::EdgeReport;

/// Edge cache figures of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeCache {
    pub requests: u64,
    pub hits: u64,
    /// hits / requests (0 without requests).
    pub hit_rate: f64,
}

impl EdgeCache {
    pub fn new(requests: u64, hits: u64) -> Self {
        EdgeCache {
            requests,
            hits,
            hit_rate: ratio(hits, requests),
        }
    }
}

/// Stores one edge report at `now_ms`.
pub fn record_edge_report(
    conn: &Connection,
    report: &EdgeReport,
    now_ms: i64,
) -> Result<(), EventLogError> {
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

/// What the database says for `GET /v1/analytics/real-time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealTimeCounts {
    /// Distinct users with events received in the last [`ACTIVE_WINDOW_S`] seconds.
    pub active_users: u64,
    /// Events received per second over the last minute.
    pub events_per_second: f64,
    /// Edge cache over the last [`EDGE_WINDOW_S`] seconds, overall and per region.
    pub edge_cache: EdgeCache,
    pub edge_cache_by_region: BTreeMap<String, EdgeCache>,
    pub last_event_seq: i64,
}

/// Real-time figures from the database at `now_ms`.
pub fn real_time_counts(conn: &Connection, now_ms: i64) -> Result<RealTimeCounts, EventLogError> {
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
    use crate::event_log::{append_batches, open_writer, Sender};
    use crate::events::{Event, EventType};
    use contract::{ItemId, Region, UserId};

    #[test]
    fn ranges_parse_to_seconds_and_bad_ones_are_refused() {
        assert_eq!(parse_range("1h"), Ok(3600));
        assert_eq!(parse_range("24h"), Ok(86_400));
        assert_eq!(parse_range("7d"), Ok(604_800));
        assert_eq!(parse_range("15m"), Ok(900));
        for bad in [
            "",
            "h",
            "0h",
            "-1h",
            "24",
            "1w",
            "91d",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_funnel_arithmetic_matches_a_hand_computation() {
        let mut t = Tally::default();
        t.add("recommendation_viewed", 200, 150.0, 100);
        t.add("click", 10, 0.0, 0);
        t.add("purchase", 2, 0.0, 0);
        t.add("view", 99, 0.0, 0);
        let f = Funnel::from(t);
        assert_eq!(f.impressions, 200);
        assert_eq!(f.ctr, 0.05);
        assert_eq!(f.conversion_rate, 0.2);
        assert_eq!(f.avg_impression_score, Some(1.5));
    }

    #[test]
    fn ratios_without_a_denominator_are_zero() {
        let f = Funnel::from(Tally {
            clicks: 3,
            ..Default::default()
        });
        assert_eq!(f.ctr, 0.0);
        assert_eq!(f.conversion_rate, 0.0);
        assert_eq!(f.avg_impression_score, None);
        assert_eq!(EdgeCache::new(0, 0).hit_rate, 0.0);
        assert_eq!(EdgeCache::new(8, 6).hit_rate, 0.75);
    }

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
    fn steps_line_up_on_multiples_of_the_step() {
        assert_eq!(steps(3600, 60, 7_259), (3_660, 60));
        assert_eq!(steps(3600, 60, 7_260), (3_720, 60));
        assert_eq!(steps(90, 60, 600), (540, 2), "a partial step counts");
        assert_eq!(parse_step(None, 3600, 60, 500), Ok(60));
        assert_eq!(parse_step(None, 86_400, 60, 500), Ok(1440));
        assert_eq!(parse_step(None, 900, 10, 360), Ok(20));
        assert_eq!(parse_step(None, 60, 10, 360), Ok(10));
        assert_eq!(parse_step(Some("300"), 3600, 60, 500), Ok(300));
        for bad in ["0", "30", "90", "7200", "x", "-60", ""] {
            assert!(parse_step(Some(bad), 3600, 60, 500).is_err(), "{bad}");
        }
        assert!(
            parse_step(Some("60"), 86_400, 60, 500).is_err(),
            "1440 points"
        );
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
