//! The trained model of every variant of the running experiment, built by a retrain
//! on the same training data as the tenant's own model (see `crate::retrain`), and
//! picked per user by the snapshot (`crate::snapshot`).

use std::sync::Arc;

use crate::model::{Recommender, TrainingData};

use super::{assign, Experiment};

/// A running experiment with one trained model per variant, in the variants' order.
pub struct ExperimentModels {
    pub experiment: Experiment,
    models: Vec<Arc<dyn Recommender>>,
}

/// The variant a user is in and the model that makes their list.
pub struct Arm<'a> {
    pub variant: &'a str,
    pub model: &'a Arc<dyn Recommender>,
}

impl ExperimentModels {
    /// Trains every variant's model on `data` (a model that fails to train serves
    /// regional popularity, as the tenant's own does; the log says why).
    pub fn train(experiment: Experiment, data: &TrainingData) -> Self {
        let models = experiment
            .variants
            .iter()
            .map(|v| {
                let choice = v.model.parse().unwrap_or_else(|_| {
                    crate::engine::ModelChoice::Spec(crate::engine::ModelSpec::default_for(
                        crate::engine::ModelKind::Popularity,
                    ))
                });
                let model = crate::training::train_or_popularity(data, &choice);
                tracing::info!(
                    experiment = %experiment.name,
                    variant = %v.name,
                    model = %model.name(),
                    "trained an experiment variant"
                );
                model
            })
            .collect();
        ExperimentModels::with_models(experiment, models)
    }

    /// An experiment with models already trained, one per variant in order.
    pub fn with_models(experiment: Experiment, models: Vec<Arc<dyn Recommender>>) -> Self {
        assert_eq!(
            experiment.variants.len(),
            models.len(),
            "one model per variant"
        );
        ExperimentModels { experiment, models }
    }

    /// `user`'s variant and its model.
    pub fn arm(&self, user: &str) -> Arm<'_> {
        let i = assign(&self.experiment.name, user, &self.experiment.variants);
        Arm {
            variant: &self.experiment.variants[i].name,
            model: &self.models[i],
        }
    }

    /// Every variant's name and model, in order.
    pub fn arms(&self) -> impl Iterator<Item = (&str, &Arc<dyn Recommender>)> {
        self.experiment
            .variants
            .iter()
            .map(|v| v.name.as_str())
            .zip(&self.models)
    }

    /// Approximate heap bytes of the variants' models.
    pub fn heap_bytes(&self) -> usize {
        self.models.iter().map(|m| m.heap_bytes()).sum()
    }
}
