//! Synthetic interaction data with MovieLens-like shape, for benchmarks and demos.
//!
//! Items belong to one of `clusters` taste groups and have Zipf-like popularity; each user
//! prefers two groups, draws an activity level from a skewed distribution (at least 20
//! items, mean about `mean_per_user`), and picks 70% of their items from the preferred
//! groups and 30% from the whole catalogue, popularity-weighted. Items get a generated
//! title and their group as category. Deterministic for a seed.

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{Interaction, ItemText, TrainingData};

/// Generates `n_users × n_items` data with about `mean_per_user` distinct items per user.
pub fn synthetic(n_users: usize, n_items: usize, mean_per_user: usize, seed: u64) -> TrainingData {
    const CLUSTERS: usize = 24;
    const REGIONS: [&str; 4] = ["us-east", "us-west", "europe", "asia"];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_items = n_items.max(1);
    let popularity: Vec<f64> = (0..n_items)
        .map(|i| 1.0 / (i as f64 + 10.0).powf(0.9))
        .collect();
    let cluster_of: Vec<usize> = (0..n_items).map(|_| rng.gen_range(0..CLUSTERS)).collect();
    let mut by_cluster: Vec<Vec<u32>> = vec![Vec::new(); CLUSTERS];
    for (i, &c) in cluster_of.iter().enumerate() {
        by_cluster[c].push(i as u32);
    }
    let global = WeightedIndex::new(&popularity).expect("positive weights");
    let cluster_pick: Vec<Option<WeightedIndex<f64>>> = by_cluster
        .iter()
        .map(|items| WeightedIndex::new(items.iter().map(|&i| popularity[i as usize])).ok())
        .collect();
    let mut interactions = Vec::with_capacity(n_users * mean_per_user);
    let mut user_region = Vec::with_capacity(n_users);
    let mut seen = vec![u32::MAX; n_items];
    for u in 0..n_users {
        user_region.push(Some(REGIONS[rng.gen_range(0..REGIONS.len())].to_string()));
        let prefs = [rng.gen_range(0..CLUSTERS), rng.gen_range(0..CLUSTERS)];
        // Skewed activity: 20 + exponential with the rest of the mean, capped at half the items.
        let extra = (mean_per_user.saturating_sub(20)) as f64;
        let want = (20.0 - extra * (1.0 - rng.gen::<f64>()).ln()) as usize;
        let want = want.min(n_items / 2).max(1);
        let mut got = 0;
        let mut tries = 0;
        while got < want && tries < want * 20 {
            tries += 1;
            let item = if rng.gen_bool(0.7) {
                let c = prefs[rng.gen_range(0..2)];
                match &cluster_pick[c] {
                    Some(w) => by_cluster[c][w.sample(&mut rng)] as usize,
                    None => global.sample(&mut rng),
                }
            } else {
                global.sample(&mut rng)
            };
            if seen[item] == u as u32 {
                continue;
            }
            seen[item] = u as u32;
            got += 1;
            interactions.push(Interaction {
                user: u as u32,
                item: item as u32,
                weight: 1.0,
                timestamp: 1_700_000_000 + rng.gen_range(0..30 * 86_400),
            });
        }
    }
    let item_text = (0..n_items)
        .map(|i| ItemText {
            title: format!("Item {i} of group {}", cluster_of[i]),
            categories: vec![format!("group-{}", cluster_of[i])],
            tags: vec![],
            description: String::new(),
        })
        .collect();
    TrainingData {
        n_users,
        n_items,
        interactions,
        item_text,
        user_region,
        user_weight: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_deterministic_and_has_the_requested_shape() {
        let a = synthetic(50, 200, 30, 1);
        assert_eq!(a.interactions, synthetic(50, 200, 30, 1).interactions);
        assert_eq!((a.n_users, a.n_items, a.item_text.len()), (50, 200, 200));
        let per_user = a.interactions.len() as f64 / 50.0;
        assert!((20.0..60.0).contains(&per_user), "{per_user}");
    }
}
