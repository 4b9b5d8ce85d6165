//! The interface between the origin's serving and publishing code and the
//! recommendation models.
//!
//! Models train on [`TrainingData`] (interactions in dense index space plus item text
//! and user regions) and answer a [`Query`] for one user with scored items. Serving
//! code maps external ids to indices and back; models never see strings except item
//! text. A trained model is immutable and shared (`Arc<dyn Recommender>`), so the
//! cache-miss path and the bulk publisher reuse it without locking.

/// Dense index of a user, `0..n_users`.
pub type UserIdx = u32;
/// Dense index of an item, `0..n_items`.
pub type ItemIdx = u32;

/// One interaction of a user with an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    pub user: UserIdx,
    pub item: ItemIdx,
    /// Strength of the signal (1.0 for a view; ratings or purchases may weigh more).
    pub weight: f32,
    /// Unix seconds.
    pub timestamp: i64,
}

/// Text that describes an item, for content-based models.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemText {
    pub title: String,
    /// The catalogue's description (empty when none).
    pub description: String,
    pub categories: Vec<String>,
    pub tags: Vec<String>,
}

/// Everything a model may train on.
#[derive(Debug, Clone, Default)]
pub struct TrainingData {
    pub n_users: usize,
    pub n_items: usize,
    pub interactions: Vec<Interaction>,
    /// Indexed by [`ItemIdx`]; empty when no item text is known.
    pub item_text: Vec<ItemText>,
    /// Indexed by [`UserIdx`]: the user's region, when known.
    pub user_region: Vec<Option<String>>,
    /// Indexed by [`UserIdx`]: how much the user counts in popularity (0 to 1; users
    /// introduced en masse by one client count less). Empty: every user counts 1.
    pub user_weight: Vec<f32>,
}

/// Why an item was recommended; serving code turns it into the document's `reason`.
#[derive(Debug, Clone, PartialEq)]
pub enum Because {
    /// Close to an item the user interacted with.
    SimilarTo(ItemIdx),
    /// Liked by users with similar taste.
    SimilarUsers,
    /// Matches the text of items the user interacted with (or of the context item).
    ContentLike(ItemIdx),
    /// Popular overall.
    Popular,
    /// Popular in the named region.
    PopularIn(String),
    /// Gaining interactions recently.
    Trending,
    /// Several models agreed.
    Blend,
}

/// What a caller asks of a model for one user.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// The user's history: items with interaction weights. May be empty (cold start).
    pub history: &'a [(ItemIdx, f32)],
    /// How many items to return at most.
    pub n: usize,
    /// Leave out items in `history` (the default for serving).
    pub exclude_seen: bool,
    /// An item the user is looking at now, for context-aware or cold-start answers.
    pub context_item: Option<ItemIdx>,
    /// The user's region, for regional popularity.
    pub region: Option<&'a str>,
    /// Items the answer may hold, indexed by [`ItemIdx`] (`false`: never returned, e.g.
    /// unavailable or outside a requested category); `None`: every item. Masked before
    /// the top-n is taken, so the answer still has `n` items when enough are allowed.
    pub allowed: Option<&'a [bool]>,
}

/// A scored item in a model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub item: ItemIdx,
    pub score: f32,
    pub because: Because,
}

/// A trained model. Implementations are immutable after training and cheap to query.
pub trait Recommender: Send + Sync {
    /// Short name with the hyperparameters that matter, e.g. `ease-l500`, `itemknn-k50`.
    fn name(&self) -> String;

    /// The top `query.n` items for one user, best first, scores descending.
    fn recommend(&self, query: &Query<'_>) -> Vec<Scored>;

    /// Approximate heap bytes the trained model holds.
    fn heap_bytes(&self) -> usize;
}
