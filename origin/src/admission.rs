//! What may enter a trained model, so strangers cannot grow it or buy a place in it.
//!
//! - **Items must earn their place.** An item known only from live events (anyone can
//!   send an event naming a new item id) enters the model once at least
//!   [`TrainingPolicy::min_item_users`] distinct users interacted with it. Catalogue
//!   items (imported or loaded by the operator) always may.
//! - **The model has a bounded item count** ([`TrainingPolicy::item_cap`]): at most
//!   `max_items`, and no more than fit the memory budget of a dense item × item model
//!   (EASE and the graph filters hold several `items²` matrices), checked *before*
//!   anything is allocated. Past the cap the items with the most users win.
//! - **Users count by how they came**: a client (one IP, as the edge reports it) that
//!   introduced more than `users_per_client` users has each of them count
//!   `users_per_client / users` in popularity ([`user_weights`]), so a flood of made-up
//!   users from one client weighs as much as a few real ones.
//!
//! Everything here is pure: the snapshot builder counts, this decides.

use serde::{Deserialize, Serialize};

/// Bytes a dense item × item model needs per matrix cell, all its matrices together
/// (measured: EASE on 12,000 items peaked at 1.6 GB, about 11 bytes per cell).
pub const DENSE_BYTES_PER_CELL: u64 = 16;

/// The limits training applies (`origin serve` / `publish` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrainingPolicy {
    /// Distinct users an item seen only in events needs before it is trained on.
    pub min_item_users: u32,
    /// Most items in a model.
    pub max_items: usize,
    /// Memory a model may take while training, in MiB.
    pub memory_budget_mb: u64,
    /// Users one client may introduce at full weight.
    pub users_per_client: u32,
}

impl Default for TrainingPolicy {
    fn default() -> Self {
        TrainingPolicy {
            min_item_users: 2,
            max_items: 20_000,
            memory_budget_mb: 4096,
            users_per_client: 20,
        }
    }
}

impl TrainingPolicy {
    /// Most items a model may hold: `max_items`, lowered to what a dense item × item
    /// model fits in the memory budget.
    pub fn item_cap(&self) -> usize {
        let budget = self.memory_budget_mb.saturating_mul(1 << 20);
        let fits = ((budget / DENSE_BYTES_PER_CELL) as f64).sqrt() as usize;
        self.max_items.min(fits).max(1)
    }
}

/// Which items a model trains on, and why the others are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Per item index: trained on.
    #[serde(skip)]
    pub keep: Vec<bool>,
    pub admitted: usize,
    /// Items seen only in events, with too few distinct users.
    pub unproven: usize,
    /// Items over the item cap.
    pub over_cap: usize,
    pub cap: usize,
}

/// Decides which items enter the model: `users[i]` distinct users of item `i`,
/// `from_events[i]` whether it is known only from live events.
pub fn admit(users: &[u32], from_events: &[bool], policy: &TrainingPolicy) -> Admission {
    let n = users.len();
    let eligible: Vec<bool> = (0..n)
        .map(|i| !from_events.get(i).copied().unwrap_or(false) || users[i] >= policy.min_item_users)
        .collect();
    let unproven = eligible.iter().filter(|e| !**e).count();
    let cap = policy.item_cap();
    let mut keep = eligible;
    let mut candidates: Vec<usize> = (0..n).filter(|&i| keep[i]).collect();
    let mut over_cap = 0;
    if candidates.len() > cap {
        // Most users first; ties by index, so the same data keeps the same items.
        candidates.sort_by(|&a, &b| users[b].cmp(&users[a]).then(a.cmp(&b)));
        for &i in &candidates[cap..] {
            keep[i] = false;
        }
        over_cap = candidates.len() - cap;
        candidates.truncate(cap);
    }
    Admission {
        admitted: candidates.len(),
        keep,
        unproven,
        over_cap,
        cap,
    }
}

/// Popularity weight of each user from how many users their client introduced
/// (`0`: no client recorded, full weight).
pub fn user_weights(client_users: &[u32], users_per_client: u32) -> Vec<f32> {
    client_users
        .iter()
        .map(|&c| {
            if c <= users_per_client || c == 0 {
                1.0
            } else {
                users_per_client as f32 / c as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn items_from_events_need_enough_distinct_users_and_catalogue_items_do_not() {
        let policy = TrainingPolicy::default();
        let a = admit(&[0, 1, 2, 5], &[false, true, true, true], &policy);
        assert_eq!(a.keep, [true, false, true, true]);
        assert_eq!((a.admitted, a.unproven, a.over_cap), (3, 1, 0));
    }

    #[test]
    fn past_the_cap_the_items_with_most_users_win() {
        let policy = TrainingPolicy {
            max_items: 2,
            ..TrainingPolicy::default()
        };
        let a = admit(&[3, 9, 3, 7], &[false; 4], &policy);
        assert_eq!(a.keep, [false, true, false, true]);
        assert_eq!((a.admitted, a.over_cap, a.cap), (2, 2, 2));
    }

    #[test]
    fn the_memory_budget_lowers_the_item_cap_before_anything_is_allocated() {
        let policy = TrainingPolicy {
            max_items: 1_000_000,
            memory_budget_mb: 1024,
            ..TrainingPolicy::default()
        };
        // 1 GiB / 16 B per cell = 2^26 cells: 8,192 items.
        assert_eq!(policy.item_cap(), 8192);
        assert_eq!(TrainingPolicy::default().item_cap(), 16_384);
    }

    #[test]
    fn users_of_a_client_that_made_many_count_less() {
        assert_eq!(
            user_weights(&[0, 1, 20, 40, 2000], 20),
            [1.0, 1.0, 1.0, 0.5, 0.01]
        );
    }

    proptest! {
        #[test]
        fn admission_never_exceeds_the_cap_and_keeps_only_eligible_items(
            users in proptest::collection::vec(0u32..10, 0..200),
            max_items in 1usize..50,
            min_item_users in 0u32..4,
        ) {
            let from_events: Vec<bool> = users.iter().enumerate().map(|(i, _)| i % 3 != 0).collect();
            let policy = TrainingPolicy { max_items, min_item_users, ..TrainingPolicy::default() };
            let a = admit(&users, &from_events, &policy);
            prop_assert!(a.admitted <= max_items);
            prop_assert_eq!(a.keep.iter().filter(|k| **k).count(), a.admitted);
            for i in 0..users.len() {
                if a.keep[i] && from_events[i] {
                    prop_assert!(users[i] >= min_item_users);
                }
            }
            prop_assert_eq!(a.admitted + a.unproven + a.over_cap, users.len());
        }

        #[test]
        fn a_clients_users_never_weigh_more_than_its_allowance(
            client_users in 1u32..100_000, per_client in 1u32..100,
        ) {
            let w = user_weights(&[client_users], per_client)[0];
            prop_assert!(w > 0.0 && w <= 1.0);
            prop_assert!(w * client_users as f32 <= per_client as f32 * 1.0001 || client_users <= per_client);
        }
    }
}
