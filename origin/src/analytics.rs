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
//! - [`RecommendationAnalytics`], [`Timeline`], [`RealTimeCounts`]: the answers; each
//!   store backend computes them (SQLite: `store/sqlite/analytics.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

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

pub(crate) fn ratio(num: u64, den: u64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
