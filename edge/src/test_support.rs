//! Fixtures shared by the core's unit tests.

use contract::RecommendationDoc;

/// An empty document for user `u1` of tenant `default`, with the given times.
pub fn doc(generated_at: u64, fresh_for_s: u64, stale_for_s: u64) -> RecommendationDoc {
    RecommendationDoc {
        tenant: "default".into(),
        user_id: "u1".into(),
        region: "us-east".into(),
        items: vec![],
        model_version: "m".into(),
        generated_at,
        fresh_for_s,
        stale_for_s,
        list: None,
        item_id: None,
        variant: None,
    }
}
