//! Offline evaluation: loaders, splitting, metrics, and the `eval` / `split` commands.
//!
//! Protocol: every user with at least one test item gets a ranking of all items with
//! their training items masked; metrics ([`metrics`]) are averaged over those users.
//! Test items never seen in training stay in each user's relevant set (relabelled past
//! the catalogue, so no model can hit them) and count as misses, as in the published
//! protocols; `origin eval --drop-unknown-items` drops them instead and says so. Metrics
//! are also reported per user-activity bucket ([`by_activity`]).
//! Models train on the training file only; `--model auto` tunes on the validation file
//! only; the test file is read for the final score alone.
//!
//! # Layout
//! - `data`: the `lists`, `movielens` and `csv` formats, id mapping, issue counts.
//! - `metrics`: Precision/Recall/NDCG/MAP@K and coverage, unit-tested by hand.
//! - `split`: reproducible per-user 80/10/10 split.
//! - `tune`: `train_best`, every model family tuned and a blend fitted on a validation set
//!   (used by `origin eval --model auto` and by `serve`/`publish --model auto`).
//! - `cli`: clap arguments and runners for `origin eval` and `origin split`.

pub mod cli;
pub mod data;
pub mod metrics;
pub mod split;
pub mod tune;

use rayon::prelude::*;

use crate::model::{Interaction, ItemIdx, Query, Recommender, TrainingData, UserIdx};
use metrics::{Accumulator, Metrics};

/// Held-out relevant items per user: `(user, sorted distinct items)`, users with none left out.
pub type Holdout = Vec<(UserIdx, Vec<ItemIdx>)>;

/// Builds the held-out sets from `test`, dropping pairs the user already has in training
/// (they are masked, so they could never be hit). Items at or beyond `n_items` (test items
/// never seen in training, which the caller may relabel there) are kept: they are relevant
/// items no model can recommend, so they count as misses in Recall and NDCG, as in the
/// published protocols. Returns the sets and how many pairs were dropped as already seen.
pub fn holdout(hist: &[Vec<(ItemIdx, f32)>], test: &[Interaction]) -> (Holdout, usize) {
    let mut per_user: std::collections::BTreeMap<UserIdx, Vec<ItemIdx>> = Default::default();
    let mut seen_dropped = 0;
    for x in test {
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

/// The top `k` of `model` for every held-out user (training items masked), in `truth` order.
pub fn rank_lists(
    model: &dyn Recommender,
    data: &TrainingData,
    hist: &[Vec<(ItemIdx, f32)>],
    truth: &Holdout,
    k: usize,
) -> Vec<Vec<ItemIdx>> {
    truth
        .par_iter()
        .map(|(u, _)| {
            let u = *u as usize;
            let q = Query {
                history: hist.get(u).map_or(&[][..], Vec::as_slice),
                n: k,
                exclude_seen: true,
                context_item: None,
                region: data.user_region.get(u).and_then(|r| r.as_deref()),
                allowed: None,
            };
            model.recommend(&q).into_iter().map(|s| s.item).collect()
        })
        .collect()
}

/// Metrics of `lists` (in `truth` order) against `truth`.
pub fn score_lists(lists: &[Vec<ItemIdx>], truth: &Holdout, k: usize, n_items: usize) -> Metrics {
    let mut acc = Accumulator::new(k, n_items);
    for ((_, relevant), ranked) in truth.iter().zip(lists) {
        acc.add(ranked, relevant);
    }
    acc.finish()
}

/// Ranks all items for every held-out user (training items masked) and scores the top `k`.
pub fn evaluate(
    model: &dyn Recommender,
    data: &TrainingData,
    hist: &[Vec<(ItemIdx, f32)>],
    truth: &Holdout,
    k: usize,
) -> Metrics {
    score_lists(
        &rank_lists(model, data, hist, truth, k),
        truth,
        k,
        data.n_items,
    )
}

/// Users grouped by how many training items they have: `[min, max]` (inclusive).
pub const ACTIVITY_BUCKETS: [(usize, usize); 6] = [
    (0, 0),
    (1, 19),
    (20, 49),
    (50, 99),
    (100, 199),
    (200, usize::MAX),
];

/// Metrics of the users in one activity bucket.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ActivityBucket {
    /// Fewest training items of a user in the bucket.
    pub min_train_items: usize,
    /// Most training items (`None`: unbounded).
    pub max_train_items: Option<usize>,
    pub metrics: Metrics,
}

/// [`score_lists`] per [`ACTIVITY_BUCKETS`] (buckets without users left out), so a gain on
/// heavy users cannot hide a loss on light ones.
pub fn by_activity(
    lists: &[Vec<ItemIdx>],
    truth: &Holdout,
    hist: &[Vec<(ItemIdx, f32)>],
    k: usize,
    n_items: usize,
) -> Vec<ActivityBucket> {
    ACTIVITY_BUCKETS
        .iter()
        .filter_map(|&(lo, hi)| {
            let mut acc = Accumulator::new(k, n_items);
            for ((u, relevant), ranked) in truth.iter().zip(lists) {
                let n = hist.get(*u as usize).map_or(0, Vec::len);
                if (lo..=hi).contains(&n) {
                    acc.add(ranked, relevant);
                }
            }
            let metrics = acc.finish();
            (metrics.users > 0).then_some(ActivityBucket {
                min_train_items: lo,
                max_train_items: (hi != usize::MAX).then_some(hi),
                metrics,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(user: u32, item: u32) -> Interaction {
        Interaction {
            user,
            item,
            weight: 1.0,
            timestamp: 0,
        }
    }

    #[test]
    fn unknown_test_items_count_as_relevant_items_the_model_missed() {
        // 3 known items (0, 1, 2). User 0 trained on item 0; test {1, 5, 0}: item 0 is
        // already in training (dropped, counted), item 5 was never seen in training (the
        // caller relabelled it past the catalogue) and stays relevant.
        let hist = vec![vec![(0u32, 1.0f32)], vec![]];
        let (truth, seen) = holdout(&hist, &[x(0, 1), x(0, 5), x(0, 0), x(1, 2)]);
        assert_eq!(seen, 1);
        assert_eq!(truth, vec![(0, vec![1, 5]), (1, vec![2])]);
        // user 0 ranks [1, 2], K = 2: one hit of two relevant items.
        //   recall = 1/2; DCG = 1; IDCG over min(2, 2) = 1 + 1/log2(3) = 1.630930;
        //   NDCG = 0.613147. (Dropping item 5 would give recall 1 and NDCG 1.)
        // user 1 ranks [0, 2]: hit at position 2 → recall 1, NDCG = (1/log2 3)/1 = 0.630930.
        let m = score_lists(&[vec![1, 2], vec![0, 2]], &truth, 2, 3);
        assert_eq!(m.users, 2);
        assert!((m.recall - (0.5 + 1.0) / 2.0).abs() < 1e-9);
        let u0 = 1.0 / (1.0 + 1.0 / 3f64.log2());
        assert!((u0 - 0.613147).abs() < 1e-6);
        assert!((m.ndcg - (u0 + 1.0 / 3f64.log2()) / 2.0).abs() < 1e-9);
        // coverage only counts catalogue items: 0, 1, 2 shown of 3.
        assert_eq!(m.coverage, 1.0);
    }

    #[test]
    fn activity_buckets_split_users_by_training_items() {
        // user 0 has 1 training item (bucket 1-19), user 1 has none (bucket 0).
        let hist = vec![vec![(0u32, 1.0f32)], vec![]];
        let truth = vec![(0, vec![1]), (1, vec![2])];
        let b = by_activity(&[vec![1], vec![0]], &truth, &hist, 1, 3);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].min_train_items, b[0].max_train_items), (0, Some(0)));
        assert_eq!((b[0].metrics.users, b[0].metrics.recall), (1, 0.0));
        assert_eq!((b[1].min_train_items, b[1].max_train_items), (1, Some(19)));
        assert_eq!((b[1].metrics.users, b[1].metrics.recall), (1, 1.0));
    }
}
