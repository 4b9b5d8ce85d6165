//! The edge worker: serves precomputed recommendations close to the user.
//!
//! The crate is a pure, natively tested core plus thin wasm glue. The core turns
//! request facts into decisions — validated input, cache key, region, the ordered
//! source chain, freshness verdicts, what to try after a failure, response headers —
//! and never touches `worker::*`, a clock or I/O. The glue (`glue`, wasm32 only)
//! converts `Request`/`Env` into those facts, runs the plan against the Cache API, KV
//! and `fetch`, and asks the core what next. Time comes in as a number.
//!
//! # Layout
//! - [`config`]: `EdgeConfig`, read once from `[vars]`/secrets through a lookup function.
//! - [`route`]: method + path + query → a validated [`route::Route`].
//! - [`tenant_host`]: the tenant named by the host name (`TENANT_HOST`).
//! - [`cache_key`]: edge-cache keys (ignore `n`, query order and headers).
//! - [`hot_cache`]: a few seconds of in-isolate memory in front of the Cache API.
//! - [`geo`]: country from `request.cf`, else GeoIP of the client IP; the region.
//! - [`origins`]: a region's origins in ranks; the order a request tries them in
//!   (rendezvous hashing by user within a rank of equal instances).
//! - [`breaker`]: a circuit breaker per origin, with time passed in.
//! - [`freshness`]: fresh / stale / expired verdicts and cache TTLs.
//! - [`chain`]: the source chain and the walk through it (`Walk`), with typed reasons.
//! - [`respond`]: served body, headers (`X-Cache`, `Cache-Control`, `ETag`, CORS…), 304s.
//! - [`admin`]: bearer-token check in constant time; publish/purge validation into KV writes.
//! - [`client`]: the client key (a keyed hash of the IP) and the rate limit's `Retry-After`.
//! - [`forward`]: what writes to the origin carry (event ids, answer ids, bearer, client).
//! - [`impressions`]: the impressions buffer and hit counts sent in the background.
//! - [`trace`]: the `traceparent` passed on to the origin.
//! - [`unknown_tenants`]: tenants the origin said do not exist, answered 404 at the
//!   edge for a minute.
//! - [`error`]: `EdgeError`, every error answer with its status and JSON body.

pub mod admin;
pub mod breaker;
pub mod cache_key;
pub mod chain;
pub mod client;
pub mod config;
pub mod error;
pub mod forward;
pub mod freshness;
pub mod geo;
pub mod hot_cache;
pub mod impressions;
pub mod origins;
pub mod respond;
pub mod route;
pub mod tenant_host;
pub mod trace;
pub mod unknown_tenants;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod test_support;

#[cfg(target_arch = "wasm32")]
mod glue;

/// Version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
