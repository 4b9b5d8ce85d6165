//! A/B tests of models: experiments as data, the deterministic assignment of users to
//! variants, the models each variant trains, and the per-variant results.
//!
//! An experiment has a name and 2 to [`MAX_VARIANTS`] variants, each a name, a model
//! (what `--model` and a tenant's model setting accept: a model name, a JSON spec or
//! `auto`) and a traffic share in **whole percent** (1 to 99, summing to exactly 100:
//! integers, so a share never fails a float comparison). The first variant is the
//! control: each other variant is tested against it. Names follow
//! [`contract::is_variant_name`] (1 to 64 of `a-z A-Z 0-9 - _`); an experiment's name
//! is unique per tenant forever (its results stay readable after it ends).
//!
//! **At most one experiment per tenant runs at a time**, and while it runs **every
//! user of the tenant is in it**: a user's list comes from their variant's model, and
//! the document says so (`variant`, and that model's `model_version`). The tenant's own
//! model keeps training beside them and makes what belongs to no user: the regions'
//! popular lists. Ending an experiment promotes one variant: its model becomes the
//! tenant's model setting.
//!
//! # Layout
//! - [`Experiment`], [`Variant`], [`NewExperiment`] (the admin body) and their rules;
//!   [`ExperimentError`], each with its HTTP status and code.
//! - `assign`: the stable hash of experiment and user, and the variant it picks.
//! - `stats`: Wilson intervals and the two-proportion z-test, pure.
//! - `results`: per-variant impressions, clicks, CTR, conversions and rates from
//!   per-user tallies of the event log ([`UserTally`]).
//! - `models`: [`ExperimentModels`], the trained model of every variant, picked per
//!   user by the snapshot.

pub mod assign;
pub mod models;
pub mod results;
pub mod stats;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use assign::{assign, point};
pub use models::ExperimentModels;
pub use results::{ExperimentResults, UserTally, VariantResult};

/// Fewest variants of an experiment.
pub const MIN_VARIANTS: usize = 2;
/// Most variants of an experiment.
pub const MAX_VARIANTS: usize = 8;
/// What the shares of an experiment's variants sum to: whole percent.
pub const SHARE_TOTAL: u32 = 100;

/// One arm of an experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// What `--model` accepts (a name, a JSON spec, `auto`).
    pub model: String,
    /// Whole percent of the users, 1 to 99.
    pub share: u32,
}

/// Body of `POST /v1/admin/experiments`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExperiment {
    pub name: String,
    pub variants: Vec<Variant>,
}

/// An experiment as stored: what it tests, when it started and, once ended, when and
/// which variant was promoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    pub name: String,
    pub variants: Vec<Variant>,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while it runs.
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// The variant whose model became the tenant's when it ended.
    #[serde(default)]
    pub promoted: Option<String>,
}

/// Whether an experiment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Ended,
}

/// Why an experiment request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExperimentError {
    #[error("experiment name {0:?} is not 1 to 64 of a-z A-Z 0-9 - _")]
    InvalidName(String),
    #[error("variants[{index}].name {name:?} is not 1 to 64 of a-z A-Z 0-9 - _")]
    InvalidVariantName { index: usize, name: String },
    #[error("an experiment has {MIN_VARIANTS} to {MAX_VARIANTS} variants, not {0}")]
    VariantCount(usize),
    #[error("variant {0:?} is named twice")]
    DuplicateVariant(String),
    #[error("variants[{index}].share must be a whole percent from 1 to 99, not {share}")]
    InvalidShare { index: usize, share: u32 },
    #[error("the variants' shares must sum to {SHARE_TOTAL} (whole percent), not {0}")]
    SharesSum(u32),
    #[error("variants[{index}].model: {message}")]
    InvalidModel { index: usize, message: String },
    #[error("an experiment named {0:?} exists already (names are never reused)")]
    Exists(String),
    #[error("experiment {0:?} is running: end it before starting another")]
    AlreadyRunning(String),
    #[error("no experiment named {0:?}")]
    NotFound(String),
    #[error("experiment {0:?} has ended already")]
    Ended(String),
    #[error("experiment {experiment:?} has no variant {variant:?}")]
    UnknownVariant { experiment: String, variant: String },
}

impl ExperimentError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> u16 {
        match self {
            ExperimentError::Exists(_)
            | ExperimentError::AlreadyRunning(_)
            | ExperimentError::Ended(_) => 409,
            ExperimentError::NotFound(_) => 404,
            _ => 400,
        }
    }

    /// The error code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ExperimentError::InvalidName(_) => "invalid_experiment_name",
            ExperimentError::InvalidVariantName { .. } => "invalid_variant_name",
            ExperimentError::VariantCount(_) => "invalid_variants",
            ExperimentError::DuplicateVariant(_) => "duplicate_variant",
            ExperimentError::InvalidShare { .. } | ExperimentError::SharesSum(_) => "invalid_share",
            ExperimentError::InvalidModel { .. } => "invalid_model",
            ExperimentError::Exists(_) => "experiment_exists",
            ExperimentError::AlreadyRunning(_) => "experiment_running",
            ExperimentError::NotFound(_) => "experiment_not_found",
            ExperimentError::Ended(_) => "experiment_ended",
            ExperimentError::UnknownVariant { .. } => "unknown_variant",
        }
    }
}

/// Checks an experiment's name.
pub fn check_name(name: &str) -> Result<(), ExperimentError> {
    if contract::is_variant_name(name) {
        Ok(())
    } else {
        Err(ExperimentError::InvalidName(
            name.chars().take(80).collect(),
        ))
    }
}

impl NewExperiment {
    /// The experiment, checked, starting at `now` (unix seconds): its name, 2 to 8
    /// variants of distinct valid names, shares of whole percent summing to 100, and
    /// models that parse (trimmed as stored).
    pub fn start(self, now: i64) -> Result<Experiment, ExperimentError> {
        check_name(&self.name)?;
        let n = self.variants.len();
        if !(MIN_VARIANTS..=MAX_VARIANTS).contains(&n) {
            return Err(ExperimentError::VariantCount(n));
        }
        let mut variants = Vec::with_capacity(n);
        let mut sum = 0u32;
        for (index, v) in self.variants.into_iter().enumerate() {
            if !contract::is_variant_name(&v.name) {
                return Err(ExperimentError::InvalidVariantName {
                    index,
                    name: v.name.chars().take(80).collect(),
                });
            }
            if variants.iter().any(|w: &Variant| w.name == v.name) {
                return Err(ExperimentError::DuplicateVariant(v.name));
            }
            if !(1..SHARE_TOTAL).contains(&v.share) {
                return Err(ExperimentError::InvalidShare {
                    index,
                    share: v.share,
                });
            }
            sum += v.share;
            let model = crate::tenants::ModelSetting::parse(&v.model)
                .map_err(|e| ExperimentError::InvalidModel {
                    index,
                    message: e.to_string(),
                })?
                .as_str()
                .to_owned();
            variants.push(Variant {
                name: v.name,
                model,
                share: v.share,
            });
        }
        if sum != SHARE_TOTAL {
            return Err(ExperimentError::SharesSum(sum));
        }
        Ok(Experiment {
            name: self.name,
            variants,
            started_at: now,
            ended_at: None,
            promoted: None,
        })
    }
}

impl Experiment {
    pub fn status(&self) -> Status {
        match self.ended_at {
            None => Status::Running,
            Some(_) => Status::Ended,
        }
    }

    pub fn is_running(&self) -> bool {
        self.ended_at.is_none()
    }

    /// The variant `user` is in (see [`assign`]).
    pub fn variant_of(&self, user: &str) -> &Variant {
        &self.variants[assign(&self.name, user, &self.variants)]
    }

    /// The variant called `name`.
    pub fn variant(&self, name: &str) -> Result<&Variant, ExperimentError> {
        self.variants
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ExperimentError::UnknownVariant {
                experiment: self.name.clone(),
                variant: name.chars().take(80).collect(),
            })
    }
}

/// What starting an experiment in a store did: a decision the store makes in one
/// transaction, so two starts at once cannot both run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    Started,
    /// An experiment of that name exists (running or ended).
    NameTaken,
    /// Another experiment (named) runs.
    Running(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, model: &str, share: u32) -> Variant {
        Variant {
            name: name.into(),
            model: model.into(),
            share,
        }
    }

    fn body(variants: Vec<Variant>) -> NewExperiment {
        NewExperiment {
            name: "ease-vs-hybrid".into(),
            variants,
        }
    }

    #[test]
    fn a_valid_experiment_starts_running_with_trimmed_models() {
        let e = body(vec![
            variant("control", " hybrid ", 50),
            variant("ease", r#"{"kind":"ease","lambda":400}"#, 50),
        ])
        .start(1_000)
        .unwrap();
        assert_eq!(e.status(), Status::Running);
        assert_eq!(e.started_at, 1_000);
        assert_eq!(e.variants[0].model, "hybrid");
        assert_eq!(e.variant("ease").unwrap().share, 50);
        assert_eq!(e.variant("nope").unwrap_err().code(), "unknown_variant");
    }

    #[test]
    fn every_broken_rule_is_refused_with_its_code() {
        let ok = || vec![variant("a", "popularity", 60), variant("b", "itemknn", 40)];
        let code = |b: NewExperiment| b.start(0).unwrap_err().code();
        let mut bad_name = body(ok());
        bad_name.name = "no spaces".into();
        assert_eq!(code(bad_name), "invalid_experiment_name");
        assert_eq!(
            code(body(vec![variant("a", "ease", 100)])),
            "invalid_variants"
        );
        assert_eq!(
            code(body(
                (0..9)
                    .map(|i| variant(&format!("v{i}"), "ease", 11))
                    .collect()
            )),
            "invalid_variants"
        );
        assert_eq!(
            code(body(vec![
                variant("a/b", "ease", 50),
                variant("c", "ease", 50)
            ])),
            "invalid_variant_name"
        );
        assert_eq!(
            code(body(vec![
                variant("a", "ease", 50),
                variant("a", "ease", 50)
            ])),
            "duplicate_variant"
        );
        assert_eq!(
            code(body(vec![
                variant("a", "ease", 0),
                variant("b", "ease", 100)
            ])),
            "invalid_share"
        );
        assert_eq!(
            code(body(vec![
                variant("a", "ease", 50),
                variant("b", "ease", 49)
            ])),
            "invalid_share"
        );
        assert_eq!(
            code(body(vec![
                variant("a", "ease", 50),
                variant("b", "nonsense", 50)
            ])),
            "invalid_model"
        );
        assert!(body(ok()).start(0).is_ok());
    }

    #[test]
    fn statuses_and_codes_match_the_api() {
        assert_eq!(ExperimentError::AlreadyRunning("x".into()).status(), 409);
        assert_eq!(ExperimentError::Exists("x".into()).status(), 409);
        assert_eq!(ExperimentError::NotFound("x".into()).status(), 404);
        assert_eq!(ExperimentError::SharesSum(99).status(), 400);
    }
}
