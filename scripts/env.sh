# Sourced by the other scripts: paths and settings for building and running the worker
# offline (see README "How the build works"). Not meant to be run on its own.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_BIN_DIR="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$CARGO_BIN_DIR:$ROOT/node_modules/.bin:$PATH"
# worker-build would otherwise try to download wasm-bindgen and wasm-opt.
export WASM_BINDGEN_BIN="$CARGO_BIN_DIR/wasm-bindgen"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# wrangler: no telemetry, no banner, no fetch of Cloudflare's cf object.
export WRANGLER_SEND_METRICS=false WRANGLER_HIDE_BANNER=true CLOUDFLARE_CF_FETCH_ENABLED=false
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# Pinned tool versions (TOOLCHAIN: worker-build 0.8.7; wasm-bindgen-cli = the locked crate).
WORKER_BUILD_VERSION=0.8.7
# The S3-compatible server the object-storage publish tests run against (origin/tests/object_storage.rs).
S3S_FS_VERSION=0.14.1
# kubernetes-validate (PyPI) checks deploy/k8s in tests/deploy_manifests.rs; it lives in
# its own venv, where that test looks for it.
KUBERNETES_VALIDATE_VERSION=1.37.0
TOOLS_VENV="$ROOT/target/tools-venv"
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/, ""); print}' "$ROOT/Cargo.lock")"
