#!/usr/bin/env bash
# What items' lists (similar items, bought together) add to a bulk publish, in one run:
# `origin publish --out` of one demo database with and without --no-item-lists,
# alternating, ROUNDS times; then the documents and bytes the lists add to the CDN
# folder (the same JSON documents go to KV, one value each).
# Usage: bench/item_lists.sh [ORIGIN_BIN] (env: USERS=20000 ITEMS=5000 ROUNDS=3 MODEL=ease)
set -euo pipefail
origin="${1:-target/native/origin}"
users="${USERS:-20000}"; items="${ITEMS:-5000}"; rounds="${ROUNDS:-3}"; model="${MODEL:-ease}"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
"$origin" demo-data --db "$tmp/o.sqlite" --users "$users" --items "$items" >/dev/null
publish() { # out-dir extra-args...
  local out="$1"; shift
  rm -rf "$out"
  local t0; t0=$(date +%s.%N)
  RUST_LOG=warn "$origin" publish --db "$tmp/o.sqlite" --out "$out" --model "$model" "$@" >"$tmp/publish.log" 2>&1 \
    || { cat "$tmp/publish.log"; exit 1; }
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}
echo "$users users, $items items, model $model"
echo "| round | with item lists (s) | without (s) | with / without |"
echo "|---|---|---|---|"
for r in $(seq "$rounds"); do
  with=$(publish "$tmp/with"); without=$(publish "$tmp/without" --no-item-lists)
  awk -v r="$r" -v a="$with" -v b="$without" 'BEGIN { printf "| %d | %s | %s | %.2fx |\n", r, a, b, a / b }'
done
publish "$tmp/with" >/dev/null
count() { find "$1" -type f -name '*.json' | wc -l; }
bytes() { find "$1" -type f -name '*.json' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
cur="$tmp/with/current/default"
for d in users similar bought-together; do
  printf '%s: %s documents, %s bytes (%s bytes each on average)\n' "$d" "$(count "$cur/$d")" "$(bytes "$cur/$d")" \
    "$(awk -v b="$(bytes "$cur/$d")" -v n="$(count "$cur/$d")" 'BEGIN { printf "%.0f", b / (n ? n : 1) }')"
done
