//! The deployable worker config (`wrangler.toml`): `wrangler deploy --dry-run --env
//! production` bundles the built worker with the production bindings, and no environment
//! but local development names a localhost address.
//!
//! The dry run uses a copy of `wrangler.toml` without its `[build]` step (so it checks the
//! worker `make test` built instead of rebuilding it) and with `main` made absolute; every
//! other line is the repository's.

use std::process::Command;

use e2e::repo_root;

/// The `[env.NAME…]` sections of the config, as text.
fn env_sections<'a>(config: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("[env.{name}");
    let head2 = format!("[[env.{name}");
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    for (at, line) in config
        .match_indices('\n')
        .map(|(i, _)| (i + 1, &config[i + 1..]))
    {
        let line = line.lines().next().unwrap_or("");
        if line.starts_with('[') {
            if let Some(start) = current.take() {
                out.push(&config[start..at]);
            }
            if line.starts_with(&head) || line.starts_with(&head2) {
                current = Some(at);
            }
        }
    }
    if let Some(start) = current {
        out.push(&config[start..]);
    }
    out
}

#[test]
fn staging_and_production_name_no_local_address_and_have_every_binding() {
    let config = std::fs::read_to_string(repo_root().join("wrangler.toml")).unwrap();
    for env in ["staging", "production"] {
        let sections = env_sections(&config, env);
        assert!(sections.len() >= 4, "[env.{env}] sections: {sections:?}");
        let text = sections.concat();
        for local in ["127.0.0.1", "localhost", "0.0.0.0", "[::1]"] {
            assert!(!text.contains(local), "[env.{env}] names {local}:\n{text}");
        }
        for needed in [
            "kv_namespaces",
            "ratelimits",
            "ORIGINS",
            "SECONDARY_CDN_URL",
            "CACHE_HOST",
        ] {
            assert!(text.contains(needed), "[env.{env}] lacks {needed}");
        }
    }
    // Outside the environments, only local development (make dev passes its addresses).
    let top = config.split("[env.").next().unwrap();
    for line in top.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !line.contains("127.0.0.1") && !line.contains("localhost"),
            "the top level (used by a plain `wrangler deploy`) names a local address: {line}"
        );
    }
}

#[test]
fn wrangler_deploy_dry_run_for_production_bundles_the_worker_with_its_bindings() {
    let root = repo_root();
    let worker = root.join("edge/build/index.js");
    assert!(
        worker.exists(),
        "{} is missing: `make test` builds the edge first",
        worker.display()
    );
    let config = std::fs::read_to_string(root.join("wrangler.toml")).unwrap();
    let mut copy = String::new();
    let mut in_build = false;
    for line in config.lines() {
        if line.starts_with('[') {
            in_build = line.trim() == "[build]";
        }
        if in_build {
            continue;
        }
        if line.starts_with("main = ") {
            copy.push_str(&format!("main = \"{}\"\n", worker.display()));
        } else {
            copy.push_str(line);
            copy.push('\n');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrangler.toml");
    std::fs::write(&path, copy).unwrap();
    let out = Command::new(root.join("node_modules/.bin/wrangler"))
        .args(["deploy", "--dry-run", "--env", "production", "--outdir"])
        .arg(dir.path().join("dist"))
        .arg("--config")
        .arg(&path)
        .env("WRANGLER_SEND_METRICS", "false")
        .env("WRANGLER_HIDE_BANNER", "true")
        .env("XDG_CONFIG_HOME", dir.path())
        .current_dir(dir.path())
        .output()
        .expect("wrangler runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dry run failed:\n{said}");
    for binding in [
        "KV",
        "EVENTS_LIMITER",
        "TENANT_EVENTS_LIMITER",
        "https://cdn.example.com",
        "recs.example.com",
    ] {
        assert!(
            said.contains(binding),
            "the dry run does not show {binding}:\n{said}"
        );
    }
    assert!(
        !said.contains("127.0.0.1"),
        "a local address in production:\n{said}"
    );
    assert!(
        said.contains("--dry-run: exiting now") || said.contains("Total Upload"),
        "{said}"
    );
}
