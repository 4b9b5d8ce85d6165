//! What the edge sends back: the served body, its headers, conditional 304s and
//! CORS. Pure functions of the document, the source and the time.

use contract::params::Filters;
use contract::{RecommendationDoc, Region, ServedDoc, Source};

use crate::config::EdgeConfig;
use crate::freshness::Freshness;

/// The `X-Cache` verdict of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Stale,
}

impl CacheStatus {
    pub fn for_source(source: Source, stale: bool) -> Self {
        match (source, stale) {
            (_, true) | (Source::Stale, _) => CacheStatus::Stale,
            (Source::EdgeCache, _) => CacheStatus::Hit,
            _ => CacheStatus::Miss,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
        }
    }
}

/// Headers the browser may read from our answers.
pub const EXPOSED_HEADERS: &str =
    "X-Cache, X-Served-By, X-Edge-Region, X-Origin, X-Filter-Short, ETag, Server-Timing";

/// The body served for a request: the document without the items the `filters` leave
/// out (`exclude`, `category`), cut to `n` (fewer when the stored list runs short),
/// with `source`/`stale`.
pub fn served_doc(
    mut doc: RecommendationDoc,
    source: Source,
    stale: bool,
    n: usize,
    filters: &Filters,
) -> ServedDoc {
    filters.apply(&mut doc.items, n);
    ServedDoc { doc, source, stale }
}

/// `X-Filter-Short: <items served>` when the filters left fewer than `n` items of the
/// stored list. The edge never asks the origin for more just for that: the stored list
/// (50 items as published, 100 from an origin) is what a filter can pick from, and an
/// answer with fewer items costs nothing, while a round trip to the origin for every
/// rare category would put the origin back on the path filters are meant to keep it off.
pub fn filter_short_header(
    served: &ServedDoc,
    n: usize,
    filters: &Filters,
) -> Option<(&'static str, String)> {
    filters
        .short(served.doc.items.len(), n)
        .map(|kept| (contract::params::FILTER_SHORT_HEADER, kept.to_string()))
}

/// A strong ETag for the served document: it depends on the stored document and
/// `n`, not on which tier served it, so a revalidation is a 304 whichever tier answers.
pub fn etag(served: &ServedDoc) -> String {
    let bytes = serde_json::to_vec(&served.doc).unwrap_or_default();
    // FNV-1a, 64 bit: stable across builds and platforms, no dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Whether an `If-None-Match` header matches `etag` (weak comparison, as for GET).
pub fn if_none_match_matches(header: Option<&str>, etag: &str) -> bool {
    let Some(header) = header else { return false };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let ours = strip(etag);
    header
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == ours)
}

/// Per-tier timings for `Server-Timing`, in milliseconds.
pub type Timings = Vec<(&'static str, f64)>;

fn server_timing(timings: &Timings) -> String {
    timings
        .iter()
        .map(|(name, ms)| format!("{name};dur={ms:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CORS headers for every answer.
pub fn cors_headers(cfg: &EdgeConfig) -> Vec<(&'static str, String)> {
    vec![
        ("Access-Control-Allow-Origin", cfg.cors_allow_origin.clone()),
        ("Access-Control-Expose-Headers", EXPOSED_HEADERS.to_string()),
    ]
}

/// Headers of a `204` preflight answer.
pub fn preflight_headers(cfg: &EdgeConfig) -> Vec<(&'static str, String)> {
    let mut h = cors_headers(cfg);
    h.push((
        "Access-Control-Allow-Methods",
        "GET, HEAD, POST, OPTIONS".into(),
    ));
    h.push((
        "Access-Control-Allow-Headers",
        "If-None-Match, Content-Type, traceparent, X-Tenant-Key".into(),
    ));
    h.push(("Access-Control-Max-Age", "86400".into()));
    h
}

/// Headers of a served recommendation answer (200 or 304).
pub fn served_headers(
    served: &ServedDoc,
    etag: &str,
    region: &Region,
    now_s: u64,
    cfg: &EdgeConfig,
    timings: &Timings,
) -> Vec<(&'static str, String)> {
    let cache_control = match Freshness::of(&served.doc, now_s) {
        Freshness::Fresh { remaining_s } if !served.stale => {
            format!(
                "public, max-age={}, s-maxage={remaining_s}",
                cfg.browser_max_age_s.min(remaining_s)
            )
        }
        _ => "public, max-age=0, must-revalidate".to_string(),
    };
    let mut h = vec![
        (
            "Content-Type",
            "application/json; charset=utf-8".to_string(),
        ),
        (
            "X-Cache",
            CacheStatus::for_source(served.source, served.stale)
                .as_str()
                .to_string(),
        ),
        ("X-Served-By", served.source.as_str().to_string()),
        ("X-Edge-Region", region.as_str().to_string()),
        ("Cache-Control", cache_control),
        ("ETag", etag.to_string()),
    ];
    if !timings.is_empty() {
        h.push(("Server-Timing", server_timing(timings)));
    }
    h.extend(cors_headers(cfg));
    h
}

/// Headers of a JSON error answer; errors are never cached.
pub fn error_headers(cfg: &EdgeConfig, region: Option<&Region>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (
            "Content-Type",
            "application/json; charset=utf-8".to_string(),
        ),
        ("Cache-Control", "no-store".to_string()),
    ];
    if let Some(r) = region {
        h.push(("X-Edge-Region", r.as_str().to_string()));
    }
    h.extend(cors_headers(cfg));
    h
}

/// Headers of the demo page: HTML, cached briefly, and a policy allowing only its own
/// inline script and style and calls back to this worker.
pub fn page_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "text/html; charset=utf-8".to_string()),
        ("Cache-Control", "public, max-age=60".to_string()),
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:".to_string(),
        ),
        ("X-Content-Type-Options", "nosniff".to_string()),
    ]
}

/// Headers of a document stored in the edge cache (the stored, uncut document).
pub fn cache_entry_headers(ttl_s: u64) -> Vec<(&'static str, String)> {
    vec![
        (
            "Content-Type",
            "application/json; charset=utf-8".to_string(),
        ),
        ("Cache-Control", format!("public, max-age={ttl_s}")),
    ]
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use contract::RecItem;

    fn doc() -> RecommendationDoc {
        RecommendationDoc {
            tenant: "default".into(),
            user_id: "u1".into(),
            region: "us-east".into(),
            items: (0..5)
                .map(|i| RecItem {
                    item_id: format!("i{i}"),
                    score: 1.0 / (i + 1) as f64,
                    reason: None,
                    categories: Vec::new(),
                })
                .collect(),
            model_version: "m".into(),
            generated_at: 1000,
            fresh_for_s: 300,
            stale_for_s: 100,
            list: None,
            item_id: None,
            variant: None,
        }
    }

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> &'a str {
        h.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn served_documents_are_cut_to_n_and_say_their_source() {
        let s = served_doc(doc(), Source::Kv, false, 2, &Filters::default());
        assert_eq!(s.doc.items.len(), 2);
        assert_eq!(s.source, Source::Kv);
    }

    #[test]
    fn excluded_items_leave_the_answer_before_it_is_cut_to_n() {
        let all: Vec<String> = doc().items.iter().map(|i| i.item_id.clone()).collect();
        let exclude = vec![contract::ItemId::parse(&all[0]).unwrap()];
        let filters = Filters {
            exclude,
            category: None,
        };
        let s = served_doc(doc(), Source::Kv, false, 2, &filters);
        let kept: Vec<&str> = s.doc.items.iter().map(|i| i.item_id.as_str()).collect();
        assert_eq!(kept, [all[1].as_str(), all[2].as_str()]);
        let other = etag(&served_doc(
            doc(),
            Source::Kv,
            false,
            2,
            &Filters::default(),
        ));
        assert_ne!(etag(&s), other, "the filtered answer has its own ETag");
    }

    #[test]
    fn a_category_filter_picks_from_the_stored_list_and_a_short_answer_says_so() {
        let mut stored = doc();
        for (k, item) in stored.items.iter_mut().enumerate() {
            if k % 2 == 0 {
                item.categories = vec!["books".into()];
            }
        }
        let filters = Filters {
            exclude: Vec::new(),
            category: contract::params::parse_category(Some("books")).unwrap(),
        };
        let s = served_doc(stored.clone(), Source::EdgeCache, false, 2, &filters);
        let kept: Vec<&str> = s.doc.items.iter().map(|i| i.item_id.as_str()).collect();
        assert_eq!(kept, ["i0", "i2"]);
        assert_eq!(filter_short_header(&s, 2, &filters), None, "a full answer");
        let s = served_doc(stored.clone(), Source::EdgeCache, false, 10, &filters);
        assert_eq!(
            s.doc.items.len(),
            3,
            "every item of the category the list holds"
        );
        assert_eq!(
            filter_short_header(&s, 10, &filters),
            Some(("X-Filter-Short", "3".to_string()))
        );
        let plain = served_doc(stored, Source::EdgeCache, false, 10, &Filters::default());
        assert_eq!(
            filter_short_header(&plain, 10, &Filters::default()),
            None,
            "no filter, no header, even when the list is shorter than n"
        );
        assert!(EXPOSED_HEADERS.contains("X-Filter-Short"));
    }

    #[test]
    fn etags_depend_on_document_and_n_but_not_on_the_tier() {
        let a = etag(&served_doc(
            doc(),
            Source::Kv,
            false,
            3,
            &Filters::default(),
        ));
        let b = etag(&served_doc(
            doc(),
            Source::EdgeCache,
            false,
            3,
            &Filters::default(),
        ));
        let c = etag(&served_doc(
            doc(),
            Source::Kv,
            false,
            4,
            &Filters::default(),
        ));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with('"') && a.ends_with('"'));
    }

    #[test]
    fn if_none_match_handles_lists_weak_tags_and_star() {
        let e = "\"abc\"";
        assert!(if_none_match_matches(Some("\"abc\""), e));
        assert!(if_none_match_matches(Some("\"x\", W/\"abc\""), e));
        assert!(if_none_match_matches(Some("*"), e));
        assert!(!if_none_match_matches(Some("\"x\""), e));
        assert!(!if_none_match_matches(None, e));
    }

    #[test]
    fn fresh_answers_get_short_browser_max_age_and_s_maxage_of_the_remaining_freshness() {
        let cfg = EdgeConfig::default();
        let s = served_doc(doc(), Source::Kv, false, 5, &Filters::default());
        let h = served_headers(
            &s,
            "\"e\"",
            &Region::parse("europe").unwrap(),
            1100,
            &cfg,
            &vec![("kv", 1.5)],
        );
        assert_eq!(
            header(&h, "Cache-Control"),
            "public, max-age=30, s-maxage=200"
        );
        assert_eq!(header(&h, "X-Cache"), "MISS");
        assert_eq!(header(&h, "X-Served-By"), "kv");
        assert_eq!(header(&h, "X-Edge-Region"), "europe");
        assert_eq!(header(&h, "Server-Timing"), "kv;dur=1.5");
        assert_eq!(header(&h, "Access-Control-Allow-Origin"), "*");
    }

    #[test]
    fn hits_say_hit_and_stale_answers_say_stale_and_must_revalidate() {
        let cfg = EdgeConfig::default();
        let r = Region::parse("asia").unwrap();
        let hit = served_headers(
            &served_doc(doc(), Source::EdgeCache, false, 5, &Filters::default()),
            "\"e\"",
            &r,
            1000,
            &cfg,
            &vec![],
        );
        assert_eq!(header(&hit, "X-Cache"), "HIT");
        let stale = served_headers(
            &served_doc(doc(), Source::Stale, true, 5, &Filters::default()),
            "\"e\"",
            &r,
            1350,
            &cfg,
            &vec![],
        );
        assert_eq!(header(&stale, "X-Cache"), "STALE");
        assert_eq!(
            header(&stale, "Cache-Control"),
            "public, max-age=0, must-revalidate"
        );
    }
}
