//! Hyperparameter and blend tuning on a validation set: [`train_best`].
//!
//! Every family is trained on the training data only, over a small grid, and scored by
//! NDCG@K on the validation users (their training items masked). The best member of each
//! family then enters a hybrid: the two best are blended with weights `0.1..0.9`, and a
//! third is added at small weights if it helps. The best model overall wins, whatever its
//! family. Each family's best trained model is kept and reused, so the blend search
//! retrains nothing; the others are dropped as soon as they lose, which bounds memory by
//! one model per family plus the one being tried.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::spec::{ModelSpec, SpecError, Trainer};
use super::{histories, ModelKind};
use crate::eval::{evaluate, holdout, metrics::Metrics};
use crate::model::{Interaction, Recommender, TrainingData};

/// How to tune.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The K of NDCG@K, the selection metric.
    pub k: usize,
    /// Families to try (the hybrid is tried when two or more are).
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
        ModelKind::Content => vec![ModelSpec::Content],
        ModelKind::Hybrid => vec![],
    }
}

/// Tunes every family in `opts` and the hybrid blend on `valid`; returns the best model.
/// `valid` interactions of users or items outside `data`'s ranges are ignored.
pub fn train_best(
    data: &TrainingData,
    valid: &[Interaction],
    opts: &TuneOptions,
) -> Result<Tuned, SpecError> {
    let hist = histories(data);
    let (truth, _) = holdout(&hist, valid, data.n_items);
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
        Ok(Some(metrics.ndcg))
    };

    let mut best_per_family: Vec<(ModelSpec, f64)> = Vec::new();
    for &kind in &opts.families {
        let mut best: Option<(ModelSpec, f64)> = None;
        for spec in grid(kind) {
            if let Some(ndcg) = run(&mut trainer, &spec, &mut trials)? {
                // Keep only each family's best trained model: the losers' memory (55 MB per
                // EASE at 3,700 items) is freed as the grid goes.
                if best.as_ref().is_none_or(|b| ndcg > b.1) {
                    if let Some((old, _)) = best.replace((spec, ndcg)) {
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
        let (a, b) = (best_per_family[0].0.clone(), best_per_family[1].0.clone());
        let mut best_pair: Option<(f32, f64)> = None;
        for step in 1..=9 {
            let w = step as f32 / 10.0;
            let spec = ModelSpec::Hybrid {
                parts: vec![(a.clone(), w), (b.clone(), 1.0 - w)],
            };
            if let Some(ndcg) = run(&mut trainer, &spec, &mut trials)? {
                if best_pair.is_none_or(|p| ndcg > p.1) {
                    best_pair = Some((w, ndcg));
                }
            }
        }
        if let (Some((w, _)), Some((c, _))) = (best_pair, best_per_family.get(2).cloned()) {
            for wc in [0.05f32, 0.1, 0.2, 0.3] {
                let spec = ModelSpec::Hybrid {
                    parts: vec![
                        (a.clone(), w * (1.0 - wc)),
                        (b.clone(), (1.0 - w) * (1.0 - wc)),
                        (c.clone(), wc),
                    ],
                };
                run(&mut trainer, &spec, &mut trials)?;
            }
        }
    }

    let winner = trials
        .iter()
        .filter(|t| opts.pick.is_none_or(|k| t.spec.kind() == k))
        .max_by(|x, y| x.metrics.ndcg.total_cmp(&y.metrics.ndcg))
        .cloned()
        .ok_or(SpecError::EmptyHybrid)?;
    let model = Arc::new(trainer.engine(&winner.spec)?);
    Ok(Tuned {
        model,
        spec: winner.spec,
        validation: winner.metrics,
        trials,
    })
}
