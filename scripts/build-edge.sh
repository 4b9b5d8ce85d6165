#!/usr/bin/env bash
# Builds the worker into edge/build/ (wasm + JS shim) with worker-build --release.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT/edge"
worker-build --release
