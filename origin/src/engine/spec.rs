//! Models by name and parameters: [`ModelSpec`] and [`build`].

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::als::{Als, AlsParams};
use super::content::Content;
use super::ease::{Ease, EaseError, Variant};
use super::gfcf::{self, GraphFilter};
use super::hybrid::Hybrid;
use super::itemknn::ItemKnn;
use super::popularity::{PopMode, Popularity};
use super::rp3;
use super::userknn::UserKnn;
use super::{Engine, Scorer};
use crate::model::{Recommender, TrainingData};

/// A model family, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Popularity,
    Trending,
    ItemKnn,
    UserKnn,
    Ease,
    Dlae,
    Rp3beta,
    Gfcf,
    Als,
    Content,
    Hybrid,
}

impl ModelKind {
    pub const ALL: [ModelKind; 11] = [
        ModelKind::Popularity,
        ModelKind::Trending,
        ModelKind::ItemKnn,
        ModelKind::UserKnn,
        ModelKind::Ease,
        ModelKind::Dlae,
        ModelKind::Rp3beta,
        ModelKind::Gfcf,
        ModelKind::Als,
        ModelKind::Content,
        ModelKind::Hybrid,
    ];

    /// The command-line name: `popularity`, `itemknn`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Popularity => "popularity",
            ModelKind::Trending => "trending",
            ModelKind::ItemKnn => "itemknn",
            ModelKind::UserKnn => "userknn",
            ModelKind::Ease => "ease",
            ModelKind::Dlae => "dlae",
            ModelKind::Rp3beta => "rp3beta",
            ModelKind::Gfcf => "gfcf",
            ModelKind::Als => "als",
            ModelKind::Content => "content",
            ModelKind::Hybrid => "hybrid",
        }
    }

    pub fn parse(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A model with its hyperparameters; [`ModelSpec::default_for`] gives sensible defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSpec {
    /// Global popularity, or the query region's when `regional`.
    Popularity {
        regional: bool,
    },
    /// Time-decayed popularity.
    Trending {
        half_life_days: f64,
    },
    #[serde(rename = "itemknn")]
    ItemKnn {
        k: usize,
        shrink: f32,
    },
    #[serde(rename = "userknn")]
    UserKnn {
        k: usize,
    },
    /// `alpha > 0` adds `alpha·G_jj` to item j's regularisation (see
    /// [`Ease::train_scaled`]).
    Ease {
        lambda: f64,
        #[serde(default)]
        alpha: f64,
    },
    /// DLAE (Steck 2020): the dropout-denoising linear autoencoder, `Λ_jj = λ + p/(1−p)·G_jj`,
    /// no zero-diagonal constraint (see [`Variant::Dlae`]).
    Dlae {
        lambda: f64,
        dropout: f64,
    },
    /// RP3beta random walk with popularity penalty (see [`rp3`]); `k = 0` keeps every
    /// neighbour.
    Rp3beta {
        alpha: f32,
        beta: f32,
        k: usize,
    },
    /// Closed-form graph filter (GF-CF / BSPM style, see [`gfcf`]).
    Gfcf {
        alpha: f32,
        k: usize,
        #[serde(default)]
        sharpen: f32,
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// Weighted implicit ALS by conjugate gradient (see [`super::als`]).
    Als {
        factors: usize,
        reg: f32,
        alpha: f32,
        iterations: usize,
        #[serde(default = "default_seed")]
        seed: u64,
    },
    Content,
    /// Weighted blend; parts that cannot be built (content without item text) are skipped.
    Hybrid {
        parts: Vec<(ModelSpec, f32)>,
    },
}

fn default_seed() -> u64 {
    42
}

/// Why a model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Ease(#[from] EaseError),
    #[error("the content model needs item text, and the training data has none")]
    NoItemText,
    #[error("a hybrid needs at least one part with positive weight that can be built")]
    EmptyHybrid,
    #[error("dlae needs 0 <= dropout < 1, got {0}")]
    BadDropout(f64),
    #[error("unknown model {0:?} (known: popularity, trending, itemknn, userknn, ease, dlae, rp3beta, gfcf, als, content, hybrid)")]
    UnknownModel(String),
}

impl ModelSpec {
    /// Defaults that work without tuning on MovieLens-sized data.
    pub fn default_for(kind: ModelKind) -> ModelSpec {
        match kind {
            ModelKind::Popularity => ModelSpec::Popularity { regional: true },
            ModelKind::Trending => ModelSpec::Trending {
                half_life_days: 30.0,
            },
            ModelKind::ItemKnn => ModelSpec::ItemKnn {
                k: 100,
                shrink: 10.0,
            },
            ModelKind::UserKnn => ModelSpec::UserKnn { k: 50 },
            ModelKind::Ease => ModelSpec::Ease {
                lambda: 500.0,
                alpha: 0.0,
            },
            ModelKind::Dlae => ModelSpec::Dlae {
                lambda: 100.0,
                dropout: 0.5,
            },
            ModelKind::Rp3beta => ModelSpec::Rp3beta {
                alpha: 0.8,
                beta: 0.5,
                k: 100,
            },
            ModelKind::Gfcf => ModelSpec::Gfcf {
                alpha: 0.3,
                k: 64,
                sharpen: 0.0,
                seed: 42,
            },
            ModelKind::Als => ModelSpec::Als {
                factors: 32,
                reg: 30.0,
                alpha: 3.0,
                iterations: 15,
                seed: 42,
            },
            ModelKind::Content => ModelSpec::Content,
            ModelKind::Hybrid => ModelSpec::Hybrid {
                parts: vec![
                    (
                        ModelSpec::Ease {
                            lambda: 500.0,
                            alpha: 0.0,
                        },
                        0.7,
                    ),
                    (
                        ModelSpec::ItemKnn {
                            k: 100,
                            shrink: 10.0,
                        },
                        0.2,
                    ),
                    (ModelSpec::Content, 0.1),
                ],
            },
        }
    }

    /// Parses a command-line model name (`ease`, `itemknn`, ...) into its default spec.
    pub fn parse(name: &str) -> Result<ModelSpec, SpecError> {
        ModelKind::parse(name)
            .map(ModelSpec::default_for)
            .ok_or_else(|| SpecError::UnknownModel(name.to_string()))
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            ModelSpec::Popularity { .. } => ModelKind::Popularity,
            ModelSpec::Trending { .. } => ModelKind::Trending,
            ModelSpec::ItemKnn { .. } => ModelKind::ItemKnn,
            ModelSpec::UserKnn { .. } => ModelKind::UserKnn,
            ModelSpec::Ease { .. } => ModelKind::Ease,
            ModelSpec::Dlae { .. } => ModelKind::Dlae,
            ModelSpec::Rp3beta { .. } => ModelKind::Rp3beta,
            ModelSpec::Gfcf { .. } => ModelKind::Gfcf,
            ModelSpec::Als { .. } => ModelKind::Als,
            ModelSpec::Content => ModelKind::Content,
            ModelSpec::Hybrid { .. } => ModelKind::Hybrid,
        }
    }

    /// The parameters as JSON (for reports).
    pub fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A key that identifies the trained model (for caching during tuning).
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Trains models on one data set, sharing what models have in common: the popularity
/// counts and TF-IDF index every [`Engine`] uses for cold start, and any component already
/// trained (so hybrids and tuning reuse trained parts).
pub struct Trainer<'a> {
    data: &'a TrainingData,
    popularity: Arc<Popularity>,
    content: Option<Arc<Content>>,
    trained: HashMap<String, Arc<dyn Scorer>>,
}

impl<'a> Trainer<'a> {
    pub fn new(data: &'a TrainingData) -> Trainer<'a> {
        Trainer {
            data,
            popularity: Arc::new(Popularity::train(data, PopMode::Regional)),
            content: Content::train(data).map(Arc::new),
            trained: HashMap::new(),
        }
    }

    /// Global popularity rank of every item (0 = most popular), the engines' tie-break.
    pub fn popularity_rank(&self) -> Vec<u32> {
        self.popularity.global_rank()
    }

    /// Whether the data has item text (so content models can be built).
    pub fn has_text(&self) -> bool {
        self.content.is_some()
    }

    /// The scorer for `spec`, trained once.
    pub fn scorer(&mut self, spec: &ModelSpec) -> Result<Arc<dyn Scorer>, SpecError> {
        if let Some(s) = self.trained.get(&spec.key()) {
            return Ok(s.clone());
        }
        let d = self.data;
        let s: Arc<dyn Scorer> = match spec {
            ModelSpec::Popularity { regional: true } => self.popularity.clone(),
            ModelSpec::Popularity { regional: false } => {
                Arc::new(Popularity::train(d, PopMode::Global))
            }
            ModelSpec::Trending { half_life_days } => Arc::new(Popularity::train(
                d,
                PopMode::Trending {
                    half_life_days: *half_life_days,
                },
            )),
            ModelSpec::ItemKnn { k, shrink } => Arc::new(ItemKnn::train(d, *k, *shrink)),
            ModelSpec::UserKnn { k } => Arc::new(UserKnn::train(d, *k)),
            ModelSpec::Ease { lambda, alpha } => Arc::new(Ease::train_scaled(d, *lambda, *alpha)?),
            ModelSpec::Dlae { lambda, dropout } => {
                if !(0.0..1.0).contains(dropout) {
                    return Err(SpecError::BadDropout(*dropout));
                }
                let alpha = dropout / (1.0 - dropout);
                Arc::new(Ease::train_variant(d, *lambda, alpha, Variant::Dlae)?)
            }
            ModelSpec::Rp3beta { alpha, beta, k } => Arc::new(rp3::train(d, *alpha, *beta, *k)),
            ModelSpec::Gfcf {
                alpha,
                k,
                sharpen,
                seed,
            } => Arc::new(gfcf::train(
                d,
                GraphFilter {
                    alpha: *alpha,
                    k: *k,
                    sharpen: *sharpen,
                    seed: *seed,
                },
            )),
            ModelSpec::Als {
                factors,
                reg,
                alpha,
                iterations,
                seed,
            } => Arc::new(Als::train(
                d,
                AlsParams {
                    factors: *factors,
                    reg: *reg,
                    alpha: *alpha,
                    iterations: *iterations,
                    seed: *seed,
                },
            )),
            ModelSpec::Content => self.content.clone().ok_or(SpecError::NoItemText)?,
            ModelSpec::Hybrid { parts } => {
                let mut built = Vec::new();
                for (p, w) in parts {
                    match self.scorer(p) {
                        Ok(s) => built.push((s, *w)),
                        Err(SpecError::NoItemText) => {}
                        Err(e) => return Err(e),
                    }
                }
                let h = Hybrid::new(built);
                if h.parts().is_empty() {
                    return Err(SpecError::EmptyHybrid);
                }
                Arc::new(h)
            }
        };
        self.trained.insert(spec.key(), s.clone());
        Ok(s)
    }

    /// Drops the trained scorer for `spec` from the cache (its memory is freed once no
    /// engine holds it).
    pub fn forget(&mut self, spec: &ModelSpec) {
        self.trained.remove(&spec.key());
    }

    /// The servable model for `spec`.
    pub fn engine(&mut self, spec: &ModelSpec) -> Result<Engine, SpecError> {
        let main = self.scorer(spec)?;
        Ok(Engine::new(
            main,
            self.popularity.clone(),
            self.content.clone(),
        ))
    }
}

/// Trains the model `spec` on `data`, ready to serve.
pub fn build(spec: &ModelSpec, data: &TrainingData) -> Result<Arc<dyn Recommender>, SpecError> {
    Ok(Arc::new(Trainer::new(data).engine(spec)?))
}

/// The model to train: a spec, or `auto` (tuned on a holdout; see `crate::training`).
/// Parsed from `--model` and from a tenant's model setting.
#[derive(Debug, Clone)]
pub enum ModelChoice {
    Spec(ModelSpec),
    Auto,
}

impl FromStr for ModelChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(ModelChoice::Auto);
        }
        if s.starts_with('{') {
            return serde_json::from_str(s)
                .map(ModelChoice::Spec)
                .map_err(|e| format!("model spec JSON: {e}"));
        }
        ModelSpec::parse(s)
            .map(ModelChoice::Spec)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::itemknn::tests::tiny;
    use crate::model::{Because, Query};

    #[test]
    fn every_default_model_builds_and_answers_warm_and_cold_users() {
        let data = tiny();
        for kind in ModelKind::ALL {
            let spec = ModelSpec::default_for(kind);
            let model = match build(&spec, &data) {
                Ok(m) => m,
                Err(SpecError::NoItemText) => continue,
                Err(e) => panic!("{kind:?}: {e}"),
            };
            let history = [(0u32, 1.0f32)];
            let q = Query {
                history: &history,
                n: 3,
                exclude_seen: true,
                ..Query::default()
            };
            let got = model.recommend(&q);
            assert_eq!(got.len(), 3, "{}", model.name());
            assert!(got.iter().all(|s| s.item != 0));
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
            let cold = model.recommend(&Query {
                n: 2,
                ..Query::default()
            });
            assert_eq!(cold[0].item, 1, "most popular first");
            assert_eq!(cold[0].because, Because::Popular);
        }
    }

    #[test]
    fn a_cold_user_looking_at_an_item_gets_its_content_neighbours_then_regional_popularity() {
        use crate::model::ItemText;
        let mut data = tiny();
        let text = |t: &str, c: &str| ItemText {
            title: t.into(),
            categories: vec![c.into()],
            tags: vec![],
            description: String::new(),
        };
        data.item_text = vec![
            text("Alpha", "drama"),
            text("Beta", "comedy"),
            text("Gamma", "drama"),
            text("Delta", "horror"),
        ];
        data.user_region = vec![None, None, None, Some("asia".into())];
        let model = build(&ModelSpec::default_for(ModelKind::Ease), &data).unwrap();
        let q = Query {
            n: 1,
            context_item: Some(0),
            ..Query::default()
        };
        // item 2 shares the rare category "drama" with item 0; item 0 itself is left out.
        let got = model.recommend(&q);
        assert_eq!(
            (got[0].item, &got[0].because),
            (2, &Because::ContentLike(0))
        );
        // no history, no context: the region's list (only item 3 was viewed in asia).
        let q = Query {
            n: 1,
            region: Some("asia"),
            ..Query::default()
        };
        let got = model.recommend(&q);
        assert_eq!(
            (got[0].item, &got[0].because),
            (3, &Because::PopularIn("asia".into()))
        );
    }

    #[test]
    fn specs_serialise_with_their_kind_and_parameters() {
        let s = ModelSpec::Ease {
            lambda: 250.0,
            alpha: 0.0,
        };
        assert_eq!(
            s.params(),
            serde_json::json!({"kind": "ease", "lambda": 250.0, "alpha": 0.0})
        );
        let old: ModelSpec = serde_json::from_str(r#"{"kind": "ease", "lambda": 250.0}"#).unwrap();
        assert_eq!(old, s);
        assert_eq!(
            ModelSpec::parse("itemknn").unwrap().kind(),
            ModelKind::ItemKnn
        );
        assert!(ModelSpec::parse("nope").is_err());
    }
}
