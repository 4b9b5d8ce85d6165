//! An experiment's results per variant, from per-user tallies of the event log over
//! the experiment's time (each user's variant recomputed from the hash, so events need
//! no variant column).
//!
//! The counts follow the funnel's definitions ([`crate::analytics`]): impressions are
//! `recommendation_viewed` events, clicks count only on an item the user was shown,
//! conversions are `purchase` events. So the variants' counts add up to the funnel's
//! totals over the same time. Rates here are both **per impression** (`ctr = clicks /
//! impressions`, `conversion_rate = conversions / impressions`), so each variant's
//! rates share one denominator and test as proportions; the funnel's own
//! `conversion_rate` is per click.
//!
//! Each variant has 95 % Wilson intervals of both rates and, but for the control (the
//! first variant), a two-proportion z-test of each rate against the control's
//! ([`super::stats`]).

use serde::{Deserialize, Serialize};

use super::stats::{two_proportion, wilson, ZTest};
use super::{assign, Experiment, Status};

/// One user's counts over a time range (what a store's
/// [`crate::store::Store::experiment_tallies`] gives).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTally {
    pub user_id: String,
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
}

/// One variant's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    pub name: String,
    pub model: String,
    pub share: u32,
    /// Users of the variant with at least one counted event.
    pub users: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
    /// clicks / impressions (0 without impressions).
    pub ctr: f64,
    /// 95 % Wilson interval of the CTR; `null` without impressions.
    pub ctr_ci: Option<[f64; 2]>,
    /// conversions / impressions (0 without impressions).
    pub conversion_rate: f64,
    pub conversion_rate_ci: Option<[f64; 2]>,
    /// The CTR against the control's; `null` for the control or without data.
    pub ctr_test: Option<ZTest>,
    pub conversion_test: Option<ZTest>,
}

/// Counts over every variant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub users: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub conversions: u64,
}

/// An experiment with its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentResults {
    #[serde(flatten)]
    pub experiment: Experiment,
    pub status: Status,
    /// The events counted: `ts` in `since ..= until` (unix seconds).
    pub since: i64,
    pub until: i64,
    /// The variants in the experiment's order, the control first.
    pub results: Vec<VariantResult>,
    pub total: Totals,
}

fn ratio(x: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        x as f64 / n as f64
    }
}

/// The time an experiment's results count: from its start to its end, or to `now`
/// while it runs.
pub fn period(experiment: &Experiment, now: i64) -> (i64, i64) {
    let until = experiment
        .ended_at
        .unwrap_or(now)
        .max(experiment.started_at);
    (experiment.started_at, until)
}

/// Sums `tallies` per variant of `experiment` (each user's variant from the hash) and
/// computes rates, intervals and tests.
pub fn results(
    experiment: &Experiment,
    tallies: &[UserTally],
    since: i64,
    until: i64,
) -> ExperimentResults {
    let mut per = vec![Totals::default(); experiment.variants.len()];
    let mut total = Totals::default();
    for t in tallies {
        let i = assign(&experiment.name, &t.user_id, &experiment.variants);
        for sum in [&mut per[i], &mut total] {
            sum.users += 1;
            sum.impressions += t.impressions;
            sum.clicks += t.clicks;
            sum.conversions += t.conversions;
        }
    }
    let control = per.first().copied().unwrap_or_default();
    let results = experiment
        .variants
        .iter()
        .zip(&per)
        .enumerate()
        .map(|(i, (v, s))| {
            let test = |x: u64, x0: u64| {
                (i > 0)
                    .then(|| two_proportion(x, s.impressions, x0, control.impressions))
                    .flatten()
            };
            VariantResult {
                name: v.name.clone(),
                model: v.model.clone(),
                share: v.share,
                users: s.users,
                impressions: s.impressions,
                clicks: s.clicks,
                conversions: s.conversions,
                ctr: ratio(s.clicks, s.impressions),
                ctr_ci: wilson(s.clicks, s.impressions),
                conversion_rate: ratio(s.conversions, s.impressions),
                conversion_rate_ci: wilson(s.conversions, s.impressions),
                ctr_test: test(s.clicks, control.clicks),
                conversion_test: test(s.conversions, control.conversions),
            }
        })
        .collect();
    ExperimentResults {
        experiment: experiment.clone(),
        status: experiment.status(),
        since,
        until,
        results,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::Variant;

    fn experiment() -> Experiment {
        Experiment {
            name: "exp".into(),
            variants: ["control", "b", "c"]
                .iter()
                .zip([40, 30, 30])
                .map(|(n, share)| Variant {
                    name: (*n).into(),
                    model: "popularity".into(),
                    share,
                })
                .collect(),
            started_at: 100,
            ended_at: None,
            promoted: None,
        }
    }

    #[test]
    fn per_variant_counts_add_up_to_the_totals_and_follow_the_hash() {
        let e = experiment();
        let tallies: Vec<UserTally> = (0..2_000)
            .map(|u| UserTally {
                user_id: format!("u{u}"),
                impressions: 10 + u % 7,
                clicks: u % 3,
                conversions: u % 5 / 4,
            })
            .collect();
        let r = results(&e, &tallies, 100, 200);
        let sum = |f: fn(&VariantResult) -> u64| r.results.iter().map(f).sum::<u64>();
        assert_eq!(sum(|v| v.users), 2_000);
        assert_eq!(sum(|v| v.impressions), r.total.impressions);
        assert_eq!(sum(|v| v.clicks), r.total.clicks);
        assert_eq!(sum(|v| v.conversions), r.total.conversions);
        assert_eq!(
            r.total.impressions,
            tallies.iter().map(|t| t.impressions).sum::<u64>()
        );
        // Each user counted in the variant the experiment assigns.
        let in_b: u64 = tallies
            .iter()
            .filter(|t| e.variant_of(&t.user_id).name == "b")
            .map(|t| t.clicks)
            .sum();
        assert_eq!(r.results[1].clicks, in_b);
        // The control has no test; the others do.
        assert!(r.results[0].ctr_test.is_none());
        assert!(r.results[1].ctr_test.is_some() && r.results[2].ctr_test.is_some());
        let v = &r.results[1];
        assert_eq!(v.ctr, v.clicks as f64 / v.impressions as f64);
        let [lo, hi] = v.ctr_ci.unwrap();
        assert!(lo < v.ctr && v.ctr < hi);
    }

    #[test]
    fn no_events_give_zero_rates_and_no_intervals_or_tests() {
        let r = results(&experiment(), &[], 100, 100);
        assert_eq!(r.total, Totals::default());
        assert!(r
            .results
            .iter()
            .all(|v| v.ctr == 0.0 && v.ctr_ci.is_none() && v.ctr_test.is_none()));
        assert_eq!(r.status, Status::Running);
    }

    #[test]
    fn the_period_runs_from_the_start_to_the_end_or_now() {
        let mut e = experiment();
        assert_eq!(period(&e, 500), (100, 500));
        e.ended_at = Some(300);
        assert_eq!(period(&e, 500), (100, 300));
    }
}
