//! Generated demo data: a made-up catalogue, users in many countries and their
//! interactions, so the whole system runs anywhere without licensed data sets.
//!
//! Everything comes from one seeded ChaCha generator, so the same seed and sizes give
//! the same database content. The data has the shape recommenders feed on: item
//! popularity is skewed (Zipf-like), users have tastes (two preferred categories) and
//! regions lean towards their own categories, so regional popular lists differ.
//! Users are generated in chunks on a blocking thread while the store writes the
//! previous chunk ([`Store::replace_content`], SQLite or PostgreSQL alike), so memory
//! stays bounded for millions of users.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::store::sqlite::Database;
use crate::store::{Batch, InteractionRow, ItemRow, Load, Store, StoreError, UserRow};

/// Users generated and written per transaction.
pub const USER_CHUNK: u64 = 10_000;

/// Sizes, seed and kind of a demo data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoSpec {
    pub users: u64,
    pub items: u64,
    pub seed: u64,
    pub interactions_per_user: u32,
    pub catalogue: Catalogue,
}

/// What the demo shop sells (`origin demo-data --catalogue`): its categories, item
/// titles, item id prefix and prices. `mixed` is the original demo catalogue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Catalogue {
    /// Every kind of goods (`i1`, `i2`, …), no prices.
    #[default]
    Mixed,
    /// A bookshop (`b1`, …): genres, prices 5–45 EUR, a few books out of stock.
    Books,
    /// A fashion shop (`f1`, …): garments, prices 15–300 EUR, a few items out of stock.
    Fashion,
    /// A news site (`n1`, …): sections, articles, no prices, everything available.
    News,
}

impl Catalogue {
    fn categories(self) -> &'static [&'static str] {
        match self {
            Catalogue::Mixed => CATEGORIES,
            Catalogue::Books => &[
                "fiction",
                "mystery",
                "fantasy",
                "science",
                "history",
                "cooking",
                "travel",
                "children",
                "poetry",
                "biography",
                "comics",
                "classics",
            ],
            Catalogue::Fashion => &[
                "dresses",
                "shoes",
                "jackets",
                "bags",
                "knitwear",
                "denim",
                "sportswear",
                "accessories",
                "shirts",
                "jewellery",
                "swimwear",
                "hats",
            ],
            Catalogue::News => &[
                "politics", "business", "science", "sport", "culture", "tech", "health", "climate",
                "world", "opinion", "travel", "food",
            ],
        }
    }

    fn nouns(self) -> &'static [&'static str] {
        match self {
            Catalogue::Fashion => &[
                "Dress", "Sneaker", "Parka", "Tote", "Cardigan", "Jeans", "Hoodie", "Scarf",
                "Blouse", "Necklace", "Boot", "Beanie", "Blazer", "Skirt", "Sandal",
            ],
            Catalogue::News => &[
                "Election",
                "Markets",
                "Discovery",
                "Final",
                "Festival",
                "Launch",
                "Study",
                "Summit",
                "Storm",
                "Debate",
                "Reform",
                "Recipe",
                "Record",
                "Strike",
            ],
            Catalogue::Mixed | Catalogue::Books => NOUNS,
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Catalogue::Mixed => "i",
            Catalogue::Books => "b",
            Catalogue::Fashion => "f",
            Catalogue::News => "n",
        }
    }

    /// The price range in EUR (none for articles and the mixed catalogue).
    fn prices(self) -> Option<(f64, f64)> {
        match self {
            Catalogue::Books => Some((5.0, 45.0)),
            Catalogue::Fashion => Some((15.0, 300.0)),
            Catalogue::Mixed | Catalogue::News => None,
        }
    }

    /// The share of items out of stock.
    fn out_of_stock(self) -> f64 {
        match self {
            Catalogue::Books | Catalogue::Fashion => 0.05,
            Catalogue::Mixed | Catalogue::News => 0.0,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub users: u64,
    pub items: u64,
    pub interactions: u64,
}

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("--items is {0}; at most {max} are supported", max = u32::MAX)]
    TooManyItems(u64),
}

const ADJECTIVES: &[&str] = &[
    "Silent", "Golden", "Crimson", "Hidden", "Electric", "Quiet", "Wild", "Frozen", "Velvet",
    "Broken", "Lucky", "Distant", "Bright", "Hollow", "Paper", "Iron", "Secret", "Lost",
    "Midnight", "Northern", "Gentle", "Restless", "Ancient", "Neon", "Little", "Endless",
];
const NOUNS: &[&str] = &[
    "Lantern", "River", "Garden", "Machine", "Harbor", "Forest", "Signal", "Orchard", "Engine",
    "Mountain", "Library", "Comet", "Island", "Bridge", "Kitchen", "Compass", "Meadow", "Tower",
    "Voyage", "Atlas", "Mirror", "Window", "Canyon", "Festival", "Workshop", "Planet",
];
const PLACES: &[&str] = &[
    "the North",
    "Tomorrow",
    "the Valley",
    "Glass",
    "Salt",
    "the Coast",
    "Dreams",
    "Stone",
];
const CATEGORIES: &[&str] = &[
    "books", "music", "film", "games", "sports", "outdoor", "kitchen", "garden", "travel",
    "fashion", "tech", "art",
];
const TAGS: &[&str] = &[
    "cozy",
    "classic",
    "new",
    "bestseller",
    "indie",
    "family",
    "gift",
    "eco",
    "retro",
    "premium",
    "budget",
    "handmade",
    "award-winning",
    "limited",
    "beginner",
    "pro",
];
/// Countries and relative weights; together they reach every builtin region.
const COUNTRIES: &[(&str, u32)] = &[
    ("US", 30),
    ("CA", 6),
    ("GB", 10),
    ("DE", 10),
    ("FR", 8),
    ("SE", 4),
    ("ES", 4),
    ("JP", 8),
    ("KR", 5),
    ("AU", 5),
    ("SG", 3),
    ("BR", 4),
    ("MX", 3),
];
/// Base of generated timestamps (2025-09-01T00:00:00Z); no wall clock, for determinism.
const BASE_TS: i64 = 1_756_684_800;
const DAY: i64 = 86_400;

/// Cumulative weights for sampling by binary search.
struct Cdf {
    items: Vec<u32>,
    cumulative: Vec<f64>,
}

impl Cdf {
    fn new(items: Vec<u32>, weight: impl Fn(u32) -> f64) -> Self {
        let mut total = 0.0;
        let cumulative = items
            .iter()
            .map(|&i| {
                total += weight(i);
                total
            })
            .collect();
        Cdf { items, cumulative }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        let total = *self.cumulative.last()?;
        let x = rng.gen::<f64>() * total;
        let at = self.cumulative.partition_point(|&c| c <= x);
        self.items.get(at.min(self.items.len() - 1)).copied()
    }
}

fn region_of(country: Option<&str>) -> usize {
    match country {
        Some("US" | "CA" | "BR" | "MX") | None => 0,
        Some("GB" | "DE" | "FR" | "SE" | "ES") => 2,
        Some(_) => 3,
    }
}

/// Batches of users (with their interactions) the generator may run ahead of the store.
const CHUNKS_AHEAD: usize = 2;

/// Replaces the store's content (its tenant's items, users and interactions) with a
/// generated data set; `progress` is called with the number of users generated so far.
/// Needs a tokio runtime.
pub async fn generate(
    store: &dyn Store,
    spec: &DemoSpec,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<DemoSummary, DemoError> {
    if spec.items > u64::from(u32::MAX) {
        return Err(DemoError::TooManyItems(spec.items));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    let spec = *spec;
    let producer = tokio::task::spawn_blocking(move || {
        let summary = produce(
            &spec,
            |batch| tx.blocking_send(Load::Batch(batch)).is_ok(),
            progress,
        )?;
        tx.blocking_send(Load::End).ok()?;
        Some(summary)
    });
    let meta = vec![("demo_seed".to_owned(), spec.seed.to_string())];
    let stored = store.replace_content(meta, rx).await;
    let produced = producer
        .await
        .map_err(|e| StoreError::Task(format!("generating demo data: {e}")))?;
    stored?;
    // The store took every batch and the end, so the producer finished.
    produced.ok_or_else(|| StoreError::Task("demo data generation stopped early".into()).into())
}

/// [`generate`] for a synchronous caller holding a SQLite [`Database`] (test fixtures):
/// the same data, written the way [`crate::store::SqliteStore`] writes it.
pub fn generate_into(
    db: &mut Database,
    spec: &DemoSpec,
    progress: impl FnMut(u64) + Send,
) -> Result<DemoSummary, DemoError> {
    if spec.items > u64::from(u32::MAX) {
        return Err(DemoError::TooManyItems(spec.items));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_AHEAD);
    let meta = vec![("demo_seed".to_owned(), spec.seed.to_string())];
    let (produced, stored) = std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let summary = produce(spec, |batch| tx.send(Load::Batch(batch)).is_ok(), progress)?;
            tx.send(Load::End).ok()?;
            Some(summary)
        });
        let stored = db.replace_content(&meta, || rx.recv().ok());
        drop(rx);
        (producer.join(), stored)
    });
    stored?;
    match produced {
        Ok(Some(summary)) => Ok(summary),
        _ => Err(StoreError::Task("demo data generation stopped early".into()).into()),
    }
}

/// Generates the data set, handing each chunk to `send` (which says whether it was
/// taken; `None` when not, the receiver being gone).
fn produce(
    spec: &DemoSpec,
    mut send: impl FnMut(Batch) -> bool,
    mut progress: impl FnMut(u64),
) -> Option<DemoSummary> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    // Prices and stock from a generator of their own, so the mixed catalogue's data stays
    // what it always was for a seed.
    let mut shop_rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5E0F_u64);
    let kind = spec.catalogue;
    let categories_of = kind.categories();
    let nouns = kind.nouns();

    // Catalogue: category, tags and a popularity rank per item.
    let n_items = spec.items as u32;
    let mut rank: Vec<u32> = (0..n_items).collect();
    rank.shuffle(&mut rng);
    let mut primary = Vec::with_capacity(n_items as usize);
    let mut batch = Batch::default();
    for i in 0..n_items {
        let c1 = rng.gen_range(0..categories_of.len());
        let mut categories = vec![categories_of[c1].to_owned()];
        if rng.gen_bool(0.3) {
            let c2 = rng.gen_range(0..categories_of.len());
            if c2 != c1 {
                categories.push(categories_of[c2].to_owned());
            }
        }
        primary.push(c1);
        let mut title = format!(
            "{} {}",
            ADJECTIVES[rng.gen_range(0..ADJECTIVES.len())],
            nouns[rng.gen_range(0..nouns.len())]
        );
        if rng.gen_bool(0.25) {
            title.push_str(" of ");
            title.push_str(PLACES[rng.gen_range(0..PLACES.len())]);
        }
        let n_tags = rng.gen_range(1..=3);
        let mut tags: Vec<String> = (0..n_tags)
            .map(|_| TAGS[rng.gen_range(0..TAGS.len())].to_owned())
            .collect();
        tags.dedup();
        let price = kind.prices().map(|(lo, hi)| {
            let cents = (shop_rng.gen_range(lo..hi) * 100.0).round();
            cents / 100.0
        });
        batch.items.push(ItemRow {
            item_id: format!("{}{}", kind.id_prefix(), i + 1),
            title,
            categories,
            tags,
            created_at: BASE_TS - rng.gen_range(0..365 * DAY),
            currency: price.map(|_| "EUR".to_owned()),
            price,
            available: !shop_rng.gen_bool(kind.out_of_stock()),
            ..Default::default()
        });
        if batch.items.len() >= 50_000 {
            send(std::mem::take(&mut batch)).then_some(())?;
        }
    }
    send(std::mem::take(&mut batch)).then_some(())?;

    let weight = |i: u32| 1.0 / (f64::from(rank[i as usize]) + 1.0).powf(0.9);
    let global = Cdf::new((0..n_items).collect(), weight);
    let by_category: Vec<Cdf> = (0..categories_of.len())
        .map(|c| {
            Cdf::new(
                (0..n_items).filter(|&i| primary[i as usize] == c).collect(),
                weight,
            )
        })
        .collect();
    let country_total: u32 = COUNTRIES.iter().map(|c| c.1).sum();

    let mut summary = DemoSummary {
        users: 0,
        items: spec.items,
        interactions: 0,
    };
    let per_user = spec.interactions_per_user.max(1);
    let mut picked: Vec<u32> = Vec::new();
    for u in 0..spec.users {
        let country = if rng.gen_bool(0.02) {
            None
        } else {
            let mut x = rng.gen_range(0..country_total);
            let mut found = COUNTRIES[0].0;
            for &(c, w) in COUNTRIES {
                if x < w {
                    found = c;
                    break;
                }
                x -= w;
            }
            Some(found)
        };
        // Regions lean towards three "home" categories of their own.
        let home = region_of(country) * 3;
        let taste: [usize; 2] = std::array::from_fn(|_| {
            if rng.gen_bool(0.6) {
                (home + rng.gen_range(0..3)) % categories_of.len()
            } else {
                rng.gen_range(0..categories_of.len())
            }
        });
        let user_id = format!("u{}", u + 1);
        let want = (per_user / 2 + rng.gen_range(0..=per_user)).min(n_items) as usize;
        picked.clear();
        let mut tries = 0;
        while picked.len() < want && tries < want * 8 {
            tries += 1;
            let item = if rng.gen_bool(0.75) {
                by_category[taste[rng.gen_range(0..2)]].sample(&mut rng)
            } else {
                global.sample(&mut rng)
            };
            if let Some(item) = item {
                if !picked.contains(&item) {
                    picked.push(item);
                }
            }
        }
        for &item in &picked {
            batch.interactions.push(InteractionRow {
                user_id: user_id.clone(),
                item_id: format!("{}{}", kind.id_prefix(), item + 1),
                weight: if rng.gen_bool(0.2) { 3.0 } else { 1.0 },
                ts: BASE_TS + rng.gen_range(0..90 * DAY),
            });
        }
        summary.interactions += picked.len() as u64;
        batch.users.push(UserRow {
            user_id,
            country: country.map(str::to_owned),
            segment: None,
        });
        summary.users += 1;
        if batch.users.len() as u64 >= USER_CHUNK {
            send(std::mem::take(&mut batch)).then_some(())?;
            progress(summary.users);
        }
    }
    send(batch).then_some(())?;
    progress(summary.users);
    Some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn spec(seed: u64) -> DemoSpec {
        DemoSpec {
            users: 300,
            items: 100,
            seed,
            interactions_per_user: 10,
            catalogue: Default::default(),
        }
    }

    async fn hash_of(seed: u64) -> (u64, crate::store::Counts) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        let s = SqliteStore::open(&path, 1).unwrap();
        generate(&s, &spec(seed), |_| {}).await.unwrap();
        let db = Database::open(&path).unwrap();
        (db.content_hash().unwrap(), db.counts().unwrap())
    }

    #[test]
    fn each_catalogue_has_its_own_ids_categories_prices_and_stock() {
        let items = |catalogue: Catalogue| {
            let mut items = Vec::new();
            let spec = DemoSpec {
                items: 400,
                catalogue,
                ..spec(3)
            };
            produce(
                &spec,
                |b| {
                    items.extend(b.items);
                    true
                },
                |_| {},
            )
            .unwrap();
            items
        };
        for kind in [Catalogue::Books, Catalogue::Fashion, Catalogue::News] {
            let items = items(kind);
            assert_eq!(items.len(), 400);
            assert!(items
                .iter()
                .all(|i| i.item_id.starts_with(kind.id_prefix())));
            assert!(items
                .iter()
                .all(|i| kind.categories().contains(&i.categories[0].as_str())));
            let out = items.iter().filter(|i| !i.available).count();
            match kind.prices() {
                Some((lo, hi)) => {
                    assert!(items.iter().all(|i| {
                        i.price.is_some_and(|p| (lo..=hi).contains(&p))
                            && i.currency.as_deref() == Some("EUR")
                    }));
                    assert!(
                        (5..=40).contains(&out),
                        "{kind:?}: {out} of 400 out of stock"
                    );
                }
                None => {
                    assert!(items.iter().all(|i| i.price.is_none()));
                    assert_eq!(out, 0);
                }
            }
        }
        // The mixed catalogue is what it was: ids `i…`, no prices, everything in stock.
        let mixed = items(Catalogue::Mixed);
        assert!(mixed
            .iter()
            .all(|i| i.item_id.starts_with('i') && i.price.is_none() && i.available));
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_content() {
        let (a, counts) = hash_of(7).await;
        let (b, _) = hash_of(7).await;
        assert_eq!(a, b);
        assert_eq!(counts.users, 300);
        assert_eq!(counts.items, 100);
        assert!(counts.interactions > 300 * 5);
        let (c, _) = hash_of(8).await;
        assert_ne!(a, c);
    }

    #[tokio::test]
    async fn users_come_from_every_region() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("d.sqlite"), 1).unwrap();
        generate(&s, &spec(1), |_| {}).await.unwrap();
        let maps = s.training_set().await.unwrap().maps;
        let map = contract::RegionMap::builtin();
        let regions: std::collections::BTreeSet<&str> = maps
            .user_country
            .iter()
            .map(|c| map.region_for_country(c.as_deref()).as_str())
            .collect();
        for r in ["us-east", "europe", "asia"] {
            assert!(regions.contains(r), "{r}");
        }
    }

    #[tokio::test]
    async fn regenerating_replaces_rather_than_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sqlite");
        let s = SqliteStore::open(&path, 1).unwrap();
        generate(&s, &spec(3), |_| {}).await.unwrap();
        let first = Database::open(&path).unwrap().content_hash().unwrap();
        generate(&s, &spec(3), |_| {}).await.unwrap();
        assert_eq!(
            Database::open(&path).unwrap().content_hash().unwrap(),
            first
        );
    }

    /// The training set's rows, comparable across backends.
    fn rows(set: &crate::store::TrainingSet) -> Vec<(String, String, u32, i64)> {
        let mut v: Vec<_> = set
            .data
            .interactions
            .iter()
            .map(|i| {
                (
                    set.maps.user_ids[i.user as usize].clone(),
                    set.maps.item_ids[i.item as usize].clone(),
                    i.weight.to_bits(),
                    i.timestamp,
                )
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// PostgreSQL gets exactly the data SQLite gets from one seed (more than one chunk
    /// of users), a second run replaces it, and a load cut off before its end stores
    /// nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_holds_what_sqlite_holds_and_a_cut_load_stores_nothing() {
        let Some(server) = crate::store::postgres::test_server::shared() else {
            return;
        };
        let url = server.database().await;
        let spec = DemoSpec {
            users: USER_CHUNK + 500,
            items: 200,
            seed: 5,
            interactions_per_user: 4,
            catalogue: Default::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&dir.path().join("d.sqlite"), 1).unwrap();
        let pg = crate::store::PostgresStore::connect(&url, "default", 1)
            .await
            .unwrap();
        let want = generate(&sqlite, &spec, |_| {}).await.unwrap();
        let mut seen = Vec::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let got = generate(&pg, &spec, move |n| tx.send(n).unwrap())
            .await
            .unwrap();
        while let Ok(n) = rx.try_recv() {
            seen.push(n);
        }
        assert_eq!(got, want);
        assert_eq!(
            seen.last(),
            Some(&spec.users),
            "progress reaches every user"
        );
        let (a, b) = (
            sqlite.training_set().await.unwrap(),
            pg.training_set().await.unwrap(),
        );
        assert_eq!(b.counts.users, spec.users);
        assert_eq!(a.counts, b.counts);
        assert_eq!(a.maps.user_ids, b.maps.user_ids);
        assert_eq!(a.maps.user_country, b.maps.user_country);
        assert_eq!(a.data.item_text, b.data.item_text);
        assert_eq!(rows(&a), rows(&b));

        generate(&pg, &spec, |_| {}).await.unwrap();
        assert_eq!(
            pg.counts().await.unwrap(),
            a.counts,
            "replaced, not appended"
        );

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(Load::Batch(Batch {
            interactions: vec![InteractionRow {
                user_id: "late".into(),
                item_id: "i1".into(),
                weight: 1.0,
                ts: 1,
            }],
            ..Default::default()
        }))
        .await
        .unwrap();
        drop(tx);
        let cut = pg.replace_content(Vec::new(), rx).await;
        assert!(cut.is_err(), "a load without its end fails");
        assert_eq!(
            pg.counts().await.unwrap(),
            a.counts,
            "the old content stays, whole"
        );
    }
}
