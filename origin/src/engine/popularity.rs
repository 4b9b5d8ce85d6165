//! Popularity: global, per region, and trending (time-decayed).
//!
//! Lists count people, not requests: each user adds to an item at most
//! [`PER_USER_CAP`] (the weight of one purchase), however many events they sent for it,
//! times the user's [`TrainingData::user_weight`] (below 1 for users that one client
//! introduced en masse, so made-up users cannot buy a place). Trending decays each
//! user's contribution by `0.5^(age / half_life)` of their latest interaction with the
//! item, age measured from the newest interaction in the data, so the scores do not
//! depend on the wall clock.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use rayon::slice::ParallelSliceMut;

use super::Scorer;
use crate::model::{Because, ItemIdx, TrainingData};

/// Which popularity a [`Popularity`] scores by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PopMode {
    /// Global counts.
    Global,
    /// The query region's counts, global counts when the region is unknown.
    Regional,
    /// Time-decayed counts with this half-life in days.
    Trending { half_life_days: f64 },
}

/// Most one user adds to one item's count (the weight of a purchase).
pub const PER_USER_CAP: f32 = 5.0;

/// Item counts: global, per region, and time-decayed.
pub struct Popularity {
    mode: PopMode,
    global: Vec<f32>,
    regional: HashMap<String, Vec<f32>>,
    trending: Vec<f32>,
}

impl Popularity {
    pub fn train(data: &TrainingData, mode: PopMode) -> Popularity {
        let n = data.n_items;
        let mut global = vec![0f32; n];
        let mut regional: HashMap<String, Vec<f32>> = HashMap::new();
        let newest = data
            .interactions
            .iter()
            .map(|x| x.timestamp)
            .max()
            .unwrap_or(0);
        let half_life_s = match mode {
            PopMode::Trending { half_life_days } => (half_life_days * 86_400.0).max(1.0),
            _ => 7.0 * 86_400.0,
        };
        let mut trending = vec![0f32; n];
        // One contribution per (user, item): interactions grouped by sorting indices.
        let xs = &data.interactions;
        let mut order: Vec<u32> = (0..xs.len() as u32)
            .filter(|&k| (xs[k as usize].item as usize) < n)
            .collect();
        let key = |k: &u32| {
            let x = &xs[*k as usize];
            (u64::from(x.user) << 32) | u64::from(x.item)
        };
        order.par_sort_unstable_by_key(key);
        for group in order.chunk_by(|a, b| key(a) == key(b)) {
            let first = &xs[group[0] as usize];
            let (u, i) = (first.user as usize, first.item as usize);
            let sum: f32 = group.iter().map(|&k| xs[k as usize].weight).sum();
            let last = group
                .iter()
                .map(|&k| xs[k as usize].timestamp)
                .max()
                .unwrap_or(0);
            let trust = data
                .user_weight
                .get(u)
                .copied()
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            let w = sum.clamp(0.0, PER_USER_CAP) * trust;
            global[i] += w;
            let age = (newest - last).max(0) as f64;
            trending[i] += w * (0.5f64).powf(age / half_life_s) as f32;
            if let Some(Some(r)) = data.user_region.get(u) {
                regional.entry(r.clone()).or_insert_with(|| vec![0f32; n])[i] += w;
            }
        }
        Popularity {
            mode,
            global,
            regional,
            trending,
        }
    }

    /// Rank of every item by global count (0 = most popular; ties by index).
    pub fn global_rank(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.global.len() as u32).collect();
        order.sort_by(|&a, &b| {
            self.global[b as usize]
                .total_cmp(&self.global[a as usize])
                .then(a.cmp(&b))
        });
        let mut rank = vec![0u32; order.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        rank
    }

    /// Global counts, indexed by item.
    pub fn counts(&self) -> &[f32] {
        &self.global
    }

    /// Regions with counts.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.regional.keys().map(String::as_str)
    }
}

impl Scorer for Popularity {
    fn name(&self) -> String {
        match self.mode {
            PopMode::Global => "popularity".into(),
            PopMode::Regional => "popularity-region".into(),
            PopMode::Trending { half_life_days } => format!("trending-h{half_life_days}d"),
        }
    }

    fn n_items(&self) -> usize {
        self.global.len()
    }

    fn score(&self, _history: &[(ItemIdx, f32)], region: Option<&str>, out: &mut [f32]) {
        let src = match self.mode {
            PopMode::Global => &self.global,
            PopMode::Trending { .. } => &self.trending,
            PopMode::Regional => region
                .and_then(|r| self.regional.get(r))
                .unwrap_or(&self.global),
        };
        for (o, s) in out.iter_mut().zip(src) {
            *o += *s;
        }
    }

    fn heap_bytes(&self) -> usize {
        (self.global.len() + self.trending.len()) * 4
            + self
                .regional
                .iter()
                .map(|(k, v)| k.len() + v.len() * 4)
                .sum::<usize>()
    }

    fn because(
        &self,
        _history: &[(ItemIdx, f32)],
        region: Option<&str>,
        _item: ItemIdx,
    ) -> Because {
        match (self.mode, region) {
            (PopMode::Trending { .. }, _) => Because::Trending,
            (PopMode::Regional, Some(r)) if self.regional.contains_key(r) => {
                Because::PopularIn(r.to_string())
            }
            _ => Because::Popular,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interaction;

    fn data() -> TrainingData {
        let x = |user, item, timestamp| Interaction {
            user,
            item,
            weight: 1.0,
            timestamp,
        };
        TrainingData {
            n_users: 3,
            n_items: 3,
            // item 0: 2 old views in asia; item 2: 1 fresh view in europe.
            interactions: vec![x(0, 0, 0), x(1, 0, 0), x(2, 2, 86_400 * 70)],
            item_text: vec![],
            user_region: vec![
                Some("asia".into()),
                Some("asia".into()),
                Some("europe".into()),
            ],
            user_weight: Vec::new(),
        }
    }

    #[test]
    fn regional_popularity_uses_the_region_and_falls_back_to_global() {
        let p = Popularity::train(&data(), PopMode::Regional);
        let mut s = vec![0.0; 3];
        p.score(&[], Some("europe"), &mut s);
        assert_eq!(s, vec![0.0, 0.0, 1.0]);
        let mut s = vec![0.0; 3];
        p.score(&[], Some("mars"), &mut s);
        assert_eq!(s, vec![2.0, 0.0, 1.0]);
        assert_eq!(
            p.because(&[], Some("europe"), 2),
            Because::PopularIn("europe".into())
        );
    }

    #[test]
    fn a_user_counts_once_per_item_and_mass_produced_users_count_less() {
        let mut data = data();
        // User 0 sends 1,000 purchases of item 1: one capped contribution.
        for t in 0..1000 {
            data.interactions.push(Interaction {
                user: 0,
                item: 1,
                weight: 5.0,
                timestamp: 100 + t,
            });
        }
        let p = Popularity::train(&data, PopMode::Global);
        assert_eq!(p.counts()[1], PER_USER_CAP);
        // Users 1 and 2 weigh a tenth: their items fall behind.
        data.user_weight = vec![1.0, 0.1, 0.1];
        let p = Popularity::train(&data, PopMode::Global);
        assert_eq!(p.counts()[1], PER_USER_CAP);
        assert!(p.counts()[2] < 0.2, "{:?}", p.counts());
    }

    #[test]
    fn trending_decays_old_interactions_by_their_half_life() {
        let p = Popularity::train(
            &data(),
            PopMode::Trending {
                half_life_days: 7.0,
            },
        );
        let mut s = vec![0.0; 3];
        p.score(&[], None, &mut s);
        // item 0: 2 · 0.5^(70/7) = 2/1024 ≈ 0.00195; item 2: 1.
        assert!((s[0] - 2.0 / 1024.0).abs() < 1e-6);
        assert_eq!(s[2], 1.0);
    }
}
