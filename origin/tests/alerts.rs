//! The Prometheus alert rules in `ops/prometheus/` are valid and fire at the spec's
//! thresholds: `promtool check rules` and `promtool test rules`, when `promtool` is on
//! PATH (Debian package `prometheus`; `scripts/setup.sh` installs it when it can).

use std::path::PathBuf;
use std::process::Command;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ops/prometheus")
}

fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            println!(
                "skipped: promtool is not on PATH ({e}); install the Debian package `prometheus`"
            );
            None
        }
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(check) = promtool(&["check", "rules", "alerts.yml"]) else {
        return;
    };
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let Some(test) = promtool(&["test", "rules", "alerts_test.yml"]) else {
        return;
    };
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}
