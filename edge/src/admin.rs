//! The admin routes' logic: the bearer-token check (the contract's, constant time) and
//! the validation of publish and purge bodies (strict JSON, the contract's document
//! rules) into KV writes and cache deletions.

use contract::admin::{
    PublishRequest, PurgeRequest, KV_OPS_PER_INVOCATION, MAX_ADMIN_BODY_BYTES, MAX_PUBLISH_DOCS,
    MAX_PURGE_IDS, POPULAR_USER_ID,
};
use contract::keys::{self, Generation};
use contract::{RecommendationDoc, Region, Tenant, UserId};

use crate::error::EdgeError;

/// Generation used when documents arrive for a tenant that has never been published.
pub const FIRST_GENERATION: &str = "g0-0";
/// KV's shortest allowed expiration TTL.
pub const KV_MIN_TTL_S: u64 = 60;

/// Checks `Authorization: Bearer <token>` against the configured token with the
/// contract's rule ([`contract::auth::check_bearer`]: any case of `Bearer`, constant time).
pub fn authorize(authorization: Option<&str>, admin_token: Option<&str>) -> Result<(), EdgeError> {
    Ok(contract::auth::check_bearer(authorization, admin_token)?)
}

/// Parses an admin body, refusing oversized ones, duplicate keys and unknown fields.
pub fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, EdgeError> {
    if bytes.len() > MAX_ADMIN_BODY_BYTES {
        return Err(EdgeError::PayloadTooLarge {
            max: MAX_ADMIN_BODY_BYTES,
        });
    }
    contract::json::from_slice(bytes).map_err(|e| EdgeError::BadBody(e.to_string()))
}

/// One KV write of a publish.
#[derive(Debug, Clone, PartialEq)]
pub struct KvWrite {
    pub key: String,
    pub value: String,
    pub expiration_ttl_s: u64,
}

/// What a validated publish does: the writes, then (maybe) the pointer flip.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishPlan {
    pub tenant: Tenant,
    pub generation: Generation,
    pub writes: Vec<KvWrite>,
    /// Write `pointer_key` = generation after the writes.
    pub activate: bool,
    pub pointer_key: String,
}

fn tenant_of(raw: Option<&str>) -> Result<Tenant, EdgeError> {
    raw.map(Tenant::parse)
        .transpose()
        .map(|t| t.unwrap_or_else(Tenant::default_tenant))
        .map_err(EdgeError::from)
}

fn check_doc(doc: &RecommendationDoc, tenant: &Tenant, what: &str) -> Result<Region, EdgeError> {
    if doc.tenant != tenant.as_str() {
        return Err(EdgeError::BadBody(format!(
            "{what} is for tenant {:?}, not {tenant}",
            doc.tenant
        )));
    }
    doc.validate()
        .map_err(|e| EdgeError::BadBody(format!("{what}: {e}")))?;
    let size = serde_json::to_vec(doc).map_or(usize::MAX, |b| b.len());
    if size > contract::MAX_DOC_BYTES {
        return Err(EdgeError::BadBody(format!(
            "{what} is {size} bytes; at most {} are allowed",
            contract::MAX_DOC_BYTES
        )));
    }
    if doc.fresh_for_s == 0 {
        return Err(EdgeError::BadBody(format!("{what} has fresh_for_s 0")));
    }
    Region::parse(&doc.region).map_err(|e| EdgeError::BadBody(format!("{what}: {e}")))
}

fn expiration_ttl(doc: &RecommendationDoc, now_s: u64) -> u64 {
    doc.stale_until().saturating_sub(now_s).max(KV_MIN_TTL_S)
}

/// Validates a publish and turns it into KV writes. Documents go into the request's
/// generation, else the tenant's `current` one, else [`FIRST_GENERATION`] (which is
/// then activated, so a tenant's first documents are readable at once).
pub fn publish_plan(
    req: PublishRequest,
    current: Option<Generation>,
    now_s: u64,
) -> Result<PublishPlan, EdgeError> {
    let tenant = tenant_of(req.tenant.as_deref())?;
    let total = req.documents.len() + req.popular.len();
    if total > MAX_PUBLISH_DOCS {
        return Err(EdgeError::BadBody(format!(
            "{total} documents in one publish; at most {MAX_PUBLISH_DOCS}, so the call stays within \
             a Worker's {KV_OPS_PER_INVOCATION} KV operations (for bulk publishing use \
             `origin publish --targets kv-api`)"
        )));
    }
    let (generation, activate) = match (req.generation.as_deref(), current) {
        (Some(g), _) => (
            Generation::parse(g).map_err(|e| EdgeError::BadBody(e.to_string()))?,
            req.activate,
        ),
        (None, Some(cur)) => (cur, false),
        (None, None) => (
            Generation::parse(FIRST_GENERATION).map_err(|e| EdgeError::Internal(e.to_string()))?,
            true,
        ),
    };
    let mut writes = Vec::with_capacity(total);
    for (i, doc) in req.documents.iter().enumerate() {
        let what = format!("documents[{i}]");
        check_doc(doc, &tenant, &what)?;
        // A user's document, or an item's list.
        let subject =
            contract::Subject::of(doc).map_err(|e| EdgeError::BadBody(format!("{what}: {e}")))?;
        writes.push(KvWrite {
            key: keys::kv_subject(&tenant, &generation, &subject),
            value: serde_json::to_string(doc).map_err(|e| EdgeError::Internal(e.to_string()))?,
            expiration_ttl_s: expiration_ttl(doc, now_s),
        });
    }
    for (i, doc) in req.popular.iter().enumerate() {
        let what = format!("popular[{i}]");
        let region = check_doc(doc, &tenant, &what)?;
        if doc.user_id != POPULAR_USER_ID {
            return Err(EdgeError::BadBody(format!(
                "{what} must have user_id {POPULAR_USER_ID:?}"
            )));
        }
        writes.push(KvWrite {
            key: keys::kv_popular(&tenant, &generation, &region),
            value: serde_json::to_string(doc).map_err(|e| EdgeError::Internal(e.to_string()))?,
            expiration_ttl_s: expiration_ttl(doc, now_s),
        });
    }
    let pointer_key = keys::kv_generation_pointer(&tenant);
    Ok(PublishPlan {
        tenant,
        generation,
        writes,
        activate,
        pointer_key,
    })
}

/// Validates a purge into the tenant and the users whose cache entries to drop.
/// The tenant of a `POST /admin/delete-tenant`, validated before it forms a key.
pub fn delete_tenant_plan(body: &[u8]) -> Result<Tenant, EdgeError> {
    let req: contract::admin::DeleteTenantRequest = parse_body(body)?;
    Ok(Tenant::parse(&req.tenant)?)
}

/// Validates a purge into the tenant and the subjects (users, items' lists) whose cache
/// entries to drop: at most [`MAX_PURGE_IDS`] of them together.
pub fn purge_plan(req: PurgeRequest) -> Result<(Tenant, Vec<contract::Subject>), EdgeError> {
    let tenant = tenant_of(req.tenant.as_deref())?;
    let total = req.user_ids.len() + req.item_lists.len();
    if total > MAX_PURGE_IDS {
        return Err(EdgeError::BadBody(format!(
            "{total} user ids and item lists in one purge; at most {MAX_PURGE_IDS}"
        )));
    }
    let mut subjects = req
        .user_ids
        .iter()
        .map(|u| Ok(contract::Subject::User(UserId::parse(u)?)))
        .collect::<Result<Vec<_>, EdgeError>>()?;
    for l in &req.item_lists {
        subjects.push(contract::Subject::Item(
            l.list,
            contract::ItemId::parse(&l.item_id)?,
        ));
    }
    Ok((tenant, subjects))
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    fn doc(user: &str) -> RecommendationDoc {
        RecommendationDoc {
            tenant: "default".into(),
            user_id: user.into(),
            region: "europe".into(),
            items: vec![],
            model_version: "m".into(),
            generated_at: 1000,
            fresh_for_s: 300,
            stale_for_s: 1000,
            list: None,
            item_id: None,
            variant: None,
        }
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        assert!(authorize(Some("Bearer s3cret"), Some("s3cret")).is_ok());
        assert!(
            authorize(Some("bearer s3cret"), Some("s3cret")).is_ok(),
            "the scheme is case-insensitive (RFC 7235), as at the origin"
        );
        for bad in [
            None,
            Some("s3cret"),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("Bearer "),
        ] {
            assert_eq!(
                authorize(bad, Some("s3cret")),
                Err(EdgeError::Unauthorized),
                "{bad:?}"
            );
        }
        assert_eq!(
            authorize(Some("Bearer x"), None),
            Err(EdgeError::AdminDisabled)
        );
    }

    #[test]
    fn a_publish_writes_namespaced_keys_into_its_generation() {
        let req = PublishRequest {
            generation: Some("g5-1".into()),
            activate: true,
            documents: vec![doc("u1")],
            popular: vec![doc(POPULAR_USER_ID)],
            ..Default::default()
        };
        let plan = publish_plan(req, None, 1000).unwrap();
        assert_eq!(plan.writes[0].key, "t/default/g/g5-1/u/u1");
        assert_eq!(plan.writes[1].key, "t/default/g/g5-1/popular/europe");
        assert_eq!(plan.writes[0].expiration_ttl_s, 1300);
        assert!(plan.activate);
        assert_eq!(plan.pointer_key, "t/default/generation");
    }

    #[test]
    fn without_a_generation_documents_go_to_the_current_one_or_the_first() {
        let req = PublishRequest {
            documents: vec![doc("u1")],
            ..Default::default()
        };
        let plan = publish_plan(req.clone(), Some(Generation::parse("g9-9").unwrap()), 0).unwrap();
        assert_eq!((plan.generation.as_str(), plan.activate), ("g9-9", false));
        let plan = publish_plan(req, None, 0).unwrap();
        assert_eq!(
            (plan.generation.as_str(), plan.activate),
            (FIRST_GENERATION, true)
        );
    }

    #[test]
    fn a_tenant_to_delete_is_validated_before_it_forms_a_key() {
        assert_eq!(
            delete_tenant_plan(br#"{"tenant":"shop-a"}"#)
                .unwrap()
                .as_str(),
            "shop-a"
        );
        for bad in [
            &br#"{"tenant":"../b"}"#[..],
            br#"{"tenant":"a/b"}"#,
            br#"{"tenant":""}"#,
            br#"{"tenant":"a","extra":1}"#,
            br#"{}"#,
        ] {
            let e = delete_tenant_plan(bad).unwrap_err();
            assert_eq!(e.status(), 400, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn publishes_that_would_cross_tenants_or_paths_are_refused() {
        let mut other = doc("u1");
        other.tenant = "other".into();
        for req in [
            PublishRequest {
                documents: vec![other],
                ..Default::default()
            },
            PublishRequest {
                documents: vec![doc("../u2")],
                ..Default::default()
            },
            PublishRequest {
                generation: Some("g1/../x".into()),
                ..Default::default()
            },
            PublishRequest {
                popular: vec![doc("u1")],
                ..Default::default()
            },
            PublishRequest {
                documents: vec![doc("u1"); MAX_PUBLISH_DOCS + 1],
                ..Default::default()
            },
        ] {
            assert_eq!(publish_plan(req, None, 0).unwrap_err().status(), 400);
        }
    }

    #[test]
    fn a_publish_stays_within_one_invocations_kv_operations() {
        let full = PublishRequest {
            generation: Some("g1-0".into()),
            activate: true,
            documents: vec![doc("u1"); MAX_PUBLISH_DOCS],
            ..Default::default()
        };
        let plan = publish_plan(full, None, 0).unwrap();
        // One pointer read, the writes, one pointer write.
        assert!(1 + plan.writes.len() + usize::from(plan.activate) <= KV_OPS_PER_INVOCATION);
        let over = PublishRequest {
            documents: vec![doc("u1"); MAX_PUBLISH_DOCS + 1],
            ..Default::default()
        };
        let err = publish_plan(over, None, 0).unwrap_err().to_string();
        assert!(err.contains("1000 KV operations"), "{err}");
        assert!(err.contains("kv-api"), "{err}");
    }

    #[test]
    fn a_publish_of_bad_item_ids_bad_scores_or_an_oversize_document_is_refused() {
        let item = |id: &str, score: f64| contract::RecItem {
            item_id: id.into(),
            score,
            reason: None,
            categories: Vec::new(),
        };
        let with_items = |items| PublishRequest {
            documents: vec![RecommendationDoc { items, ..doc("u1") }],
            ..Default::default()
        };
        for items in [
            vec![item("../../x", 1.0)],
            vec![item("i1", f64::NAN)],
            vec![item("i1", 1.0); contract::MAX_N + 1],
        ] {
            let e = publish_plan(with_items(items), None, 0).unwrap_err();
            assert_eq!(e.status(), 400, "{e}");
        }
        let reason = Some("r".repeat(contract::doc::MAX_REASON_LEN));
        let long = contract::RecItem {
            reason,
            categories: Vec::new(),
            ..item(&"i".repeat(contract::ids::MAX_ID_LEN), 1.0)
        };
        let mut big = with_items(vec![long; contract::MAX_N]);
        big.documents[0].model_version = "m".repeat(contract::doc::MAX_MODEL_VERSION_LEN);
        assert!(
            publish_plan(big, None, 0).is_ok(),
            "the largest valid document fits"
        );
    }

    #[test]
    fn duplicate_keys_and_unknown_fields_in_admin_bodies_are_refused() {
        for body in [
            &br#"{"user_ids":["u1"],"user_ids":["u2"]}"#[..],
            br#"{"user_ids":["u1"],"tenant":"a","tenant":"b"}"#,
            br#"{"user_ids":["u1"],"surprise":true}"#,
        ] {
            let e = parse_body::<PurgeRequest>(body).unwrap_err();
            assert_eq!(
                e.code(),
                "invalid_body",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_body::<PurgeRequest>(br#"{"user_ids":["u1"]}"#).is_ok());
    }

    #[test]
    fn purges_validate_every_user_id() {
        let (t, users) = purge_plan(PurgeRequest {
            tenant: None,
            user_ids: vec!["u1".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!((t.as_str(), users.len()), ("default", 1));
        assert!(purge_plan(PurgeRequest {
            tenant: None,
            user_ids: vec!["a/b".into()],
            ..Default::default()
        })
        .is_err());
        let (_, subjects) = parse_body::<PurgeRequest>(
            br#"{"user_ids":[],"item_lists":[{"list":"bought-together","item_id":"i9"}]}"#,
        )
        .and_then(purge_plan)
        .unwrap();
        assert_eq!(
            subjects,
            vec![contract::Subject::Item(
                contract::ItemList::BoughtTogether,
                contract::ItemId::parse("i9").unwrap()
            )]
        );
        for bad in [
            &br#"{"user_ids":[],"item_lists":[{"list":"similar","item_id":"../x"}]}"#[..],
            br#"{"user_ids":[],"item_lists":[{"list":"cheapest","item_id":"i1"}]}"#,
        ] {
            assert!(parse_body::<PurgeRequest>(bad)
                .and_then(purge_plan)
                .is_err());
        }
    }

    #[test]
    fn oversized_or_malformed_bodies_are_refused() {
        assert_eq!(
            parse_body::<PurgeRequest>(b"{").unwrap_err().code(),
            "invalid_body"
        );
        let big = vec![b' '; MAX_ADMIN_BODY_BYTES + 1];
        assert_eq!(parse_body::<PurgeRequest>(&big).unwrap_err().status(), 413);
    }
}
