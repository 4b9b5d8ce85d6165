//! A first recommender: item-to-item cosine similarity over interaction weights,
//! backed by global and regional popularity.
//!
//! Training aggregates repeated (user, item) pairs, computes for every item its top
//! [`NEIGHBOURS`] most similar items (sparse, in parallel with rayon; memory grows
//! with items × k, never items²) and ranks items by popularity, globally and per
//! region. Answers:
//! - a user with history: items similar to the history (reason: the history item
//!   that contributed most), topped up with regional popular items;
//! - a cold-start user with a context item: items similar to the context item;
//! - otherwise: the regional popular list.
//!
//! Regional popularity uses the global count as a tiny tie-breaking prior, so a region
//! without interactions of its own still gets a sensible list.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::model::{Because, ItemIdx, Query, Recommender, Scored, TrainingData};

/// Neighbours kept per item.
pub const NEIGHBOURS: usize = 50;

/// Weight of the global count in regional popularity (a tie-breaking prior).
const GLOBAL_PRIOR: f32 = 1e-3;

/// A trained item-kNN + popularity model.
#[derive(Debug, Clone)]
pub struct ItemKnn {
    k: usize,
    /// `neighbours[i]`: up to `k` (item, cosine) pairs, most similar first.
    neighbours: Vec<Vec<(ItemIdx, f32)>>,
    /// Items by global popularity, best first, with scores in `0..=1`.
    global: Vec<(ItemIdx, f32)>,
    /// Items by popularity within a region, best first, with scores in `0..=1`.
    regional: HashMap<String, Vec<(ItemIdx, f32)>>,
}

fn ranked(counts: &[f32], prior: Option<&[f32]>) -> Vec<(ItemIdx, f32)> {
    let score = |i: usize| counts[i] + prior.map_or(0.0, |p| GLOBAL_PRIOR * p[i]);
    let max = (0..counts.len()).map(score).fold(0.0f32, f32::max);
    let mut list: Vec<(ItemIdx, f32)> = (0..counts.len())
        .filter(|&i| score(i) > 0.0)
        .map(|i| (i as ItemIdx, if max > 0.0 { score(i) / max } else { 0.0 }))
        .collect();
    list.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    list
}

impl ItemKnn {
    /// Trains with [`NEIGHBOURS`] neighbours per item.
    pub fn train(data: &TrainingData) -> Self {
        Self::train_with_k(data, NEIGHBOURS)
    }

    /// Trains with `k` neighbours per item.
    pub fn train_with_k(data: &TrainingData, k: usize) -> Self {
        let n_items = data.n_items;
        // Aggregate repeated (user, item) pairs into one weight per pair.
        // Rows sized exactly (counted first), so memory stays near the data size.
        let mut per_user = vec![0u32; data.n_users];
        for it in &data.interactions {
            if (it.user as usize) < data.n_users {
                per_user[it.user as usize] += 1;
            }
        }
        let mut by_user: Vec<Vec<(ItemIdx, f32)>> = per_user
            .iter()
            .map(|&n| Vec::with_capacity(n as usize))
            .collect();
        drop(per_user);
        for it in &data.interactions {
            if (it.user as usize) < data.n_users && (it.item as usize) < n_items {
                by_user[it.user as usize].push((it.item, it.weight.max(0.0)));
            }
        }
        by_user.par_iter_mut().for_each(|row| {
            row.sort_by_key(|&(i, _)| i);
            row.dedup_by(|next, kept| {
                if next.0 == kept.0 {
                    kept.1 += next.1;
                    true
                } else {
                    false
                }
            });
            row.shrink_to_fit();
        });
        let mut per_item = vec![0u32; n_items];
        for row in &by_user {
            for &(i, _) in row {
                per_item[i as usize] += 1;
            }
        }
        let mut by_item: Vec<Vec<(u32, f32)>> = per_item
            .iter()
            .map(|&n| Vec::with_capacity(n as usize))
            .collect();
        drop(per_item);
        let mut counts = vec![0.0f32; n_items];
        let mut region_counts: HashMap<String, Vec<f32>> = HashMap::new();
        for (u, row) in by_user.iter().enumerate() {
            let region = data.user_region.get(u).and_then(|r| r.as_deref());
            for &(i, w) in row {
                by_item[i as usize].push((u as u32, w));
                counts[i as usize] += 1.0;
                if let Some(r) = region {
                    region_counts
                        .entry(r.to_owned())
                        .or_insert_with(|| vec![0.0; n_items])[i as usize] += 1.0;
                }
            }
        }
        let norms: Vec<f32> = by_item
            .iter()
            .map(|users| users.iter().map(|&(_, w)| w * w).sum::<f32>().sqrt())
            .collect();
        let neighbours: Vec<Vec<(ItemIdx, f32)>> = (0..n_items)
            .into_par_iter()
            .map_init(
                || (vec![0.0f32; n_items], Vec::<ItemIdx>::new()),
                |(acc, touched), i| {
                    for &(u, wu) in &by_item[i] {
                        for &(j, wj) in &by_user[u as usize] {
                            if j as usize == i {
                                continue;
                            }
                            if acc[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            acc[j as usize] += wu * wj;
                        }
                    }
                    let mut sims: Vec<(ItemIdx, f32)> = touched
                        .drain(..)
                        .filter_map(|j| {
                            let dot = std::mem::take(&mut acc[j as usize]);
                            let denom = norms[i] * norms[j as usize];
                            (dot > 0.0 && denom > 0.0).then(|| (j, dot / denom))
                        })
                        .collect();
                    let by_similarity = |a: &(ItemIdx, f32), b: &(ItemIdx, f32)| {
                        b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
                    };
                    if sims.len() > k && k > 0 {
                        sims.select_nth_unstable_by(k - 1, by_similarity);
                    }
                    sims.truncate(k);
                    sims.sort_by(by_similarity);
                    // Keep k entries, not the capacity of every co-occurring item.
                    sims.shrink_to_fit();
                    sims
                },
            )
            .collect();
        let global = ranked(&counts, None);
        let regional = region_counts
            .into_iter()
            .map(|(r, c)| (r, ranked(&c, Some(&counts))))
            .collect();
        ItemKnn {
            k,
            neighbours,
            global,
            regional,
        }
    }

    /// The most similar items to `item`, best first.
    pub fn neighbours(&self, item: ItemIdx) -> &[(ItemIdx, f32)] {
        self.neighbours
            .get(item as usize)
            .map_or(&[], |v| v.as_slice())
    }

    /// Items by popularity in `region` (or globally), best first, with the reason to give.
    fn popular(&self, region: Option<&str>) -> (&[(ItemIdx, f32)], Because) {
        match region {
            Some(r) => (
                self.regional.get(r).unwrap_or(&self.global),
                Because::PopularIn(r.to_owned()),
            ),
            None => (&self.global, Because::Popular),
        }
    }
}

impl Recommender for ItemKnn {
    fn name(&self) -> String {
        format!("itemknn-k{}+pop", self.k)
    }

    fn recommend(&self, query: &Query<'_>) -> Vec<Scored> {
        if query.n == 0 {
            return Vec::new();
        }
        // Sorted ids for binary search: no hashing on the hot path.
        let mut seen: Vec<ItemIdx> = if query.exclude_seen {
            query.history.iter().map(|&(i, _)| i).collect()
        } else {
            Vec::new()
        };
        seen.sort_unstable();
        let is_seen = |i: ItemIdx| seen.binary_search(&i).is_ok();
        // (candidate, contribution, source item), aggregated by sorting on the candidate.
        let mut candidates: Vec<(ItemIdx, f32, ItemIdx)> = Vec::new();
        let mut add = |source: ItemIdx, weight: f32| {
            for &(j, sim) in self.neighbours(source) {
                if !is_seen(j) {
                    candidates.push((j, weight * sim, source));
                }
            }
        };
        for &(i, w) in query.history {
            add(i, w.max(0.0));
        }
        if query.history.is_empty() {
            if let Some(c) = query.context_item {
                add(c, 1.0);
            }
        }
        candidates.sort_unstable_by_key(|c| c.0);
        let mut out: Vec<Scored> = Vec::new();
        for group in candidates.chunk_by(|a, b| a.0 == b.0) {
            let score: f32 = group.iter().map(|c| c.1).sum();
            // The source that contributed most explains the item (ties: lowest id).
            let best = group
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.cmp(&a.2)))
                .map_or(group[0].2, |c| c.2);
            if score > 0.0 {
                out.push(Scored {
                    item: group[0].0,
                    score,
                    because: Because::SimilarTo(best),
                });
            }
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        out.truncate(query.n);
        if out.len() < query.n {
            // Top up with popular items, scored below every personal one.
            let floor = out.last().map_or(1.0, |s| s.score);
            let (list, because) = self.popular(query.region);
            let mut taken: Vec<ItemIdx> = out.iter().map(|s| s.item).collect();
            taken.sort_unstable();
            let personal = !out.is_empty();
            for &(item, pop) in list {
                if out.len() >= query.n {
                    break;
                }
                if is_seen(item)
                    || taken.binary_search(&item).is_ok()
                    || Some(item) == query.context_item
                {
                    continue;
                }
                let score = if personal {
                    floor * 0.5 * pop.min(1.0)
                } else {
                    pop
                };
                out.push(Scored {
                    item,
                    score,
                    because: because.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interaction;

    fn data() -> TrainingData {
        // Items 0 and 1 go together; 2 is popular in europe; 3 is liked in asia.
        let pairs: &[(u32, u32)] = &[
            (0, 0),
            (0, 1),
            (1, 0),
            (1, 1),
            (2, 0),
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 3),
        ];
        TrainingData {
            n_users: 6,
            n_items: 4,
            interactions: pairs
                .iter()
                .map(|&(user, item)| Interaction {
                    user,
                    item,
                    weight: 1.0,
                    timestamp: 0,
                })
                .collect(),
            item_text: Vec::new(),
            user_region: vec![
                Some("us-east".into()),
                Some("us-east".into()),
                Some("europe".into()),
                Some("europe".into()),
                Some("europe".into()),
                Some("asia".into()),
            ],
        }
    }

    #[test]
    fn items_bought_together_are_neighbours() {
        let m = ItemKnn::train(&data());
        assert_eq!(m.neighbours(1)[0].0, 0);
        assert!(m.neighbours(3).is_empty());
    }

    #[test]
    fn history_gives_similar_items_and_leaves_out_seen_ones() {
        let m = ItemKnn::train(&data());
        let recs = m.recommend(&Query {
            history: &[(1, 1.0)],
            n: 3,
            exclude_seen: true,
            context_item: None,
            region: Some("asia"),
        });
        assert_eq!(recs[0].item, 0);
        assert_eq!(recs[0].because, Because::SimilarTo(1));
        assert!(recs.iter().all(|s| s.item != 1));
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].because, Because::PopularIn("asia".into()));
    }

    #[test]
    fn cold_start_gets_the_regional_popular_list() {
        let m = ItemKnn::train(&data());
        let recs = m.recommend(&Query {
            history: &[],
            n: 2,
            exclude_seen: true,
            context_item: None,
            region: Some("europe"),
        });
        assert_eq!(recs[0].item, 2);
        assert_eq!(recs[0].because, Because::PopularIn("europe".into()));
        let asia = m.recommend(&Query {
            n: 1,
            region: Some("asia"),
            ..Default::default()
        });
        assert_eq!(asia[0].item, 3);
    }

    #[test]
    fn cold_start_with_context_gets_items_like_the_context() {
        let m = ItemKnn::train(&data());
        let recs = m.recommend(&Query {
            n: 1,
            context_item: Some(1),
            region: Some("europe"),
            ..Default::default()
        });
        assert_eq!(recs[0].item, 0);
        assert_eq!(recs[0].because, Because::SimilarTo(1));
    }

    #[test]
    fn each_item_keeps_at_most_k_neighbours_best_first() {
        let full = ItemKnn::train(&data());
        let one = ItemKnn::train_with_k(&data(), 1);
        for i in 0..4 {
            assert!(one.neighbours(i).len() <= 1);
            assert_eq!(one.neighbours(i).first(), full.neighbours(i).first());
            let n = full.neighbours(i);
            assert!(n.windows(2).all(|w| w[0].1 >= w[1].1));
        }
        assert_eq!(one.name(), "itemknn-k1+pop");
    }

    #[test]
    fn scores_are_descending() {
        let m = ItemKnn::train(&data());
        let recs = m.recommend(&Query {
            history: &[(0, 1.0)],
            n: 10,
            exclude_seen: true,
            region: Some("us-east"),
            ..Default::default()
        });
        assert!(recs.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
