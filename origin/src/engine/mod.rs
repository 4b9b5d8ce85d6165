//! Recommendation models: pure compute over sparse matrices.
//!
//! Every model trains on [`TrainingData`] and answers [`Query`]s through the
//! [`Recommender`] trait. Build one by name and parameters with [`build`] from a
//! [`ModelSpec`], or let `eval::tune::train_best` tune every model and the hybrid blend
//! on a validation set (tuning is evaluation, so it lives in `eval`). Answer many users at once with [`recommend_batch`] (parallel, the
//! publisher's path) or one user with [`Recommender::recommend`] (the cache-miss path).
//!
//! # Use
//! ```
//! use origin::engine::{self, synthetic::synthetic, ModelSpec};
//! use origin::eval::tune::{train_best, TuneOptions};
//! use origin::model::Query;
//!
//! let data = synthetic(200, 100, 30, 7); // any TrainingData
//! // A named model with its parameters (serde-serialisable, e.g. kept in config):
//! let ease = engine::build(&ModelSpec::Ease { lambda: 200.0, alpha: 0.0 }, &data)?;
//! assert_eq!(ease.name(), "ease-l200");
//! // Or tune every model and the hybrid on held-out interactions:
//! let (train, valid) = (data.clone(), data.interactions[..50].to_vec());
//! let best = train_best(&train, &valid, &TuneOptions::default())?;
//! // One user (the cache-miss path):
//! let history = [(3, 1.0), (5, 1.0)];
//! let top = best.model.recommend(&Query { history: &history, n: 10, exclude_seen: true,
//!                                         context_item: None, region: Some("europe"),
//!                                         allowed: None });
//! assert!(top.len() <= 10 && top.iter().all(|s| s.item != 3 && s.item != 5));
//! // Every user, in parallel (the publisher's path):
//! let all = engine::recommend_all(best.model.as_ref(), &data, 20, true);
//! assert_eq!(all.len(), data.n_users);
//! # Ok::<(), engine::SpecError>(())
//! ```
//!
//! # Layout
//! - `sparse`: a CSR matrix over `Vec`s (u32 indices, f32 values).
//! - `rank`: per-thread score buffers and partial-sort top-N.
//! - `popularity`: global, regional and trending (time-decayed) popularity.
//! - `itemknn`: item-item cosine with shrinkage, top-k neighbours per item.
//! - `userknn`: user-user cosine, top-k neighbours found per query.
//! - `dense`: what the dense item-item models share: the weighted Gram matrix, the
//!   scoring loop, top-k sparsification.
//! - `ease`: EASE (Steck 2019) and DLAE (Steck 2020), closed form via one Cholesky solve
//!   (`faer`).
//! - `rp3`: RP3beta, a three-step random walk with a popularity penalty.
//! - `gfcf`: closed-form graph filters (GF-CF / BSPM / Turbo-CF style): the normalised
//!   item-item graph plus an ideal low-pass part from its leading eigenvectors.
//! - `als`: weighted implicit ALS by conjugate gradient; queries fold the history in.
//! - `content`: TF-IDF over item text, cosine to the user's profile.
//! - `hybrid`: a weighted blend of min-max-normalised scores of other models, named
//!   like `hybrid-0.9ease-l400-0.1userknn-k100`.
//! - `spec`: [`ModelSpec`], names, and [`build`].
//! - `synthetic`: MovieLens-shaped generated data for benchmarks and demos.
//!
//! # How a query is answered
//! A model is a [`Scorer`] (scores every item for a history) wrapped in an [`Engine`],
//! which handles what all models share: cold start (empty history → content neighbours
//! of `context_item`, else the model's own neighbours of it, else the region's popular
//! list), masking seen items, top-N by partial sort with popularity as the tie-break (so
//! a model that knows little still fills its list with popular items), and reasons.
//!
//! # Memory bounds (`U` users, `I` items, `N` interactions, `T` text terms)
//! - interaction matrix and its transpose: `2 · (8·U + 8·N)` bytes (user-kNN keeps both).
//! - item-kNN: `8·k·I` bytes of neighbours; training peaks at one `I`-float accumulator per thread.
//! - EASE, DLAE: `4·I²` bytes for `B` (55 MB at 3,700 items); training peaks at about
//!   `12·I²` bytes (the `f32` Gram matrix or its factor, the inverse, and `B`).
//! - RP3beta, graph filter: `4·I²` bytes for `W`; training peaks at `8·I²` (RP3beta) and
//!   `16·I²` (graph filter with sharpening: `P̃`, `P̃²`, the low-pass part and `W`).
//! - ALS: `4·f·(U + I)` bytes while training, `4·f·I` kept; a query solves one `f × f` system.
//! - content: `8·(nnz of the TF-IDF matrix)` twice (rows and postings).
//! - popularity: `4·I` per region plus one for trending.
//! - per query: one `I`-float buffer per thread (user-kNN adds one `U`-float buffer; the
//!   hybrid one per component), reused across queries; the answer is the only allocation.

pub mod als;
pub mod content;
pub mod dense;
pub mod ease;
pub mod gfcf;
pub mod hybrid;
pub mod itemknn;
pub mod popularity;
pub mod rank;
pub mod rp3;
pub mod sparse;
pub mod spec;
pub mod synthetic;
pub mod userknn;

use std::sync::Arc;

use rayon::prelude::*;

use crate::model::{Because, ItemIdx, Query, Recommender, Scored, TrainingData, UserIdx};
pub use sparse::Csr;
pub use spec::{build, ModelChoice, ModelKind, ModelSpec, SpecError};

/// What every model computes: a score for every item given a history.
///
/// `out` has one slot per item and arrives zeroed. Scores are only compared within one
/// query, so their scale is the model's own.
pub trait Scorer: Send + Sync {
    /// Name with the hyperparameters that matter, e.g. `ease-l500`.
    fn name(&self) -> String;
    /// Number of items scored.
    fn n_items(&self) -> usize;
    /// Adds the score of every item for `history` (and `region`) into `out`.
    fn score(&self, history: &[(ItemIdx, f32)], region: Option<&str>, out: &mut [f32]);
    /// Why `item` scored for `history`.
    fn because(&self, history: &[(ItemIdx, f32)], region: Option<&str>, item: ItemIdx) -> Because;
    /// Approximate heap bytes the trained model holds (what the origin's model cache
    /// counts against `--model-cache-mb`).
    fn heap_bytes(&self) -> usize;
}

/// The user-item matrix of `data` (users as rows), duplicates keeping their largest weight.
pub fn user_item_matrix(data: &TrainingData) -> Csr {
    Csr::from_triplets(
        data.n_users,
        data.n_items,
        data.interactions
            .iter()
            .filter(|x| (x.user as usize) < data.n_users && (x.item as usize) < data.n_items)
            .map(|x| (x.user, x.item, x.weight)),
    )
}

/// Every user's history as `(item, weight)` pairs, the form [`Query::history`] takes.
pub fn histories(data: &TrainingData) -> Vec<Vec<(ItemIdx, f32)>> {
    let m = user_item_matrix(data);
    (0..m.n_rows()).map(|u| m.row_iter(u).collect()).collect()
}

/// A trained model ready to serve: a [`Scorer`] plus the shared cold-start, masking,
/// top-N and explanation logic. Immutable; share it as `Arc<dyn Recommender>`.
pub struct Engine {
    main: Arc<dyn Scorer>,
    popularity: Arc<popularity::Popularity>,
    content: Option<Arc<content::Content>>,
    /// Global popularity rank of every item (0 = most popular), the tie-break.
    pop_rank: Vec<u32>,
}

impl Engine {
    /// Wraps `main`; `popularity` answers cold users and breaks ties, `content` (when
    /// item text is known) answers cold users who look at a `context_item`.
    pub fn new(
        main: Arc<dyn Scorer>,
        popularity: Arc<popularity::Popularity>,
        content: Option<Arc<content::Content>>,
    ) -> Engine {
        let pop_rank = popularity.global_rank();
        Engine {
            main,
            popularity,
            content,
            pop_rank,
        }
    }

    /// The model that scores users with a history.
    pub fn scorer(&self) -> &Arc<dyn Scorer> {
        &self.main
    }

    fn answer(
        &self,
        scorer: &dyn Scorer,
        history: &[(ItemIdx, f32)],
        seen: &[(ItemIdx, f32)],
        query: &Query<'_>,
    ) -> Vec<Scored> {
        let n_items = self.pop_rank.len();
        rank::with_buffer(n_items, |scores| {
            scorer.score(history, query.region, scores);
            if query.exclude_seen {
                rank::mask(scores, seen.iter().map(|(i, _)| *i));
            }
            if let Some(allowed) = query.allowed {
                rank::mask_disallowed(scores, allowed);
            }
            rank::top_n(scores, query.n, &self.pop_rank)
                .into_iter()
                .map(|(item, score)| Scored {
                    item,
                    score,
                    because: if score > 0.0 || history.is_empty() {
                        scorer.because(history, query.region, item)
                    } else {
                        self.popularity.because(&[], query.region, item)
                    },
                })
                .collect()
        })
    }
}

impl Recommender for Engine {
    fn name(&self) -> String {
        self.main.name()
    }

    fn heap_bytes(&self) -> usize {
        // `main` may be the popularity model itself (counted once then).
        let popularity: &dyn Scorer = self.popularity.as_ref();
        let shared = std::ptr::addr_eq(Arc::as_ptr(&self.main), popularity as *const dyn Scorer);
        self.main.heap_bytes()
            + if shared {
                0
            } else {
                self.popularity.heap_bytes()
            }
            + self.content.as_ref().map_or(0, |c| c.heap_bytes())
            + self.pop_rank.len() * 4
    }

    fn recommend(&self, query: &Query<'_>) -> Vec<Scored> {
        if !query.history.is_empty() {
            return self.answer(self.main.as_ref(), query.history, query.history, query);
        }
        if let Some(ctx) = query
            .context_item
            .filter(|&i| (i as usize) < self.pop_rank.len())
        {
            let pseudo = [(ctx, 1.0f32)];
            let scorer: &dyn Scorer = match &self.content {
                Some(c) if c.knows(ctx) => c.as_ref(),
                _ => self.main.as_ref(),
            };
            let mut q = query.clone();
            q.exclude_seen = true;
            return self.answer(scorer, &pseudo, &pseudo, &q);
        }
        self.answer(self.popularity.as_ref(), &[], &[], query)
    }
}

/// Top-N for many queries in parallel (rayon), answers in the order of `queries`.
pub fn recommend_batch(model: &dyn Recommender, queries: &[Query<'_>]) -> Vec<Vec<Scored>> {
    queries.par_iter().map(|q| model.recommend(q)).collect()
}

/// Top-`n` for every user of `data` with at least one interaction (or for all users when
/// `include_cold`), in parallel: `(user, answer)` in user order. Seen items are excluded.
pub fn recommend_all(
    model: &dyn Recommender,
    data: &TrainingData,
    n: usize,
    include_cold: bool,
) -> Vec<(UserIdx, Vec<Scored>)> {
    let hist = histories(data);
    (0..data.n_users)
        .into_par_iter()
        .filter(|&u| include_cold || !hist[u].is_empty())
        .map(|u| {
            let region = data.user_region.get(u).and_then(|r| r.as_deref());
            let q = Query {
                history: &hist[u],
                n,
                exclude_seen: true,
                context_item: None,
                region,
                allowed: None,
            };
            (u as UserIdx, model.recommend(&q))
        })
        .collect()
}
