//! Full retrains in the background: on a schedule and on demand
//! (`POST /v1/admin/retrain`).
//!
//! A retrain reads the store (imported interactions plus those projected from live
//! events), builds a new [`Snapshot`] with the configured training function on a
//! blocking thread, and swaps it in with one atomic pointer store ([`ArcSwap`]):
//! requests in flight keep the snapshot they loaded, new requests see the new one,
//! and nobody sees a half-built model. Retrains never overlap.
//!
//! # Layout
//! - [`Retrainer`]: what a retrain needs; [`Retrainer::retrain`] runs one.
//! - [`RetrainReport`]: old and new model versions and timing.
//! - [`spawn_schedule`]: the periodic retrain task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use contract::{RegionMap, Tenant};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::admission::TrainingPolicy;
use crate::model::{Recommender, TrainingData};
use crate::snapshot::{Freshness, Snapshot};
use crate::store::{SharedStore, StoreError};

/// Trains a model from training data (the engine plugs in here).
pub type TrainFn = Arc<dyn Fn(&TrainingData) -> Arc<dyn Recommender> + Send + Sync>;

/// The snapshot being served, replaced whole by a retrain.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

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
        }
    }

    pub fn with_policy(mut self, policy: TrainingPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds a new snapshot from the store and swaps it in; waits for a retrain
    /// already running rather than running two at once.
    pub async fn retrain(&self) -> Result<RetrainReport, RetrainError> {
        let started = Instant::now();
        let _running = self.running.lock().await;
        let old = self.snapshot.load_full();
        let (tenant, regions, freshness, train, policy) = (
            self.tenant.clone(),
            self.regions.clone(),
            self.freshness,
            self.train.clone(),
            self.policy,
        );
        let training = Instant::now();
        let set = self.store.training_set().await?;
        let mut snapshot = tokio::task::spawn_blocking(move || {
            Snapshot::build_with(set, tenant, regions, freshness, &policy, |d| train(d))
        })
        .await
        .map_err(|e| RetrainError::Task(e.to_string()))?;
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
        self.snapshot.store(Arc::new(snapshot));
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

/// Retrains every `every` (the first one after one period) while this process is
/// the leader (see [`crate::leader`]; a tick while not leading does nothing), logging
/// failures.
pub fn spawn_schedule(
    retrainer: Arc<Retrainer>,
    every: Duration,
    leader: Arc<crate::leader::Leadership>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leader.is_leader() {
                continue;
            }
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
}
