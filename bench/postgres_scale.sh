#!/usr/bin/env bash
# Issue #12, section 7: the origin on PostgreSQL at scale, in one run on this machine,
# each PostgreSQL figure beside its SQLite peer.
#   1. USERS synthetic users (default 1,000,000; ITEMS 1,000, ~30 interactions each):
#      `origin demo-data` into PostgreSQL and into SQLite; `origin import` of a CSV of
#      IMPORT_USERS users x 5 interactions (default 1,000,000 users) into each; then
#      `origin publish` (read the store, train the default hybrid, publish every user to a
#      CDN folder) from each. Wall time and peak RSS from /usr/bin/time -v; the publish's
#      own "trained" log line gives its prepare and train times, its summary the publish
#      time, the rest of the wall is reading the store (and process start).
#   2. p99 of reads of an origin on a streaming replica vs one on the primary: two
#      `origin serve` on one database of READ_USERS demo users (default 100,000; a second
#      PostgreSQL cluster with a replica made by pg_basebackup -R, so the replica never
#      streams part 1's load), one with --db-replica, then `wrk --latency` against each in
#      turn, ROUNDS rounds of SECONDS_EACH s: GET /v1/recommendations/{user} (answered from
#      the model in memory: no store read) and GET /v1/analytics/real-time (a store read:
#      events of the last minutes, 20,000 of them inserted just before).
# PostgreSQL: Debian's 15 (PG_BIN), throwaway clusters in a temp dir, run as `postgres`
# when root; durability left on (fsync, synchronous_commit); PG_OPTS (printed) raises
# shared_buffers and max_wal_size for a bulk load.
# Usage: bench/postgres_scale.sh [ORIGIN_BIN]   (default target/native/origin)
# Env: USERS, ITEMS, IMPORT_USERS, READ_USERS, ROUNDS (3), SECONDS_EACH (10), CONNS (16),
#      SKIP_SQLITE=1 (PostgreSQL only), SKIP_READS=1 / SKIP_LOAD=1 (one part only),
#      SQLITE_FIRST=1 (publish from SQLite before PostgreSQL: the second publish writes
#      while the first's files are still being written back).
set -euo pipefail
cd "$(dirname "$0")/.."
origin="$(realpath "${1:-target/native/origin}")"
users="${USERS:-1000000}"; items="${ITEMS:-1000}"; import_users="${IMPORT_USERS:-1000000}"
read_users="${READ_USERS:-100000}"; rounds="${ROUNDS:-3}"; secs="${SECONDS_EACH:-10}"
conns="${CONNS:-16}"
pg_bin="${PG_BIN:-/usr/lib/postgresql/15/bin}"
pg_opts="${PG_OPTS:--c shared_buffers=1GB -c max_wal_size=8GB -c checkpoint_timeout=30min}"
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
tmp="$(mktemp -d)"; chmod 755 "$tmp"
clusters=()
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  for c in "${clusters[@]}"; do as_pg "$pg_bin/pg_ctl" -D "$c/data" -m fast -w stop >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pg_dir() { mkdir -p "$1"; if [ "$(id -u)" = 0 ]; then chown postgres: "$1"; fi; }
pg_start() { # dir port
  as_pg "$pg_bin/pg_ctl" -D "$1/data" -l "$1/log" -w -t 120 \
    -o "-p $2 -k $1 -c listen_addresses=127.0.0.1 $pg_opts" start >/dev/null
  clusters+=("$1")
}
pg_init() { # dir port
  pg_dir "$1"
  as_pg "$pg_bin/initdb" -D "$1/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
  pg_start "$1" "$2"
}
sql() { # port db statement
  psql -h 127.0.0.1 -p "$1" -U postgres -d "$2" -Atq -c "$3"
}
timed() { # label, command...: "label: wall s, peak RSS MB"; output kept in $tmp/out, $tmp/err
  local label="$1"; shift
  /usr/bin/time -v -o "$tmp/time" "$@" >"$tmp/out" 2>"$tmp/err" || { tail -20 "$tmp/err"; exit 1; }
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$tmp/time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' "$tmp/time")
  echo "| $label | ${wall} s | ${rss} MB |"
}
publish_phases() { # the publish's own figures, from its log and summary
  local trained prepare train published
  trained=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/err" | grep -o 'load_ms=[0-9]* train_ms=[0-9]*' | tail -1 || true)
  prepare=$(echo "$trained" | sed -E 's/load_ms=([0-9]*).*/\1/')
  train=$(echo "$trained" | sed -E 's/.*train_ms=([0-9]*)/\1/')
  published=$(grep -o 'in [0-9.]*s$' "$tmp/out" | tail -1 | tr -dc '0-9.' || true)
  awk -v w="$wall" -v p="$prepare" -v t="$train" -v s="$published" 'BEGIN {
    printf "|   of which: read the store (the rest) | %.1f s | |\n", w - p/1000 - t/1000 - s
    printf "|   of which: prepare (admission, weights) | %.1f s | |\n", p/1000
    printf "|   of which: train the hybrid | %.1f s | |\n", t/1000
    printf "|   of which: score, serialise, write every document | %.1f s | |\n", s }'
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "origin: $origin; PostgreSQL: $("$pg_bin/postgres" --version); PG_OPTS: $pg_opts"
echo

if [ "${SKIP_LOAD:-0}" != 1 ]; then
  a="$tmp/pg-a"; pa=$(free_port); pg_init "$a" "$pa"
  sql "$pa" postgres "CREATE DATABASE recs" ; sql "$pa" postgres "CREATE DATABASE imported"
  url="postgres://postgres@127.0.0.1:$pa/recs"
  echo "## $users users: demo-data, import, publish"
  echo
  echo "| step | wall | peak RSS |"
  echo "|---|---:|---:|"
  timed "PostgreSQL: \`origin demo-data --users $users\`" "$origin" demo-data --db "$url" --users "$users" --items "$items"
  pg_demo="$(grep -o '[0-9]* interactions' "$tmp/out" | head -1)"
  if [ "${SKIP_SQLITE:-0}" != 1 ]; then
    timed "SQLite: \`origin demo-data --users $users\`" "$origin" demo-data --db "$tmp/m.sqlite" --users "$users" --items "$items"
  fi
  # A CSV of import_users users x 5 interactions (user,item,timestamp,weight).
  awk -v n="$import_users" -v items="$items" 'BEGIN { srand(7); print "user,item,timestamp,weight";
    for (u = 1; u <= n; u++) for (k = 0; k < 5; k++)
      printf "c%d,i%d,%d,%d\n", u, 1 + int(rand() * items), 1756684800 + u * 5 + k, 1 + (rand() < 0.2) * 2 }' >"$tmp/import.csv"
  rows=$(($(wc -l <"$tmp/import.csv") - 1))
  timed "PostgreSQL: \`origin import\` of $rows rows ($import_users users)" "$origin" import --db "postgres://postgres@127.0.0.1:$pa/imported" --format csv "$tmp/import.csv"
  if [ "${SKIP_SQLITE:-0}" != 1 ]; then
    timed "SQLite: \`origin import\` of $rows rows ($import_users users)" "$origin" import --db "$tmp/imported.sqlite" --format csv "$tmp/import.csv"
  fi
  sql "$pa" recs "VACUUM ANALYZE" >/dev/null
  # Each publish writes 1,000,004 files; the next starts once they are deleted and synced.
  publish_pg() {
    RUST_LOG=info timed "PostgreSQL: \`origin publish\` of $users users to a CDN folder" "$origin" publish --db "$url" --out "$tmp/cdn" --targets cdn --keep-generations 1
    publish_phases
    rm -rf "$tmp/cdn"; sync
  }
  publish_sqlite() {
    if [ "${SKIP_SQLITE:-0}" != 1 ]; then
      RUST_LOG=info timed "SQLite: \`origin publish\` of $users users to a CDN folder" "$origin" publish --db "$tmp/m.sqlite" --out "$tmp/cdn" --targets cdn --keep-generations 1
      publish_phases
      rm -rf "$tmp/cdn"; sync
    fi
  }
  sync
  if [ "${SQLITE_FIRST:-0}" = 1 ]; then publish_sqlite; publish_pg; else publish_pg; publish_sqlite; fi
  echo
  echo "PostgreSQL demo data: $pg_demo; database size $(sql "$pa" postgres "SELECT pg_size_pretty(pg_database_size('recs'))")"
  [ -f "$tmp/m.sqlite" ] && echo "SQLite file: $(du -h "$tmp/m.sqlite" | cut -f1)"
  as_pg "$pg_bin/pg_ctl" -D "$a/data" -m fast -w stop >/dev/null; rm -rf "$a" "$tmp"/*.sqlite* "$tmp/import.csv"
  echo
fi

if [ "${SKIP_READS:-0}" != 1 ]; then
  b="$tmp/pg-b"; pb=$(free_port); pg_init "$b" "$pb"
  sql "$pb" postgres "CREATE DATABASE recs"
  r="$tmp/pg-r"; pr=$(free_port); pg_dir "$r"
  as_pg "$pg_bin/pg_basebackup" -D "$r/data" -R -X stream --checkpoint=fast -h 127.0.0.1 -U postgres -p "$pb"
  pg_start "$r" "$pr"
  primary="postgres://postgres@127.0.0.1:$pb/recs"; replica="postgres://postgres@127.0.0.1:$pr/recs"
  "$origin" demo-data --db "$primary" --users "$read_users" --items "$items" >/dev/null 2>&1
  start() { # port extra-args...: an origin on the primary (plus what extra-args add)
    local port="$1"; shift
    RUST_LOG=warn "$origin" serve --db "$primary" "$@" --listen "127.0.0.1:$port" \
      --metrics-listen "127.0.0.1:$(free_port)" --retrain-every-s 0 --rate-limit-rps 0 \
      >"$tmp/$port.log" 2>&1 &
    for _ in $(seq 1200); do
      curl -fs "http://127.0.0.1:$port/health" | grep -q '"status":"ok"' && return; sleep 0.25
    done; echo "origin on $port did not start"; tail "$tmp/$port.log"; exit 1
  }
  on_primary=$(free_port); on_replica=$(free_port)
  start "$on_primary"; start "$on_replica" --db-replica "$replica"
  # 20,000 events received over the last 4 minutes, for the real-time read to count.
  sql "$pb" recs "INSERT INTO events(tenant, received_at, user_id, item_id, type, ts)
    SELECT 'default', (extract(epoch FROM now()) * 1000)::bigint - g * 12, 'u' || (1 + g % $read_users),
           'i' || (1 + g % $items), 'view', extract(epoch FROM now())::bigint - g / 100
    FROM generate_series(1, 20000) g; ANALYZE events"
  until curl -fs "http://127.0.0.1:$on_replica/health" | grep -q '"healthy":true'; do sleep 0.2; done
  # A Lua script for wrk: a different user on every request, from the demo's ids.
  cat >"$tmp/users.lua" <<EOF
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/v1/recommendations/u" .. (1 + (counter * 7919) % $read_users) .. "?n=20")
end
response = function(status, headers, body)
  if status ~= 200 and not shown then shown = true; io.stderr:write(status .. " " .. body .. "\n") end
end
EOF
  p99() { # port path-or-script: p99 in ms and requests/s
    local out
    case "$2" in
      *.lua) out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$2" "http://127.0.0.1:$1") ;;
      *) out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$1$2") ;;
    esac
    echo "$out" | awk '/^ +99%/ { v=$2; if (v ~ /us$/) { sub(/us/,"",v); v/=1000 } else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) { sub(/s/,"",v); v*=1000 } p=v }
      /Requests\/sec/ { r=$2 } /Non-2xx/ { bad=$NF } END { printf "%.2f %d %s\n", p, r, (bad ? bad : 0) }'
  }
  for what in recommendations real-time; do
    case "$what" in
      recommendations) target="$tmp/users.lua"; label="GET /v1/recommendations/{user}?n=20 (model in memory)";;
      real-time) target="/v1/analytics/real-time"; label="GET /v1/analytics/real-time (a store read)";;
    esac
    echo "## $label, $read_users users, wrk -t2 -c$conns -d${secs}s"
    echo
    echo "| round | primary p99 | replica p99 | replica / primary | primary req/s | replica req/s | non-2xx |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for round in $(seq "$rounds"); do
      read -r a_p a_r a_bad < <(p99 "$on_primary" "$target")
      read -r b_p b_r b_bad < <(p99 "$on_replica" "$target")
      awk -v n="$round" -v ap="$a_p" -v bp="$b_p" -v ar="$a_r" -v br="$b_r" -v bad="$((a_bad + b_bad))" \
        'BEGIN { printf "| %d | %.2f ms | %.2f ms | %.2fx | %d | %d | %d |\n", n, ap, bp, bp / ap, ar, br, bad }'
    done
    echo
  done
  reads=$(curl -fs "http://127.0.0.1:$on_replica/health" | grep -o '"reads":[0-9]*' | head -1)
  echo "replica: $(curl -fs "http://127.0.0.1:$on_replica/health" | grep -o '"replicas":\[[^]]*\]')"
  echo "(the replica's $reads: the real-time reads went to it)"
fi
