//! How a snapshot applies its tenant's business rules ([`crate::rules`]) while it builds
//! a document's items:
//! 1. the mask of what may be served ([`Snapshot::allowed`]) also leaves out hidden
//!    items, items of hidden categories (as served now: a live catalogue write's
//!    categories win over those read) and the user's fatigued items, before the model
//!    ranks, so the list still holds `n` items;
//! 2. the model ranks [`RuleSet::candidates`] items;
//! 3. the pins that may be in this list are looked up (known, allowed by the mask, not
//!    in the history) and [`RuleSet::arrange`] boosts, places pins and keeps diversity.
//!
//! Without rules this is exactly the unruled path: the same mask, `n` candidates.
//!
//! Which items hidden categories hide, by the categories read with the snapshot, is
//! computed once per rules version ([`CategoryMasks`]), not per document: a full
//! publish builds every user's document under the same rules.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use contract::params::Category;
use contract::{RecItem, Region};

use super::{DocRequest, Snapshot};
use crate::model::{ItemIdx, Query, Recommender};
use crate::rules::RuleSet;

/// Per item of a snapshot, whether the hidden categories of one rules version hide it
/// (by the categories read with the snapshot), kept for the newest version asked.
#[derive(Default)]
pub(super) struct CategoryMasks {
    cached: Mutex<Option<(i64, Arc<Vec<bool>>)>>,
}

impl Snapshot {
    /// The items of a document for `history` in `region`, ranked by `model` (the
    /// tenant's, or the user's experiment variant's), under the tenant's rules now.
    pub(super) fn ranked(
        &self,
        model: &dyn Recommender,
        history: &[(ItemIdx, f32)],
        context_item: Option<ItemIdx>,
        region: &Region,
        req: &DocRequest<'_>,
    ) -> Vec<RecItem> {
        let current = self.rules.get();
        let rules = &current.rules;
        let allowed = self.allowed_under(current.version, rules, req.category, req.fatigued);
        let scored = model.recommend(&Query {
            history,
            n: rules.candidates(req.n),
            exclude_seen: true,
            context_item,
            region: Some(region.as_str()),
            allowed: allowed.as_deref(),
        });
        let mut items = self.items(scored);
        if !rules.rearranges() {
            items.truncate(req.n);
            return items;
        }
        let pinned = self.pinned(rules, history, allowed.as_deref());
        rules.arrange(items, pinned, req.n)
    }

    /// [`Snapshot::allowed`] without the items `rules` (of `version`) hide and the
    /// `fatigued` ones.
    pub(super) fn allowed_under(
        &self,
        version: i64,
        rules: &RuleSet,
        category: Option<&Category>,
        fatigued: &[String],
    ) -> Option<Cow<'_, [bool]>> {
        let mut mask = self.allowed(category, &[]);
        if !rules.hides_any() && fatigued.is_empty() {
            return mask;
        }
        let n = self.item_ids.len();
        let m = mask
            .get_or_insert_with(|| Cow::Owned(vec![true; n]))
            .to_mut();
        let mut off = |id: &str| {
            if let Some(slot) = self.item_index.get(id).and_then(|&i| m.get_mut(i as usize)) {
                *slot = false;
            }
        };
        for id in rules
            .hidden_items()
            .chain(fatigued.iter().map(String::as_str))
        {
            off(id);
        }
        if rules.hides_categories() {
            let hidden = self.hidden_by_category(version, rules);
            // A live write's categories win over those read: its item is decided anew.
            let live: Vec<(usize, bool)> = match self.live.is_empty() {
                true => Vec::new(),
                false => self.live.read(|records| {
                    records
                        .iter()
                        .filter_map(|(id, item)| {
                            let &i = self.item_index.get(id)?;
                            Some((i as usize, rules.hides_category(&item.categories)))
                        })
                        .collect()
                }),
            };
            let before: Vec<bool> = live
                .iter()
                .map(|&(i, _)| m.get(i).copied().unwrap_or(false))
                .collect();
            for (slot, &h) in m.iter_mut().zip(hidden.iter()) {
                if h {
                    *slot = false;
                }
            }
            for (&(i, h), b) in live.iter().zip(before) {
                if let Some(slot) = m.get_mut(i) {
                    *slot = b && !h;
                }
            }
        }
        mask
    }

    /// Per item, whether `rules`' hidden categories hide it by the categories read
    /// with the snapshot: computed once per rules `version`.
    fn hidden_by_category(&self, version: i64, rules: &RuleSet) -> Arc<Vec<bool>> {
        let mut cached = self
            .category_masks
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((v, mask)) = cached.as_ref() {
            if *v == version {
                return mask.clone();
            }
        }
        let mask: Arc<Vec<bool>> = Arc::new(
            self.item_categories
                .iter()
                .map(|c| rules.hides_category(c))
                .collect(),
        );
        *cached = Some((version, mask.clone()));
        mask
    }

    /// The pinned items that may be in a list for `history` (known, allowed by
    /// `allowed`, not already in the history), each with its 0-based position.
    pub(super) fn pinned(
        &self,
        rules: &RuleSet,
        history: &[(ItemIdx, f32)],
        allowed: Option<&[bool]>,
    ) -> Vec<(usize, RecItem)> {
        let live = !self.live.is_empty();
        rules
            .pins()
            .iter()
            .filter_map(|(at, id)| {
                let &i = self.item_index.get(id)?;
                let may = allowed.is_none_or(|m| m.get(i as usize).copied().unwrap_or(false));
                let seen = history.binary_search_by_key(&i, |&(h, _)| h).is_ok();
                (may && !seen).then(|| {
                    (
                        *at,
                        RecItem {
                            item_id: id.clone(),
                            score: 0.0,
                            reason: Some("pinned".into()),
                            categories: self.categories_of(i, id, live),
                        },
                    )
                })
            })
            .collect()
    }
}
