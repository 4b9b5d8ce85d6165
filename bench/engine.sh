#!/usr/bin/env bash
# Engine benchmark: quality and cost of our models against numpy/scipy references and the
# `implicit` library (ALS, BPR, item-kNN), on one reproducible MovieLens 100K split, plus a
# cost comparison at MovieLens-1M scale on synthetic data and single-query latency.
#
#   bash bench/engine.sh            # from the repo root; results in target/bench/
#   ENGINE_LATENCY=0 bash ...       # skip the criterion latency bench
#   ENGINE_REPEAT=3                 # timing repetitions (median of internal seconds)
#
# Reads MovieLens from ../shared/data/ml-100k (research-only licence: never copied here);
# skips with a message when it is absent. Builds a Python venv in target/bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ML100K_DIR:-../shared/data/ml-100k}
if [ ! -f "$DATA/u.data" ] || [ ! -f "$DATA/u.item" ]; then
    echo "engine bench: $DATA/u.data or u.item not found; skipping (MovieLens is not shipped)."
    exit 0
fi
OUT=target/bench
VENV=target/bench-venv
REPEAT=${ENGINE_REPEAT:-3}
mkdir -p "$OUT/runs" "$OUT/lists"

echo "== build" >&2
cargo build --release -p origin -j2 >&2
BIN=${CARGO_TARGET_DIR:-target}/release/origin

echo "== python venv ($VENV)" >&2
if ! "$VENV/bin/python" -c 'import numpy, scipy, implicit' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" download -q --no-deps -d "$OUT/pip-check" implicit >&2 \
        || { echo "engine bench: 'pip download implicit' failed; no wheel for this platform?" >&2; exit 1; }
    "$VENV/bin/pip" install -q numpy scipy implicit >&2
fi
PY="$VENV/bin/python"
export OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2

echo "== split (seed 42)" >&2
"$BIN" split --input "$DATA/u.data" --out-dir "$OUT/ml100k" --seed 42 >&2
S="$OUT/ml100k"
EVAL=(--train "$S/train.txt" --valid "$S/valid.txt" --test "$S/test.txt" --items "$DATA/u.item" --k 20)

# run NAME CMD...: stdout → runs/NAME.json, stderr → runs/NAME.err, /usr/bin/time -v → runs/NAME.time
run() {
    local name=$1
    shift
    /usr/bin/time -v -o "$OUT/runs/$name.time" "$@" >"$OUT/runs/$name.json" 2>"$OUT/runs/$name.err" \
        || { echo "engine bench: $name failed:" >&2; tail -5 "$OUT/runs/$name.err" >&2; exit 1; }
}

echo "== quality: ours (tuned on valid, scored on test)" >&2
run q-popularity "$BIN" eval "${EVAL[@]}" --model popularity --json
run q-content "$BIN" eval "${EVAL[@]}" --model content --json
for m in itemknn userknn ease hybrid; do
    run "q-$m" "$BIN" eval "${EVAL[@]}" --model "$m" --tune --json
done
run q-auto "$BIN" eval "${EVAL[@]}" --model auto --json

echo "== quality: peers (tuned on valid; lists scored by origin eval --score-lists)" >&2
PEERS=(ease-numpy itemknn-numpy implicit-als implicit-bpr implicit-itemknn)
for p in "${PEERS[@]}"; do
    run "p-$p" "$PY" bench/peers.py --train "$S/train.txt" --valid "$S/valid.txt" --test "$S/test.txt" \
        --items "$DATA/u.item" --model "$p" --out "$OUT/lists/$p.txt"
    run "qp-$p" "$BIN" eval --train "$S/train.txt" --test "$S/test.txt" --items "$DATA/u.item" \
        --score-lists "$OUT/lists/$p.txt" --json
done

PLAMBDA=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-ease-numpy.json'))['params']['lambda'])")
KNN=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-implicit-itemknn.json'))['params']['k'])")

echo "== cost: train + all-user top-20, fixed parameters (plain EASE at the peer's lambda), $REPEAT runs each" >&2
# ML-100K, and synthetic MovieLens-1M-sized data (6,040 users × 3,706 items, ~1M interactions).
"$BIN" synth --users 6040 --items 3706 --mean-per-user 165 --seed 42 --out "$OUT/synth-1m.data" >&2
"$BIN" split --input "$OUT/synth-1m.data" --out-dir "$OUT/synth1m" --seed 42 >&2
for ds in ml100k synth1m; do
    D="$OUT/$ds"
    for r in $(seq 1 "$REPEAT"); do
        run "t-$ds-ease-$r" "$BIN" eval --train "$D/train.txt" --test "$D/test.txt" --model ease \
            --params "{\"lambda\": $PLAMBDA}" --json
        run "t-$ds-itemknn-$r" "$BIN" eval --train "$D/train.txt" --test "$D/test.txt" --model itemknn \
            --params "{\"k\": $KNN, \"shrink\": 0}" --json
        run "tp-$ds-ease-numpy-$r" "$PY" bench/peers.py --train "$D/train.txt" --test "$D/test.txt" \
            --model ease-numpy --param "$PLAMBDA" --out "$OUT/lists/t-$ds-ease.txt"
        run "tp-$ds-implicit-itemknn-$r" "$PY" bench/peers.py --train "$D/train.txt" --test "$D/test.txt" \
            --model implicit-itemknn --param "$KNN" --out "$OUT/lists/t-$ds-iknn.txt"
    done
done

if [ "${ENGINE_LATENCY:-1}" != 0 ]; then
    echo "== latency: single recommendation at 6,040 × 3,706 (criterion bench)" >&2
    cargo bench -p origin --bench recommend -j2 -- --noplot >"$OUT/latency.txt" 2>"$OUT/latency.err"
fi

"$PY" - "$OUT" "$REPEAT" <<'PYEOF'
import json, re, statistics, sys
out, repeat = sys.argv[1], int(sys.argv[2])
def j(name): return json.load(open(f"{out}/runs/{name}.json"))
def tv(name):
    t = open(f"{out}/runs/{name}.time").read()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", t).group(1)
    parts = [float(x) for x in wall.split(":")]
    secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
    return secs, rss
print("### Quality on MovieLens 100K (seeded per-user 80/10/10 split, K = 20, tuned on validation)\n")
print("| model | params | Recall@20 | NDCG@20 | Precision@20 | MAP@20 | coverage |")
print("|---|---|---:|---:|---:|---:|---:|")
rows = []
for m in ["popularity", "content", "itemknn", "userknn", "ease", "hybrid", "auto"]:
    d = j(f"q-{m}")
    rows.append((f"ours: {m}" + ("" if m == "auto" else ""), d["model"], d))
for p in ["ease-numpy", "itemknn-numpy", "implicit-als", "implicit-bpr", "implicit-itemknn"]:
    d = j(f"qp-{p}")
    rows.append((f"peer: {p}", json.dumps(j(f"p-{p}")["params"]), d))
for label, params, d in rows:
    print(f"| {label} | `{params}` | {d['recall@20']:.4f} | {d['ndcg@20']:.4f} | {d['precision@20']:.4f} | {d['map@20']:.4f} | {d['coverage']:.3f} |")
ours_best = max((d["ndcg@20"], label) for label, _, d in rows if label.startswith("ours"))
peer_best = max((d["ndcg@20"], label) for label, _, d in rows if label.startswith("peer"))
print(f"\nBest of ours: {ours_best[1]} NDCG@20 {ours_best[0]:.4f}; best peer: {peer_best[1]} {peer_best[0]:.4f}; "
      f"ratio {ours_best[0] / peer_best[0]:.3f}.")
ck = j("p-ease-numpy")["python_metrics"]["ndcg@20"]
print(f"Metric cross-check: numpy EASE NDCG@20 by peers.py's Python formulas {ck:.6f}, by origin eval --score-lists "
      f"{j('qp-ease-numpy')['ndcg@20']:.6f}.\n")
print(f"### Cost: train + top-20 for every test user (median of {repeat} runs; wall and peak RSS of the whole process)\n")
print("| data | ours | s (train+top-20) | process wall s | peak RSS MB | peer | s (train+top-20) | process wall s | peak RSS MB | time ratio ours/peer | RSS ratio |")
print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
for ds in ["ml100k", "synth1m"]:
    for ours, peer in [("ease", "ease-numpy"), ("itemknn", "implicit-itemknn")]:
        o = [j(f"t-{ds}-{ours}-{r}") for r in range(1, repeat + 1)]
        p = [j(f"tp-{ds}-{peer}-{r}") for r in range(1, repeat + 1)]
        ot = [tv(f"t-{ds}-{ours}-{r}") for r in range(1, repeat + 1)]
        pt = [tv(f"tp-{ds}-{peer}-{r}") for r in range(1, repeat + 1)]
        os_, ps = statistics.median(d["seconds"] for d in o), statistics.median(d["seconds"] for d in p)
        ow, pw = statistics.median(t[0] for t in ot), statistics.median(t[0] for t in pt)
        orss, prss = max(t[1] for t in ot), max(t[1] for t in pt)
        print(f"| {ds} | {o[0]['model']} | {os_:.3f} | {ow:.2f} | {orss:.0f} | {peer} `{json.dumps(p[0]['params'])}` | "
              f"{ps:.3f} | {pw:.2f} | {prss:.0f} | {os_ / ps:.2f} | {orss / prss:.2f} |")
try:
    lat = open(f"{out}/latency.txt").read().splitlines()
    print("\n### Single recommendation latency (synthetic 6,040 users × 3,706 items, ~1M interactions)\n")
    print("\n".join(l for l in lat if l.startswith("|") or l.startswith("single")))
    means = re.findall(r"recommend_top20/(\S+)\s+time:\s+\[\S+ \S+ (\S+ \S+) \S+ \S+\]", "\n".join(lat))
    if means:
        print("\ncriterion mean (same queries): " + "; ".join(f"{m} {t}" for m, t in means))
except FileNotFoundError:
    pass
PYEOF
