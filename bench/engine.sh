#!/usr/bin/env bash
# Engine benchmark: quality and cost of our models against numpy/scipy references (EASE,
# item-kNN, RP3beta, GF-CF) and the `implicit` library (ALS, BPR, item-kNN), on one
# reproducible MovieLens 100K split, plus a cost comparison at MovieLens-1M scale on
# synthetic data and single-query latency.
#
#   bash bench/engine.sh            # from the repo root; results in target/bench/
#   ENGINE_LATENCY=0 bash ...       # skip the criterion latency bench
#   ENGINE_REPEAT=3                 # timing repetitions (median of internal seconds)
#   ENGINE_PROFILE=native           # cargo profile of the origin binary (default release)
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

PROFILE=${ENGINE_PROFILE:-release}
echo "== build ($PROFILE)" >&2
cargo build --profile "$PROFILE" -p origin -j2 >&2
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/origin

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
for m in itemknn userknn ease dlae rp3beta gfcf als hybrid; do
    run "q-$m" "$BIN" eval "${EVAL[@]}" --model "$m" --tune --json
done
run q-auto "$BIN" eval "${EVAL[@]}" --model auto --json

echo "== quality: peers (tuned on valid; lists scored by origin eval --score-lists)" >&2
PEERS=(ease-numpy itemknn-numpy rp3beta-numpy gfcf-numpy implicit-als implicit-bpr implicit-itemknn)
for p in "${PEERS[@]}"; do
    run "p-$p" "$PY" bench/peers.py --train "$S/train.txt" --valid "$S/valid.txt" --test "$S/test.txt" \
        --items "$DATA/u.item" --model "$p" --out "$OUT/lists/$p.txt"
    run "qp-$p" "$BIN" eval --train "$S/train.txt" --test "$S/test.txt" --items "$DATA/u.item" \
        --score-lists "$OUT/lists/$p.txt" --json
done

PLAMBDA=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-ease-numpy.json'))['params']['lambda'])")
KNN=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-implicit-itemknn.json'))['params']['k'])")
FACTORS=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-implicit-als.json'))['params']['factors'])")
BETA=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-rp3beta-numpy.json'))['params']['beta'])")
GALPHA=$("$PY" -c "import json;print(json.load(open('$OUT/runs/p-gfcf-numpy.json'))['params']['alpha'])")
# The blend `auto` chose on MovieLens 100K, retrained as is on the 1M-size data.
AUTO_SPEC=$("$PY" -c "import json;print(json.dumps(json.load(open('$OUT/runs/q-auto.json'))['params']))")

echo "== cost: train + all-user top-20, fixed parameters (peers' settings where both have one), $REPEAT runs each" >&2
# ML-100K, and synthetic MovieLens-1M-sized data (6,040 users × 3,706 items, ~1M interactions).
"$BIN" synth --users 6040 --items 3706 --mean-per-user 165 --seed 42 --out "$OUT/synth-1m.data" >&2
"$BIN" split --input "$OUT/synth-1m.data" --out-dir "$OUT/synth1m" --seed 42 >&2
# ours: NAME MODEL PARAMS; peers: NAME PEER PARAM (the pairs are printed side by side).
OURS=(
    "ease|ease|{\"lambda\": $PLAMBDA}"
    "itemknn|itemknn|{\"k\": $KNN, \"shrink\": 0}"
    "als|als|{\"factors\": $FACTORS, \"reg\": 30.0, \"alpha\": 3.0, \"iterations\": 15}"
    "rp3beta|rp3beta|{\"alpha\": 0.8, \"beta\": $BETA, \"k\": 100}"
    "gfcf|gfcf|{\"alpha\": $GALPHA, \"k\": 256, \"sharpen\": 0}"
    "dlae|dlae|{}"
    "auto-blend|hybrid|$AUTO_SPEC"
)
PEER_COST=("ease-numpy|$PLAMBDA" "implicit-itemknn|$KNN" "implicit-als|$FACTORS" "rp3beta-numpy|$BETA" "gfcf-numpy|$GALPHA")
for ds in ml100k synth1m; do
    D="$OUT/$ds"
    for r in $(seq 1 "$REPEAT"); do
        for o in "${OURS[@]}"; do
            IFS='|' read -r name model params <<<"$o"
            run "t-$ds-$name-$r" "$BIN" eval --train "$D/train.txt" --test "$D/test.txt" --model "$model" \
                --params "$params" --json
        done
        for p in "${PEER_COST[@]}"; do
            IFS='|' read -r peer param <<<"$p"
            run "tp-$ds-$peer-$r" "$PY" bench/peers.py --train "$D/train.txt" --test "$D/test.txt" \
                --model "$peer" --param "$param" --out "$OUT/lists/t-$ds-$peer.txt"
        done
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
print("### Quality on MovieLens 100K (seeded per-user 80/10/10 split, K = 20, tuned on validation; "
      "test items unseen in training count as misses)\n")
print("| model | params | Recall@20 | NDCG@20 | Precision@20 | MAP@20 | coverage | valid Recall@20 | valid NDCG@20 |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
rows = []
OURS = ["popularity", "content", "itemknn", "userknn", "ease", "dlae", "rp3beta", "gfcf", "als", "hybrid", "auto"]
for m in OURS:
    d = j(f"q-{m}")
    rows.append((f"ours: {m}", d["model"], d, d.get("validation", {})))
for p in ["ease-numpy", "itemknn-numpy", "rp3beta-numpy", "gfcf-numpy", "implicit-als", "implicit-bpr", "implicit-itemknn"]:
    d = j(f"qp-{p}")
    rows.append((f"peer: {p}", json.dumps(j(f"p-{p}")["params"]), d, {}))
def v(x, key):
    return f"{x[key]:.4f}" if key in x else ""
for label, params, d, val in rows:
    print(f"| {label} | `{params}` | {d['recall@20']:.4f} | {d['ndcg@20']:.4f} | {d['precision@20']:.4f} | "
          f"{d['map@20']:.4f} | {d['coverage']:.3f} | {v(val, 'recall@20')} | {v(val, 'ndcg@20')} |")
auto = j("q-auto")
for metric in ["recall@20", "ndcg@20"]:
    peer_best = max((d[metric], label) for label, _, d, _ in rows if label.startswith("peer"))
    print(f"\n`auto` {metric} {auto[metric]:.4f}; best peer: {peer_best[1]} {peer_best[0]:.4f}; "
          f"lead {100 * (auto[metric] / peer_best[0] - 1):+.1f}%.", end="")
singles = [(label, d, val) for label, _, d, val in rows if label.startswith("ours") and label not in ("ours: auto", "ours: hybrid")]
best_single = max(singles, key=lambda r: (r[2].get("ndcg@20", 0) + r[2].get("recall@20", 0)))
print(f"\n\n`auto` chose `{auto['model']}`: {auto.get('why', '')}.")
print(f"Best single model on validation: {best_single[0]} (`{best_single[1]['model']}`), test Recall@20 "
      f"{best_single[1]['recall@20']:.4f}, NDCG@20 {best_single[1]['ndcg@20']:.4f}.")
print("\nBy user activity (training items per user), `auto` on test:\n")
print("| training items | users | Recall@20 | NDCG@20 |")
print("|---|---:|---:|---:|")
for b in auto["by_activity"]:
    hi = b["max_train_items"]
    rng = f"{b['min_train_items']}-{hi}" if hi is not None else f"{b['min_train_items']}+"
    print(f"| {rng} | {b['users']} | {b['recall@20']:.4f} | {b['ndcg@20']:.4f} |")
print(f"\nUnknown test items: {auto['unknown_test_items']['pairs']} pairs, counted as misses.")
ck = j("p-ease-numpy")["python_metrics"]["ndcg@20"]
print(f"Metric cross-check: numpy EASE NDCG@20 by peers.py's Python formulas {ck:.6f}, by origin eval --score-lists "
      f"{j('qp-ease-numpy')['ndcg@20']:.6f} (peers.py drops unknown items; ML-100K's split has none).\n")
print(f"### Cost: train + top-20 for every test user (median of {repeat} runs; wall and peak RSS of the whole process)\n")
print("| data | model | s (train+top-20) | process wall s | peak RSS MB | s / our EASE |")
print("|---|---|---:|---:|---:|---:|")
for ds in ["ml100k", "synth1m"]:
    base = None
    for kind, names in [("t", ["ease", "itemknn", "als", "rp3beta", "gfcf", "dlae", "auto-blend"]),
                        ("tp", ["ease-numpy", "implicit-itemknn", "implicit-als", "rp3beta-numpy", "gfcf-numpy"])]:
        for name in names:
            runs = [j(f"{kind}-{ds}-{name}-{r}") for r in range(1, repeat + 1)]
            ts = [tv(f"{kind}-{ds}-{name}-{r}") for r in range(1, repeat + 1)]
            sec = statistics.median(d["seconds"] for d in runs)
            wall = statistics.median(t[0] for t in ts)
            rss = max(t[1] for t in ts)
            if base is None:
                base = sec
            label = f"ours: `{runs[0]['model']}`" if kind == "t" else f"peer: {name} `{json.dumps(runs[0]['params'])}`"
            print(f"| {ds} | {label} | {sec:.3f} | {wall:.2f} | {rss:.0f} | {sec / base:.2f} |")
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
