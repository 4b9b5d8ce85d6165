//! The analytics dashboard: one self-contained HTML page (inline CSS, JS and SVG
//! charts, no network but the origin's own analytics routes) served at `GET /dashboard`.
//!
//! The page polls every 2 s:
//! - `GET /v1/analytics/timeline?range=1h`: CTR, clicks and conversions, the edge cache
//!   hit rate and the region mix per minute over the last hour, from the event log;
//! - `GET /v1/analytics/latency?range=15m`: p50/p95/p99 of the origin's requests over
//!   time (all routes or one picked) and a table per route;
//! - `GET /v1/analytics/recommendations?range=1h`: the totals and tables;
//! - `GET /v1/analytics/real-time`: active users, request and event rates (charted since
//!   the page opened, as the origin keeps only the last minute of them);
//! - `GET /v1/analytics/experiments`: the running A/B experiment's variants, each with
//!   its CTR, the CTR's 95 % interval and the p-value against the control.
//!
//! A registered tenant's analytics need its server key: the page sends the one in its
//! URL's fragment (`/dashboard#key=sk_…`) as `X-Tenant-Key` (see `http::access`).
//!
//! So every chart but the rates shows history from the first poll. Fields the answers
//! lack show "–". The source is `origin/static/dashboard.html`, compiled in with
//! `include_str!`.

use axum::response::Html;

/// The dashboard page.
pub const DASHBOARD_HTML: &str = include_str!("../static/dashboard.html");

/// `GET /dashboard`.
pub async fn dashboard_page() -> Html<&'static str> {
    Html(DASHBOARD_HTML)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_names_its_routes() {
        assert!(DASHBOARD_HTML.starts_with("<!doctype html>"));
        assert!(DASHBOARD_HTML.contains("/v1/analytics/recommendations?range=1h"));
        assert!(DASHBOARD_HTML.contains("/v1/analytics/real-time"));
        assert!(DASHBOARD_HTML.contains("/v1/analytics/latency?range=15m"));
        assert!(DASHBOARD_HTML.contains("/v1/analytics/timeline?range=1h"));
        assert!(DASHBOARD_HTML.contains(r#"data-testid="latency-by-route""#));
        assert!(DASHBOARD_HTML.contains(r#"data-testid="clicks-total""#));
        assert!(DASHBOARD_HTML.contains("/v1/analytics/experiments"));
        assert!(DASHBOARD_HTML.contains(r#"data-testid="experiment-variants""#));
        for external in ["<script src", "<link ", "https://", "@import"] {
            assert!(
                !DASHBOARD_HTML.contains(external),
                "loads something external: {external}"
            );
        }
    }

    #[tokio::test]
    async fn the_handler_serves_the_page_as_html() {
        use axum::response::IntoResponse;
        let resp = dashboard_page().await.into_response();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap();
        assert!(ct.starts_with("text/html"), "{ct}");
    }
}
