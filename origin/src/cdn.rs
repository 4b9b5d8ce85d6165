//! The secondary CDN stand-in: a static file server over a published folder's
//! `current` generation (`DIR/current/{tenant}/users/{user}.json`, …).
//!
//! It needs no database and shares nothing with the origin process, so it keeps
//! answering while the origin is down. `current` is resolved on every request, so a
//! publish's symlink flip is seen at once. Missing files get a JSON 404.

use std::future::Future;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::{Json, Router};
use contract::ErrorBody;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

async fn missing() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody::new("not_found", "no such document")),
    )
}

/// The static server over `dir/current`.
pub fn cdn_app(dir: PathBuf) -> Router {
    let serve = ServeDir::new(dir.join("current"))
        .append_index_html_on_directories(false)
        .not_found_service(axum::routing::any(missing));
    Router::new()
        .fallback_service(serve)
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        ))
        .layer(TraceLayer::new_for_http())
}

/// Serves `dir/current` on `listener` until `shutdown` completes.
pub async fn run_cdn(
    listener: tokio::net::TcpListener,
    dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, cdn_app(dir))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cdn_server_serves_the_current_generation_and_json_404s() {
        let dir = tempfile::tempdir().unwrap();
        let gen = dir.path().join("generations/g1-0/default/users");
        std::fs::create_dir_all(&gen).unwrap();
        std::fs::write(gen.join("u1.json"), br#"{"user_id":"u1"}"#).unwrap();
        std::os::unix::fs::symlink("generations/g1-0", dir.path().join("current")).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run_cdn(listener, dir.path().to_owned(), async {
            let _ = rx.await;
        }));

        let client = reqwest::Client::new();
        let ok = client
            .get(format!("http://{addr}/default/users/u1.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(
            ok.headers()[header::CONTENT_TYPE.as_str()],
            "application/json"
        );
        assert_eq!(ok.text().await.unwrap(), r#"{"user_id":"u1"}"#);

        let missing = client
            .get(format!("http://{addr}/default/users/nobody.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let body: ErrorBody = missing.json().await.unwrap();
        assert_eq!(body.error.code, "not_found");

        // A flip of `current` is seen by the next request.
        let gen2 = dir.path().join("generations/g2-0/default/users");
        std::fs::create_dir_all(&gen2).unwrap();
        std::fs::write(gen2.join("u1.json"), br#"{"user_id":"u1","v":2}"#).unwrap();
        std::os::unix::fs::symlink("generations/g2-0", dir.path().join("tmp")).unwrap();
        std::fs::rename(dir.path().join("tmp"), dir.path().join("current")).unwrap();
        let flipped = client
            .get(format!("http://{addr}/default/users/u1.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(flipped.text().await.unwrap(), r#"{"user_id":"u1","v":2}"#);

        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
