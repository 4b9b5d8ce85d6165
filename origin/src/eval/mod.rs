//! Offline evaluation: loaders, splitting, metrics, and the `eval` / `split` commands.
//!
//! Protocol: every user with at least one test item gets a ranking of all items with
//! their training items masked; metrics ([`metrics`]) are averaged over those users.
//! Models train on the training file only; `--model auto` tunes on the validation file
//! only; the test file is read for the final score alone.
//!
//! # Layout
//! - `data`: the `lists`, `movielens` and `csv` formats, id mapping, issue counts.
//! - `metrics`: Precision/Recall/NDCG/MAP@K and coverage, unit-tested by hand.
//! - `split`: reproducible per-user 80/10/10 split.
//! - `cli`: clap arguments and runners for `origin eval` and `origin split`.

pub mod cli;
pub mod data;
pub mod metrics;
pub mod split;

use rayon::prelude::*;

use crate::model::{Interaction, ItemIdx, Query, Recommender, TrainingData, UserIdx};
use metrics::{Accumulator, Metrics};

/// Held-out relevant items per user: `(user, sorted distinct items)`, users with none left out.
pub type Holdout = Vec<(UserIdx, Vec<ItemIdx>)>;

/// Builds the held-out sets from `test`, dropping pairs the user already has in training
/// (they are masked, so they could never be hit) and items outside `0..n_items`.
/// Returns the sets and how many pairs were dropped as already seen.
pub fn holdout(
    hist: &[Vec<(ItemIdx, f32)>],
    test: &[Interaction],
    n_items: usize,
) -> (Holdout, usize) {
    let mut per_user: std::collections::BTreeMap<UserIdx, Vec<ItemIdx>> = Default::default();
    let mut seen_dropped = 0;
    for x in test {
        if x.item as usize >= n_items {
            continue;
        }
        let seen = hist
            .get(x.user as usize)
            .is_some_and(|h| h.binary_search_by_key(&x.item, |p| p.0).is_ok());
        if seen {
            seen_dropped += 1;
            continue;
        }
        per_user.entry(x.user).or_default().push(x.item);
    }
    let out = per_user
        .into_iter()
        .map(|(u, mut items)| {
            items.sort_unstable();
            items.dedup();
            (u, items)
        })
        .collect();
    (out, seen_dropped)
}

/// Ranks all items for every held-out user (training items masked) and scores the top `k`.
pub fn evaluate(
    model: &dyn Recommender,
    data: &TrainingData,
    hist: &[Vec<(ItemIdx, f32)>],
    truth: &Holdout,
    k: usize,
) -> Metrics {
    let lists: Vec<Vec<ItemIdx>> = truth
        .par_iter()
        .map(|(u, _)| {
            let u = *u as usize;
            let q = Query {
                history: hist.get(u).map_or(&[][..], Vec::as_slice),
                n: k,
                exclude_seen: true,
                context_item: None,
                region: data.user_region.get(u).and_then(|r| r.as_deref()),
            };
            model.recommend(&q).into_iter().map(|s| s.item).collect()
        })
        .collect();
    let mut acc = Accumulator::new(k, data.n_items);
    for ((_, relevant), ranked) in truth.iter().zip(&lists) {
        acc.add(ranked, relevant);
    }
    acc.finish()
}
