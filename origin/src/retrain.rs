//! Full retrains in the background: on a schedule and on demand
//! (`POST /v1/admin/retrain`).
//!
//! A retrain reads the store (imported interactions plus those projected from live
//! events), builds a new [`Snapshot`] with the configured training function on a
//! blocking thread, and swaps it in with one atomic pointer store ([`ArcSwap`]):
//! requests in flight keep the snapshot they loaded, new requests see the new one,
//! and nobody sees a half-built model. Retrains never overlap.
//!
//! **One model version on every origin.** Several origins on one database serve the
//! same model: every retrain records what it trained in the store
//! ([`TrainedModel`]: version, the second it names, the watermark, i.e. the last event
//! seq in its training set, and the counts). Every origin polls the record
//! ([`spawn_follow`]) and, when it names a newer model than the one it serves, trains
//! on the store's data up to that watermark ([`crate::store::Store::training_set_upto`]: imported
//! interactions and those of events with seq ≤ the watermark) and serves it under the
//! recorded version ([`Retrainer::adopt`]). Training is deterministic for the same
//! data (the interactions are sorted before training, so the order rows come back in
//! does not matter), so the models are the same, not just their names. A starting
//! origin adopts the recorded model instead of training a newer one of its own
//! ([`Retrainer::start`]). Users first seen in events after the watermark are left
//! out of a read up to it. Limits: items (and clients' user counts) are read as they
//! are now, so an item first seen after the watermark is known to the follower
//! (without interactions) and not to the leader; an origin started with another
//! `--model` trains its own model and says so in a warning.
//!
//! **Experiments.** While an A/B experiment runs ([`crate::experiments`]), a retrain
//! (and an adoption) also trains every variant's model on the same training set and
//! hands them to the snapshot, which picks each user's; the tenant's own model still
//! trains (it makes the popular lists). Ending an experiment gives the retrainer the
//! promoted variant's training function ([`Retrainer::set_train`]).
//!
//! # Layout
//! - [`Retrainer`]: what a retrain needs; [`Retrainer::retrain`] runs one.
//! - [`RetrainReport`]: old and new model versions and timing.
//! - [`spawn_schedule`]: the periodic retrain task (only on the leader).
//! - [`Retrainer::adopt`], [`Retrainer::follow`], [`spawn_follow`]: serving the
//!   model the newest retrain recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use contract::{RegionMap, Tenant};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::admission::TrainingPolicy;
use crate::experiments::{Experiment, ExperimentModels};
use crate::model::{Recommender, TrainingData};
use crate::snapshot::{Freshness, Snapshot};
use crate::store::{SharedStore, StoreError, TrainedModel, TrainingSet};

/// Trains a model from training data (the engine plugs in here).
pub type TrainFn = Arc<dyn Fn(&TrainingData) -> Arc<dyn Recommender> + Send + Sync>;

/// The snapshot being served, replaced whole by a retrain.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// Called with each snapshot a retrain swaps in (the model cache counts its bytes).
pub type SwapHook = Arc<dyn Fn(&Snapshot) + Send + Sync>;

#[derive(Debug, Error)]
pub enum RetrainError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("retrain task failed: {0}")]
    Task(String),
}

/// What a retrain did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainReport {
    pub old_model_version: String,
    pub new_model_version: String,
    pub users: u64,
    pub items: u64,
    pub interactions: u64,
    /// Reading the store plus training, in seconds.
    pub train_seconds: f64,
    /// Including waiting for a retrain already running.
    pub total_seconds: f64,
}

/// Everything a retrain needs.
pub struct Retrainer {
    pub store: SharedStore,
    pub tenant: Tenant,
    pub regions: RegionMap,
    pub freshness: Freshness,
    pub train: TrainFn,
    pub snapshot: SharedSnapshot,
    /// What may enter the model (bounded items, earned places).
    pub policy: TrainingPolicy,
    running: tokio::sync::Mutex<()>,
    on_swap: std::sync::OnceLock<SwapHook>,
    /// Replaces `train` once set (a promoted experiment variant's model).
    promoted: std::sync::Mutex<Option<TrainFn>>,
}

/// Records the served model version as an info gauge (1 now, 0 for the one replaced).
pub fn record_model_version(old: Option<&str>, new: &str) {
    if let Some(old) = old.filter(|o| *o != new) {
        metrics::gauge!("origin_model_info", "version" => old.to_owned()).set(0.0);
    }
    metrics::gauge!("origin_model_info", "version" => new.to_owned()).set(1.0);
}

impl Retrainer {
    pub fn new(
        store: SharedStore,
        tenant: Tenant,
        regions: RegionMap,
        freshness: Freshness,
        train: TrainFn,
        snapshot: SharedSnapshot,
    ) -> Self {
        Retrainer {
            store,
            tenant,
            regions,
            freshness,
            train,
            snapshot,
            policy: TrainingPolicy::default(),
            running: tokio::sync::Mutex::new(()),
            on_swap: std::sync::OnceLock::new(),
            promoted: std::sync::Mutex::new(None),
        }
    }

    /// Calls `hook` with every snapshot a retrain swaps in from now on (set once; a
    /// second hook is ignored).
    pub fn on_swap(&self, hook: SwapHook) {
        let _ = self.on_swap.set(hook);
    }

    pub fn with_policy(mut self, policy: TrainingPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Trains with `train` from now on instead of the configured function (the model of
    /// an experiment's promoted variant); the next retrain uses it.
    pub fn set_train(&self, train: TrainFn) {
        *self.promoted.lock().unwrap_or_else(|e| e.into_inner()) = Some(train);
    }

    /// The training function of the tenant's own model.
    fn current_train(&self) -> TrainFn {
        self.promoted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.train.clone())
    }

    /// The running experiment, if any (a store that cannot say is logged and taken as
    /// none: the lists then come from the tenant's model).
    async fn running_experiment(&self) -> Option<Experiment> {
        match self.store.running_experiment().await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the running experiment; training without it");
                None
            }
        }
    }

    /// Builds a new snapshot from the store (with the running experiment's variants)
    /// and swaps it in; waits for a retrain already running rather than running two
    /// at once.
    pub async fn retrain(&self) -> Result<RetrainReport, RetrainError> {
        self.retrain_with(self.current_train(), true).await
    }

    /// [`Retrainer::retrain`] with `train` instead of the configured training function
    /// and no experiment variants (a tenant's popular list first, while its model
    /// loads: `crate::tenant_host`).
    pub async fn retrain_using(&self, train: TrainFn) -> Result<RetrainReport, RetrainError> {
        self.retrain_with(train, false).await
    }

    async fn retrain_with(
        &self,
        train: TrainFn,
        with_experiment: bool,
    ) -> Result<RetrainReport, RetrainError> {
        let started = Instant::now();
        let _running = self.running.lock().await;
        let old = self.snapshot.load_full();
        let (tenant, regions, freshness, policy) = (
            self.tenant.clone(),
            self.regions.clone(),
            self.freshness,
            self.policy,
        );
        let training = Instant::now();
        let read_from = crate::snapshot::now_unix();
        let set = self.store.training_set().await?;
        // The rules cell goes on to the new snapshot; a change stored through another
        // origin is read here.
        crate::store::load_rules(&*self.store, &old.rules).await?;
        let upto_seq = set.upto_seq;
        let experiment = match with_experiment {
            true => self.running_experiment().await,
            false => None,
        };
        let mut snapshot = tokio::task::spawn_blocking(move || {
            build_with_experiment(set, tenant, regions, freshness, &policy, &train, experiment)
        })
        .await
        .map_err(|e| RetrainError::Task(e.to_string()))?;
        snapshot.upto_seq = upto_seq;
        hand_on_live_items(&old, &mut snapshot, read_from);
        let train_seconds = training.elapsed().as_secs_f64();
        // Versions name the second training finished; two retrains within one second
        // still get different versions.
        if snapshot.trained_at <= old.trained_at {
            snapshot.trained_at = old.trained_at + 1;
        }
        let report = RetrainReport {
            old_model_version: old.model_version(),
            new_model_version: snapshot.model_version(),
            users: snapshot.counts.users,
            items: snapshot.counts.items,
            interactions: snapshot.counts.interactions,
            train_seconds,
            total_seconds: 0.0,
        };
        let record = TrainedModel {
            model_version: snapshot.model_version(),
            trained_at: snapshot.trained_at,
            upto_seq,
            counts: snapshot.counts,
        };
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        snapshot.live.prune_before(read_from);
        if let Some(hook) = self.on_swap.get() {
            hook(&snapshot);
        }
        if let Err(e) = self.store.record_model(&record).await {
            tracing::warn!(error = %e, "could not record the trained model; other origins keep theirs");
        }
        metrics::histogram!("origin_model_train_seconds").record(train_seconds);
        record_model_version(Some(&report.old_model_version), &report.new_model_version);
        tracing::info!(
            old = %report.old_model_version,
            new = %report.new_model_version,
            train_s = train_seconds,
            "retrained and swapped in"
        );
        Ok(RetrainReport {
            total_seconds: started.elapsed().as_secs_f64(),
            ..report
        })
    }
}

impl Retrainer {
    /// The first model of a starting origin: the one recorded in the store (trained
    /// up to its watermark, under its version) when there is one, else a new retrain.
    pub async fn start(&self) -> Result<String, RetrainError> {
        match self.store.latest_model().await {
            Ok(Some(m)) => {
                self.adopt(&m).await?;
                Ok(self.snapshot.load().model_version())
            }
            Ok(None) => Ok(self.retrain().await?.new_model_version),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the recorded model; training anew");
                Ok(self.retrain().await?.new_model_version)
            }
        }
    }

    /// Trains on the store's data up to `model`'s watermark and serves the result
    /// under `model`'s version (see the module docs). Nothing is recorded.
    pub async fn adopt(&self, model: &TrainedModel) -> Result<(), RetrainError> {
        let _running = self.running.lock().await;
        let old = self.snapshot.load_full();
        if old.model_version() == model.model_version {
            return Ok(());
        }
        let (tenant, regions, freshness, train, policy) = (
            self.tenant.clone(),
            self.regions.clone(),
            self.freshness,
            self.current_train(),
            self.policy,
        );
        let training = Instant::now();
        let read_from = crate::snapshot::now_unix();
        let set = self.store.training_set_upto(model.upto_seq).await?;
        crate::store::load_rules(&*self.store, &old.rules).await?;
        if set.counts.interactions != model.counts.interactions {
            tracing::warn!(
                recorded = model.counts.interactions,
                read = set.counts.interactions,
                "the store gave another number of interactions up to the recorded watermark"
            );
        }
        let experiment = self.running_experiment().await;
        let mut snapshot = tokio::task::spawn_blocking(move || {
            build_with_experiment(set, tenant, regions, freshness, &policy, &train, experiment)
        })
        .await
        .map_err(|e| RetrainError::Task(e.to_string()))?;
        snapshot.trained_at = model.trained_at;
        snapshot.upto_seq = model.upto_seq;
        hand_on_live_items(&old, &mut snapshot, read_from);
        let version = snapshot.model_version();
        if version != model.model_version {
            tracing::warn!(
                recorded = %model.model_version,
                trained = %version,
                "this origin trains another model (--model) than the one recorded; serving its own"
            );
        }
        let live = snapshot.live.clone();
        self.snapshot.store(Arc::new(snapshot));
        live.prune_before(read_from);
        record_model_version(Some(&old.model_version()), &version);
        tracing::info!(
            old = %old.model_version(),
            new = %version,
            train_s = training.elapsed().as_secs_f64(),
            "adopted the recorded model"
        );
        Ok(())
    }

    /// Adopts the recorded model when it is newer than the one served; returns
    /// whether it did.
    pub async fn follow(&self) -> Result<bool, RetrainError> {
        let Some(model) = self.store.latest_model().await? else {
            return Ok(false);
        };
        let current = self.snapshot.load_full();
        let newer = current.loading || model.trained_at > current.trained_at;
        if !newer || current.model_version() == model.model_version {
            return Ok(false);
        }
        self.adopt(&model).await?;
        Ok(true)
    }
}

/// A snapshot of `set` (its interactions sorted first, see [`sorted`]) trained with
/// `train` and, when `experiment` is given, every variant's model trained on the same
/// data. CPU-bound: run it on a blocking thread. (`origin publish` builds with it too.)
pub fn build_with_experiment(
    set: TrainingSet,
    tenant: Tenant,
    regions: RegionMap,
    freshness: Freshness,
    policy: &TrainingPolicy,
    train: &TrainFn,
    experiment: Option<Experiment>,
) -> Snapshot {
    let mut variants = None;
    let mut snapshot = Snapshot::build_with(sorted(set), tenant, regions, freshness, policy, |d| {
        variants = experiment.map(|e| Arc::new(ExperimentModels::train(e, d)));
        train(d)
    });
    snapshot.experiment = variants;
    snapshot
}

/// The catalogue writes recorded on the serving snapshot go on with the new one (whose
/// store read began at `read_from`; the records it holds are dropped once it serves),
/// and so do the tenant's business rules.
fn hand_on_live_items(old: &Snapshot, new: &mut Snapshot, read_from: u64) {
    new.live = old.live.clone();
    new.rules = old.rules.clone();
    new.read_from = read_from;
}

/// The set with its interactions in one order (user, item, time, weight), so the
/// same data trains the same model whatever order the store gave the rows in.
fn sorted(mut set: TrainingSet) -> TrainingSet {
    set.data.interactions.sort_unstable_by(|a, b| {
        (a.user, a.item, a.timestamp, a.weight.to_bits()).cmp(&(
            b.user,
            b.item,
            b.timestamp,
            b.weight.to_bits(),
        ))
    });
    set
}

/// Every `every`, adopts the model the newest retrain recorded when it is newer than
/// the one served (see the module docs), logging failures.
pub fn spawn_follow(retrainer: Arc<Retrainer>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = retrainer.follow().await {
                tracing::warn!(error = %e, "could not adopt the recorded model");
            }
        }
    })
}

/// Retrains every `every` (the first one after one period) while this process is
/// the leader (see [`crate::leader`]; a tick while not leading does nothing), logging
/// failures.
pub fn spawn_schedule(
    retrainer: Arc<Retrainer>,
    every: Duration,
    leader: Arc<crate::leader::Leadership>,
) -> tokio::task::JoinHandle<()> {
    crate::leader::spawn_while_leading(leader, every, move || {
        let retrainer = retrainer.clone();
        async move {
            if let Err(e) = retrainer.retrain().await {
                tracing::error!(error = %e, "scheduled retrain failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, InteractionRow};

    #[tokio::test]
    async fn a_retrain_swaps_in_a_model_trained_on_new_data_with_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, mut store) = crate::snapshot::fixture(dir.path());
        let before_interactions = snapshot.counts.interactions;
        let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let sqlite =
            crate::store::SqliteStore::open(&dir.path().join("fixture.sqlite"), 1000).unwrap();
        let r = Retrainer::new(
            Arc::new(sqlite),
            Tenant::default_tenant(),
            RegionMap::builtin(),
            Freshness::default(),
            Arc::new(crate::snapshot::fixture_model),
            shared.clone(),
        );
        store
            .insert_batch(&Batch {
                interactions: vec![InteractionRow {
                    user_id: "newcomer".into(),
                    item_id: "i1".into(),
                    weight: 1.0,
                    ts: 1,
                }],
                ..Default::default()
            })
            .unwrap();
        let held = shared.load_full();
        let report = r.retrain().await.unwrap();
        assert_ne!(report.old_model_version, report.new_model_version);
        assert_eq!(report.interactions, before_interactions + 1);
        assert_eq!(shared.load().model_version(), report.new_model_version);
        assert_eq!(
            held.model_version(),
            report.old_model_version,
            "a request holding the old snapshot keeps it whole"
        );
        let again = r.retrain().await.unwrap();
        assert_eq!(again.old_model_version, report.new_model_version);
        assert_ne!(again.new_model_version, report.new_model_version);
    }

    /// A process that does not lead lets its schedule tick by; the leader retrains.
    #[tokio::test]
    async fn only_the_leader_retrains_on_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = crate::snapshot::fixture(dir.path());
        let sqlite =
            crate::store::SqliteStore::open(&dir.path().join("fixture.sqlite"), 1000).unwrap();
        let retrainer = |shared: SharedSnapshot| {
            Arc::new(Retrainer::new(
                Arc::new(sqlite.clone()),
                Tenant::default_tenant(),
                RegionMap::builtin(),
                Freshness::default(),
                Arc::new(crate::snapshot::fixture_model),
                shared,
            ))
        };
        let version = snapshot.model_version();
        let follower: SharedSnapshot = Arc::new(ArcSwap::from_pointee(snapshot));
        let every = Duration::from_millis(50);
        let not_leading = Arc::new(crate::leader::Leadership::default());
        let a = spawn_schedule(retrainer(follower.clone()), every, not_leading);
        tokio::time::sleep(every * 6).await;
        assert_eq!(follower.load().model_version(), version, "no retrain");
        let b = spawn_schedule(
            retrainer(follower.clone()),
            every,
            crate::leader::Leadership::always(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while follower.load().model_version() == version {
            assert!(Instant::now() < deadline, "the leader never retrained");
            tokio::time::sleep(every).await;
        }
        a.abort();
        b.abort();
    }
}
