//! Who is asking: the client key of a request, and per-client rate limits.
//!
//! - A request with the admin token (`Authorization: Bearer <ADMIN_TOKEN>`) comes from
//!   the edge or a backend of the operator: it is **trusted**. When it carries
//!   `X-Edge-Client` (16 hex digits, a hash of the browser's IP made by the edge), that
//!   names the client the edge was serving; otherwise it has no client (a backend).
//! - Any other request is keyed by its peer IP, hashed (the raw address is never
//!   stored).
//!
//! Trusted requests are not rate limited here (the edge limits its public routes per
//! client with Cloudflare's Rate Limiting binding); every other request goes through a
//! token bucket per client ([`RateLimits`], `governor`): past it the answer is `429`
//! JSON `rate_limited` with `Retry-After`. The bucket map is pruned every minute, so a
//! flood of addresses cannot grow it without bound.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use contract::ErrorBody;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Secret;

/// Header in which the edge names the client it serves (a hash, 16 hex digits).
pub const EDGE_CLIENT_HEADER: &str = "x-edge-client";

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// `edge:<hash>` (a browser the edge served), `ip:<hash>` (a direct caller), or
    /// `None` (a trusted backend).
    pub key: Option<String>,
    /// Carried the admin token.
    pub trusted: bool,
}

fn hex_hash(s: &str) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The client of a request from its headers and peer address.
pub fn client_of(headers: &HeaderMap, peer: Option<IpAddr>, admin: Option<&Secret>) -> Client {
    let trusted =
        admin.is_some_and(|token| crate::auth::check_bearer(headers, Some(token)).is_ok());
    if trusted {
        let edge = headers
            .get(EDGE_CLIENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|v| format!("edge:{}", v.to_ascii_lowercase()));
        return Client { key: edge, trusted };
    }
    Client {
        key: peer.map(|ip| format!("ip:{}", hex_hash(&ip.to_string()))),
        trusted,
    }
}

/// The peer address the server loop put into the request, if any.
pub fn peer_of(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Per-client request limits of the origin.
#[derive(Clone)]
pub struct RateLimits {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    admin: Option<Secret>,
}

impl RateLimits {
    /// `per_second` requests per client with bursts of `burst`; `per_second == 0` turns
    /// limiting off.
    pub fn new(per_second: u32, burst: u32, admin: Option<Secret>) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            let limiter = Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ));
            let pruned = Arc::downgrade(&limiter);
            // Drop buckets that are full again, every minute, while the limiter lives.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(60));
                    loop {
                        tick.tick().await;
                        let Some(l) = pruned.upgrade() else { break };
                        l.retain_recent();
                        l.shrink_to_fit();
                    }
                });
            }
            limiter
        });
        RateLimits { limiter, admin }
    }

    /// No limits.
    pub fn off() -> Self {
        RateLimits {
            limiter: None,
            admin: None,
        }
    }

    /// `Err(wait)` when `client` is over its limit.
    pub fn check(&self, client: &Client) -> Result<(), Duration> {
        let (Some(limiter), Some(key), false) = (&self.limiter, &client.key, client.trusted) else {
            return Ok(());
        };
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The `429` answer, with `Retry-After` in whole seconds (at least 1).
pub fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(ErrorBody::new(
            "rate_limited",
            format!("too many requests from this client; retry after {secs} s"),
        )),
    )
        .into_response();
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(secs));
    resp
}

/// Middleware: answers `429` to clients over their limit; `/health` is never limited.
pub async fn limit(State(limits): State<RateLimits>, req: Request, next: Next) -> Response {
    if limits.limiter.is_none() || matches!(req.uri().path(), "/health" | "/health/ready") {
        return next.run(req).await;
    }
    let client = client_of(req.headers(), peer_of(&req), limits.admin.as_ref());
    match limits.check(&client) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            metrics::counter!("origin_rate_limited_total").increment(1);
            too_many_requests(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_edge_names_its_client_only_with_the_admin_token() {
        let token = Secret::new("s3cret");
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let edge = headers(&[
            ("authorization", "Bearer s3cret"),
            (EDGE_CLIENT_HEADER, "00ff00ff00ff00ff"),
        ]);
        assert_eq!(
            client_of(&edge, Some(ip), Some(&token)),
            Client {
                key: Some("edge:00ff00ff00ff00ff".into()),
                trusted: true
            }
        );
        // Without the token the header is ignored and the peer address counts.
        let forged = headers(&[(EDGE_CLIENT_HEADER, "00ff00ff00ff00ff")]);
        let c = client_of(&forged, Some(ip), Some(&token));
        assert!(!c.trusted);
        assert!(c.key.as_deref().unwrap().starts_with("ip:"));
        assert!(!c.key.unwrap().contains("203.0.113.9"));
        let backend = headers(&[("authorization", "Bearer s3cret")]);
        assert_eq!(client_of(&backend, Some(ip), Some(&token)).key, None);
    }

    #[tokio::test]
    async fn a_client_past_its_burst_must_wait_and_trusted_calls_never_do() {
        let limits = RateLimits::new(1, 3, None);
        let client = Client {
            key: Some("ip:1".into()),
            trusted: false,
        };
        for _ in 0..3 {
            assert!(limits.check(&client).is_ok());
        }
        let wait = limits.check(&client).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let other = Client {
            key: Some("ip:2".into()),
            trusted: false,
        };
        assert!(limits.check(&other).is_ok());
        let trusted = Client {
            key: Some("edge:1".into()),
            trusted: true,
        };
        for _ in 0..10 {
            assert!(limits.check(&trusted).is_ok());
        }
        assert!(RateLimits::off().check(&client).is_ok());
        let resp = too_many_requests(wait);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()["retry-after"], "1");
    }
}
