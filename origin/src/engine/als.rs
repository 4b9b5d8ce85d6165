//! Weighted implicit ALS (Hu, Koren & Volinsky 2008) solved by conjugate gradient
//! (Takács et al. 2011), the `implicit` library's default.
//!
//! Every observed pair gets confidence `c_ui = 1 + α·x_ui` against preference 1; unobserved
//! pairs have confidence 1 and preference 0. User and item factors (`f` each) alternate,
//! each row solving `(YᵀY + λI + Σ_i (c_ui − 1) y_i y_iᵀ) x_u = Σ_i c_ui y_i` by `CG_STEPS`
//! conjugate-gradient steps warm-started from its previous value, all rows in parallel
//! (each row is independent, so the result does not depend on the thread count). Factors
//! start from a seeded uniform draw in `[0, 0.01)`.
//!
//! A query folds its history in exactly (one `f × f` Cholesky solve with the trained item
//! factors), so a user's answer depends only on their history, never on stored state.
//! Memory: `4·f·(U + I)` bytes during training, `4·f·I` kept.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{user_item_matrix, Csr, Scorer};
use crate::model::{Because, ItemIdx, TrainingData};

/// Conjugate-gradient steps per row and sweep.
const CG_STEPS: usize = 3;

/// Parameters of [`Als::train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlsParams {
    pub factors: usize,
    /// L2 regularisation `λ`.
    pub reg: f32,
    /// Confidence scale `α`.
    pub alpha: f32,
    pub iterations: usize,
    pub seed: u64,
}

pub struct Als {
    p: AlsParams,
    n_items: usize,
    /// Item factors, row-major `I × f`.
    items: Vec<f32>,
    /// `YᵀY + λI`, row-major `f × f`.
    gram: Vec<f32>,
}

/// Dot product in eight lanes (so the compiler vectorises it; the order is fixed, so the
/// result is deterministic).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `YᵀY + λI` of row-major factors `y` (`f` columns).
fn gram(y: &[f32], f: usize, reg: f32) -> Vec<f32> {
    let partial = y
        .par_chunks(f * 256)
        .map(|block| {
            let mut g = vec![0f32; f * f];
            for row in block.chunks(f) {
                for (a, &ra) in row.iter().enumerate() {
                    let ga = &mut g[a * f..(a + 1) * f];
                    for (o, &rb) in ga.iter_mut().zip(row) {
                        *o += ra * rb;
                    }
                }
            }
            g
        })
        .collect::<Vec<_>>();
    let mut g = vec![0f32; f * f];
    for p in partial {
        for (o, v) in g.iter_mut().zip(p) {
            *o += v;
        }
    }
    for a in 0..f {
        g[a * f + a] += reg;
    }
    g
}

/// One sweep: every row of `x` (rows of `m` against the fixed factors `y`) by CG.
fn sweep(m: &Csr, y: &[f32], x: &mut [f32], f: usize, p: &AlsParams) {
    let yty = gram(y, f, p.reg);
    x.par_chunks_mut(f).enumerate().for_each(|(u, xu)| {
        let (cols, vals) = m.row(u);
        let mut ap = vec![0f32; f];
        let apply = |v: &[f32], out: &mut [f32]| {
            for (a, o) in out.iter_mut().enumerate() {
                *o = dot(&yty[a * f..(a + 1) * f], v);
            }
            for (&i, &w) in cols.iter().zip(vals) {
                let yi = &y[i as usize * f..(i as usize + 1) * f];
                let c = p.alpha * w * dot(yi, v);
                for (o, &b) in out.iter_mut().zip(yi) {
                    *o += c * b;
                }
            }
        };
        // r = b − A x with b = Σ c_ui y_i.
        apply(xu, &mut ap);
        let mut r: Vec<f32> = ap.iter().map(|v| -v).collect();
        for (&i, &w) in cols.iter().zip(vals) {
            let yi = &y[i as usize * f..(i as usize + 1) * f];
            let c = 1.0 + p.alpha * w;
            for (o, &b) in r.iter_mut().zip(yi) {
                *o += c * b;
            }
        }
        let mut dir = r.clone();
        let mut rs = dot(&r, &r);
        for _ in 0..CG_STEPS {
            if rs < 1e-20 {
                break;
            }
            apply(&dir, &mut ap);
            let step = rs / dot(&dir, &ap);
            for ((xv, d), (rv, a)) in xu.iter_mut().zip(&dir).zip(r.iter_mut().zip(&ap)) {
                *xv += step * d;
                *rv -= step * a;
            }
            let next = dot(&r, &r);
            for (d, rv) in dir.iter_mut().zip(&r) {
                *d = rv + (next / rs) * *d;
            }
            rs = next;
        }
    });
}

impl Als {
    pub fn train(data: &TrainingData, p: AlsParams) -> Als {
        let f = p.factors.max(1);
        let p = AlsParams { factors: f, ..p };
        let m = user_item_matrix(data);
        let mt = m.transpose();
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let mut users: Vec<f32> = (0..data.n_users * f)
            .map(|_| rng.gen::<f32>() * 0.01)
            .collect();
        let mut items: Vec<f32> = (0..data.n_items * f)
            .map(|_| rng.gen::<f32>() * 0.01)
            .collect();
        for _ in 0..p.iterations {
            sweep(&m, &items, &mut users, f, &p);
            sweep(&mt, &users, &mut items, f, &p);
        }
        let gram = gram(&items, f, p.reg);
        Als {
            p,
            n_items: data.n_items,
            items,
            gram,
        }
    }

    fn item(&self, i: ItemIdx) -> &[f32] {
        let f = self.p.factors;
        &self.items[i as usize * f..(i as usize + 1) * f]
    }

    /// The exact user factor for `history`: `(YᵀY + λI + Σ α w y yᵀ)⁻¹ Σ (1 + α w) y`.
    pub fn fold_in(&self, history: &[(ItemIdx, f32)]) -> Vec<f32> {
        let f = self.p.factors;
        let mut a = self.gram.clone();
        let mut b = vec![0f32; f];
        for &(i, w) in history.iter().filter(|(i, _)| (*i as usize) < self.n_items) {
            let yi = self.item(i);
            let c = self.p.alpha * w;
            for (r, &yr) in yi.iter().enumerate() {
                b[r] += (1.0 + c) * yr;
                let cy = c * yr;
                for (o, &ys) in a[r * f..(r + 1) * f].iter_mut().zip(yi) {
                    *o += cy * ys;
                }
            }
        }
        let m = Mat::<f32>::from_fn(f, f, |r, c| a[r * f + c]);
        let rhs = Mat::<f32>::from_fn(f, 1, |r, _| b[r]);
        match m.llt(Side::Lower) {
            Ok(llt) => {
                let x = llt.solve(&rhs);
                (0..f).map(|r| x[(r, 0)]).collect()
            }
            Err(_) => vec![0.0; f],
        }
    }
}

impl Scorer for Als {
    fn name(&self) -> String {
        format!(
            "als-f{}-r{}-a{}-i{}",
            self.p.factors, self.p.reg, self.p.alpha, self.p.iterations
        )
    }

    fn n_items(&self) -> usize {
        self.n_items
    }

    fn score(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, out: &mut [f32]) {
        if history.is_empty() {
            return;
        }
        let x = self.fold_in(history);
        for (o, yi) in out.iter_mut().zip(self.items.chunks(self.p.factors)) {
            *o += dot(&x, yi);
        }
    }

    fn heap_bytes(&self) -> usize {
        (self.items.len() + self.gram.len()) * 4
    }

    fn because(&self, history: &[(ItemIdx, f32)], _region: Option<&str>, item: ItemIdx) -> Because {
        if item as usize >= self.n_items {
            return Because::Popular;
        }
        let target = self.item(item);
        super::itemknn::best_contributor(history, |h| {
            ((h as usize) < self.n_items).then(|| dot(self.item(h), target))
        })
        .map_or(Because::Popular, Because::SimilarTo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::itemknn::tests::tiny;
    use crate::model::Interaction;

    fn groups() -> TrainingData {
        // Users 0-2 like items 0-2, users 3-5 like items 3-5; user 0 lacks item 2.
        let mut interactions = Vec::new();
        for u in 0..6u32 {
            let base = if u < 3 { 0 } else { 3 };
            for i in base..base + 3 {
                if (u, i) != (0, 2) {
                    interactions.push(Interaction {
                        user: u,
                        item: i,
                        weight: 1.0,
                        timestamp: 0,
                    });
                }
            }
        }
        TrainingData {
            n_users: 6,
            n_items: 6,
            interactions,
            ..TrainingData::default()
        }
    }

    fn params(seed: u64) -> AlsParams {
        AlsParams {
            factors: 4,
            reg: 0.1,
            alpha: 10.0,
            iterations: 10,
            seed,
        }
    }

    #[test]
    fn als_ranks_the_missing_item_of_a_users_group_first_and_is_deterministic() {
        let m = Als::train(&groups(), params(3));
        let mut out = vec![0.0; 6];
        m.score(&[(0, 1.0), (1, 1.0)], None, &mut out);
        let best = (2..6).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
        assert_eq!(best, 2, "{out:?}");
        let again = Als::train(&groups(), params(3));
        assert_eq!(m.items, again.items);
        assert_eq!(m.name(), "als-f4-r0.1-a10-i10");
    }

    #[test]
    fn fold_in_solves_the_normal_equations() {
        let m = Als::train(&tiny(), params(1));
        let h = [(0u32, 1.0f32), (2, 1.0)];
        let x = m.fold_in(&h);
        // A x = b with A = YᵀY + λI + Σ α y yᵀ and b = Σ (1 + α) y.
        let f = 4;
        for r in 0..f {
            let mut ax: f32 = (0..f).map(|s| m.gram[r * f + s] * x[s]).sum();
            let mut b = 0.0;
            for &(i, _) in &h {
                let y = m.item(i);
                ax += 10.0 * y[r] * dot(y, &x);
                b += 11.0 * y[r];
            }
            assert!(
                (ax - b).abs() < 1e-3 * b.abs().max(1.0),
                "row {r}: {ax} vs {b}"
            );
        }
    }
}
