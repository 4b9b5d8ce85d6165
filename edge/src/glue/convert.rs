//! Conversions between the core's plain values and `worker` types.

use serde::Serialize;
use worker::{Headers, Response, Result};

/// Milliseconds since the epoch, from the JS clock (`SystemTime` panics on wasm32).
pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// Web Crypto's CSPRNG (`crypto.getRandomValues`); wasm-bindgen copies the bytes back.
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(buf: &mut [u8]);
}

/// `N` random bytes from `crypto.getRandomValues` (N ≤ 65536; only inside a request).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    get_random_values(&mut out);
    out
}

/// Bytes of all request headers (names, values, separators), for the 431 check.
pub fn header_pairs(headers: &worker::Headers) -> Vec<(String, String)> {
    headers.entries().collect()
}

/// A `Headers` object holding `pairs` (later pairs with the same name replace earlier ones).
pub fn to_headers(pairs: &[(&'static str, String)]) -> Result<Headers> {
    let headers = Headers::new();
    for (name, value) in pairs {
        headers.set(name, value)?;
    }
    Ok(headers)
}

/// A response with `status`, `headers` and an optional body.
pub fn respond_with(
    status: u16,
    headers: &[(&'static str, String)],
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let resp = match body {
        Some(b) => Response::from_bytes(b)?,
        None => Response::empty()?,
    };
    Ok(resp.with_status(status).with_headers(to_headers(headers)?))
}

/// A JSON response.
pub fn json_response<T: Serialize>(
    status: u16,
    headers: &[(&'static str, String)],
    body: &T,
) -> Result<Response> {
    let bytes = serde_json::to_vec(body).map_err(|e| worker::Error::RustError(e.to_string()))?;
    respond_with(status, headers, Some(bytes))
}

/// The request body, refused with 413 when its declared or actual size passes `max`.
pub async fn read_body(
    req: &mut worker::Request,
    max: usize,
) -> std::result::Result<Vec<u8>, crate::error::EdgeError> {
    use crate::error::EdgeError;
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(EdgeError::PayloadTooLarge { max });
    }
    let bytes = req
        .bytes()
        .await
        .map_err(|e| EdgeError::BadBody(e.to_string()))?;
    if bytes.len() > max {
        return Err(EdgeError::PayloadTooLarge { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn the_js_clock_is_after_2025() {
        assert!(now_ms() > 1_735_689_600_000.0);
    }

    #[wasm_bindgen_test]
    fn later_header_pairs_replace_earlier_ones() {
        let h = to_headers(&[
            ("X-Cache", "MISS".into()),
            ("x-cache", "HIT".into()),
            ("ETag", "\"e\"".into()),
        ])
        .unwrap();
        assert_eq!(h.get("X-Cache").unwrap().as_deref(), Some("HIT"));
        assert_eq!(h.get("etag").unwrap().as_deref(), Some("\"e\""));
    }

    #[wasm_bindgen_test]
    async fn json_responses_carry_status_headers_and_body() {
        let mut r = json_response(
            503,
            &[("Content-Type", "application/json".into())],
            &serde_json::json!({"a": 1}),
        )
        .unwrap();
        assert_eq!(r.status_code(), 503);
        assert_eq!(
            r.headers().get("content-type").unwrap().as_deref(),
            Some("application/json")
        );
        assert_eq!(r.text().await.unwrap(), r#"{"a":1}"#);
    }

    #[wasm_bindgen_test]
    fn random_bytes_come_from_web_crypto_and_differ() {
        let (a, b) = (random_bytes::<16>(), random_bytes::<16>());
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 16]);
    }

    #[wasm_bindgen_test]
    fn empty_responses_have_no_body() {
        let r = respond_with(304, &[("ETag", "\"e\"".into())], None).unwrap();
        assert_eq!(r.status_code(), 304);
    }
}
