//! Hyperparameter and blend tuning on a validation set: [`train_best`].
//!
//! Every family is trained on the training data only, over a small grid, and scored on
//! the validation users (their training items masked) by the selection objective: the
//! mean of NDCG@K and Recall@K, so neither measure is traded away for the other. Then a
//! blend is fitted ([`fit_blend`]): the best member of each of the strongest families
//! enters a weighted sum of per-user min-max-normalised scores (the [`crate::engine::hybrid`]
//! scorer), and the weights are found by coordinate ascent on the validation objective.
//! The best candidate overall, single or blend, wins; [`Tuned::why`] says why. Each
//! family's best trained model is kept and reused, so the blend search retrains nothing;
//! the others are dropped as soon as they lose, which bounds memory by one model per
//! family plus the one being tried.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{evaluate, holdout, metrics::Metrics, score_lists, Holdout};
use crate::engine::spec::{ModelSpec, SpecError, Trainer};
use crate::engine::{histories, rank, ModelKind, Scorer};
use crate::model::{Interaction, ItemIdx, Recommender, TrainingData};

/// How to tune.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The K of NDCG@K and Recall@K, the selection metrics.
    pub k: usize,
    /// Families to try (a blend is fitted when two or more are).
    pub families: Vec<ModelKind>,
    /// Pick the best of this family only (e.g. the best hybrid), not the best overall.
    pub pick: Option<ModelKind>,
    /// Print each trial to stderr.
    pub verbose: bool,
}

impl Default for TuneOptions {
    fn default() -> TuneOptions {
        TuneOptions {
            k: 20,
            families: vec![
                ModelKind::Popularity,
                ModelKind::ItemKnn,
                ModelKind::UserKnn,
                ModelKind::Ease,
                ModelKind::Dlae,
                ModelKind::Rp3beta,
                ModelKind::Gfcf,
                ModelKind::Als,
                ModelKind::Content,
            ],
            pick: None,
            verbose: false,
        }
    }
}

/// One evaluated candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub name: String,
    pub spec: ModelSpec,
    pub metrics: Metrics,
    pub seconds: f64,
}

/// The winner of [`train_best`], trained on the training data only.
pub struct Tuned {
    pub model: Arc<dyn Recommender>,
    pub spec: ModelSpec,
    /// The winner's validation metrics.
    pub validation: Metrics,
    /// Every candidate tried, in order.
    pub trials: Vec<Trial>,
    /// Why the winner won: its objective against the best single model's (or the best
    /// blend's, when a single model wins).
    pub why: String,
}

/// The selection objective: the mean of NDCG@K and Recall@K.
pub fn objective(m: &Metrics) -> f64 {
    (m.ndcg + m.recall) / 2.0
}

/// The grid tried for one family.
pub fn grid(kind: ModelKind) -> Vec<ModelSpec> {
    match kind {
        ModelKind::Popularity => vec![
            ModelSpec::Popularity { regional: true },
            ModelSpec::Popularity { regional: false },
        ],
        ModelKind::Trending => [7.0, 30.0, 180.0]
            .map(|h| ModelSpec::Trending { half_life_days: h })
            .to_vec(),
        ModelKind::ItemKnn => [
            (50, 0.0),
            (100, 10.0),
            (200, 10.0),
            (100, 50.0),
            (400, 20.0),
        ]
        .map(|(k, shrink)| ModelSpec::ItemKnn { k, shrink })
        .to_vec(),
        ModelKind::UserKnn => [20, 50, 100, 200]
            .map(|k| ModelSpec::UserKnn { k })
            .to_vec(),
        ModelKind::Ease => {
            let plain = [50.0, 100.0, 200.0, 400.0, 800.0, 1600.0].map(|lambda| (lambda, 0.0));
            let scaled = [0.5, 1.0, 2.0]
                .into_iter()
                .flat_map(|alpha| [100.0, 200.0, 400.0].map(|lambda| (lambda, alpha)));
            plain
                .into_iter()
                .chain(scaled)
                .map(|(lambda, alpha)| ModelSpec::Ease { lambda, alpha })
                .collect()
        }
        ModelKind::Dlae => [20.0, 50.0, 100.0, 200.0]
            .into_iter()
            .flat_map(|lambda| [0.1, 0.25, 0.5].map(|dropout| ModelSpec::Dlae { lambda, dropout }))
            .collect(),
        ModelKind::Rp3beta => [0.6, 0.8, 1.0]
            .into_iter()
            .flat_map(|alpha| {
                [(0.35, 100), (0.5, 100), (0.6, 100), (0.5, 200)]
                    .map(|(beta, k)| ModelSpec::Rp3beta { alpha, beta, k })
            })
            .collect(),
        ModelKind::Gfcf => [
            (0.0, 0, 0.0),
            (0.1, 64, 0.0),
            (0.3, 64, 0.0),
            (0.3, 128, 0.0),
            (0.3, 256, 0.0),
            (0.6, 128, 0.0),
            (0.3, 128, 0.2),
            (0.3, 128, 0.5),
        ]
        .map(|(alpha, k, sharpen)| ModelSpec::Gfcf {
            alpha,
            k,
            sharpen,
            seed: 42,
        })
        .to_vec(),
        ModelKind::Als => [
            (24, 20.0, 2.0),
            (32, 20.0, 2.0),
            (32, 30.0, 3.0),
            (32, 50.0, 5.0),
            (64, 30.0, 3.0),
        ]
        .map(|(factors, reg, alpha)| ModelSpec::Als {
            factors,
            reg,
            alpha,
            iterations: 15,
            seed: 42,
        })
        .to_vec(),
        ModelKind::Content => vec![ModelSpec::Content],
        ModelKind::Hybrid => vec![],
    }
}

/// At most this many validation users enter the blend fit (every `n / MAX`-th, in order),
/// which bounds its cache of normalised scores to `4 · MAX · I` bytes per component.
const BLEND_MAX_USERS: usize = 2_000;
/// How many families (the best first) a blend may combine.
const BLEND_MAX_PARTS: usize = 6;

/// Per-user min-max-normalised scores of one component over its non-history items,
/// exactly as [`crate::engine::hybrid::Hybrid`] computes them; history items get `-inf`.
fn normalised(part: &dyn Scorer, history: &[(ItemIdx, f32)], n_items: usize) -> Vec<f32> {
    let mut s = vec![0f32; n_items];
    part.score(history, None, &mut s);
    rank::mask(&mut s, history.iter().map(|(i, _)| *i));
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in s.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    for v in s.iter_mut().filter(|v| v.is_finite()) {
        *v = if hi > lo { (*v - lo) / (hi - lo) } else { 0.0 };
    }
    s
}

/// Fits blend weights (non-negative, summing to 1) of `parts` on `truth` by coordinate
/// ascent on [`objective`], starting from the first part alone. Each round tries moving
/// every part's weight by ±0.05, ±0.1 and +0.2 (renormalised) and keeps a move that raises
/// the objective by more than `1e-4`; it stops when a round changes nothing (at most 8).
/// Returns the weights and the objective they reach on the (sub-sampled) users.
pub fn fit_blend(
    parts: &[Arc<dyn Scorer>],
    hist: &[Vec<(ItemIdx, f32)>],
    truth: &Holdout,
    k: usize,
    tiebreak: &[u32],
) -> (Vec<f32>, f64) {
    use rayon::prelude::*;
    let n_items = tiebreak.len();
    let stride = truth.len().div_ceil(BLEND_MAX_USERS).max(1);
    let users: Holdout = truth.iter().step_by(stride).cloned().collect();
    let empty = Vec::new();
    // cache[user][part] = normalised scores
    let cache: Vec<Vec<Vec<f32>>> = users
        .par_iter()
        .map(|(u, _)| {
            let h = hist.get(*u as usize).unwrap_or(&empty);
            parts
                .iter()
                .map(|p| normalised(p.as_ref(), h, n_items))
                .collect()
        })
        .collect();
    let eval = |w: &[f32]| -> f64 {
        let lists: Vec<Vec<ItemIdx>> = cache
            .par_iter()
            .map(|per_part| {
                rank::with_buffer(n_items, |out| {
                    for (s, &wp) in per_part.iter().zip(w) {
                        if wp > 0.0 {
                            for (o, v) in out.iter_mut().zip(s) {
                                *o += wp * v;
                            }
                        }
                    }
                    // history items are -inf in every part (and -inf · 0 is not added).
                    for (o, v) in out.iter_mut().zip(&per_part[0]) {
                        if v.is_infinite() {
                            *o = f32::NEG_INFINITY;
                        }
                    }
                    rank::top_n(out, k, tiebreak)
                        .into_iter()
                        .map(|(i, _)| i)
                        .collect()
                })
            })
            .collect();
        objective(&score_lists(&lists, &users, k, n_items))
    };
    let mut w = vec![0f32; parts.len()];
    if let Some(first) = w.first_mut() {
        *first = 1.0;
    }
    let mut best = eval(&w);
    for _round in 0..8 {
        let mut changed = false;
        for c in 0..parts.len() {
            for delta in [0.05f32, 0.1, 0.2, -0.05, -0.1] {
                let mut t = w.clone();
                t[c] = (t[c] + delta).max(0.0);
                let sum: f32 = t.iter().sum();
                if sum <= 0.0 {
                    continue;
                }
                t.iter_mut()
                    .for_each(|v| *v = (*v / sum * 1000.0).round() / 1000.0);
                let score = eval(&t);
                if score > best + 1e-4 {
                    (w, best, changed) = (t, score, true);
                }
            }
        }
        if !changed {
            break;
        }
    }
    (w, best)
}

/// Tunes every family in `opts` and a fitted blend on `valid`; returns the best model.
/// `valid` items outside `data`'s catalogue count as misses (see [`holdout`]).
pub fn train_best(
    data: &TrainingData,
    valid: &[Interaction],
    opts: &TuneOptions,
) -> Result<Tuned, SpecError> {
    let hist = histories(data);
    let (truth, _) = holdout(&hist, valid);
    let mut trainer = Trainer::new(data);
    let mut trials: Vec<Trial> = Vec::new();
    let run = |trainer: &mut Trainer<'_>, spec: &ModelSpec, trials: &mut Vec<Trial>| {
        let start = Instant::now();
        let engine = match trainer.engine(spec) {
            Ok(e) => e,
            Err(SpecError::NoItemText) => return Ok(None),
            Err(e) => return Err(e),
        };
        let metrics = evaluate(&engine, data, &hist, &truth, opts.k);
        let trial = Trial {
            name: engine.name(),
            spec: spec.clone(),
            metrics,
            seconds: start.elapsed().as_secs_f64(),
        };
        if opts.verbose {
            eprintln!(
                "tune: {:<48} ndcg@{} {:.4}  recall@{} {:.4}  ({:.2}s)",
                trial.name, opts.k, metrics.ndcg, opts.k, metrics.recall, trial.seconds
            );
        }
        trials.push(trial);
        Ok(Some(objective(&metrics)))
    };

    let mut best_per_family: Vec<(ModelSpec, f64)> = Vec::new();
    for &kind in &opts.families {
        let mut best: Option<(ModelSpec, f64)> = None;
        for spec in grid(kind) {
            if let Some(score) = run(&mut trainer, &spec, &mut trials)? {
                // Keep only each family's best trained model: the losers' memory (55 MB per
                // EASE at 3,700 items) is freed as the grid goes.
                if best.as_ref().is_none_or(|b| score > b.1) {
                    if let Some((old, _)) = best.replace((spec, score)) {
                        trainer.forget(&old);
                    }
                } else {
                    trainer.forget(&spec);
                }
            }
        }
        best_per_family.extend(best);
    }
    best_per_family.sort_by(|a, b| b.1.total_cmp(&a.1));

    if best_per_family.len() >= 2 {
        let specs: Vec<ModelSpec> = best_per_family
            .iter()
            .take(BLEND_MAX_PARTS)
            .map(|(s, _)| s.clone())
            .collect();
        let mut parts = Vec::new();
        for s in &specs {
            parts.push(trainer.scorer(s)?);
        }
        let tiebreak = trainer.popularity_rank();
        let started = Instant::now();
        let (weights, fitted) = fit_blend(&parts, &hist, &truth, opts.k, &tiebreak);
        if opts.verbose {
            eprintln!(
                "tune: blend weights fitted on validation in {:.2}s: {:?} (objective {fitted:.4})",
                started.elapsed().as_secs_f64(),
                specs
                    .iter()
                    .zip(&weights)
                    .map(|(s, w)| format!("{w} {}", s.kind().as_str()))
                    .collect::<Vec<_>>()
            );
        }
        let mut kept: Vec<(ModelSpec, f32)> = specs
            .iter()
            .cloned()
            .zip(weights)
            .filter(|(_, w)| *w > 0.0)
            .collect();
        if kept.len() < 2 {
            // No mix helped: still offer the 0.9/0.1 pair of the two best, so a hybrid
            // always competes (and `--model hybrid --tune` always has one).
            kept = vec![(specs[0].clone(), 0.9), (specs[1].clone(), 0.1)];
        }
        run(
            &mut trainer,
            &ModelSpec::Hybrid { parts: kept },
            &mut trials,
        )?;
    }

    let eligible = |t: &&Trial| opts.pick.is_none_or(|k| t.spec.kind() == k);
    let by_objective =
        |x: &&Trial, y: &&Trial| objective(&x.metrics).total_cmp(&objective(&y.metrics));
    let winner = trials
        .iter()
        .filter(eligible)
        .max_by(by_objective)
        .cloned()
        .ok_or(SpecError::EmptyHybrid)?;
    let is_blend = |t: &&Trial| t.spec.kind() == ModelKind::Hybrid;
    let rival = if is_blend(&&winner) {
        trials.iter().filter(|t| !is_blend(t)).max_by(by_objective)
    } else {
        trials.iter().filter(is_blend).max_by(by_objective)
    };
    let k = opts.k;
    let describe = |t: &Trial| {
        format!(
            "{} (ndcg@{k} {:.4}, recall@{k} {:.4})",
            t.name, t.metrics.ndcg, t.metrics.recall
        )
    };
    let why = match rival {
        Some(r) => format!(
            "{} has the best validation objective (mean of ndcg@{k} and recall@{k}) {:.4} of {} candidates; the best {} is {} at {:.4}",
            describe(&winner),
            objective(&winner.metrics),
            trials.len(),
            if is_blend(&&winner) { "single model" } else { "blend" },
            describe(r),
            objective(&r.metrics)
        ),
        None => format!(
            "{} has the best validation objective {:.4} of {} candidates",
            describe(&winner),
            objective(&winner.metrics),
            trials.len()
        ),
    };
    let model = Arc::new(trainer.engine(&winner.spec)?);
    Ok(Tuned {
        model,
        spec: winner.spec,
        validation: winner.metrics,
        trials,
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Because;

    /// Scores from a table indexed by the first history item.
    struct Table(Vec<Vec<f32>>);
    impl Scorer for Table {
        fn name(&self) -> String {
            "table".into()
        }
        fn heap_bytes(&self) -> usize {
            0
        }
        fn n_items(&self) -> usize {
            4
        }
        fn score(&self, history: &[(ItemIdx, f32)], _: Option<&str>, out: &mut [f32]) {
            let row = &self.0[if history[0].0 == 0 { 0 } else { 1 }];
            out.iter_mut().zip(row).for_each(|(o, s)| *o += s);
        }
        fn because(&self, _: &[(ItemIdx, f32)], _: Option<&str>, _: ItemIdx) -> Because {
            Because::Popular
        }
    }

    #[test]
    fn the_fitted_blend_hits_what_neither_part_hits_alone() {
        // User 0 (history {0}) wants item 1, user 1 (history {3}) wants item 2, K = 1.
        // A alone recommends item 1 to both (objective 0.5), B alone item 2 to both (0.5).
        // Normalised over the non-history items, A is sure about user 0 ([1, 0, 0] over
        // items 1-3) and hesitant about user 1 ([0, 1, 0.833] over items 0-2); B is the
        // reverse. With weights (0.833, 0.167): user 0 gets item 1 (0.933 against 0.167),
        // user 1 item 2 (0.861 against 0.833): both hit, objective 1.
        let a: Arc<dyn Scorer> = Arc::new(Table(vec![
            vec![0.0, 1.0, 0.0, 0.0],
            vec![0.0, 0.6, 0.5, 0.0],
        ]));
        let b: Arc<dyn Scorer> = Arc::new(Table(vec![
            vec![0.0, 0.6, 1.0, 0.0],
            vec![0.0, 0.0, 1.0, 0.0],
        ]));
        let hist = vec![vec![(0, 1.0)], vec![(3, 1.0)]];
        let truth = vec![(0, vec![1]), (1, vec![2])];
        let (w, score) = fit_blend(&[a.clone(), b.clone()], &hist, &truth, 1, &[0, 1, 2, 3]);
        assert_eq!(score, 1.0, "{w:?}");
        assert!(w[0] > 0.0 && w[1] > 0.0, "{w:?}");
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-3);
        // the part alone is where the search starts, and scores 0.5:
        let (_, alone) = fit_blend(&[a], &hist, &truth, 1, &[0, 1, 2, 3]);
        assert_eq!(alone, 0.5);
    }
}
