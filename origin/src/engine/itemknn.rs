//! Item-based collaborative filtering: item-item cosine with shrinkage.
//!
//! `sim(i, j) = x_i · x_j / (‖x_i‖ ‖x_j‖ + shrink)` over item columns of the user-item
//! matrix; each item keeps its `k` most similar items. A user's score for `j` is
//! `Σ_h w_h · sim(h, j)` over the history. Training walks each item's users and their items
//! (cost `Σ_u deg(u)²`), in parallel with one dense accumulator per thread.

use rayon::prelude::*;

use super::{rank, user_item_matrix, Csr, Scorer};
use crate::model::{Because, ItemIdx, TrainingData};

/// Top-k neighbour lists per item.
pub struct ItemKnn {
    k: usize,
    shrink: f32,
    /// Row `i`: the neighbours of item `i`, sorted by item index.
    neighbours: Csr,
}

impl ItemKnn {
    pub fn train(data: &TrainingData, k: usize, shrink: f32) -> ItemKnn {
        let x = user_item_matrix(data);
        let xt = x.transpose();
        let neighbours = Csr::from_rows(data.n_items, similar_items(&x, &xt, k, shrink));
        ItemKnn {
            k,
            shrink,
            neighbours,
        }
    }

    /// The neighbour lists (row per item, sorted by item index).
    pub fn neighbours(&self) -> &Csr {
        &self.neighbours
    }
}

/// For every row of `xt` (items), its `k` most cosine-similar rows, sorted by index.
/// `x` is the transpose of `xt` (users as rows).
pub(crate) fn similar_items(x: &Csr, xt: &Csr, k: usize, shrink: f32) -> Vec<Vec<(u32, f32)>> {
    let n = xt.n_rows();
    let norms = xt.row_norms();
    (0..n)
        .into_par_iter()
        .map_init(
            || (vec![0f32; n], Vec::<u32>::new()),
            |(acc, touched), i| {
                for (u, xui) in xt.row_iter(i) {
                    for (j, xuj) in x.row_iter(u as usize) {
                        let a = &mut acc[j as usize];
                        if *a == 0.0 {
                            touched.push(j);
                        }
                        *a += xui * xuj;
                    }
                }
                let mut row: Vec<(u32, f32)> = Vec::with_capacity(touched.len());
                for &j in touched.iter() {
                    let dot = std::mem::take(&mut acc[j as usize]);
                    if j as usize != i && dot > 0.0 {
                        row.push((j, dot / (norms[i] * norms[j as usize] + shrink)));
                    }
                }
                touched.clear();
                rank::keep_largest(&mut row, k);
                row.sort_unstable_by_key(|p| p.0);
                row.shrink_to_fit();
                row
            },
        )
        .collect()
}

impl Scorer for ItemKnn {
    fn name(&self) -> String {
        format!("itemknn-k{}-s{}", self.k, self.shrink)
    }

    fn n_items(&self) -> usize {
        self.neighbours.n_rows()
    }

    fn score(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, out: &mut [f32]) {
        for &(h, w) in history {
            if (h as usize) < self.neighbours.n_rows() {
                for (j, s) in self.neighbours.row_iter(h as usize) {
                    out[j as usize] += w * s;
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.neighbours.heap_bytes()
    }

    fn because(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, item: ItemIdx) -> Because {
        best_contributor(history, |h| {
            if (h as usize) < self.neighbours.n_rows() {
                self.neighbours.get(h as usize, item)
            } else {
                None
            }
        })
        .map_or(Because::Popular, Because::SimilarTo)
    }
}

/// The history item with the largest `w · sim(h)`.
pub(crate) fn best_contributor(
    history: &[(ItemIdx, f32)],
    sim: impl Fn(ItemIdx) -> Option<f32>,
) -> Option<ItemIdx> {
    history
        .iter()
        .filter_map(|&(h, w)| sim(h).map(|s| (h, w * s)))
        .filter(|(_, c)| *c > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(h, _)| h)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Interaction;

    pub(crate) fn tiny() -> TrainingData {
        // users 0,1 view items {0,1}; user 2 views {1,2}; user 3 views {3}.
        let pairs = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2), (3, 3)];
        TrainingData {
            n_users: 4,
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
            item_text: vec![],
            user_region: vec![],
            user_weight: Vec::new(),
        }
    }

    #[test]
    fn cosine_with_shrinkage_matches_hand_computation() {
        let m = ItemKnn::train(&tiny(), 10, 1.0);
        // item 0 = users {0,1}, item 1 = users {0,1,2}: dot 2, norms √2·√3 = 2.449;
        // sim = 2 / (2.449 + 1) = 0.5798.
        let s = m.neighbours().get(0, 1).unwrap();
        assert!((s - 2.0 / (6f32.sqrt() + 1.0)).abs() < 1e-6);
        // item 3 shares no user with anyone.
        assert_eq!(m.neighbours().row(3).0.len(), 0);
    }

    #[test]
    fn scores_follow_neighbours_of_the_history() {
        let m = ItemKnn::train(&tiny(), 10, 0.0);
        let mut out = vec![0.0; 4];
        m.score(&[(0, 1.0)], None, &mut out);
        // from item 0: item 1 at 2/√6 = 0.816, item 2 not a neighbour of 0.
        assert!((out[1] - 2.0 / 6f32.sqrt()).abs() < 1e-6);
        assert_eq!(out[2], 0.0);
        assert_eq!(m.because(&[(0, 1.0)], None, 1), Because::SimilarTo(0));
    }
}
