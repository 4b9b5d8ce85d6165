#!/usr/bin/env bash
# Runs every test — native unit and property tests of all crates, origin handler and
# store tests, the end-to-end tests against real wrangler dev / origin / CDN processes,
# and the wasm-bindgen tests under node — then prints one closing count.
set -uo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0

run() {
  echo "==> $*"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "==> FAILED ($rc): $*"; status=1; }
}

# The origin is built with its `otel` feature everywhere in the tests (here and in
# `make origin`), so tests/otel.rs runs and target/debug/origin is one binary.
run cargo test --no-fail-fast --workspace --exclude e2e --features origin/otel
run cargo test --no-fail-fast -p e2e -- --test-threads 4
# The same end-to-end tests with every origin on PostgreSQL (a throwaway server per test
# binary, a fresh database per stack; tests/harness.rs `new_database`).
run env E2E_DB=postgres cargo test --no-fail-fast -p e2e --test end_to_end \
  --test hardening_origin --test hardening_publish --test hardening_edge --test drain \
  --test cloudflare_production --test tenant_keys --test filters --test item_lists -- --test-threads 4
run cargo test -p edge --target wasm32-unknown-unknown --lib

passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) p += $i } END { print p + 0 }' "$log")
failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) f += $i } END { print f + 0 }' "$log")
echo
echo "${passed:-0} passed, ${failed:-0} failed"
if [ "$status" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then echo "a test command failed before running its tests (see above)"; fi
exit "$status"
