//! Request latency over time, per route, for `GET /v1/analytics/latency` and the
//! dashboard's latency chart.
//!
//! Prometheus gets the same measurements as histograms with fixed buckets (see
//! [`crate::observability`]); this window keeps the last hour in memory so the origin
//! can answer "what were p50/p95/p99 over the last 15 minutes, step by step" itself,
//! without a Prometheus server. Each 10-second slot holds one DDSketch per route
//! (`sketches-ddsketch`: quantiles within 1% relative error, mergeable), so a point of
//! any step is the merge of its slots, and "all routes" is the merge of the routes.
//!
//! Memory: one sketch per (slot, route) that saw requests; a sketch of latencies
//! spanning 0.1 ms to 1 s is about 4 KB, so a busy hour of 8 routes stays under 15 MB.
//!
//! # Layout
//! - [`LatencyWindow`]: record and query, thread-safe.
//! - [`LatencyQuery`], [`parse_query`]: the route's parameters, validated.
//! - [`LatencySeries`], [`LatencyPoint`], [`LatencySummary`]: the answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};
use thiserror::Error;

use crate::analytics::{parse_range, parse_step, RangeError, StepError};

/// Width of one slot, in seconds; steps are whole multiples of it.
pub const SLOT_S: u64 = 10;
/// How far back the window reaches, in seconds.
pub const WINDOW_S: u64 = 3600;
/// Most points one answer may hold.
pub const MAX_POINTS: u64 = 360;
/// Range when none is asked for.
pub const DEFAULT_RANGE: &str = "15m";
/// Longest accepted route filter, in bytes.
pub const MAX_ROUTE_LEN: usize = 200;

fn sketch() -> DDSketch {
    DDSketch::new(Config::defaults())
}

#[derive(Clone)]
struct Slot {
    /// Unix second at which the slot starts (a multiple of [`SLOT_S`]).
    start: u64,
    routes: BTreeMap<String, DDSketch>,
}

/// The last hour of request latencies, per 10-second slot and route.
#[derive(Default)]
pub struct LatencyWindow {
    slots: Mutex<VecDeque<Slot>>,
}

impl std::fmt::Debug for LatencyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("LatencyWindow").field("slots", &n).finish()
    }
}

/// Latency figures of one set of requests, in milliseconds (`None` without requests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub requests: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

impl LatencySummary {
    fn of(s: &DDSketch) -> Self {
        let q = |q: f64| s.quantile(q).ok().flatten().map(round_ms);
        let n = s.count() as u64;
        LatencySummary {
            requests: n,
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: s.max().map(round_ms),
            mean_ms: s
                .sum()
                .filter(|_| n > 0)
                .map(|sum| round_ms(sum / n as f64)),
        }
    }
}

/// Three decimals of a millisecond (microseconds) are all a chart needs.
fn round_ms(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One step of the series: the requests that started in `[t, t + step_s)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyPoint {
    /// Unix second at which the step starts.
    pub t: u64,
    #[serde(flatten)]
    pub latency: LatencySummary,
}

/// Answer of `GET /v1/analytics/latency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySeries {
    /// The range asked for, e.g. `15m`.
    pub range: String,
    pub step_s: u64,
    /// The route the points are filtered to (`None`: every route).
    pub route: Option<String>,
    /// Oldest step first; steps without requests have `requests: 0` and null figures.
    pub points: Vec<LatencyPoint>,
    /// The whole range, per route (every route, whatever the filter).
    pub by_route: BTreeMap<String, LatencySummary>,
    /// The whole range over the points' requests.
    pub total: LatencySummary,
    pub generated_at: u64,
}

/// The validated parameters of a latency query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyQuery {
    pub range: String,
    pub range_s: u64,
    pub step_s: u64,
    pub route: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LatencyQueryError {
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("range must be at most 1h: latency is kept in memory for the last hour")]
    RangeTooLong,
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("route must be a route template like /v1/recommendations/{{user}}, at most 200 printable characters")]
    Route,
}

/// Validates `range` (default 15m, at most 1h), `step` (seconds, whole slots; default:
/// the range in about 60 points, see [`parse_step`]) and `route` (a route template).
pub fn parse_query(
    range: Option<&str>,
    step: Option<&str>,
    route: Option<&str>,
) -> Result<LatencyQuery, LatencyQueryError> {
    let range = range.unwrap_or(DEFAULT_RANGE).to_owned();
    let range_s = parse_range(&range)?;
    if range_s > WINDOW_S {
        return Err(LatencyQueryError::RangeTooLong);
    }
    let step_s = parse_step(step, range_s, SLOT_S, MAX_POINTS)?;
    let route = match route {
        None | Some("") => None,
        Some(r)
            if r.len() <= MAX_ROUTE_LEN
                && r.starts_with('/')
                && r.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Some(r.to_owned())
        }
        Some(_) => return Err(LatencyQueryError::Route),
    };
    Ok(LatencyQuery {
        range,
        range_s,
        step_s,
        route,
    })
}

impl LatencyWindow {
    /// Records one request to `route` that started at unix second `now` and took
    /// `seconds`.
    pub fn record(&self, route: &str, now: u64, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let start = now - now % SLOT_S;
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let newest = slots.back().map_or(start, |s| s.start.max(start));
        while slots.front().is_some_and(|s| s.start + WINDOW_S <= newest) {
            slots.pop_front();
        }
        if start + WINDOW_S <= newest {
            return; // older than the window
        }
        // Requests are recorded when they end, so a slow one may land behind newer
        // slots: keep the slots in order.
        let at = slots.partition_point(|s| s.start < start);
        if slots.get(at).is_none_or(|s| s.start != start) {
            slots.insert(
                at,
                Slot {
                    start,
                    routes: BTreeMap::new(),
                },
            );
        }
        slots[at]
            .routes
            .entry(route.to_owned())
            .or_insert_with(sketch)
            .add(seconds * 1000.0);
    }

    /// The series for `q` ending at unix second `now` (the step holding `now` is the
    /// last point).
    pub fn series(&self, q: &LatencyQuery, now: u64) -> LatencySeries {
        let last = now - now % q.step_s;
        let n_points = q.range_s.div_ceil(q.step_s).max(1);
        let first = last.saturating_sub((n_points - 1) * q.step_s);
        let mut points: Vec<(u64, DDSketch)> = (0..n_points)
            .map(|i| (first + i * q.step_s, sketch()))
            .collect();
        let mut by_route: BTreeMap<String, DDSketch> = BTreeMap::new();
        let mut total = sketch();
        if let Ok(slots) = self.slots.lock() {
            for slot in slots
                .iter()
                .filter(|s| s.start >= first && s.start < last + q.step_s)
            {
                let i = ((slot.start - first) / q.step_s) as usize;
                for (route, s) in &slot.routes {
                    // Merging sketches of one config cannot fail.
                    let _ = by_route
                        .entry(route.clone())
                        .or_insert_with(sketch)
                        .merge(s);
                    if q.route.as_deref().is_none_or(|r| r == route) {
                        let _ = points[i].1.merge(s);
                        let _ = total.merge(s);
                    }
                }
            }
        }
        LatencySeries {
            range: q.range.clone(),
            step_s: q.step_s,
            route: q.route.clone(),
            points: points
                .iter()
                .map(|(t, s)| LatencyPoint {
                    t: *t,
                    latency: LatencySummary::of(s),
                })
                .collect(),
            by_route: by_route
                .iter()
                .map(|(r, s)| (r.clone(), LatencySummary::of(s)))
                .collect(),
            total: LatencySummary::of(&total),
            generated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(range: &str, step: Option<&str>, route: Option<&str>) -> LatencyQuery {
        parse_query(Some(range), step, route).unwrap()
    }

    fn close(got: Option<f64>, want: f64) -> bool {
        got.is_some_and(|g| (g - want).abs() <= want * 0.02)
    }

    #[test]
    fn quantiles_per_step_follow_the_recorded_latencies() {
        let w = LatencyWindow::default();
        // Step 1000..1010: 1..=100 ms; step 1010..1020: nothing; 1020..1030: 500 ms.
        for ms in 1..=100 {
            w.record("/a", 1000 + ms % 10, ms as f64 / 1000.0);
        }
        w.record("/a", 1025, 0.5);
        let s = w.series(&q("1m", Some("10"), None), 1029);
        assert_eq!(s.points.len(), 6);
        assert_eq!(s.points[0].t, 970);
        let p = &s.points[3].latency;
        assert_eq!((s.points[3].t, p.requests), (1000, 100));
        assert!(close(p.p50_ms, 50.0), "{p:?}");
        assert!(close(p.p99_ms, 99.0), "{p:?}");
        assert!(close(p.max_ms, 100.0), "{p:?}");
        assert!(close(p.mean_ms, 50.5), "{p:?}");
        let empty = &s.points[4].latency;
        assert_eq!((empty.requests, empty.p50_ms), (0, None));
        assert!(close(s.points[5].latency.p50_ms, 500.0));
        assert_eq!(s.total.requests, 101);
    }

    #[test]
    fn a_route_filter_keeps_the_others_in_by_route() {
        let w = LatencyWindow::default();
        for _ in 0..10 {
            w.record("/fast", 2000, 0.001);
            w.record("/slow", 2000, 0.2);
        }
        let s = w.series(&q("1m", None, Some("/slow")), 2005);
        assert_eq!(s.total.requests, 10);
        assert!(close(s.total.p50_ms, 200.0));
        assert_eq!(s.by_route.len(), 2);
        assert!(close(s.by_route["/fast"].p99_ms, 1.0));
        let all = w.series(&q("1m", None, None), 2005);
        assert_eq!(all.total.requests, 20);
    }

    #[test]
    fn wide_steps_merge_their_slots_and_old_slots_leave_the_window() {
        let w = LatencyWindow::default();
        w.record("/a", 0, 0.01);
        w.record("/a", 10, 0.02);
        w.record("/a", 59, 0.03);
        let s = w.series(&q("2m", Some("60"), None), 60);
        assert_eq!(s.points.len(), 2);
        assert_eq!((s.points[0].t, s.points[0].latency.requests), (0, 3));
        // An hour after the slot at 10 began, slots 0 and 10 are gone; 50 is kept.
        w.record("/a", WINDOW_S + 10, 0.01);
        let past = w.series(&q("2m", Some("60"), None), 60);
        assert_eq!(past.points[0].latency.requests, 1, "{:?}", past.points);
        // A record older than the window is dropped.
        w.record("/a", 5, 0.01);
        assert_eq!(w.series(&q("2m", Some("60"), None), 60).total.requests, 1);
    }

    #[test]
    fn a_late_record_lands_in_its_own_slot() {
        let w = LatencyWindow::default();
        w.record("/a", 100, 0.01);
        w.record("/a", 125, 0.01);
        w.record("/a", 105, 0.01); // its slot (100) exists
        w.record("/a", 115, 0.01); // its slot (110) is inserted between
        let s = w.series(&q("1m", Some("10"), None), 125);
        let at = |t: u64| s.points.iter().find(|p| p.t == t).unwrap().latency.requests;
        assert_eq!((at(100), at(110), at(120)), (2, 1, 1));
    }

    #[test]
    fn the_query_is_validated() {
        let d = parse_query(None, None, None).unwrap();
        assert_eq!((d.range_s, d.step_s, d.route), (900, 20, None));
        assert_eq!(q("1h", None, None).step_s, 60);
        assert_eq!(q("1m", None, None).step_s, 10);
        assert_eq!(
            parse_query(Some("2h"), None, None),
            Err(LatencyQueryError::RangeTooLong)
        );
        assert!(matches!(
            parse_query(Some("1x"), None, None),
            Err(LatencyQueryError::Range(_))
        ));
        for bad in ["0", "15", "5", "abc", "120", "-10"] {
            assert!(
                matches!(
                    parse_query(Some("1m"), Some(bad), None),
                    Err(LatencyQueryError::Step(_))
                ),
                "{bad}"
            );
        }
        assert!(
            parse_query(Some("1h"), Some("10"), None).is_ok(),
            "360 points"
        );
        for bad in [
            "no-slash",
            "/a b",
            "/\u{e9}",
            &format!("/{}", "a".repeat(200)),
        ] {
            assert_eq!(
                parse_query(None, None, Some(bad)),
                Err(LatencyQueryError::Route),
                "{bad}"
            );
        }
        assert_eq!(
            q("15m", None, Some("/v1/recommendations/{user}"))
                .route
                .as_deref(),
            Some("/v1/recommendations/{user}")
        );
    }

    #[test]
    fn bad_measurements_are_ignored() {
        let w = LatencyWindow::default();
        w.record("/a", 10, f64::NAN);
        w.record("/a", 10, -1.0);
        assert_eq!(w.series(&q("1m", None, None), 10).total.requests, 0);
    }
}
