//! The analytics dashboard: one self-contained HTML page (inline CSS, JS and SVG
//! charts, no network but the origin's own analytics routes) served at `GET /dashboard`.
//!
//! The page polls `GET /v1/analytics/recommendations?range=1h` and
//! `GET /v1/analytics/real-time` every 2 s, keeps a time series in the browser since it
//! was opened, and charts CTR, clicks and conversions, request and event rates, poll
//! latency, the edge cache hit rate and the region mix. Fields the answers lack show
//! "–". The source is `origin/static/dashboard.html`, compiled in with `include_str!`.

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
        assert!(DASHBOARD_HTML.contains(r#"data-testid="clicks-total""#));
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
