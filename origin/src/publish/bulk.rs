//! The bulk publish behind `origin publish`: every (or every listed) user's document
//! and the regions' popular lists into one new generation at every target, then the
//! generation activated at each.
//!
//! Users are computed in chunks (in parallel with rayon), so memory stays bounded
//! however many users there are; each chunk goes to every target before the next is
//! computed. Progress is reported through a callback after each chunk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::keys::{generation_name, Generation};
use contract::{RecommendationDoc, Tenant, UserId};
use rayon::prelude::*;

use super::{PublishError, PublishTargets};
use crate::snapshot::{now_unix, DocRequest, Snapshot};

/// Names tried for a generation in one second before giving up (other publishers may
/// be taking names at the same time).
const GENERATION_TRIES: u32 = 10_000;

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
    /// Per target, in the order of the job's targets.
    pub targets: Vec<TargetReport>,
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
) -> Result<Generation, PublishError> {
    let mut counter = 0;
    for t in targets.iter() {
        counter = counter.max(t.first_free_counter(now).await?);
    }
    'names: for _ in 0..GENERATION_TRIES {
        let generation = generation_name(now, counter);
        counter = counter.saturating_add(1);
        for t in targets.iter() {
            match t.begin(tenant, &generation).await {
                Ok(()) => {}
                Err(PublishError::GenerationTaken(_)) => continue 'names,
                Err(e) => return Err(e),
            }
        }
        return Ok(generation);
    }
    Err(PublishError::NoFreeGeneration(GENERATION_TRIES))
}

/// Computes and publishes every (or every listed) user's document into one new
/// generation at every target, then activates it at each.
pub async fn publish_all(
    snapshot: Arc<Snapshot>,
    job: PublishJob,
) -> Result<PublishReport, PublishError> {
    let started = Instant::now();
    let now = now_unix();
    let generation = begin_generation(&job.targets, &job.tenant, now).await?;
    let users: Vec<UserId> = match job.users {
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
        targets: job
            .targets
            .iter()
            .map(|t| TargetReport {
                target: t.name(),
                documents: 0,
                pruned_generations: 0,
            })
            .collect(),
        elapsed: Duration::ZERO,
    };
    let n = job.n;
    for chunk in users.chunks(job.chunk.max(1)) {
        let chunk = chunk.to_vec();
        let snap = snapshot.clone();
        let docs: Vec<RecommendationDoc> = tokio::task::spawn_blocking(move || {
            chunk
                .par_iter()
                .map(|u| {
                    snap.user_doc(
                        u,
                        &DocRequest {
                            n,
                            ..Default::default()
                        },
                        now,
                    )
                })
                .collect()
        })
        .await
        .map_err(|e| PublishError::Task(e.to_string()))?;
        let docs = Arc::new(docs);
        for (target, tally) in job.targets.iter().zip(&mut report.targets) {
            tally.documents += target
                .write_users(&job.tenant, &generation, docs.clone())
                .await?;
        }
        report.users += docs.len();
        report_progress(report.users);
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
        tally.pruned_generations = target.activate(&job.tenant, &generation).await?.pruned;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
