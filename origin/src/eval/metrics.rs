//! Top-K ranking metrics with binary relevance.
//!
//! For one user with ranked list `r` (best first) and relevant set `T`:
//! - Precision@K = |top-K ∩ T| / K
//! - Recall@K = |top-K ∩ T| / |T|
//! - NDCG@K = DCG / IDCG with DCG = Σ_{rank p ≤ K, r_p ∈ T} 1 / log2(p + 1) and IDCG the
//!   DCG of a perfect list, over `min(K, |T|)` hits
//! - AP@K = Σ_{p ≤ K, r_p ∈ T} Precision@p / min(K, |T|); MAP@K is its mean
//!
//! Averages are over users with at least one relevant item. Coverage is the share of the
//! catalogue that appears in at least one user's top K.

use serde::Serialize;

use crate::model::ItemIdx;

/// Metrics of one user's list.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UserMetrics {
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub ap: f64,
}

/// Scores `ranked` (best first, only the first `k` count) against `relevant` (sorted,
/// deduplicated, non-empty).
pub fn user_metrics(ranked: &[ItemIdx], relevant: &[ItemIdx], k: usize) -> UserMetrics {
    if relevant.is_empty() || k == 0 {
        return UserMetrics::default();
    }
    let (mut hits, mut dcg, mut ap_sum) = (0usize, 0.0f64, 0.0f64);
    for (p, item) in ranked.iter().take(k).enumerate() {
        if relevant.binary_search(item).is_ok() {
            hits += 1;
            dcg += 1.0 / ((p + 2) as f64).log2();
            ap_sum += hits as f64 / (p + 1) as f64;
        }
    }
    let ideal = k.min(relevant.len());
    let idcg: f64 = (0..ideal).map(|p| 1.0 / ((p + 2) as f64).log2()).sum();
    UserMetrics {
        precision: hits as f64 / k as f64,
        recall: hits as f64 / relevant.len() as f64,
        ndcg: dcg / idcg,
        ap: ap_sum / ideal as f64,
    }
}

/// Averages over users and catalogue coverage.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Metrics {
    pub k: usize,
    pub users: usize,
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub coverage: f64,
}

/// Sums per-user metrics and the set of recommended items.
#[derive(Debug, Clone)]
pub struct Accumulator {
    k: usize,
    users: usize,
    sum: UserMetrics,
    shown: Vec<bool>,
}

impl Accumulator {
    pub fn new(k: usize, n_items: usize) -> Accumulator {
        Accumulator {
            k,
            users: 0,
            sum: UserMetrics::default(),
            shown: vec![false; n_items],
        }
    }

    /// Adds one user (ignored when `relevant` is empty).
    pub fn add(&mut self, ranked: &[ItemIdx], relevant: &[ItemIdx]) {
        if relevant.is_empty() {
            return;
        }
        let m = user_metrics(ranked, relevant, self.k);
        self.users += 1;
        self.sum.precision += m.precision;
        self.sum.recall += m.recall;
        self.sum.ndcg += m.ndcg;
        self.sum.ap += m.ap;
        for &i in ranked.iter().take(self.k) {
            if let Some(s) = self.shown.get_mut(i as usize) {
                *s = true;
            }
        }
    }

    pub fn finish(&self) -> Metrics {
        let n = self.users.max(1) as f64;
        let shown = self.shown.iter().filter(|s| **s).count();
        Metrics {
            k: self.k,
            users: self.users,
            precision: self.sum.precision / n,
            recall: self.sum.recall / n,
            ndcg: self.sum.ndcg / n,
            map: self.sum.ap / n,
            coverage: shown as f64 / self.shown.len().max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn one_user_by_hand() {
        // ranked [5, 1, 7, 3], relevant {1, 3, 9}, K = 3.
        // top-3 = [5, 1, 7]: one hit (item 1) at position 2.
        // precision = 1/3; recall = 1/3;
        // DCG = 1/log2(3) = 0.630930; IDCG over min(3,3)=3 = 1 + 0.630930 + 0.5 = 2.130930;
        // NDCG = 0.630930 / 2.130930 = 0.296082;
        // AP = (precision@2 = 1/2) / min(3,3) = 1/6.
        let m = user_metrics(&[5, 1, 7, 3], &[1, 3, 9], 3);
        assert!(close(m.precision, 1.0 / 3.0));
        assert!(close(m.recall, 1.0 / 3.0));
        let dcg = 1.0 / 3f64.log2();
        assert!(close(m.ndcg, dcg / (1.0 + dcg + 0.5)));
        assert!((m.ndcg - 0.296082).abs() < 1e-6);
        assert!(close(m.ap, 1.0 / 6.0));
    }

    #[test]
    fn ideal_dcg_uses_min_of_k_and_relevant_count() {
        // ranked [2, 4], relevant {2}, K = 2: hit at position 1.
        // DCG = 1/log2(2) = 1; IDCG over min(2,1)=1 item = 1 → NDCG = 1.
        // precision = 1/2, recall = 1, AP = (1/1)/1 = 1.
        let m = user_metrics(&[2, 4], &[2], 2);
        assert_eq!(
            m,
            UserMetrics {
                precision: 0.5,
                recall: 1.0,
                ndcg: 1.0,
                ap: 1.0
            }
        );
        // a short list (fewer than K items) is scored as is: [4], relevant {2} → all 0.
        assert_eq!(user_metrics(&[4], &[2], 2), UserMetrics::default());
    }

    #[test]
    fn averages_over_users_with_relevant_items_and_counts_coverage() {
        // user A: ranked [0,1], relevant {1}, K=2: P=1/2, R=1, NDCG=(1/log2 3)/1=0.630930,
        //         AP=(1/2)/1=0.5.
        // user B: ranked [2,3], relevant {2,3}: P=1, R=1, NDCG=1, AP=(1+1)/2=1.
        // user C: no relevant items → ignored.
        // means: P=0.75, R=1, NDCG=0.815465, MAP=0.75; coverage = 4 shown / 5 items = 0.8.
        let mut acc = Accumulator::new(2, 5);
        acc.add(&[0, 1], &[1]);
        acc.add(&[2, 3], &[2, 3]);
        acc.add(&[4], &[]);
        let m = acc.finish();
        assert_eq!(m.users, 2);
        assert!(close(m.precision, 0.75));
        assert!(close(m.recall, 1.0));
        assert!(close(m.ndcg, (1.0 / 3f64.log2() + 1.0) / 2.0));
        assert!(close(m.map, 0.75));
        assert!(close(m.coverage, 0.8));
    }
}
