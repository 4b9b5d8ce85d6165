//! Per-thread score buffers and partial-sort top-N selection.
//!
//! Every query scores all items into a dense `f32` buffer. Buffers come from a small
//! per-thread pool, so a thread answering thousands of queries allocates a buffer once,
//! not once per query.

use std::cell::RefCell;

use crate::model::ItemIdx;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static CANDIDATES: RefCell<Vec<(u32, f32)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a zeroed buffer of `len` floats taken from this thread's pool.
/// Nested calls get distinct buffers.
pub fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default();
    buf.clear();
    buf.resize(len, 0.0);
    let out = f(&mut buf);
    POOL.with(|p| p.borrow_mut().push(buf));
    out
}

/// The `n` best items of `scores`, best first. Items scored `-inf` (masked) are never
/// returned. Ties are broken by `tiebreak[item]` ascending (e.g. popularity rank), then by
/// item index, so the answer is deterministic.
pub fn top_n(scores: &[f32], n: usize, tiebreak: &[u32]) -> Vec<(ItemIdx, f32)> {
    if n == 0 {
        return Vec::new();
    }
    CANDIDATES.with(|c| {
        let mut cand = c.borrow_mut();
        cand.clear();
        cand.extend(
            scores
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > f32::NEG_INFINITY && !s.is_nan())
                .map(|(i, s)| (i as u32, *s)),
        );
        let better = |a: &(u32, f32), b: &(u32, f32)| {
            b.1.total_cmp(&a.1)
                .then_with(|| {
                    let ta = tiebreak.get(a.0 as usize).copied().unwrap_or(u32::MAX);
                    let tb = tiebreak.get(b.0 as usize).copied().unwrap_or(u32::MAX);
                    ta.cmp(&tb)
                })
                .then_with(|| a.0.cmp(&b.0))
        };
        if cand.len() > n {
            cand.select_nth_unstable_by(n - 1, better);
            cand.truncate(n);
        }
        cand.sort_unstable_by(better);
        cand.clone()
    })
}

/// Sets the scores of `items` to `-inf` so `top_n` skips them.
pub fn mask(scores: &mut [f32], items: impl IntoIterator<Item = ItemIdx>) {
    for i in items {
        if let Some(s) = scores.get_mut(i as usize) {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Sets the scores of items `allowed` marks `false` to `-inf` (items past its end stay).
pub fn mask_disallowed(scores: &mut [f32], allowed: &[bool]) {
    for (s, ok) in scores.iter_mut().zip(allowed) {
        if !ok {
            *s = f32::NEG_INFINITY;
        }
    }
}

/// Keeps the `k` largest `(index, value)` pairs of `v` (unordered), dropping the rest.
pub fn keep_largest(v: &mut Vec<(u32, f32)>, k: usize) {
    if v.len() > k {
        if k == 0 {
            v.clear();
            return;
        }
        v.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_skips_masked_items_and_breaks_ties_by_tiebreak_rank() {
        let mut s = vec![0.5, 0.9, 0.5, 0.1, 0.9];
        mask(&mut s, [1]);
        // item 4 scores 0.9; items 0 and 2 tie at 0.5 and item 2 ranks first by tiebreak.
        let got = top_n(&s, 3, &[5, 0, 1, 3, 4]);
        assert_eq!(got, vec![(4, 0.9), (2, 0.5), (0, 0.5)]);
        assert_eq!(top_n(&s, 10, &[]).len(), 4);
    }

    #[test]
    fn disallowed_items_are_never_in_the_top_n() {
        let mut s = vec![0.9, 0.8, 0.7, 0.6];
        mask_disallowed(&mut s, &[false, true, false]);
        assert_eq!(top_n(&s, 2, &[]), vec![(1, 0.8), (3, 0.6)]);
    }

    #[test]
    fn nested_buffers_are_distinct_and_zeroed() {
        with_buffer(3, |a| {
            a[0] = 1.0;
            with_buffer(3, |b| {
                assert_eq!(b, &[0.0; 3]);
            });
        });
        with_buffer(3, |a| assert_eq!(a, &[0.0; 3]));
    }
}
