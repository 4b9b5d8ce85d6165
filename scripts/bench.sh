#!/usr/bin/env bash
# `make bench`: every benchmark in one run on this machine, printing markdown tables
# (copied into docs/benchmarks.md). Parts:
#   1. worker size, raw and gzip, with the GeoIP DB in KV (default) and embedded;
#   2. GeoIP lookup cost natively (criterion), and request filters at an edge-cache hit;
#   3. edge: wrk against wrangler dev — edge-cache hit vs /health, GeoIP first request;
#   4. engine: quality and speed vs peers (bench/engine.sh), when present;
#   5. the origin middleware's latency accounting vs its Prometheus histogram (criterion);
#   6. PostgreSQL at 1,000,000 users and replica reads (bench/postgres_scale.sh, native build);
#   7. many tenants in one origin on PostgreSQL (tests/tenant_bench.rs; TENANTS, CACHE_MB);
#   8. items' lists in a bulk publish: time with and without, documents and bytes added
#      (bench/item_lists.sh, native build; USERS, ITEMS).
# Set BENCH_SECONDS (default 10) for the wrk runs; BENCH_SKIP_ENGINE=1 to skip part 4,
# BENCH_SKIP_POSTGRES=1 to skip part 6, BENCH_SKIP_TENANTS=1 to skip part 7.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
out="$ROOT/target/bench"
mkdir -p "$out"

if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk (Debian package)"
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
fi

echo "## 1. Worker size"
rm -rf "$out/edge-kv" "$out/edge-embedded"
(cd edge && worker-build --release -- --features embedded-geo >/dev/null 2>&1)
cp -r edge/build "$out/edge-embedded"
scripts/build-edge.sh >/dev/null 2>&1
cp -r edge/build "$out/edge-kv"
echo
echo "| build | wasm raw | wasm gzip -9 |"
echo "|---|---|---|"
for v in edge-kv edge-embedded; do
  raw=$(stat -c %s "$out/$v/index_bg.wasm"); gz=$(gzip -9 -c "$out/$v/index_bg.wasm" | wc -c)
  printf '| %s | %d KB | %d KB |\n' "$v" $((raw / 1000)) $((gz / 1000))
done
echo

echo "## 2. GeoIP lookup (criterion)"
cargo bench -p edge --bench geo 2>&1 | grep -E '^geo_|time:'
echo
echo "## 2b. Request filters at an edge-cache hit (criterion)"
cargo bench -p edge --bench filters 2>&1 | grep -E '^(edge_cache_hit|filter_step)|time:'
echo

echo "## 3. Edge under wrangler dev"
# The origin with the features `make test` builds it with, so neither replaces the other.
cargo build -p origin -p e2e --bins --features origin/otel
cp target/debug/origin "$out/origin"
ORIGIN_BIN="$out/origin" target/debug/edge-bench --seconds "${BENCH_SECONDS:-10}" --embedded-worker "$out/edge-embedded/index.js"
echo

if [ -x bench/engine.sh ] && [ "${BENCH_SKIP_ENGINE:-0}" != 1 ]; then
  echo "## 4. Engine"
  bench/engine.sh
fi
echo

echo "## 5. Origin request accounting (criterion)"
cargo bench -p origin --bench request_accounting 2>&1 | grep -E '^request_accounting/|time:'
echo

if [ "${BENCH_SKIP_POSTGRES:-0}" != 1 ]; then
  echo "## 6. PostgreSQL at scale"
  cargo build --profile native -p origin
  bench/postgres_scale.sh target/native/origin
fi

if [ "${BENCH_SKIP_TENANTS:-0}" != 1 ]; then
  echo "## 7. Many tenants in one origin (PostgreSQL)"
  cargo build --profile native -p origin
  cargo build -p e2e --bin tenant-bench --features origin/otel
  ORIGIN_BIN=target/native/origin TENANTS="${TENANTS:-10000}" CACHE_MB="${CACHE_MB:-256}" target/debug/tenant-bench
fi

echo "## 8. Items' lists in a bulk publish"
cargo build --profile native -p origin
bench/item_lists.sh target/native/origin
