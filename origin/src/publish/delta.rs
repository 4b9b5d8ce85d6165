//! When a bulk publish may be a delta, and what it must remember for the next one.
//!
//! `origin publish --delta` keeps a small state file (`--publish-state`): the last whole
//! generation published with deltas on (the *base*), when, until when its documents stay
//! readable, and the content hash of each of its documents. The next publish is a delta
//! against that base while the base is young enough that documents confirmed through it
//! stay readable for their whole freshness and stale windows; otherwise it is a whole
//! publish, which becomes the new base. [`plan`] decides, given the time.

use std::collections::HashMap;
use std::path::Path;

use contract::keys::Generation;
use serde::{Deserialize, Serialize};

use super::{DeltaBase, PublishError, PublishReport};

/// What a delta-enabled publish remembers between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaState {
    pub tenant: String,
    /// Target names, sorted: a delta only goes to the targets that hold its base.
    pub targets: Vec<String>,
    pub base: String,
    /// Unix seconds the base was published.
    pub published_at: u64,
    /// Unix seconds until which the base's documents stay readable.
    pub keep_until: u64,
    /// Content hash of each user's document in the base.
    pub hashes: HashMap<String, u64>,
}

/// What the next publish is.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `Some`: write only changes against this base.
    pub delta: Option<DeltaBase>,
    /// Keep what is written readable until then.
    pub keep_until: u64,
}

/// Decides the next publish at `now`: a delta when `state` is for the same tenant and
/// targets and its base stays readable through a document's whole life
/// (`now + doc_life_s <= keep_until`); else a whole publish that stays readable for
/// `max_base_age_s` plus a document's life.
pub fn plan(
    state: Option<&DeltaState>,
    tenant: &str,
    targets: &[String],
    now: u64,
    doc_life_s: u64,
    max_base_age_s: u64,
) -> Plan {
    let mut targets = targets.to_vec();
    targets.sort();
    if let Some(s) = state {
        let usable = s.tenant == tenant
            && s.targets == targets
            && now.saturating_add(doc_life_s) <= s.keep_until;
        if let (true, Ok(generation)) = (usable, Generation::parse(&s.base)) {
            return Plan {
                delta: Some(DeltaBase {
                    generation,
                    hashes: s.hashes.clone(),
                }),
                keep_until: s.keep_until,
            };
        }
    }
    Plan {
        delta: None,
        keep_until: now
            .saturating_add(max_base_age_s)
            .saturating_add(doc_life_s),
    }
}

/// The state after a whole publish, which is the base of the deltas that follow.
pub fn after_whole(
    report: &PublishReport,
    tenant: &str,
    targets: &[String],
    now: u64,
    keep_until: u64,
) -> DeltaState {
    let mut targets = targets.to_vec();
    targets.sort();
    DeltaState {
        tenant: tenant.to_owned(),
        targets,
        base: report.generation.clone(),
        published_at: now,
        keep_until,
        hashes: report.hashes.clone(),
    }
}

/// Reads the state file; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<DeltaState>, PublishError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            PublishError::Task(format!(
                "{}: not a publish state file ({e}); delete it to start again with a whole publish",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PublishError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the state file whole (a temporary file renamed over it).
pub fn save(path: &Path, state: &DeltaState) -> Result<(), PublishError> {
    let io = |source| PublishError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    serde_json::to_writer(std::io::BufWriter::new(tmp.as_file()), state)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keep_until: u64) -> DeltaState {
        DeltaState {
            tenant: "shop".into(),
            targets: vec!["kv-api".into(), "object-storage".into()],
            base: "g100-0".into(),
            published_at: 100,
            keep_until,
            hashes: HashMap::from([("u1".into(), 7)]),
        }
    }

    #[test]
    fn a_young_base_for_the_same_tenant_and_targets_gives_a_delta() {
        let targets = ["object-storage".to_string(), "kv-api".to_string()];
        let s = state(10_000);
        let p = plan(Some(&s), "shop", &targets, 1_000, 5_000, 86_400);
        let delta = p.delta.expect("a delta");
        assert_eq!(delta.generation.as_str(), "g100-0");
        assert_eq!(delta.hashes["u1"], 7);
        assert_eq!(p.keep_until, 10_000, "written into the chain of the base");
    }

    #[test]
    fn an_old_base_another_tenant_or_other_targets_give_a_whole_publish() {
        let targets = ["kv-api".to_string(), "object-storage".to_string()];
        let s = state(10_000);
        for (now, p) in [
            (
                5_001,
                plan(Some(&s), "shop", &targets, 5_001, 5_000, 86_400),
            ),
            (
                1_000,
                plan(Some(&s), "other", &targets, 1_000, 5_000, 86_400),
            ),
            (
                1_000,
                plan(Some(&s), "shop", &targets[..1], 1_000, 5_000, 86_400),
            ),
            (1_000, plan(None, "shop", &targets, 1_000, 5_000, 86_400)),
        ] {
            assert!(p.delta.is_none());
            assert_eq!(p.keep_until, now + 86_400 + 5_000);
        }
    }

    #[test]
    fn the_state_file_round_trips_and_a_foreign_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &state(9)).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state(9)));
        std::fs::write(&path, b"not json").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("delete it"));
    }
}
