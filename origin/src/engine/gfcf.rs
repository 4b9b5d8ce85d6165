//! Closed-form graph filters (GF-CF, Shen et al. 2021; the sharpening step of BSPM, Choi
//! et al. 2023; Turbo-CF-style polynomial filters, Park et al. 2024): item-item filters on
//! the normalised interaction graph that match trained graph models without training.
//!
//! With `R` the user-item matrix and `D_u`, `D_i` its row and column sums, the normalised
//! item-item matrix is `P̃ = D_i^−½ Rᵀ D_u^−1 R D_i^−½` (eigenvalues in `[0, 1]`). The filter
//! is `W = P̃ + α · D_i^−½ V Vᵀ D_i^½ − s · P̃²`, where `V` holds the `k` leading eigenvectors
//! of `P̃` (the ideal low-pass part of GF-CF, found by seeded subspace iteration) and
//! `s · P̃²` the sharpening term. A user's scores are `r_u · W`, a dense `I × I` matrix.
//! Cost: one weighted Gram matrix, `iters` products `P̃ · Q` with `Q` of `k + 16` columns,
//! and one `I × I × I` product when `s > 0`.

use faer::{Mat, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::dense::{column_sums, gram, row_sums, ItemItem};
use super::user_item_matrix;
use crate::model::TrainingData;

/// Subspace-iteration passes for the low-pass part.
const ITERS: usize = 8;
/// Extra columns carried by the subspace iteration (they speed up convergence).
const OVERSAMPLE: usize = 16;

/// Parameters of [`train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphFilter {
    /// Weight of the ideal low-pass part.
    pub alpha: f32,
    /// Rank of the ideal low-pass part (0 turns it off).
    pub k: usize,
    /// Weight of the sharpening term `P̃²` (subtracted).
    pub sharpen: f32,
    /// Seed of the subspace iteration's start.
    pub seed: u64,
}

/// The `k` leading eigenvectors of the symmetric `p` (`n × k`, column-major).
fn leading_eigenvectors(p: &Mat<f32>, k: usize, seed: u64) -> Mat<f32> {
    let n = p.nrows();
    let m = (k + OVERSAMPLE).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut q = Mat::<f32>::from_fn(n, m, |_, _| rng.gen::<f32>() - 0.5);
    for _ in 0..ITERS {
        let y = p * &q;
        q = y.qr().compute_thin_Q();
    }
    // Rayleigh-Ritz: the eigenvectors of Qᵀ P Q, mapped back.
    let pq = p * &q;
    let t = q.transpose() * &pq;
    let Ok(eig) = t.self_adjoint_eigen(Side::Lower) else {
        return Mat::zeros(n, 0);
    };
    // Eigenvalues ascend: the last k columns are the leading ones.
    let u = eig.U();
    let take = k.min(m);
    let lead = u.subcols(m - take, take);
    &q * lead
}

/// Trains the filter on `data`.
pub fn train(data: &TrainingData, f: GraphFilter) -> ItemItem {
    let n = data.n_items;
    let x = user_item_matrix(data);
    let xt = x.transpose();
    let inv = |d: f32, e: f32| if d > 0.0 { d.powf(-e) } else { 0.0 };
    let du: Vec<f32> = row_sums(&x).into_iter().map(|d| inv(d, 1.0)).collect();
    let di = column_sums(&x);
    let mut p = gram(&x, &xt, Some(&du), false);
    drop((x, xt));
    let di_half: Vec<f32> = di.iter().map(|&d| inv(d, 0.5)).collect();
    p.par_col_iter_mut().enumerate().for_each(|(j, col)| {
        for (i, v) in col.iter_mut().enumerate() {
            *v *= di_half[i] * di_half[j];
        }
    });
    let lowpass = (f.alpha != 0.0 && f.k > 0 && n > 0).then(|| {
        let v = leading_eigenvectors(&p, f.k, f.seed);
        &v * v.transpose()
    });
    let squared = (f.sharpen != 0.0 && n > 0).then(|| &p * &p);
    let mut w = vec![0f32; n * n];
    w.par_chunks_mut(n.max(1)).enumerate().for_each(|(h, row)| {
        // Every matrix here is symmetric: row h is column h.
        let pc = p.col_as_slice(h);
        let lc = lowpass.as_ref().map(|l| l.col_as_slice(h));
        let sc = squared.as_ref().map(|s| s.col_as_slice(h));
        for (j, out) in row.iter_mut().enumerate() {
            if j == h {
                continue;
            }
            let mut v = pc[j];
            if let Some(l) = lc {
                // D_i^−½ V Vᵀ D_i^½: row h scaled by d_h^−½, column j by d_j^½.
                let dj = if di_half[j] > 0.0 {
                    1.0 / di_half[j]
                } else {
                    0.0
                };
                v += f.alpha * di_half[h] * l[j] * dj;
            }
            if let Some(s) = sc {
                v -= f.sharpen * s[j];
            }
            *out = v;
        }
    });
    ItemItem::new(format!("gfcf-a{}-k{}-s{}", f.alpha, f.k, f.sharpen), n, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interaction;

    fn filter(alpha: f32, k: usize, sharpen: f32, seed: u64) -> GraphFilter {
        GraphFilter {
            alpha,
            k,
            sharpen,
            seed,
        }
    }

    fn data() -> TrainingData {
        let x = |user, item| Interaction {
            user,
            item,
            weight: 1.0,
            timestamp: 0,
        };
        TrainingData {
            n_users: 2,
            n_items: 3,
            interactions: vec![x(0, 0), x(0, 1), x(1, 1), x(1, 2)],
            ..TrainingData::default()
        }
    }

    #[test]
    fn the_linear_filter_is_the_normalised_item_graph() {
        // u0 = {0, 1}, u1 = {1, 2}: D_u = 2, 2; D_i = 1, 2, 1.
        // P̃_01 = (1/2) / sqrt(1·2) = 0.353553; P̃_12 the same; P̃_02 = 0.
        let m = train(&data(), filter(0.0, 0, 0.0, 1));
        assert!((m.weight(0, 1) - 0.353553).abs() < 1e-5);
        assert!((m.weight(1, 2) - 0.353553).abs() < 1e-5);
        assert_eq!(m.weight(0, 2), 0.0);
        // Sharpening subtracts s · P̃²: (P̃²)_02 = P̃_01 · P̃_12 = 0.125.
        let s = train(&data(), filter(0.0, 0, 1.0, 1));
        assert!((s.weight(0, 2) + 0.125).abs() < 1e-5);
    }

    #[test]
    fn the_low_pass_part_recovers_the_leading_eigenvector() {
        // P̃ = [[.5, .3536, 0], [.3536, .5, .3536], [0, .3536, .5]] (diagonal: 1/2, 2/4, 1/2).
        // Its leading eigenvalue is 1 with eigenvector ∝ D_i^½ = (1, √2, 1)/2, so the rank-1
        // low-pass part adds α · d_h^−½ · v_h v_j · d_j^½ = α · d_j / 4:
        // W_01 = 0.353553 + 1 · (2 / 4) = 0.853553 with α = 1, k = 1.
        let m = train(&data(), filter(1.0, 1, 0.0, 7));
        assert!(
            (m.weight(0, 1) - 0.853553).abs() < 1e-4,
            "{}",
            m.weight(0, 1)
        );
        assert!((m.weight(1, 0) - (0.353553 + 0.25)).abs() < 1e-4);
        // deterministic under the seed
        let again = train(&data(), filter(1.0, 1, 0.0, 7));
        assert_eq!(m.weight(0, 1), again.weight(0, 1));
    }
}
