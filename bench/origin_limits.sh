#!/usr/bin/env bash
# Origin read throughput with the per-client rate limiter on vs off, in one run.
# Two `origin serve` over one demo database: one with --rate-limit-rps 0 (off), one with a
# limit too high to refuse anything (every request still goes through the token-bucket
# check), then wrk against GET /v1/popular on each, alternating, ROUNDS times.
# Usage: bench/origin_limits.sh [ORIGIN_BIN] (env: SECONDS_EACH=5 ROUNDS=3 CONNS=16)
set -euo pipefail
origin="${1:-target/debug/origin}"
secs="${SECONDS_EACH:-5}"; rounds="${ROUNDS:-3}"; conns="${CONNS:-16}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
tmp="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
"$origin" demo-data --db "$tmp/o.sqlite" --users 2000 --items 500 >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # port rps
  RUST_LOG=warn "$origin" serve --db "$tmp/o.sqlite" --listen "127.0.0.1:$1" \
    --metrics-listen "127.0.0.1:$(free_port)" --retrain-every-s 0 --model popularity \
    --rate-limit-rps "$2" --rate-limit-burst "$2" >"$tmp/$1.log" 2>&1 &
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$1/health" | grep -q '"status":"ok"' && return; sleep 0.1
  done; echo "origin on $1 did not start"; exit 1
}
off=$(free_port); on=$(free_port)
start "$off" 0; start "$on" 100000000
rps() { wrk -t2 -c"$conns" -d"${secs}s" "http://127.0.0.1:$1/v1/popular?n=10" | awk '/Requests\/sec/ {print $2}'; }
echo "| round | limiter off req/s | limiter on req/s | on / off |"
echo "|---|---|---|---|"
for r in $(seq "$rounds"); do
  a=$(rps "$off"); b=$(rps "$on")
  awk -v r="$r" -v a="$a" -v b="$b" 'BEGIN { printf "| %d | %s | %s | %.2fx |\n", r, a, b, b / a }'
done
