//! The HTTP server loop: connections with read timeouts, and a shutdown with a deadline.
//!
//! `axum::serve` has no header read timeout and waits for every request in flight on
//! shutdown, however long a client stalls; so the origin runs its own accept loop on
//! hyper (HTTP/1.1):
//! - a client has [`ServeOptions::header_timeout`] to send its headers and
//!   [`ServeOptions::body_timeout`] to send its body (then the body read fails and the
//!   request is refused with a JSON 400);
//! - a request may take [`ServeOptions::request_timeout`] in all (admin routes, where a
//!   retrain may take longer, excepted), then it is answered `503` `timeout`;
//! - on shutdown the listener closes at once, idle connections are closed, requests in
//!   flight get [`ServeOptions::shutdown_deadline`] to finish, then they are dropped.
//!   Events are acknowledged only after their commit, so none that was acknowledged is
//!   lost.
//!
//! Each request carries its peer address as `ConnectInfo<SocketAddr>` (for
//! [`crate::clients`]).
//!
//! hyper answers requests it cannot parse (a control byte in the request line, a URI
//! over 64 KiB, headers over its buffer) itself, with an empty body and no hook to
//! change it. [`JsonErrors`] wraps each connection's socket and turns exactly those
//! answers — a `4xx` head with `content-length: 0`, which the API never sends, since
//! every error of ours has a JSON body — into the API's JSON error.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use contract::ErrorBody;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

/// Timeouts of the server loop (`origin serve` flags `--header-timeout-ms` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_deadline: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            shutdown_deadline: Duration::from_secs(10),
        }
    }
}

/// Middleware: answers `503 timeout` when a request takes longer than the limit
/// (`/v1/admin/*` excepted).
pub async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/v1/admin/") {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            metrics::counter!("origin_request_timeouts_total").increment(1);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(ErrorBody::new(
                    "timeout",
                    format!("the request took longer than {} ms", limit.as_millis()),
                )),
            )
                .into_response()
        }
    }
}

/// The router with the per-request timeouts of `options` applied.
pub fn with_timeouts(router: Router, options: &ServeOptions) -> Router {
    router
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            options.body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            options.request_timeout,
            request_timeout,
        ))
}

/// Serves `router` on `listener` until `shutdown` completes, then drains as
/// [`ServeOptions`] says. Returns when every connection is closed or dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = with_timeouts(router, &options);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_timeout);
        let conn = builder.serve_connection(
            TokioIo::new(JsonErrors::new(stream)),
            TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(options.shutdown_deadline) => tracing::warn!(
            deadline_ms = options.shutdown_deadline.as_millis() as u64,
            "shutdown deadline passed; dropping the requests still in flight"
        ),
    }
    Ok(())
}

/// A socket that rewrites hyper's own body-less error answers into JSON errors (see the
/// module docs).
pub struct JsonErrors<S> {
    inner: S,
    /// Rewritten bytes not yet written to `inner`.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonErrors<S> {
    pub fn new(inner: S) -> Self {
        JsonErrors {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The JSON answer for a body-less `4xx` head written by hyper, or `None` for any other
/// bytes.
pub fn json_error_for(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..500).contains(&status) || !text.ends_with("\r\n\r\n") {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || lower.contains("content-type:") {
        return None;
    }
    let (code, message) = match status {
        414 => ("uri_too_long", "the request URI is too long"),
        431 => ("headers_too_large", "the request headers are too large"),
        _ => (
            "bad_request",
            "the request line or headers could not be parsed",
        ),
    };
    let body = serde_json::to_string(&ErrorBody::new(code, message)).ok()?;
    let status_line = &text[..text.find("\r\n")?];
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: tokio::io::AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes what is pending; `Ready(Ok)` once nothing is.
    fn drive(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        while self.written < self.pending.len() {
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        match self.drive(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(rewritten) = json_error_for(buf) {
            self.pending = rewritten;
            // Accepted whole; the rest goes out with the next write or flush.
            if let Poll::Ready(Err(e)) = self.drive(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match self.drive(cx) {
            Poll::Ready(Ok(())) => std::pin::Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match self.drive(cx) {
            Poll::Ready(Ok(())) => std::pin::Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodyless_client_errors_are_rewritten() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 21:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_error_for(hyper_414).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "uri_too_long");
        // Ours always have bodies; 2xx/3xx/5xx and partial heads pass untouched.
        for other in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 61\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"not\":\"a head\"}",
        ] {
            assert_eq!(json_error_for(other), None);
        }
    }

    #[tokio::test]
    async fn a_request_hyper_cannot_parse_gets_a_json_400_and_a_huge_uri_a_json_414() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, ServeOptions::default(), async {
            let _ = rx.await;
        }));
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
        for (request, status, code) in [
            (
                b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                "400",
                "bad_request",
            ),
            (long.into_bytes(), "414", "uri_too_long"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(&request).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            let out = String::from_utf8_lossy(&out);
            assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
            let body = out.split_once("\r\n\r\n").unwrap().1;
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(json["error"]["code"], code, "{out}");
        }
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
