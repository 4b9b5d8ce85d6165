//! Item lists: "similar items" and "bought together", served like users' lists (see
//! [`contract::Subject`]).
//!
//! *Similar items* are the trained model's answer for a history of that one item (for
//! EASE and item-kNN, its item-to-item neighbours; for the content model, the items
//! whose text is closest), computed by [`crate::snapshot::Snapshot::item_list_doc`].
//! *Bought together* comes from co-occurrence in baskets: the items a user added to a
//! cart or bought ([`co_purchases`], counted once per user and pair). An item with no
//! list of its own (unknown to the model, or never bought with anything) gets the
//! popular list of its category, then the popular list.

use std::collections::HashMap;

use crate::model::{ItemIdx, TrainingData};

/// Interactions at least this heavy are basket signals: an `add_to_cart` weighs 3 and
/// a `purchase` 5 (`contract::events::weight`); views (1) and clicks (2) are not.
/// Imported interactions count when their weight reaches it too.
pub const BASKET_WEIGHT: f32 = 3.0;

/// Most items of one user's basket that count (their first, in the order of the
/// training data): the pairs of one basket grow with its square.
pub const MAX_BASKET: usize = 200;

/// Per item, the items bought together with it, most co-occurrences first (ties by
/// index), at most `keep` of them; the score is the number of users whose baskets
/// hold both.
pub fn co_purchases(data: &TrainingData, keep: usize) -> Vec<Vec<(ItemIdx, f32)>> {
    let mut baskets: Vec<Vec<ItemIdx>> = vec![Vec::new(); data.n_users];
    for it in &data.interactions {
        if it.weight >= BASKET_WEIGHT {
            if let Some(b) = baskets.get_mut(it.user as usize) {
                b.push(it.item);
            }
        }
    }
    let mut pairs: HashMap<(ItemIdx, ItemIdx), u32> = HashMap::new();
    for mut basket in baskets {
        basket.sort_unstable();
        basket.dedup();
        basket.truncate(MAX_BASKET);
        for (k, &a) in basket.iter().enumerate() {
            for &b in &basket[k + 1..] {
                *pairs.entry((a, b)).or_default() += 1;
            }
        }
    }
    let mut lists: Vec<Vec<(ItemIdx, f32)>> = vec![Vec::new(); data.n_items];
    for ((a, b), count) in pairs {
        if let Some(l) = lists.get_mut(a as usize) {
            l.push((b, count as f32));
        }
        if let Some(l) = lists.get_mut(b as usize) {
            l.push((a, count as f32));
        }
    }
    for l in &mut lists {
        l.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        l.truncate(keep);
        l.shrink_to_fit();
    }
    lists
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Interaction;

    fn data(rows: &[(u32, u32, f32)]) -> TrainingData {
        TrainingData {
            n_users: rows.iter().map(|r| r.0 + 1).max().unwrap_or(0) as usize,
            n_items: rows.iter().map(|r| r.1 + 1).max().unwrap_or(0) as usize,
            interactions: rows
                .iter()
                .map(|&(user, item, weight)| Interaction {
                    user,
                    item,
                    weight,
                    timestamp: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn items_in_the_same_baskets_are_listed_by_how_many_users_bought_both() {
        let d = data(&[
            (0, 0, 5.0),
            (0, 1, 3.0),
            (0, 2, 5.0),
            (1, 0, 5.0),
            (1, 1, 5.0),
            (2, 0, 3.0),
            (2, 2, 1.0), // a view: not a basket signal
            (2, 3, 3.0),
            (2, 3, 5.0), // the same item twice counts once
        ]);
        let lists = co_purchases(&d, 10);
        assert_eq!(lists[0], vec![(1, 2.0), (2, 1.0), (3, 1.0)]);
        assert_eq!(lists[1], vec![(0, 2.0), (2, 1.0)]);
        assert_eq!(lists[3], vec![(0, 1.0)]);
        assert_eq!(co_purchases(&d, 1)[0], vec![(1, 2.0)]);
    }

    #[test]
    fn views_alone_make_no_lists() {
        let d = data(&[(0, 0, 1.0), (0, 1, 2.0), (1, 0, 1.0), (1, 1, 1.0)]);
        assert!(co_purchases(&d, 10).iter().all(Vec::is_empty));
    }
}
