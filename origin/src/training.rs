//! Which model the service and the publisher train: `--model` (env `ORIGIN_MODEL`).
//!
//! - a model name (`hybrid`, `ease`, `itemknn`, `userknn`, `content`, `popularity`,
//!   `trending`) with that model's default parameters — `hybrid` is the default;
//! - a JSON [`ModelSpec`] with explicit parameters, e.g. `{"kind":"ease","lambda":400}`;
//! - `auto`: every model and the hybrid blend are tuned on a holdout of the store (each
//!   user's latest interaction, for users with at least three), and the winner's spec is
//!   trained again on all interactions.
//!
//! Either way the trained model's `name()` (with its parameters) ends up in every
//! document's `model_version`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

pub use crate::engine::ModelChoice;
use crate::engine::{self, ModelKind, ModelSpec, SpecError};
use crate::eval::tune::{train_best, TuneOptions};
use crate::model::{Interaction, Recommender, TrainingData};

/// The `--model` flag, shared by `serve` and `publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelConfig {
    /// Model to train: a name (hybrid, ease, itemknn, userknn, content, popularity,
    /// trending), a JSON spec like {"kind":"ease","lambda":400}, or auto (tuned on a holdout).
    #[arg(long = "model", env = "ORIGIN_MODEL", default_value = "hybrid", value_parser = ModelChoice::from_str)]
    pub choice: ModelChoice,
}

/// Splits off each user's latest interaction (users with at least three) as validation.
pub fn holdout(data: &TrainingData) -> (TrainingData, Vec<Interaction>) {
    let mut per_user: Vec<Vec<usize>> = vec![Vec::new(); data.n_users];
    for (i, x) in data.interactions.iter().enumerate() {
        per_user[x.user as usize].push(i);
    }
    let mut held = vec![false; data.interactions.len()];
    let mut valid = Vec::new();
    for rows in per_user.iter().filter(|r| r.len() >= 3) {
        let &latest = rows
            .iter()
            .max_by_key(|&&i| (data.interactions[i].timestamp, i))
            .expect("non-empty");
        held[latest] = true;
        valid.push(data.interactions[latest]);
    }
    let train = TrainingData {
        interactions: data
            .interactions
            .iter()
            .zip(&held)
            .filter(|(_, h)| !**h)
            .map(|(x, _)| *x)
            .collect(),
        ..data.clone()
    };
    (train, valid)
}

/// Trains the chosen model on `data`.
pub fn train(data: &TrainingData, choice: &ModelChoice) -> Result<Arc<dyn Recommender>, SpecError> {
    let spec = match choice {
        ModelChoice::Spec(spec) => spec.clone(),
        ModelChoice::Auto => {
            let started = Instant::now();
            let (train, valid) = holdout(data);
            let tuned = train_best(&train, &valid, &TuneOptions::default())?;
            tracing::info!(
                spec = ?tuned.spec,
                trials = tuned.trials.len(),
                validation_users = valid.len(),
                seconds = started.elapsed().as_secs_f64(),
                "auto: tuned on a holdout; retraining the winner on all interactions"
            );
            tuned.spec
        }
    };
    engine::build(&spec, data)
}

/// Trains the chosen model, falling back to regional popularity (with an error in the
/// log) when it cannot be built, so a bad `--model` for this data never stops serving.
pub fn train_or_popularity(data: &TrainingData, choice: &ModelChoice) -> Arc<dyn Recommender> {
    match train(data, choice) {
        Ok(model) => model,
        Err(e) => {
            tracing::error!(error = %e, ?choice, "model could not be trained; serving regional popularity");
            let spec = ModelSpec::default_for(ModelKind::Popularity);
            engine::build(&spec, data).expect("popularity builds from any data")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::synthetic::synthetic;
    use crate::model::Query;

    #[test]
    fn model_choices_parse_from_names_json_and_auto() {
        assert!(matches!(
            "auto".parse::<ModelChoice>(),
            Ok(ModelChoice::Auto)
        ));
        assert!(matches!(
            "ease".parse::<ModelChoice>(),
            Ok(ModelChoice::Spec(ModelSpec::Ease { .. }))
        ));
        assert!(matches!(
            "hybrid".parse::<ModelChoice>(),
            Ok(ModelChoice::Spec(ModelSpec::Hybrid { .. }))
        ));
        let json = r#"{"kind":"itemknn","k":20,"shrink":0.0}"#;
        assert!(matches!(
            json.parse::<ModelChoice>(),
            Ok(ModelChoice::Spec(ModelSpec::ItemKnn { k: 20, .. }))
        ));
        assert!("nonsense".parse::<ModelChoice>().is_err());
        assert!("{bad json".parse::<ModelChoice>().is_err());
    }

    #[test]
    fn the_holdout_takes_each_active_users_latest_interaction() {
        let data = synthetic(50, 40, 10, 3);
        let (train, valid) = holdout(&data);
        assert_eq!(
            train.interactions.len() + valid.len(),
            data.interactions.len()
        );
        for v in &valid {
            let latest = data
                .interactions
                .iter()
                .filter(|x| x.user == v.user)
                .map(|x| x.timestamp)
                .max()
                .unwrap();
            assert_eq!(v.timestamp, latest);
        }
    }

    #[test]
    fn the_default_hybrid_trains_and_names_itself_with_its_parts() {
        let data = synthetic(120, 60, 12, 5);
        let choice: ModelChoice = "hybrid".parse().unwrap();
        let model = train(&data, &choice).unwrap();
        assert!(model.name().starts_with("hybrid-"), "{}", model.name());
        let history = [(1, 1.0), (2, 1.0)];
        let top = model.recommend(&Query {
            history: &history,
            n: 5,
            exclude_seen: true,
            context_item: None,
            region: None,
            allowed: None,
        });
        assert!(!top.is_empty() && top.iter().all(|s| s.item != 1 && s.item != 2));
    }
}
