//! The bulk publish behind `origin publish`: every (or every listed) user's document,
//! every item's lists (similar items, bought together; see [`crate::item_lists`]) and
//! the regions' popular lists into one new generation at every target, then the
//! generation activated at each.
//!
//! Users are computed in chunks (in parallel with rayon), so memory stays bounded
//! however many users there are; each chunk goes to every target before the next is
//! computed. Progress is reported through a callback after each chunk.
//!
//! **Delta publishing.** With a [`DeltaBase`] (the content hash of every document of an
//! earlier whole generation, the *base*), only documents whose content changed since the
//! base are written; the new generation's pointer names the base, and readers read an
//! unchanged document from the base (see [`contract::keys::GenerationPointer`]). Readers
//! still switch at once from one complete state to the next: the base is never changed
//! while pointers name it, and a delta generation is only activated once whole. The
//! report carries every document's hash, so a whole publish can become the next base.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::keys::{generation_name, Generation, GenerationPointer};
use contract::{RecommendationDoc, Tenant, UserId};
use rayon::prelude::*;

use super::{PublishError, PublishTargets};
use crate::snapshot::{now_unix, DocRequest, Snapshot};

/// Names tried for a generation in one second before giving up (other publishers may
/// be taking names at the same time).
const GENERATION_TRIES: u32 = 10_000;

/// A stable hash of what a reader is served from a document: item ids, reasons and scores
/// (to 1e-4; a score that moved less is not a change worth a write). FNV-1a over the
/// fields, so it is the same in every build and process (it is stored between publishes).
pub fn content_hash(items: &[contract::RecItem]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(&(items.len() as u64).to_le_bytes());
    for i in items {
        eat(i.item_id.as_bytes());
        eat(i.reason.as_deref().unwrap_or("").as_bytes());
        eat(&((i.score * 10_000.0).round() as i64).to_le_bytes());
    }
    h
}

/// The base a delta publish writes against.
#[derive(Debug, Clone)]
pub struct DeltaBase {
    pub generation: Generation,
    /// Content hash of each user's document in the base.
    pub hashes: HashMap<String, u64>,
}

/// How far a bulk publish has come: users done out of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// What [`publish_all`] should do.
pub struct PublishJob {
    pub tenant: Tenant,
    /// Items per document.
    pub n: usize,
    /// Only these users; all users of the store when `None`.
    pub users: Option<Vec<UserId>>,
    /// Users computed at a time.
    pub chunk: usize,
    /// Where the generation goes (each target in order for every step).
    pub targets: PublishTargets,
    /// Called after each chunk (and once before the first).
    pub progress: Option<Box<dyn Fn(Progress) + Send + Sync>>,
    /// Write only what changed since this base (every target must support deltas).
    pub delta: Option<DeltaBase>,
    /// Keep the generation's documents readable until then (unix seconds): set for a
    /// generation that later deltas will read through.
    pub keep_until: Option<u64>,
    /// Also write every item's lists (similar items and bought together), `n` items
    /// each. A generation without them leaves the edge to ask the origin on every
    /// item-list miss.
    pub item_lists: bool,
    /// Per user, the items the tenant's fatigue rule keeps out (see
    /// [`crate::store::fatigued_for`]; empty without a fatigue rule).
    pub fatigued: Arc<crate::rules::Fatigued>,
}

/// What one target took in a bulk publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    pub target: &'static str,
    /// User documents and popular lists written.
    pub documents: usize,
    /// Old generations deleted after activation.
    pub pruned_generations: usize,
}

/// What a bulk publish did.
#[derive(Debug, Clone)]
pub struct PublishReport {
    pub generation: String,
    pub users: usize,
    pub popular_lists: usize,
    /// Item lists computed (two per item the model knows, when the job asked for them).
    pub item_lists: usize,
    /// Per target, in the order of the job's targets.
    pub targets: Vec<TargetReport>,
    /// Users whose document was not written, unchanged since the delta's base.
    pub unchanged: usize,
    /// Item lists not written, unchanged since the delta's base.
    pub unchanged_item_lists: usize,
    /// The pointer activated.
    pub pointer: GenerationPointer,
    /// Content hash of every user's document computed (written or not).
    pub hashes: HashMap<String, u64>,
    pub elapsed: Duration,
}

impl PublishReport {
    pub fn users_per_second(&self) -> f64 {
        self.users as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Documents written to the target called `name` (0 when it was not a target).
    pub fn documents(&self, name: &str) -> usize {
        self.targets
            .iter()
            .find(|t| t.target == name)
            .map_or(0, |t| t.documents)
    }

    /// Old generations pruned, over all targets.
    pub fn pruned_generations(&self) -> usize {
        self.targets.iter().map(|t| t.pruned_generations).sum()
    }
}

/// Picks a generation name of second `now` that every target takes, starting above the
/// counters the targets have used.
async fn begin_generation(
    targets: &PublishTargets,
    tenant: &Tenant,
    now: u64,
    keep_until: Option<u64>,
) -> Result<Generation, PublishError> {
    let mut counter = 0;
    for t in targets.iter() {
        counter = counter.max(t.first_free_counter(now).await?);
    }
    'names: for _ in 0..GENERATION_TRIES {
        let generation = generation_name(now, counter);
        counter = counter.saturating_add(1);
        for t in targets.iter() {
            match t.begin(tenant, &generation, keep_until).await {
                Ok(()) => {}
                Err(PublishError::GenerationTaken(_)) => continue 'names,
                Err(e) => return Err(e),
            }
        }
        return Ok(generation);
    }
    Err(PublishError::NoFreeGeneration(GENERATION_TRIES))
}

/// Writes the documents whose content changed since the delta's base (all of them for
/// a whole publish) to every target, keeping every document's hash in the report.
async fn write_docs(
    job: &PublishJob,
    generation: &Generation,
    report: &mut PublishReport,
    docs: Vec<RecommendationDoc>,
) -> Result<(), PublishError> {
    let mut changed = Vec::with_capacity(docs.len());
    for doc in docs {
        let hash = content_hash(&doc.items);
        let key = super::hash_key(&doc);
        let same = job
            .delta
            .as_ref()
            .is_some_and(|d| d.hashes.get(&key) == Some(&hash));
        report.hashes.insert(key, hash);
        if same && doc.list.is_some() {
            report.unchanged_item_lists += 1;
        } else if same {
            report.unchanged += 1;
        } else {
            changed.push(doc);
        }
    }
    let docs = Arc::new(changed);
    for (target, tally) in job.targets.iter().zip(&mut report.targets) {
        tally.documents += target
            .write_users(&job.tenant, generation, docs.clone())
            .await?;
    }
    Ok(())
}

/// Computes and publishes every (or every listed) user's document into one new
/// generation at every target, then activates it at each.
pub async fn publish_all(
    snapshot: Arc<Snapshot>,
    mut job: PublishJob,
) -> Result<PublishReport, PublishError> {
    let started = Instant::now();
    let now = now_unix();
    if job.delta.is_some() {
        if let Some(t) = job.targets.iter().find(|t| !t.supports_delta()) {
            return Err(PublishError::DeltaUnsupported(t.name()));
        }
    }
    let generation = begin_generation(&job.targets, &job.tenant, now, job.keep_until).await?;
    let pointer = match &job.delta {
        None => GenerationPointer::whole(generation.clone()),
        Some(d) => GenerationPointer {
            generation: generation.clone(),
            base: Some(d.generation.clone()),
            published_at: now.max(1),
        },
    };
    let users: Vec<UserId> = match job.users.take() {
        Some(u) => u,
        None => snapshot
            .user_ids()
            .iter()
            .map(|u| UserId::parse(u).map_err(|e| PublishError::BadUserId(u.clone(), e)))
            .collect::<Result<_, _>>()?,
    };
    let report_progress = |done| {
        if let Some(f) = &job.progress {
            f(Progress {
                done,
                total: users.len(),
            });
        }
    };
    report_progress(0);
    let mut report = PublishReport {
        generation: generation.as_str().to_owned(),
        users: 0,
        popular_lists: 0,
        item_lists: 0,
        targets: job
            .targets
            .iter()
            .map(|t| TargetReport {
                target: t.name(),
                documents: 0,
                pruned_generations: 0,
            })
            .collect(),
        unchanged: 0,
        unchanged_item_lists: 0,
        pointer: pointer.clone(),
        hashes: HashMap::with_capacity(users.len()),
        elapsed: Duration::ZERO,
    };
    let n = job.n;
    for chunk in users.chunks(job.chunk.max(1)) {
        let chunk = chunk.to_vec();
        let snap = snapshot.clone();
        let fatigued = job.fatigued.clone();
        let docs: Vec<RecommendationDoc> = tokio::task::spawn_blocking(move || {
            chunk
                .par_iter()
                .map(|u| {
                    snap.user_doc(
                        u,
                        &DocRequest {
                            n,
                            fatigued: fatigued.of(u.as_str()),
                            ..Default::default()
                        },
                        now,
                    )
                })
                .collect()
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))?;
        let done = docs.len();
        write_docs(&job, &generation, &mut report, docs).await?;
        report.users += done;
        report_progress(report.users);
    }
    if job.item_lists {
        let items: Vec<contract::ItemId> = snapshot
            .item_ids()
            .iter()
            .filter_map(|i| contract::ItemId::parse(i).ok())
            .collect();
        // Two documents per item: half as many items per chunk as users.
        for chunk in items.chunks((job.chunk / 2).max(1)) {
            let chunk = chunk.to_vec();
            let snap = snapshot.clone();
            let docs: Vec<RecommendationDoc> = tokio::task::spawn_blocking(move || {
                chunk
                    .par_iter()
                    .flat_map_iter(|item| {
                        let req = DocRequest {
                            n,
                            ..Default::default()
                        };
                        contract::ItemList::ALL
                            .into_iter()
                            .filter_map(|list| snap.item_list_doc(list, item, &req, now))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .await
            .map_err(|e| PublishError::Task(e.to_string()))?;
            report.item_lists += docs.len();
            write_docs(&job, &generation, &mut report, docs).await?;
        }
    }
    let popular: Vec<RecommendationDoc> = snapshot
        .regions
        .regions()
        .iter()
        .map(|r| snapshot.popular_doc(r, contract::MAX_N, now))
        .collect();
    report.popular_lists = popular.len();
    for (target, tally) in job.targets.iter().zip(&mut report.targets) {
        tally.documents += target
            .write_popular(&job.tenant, &generation, &popular)
            .await?;
    }
    for (target, tally) in job.targets.iter().zip(&mut report.targets) {
        tally.pruned_generations = target.activate(&job.tenant, &pointer).await?.pruned;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
