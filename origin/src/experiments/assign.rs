//! Which variant a user is in: a stable hash of the experiment's name and the user's id,
//! as a point in [0, 1), against the variants' cumulative shares.
//!
//! The hash is FNV-1a (64-bit) over the experiment name's bytes, a `0xff` byte (never in
//! a name or an id, so `("ab", "c")` and `("a", "bc")` differ) and the user id's bytes,
//! then SplitMix64's finaliser (FNV-1a alone leaves ids that differ in their last
//! character close together in the high bits). It has no key and no seed, so every
//! process and every build, origin or not, computes the same variant; a user's variant
//! never needs storing, and events need no column for it. Different experiments split
//! the same users independently (the name is hashed in).
//!
//! The point is the hash's top 53 bits over 2^53; the variant is the first whose
//! cumulative share (whole percent) is above `point × 100`, in integers.

use super::Variant;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The stable hash of `experiment` and `user` (see the module docs).
pub fn hash(experiment: &str, user: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in experiment
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(user.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // SplitMix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The user's point in [0, 1).
pub fn point(experiment: &str, user: &str) -> f64 {
    (hash(experiment, user) >> 11) as f64 / (1u64 << 53) as f64
}

/// The index of the variant `user` is in. `variants` are checked (shares summing to
/// 100); past the last cumulative share (never, for checked variants) the last one.
pub fn assign(experiment: &str, user: &str, variants: &[Variant]) -> usize {
    // floor(point × 100), exactly: (h >> 11) < 2^53, so × 100 fits in a u64.
    let percent = ((hash(experiment, user) >> 11) * 100) >> 53;
    let mut cumulative = 0u64;
    for (i, v) in variants.iter().enumerate() {
        cumulative += u64::from(v.share);
        if percent < cumulative {
            return i;
        }
    }
    variants.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants(shares: &[u32]) -> Vec<Variant> {
        shares
            .iter()
            .enumerate()
            .map(|(i, &share)| Variant {
                name: format!("v{i}"),
                model: "popularity".into(),
                share,
            })
            .collect()
    }

    #[test]
    fn the_hash_is_pinned_so_every_build_and_process_agrees() {
        // Computed once and written down: a change here reassigns every user of every
        // running experiment.
        assert_eq!(hash("exp", "u1"), PINNED_EXP_U1);
        assert_eq!(hash("", ""), PINNED_EMPTY);
        assert_ne!(hash("ab", "c"), hash("a", "bc"));
    }

    #[test]
    fn assignment_is_deterministic_and_points_are_in_the_unit_interval() {
        let v = variants(&[50, 30, 20]);
        for u in 0..1000 {
            let user = format!("user-{u}");
            let p = point("exp", &user);
            assert!((0.0..1.0).contains(&p));
            let a = assign("exp", &user, &v);
            assert_eq!(a, assign("exp", &user, &v));
            // The variant is the one whose cumulative share holds the point.
            let cumulative: Vec<f64> = [0.5, 0.8, 1.0].to_vec();
            let expected = cumulative.iter().position(|c| p < *c).unwrap();
            assert_eq!(a, expected, "{user} at {p}");
        }
    }

    /// Over 10,000 users, each variant's count is within 2 percentage points (200
    /// users) of its share: about 4 standard deviations of a binomial at 50 %, so a
    /// good hash passes and a skewed one fails.
    #[test]
    fn over_ten_thousand_users_each_variant_gets_close_to_its_share() {
        for shares in [
            vec![50, 50],
            vec![90, 10],
            vec![34, 33, 33],
            vec![10, 20, 30, 40],
            vec![13, 12, 12, 12, 12, 13, 13, 13],
        ] {
            let v = variants(&shares);
            let mut counts = vec![0u32; v.len()];
            for u in 0..10_000 {
                counts[assign("checkout-test", &format!("u{u}"), &v)] += 1;
            }
            for (i, &share) in shares.iter().enumerate() {
                let expected = share as i64 * 100;
                let got = counts[i] as i64;
                assert!(
                    (got - expected).abs() <= 200,
                    "shares {shares:?}: variant {i} got {got} of 10000, expected {expected} ± 200"
                );
            }
        }
    }

    #[test]
    fn different_experiments_split_the_same_users_independently() {
        let v = variants(&[50, 50]);
        let same = (0..10_000)
            .filter(|u| {
                let user = format!("u{u}");
                assign("first", &user, &v) == assign("second", &user, &v)
            })
            .count();
        // Independent halves agree for about half the users.
        assert!((4_800..=5_200).contains(&same), "{same}");
    }

    const PINNED_EXP_U1: u64 = 0x96a3_89ca_1313_3ba5;
    const PINNED_EMPTY: u64 = 0x4f2d_b50f_1240_40cd;
}
