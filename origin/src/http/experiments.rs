//! The A/B experiment routes ([`crate::experiments`]), on the tenant a request names
//! (`?tenant=`, as every tenant-scoped route; the origin's own without it).
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/admin/experiments` `{"name","variants":[{"name","model","share"}…]}` | 201, the experiment, running; a retrain with its variants starts |
//! | `GET /v1/admin/experiments` | `{"experiments":[…]}`, each with its `status`, oldest first |
//! | `GET /v1/admin/experiments/{name}` | the experiment with its per-variant results |
//! | `POST /v1/admin/experiments/{name}/end` `{"promote":"variant"}` | the ended experiment; the variant's model becomes the tenant's and a retrain starts |
//! | `GET /v1/analytics/experiments` | `{"experiment": …}`: the running one's results, or `null` |
//! | `GET /v1/analytics/experiments/{name}` | one experiment's results |
//!
//! The admin routes need the admin token, checked before the body is read; the
//! analytics routes are read as the other analytics are (a registered tenant's server
//! key, see `http::access`). A refused body stores nothing: it is checked whole before
//! the one write.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::check_bearer;
use crate::experiments::results::{period, results};
use crate::experiments::{
    check_name, Experiment, ExperimentError, ExperimentResults, NewExperiment, StartOutcome, Status,
};
use crate::snapshot::now_unix;

use super::*;

/// Body of `POST /v1/admin/experiments/{name}/end`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndExperiment {
    /// The variant whose model becomes the tenant's.
    pub promote: String,
}

/// An experiment with its status.
#[derive(Debug, Serialize)]
pub struct ExperimentView {
    #[serde(flatten)]
    pub experiment: Experiment,
    pub status: Status,
}

impl From<Experiment> for ExperimentView {
    fn from(experiment: Experiment) -> Self {
        let status = experiment.status();
        ExperimentView { experiment, status }
    }
}

/// Answer of `POST /v1/admin/experiments`.
#[derive(Debug, Serialize)]
pub struct Started {
    #[serde(flatten)]
    pub experiment: ExperimentView,
    /// Whether a retrain with the variants' models started (the lists carry variants
    /// once it is done).
    pub retraining: bool,
}

/// Answer of `GET /v1/admin/experiments`.
#[derive(Debug, Serialize)]
pub struct ExperimentList {
    pub experiments: Vec<ExperimentView>,
}

/// Whether the promoted model was saved as the tenant's model setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSettingSaved {
    /// In the registry: every origin and restart trains it.
    Saved,
    /// The tenant is not in the registry (an origin's own tenant, unregistered): this
    /// process trains it until it restarts; start it with `--model` set to it to keep it.
    NotRegistered,
    /// The registry could not be written (the message says why); this process trains
    /// it all the same.
    Failed(String),
}

/// Answer of `POST /v1/admin/experiments/{name}/end`.
#[derive(Debug, Serialize)]
pub struct Ended {
    #[serde(flatten)]
    pub experiment: ExperimentView,
    /// The promoted variant's model, now the tenant's.
    pub model: String,
    pub model_setting: ModelSettingSaved,
    pub retraining: bool,
}

/// Answer of `GET /v1/analytics/experiments`.
#[derive(Debug, Serialize)]
pub struct RunningResults {
    pub experiment: Option<ExperimentResults>,
}

fn now() -> i64 {
    i64::try_from(now_unix()).unwrap_or(i64::MAX)
}

/// The store's live state, once the admin token is checked.
fn admin<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Arc<Live>, ApiError> {
    let live = live(state)?;
    check_bearer(headers, live.admin_token.as_ref())?;
    Ok(live)
}

/// An experiment name from the path, checked.
fn name_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|_| ExperimentError::InvalidName(String::new()))?;
    check_name(&name)?;
    Ok(name)
}

/// The experiment called `name`.
async fn find(live: &Live, name: &str) -> Result<Experiment, ApiError> {
    live.store
        .experiments()
        .await?
        .into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| ExperimentError::NotFound(name.to_owned()).into())
}

/// `experiment` with its results up to `now` (or its end).
async fn results_of(
    live: &Live,
    experiment: &Experiment,
    now: i64,
) -> Result<ExperimentResults, ApiError> {
    let (since, until) = period(experiment, now);
    let tallies = live.store.experiment_tallies(since, until).await?;
    Ok(results(experiment, &tallies, since, until))
}

/// Starts a retrain in the background, when this origin has a retrainer.
fn retrain_in_background(live: &Live) -> bool {
    let Some(retrainer) = live.retrainer.clone() else {
        return false;
    };
    tokio::spawn(async move {
        if let Err(e) = retrainer.retrain().await {
            tracing::error!(error = %e, "retrain after an experiment change failed");
        }
    });
    true
}

pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ApiJson<NewExperiment>, ApiError>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    let live = admin(&state, &headers)?;
    let ApiJson(body) = body?;
    let experiment = body.start(now())?;
    match live.store.start_experiment(&experiment).await? {
        StartOutcome::Started => {}
        StartOutcome::NameTaken => return Err(ExperimentError::Exists(experiment.name).into()),
        StartOutcome::Running(r) => return Err(ExperimentError::AlreadyRunning(r).into()),
    }
    tracing::info!(experiment = %experiment.name, variants = experiment.variants.len(), "experiment started");
    let retraining = retrain_in_background(live);
    Ok((
        StatusCode::CREATED,
        Json(Started {
            experiment: experiment.into(),
            retraining,
        }),
    ))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ExperimentList>, ApiError> {
    let live = admin(&state, &headers)?;
    let experiments = live.store.experiments().await?;
    Ok(Json(ExperimentList {
        experiments: experiments.into_iter().map(Into::into).collect(),
    }))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ExperimentResults>, ApiError> {
    let live = admin(&state, &headers)?;
    let name = name_of(path)?;
    let experiment = find(live, &name).await?;
    Ok(Json(results_of(live, &experiment, now()).await?))
}

/// `POST /v1/admin/experiments/{name}/end`: ends the running experiment and makes the
/// promoted variant's model the tenant's (its model setting in the registry, and this
/// origin's retrainer at once), then retrains.
pub(crate) async fn end(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<ApiJson<EndExperiment>, ApiError>,
) -> Result<Json<Ended>, ApiError> {
    let live = admin(&state, &headers)?;
    let name = name_of(path)?;
    let ApiJson(body) = body?;
    let experiment = find(live, &name).await?;
    if !experiment.is_running() {
        return Err(ExperimentError::Ended(name).into());
    }
    let variant = experiment.variant(&body.promote)?.clone();
    // Stored models were checked when the experiment started.
    let setting = crate::tenants::ModelSetting::parse(&variant.model).map_err(|e| {
        ExperimentError::InvalidModel {
            index: 0,
            message: e.to_string(),
        }
    })?;
    let ended_at = now();
    if !live
        .store
        .end_experiment(&name, ended_at, &variant.name)
        .await?
    {
        // Ended by another request meanwhile.
        return Err(ExperimentError::Ended(name).into());
    }
    let tenant = state.snapshot().tenant.clone();
    let model_setting = match &state.tenants {
        None => ModelSettingSaved::NotRegistered,
        Some(tenants) => match tenants.set_model(&tenant, Some(&setting)).await {
            Ok(()) => ModelSettingSaved::Saved,
            Err(crate::tenants::TenantError::NotFound(_)) => ModelSettingSaved::NotRegistered,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "could not save the promoted model as the tenant's");
                ModelSettingSaved::Failed(e.to_string())
            }
        },
    };
    if let Some(retrainer) = &live.retrainer {
        let choice = setting.choice();
        retrainer.set_train(Arc::new(move |data| {
            crate::training::train_or_popularity(data, &choice)
        }));
    }
    tracing::info!(experiment = %name, promoted = %variant.name, model = %variant.model, "experiment ended");
    let retraining = retrain_in_background(live);
    let ended = find(live, &name).await?;
    Ok(Json(Ended {
        experiment: ended.into(),
        model: variant.model,
        model_setting,
        retraining,
    }))
}

pub(crate) async fn running_results(
    State(state): State<AppState>,
) -> Result<Json<RunningResults>, ApiError> {
    let live = live(&state)?;
    let experiment = match live.store.running_experiment().await? {
        Some(e) => Some(results_of(live, &e, now()).await?),
        None => None,
    };
    Ok(Json(RunningResults { experiment }))
}

pub(crate) async fn results_by_name(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ExperimentResults>, ApiError> {
    let live = live(&state)?;
    let name = name_of(path)?;
    let experiment = find(live, &name).await?;
    Ok(Json(results_of(live, &experiment, now()).await?))
}
