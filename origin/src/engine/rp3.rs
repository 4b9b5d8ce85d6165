//! RP3beta (Paudel et al. 2017; tuned as in Dacrema et al. 2019): a three-step random walk
//! item → user → item with transition probabilities raised to `α` and the target item's
//! popularity divided out to the power `β`.
//!
//! With `X` the user-item matrix, `deg_u` and `deg_i` its row and column sums:
//! `W_ij = deg_i^−α · Σ_u x_ui · x_uj · deg_u^−α · deg_j^−β` (the walk
//! `P_iu^α · P_uj^α` with `P` row-normalised `X` and `Xᵀ`), `W_ii = 0`, and only the `k`
//! largest entries of every row kept. A user's scores are `x_u · W`. Training is one
//! weighted Gram matrix (`dense::gram`); the model is a dense `I × I` matrix.

use rayon::prelude::*;

use super::dense::{column_sums, gram, keep_top_k_per_row, row_sums, ItemItem};
use super::user_item_matrix;
use crate::model::TrainingData;

/// Trains RP3beta with walk exponent `alpha`, popularity penalty `beta` and `k`
/// neighbours per item (`k = 0` keeps every neighbour).
pub fn train(data: &TrainingData, alpha: f32, beta: f32, k: usize) -> ItemItem {
    let n = data.n_items;
    let x = user_item_matrix(data);
    let xt = x.transpose();
    let du: Vec<f32> = row_sums(&x)
        .into_iter()
        .map(|d| if d > 0.0 { d.powf(-alpha) } else { 0.0 })
        .collect();
    let di = column_sums(&x);
    let g = gram(&x, &xt, Some(&du), false);
    drop((x, xt));
    let pow = |d: f32, e: f32| if d > 0.0 { d.powf(-e) } else { 0.0 };
    let row_scale: Vec<f32> = di.iter().map(|&d| pow(d, alpha)).collect();
    let col_scale: Vec<f32> = di.iter().map(|&d| pow(d, beta)).collect();
    let mut w = vec![0f32; n * n];
    w.par_chunks_mut(n.max(1)).enumerate().for_each(|(h, row)| {
        // G is symmetric: row h of G is column h.
        let gcol = g.col_as_slice(h);
        for (j, out) in row.iter_mut().enumerate() {
            *out = if j == h {
                0.0
            } else {
                row_scale[h] * gcol[j] * col_scale[j]
            };
        }
    });
    drop(g);
    if k > 0 {
        keep_top_k_per_row(&mut w, n, k);
    }
    ItemItem::new(format!("rp3beta-a{alpha}-b{beta}-k{k}"), n, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Scorer;
    use crate::model::Interaction;

    #[test]
    fn walk_weights_match_a_hand_computation() {
        // u0 = {0, 1}, u1 = {1, 2}: deg_u = 2, 2; deg_i = 1, 2, 1. α = 1, β = 1:
        // W_01 = deg_0^−1 · (x_00 x_01 / deg_u0) · deg_1^−1 = 1 · (1/2) · (1/2) = 0.25;
        // W_10 = (1/2) · (1/2) · 1 = 0.25; W_12 = (1/2)(1/2)(1) = 0.25; W_02 = 0.
        let x = |user, item| Interaction {
            user,
            item,
            weight: 1.0,
            timestamp: 0,
        };
        let data = TrainingData {
            n_users: 2,
            n_items: 3,
            interactions: vec![x(0, 0), x(0, 1), x(1, 1), x(1, 2)],
            ..TrainingData::default()
        };
        let m = train(&data, 1.0, 1.0, 0);
        assert_eq!(m.weight(0, 1), 0.25);
        assert_eq!(m.weight(1, 0), 0.25);
        assert_eq!(m.weight(1, 2), 0.25);
        assert_eq!(m.weight(0, 2), 0.0);
        assert_eq!(m.weight(1, 1), 0.0);
        // β = 0 leaves the target's popularity in: W_01 = 1 · (1/2) · 1 = 0.5.
        assert_eq!(train(&data, 1.0, 0.0, 0).weight(0, 1), 0.5);
        let mut out = vec![0.0; 3];
        m.score(&[(0, 1.0)], None, &mut out);
        assert_eq!(out, vec![0.0, 0.25, 0.0]);
        assert_eq!(m.name(), "rp3beta-a1-b1-k0");
    }
}
