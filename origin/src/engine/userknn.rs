//! User-based collaborative filtering: cosine over the sparse user-item matrix.
//!
//! Per query, the history's cosine to every training user is accumulated through the
//! item→users index (cost: the sum of the history items' degrees), the `k` closest users
//! are kept, and item `i` scores `Σ_v sim(q, v) · x_vi`. Nothing is precomputed beyond
//! the matrix and its transpose, so training is instant and memory is `O(N)`.
//!
//! Users whose history is identical to the query (cosine 1, e.g. the querying user's own
//! training row) are skipped: they could only add items the user has already seen.

use std::cell::RefCell;

use super::{rank, user_item_matrix, Csr, Scorer};
use crate::model::{Because, ItemIdx, TrainingData};

thread_local! {
    static NEIGHBOURS: RefCell<Vec<(u32, f32)>> = const { RefCell::new(Vec::new()) };
}

pub struct UserKnn {
    k: usize,
    x: Csr,
    xt: Csr,
    user_norms: Vec<f32>,
}

impl UserKnn {
    pub fn train(data: &TrainingData, k: usize) -> UserKnn {
        let x = user_item_matrix(data);
        let xt = x.transpose();
        let user_norms = x.row_norms();
        UserKnn {
            k,
            x,
            xt,
            user_norms,
        }
    }
}

impl Scorer for UserKnn {
    fn name(&self) -> String {
        format!("userknn-k{}", self.k)
    }

    fn n_items(&self) -> usize {
        self.xt.n_rows()
    }

    fn score(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, out: &mut [f32]) {
        let q_norm = history.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if q_norm == 0.0 {
            return;
        }
        rank::with_buffer(self.x.n_rows(), |dots| {
            for &(h, w) in history {
                if (h as usize) < self.xt.n_rows() {
                    for (u, x) in self.xt.row_iter(h as usize) {
                        dots[u as usize] += w * x;
                    }
                }
            }
            NEIGHBOURS.with(|nb| {
                let mut nb = nb.borrow_mut();
                nb.clear();
                nb.extend(
                    dots.iter()
                        .enumerate()
                        .filter(|(_, d)| **d > 0.0)
                        .map(|(u, d)| (u as u32, d / (q_norm * self.user_norms[u])))
                        .filter(|(_, sim)| *sim < 1.0 - 1e-5),
                );
                rank::keep_largest(&mut nb, self.k);
                for &(v, sim) in nb.iter() {
                    for (i, x) in self.x.row_iter(v as usize) {
                        out[i as usize] += sim * x;
                    }
                }
            });
        });
    }

    fn heap_bytes(&self) -> usize {
        self.x.heap_bytes() + self.xt.heap_bytes() + self.user_norms.len() * 4
    }

    fn because(
        &self,
        _history: &[(ItemIdx, f32)],
        _region: Option<&str>,
        _item: ItemIdx,
    ) -> Because {
        Because::SimilarUsers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::itemknn::tests::tiny;

    #[test]
    fn scores_come_from_the_closest_users_other_than_an_identical_one() {
        let m = UserKnn::train(&tiny(), 1);
        let mut out = vec![0.0; 4];
        // history {1,2} is user 2 exactly (cosine 1, skipped); next are users 0 and 1
        // (items {0,1}): cosine 1/(√2·√2) = 0.5, k = 1 keeps user 0 (ties by index).
        m.score(&[(1, 1.0), (2, 1.0)], None, &mut out);
        assert!((out[0] - 0.5).abs() < 1e-6 && (out[1] - 0.5).abs() < 1e-6);
        assert_eq!((out[2], out[3]), (0.0, 0.0));
        let m = UserKnn::train(&tiny(), 3);
        let mut out = vec![0.0; 4];
        m.score(&[(2, 1.0)], None, &mut out);
        // only user 2 viewed item 2: cosine 1/(1·√2) = 0.7071 to items 1 and 2.
        assert!((out[1] - 0.5f32.sqrt()).abs() < 1e-6);
        assert_eq!(out[0], 0.0);
    }
}
