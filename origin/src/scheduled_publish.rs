//! The leader's periodic full publish (`origin serve --publish-every-s N`): every `N`
//! seconds the origin that leads (see [`crate::leader`]) computes every user's
//! document from the model it serves and publishes them as one new generation to its
//! publish targets (`--publish-dir`, `--edge-url`), exactly as `origin publish` does
//! ([`crate::publish::publish_all`]: written whole, then switched to in one step).
//!
//! Several origins on one database share one schedule: a tick on an origin that does
//! not lead does nothing, and when the leader dies the next leader's ticks publish, so
//! a publish follows the leader's death within `--leader-retry-ms` plus one period plus
//! the publish itself. Between publishes, single documents keep being replaced after
//! misses and events by every origin, as before.
//!
//! **Documents fresher than the model.** A full publish computes documents from the
//! model's training data, while single documents written after events since that
//! training hold newer histories. So after each switch the leader republishes the users
//! with events after the model's watermark (the last event it trained on,
//! [`crate::snapshot::Snapshot::upto_seq`]) with their current histories, through the
//! republisher, marking their published content unknown so that an unchanged answer
//! is written again. A single document written into the old generation while the
//! publish ran belongs to such a user, so no event's effect is lost at the switch.
//!
//! **Business rules.** Each publish first reads the tenant's stored rules (a change
//! made through another origin is taken up here) and every user's fatigued items
//! ([`crate::rules`]). A change of the rules through `PUT /v1/admin/rules` runs the
//! same full publish at once ([`publish_once`]); full publishes of one process take
//! turns, so the last one activated was computed with the newest rules.
//!
//! The last scheduled publish of this process is shown in `/health`
//! (`last_full_publish`) and counted in `origin_scheduled_publish_total{result}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use contract::UserId;

use crate::freshness::{PublishGate, Republisher};
use crate::leader::Leadership;
use crate::publish::{publish_all, PublishError, PublishJob, PublishTargets};
use crate::retrain::SharedSnapshot;
use crate::store::SharedStore;

/// Users computed (and held in memory) at a time by a scheduled publish.
pub const SCHEDULED_PUBLISH_CHUNK: usize = 500;

/// What the last scheduled publish of this process did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPublish {
    /// The generation activated.
    pub generation: String,
    /// The model the documents came from.
    pub model_version: String,
    pub users: usize,
    /// Users with events after the model's watermark, republished after the switch.
    pub republished: usize,
    /// Unix seconds when it finished.
    pub finished_at: u64,
    pub seconds: f64,
}

/// The last scheduled publish, shared with `/health`.
#[derive(Debug, Default)]
pub struct PublishRecord {
    last: Mutex<Option<LastPublish>>,
    /// One full publish at a time (the schedule's and a rules change's take turns).
    running: tokio::sync::Mutex<()>,
}

impl PublishRecord {
    pub fn last(&self) -> Option<LastPublish> {
        self.last.lock().ok().and_then(|l| l.clone())
    }

    fn set(&self, publish: LastPublish) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(publish);
        }
    }
}

/// What a scheduled publish needs.
pub struct Schedule {
    pub snapshot: SharedSnapshot,
    pub targets: PublishTargets,
    /// Items per document.
    pub n: usize,
    pub every: Duration,
    pub leader: Arc<Leadership>,
    pub record: Arc<PublishRecord>,
    /// Where events since the model's watermark are read.
    pub store: SharedStore,
    /// Republishes the users with newer histories (`None`: no republishing).
    pub republisher: Option<Republisher>,
    /// The process's publish budget, told which documents the full publish replaced.
    pub gate: PublishGate,
}

/// Publishes every user of the snapshot served now; `Ok(None)` while the first model
/// is still loading (nothing worth publishing yet). With `store`, the stored rules
/// are read first and every user's fatigued items are left out.
pub async fn publish_now(
    snapshot: &SharedSnapshot,
    targets: &PublishTargets,
    n: usize,
    store: Option<&SharedStore>,
) -> Result<Option<LastPublish>, PublishError> {
    let snapshot = snapshot.load_full();
    if snapshot.loading {
        return Ok(None);
    }
    if let Some(store) = store {
        if let Err(e) = crate::store::load_rules(&**store, &snapshot.rules).await {
            tracing::warn!(error = %e, "cannot read the stored rules; publishing with the rules served");
        }
    }
    let fatigued = crate::store::fatigued_for(
        store,
        &snapshot.rules.rules(),
        None,
        crate::snapshot::now_unix() as i64,
    )
    .await;
    let job = PublishJob {
        tenant: snapshot.tenant.clone(),
        n,
        users: None,
        chunk: SCHEDULED_PUBLISH_CHUNK,
        targets: targets.clone(),
        progress: None,
        delta: None,
        keep_until: None,
        item_lists: true,
        fatigued: Arc::new(fatigued),
    };
    let model_version = snapshot.model_version();
    let report = publish_all(snapshot, job).await?;
    Ok(Some(LastPublish {
        generation: report.generation,
        model_version,
        users: report.users,
        republished: 0,
        finished_at: crate::snapshot::now_unix(),
        seconds: report.elapsed.as_secs_f64(),
    }))
}

/// Every `schedule.every` (the first one after one period), publishes every user while
/// this process leads, logging and counting the outcome.
pub fn spawn(schedule: Schedule) -> tokio::task::JoinHandle<()> {
    let (leader, every) = (schedule.leader.clone(), schedule.every);
    let schedule = Arc::new(schedule);
    crate::leader::spawn_while_leading(leader, every, move || {
        let schedule = schedule.clone();
        async move { publish_once(&schedule, "schedule").await }
    })
}

/// One full publish (for `reason`: `schedule`, `rules`), logged, counted and
/// recorded; one at a time per [`PublishRecord`].
pub(crate) async fn publish_once(schedule: &Schedule, reason: &'static str) {
    let _turn = schedule.record.running.lock().await;
    let upto_seq = schedule.snapshot.load().upto_seq;
    match publish_now(
        &schedule.snapshot,
        &schedule.targets,
        schedule.n,
        Some(&schedule.store),
    )
    .await
    {
        Ok(Some(mut done)) => {
            done.republished = republish_newer(schedule, upto_seq).await;
            metrics::counter!("origin_scheduled_publish_total", "result" => "ok").increment(1);
            tracing::info!(
                reason,
                generation = %done.generation,
                model = %done.model_version,
                users = done.users,
                republished = done.republished,
                seconds = done.seconds,
                "scheduled full publish done"
            );
            schedule.record.set(done);
        }
        Ok(None) => tracing::info!(reason, "scheduled full publish skipped: no model yet"),
        Err(e) => {
            metrics::counter!("origin_scheduled_publish_total", "result" => "error").increment(1);
            tracing::error!(reason, error = %e, "scheduled full publish failed; the previous generation stays current");
        }
    }
}

/// Touches every user with events after `upto_seq` in the republisher, their
/// published content marked unknown (see the module docs); returns how many. No
/// watermark: the model trained on no event, so every event is newer.
async fn republish_newer(schedule: &Schedule, upto_seq: Option<i64>) -> usize {
    let Some(republisher) = &schedule.republisher else {
        return 0;
    };
    let from = upto_seq.unwrap_or(0).saturating_add(1);
    let events = match schedule.store.read_events(from, i64::MAX).await {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the events after the model's watermark; their users' documents stay as the full publish wrote them until their next event");
            return 0;
        }
    };
    let users: std::collections::BTreeSet<UserId> =
        events.into_iter().map(|(_, e)| e.user_id).collect();
    let now = tokio::time::Instant::now();
    for user in &users {
        schedule.gate.with(|b| b.replaced_elsewhere(user, now));
        republisher.touch(user.clone(), now, None);
    }
    users.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::CdnFolder;
    use arc_swap::ArcSwap;

    fn current(dir: &std::path::Path) -> Option<String> {
        std::fs::read_link(dir.join("current"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// A follower's ticks publish nothing; the leader's publish a whole generation of
    /// every user and record it; later ticks make newer generations.
    #[tokio::test]
    async fn only_the_leader_publishes_every_user_on_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let users = snapshot.user_ids().len();
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let cdn = dir.path().join("cdn");
        std::fs::create_dir_all(&cdn).unwrap();
        let targets = PublishTargets::default().with(Arc::new(CdnFolder::new(cdn.clone())));
        let every = Duration::from_millis(60);
        let store: SharedStore = Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("fixture.sqlite"), 1000).unwrap(),
        );
        let schedule = |leader, record| Schedule {
            snapshot: snapshot.clone(),
            targets: targets.clone(),
            n: 5,
            every,
            leader,
            record,
            store: store.clone(),
            republisher: None,
            gate: PublishGate::default(),
        };

        let follower_record = Arc::new(PublishRecord::default());
        let follower = spawn(schedule(
            Arc::new(Leadership::default()),
            follower_record.clone(),
        ));
        tokio::time::sleep(every * 5).await;
        assert_eq!(current(&cdn), None, "a follower published");
        assert_eq!(follower_record.last(), None);

        let record = Arc::new(PublishRecord::default());
        let leader = spawn(schedule(Leadership::always(), record.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(last) = record.last() {
                break last;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the leader never published"
            );
            tokio::time::sleep(every).await;
        };
        assert_eq!(first.users, users);
        assert_eq!(first.model_version, snapshot.load().model_version());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while record.last().map(|l| l.generation) == Some(first.generation.clone()) {
            assert!(std::time::Instant::now() < deadline, "no second publish");
            tokio::time::sleep(every).await;
        }
        // Let a publish in flight finish before reading the folder.
        leader.abort();
        tokio::time::sleep(every * 2).await;
        assert_eq!(
            current(&cdn),
            Some(format!("generations/{}", record.last().unwrap().generation)),
            "the folder's current generation is the last one recorded"
        );
        follower.abort();
    }

    #[tokio::test]
    async fn nothing_is_published_while_the_first_model_loads() {
        let dir = tempfile::tempdir().unwrap();
        let cdn = dir.path().join("cdn");
        std::fs::create_dir_all(&cdn).unwrap();
        let loading = crate::snapshot::Snapshot::loading(
            contract::Tenant::default_tenant(),
            contract::RegionMap::builtin(),
            crate::snapshot::Freshness::default(),
        );
        let snapshot: SharedSnapshot = Arc::new(ArcSwap::from_pointee(loading));
        let targets = PublishTargets::default().with(Arc::new(CdnFolder::new(cdn.clone())));
        assert_eq!(
            publish_now(&snapshot, &targets, 5, None).await.unwrap(),
            None
        );
        assert_eq!(current(&cdn), None);
    }
}
