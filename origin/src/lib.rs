//! The origin: a native service and CLI that stores interactions, computes
//! recommendations, answers the edge's cache misses and publishes results to the
//! edge's KV and the secondary CDN.
//!
//! Start a server in a test with [`run`] on a port-0 listener, or drive [`app`] with
//! `tower::ServiceExt::oneshot`.
//!
//! # Layout
//! - `config`: the clap/env configuration of every subcommand.
//! - `store`: the SQLite store (items, users, interactions, meta).
//! - `model`: the interface between serving/publishing code and the recommendation models.
//! - `simple_model`: item-kNN + regional popularity, the first [`model::Recommender`].
//! - `snapshot`: a trained model with id maps; builds recommendation documents.
//! - `api`: the HTTP API (`app` adds middleware around it).
//! - `publish`: bulk and on-miss publishing to edge KV and the CDN folder.
//! - `cdn`: the static server over the published CDN folder.
//! - `demo_data`: deterministic generated demo data.
//! - `import`: MovieLens/CSV import, all or nothing.

pub mod api;
pub mod cdn;
pub mod config;
pub mod dashboard;
pub mod demo_data;
pub mod import;
pub mod model;
pub mod publish;
pub mod simple_model;
pub mod snapshot;
pub mod store;

use std::future::Future;

pub use api::{ApiError, AppState};

/// The HTTP API with its middleware: request tracing and a body size limit.
pub fn app(state: AppState) -> axum::Router {
    api::routes(state)
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

/// Serves [`app`] on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
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
        let health: api::Health = reqwest::get(format!("http://{addr}/health"))
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
