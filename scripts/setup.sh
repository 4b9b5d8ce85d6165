#!/usr/bin/env bash
# Installs what the build needs and is missing: the wasm target, pinned worker-build,
# wasm-bindgen-cli and s3s-fs (the tests' S3 server), the npm packages (wrangler,
# esbuild, binaryen), and kubernetes-validate (PyPI, in target/tools-venv) for the
# deploy manifests. Idempotent: each step is skipped when the right version is there.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "setup: adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
if ! worker-build --version 2>/dev/null | grep -qF "$WORKER_BUILD_VERSION"; then
  echo "setup: installing worker-build $WORKER_BUILD_VERSION (takes a few minutes once)"
  cargo install worker-build --version "=$WORKER_BUILD_VERSION" --debug
fi
if ! wasm-bindgen --version 2>/dev/null | grep -qF "$WASM_BINDGEN_VERSION"; then
  echo "setup: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (takes a few minutes once)"
  # Not --locked: its lockfile wants a crate version the registry mirror may lack.
  cargo install wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION" --debug
fi
if ! s3s-fs --version 2>/dev/null | grep -qF "$S3S_FS_VERSION"; then
  echo "setup: installing s3s-fs $S3S_FS_VERSION, the local S3 server of the tests (takes a few minutes once)"
  cargo install s3s-fs --version "=$S3S_FS_VERSION" --features binary --debug
fi
if [ ! -x node_modules/.bin/wrangler ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi
if ! "$TOOLS_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qxF "$KUBERNETES_VALIDATE_VERSION"; then
  # Checks deploy/k8s offline in tests/deploy_manifests.rs (which fails without it in CI).
  echo "setup: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into target/tools-venv (PyPI)"
  if ! { python3 -m venv "$TOOLS_VENV" \
      && "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; } >/dev/null 2>&1; then
    echo "setup: could not install kubernetes-validate (needs python3 with venv and pip, and PyPI);"
    echo "       tests/deploy_manifests.rs will skip locally and fail in CI"
  fi
fi
if ! command -v promtool >/dev/null 2>&1; then
  # Optional: checks ops/prometheus/alerts.yml in origin/tests/alerts.rs (skipped without it).
  echo "setup: installing promtool (Debian package prometheus)"
  if ! { apt-get update -qq && apt-get install -y -qq prometheus; } >/dev/null 2>&1; then
    echo "setup: could not install prometheus (no root or no apt); the alert-rule test will skip"
  fi
fi
if [ ! -x /usr/bin/chromium ]; then
  # For the browser test (tests/browser/demo_click.mjs): playwright-core drives Debian's
  # chromium, since Playwright's own browser download does not work offline.
  echo "setup: installing Debian's chromium for the browser test (apt-get install -y chromium)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; then
    echo "setup: could not install chromium (no root or no apt); the browser test will not run"
  fi
fi
if [ ! -x /usr/lib/postgresql/15/bin/initdb ] || ! command -v psql >/dev/null || ! command -v openssl >/dev/null; then
  # For the PostgreSQL store tests (origin/src/store/postgres/test_server.rs): they run
  # a throwaway server with Debian's initdb and pg_ctl in a temporary folder; psql turns
  # a database read only in tests/hardening_origin.rs, openssl makes the TLS test's CA.
  echo "setup: installing Debian's PostgreSQL 15 for the store tests (apt-get install -y postgresql-15 postgresql-client-15 openssl)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 openssl; } >/dev/null 2>&1; then
    echo "setup: could not install postgresql-15 (no root or no apt); the PostgreSQL tests skip locally and fail in CI"
  fi
fi
