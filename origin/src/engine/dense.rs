//! Dense item-item models: a row-major `I × I` weight matrix `W`, scores `x_u · W`.
//!
//! EASE, DLAE, RP3beta and the graph filters all end as such a matrix; they differ only in
//! how `W` is computed. This module holds what they share: the (weighted) Gram matrix
//! `Xᵀ·diag(w_u)·X` built in parallel from the sparse interactions, the scoring loop (four
//! rows of `W` per pass over the output), and the explanation (the history item with the
//! largest contribution). `W` costs `4·I²` bytes (55 MB at 3,700 items).

use faer::Mat;
use rayon::prelude::*;

use super::itemknn::best_contributor;
use super::{Csr, Scorer};
use crate::model::{Because, ItemIdx};

/// `Xᵀ·diag(user_weight)·X` as a dense `I × I` matrix (`x` users as rows, `xt` its
/// transpose). With `lower`, only entries `(i, j)` with `i ≥ j` are filled (all a Cholesky
/// factorisation reads); otherwise the full symmetric matrix.
pub fn gram(x: &Csr, xt: &Csr, user_weight: Option<&[f32]>, lower: bool) -> Mat<f32> {
    let n = x.n_cols();
    let mut g = Mat::<f32>::zeros(n, n);
    g.par_col_iter_mut().enumerate().for_each(|(j, col)| {
        let col = col
            .try_as_col_major_mut()
            .expect("owned columns are contiguous")
            .as_slice_mut();
        for (u, xuj) in xt.row_iter(j) {
            let wu = user_weight.map_or(1.0, |w| w[u as usize]);
            let (items, weights) = x.row(u as usize);
            let start = if lower {
                items.partition_point(|&i| (i as usize) < j)
            } else {
                0
            };
            for (&i, &xui) in items[start..].iter().zip(&weights[start..]) {
                col[i as usize] += xuj * xui * wu;
            }
        }
    });
    g
}

/// Sum of every column of `x` (an item's total interaction weight, its degree).
pub fn column_sums(x: &Csr) -> Vec<f32> {
    let mut out = vec![0f32; x.n_cols()];
    for r in 0..x.n_rows() {
        for (c, v) in x.row_iter(r) {
            out[c as usize] += v;
        }
    }
    out
}

/// Sum of every row of `x` (a user's total interaction weight).
pub fn row_sums(x: &Csr) -> Vec<f32> {
    (0..x.n_rows()).map(|r| x.row(r).1.iter().sum()).collect()
}

/// Adds `Σ_h w_h · W[h, ·]` over `history` into `out` (`w` row-major `n × n`); history
/// items outside `0..n` are ignored. Four rows per pass: a quarter of the loads and stores
/// of `out`, and four independent streams of `W` for the prefetcher.
pub fn add_rows(w: &[f32], n: usize, history: &[(ItemIdx, f32)], out: &mut [f32]) {
    let row = |h: ItemIdx| &w[h as usize * n..(h as usize + 1) * n];
    let valid: &mut dyn Iterator<Item = &(ItemIdx, f32)> =
        &mut history.iter().filter(|(h, _)| (*h as usize) < n);
    loop {
        let batch: [Option<&(ItemIdx, f32)>; 4] =
            [valid.next(), valid.next(), valid.next(), valid.next()];
        match batch {
            [Some(&(h0, w0)), Some(&(h1, w1)), Some(&(h2, w2)), Some(&(h3, w3))] => {
                let (r0, r1, r2, r3) = (row(h0), row(h1), row(h2), row(h3));
                for ((((o, a), b), c), d) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                    *o += w0 * a + w1 * b + w2 * c + w3 * d;
                }
            }
            rest => {
                for &(h, wh) in rest.into_iter().flatten() {
                    for (o, b) in out.iter_mut().zip(row(h)) {
                        *o += wh * b;
                    }
                }
                break;
            }
        }
    }
}

/// Keeps the `k` largest entries of every row of the row-major `n × n` matrix `w`,
/// zeroing the rest (ties broken by column index, so the result is deterministic).
pub fn keep_top_k_per_row(w: &mut [f32], n: usize, k: usize) {
    if k >= n || n == 0 {
        return;
    }
    w.par_chunks_mut(n).for_each(|row| {
        let mut idx: Vec<(u32, f32)> = row
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u32, v))
            .collect();
        super::rank::keep_largest(&mut idx, k);
        row.iter_mut().for_each(|v| *v = 0.0);
        for (i, v) in idx {
            row[i as usize] = v;
        }
    });
}

/// A dense item-item model: `W` row-major and the name it answers to.
pub struct ItemItem {
    name: String,
    n: usize,
    w: Vec<f32>,
}

impl ItemItem {
    /// `w` is row-major `n × n`, `w.len() == n * n`.
    pub fn new(name: String, n: usize, w: Vec<f32>) -> ItemItem {
        debug_assert_eq!(w.len(), n * n);
        ItemItem { name, n, w }
    }

    /// `W[h, j]`.
    pub fn weight(&self, h: ItemIdx, j: ItemIdx) -> f32 {
        self.w[h as usize * self.n + j as usize]
    }
}

impl Scorer for ItemItem {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn n_items(&self) -> usize {
        self.n
    }

    fn score(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, out: &mut [f32]) {
        add_rows(&self.w, self.n, history, out);
    }

    fn heap_bytes(&self) -> usize {
        self.w.len() * 4
    }

    fn because(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, item: ItemIdx) -> Because {
        best_contributor(history, |h| {
            ((h as usize) < self.n && (item as usize) < self.n).then(|| self.weight(h, item))
        })
        .map_or(Because::Popular, Because::SimilarTo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weighted_gram_matrix_and_row_scores_match_a_hand_computation() {
        // users × items: u0 = {0, 1}, u1 = {1, 2}; user weights 2 and 1.
        let x = Csr::from_triplets(2, 3, [(0, 0, 1.0), (0, 1, 1.0), (1, 1, 1.0), (1, 2, 1.0)]);
        let g = gram(&x, &x.transpose(), Some(&[2.0, 1.0]), false);
        // G = [[2,2,0],[2,3,1],[0,1,1]].
        let want = [[2.0, 2.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 1.0]];
        for (i, row) in want.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert_eq!(g[(i, j)], *v, "({i},{j})");
            }
        }
        let lower = gram(&x, &x.transpose(), None, true);
        assert_eq!((lower[(1, 0)], lower[(0, 1)]), (1.0, 0.0));
        // five history rows exercise the four-row pass and the remainder.
        let w: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let mut out = vec![0.0; 3];
        add_rows(
            &w,
            3,
            &[(0, 1.0), (1, 1.0), (2, 1.0), (0, 1.0), (2, 2.0), (7, 1.0)],
            &mut out,
        );
        // rows: r0 = [0,1,2], r1 = [3,4,5], r2 = [6,7,8]; 2·r0 + r1 + 3·r2.
        assert_eq!(out, vec![21.0, 27.0, 33.0]);
        let mut m = vec![3.0, 1.0, 2.0, 0.0, 5.0, 5.0, 1.0, 1.0, 1.0];
        keep_top_k_per_row(&mut m, 3, 1);
        assert_eq!(m, vec![3.0, 0.0, 0.0, 0.0, 5.0, 0.0, 1.0, 0.0, 0.0]);
    }
}
