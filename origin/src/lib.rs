//! The origin: a native service and CLI that stores interactions, computes
//! recommendations, answers the edge's cache misses and publishes results to the
//! edge's KV and the secondary CDN.
//!
//! Start a server in a test with [`run`] on a port-0 listener, or drive [`app`] with
//! `tower::ServiceExt::oneshot`.
//!
//! # Layout
//! - `config`: the clap/env configuration of every subcommand.
//! - `store`: the `Store` interface (event log with group commit, projections, the reads
//!   training, serving and analytics need) and its SQLite backend in `store/sqlite/`.
//! - `model`: the interface between serving/publishing code and the recommendation models.
//! - `engine`: the models (item/user kNN, EASE, content, popularity, hybrid), building by
//!   name, tuning, batch top-N.
//! - `eval`: offline evaluation (loaders, split, metrics) and the `eval`/`split`/`synth` commands.
//! - `admission`: which items and users a model trains on (bounded, earned).
//! - `training`: which model the service and the publisher train (`--model`).
//! - `snapshot`: a trained model with id maps; builds recommendation documents.
//! - `item_lists`: similar items and bought-together lists (co-purchases), published
//!   and served like users' lists.
//! - `availability`: items never served (unavailable) and their categories, live after
//!   catalogue writes, and the users whose published lists a change touches.
//! - `rules`: per-tenant business rules (hide, pin, boost, diversity, fatigue): the
//!   validated document, the shared cell every snapshot reads, the pure arrangement.
//! - `clock`: unix seconds now and their RFC 3339 text.
//! - `http`: the HTTP API: one route table, the shared state, one error type, a file per
//!   route family (recommendations, events, analytics, admin); `app` adds middleware.
//! - `publish`: the `PublishTarget` interface (edge KV, CDN folder), the bulk publish and
//!   one-document publishing.
//! - `cdn`: the static server over the published CDN folder.
//! - `demo_data`: deterministic generated demo data.
//! - `import`: MovieLens/CSV import, all or nothing.
//! - `catalogue`: items and users with attributes: their rules, documents and
//!   `origin import-items` (CSV or JSON Lines, all or nothing).
//! - `events`: the live event wire format and its validation.
//! - `experiments`: A/B tests of models: experiments as data, the hash that assigns users
//!   to variants, the variants' models, per-variant results with intervals and tests.
//! - `freshness`: debounced per-user republish and purge after events.
//! - `retrain`: scheduled and on-demand retrains with an atomic model swap.
//! - `scheduled_publish`: the leader's periodic full publish (`--publish-every-s`).
//! - `leader`: which of several origins on one PostgreSQL runs the schedule (an
//!   advisory lock; SQLite's one process always leads).
//! - `analytics`: the recommendation funnel and real-time figures.
//! - `latency`: request latency per route over the last hour (`/v1/analytics/latency`).
//! - `auth`: constant-time admin bearer checks.
//! - `clients`: who is asking (client keys, trusted edge calls) and per-client rate limits.
//! - `server`: the accept loop with header/body/request timeouts and a shutdown deadline.
//! - `serve`: the composition root of `origin serve`.
//! - `observability`: metrics, request middleware, W3C trace context.
//! - `tenant_host`: one origin serving every registered tenant: the request's tenant
//!   picks its app; other tenants' runtimes built on demand, models in a bounded cache.
//! - `tenants`: the tenant registry (tenants, quotas, keys; `origin tenants`); each
//!   store backend implements its interface.

pub mod admission;
pub mod analytics;
pub mod auth;
pub mod availability;
pub mod catalogue;
pub mod cdn;
pub mod clients;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo_data;
pub mod engine;
pub mod eval;
pub mod events;
pub mod experiments;
pub mod freshness;
pub mod http;
pub mod import;
pub mod item_lists;
pub mod latency;
pub mod leader;
pub mod model;
pub mod observability;
pub mod publish;
pub mod retrain;
pub mod rules;
pub mod scheduled_publish;
pub mod serve;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod tenant_host;
pub mod tenants;
pub mod training;

use std::future::Future;

pub use http::{ApiError, AppState};

/// The HTTP API with its middleware: a body size limit, per-client rate limits, the
/// tenant's quotas ([`http::quota`]), and per request a span with
/// the W3C trace id, latency and status metrics ([`observability::track`]).
pub fn app(state: AppState) -> axum::Router {
    let traffic = state.traffic.clone();
    let limits = state.limits.clone();
    let quota = state.quota.clone();
    let access = state.clone();
    http::routes(state)
        .layer(axum::middleware::from_fn_with_state(
            access,
            http::access::analytics,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(http::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            quota,
            http::quota::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(limits, clients::limit))
        .layer(axum::middleware::from_fn_with_state(
            traffic,
            observability::track,
        ))
}

/// Serves [`app`] on `listener` until `shutdown` completes, with the default
/// [`server::ServeOptions`].
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, state, server::ServeOptions::default(), shutdown).await
}

/// [`run`] with explicit timeouts.
pub async fn run_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: server::ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, app(state), options, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_server_started_on_port_0_answers_and_shuts_down() {
        let dir = tempfile::tempdir().unwrap();
        let (snapshot, _store) = snapshot::fixture(dir.path());
        let state = AppState::new(Arc::new(snapshot), contract::Region::parse("asia").unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, state, async {
            let _ = rx.await;
        }));
        let health: http::Health = reqwest::get(format!("http://{addr}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health.region, "asia");
        let resp = reqwest::get(format!("http://{addr}/v1/recommendations/a%2Fb"))
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
