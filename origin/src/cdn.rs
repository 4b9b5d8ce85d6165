//! The secondary CDN stand-in: a static file server over a published folder's
//! `current` generation (`DIR/current/{tenant}/users/{user}.json`, …).
//!
//! It needs no database and shares nothing with the origin process, so it keeps
//! answering while the origin is down. `current` is resolved on every request, so a
//! publish's symlink flip is seen at once. Every error is JSON
//! `{"error":{"code","message"}}` with its status: a missing file is a 404, a method other
//! than GET/HEAD a 405 (with `Allow`), and any other error the file server answers (a bad
//! range, an unreadable file) keeps its status and gets a JSON body.

use std::future::Future;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
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

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, HEAD")],
        Json(ErrorBody::new(
            "method_not_allowed",
            "the CDN serves files with GET and HEAD only",
        )),
    )
}

/// The code of an error status the file server answered on its own.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::RANGE_NOT_SATISFIABLE => "range_not_satisfiable",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

/// Gives an error answer without a JSON body one (same status and headers). The file
/// server's own errors have an empty body, some with the file's JSON content type.
async fn json_errors(response: Response) -> Response {
    use axum::body::HttpBody;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let empty = response.body().size_hint().exact() == Some(0);
    if !(status.is_client_error() || status.is_server_error()) || (is_json && !empty) {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_RANGE);
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let body = Json(ErrorBody::new(error_code(status), message)).into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.extend(body_parts.headers);
    Response::from_parts(parts, body)
}

/// The static server over `dir/current`.
pub fn cdn_app(dir: PathBuf) -> Router {
    let serve = ServeDir::new(dir.join("current"))
        .append_index_html_on_directories(false)
        .not_found_service(axum::routing::any(missing));
    let files = axum::routing::get_service(serve).fallback(method_not_allowed);
    Router::new()
        .fallback_service(files)
        .layer(axum::middleware::map_response(json_errors))
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

    /// A CDN folder whose current generation holds `default/users/u1.json`.
    fn folder_with_u1() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let gen = dir.path().join("generations/g1-0/default/users");
        std::fs::create_dir_all(&gen).unwrap();
        std::fs::write(gen.join("u1.json"), br#"{"user_id":"u1"}"#).unwrap();
        std::os::unix::fs::symlink("generations/g1-0", dir.path().join("current")).unwrap();
        dir
    }

    #[tokio::test]
    async fn the_cdn_server_serves_the_current_generation_and_json_404s() {
        let dir = folder_with_u1();

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

    #[tokio::test]
    async fn every_error_of_the_cdn_server_is_json_with_its_status() {
        let dir = folder_with_u1();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(run_cdn(
            listener,
            dir.path().to_owned(),
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        let url = |p: &str| format!("http://{addr}{p}");
        let cases = [
            (
                client.post(url("/default/users/u1.json")),
                405,
                "method_not_allowed",
            ),
            (
                client.delete(url("/default/users/u1.json")),
                405,
                "method_not_allowed",
            ),
            (
                client.get(url("/default/users/nobody.json")),
                404,
                "not_found",
            ),
            (client.get(url("/default/users/")), 404, "not_found"),
            (client.get(url("/")), 404, "not_found"),
            (
                client.get(url("/default/../../etc/passwd")),
                404,
                "not_found",
            ),
            (
                client
                    .get(url("/default/users/u1.json"))
                    .header("range", "bytes=9999-"),
                416,
                "range_not_satisfiable",
            ),
        ];
        for (req, status, code) in cases {
            let r = req.send().await.unwrap();
            let what = format!("{} {:?}", r.status(), r.url().path());
            assert_eq!(r.status().as_u16(), status, "{what}");
            assert!(
                r.headers()[header::CONTENT_TYPE.as_str()]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "{what}"
            );
            if status == 405 {
                assert_eq!(r.headers()["allow"], "GET, HEAD");
            }
            let text = r.text().await.unwrap();
            let body: ErrorBody =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text:?}"));
            assert_eq!(body.error.code, code, "{what}");
        }
        server.abort();
    }
}
