//! A trained, immutable view of one tenant: the model plus everything needed to turn
//! external ids into model queries and model answers into [`RecommendationDoc`]s.
//!
//! The HTTP handlers and the bulk publisher share one `Arc<Snapshot>`; it never
//! touches the database after it is built. Only the catalogue writes made since
//! ([`crate::availability::LiveItems`], shared from one snapshot to the next) are read
//! under a lock, and only when there are any.
//!
//! Every document it builds leaves out the items that may not be served (unavailable,
//! or outside a requested category) before the model's top-n is taken, and lists each
//! item's categories, so readers can filter a stored list by category.
//!
//! Every document also follows the tenant's business rules ([`crate::rules`], read
//! from [`Snapshot::rules`], shared from one snapshot to the next): see `ruled`.
//!
//! While an A/B experiment runs ([`crate::experiments`]), the snapshot also holds every
//! variant's model ([`Snapshot::experiment`]), and each user's list comes from their
//! variant's model, picked in one place ([`Snapshot::model_for`]); the document names
//! the variant and that model's version. Popular lists and items' lists come from the
//! tenant's model.

mod ruled;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use contract::params::{Category, MAX_ITEM_CATEGORIES};
use contract::{ItemId, ItemList, RecItem, RecommendationDoc, Region, RegionMap, Tenant, UserId};

use crate::availability::LiveItems;
use crate::experiments::ExperimentModels;

use crate::admission::{admit, user_weights, Admission, TrainingPolicy};
use crate::model::{Because, ItemIdx, Query, Recommender, Scored, TrainingData, UserIdx};
use crate::store::{Counts, IdMaps, TrainingSet};

/// Keeps only the items `policy` admits, renumbering them densely in the same order, in
/// the training data, the id maps and every user's history.
fn admit_items(
    data: &mut TrainingData,
    maps: &mut IdMaps,
    history: &mut [Vec<(ItemIdx, f32)>],
    policy: &TrainingPolicy,
) -> Admission {
    let mut users = vec![0u32; data.n_items];
    for row in history.iter() {
        for &(i, _) in row {
            users[i as usize] += 1;
        }
    }
    let admission = admit(&users, &maps.item_from_events, policy);
    if admission.admitted == data.n_items {
        return admission;
    }
    let mut new_index = vec![None; data.n_items];
    let mut next = 0;
    for (i, keep) in admission.keep.iter().enumerate() {
        if *keep {
            new_index[i] = Some(next as ItemIdx);
            next += 1;
        }
    }
    data.interactions
        .retain_mut(|x| match new_index[x.item as usize] {
            Some(n) => {
                x.item = n;
                true
            }
            None => false,
        });
    for row in history.iter_mut() {
        row.retain_mut(|(i, _)| match new_index[*i as usize] {
            Some(n) => {
                *i = n;
                true
            }
            None => false,
        });
    }
    fn retain_kept<T>(v: &mut Vec<T>, keep: &[bool]) {
        let mut k = keep.iter();
        v.retain(|_| k.next().copied().unwrap_or(false));
    }
    if data.item_text.len() == data.n_items {
        retain_kept(&mut data.item_text, &admission.keep);
    }
    if maps.item_available.len() == data.n_items {
        retain_kept(&mut maps.item_available, &admission.keep);
    }
    retain_kept(&mut maps.item_ids, &admission.keep);
    retain_kept(&mut maps.item_from_events, &admission.keep);
    data.n_items = next;
    admission
}

/// How long published documents stay fresh and then stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub fresh_for_s: u64,
    pub stale_for_s: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            fresh_for_s: 300,
            stale_for_s: 86_400,
        }
    }
}

/// What a document is asked for.
#[derive(Debug, Clone, Default)]
pub struct DocRequest<'a> {
    pub n: usize,
    /// An item the user is looking at (used for cold-start users).
    pub context: Option<&'a ItemId>,
    /// Overrides the user's region.
    pub region: Option<&'a Region>,
    /// Region of users not in the store (the map's default when `None`).
    pub fallback_region: Option<&'a Region>,
    /// Only items of this category (`category=`).
    pub category: Option<&'a Category>,
    /// Items the user's fatigue rule keeps out (see [`crate::rules::Fatigued`]).
    pub fatigued: &'a [String],
}

/// A trained model with the id maps and per-user histories of one tenant.
pub struct Snapshot {
    pub tenant: Tenant,
    pub model: Arc<dyn Recommender>,
    /// Unix seconds when training finished.
    pub trained_at: u64,
    pub counts: Counts,
    pub regions: RegionMap,
    pub freshness: Freshness,
    user_ids: Vec<String>,
    user_index: HashMap<String, UserIdx>,
    item_ids: Vec<String>,
    item_index: HashMap<String, ItemIdx>,
    /// Per user: (item, summed weight), sorted by item.
    history: Vec<Vec<(ItemIdx, f32)>>,
    user_region: Vec<Region>,
    /// A placeholder served while the first model trains ([`Snapshot::loading`]).
    pub loading: bool,
    /// Which items the model was allowed to train on.
    pub admission: Option<Admission>,
    /// The seq of the newest event in the training data (set by the retrainer; `None`:
    /// no event): users with later events have newer histories than this snapshot.
    pub upto_seq: Option<i64>,
    /// Per item: whether the catalogue said it may be served when the store was read.
    item_available: Vec<bool>,
    /// Per item: its catalogue categories when the store was read.
    item_categories: Vec<Vec<String>>,
    /// What the model may return when no category is asked for and no live write says
    /// otherwise (`None`: every item).
    base_allowed: Option<Vec<bool>>,
    /// Catalogue writes since the store was read; the retrainer hands it on to the next
    /// snapshot.
    pub live: Arc<LiveItems>,
    /// Per item: the items bought together with it ([`crate::item_lists::co_purchases`]).
    together: Vec<Vec<(ItemIdx, f32)>>,
    /// Unix second the store read of this snapshot began (0: unknown; set by the
    /// retrainer): live records older than that are in the snapshot.
    pub read_from: u64,
    /// The tenant's business rules now; the retrainer hands the cell on to the next
    /// snapshot.
    pub rules: Arc<crate::rules::LiveRules>,
    /// The items hidden categories hide, per rules version (see `ruled`).
    category_masks: ruled::CategoryMasks,
    /// The running experiment's variants and their models (set by the retrainer;
    /// `None`: no experiment runs, every list comes from `model`).
    pub experiment: Option<Arc<ExperimentModels>>,
}

pub use crate::clock::{now_unix, rfc3339};

impl Snapshot {
    /// [`Snapshot::build_with`] under the default [`TrainingPolicy`].
    pub fn build(
        set: TrainingSet,
        tenant: Tenant,
        regions: RegionMap,
        freshness: Freshness,
        train: impl FnOnce(&crate::model::TrainingData) -> Arc<dyn Recommender>,
    ) -> Self {
        Self::build_with(
            set,
            tenant,
            regions,
            freshness,
            &TrainingPolicy::default(),
            train,
        )
    }

    /// From what the store holds ([`crate::store::Store::training_set`]), admits the
    /// items `policy` allows (see [`crate::admission`]) and trains a model with
    /// `train`, logging counts and time.
    pub fn build_with(
        set: TrainingSet,
        tenant: Tenant,
        regions: RegionMap,
        freshness: Freshness,
        policy: &TrainingPolicy,
        train: impl FnOnce(&crate::model::TrainingData) -> Arc<dyn Recommender>,
    ) -> Self {
        let started = Instant::now();
        let TrainingSet {
            counts,
            mut data,
            mut maps,
            ..
        } = set;
        let user_region: Vec<Region> = maps
            .user_country
            .iter()
            .map(|c| regions.region_for_country(c.as_deref()).clone())
            .collect();
        data.user_region = user_region
            .iter()
            .map(|r| Some(r.as_str().to_owned()))
            .collect();
        let mut per_user = vec![0u32; data.n_users];
        for it in &data.interactions {
            per_user[it.user as usize] += 1;
        }
        let mut history: Vec<Vec<(ItemIdx, f32)>> = per_user
            .iter()
            .map(|&n| Vec::with_capacity(n as usize))
            .collect();
        drop(per_user);
        for it in &data.interactions {
            history[it.user as usize].push((it.item, it.weight));
        }
        for row in &mut history {
            row.sort_by_key(|&(i, _)| i);
            row.dedup_by(|next, kept| {
                if next.0 == kept.0 {
                    kept.1 += next.1;
                    true
                } else {
                    false
                }
            });
            row.shrink_to_fit();
        }
        let admission = admit_items(&mut data, &mut maps, &mut history, policy);
        let together = crate::item_lists::co_purchases(&data, contract::MAX_N);
        data.user_weight = user_weights(&maps.user_client_users, policy.users_per_client);
        let loaded = started.elapsed();
        let model = train(&data);
        let item_available: Vec<bool> = (0..data.n_items)
            .map(|i| maps.item_available.get(i).copied().unwrap_or(true))
            .collect();
        let item_categories: Vec<Vec<String>> = (0..data.n_items)
            .map(|i| {
                data.item_text
                    .get(i)
                    .map(|t| t.categories.clone())
                    .unwrap_or_default()
            })
            .collect();
        let base_allowed = item_available
            .iter()
            .any(|a| !a)
            .then(|| item_available.clone());
        tracing::info!(
            users = counts.users,
            items = counts.items,
            interactions = counts.interactions,
            model = %model.name(),
            items_trained = admission.admitted,
            items_unproven = admission.unproven,
            items_over_cap = admission.over_cap,
            item_cap = admission.cap,
            load_ms = loaded.as_millis() as u64,
            train_ms = (started.elapsed() - loaded).as_millis() as u64,
            "trained"
        );
        if counts.interactions == 0 {
            tracing::warn!(
                "the store has no interactions: every answer is empty until data is imported \
                 (origin demo-data / origin import) and the origin restarted"
            );
        }
        let user_index = maps
            .user_ids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i as UserIdx))
            .collect();
        let item_index = maps
            .item_ids
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i as ItemIdx))
            .collect();
        Snapshot {
            tenant,
            model,
            trained_at: now_unix(),
            counts,
            regions,
            freshness,
            user_ids: maps.user_ids,
            user_index,
            item_ids: maps.item_ids,
            item_index,
            history,
            user_region,
            loading: false,
            upto_seq: None,
            admission: Some(admission),
            item_available,
            item_categories,
            base_allowed,
            live: Arc::default(),
            read_from: 0,
            together,
            rules: Arc::default(),
            category_masks: Default::default(),
            experiment: None,
        }
    }

    /// The snapshot an origin serves before its first model is trained: no users, no
    /// items, [`Snapshot::loading`] set (recommendation routes answer `503
    /// model_loading`, so the edge serves what it has instead of an empty list).
    pub fn loading(tenant: Tenant, regions: RegionMap, freshness: Freshness) -> Self {
        let model = crate::engine::build(
            &crate::engine::ModelSpec::default_for(crate::engine::ModelKind::Popularity),
            &TrainingData::default(),
        )
        .expect("popularity builds from any data");
        Snapshot {
            tenant,
            model,
            trained_at: 0,
            counts: Counts::default(),
            regions,
            freshness,
            user_ids: Vec::new(),
            user_index: HashMap::new(),
            item_ids: Vec::new(),
            item_index: HashMap::new(),
            history: Vec::new(),
            user_region: Vec::new(),
            loading: true,
            upto_seq: None,
            admission: None,
            item_available: Vec::new(),
            item_categories: Vec::new(),
            base_allowed: None,
            live: Arc::default(),
            read_from: 0,
            together: Vec::new(),
            rules: Arc::default(),
            category_masks: Default::default(),
            experiment: None,
        }
    }

    /// Approximate heap bytes held: the model, the id maps and the histories (what the
    /// origin's model cache counts; see `crate::tenant_host`).
    pub fn heap_bytes(&self) -> usize {
        let ids = |v: &[String]| v.iter().map(|s| s.len() + 24).sum::<usize>();
        // A map entry: the key's heap bytes, its 24-byte header, the index, hash overhead.
        let index = |v: &[String]| ids(v) + v.len() * 16;
        self.model.heap_bytes()
            + self.experiment.as_ref().map_or(0, |e| e.heap_bytes())
            + ids(&self.user_ids)
            + index(&self.user_ids)
            + ids(&self.item_ids)
            + index(&self.item_ids)
            + self.history.iter().map(|h| 24 + h.len() * 8).sum::<usize>()
            + self
                .user_region
                .iter()
                .map(|r| 24 + r.as_str().len())
                .sum::<usize>()
            + self.item_available.len() * 2
            + self
                .together
                .iter()
                .map(|t| 24 + t.len() * 8)
                .sum::<usize>()
            + self
                .item_categories
                .iter()
                .map(|c| 24 + ids(c))
                .sum::<usize>()
    }

    /// Whether `category` is one of `categories`.
    fn in_category(categories: &[String], category: Option<&Category>) -> bool {
        category.is_none_or(|c| categories.iter().any(|k| k == c.as_str()))
    }

    /// What the model may return: available items (as read, then as written since), of
    /// `category` when one is given, and the items `also` whatever they are; `None` when
    /// that is every item.
    pub(crate) fn allowed(
        &self,
        category: Option<&Category>,
        also: &[ItemIdx],
    ) -> Option<Cow<'_, [bool]>> {
        let live = !self.live.is_empty();
        let mut mask: Cow<'_, [bool]> = match (category, &self.base_allowed) {
            (None, None) if !live && also.is_empty() => return None,
            (None, Some(base)) if !live && also.is_empty() => return Some(Cow::Borrowed(base)),
            _ => Cow::Owned(
                self.item_available
                    .iter()
                    .zip(&self.item_categories)
                    .map(|(a, c)| *a && Self::in_category(c, category))
                    .collect(),
            ),
        };
        if live {
            let mask = mask.to_mut();
            self.live.read(|records| {
                for (id, item) in records {
                    if let Some(slot) = self
                        .item_index
                        .get(id)
                        .and_then(|&i| mask.get_mut(i as usize))
                    {
                        *slot = item.available && Self::in_category(&item.categories, category);
                    }
                }
            });
        }
        if !also.is_empty() {
            let mask = mask.to_mut();
            for &i in also {
                if let Some(slot) = mask.get_mut(i as usize) {
                    *slot = true;
                }
            }
        }
        Some(mask)
    }

    /// Whether `item` may be served now (known, available as read and as written since).
    pub fn is_available(&self, item: &str) -> bool {
        if let Some(live) = self.live.get(item) {
            return live.available;
        }
        self.item_index
            .get(item)
            .and_then(|&i| self.item_available.get(i as usize))
            .copied()
            .unwrap_or(true)
    }

    /// An item's availability and categories as this snapshot serves it now (`None`: an
    /// item the model does not know, which no list holds).
    pub fn served_state(&self, item: &str) -> Option<(bool, Vec<String>)> {
        let &i = self.item_index.get(item)?;
        if let Some(live) = self.live.get(item) {
            return Some((live.available, live.categories));
        }
        Some((
            self.item_available.get(i as usize).copied().unwrap_or(true),
            self.item_categories
                .get(i as usize)
                .cloned()
                .unwrap_or_default(),
        ))
    }

    /// The index of an item the model knows.
    pub fn item_idx(&self, item: &str) -> Option<ItemIdx> {
        self.item_index.get(item).copied()
    }

    /// Users (the first `limit` in id order) whose canonical list of `n` items,
    /// computed with the items `changed` allowed, holds one of them: the users whose
    /// published document a change of those items touches (see
    /// [`crate::availability`]). A user without history has the region's popular list
    /// (a full publish writes it for them too), computed once per region. The second
    /// value is how many users were past `limit`. CPU-bound: run it on a blocking thread.
    pub fn users_listing(
        &self,
        changed: &[ItemIdx],
        n: usize,
        limit: usize,
    ) -> (Vec<UserId>, usize) {
        use rayon::prelude::*;
        if changed.is_empty() {
            return (Vec::new(), 0);
        }
        let allowed = self.allowed(None, changed);
        // Rules may bring any of the candidates in (boosts, diversity).
        let n = self.rules.rules().candidates(n);
        let holds = |history: &[(ItemIdx, f32)], region: &Region, model: &dyn Recommender| {
            model
                .recommend(&Query {
                    history,
                    n,
                    exclude_seen: true,
                    context_item: None,
                    region: Some(region.as_str()),
                    allowed: allowed.as_deref(),
                })
                .iter()
                .any(|s| changed.contains(&s.item))
        };
        // Per region and variant (`None`: no experiment runs).
        let arms: Vec<(Option<&str>, &Arc<dyn Recommender>)> = match &self.experiment {
            Some(e) => e.arms().map(|(v, m)| (Some(v), m)).collect(),
            None => vec![(None, &self.model)],
        };
        let mut popular_holds: HashMap<(&Region, Option<&str>), bool> = HashMap::new();
        for region in &self.user_region {
            for &(variant, model) in &arms {
                popular_holds
                    .entry((region, variant))
                    .or_insert_with(|| holds(&[], region, &**model));
            }
        }
        let scanned = self.user_ids.len().min(limit);
        let users = (0..scanned)
            .into_par_iter()
            .filter(|&u| {
                let region = &self.user_region[u];
                let (model, variant) = self.model_for(&self.user_ids[u]);
                match self.history[u].as_slice() {
                    [] => popular_holds
                        .get(&(region, variant))
                        .copied()
                        .unwrap_or(false),
                    history => holds(history, region, &**model),
                }
            })
            .filter_map(|u| UserId::parse(&self.user_ids[u]).ok())
            .collect();
        (users, self.user_ids.len() - scanned)
    }

    /// All item ids the model knows, in index order.
    pub fn item_ids(&self) -> &[String] {
        &self.item_ids
    }

    /// One list of an item the model knows (`None`: an item it does not know; see
    /// [`Snapshot::item_fallback_doc`]): [`ItemList::Similar`] is the model's answer for
    /// a history of that one item; [`ItemList::BoughtTogether`] its co-purchases, or the
    /// popular list of its category when it has none. Never the item itself, never an
    /// item that may not be served; `req.category` masks as for users, and the tenant's
    /// business rules apply as to users' lists (no fatigue: there is no user).
    pub fn item_list_doc(
        &self,
        list: ItemList,
        item: &ItemId,
        req: &DocRequest<'_>,
        now: u64,
    ) -> Option<RecommendationDoc> {
        let idx = self.item_idx(item.as_str())?;
        let region = req.region.unwrap_or_else(|| self.regions.default_region());
        let history = [(idx, 1.0)];
        let items = match list {
            // As a user's list is ranked: the tenant's rules apply.
            ItemList::Similar => self.ranked(&*self.model, &history, Some(idx), region, req),
            ItemList::BoughtTogether => {
                let current = self.rules.get();
                let rules = &current.rules;
                let allowed = self.allowed_under(current.version, rules, req.category, &[]);
                let may = |j: ItemIdx| {
                    j != idx
                        && allowed
                            .as_deref()
                            .is_none_or(|m| m.get(j as usize).copied().unwrap_or(false))
                };
                let scored = self
                    .together
                    .get(idx as usize)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .filter(|(j, _)| may(*j))
                    .take(rules.candidates(req.n))
                    .map(|&(j, count)| Scored {
                        item: j,
                        score: count,
                        because: Because::SimilarTo(idx),
                    })
                    .collect();
                let mut items = self.items(scored);
                for i in &mut items {
                    i.reason = Some(format!("bought with {item}"));
                }
                if rules.rearranges() && !items.is_empty() {
                    let pinned = self.pinned(rules, &history, allowed.as_deref());
                    rules.arrange(items, pinned, req.n)
                } else {
                    items.truncate(req.n);
                    items
                }
            }
        };
        if items.is_empty() {
            let live = !self.live.is_empty();
            let category = self
                .categories_of(idx, item.as_str(), live)
                .into_iter()
                .next()
                .and_then(|c| Category::parse(&c).ok());
            return Some(self.item_fallback_doc(list, item, category.as_ref(), req, now));
        }
        Some(self.item_doc(list, item, region, items, now))
    }

    /// The list served for an item that has none of its own (unknown to the model, or
    /// never bought with anything): the popular list of `item_category` (its
    /// catalogue category, when known), then the popular list, without the item.
    /// `req.category` (a request's filter) wins over the item's own category.
    pub fn item_fallback_doc(
        &self,
        list: ItemList,
        item: &ItemId,
        item_category: Option<&Category>,
        req: &DocRequest<'_>,
        now: u64,
    ) -> RecommendationDoc {
        let region = req.region.unwrap_or_else(|| self.regions.default_region());
        let n = req.n.saturating_add(1).min(contract::MAX_N);
        let popular = |category: Option<&Category>| {
            let mut doc = self.popular_doc_in(region, n, category, now);
            doc.items.retain(|i| i.item_id != item.as_str());
            doc.items.truncate(req.n);
            doc.items
        };
        let mut items = popular(req.category.or(item_category));
        if items.is_empty() && req.category.is_none() && item_category.is_some() {
            items = popular(None);
        }
        self.item_doc(list, item, region, items, now)
    }

    fn item_doc(
        &self,
        list: ItemList,
        item: &ItemId,
        region: &Region,
        items: Vec<RecItem>,
        now: u64,
    ) -> RecommendationDoc {
        let mut doc = self.doc(contract::admin::POPULAR_USER_ID, region, items, now);
        doc.list = Some(list);
        doc.item_id = Some(item.as_str().to_owned());
        doc
    }

    /// Items' lists (of the first `limit` items in index order) of `n` items that,
    /// computed with the items `changed` allowed, hold one of them: the published item
    /// lists a change of those items touches ([`crate::availability`]). The second value
    /// is how many items were past `limit`. CPU-bound: run it on a blocking thread.
    pub fn item_lists_listing(
        &self,
        changed: &[ItemIdx],
        n: usize,
        limit: usize,
    ) -> (Vec<(ItemList, ItemId)>, usize) {
        use rayon::prelude::*;
        if changed.is_empty() {
            return (Vec::new(), 0);
        }
        let allowed = self.allowed(None, changed);
        // Rules may bring any of the candidates in (boosts, diversity).
        let n = self.rules.rules().candidates(n);
        let may = |j: ItemIdx| {
            allowed
                .as_deref()
                .is_none_or(|m| m.get(j as usize).copied().unwrap_or(false))
        };
        // An item never bought with anything is published with the popular list of its
        // first category: computed once per category.
        let mut popular_holds: HashMap<Option<String>, bool> = HashMap::new();
        let region = self.regions.default_region();
        for i in 0..self.item_ids.len() {
            let empty = self
                .together
                .get(i)
                .is_none_or(|t| !t.iter().any(|&(j, _)| j as usize != i && may(j)));
            if empty {
                let cat = self.item_categories.get(i).and_then(|c| c.first()).cloned();
                popular_holds.entry(cat).or_insert_with_key(|cat| {
                    let category = cat.as_deref().and_then(|c| Category::parse(c).ok());
                    self.model
                        .recommend(&Query {
                            history: &[],
                            n: n + 1,
                            exclude_seen: true,
                            context_item: None,
                            region: Some(region.as_str()),
                            allowed: self.allowed(category.as_ref(), changed).as_deref(),
                        })
                        .iter()
                        .any(|s| changed.contains(&s.item))
                });
            }
        }
        let scanned = self.item_ids.len().min(limit);
        let lists = (0..scanned)
            .into_par_iter()
            .flat_map_iter(|i| {
                let idx = i as ItemIdx;
                let history = [(idx, 1.0)];
                let similar = self
                    .model
                    .recommend(&Query {
                        history: &history,
                        n,
                        exclude_seen: true,
                        context_item: Some(idx),
                        region: Some(region.as_str()),
                        allowed: allowed.as_deref(),
                    })
                    .iter()
                    .any(|s| changed.contains(&s.item));
                let pairs = self.together.get(i).map_or(&[][..], Vec::as_slice);
                let mut kept = pairs
                    .iter()
                    .filter(|&&(j, _)| j != idx && may(j))
                    .peekable();
                let together = match kept.peek() {
                    Some(_) => kept.take(n).any(|(j, _)| changed.contains(j)),
                    None => {
                        let cat = self.item_categories.get(i).and_then(|c| c.first()).cloned();
                        popular_holds.get(&cat).copied().unwrap_or(false)
                    }
                };
                let item = ItemId::parse(&self.item_ids[i]).ok();
                [
                    (similar, ItemList::Similar),
                    (together, ItemList::BoughtTogether),
                ]
                .into_iter()
                .filter(|(holds, _)| *holds)
                .filter_map(move |(_, list)| Some((list, item.clone()?)))
            })
            .collect();
        (lists, self.item_ids.len() - scanned)
    }

    /// `<RFC 3339 trained-at>#<model name>`.
    pub fn model_version(&self) -> String {
        self.version_of(&*self.model)
    }

    /// `model`'s version as trained with this snapshot (an experiment variant's).
    fn version_of(&self, model: &dyn Recommender) -> String {
        format!("{}#{}", rfc3339(self.trained_at), model.name())
    }

    /// The model that makes `user`'s list and, while an experiment runs, the variant
    /// the user is in: the one place a list's model is picked.
    pub fn model_for(&self, user: &str) -> (&Arc<dyn Recommender>, Option<&str>) {
        match &self.experiment {
            Some(e) => {
                let arm = e.arm(user);
                (arm.model, Some(arm.variant))
            }
            None => (&self.model, None),
        }
    }

    /// All user ids, in index order.
    pub fn user_ids(&self) -> &[String] {
        &self.user_ids
    }

    /// Whether the user is known and has at least one interaction.
    pub fn has_history(&self, user: &UserId) -> bool {
        self.user_index
            .get(user.as_str())
            .is_some_and(|&u| !self.history[u as usize].is_empty())
    }

    /// The region of a known user (from their country; the map's default when the
    /// country is unknown), or `None` for users not in the store.
    pub fn known_user_region(&self, user: &UserId) -> Option<&Region> {
        self.user_index
            .get(user.as_str())
            .map(|&u| &self.user_region[u as usize])
    }

    fn reason(&self, because: &Because) -> String {
        let item = |i: &ItemIdx| self.item_ids.get(*i as usize).map_or("?", |s| s.as_str());
        match because {
            Because::SimilarTo(i) => format!("similar to {}", item(i)),
            Because::ContentLike(i) => format!("like {}", item(i)),
            Because::SimilarUsers => "liked by people with similar taste".into(),
            Because::Popular => "popular".into(),
            Because::PopularIn(r) => format!("popular in {r}"),
            Because::Trending => "trending".into(),
            Because::Blend => "recommended for you".into(),
        }
    }

    /// An item's categories as a document lists them: as written since the snapshot,
    /// else as read; bounded and checked by the contract's rules (the catalogue's own
    /// rules guarantee both; a value that broke them would be left out, never make the
    /// document invalid).
    fn categories_of(&self, item: ItemIdx, id: &str, live: bool) -> Vec<String> {
        let cats = match live.then(|| self.live.get(id)).flatten() {
            Some(l) => l.categories,
            None => self
                .item_categories
                .get(item as usize)
                .cloned()
                .unwrap_or_default(),
        };
        cats.into_iter()
            .filter(|c| contract::params::check_category(c).is_ok())
            .take(MAX_ITEM_CATEGORIES)
            .collect()
    }

    fn items(&self, scored: Vec<Scored>) -> Vec<RecItem> {
        let live = !self.live.is_empty();
        scored
            .into_iter()
            .filter_map(|s| {
                let id = self.item_ids.get(s.item as usize)?;
                Some(RecItem {
                    item_id: id.clone(),
                    score: (f64::from(s.score) * 1e6).round() / 1e6,
                    reason: Some(self.reason(&s.because)),
                    categories: self.categories_of(s.item, id, live),
                })
            })
            .collect()
    }

    /// The document for one user (known or not), generated at `now`.
    pub fn user_doc(&self, user: &UserId, req: &DocRequest<'_>, now: u64) -> RecommendationDoc {
        let region = req
            .region
            .or_else(|| self.known_user_region(user))
            .or(req.fallback_region)
            .unwrap_or_else(|| self.regions.default_region());
        let history: &[(ItemIdx, f32)] = self
            .user_index
            .get(user.as_str())
            .map_or(&[], |&u| self.history[u as usize].as_slice());
        self.doc_with(user, region, history, req, now)
    }

    /// The document for one user scored with `history` (item id, weight) instead of
    /// the history this snapshot was built with: used to republish a user right after
    /// new events, before the next retrain. Items the model does not know are left out.
    pub fn user_doc_with_history(
        &self,
        user: &UserId,
        history: &[(String, f32)],
        req: &DocRequest<'_>,
        now: u64,
    ) -> RecommendationDoc {
        let region = req
            .region
            .or_else(|| self.known_user_region(user))
            .or(req.fallback_region)
            .unwrap_or_else(|| self.regions.default_region());
        let mut indexed: Vec<(ItemIdx, f32)> = history
            .iter()
            .filter_map(|(item, w)| Some((*self.item_index.get(item.as_str())?, *w)))
            .collect();
        indexed.sort_by_key(|&(i, _)| i);
        indexed.dedup_by(|next, kept| {
            if next.0 == kept.0 {
                kept.1 += next.1;
                true
            } else {
                false
            }
        });
        self.doc_with(user, region, &indexed, req, now)
    }

    fn doc_with(
        &self,
        user: &UserId,
        region: &Region,
        history: &[(ItemIdx, f32)],
        req: &DocRequest<'_>,
        now: u64,
    ) -> RecommendationDoc {
        let context_item = req
            .context
            .and_then(|c| self.item_index.get(c.as_str()).copied());
        let (model, variant) = self.model_for(user.as_str());
        let items = self.ranked(&**model, history, context_item, region, req);
        let mut doc = self.doc(user.as_str(), region, items, now);
        if let Some(variant) = variant {
            doc.variant = Some(variant.to_owned());
            doc.model_version = self.version_of(&**model);
        }
        doc
    }

    /// The popular list of a region, with `user_id` `"*"`.
    pub fn popular_doc(&self, region: &Region, n: usize, now: u64) -> RecommendationDoc {
        self.popular_doc_in(region, n, None, now)
    }

    /// [`Snapshot::popular_doc`] of one category only (`None`: every category).
    pub fn popular_doc_in(
        &self,
        region: &Region,
        n: usize,
        category: Option<&Category>,
        now: u64,
    ) -> RecommendationDoc {
        let req = DocRequest {
            n,
            category,
            ..Default::default()
        };
        let items = self.ranked(&*self.model, &[], None, region, &req);
        self.doc(contract::admin::POPULAR_USER_ID, region, items, now)
    }

    fn doc(
        &self,
        user: &str,
        region: &Region,
        mut items: Vec<RecItem>,
        now: u64,
    ) -> RecommendationDoc {
        fit_in_a_document(&mut items);
        RecommendationDoc {
            tenant: self.tenant.as_str().to_owned(),
            user_id: user.to_owned(),
            region: region.as_str().to_owned(),
            items,
            model_version: self.model_version(),
            generated_at: now,
            fresh_for_s: self.freshness.fresh_for_s,
            stale_for_s: self.freshness.stale_for_s,
            list: None,
            item_id: None,
            variant: None,
        }
    }
}

/// Bytes a document's fields other than its items may take: ids, region, version and
/// numbers, with room to spare.
const DOC_ENVELOPE_BYTES: usize = 1024;

/// An upper bound of an item's bytes in a document's JSON: every string's characters
/// counted twice (an escaped quote or backslash takes two bytes; control characters
/// are refused by the id and category rules, and the reason is ours), plus the keys,
/// the score and the punctuation.
fn item_bytes_bound(item: &RecItem) -> usize {
    let text = item.item_id.len()
        + item.reason.as_ref().map_or(0, String::len)
        + item.categories.iter().map(|c| c.len() + 3).sum::<usize>();
    2 * text + 96
}

/// Cuts `items` from the end until the document surely fits in
/// [`contract::MAX_DOC_BYTES`]: only items with long ids and many long categories get
/// near it (50 items of 20 categories of 64 bytes would not fit), and a reader refuses
/// a document past it.
fn fit_in_a_document(items: &mut Vec<RecItem>) {
    let budget = contract::MAX_DOC_BYTES - DOC_ENVELOPE_BYTES;
    let mut total = 0;
    let fits = items
        .iter()
        .take_while(|i| {
            total += item_bytes_bound(i);
            total <= budget
        })
        .count();
    items.truncate(fits);
}

/// The model of the test fixtures: the engine's item-kNN (k = 50, shrink 10), small and
/// quick to train, with "similar to …" reasons that tests can check.
#[cfg(test)]
pub(crate) fn fixture_model(
    data: &crate::model::TrainingData,
) -> Arc<dyn crate::model::Recommender> {
    crate::engine::build(
        &crate::engine::ModelSpec::ItemKnn {
            k: 50,
            shrink: 10.0,
        },
        data,
    )
    .expect("item-kNN builds on any data")
}

/// A small trained snapshot over generated demo data, for tests.
#[cfg(test)]
pub(crate) fn fixture(dir: &std::path::Path) -> (Snapshot, crate::store::sqlite::Database) {
    let mut store =
        crate::store::sqlite::Database::open(&dir.join("fixture.sqlite")).expect("open store");
    crate::demo_data::generate_into(
        &mut store,
        &crate::demo_data::DemoSpec {
            users: 200,
            items: 80,
            seed: 1,
            interactions_per_user: 8,
            catalogue: Default::default(),
        },
        |_| {},
    )
    .expect("demo data");
    let snapshot = Snapshot::build(
        store.training_set().expect("training set"),
        Tenant::default_tenant(),
        RegionMap::builtin(),
        Freshness::default(),
        fixture_model,
    );
    (snapshot, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_store_gives_empty_documents_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::Database::open(&dir.path().join("empty.sqlite")).unwrap();
        let snap = Snapshot::build(
            store.training_set().unwrap(),
            Tenant::default_tenant(),
            RegionMap::builtin(),
            Freshness::default(),
            fixture_model,
        );
        let user = UserId::parse("u1").unwrap();
        let doc = snap.user_doc(
            &user,
            &DocRequest {
                n: 10,
                ..Default::default()
            },
            7,
        );
        assert!(doc.items.is_empty());
        assert_eq!(doc.region, "us-east");
        assert_eq!(doc.generated_at, 7);
        let region = Region::parse("asia").unwrap();
        assert!(snap.popular_doc(&region, 10, 7).items.is_empty());
    }
}
