#!/usr/bin/env bash
# Publishing to the production targets, against local stand-ins, each beside the CDN-folder
# publish of the same database in the same run (the peer):
#   1. KV through Cloudflare's REST bulk API, USERS_KV users (default 1,000,000), against
#      bench/fake_kv_api.py (no local Cloudflare API exists; it implements the documented
#      endpoint and checks its limits): wall time, calls, bytes; then the same publish again
#      (nothing changed; --delta) to count what a second publish writes.
#   2. Object storage, USERS_S3 users (default 100,000), to a real s3s-fs process:
#      wall time, objects, bytes.
# Usage: bench/publish_targets.sh [ORIGIN_BIN]   (default target/native/origin)
# Env: USERS_KV, USERS_S3, ITEMS (1000), MODEL (hybrid), KV_RPS (1000: our side's speed;
#      Cloudflare's API allows 4/s, see the notes printed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
origin="${1:-target/native/origin}"
users_kv="${USERS_KV:-1000000}"; users_s3="${USERS_S3:-100000}"
items="${ITEMS:-1000}"; model="${MODEL:-hybrid}"; kv_rps="${KV_RPS:-1000}"
tmp="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
timed() { # label, command...: prints "label: wall s, peak RSS MB" and keeps the output
  local label="$1"; shift
  /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err"; exit 1; }
  read -r wall rss <"$tmp/time"
  echo "$label: ${wall} s, peak RSS $((rss / 1024)) MB — $(grep -o 'published generation.*' "$tmp/out" || true)"
}

echo "## KV bulk API, $users_kv users"
"$origin" demo-data --db "$tmp/kv.sqlite" --users "$users_kv" --items "$items" >/dev/null
kv_port=$(free_port)
python3 bench/fake_kv_api.py "$kv_port" bench-token &
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$kv_port/stats" >/dev/null && break; sleep 0.1; done
kv_args=(--targets kv-api --kv-account-id acc1 --kv-namespace-id ns1
         --kv-api-url "http://127.0.0.1:$kv_port/client/v4" --kv-api-rps "$kv_rps" --model "$model"
         --delta --publish-state "$tmp/kv-state.json")
timed "peer: publish to the CDN folder" "$origin" publish --db "$tmp/kv.sqlite" --out "$tmp/cdn" --targets cdn --model "$model" --keep-generations 1
rm -rf "$tmp/cdn"
CLOUDFLARE_API_TOKEN=bench-token timed "publish to KV through the bulk API (whole: the base)" "$origin" publish --db "$tmp/kv.sqlite" "${kv_args[@]}"
curl -fs "http://127.0.0.1:$kv_port/stats" | tee "$tmp/stats1"; echo
CLOUDFLARE_API_TOKEN=bench-token timed "the same publish again, nothing changed (--delta)" "$origin" publish --db "$tmp/kv.sqlite" "${kv_args[@]}"
curl -fs "http://127.0.0.1:$kv_port/stats" | tee "$tmp/stats2"; echo
python3 - "$tmp/stats1" "$tmp/stats2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"first publish: {a['calls']} calls, {a['pairs']} pairs, {a['bytes']/1e6:.1f} MB; "
      f"largest call {a['max_call_pairs']} pairs / {a['max_call_bytes']/1e6:.1f} MB; violations {len(a['violations'])}")
print(f"second publish: {b['calls']-a['calls']} calls, {b['pairs']-a['pairs']} pairs written again, "
      f"{(b['bytes']-a['bytes'])/1e6:.1f} MB")
print(f"at Cloudflare's 4 calls/s the first publish's {a['calls']} calls take at least {a['calls']/4:.0f} s")
EOF

echo "## Object storage (s3s-fs), $users_s3 users"
"$origin" demo-data --db "$tmp/s3.sqlite" --users "$users_s3" --items "$items" >/dev/null
s3_port=$(free_port); mkdir -p "$tmp/s3/recs"
s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key bench-key --secret-key bench-secret-0123456789 "$tmp/s3" >/dev/null 2>&1 &
for _ in $(seq 100); do curl -s "http://127.0.0.1:$s3_port/" >/dev/null && break; sleep 0.1; done
timed "peer: publish to the CDN folder" "$origin" publish --db "$tmp/s3.sqlite" --out "$tmp/cdn" --targets cdn --model "$model"
AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 timed "publish to object storage" \
  "$origin" publish --db "$tmp/s3.sqlite" --targets object-storage --model "$model" \
  --s3-endpoint "http://127.0.0.1:$s3_port" --s3-bucket recs --s3-prefix cdn
echo "objects: $(find "$tmp/s3/recs/cdn/generations" -type f | wc -l), bytes: $(du -sb "$tmp/s3/recs/cdn/generations" | cut -f1)"
