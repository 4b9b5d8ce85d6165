//! A reproducible per-user random split into train/validation/test.
//!
//! Each user's distinct items (sorted by id) are shuffled by a ChaCha8 generator seeded
//! from `seed`, users taken in ascending id order, so the same input and seed always give
//! the same files. A user with `n ≥ 3` items gives `max(1, round(n·valid))` items to
//! validation and `max(1, round(n·test))` to test; users with fewer items stay in train.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::data::Record;

/// Lists per user: `(user, items)` in user order.
pub type Lists = Vec<(u64, Vec<u64>)>;

/// Splits `records` into `(train, valid, test)` lists.
pub fn split(records: &[Record], valid: f64, test: f64, seed: u64) -> (Lists, Lists, Lists) {
    let mut per_user: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for r in records {
        per_user.entry(r.user).or_default().push(r.item);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut tr, mut va, mut te) = (Vec::new(), Vec::new(), Vec::new());
    for (user, mut items) in per_user {
        items.sort_unstable();
        items.dedup();
        items.shuffle(&mut rng);
        let n = items.len();
        let (n_valid, n_test) = if n >= 3 {
            let v = ((n as f64 * valid).round() as usize).max(1);
            let t = ((n as f64 * test).round() as usize).max(1);
            (v.min(n - 2), t.min(n - 1 - v.min(n - 2)))
        } else {
            (0, 0)
        };
        let test_items = items.split_off(n - n_test);
        let valid_items = items.split_off(items.len() - n_valid);
        let sorted = |mut v: Vec<u64>| {
            v.sort_unstable();
            v
        };
        tr.push((user, sorted(items)));
        if !valid_items.is_empty() {
            va.push((user, sorted(valid_items)));
        }
        if !test_items.is_empty() {
            te.push((user, sorted(test_items)));
        }
    }
    (tr, va, te)
}

/// Renders lists in the `lists` format: `user item item ...` per line.
pub fn render(lists: &Lists) -> String {
    let mut s = String::new();
    for (u, items) in lists {
        let _ = write!(s, "{u}");
        for i in items {
            let _ = write!(s, " {i}");
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_reproducible_disjoint_and_80_10_10() {
        let records: Vec<Record> = (0..2u64)
            .flat_map(|u| {
                (0..20u64).map(move |i| Record {
                    user: u,
                    item: i,
                    weight: 1.0,
                    timestamp: 0,
                })
            })
            .collect();
        let a = split(&records, 0.1, 0.1, 7);
        assert_eq!(a, split(&records, 0.1, 0.1, 7));
        assert_ne!(a, split(&records, 0.1, 0.1, 8));
        let (tr, va, te) = a;
        // 20 items: round(2) = 2 valid, 2 test, 16 train.
        assert_eq!((tr[0].1.len(), va[0].1.len(), te[0].1.len()), (16, 2, 2));
        let mut all: Vec<u64> = [&tr[0].1, &va[0].1, &te[0].1]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert_eq!(render(&va[..1].to_vec()).split_whitespace().count(), 3);
    }
}
