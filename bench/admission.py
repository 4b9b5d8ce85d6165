#!/usr/bin/env python3
"""Retrain cost against the number of item ids clients invent, with and without the cap.

For each N: a demo database (2,000 users, 500 catalogue items) gets N invented item ids
through a real `origin serve`'s public POST /v1/events (each id seen by two made-up users,
so each is eligible and only the cap holds it back), then `origin publish` for one user is
timed with /usr/bin/time -v (it reads the store and trains the model: its wall time and
peak memory are the retrain's). "capped" is the given --max-items; "uncapped" lifts the
cap and the memory budget (what the origin did before), run only where it fits this
machine. Prints a markdown table.

Usage: bench/admission.py [--origin target/debug/origin] [--max-items 5000]
       [--sizes 0,2000,5000,20000,100000] [--uncapped-up-to 5000] [--model hybrid]
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(url, body):
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status


def invent(origin, db, n, tmp):
    port = free_port()
    log = open(os.path.join(tmp, f"serve-{n}.log"), "w")
    proc = subprocess.Popen(
        [origin, "serve", "--db", db, "--listen", f"127.0.0.1:{port}",
         "--metrics-listen", f"127.0.0.1:{free_port()}", "--retrain-every-s", "0",
         "--rate-limit-rps", "0", "--model", "popularity"],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if json.load(r)["status"] != "loading":
                        break
            except OSError:
                pass
            time.sleep(0.1)
        events = [
            {"user_id": f"maker-{u}-{k % 250}", "item_id": f"invented-{k}", "type": "view"}
            for k in range(n) for u in range(2)
        ]
        for i in range(0, len(events), 500):
            assert post(base + "/v1/events", {"events": events[i:i + 500]}) == 202
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def timed_train(origin, db, tmp, args):
    out = subprocess.run(
        ["/usr/bin/time", "-v", origin, "publish", "--db", db, "--out", os.path.join(tmp, "cdn"),
         "--users", "u1", "--targets", "cdn", *args],
        capture_output=True, text=True, env={**os.environ, "RUST_LOG": "info"},
    )
    err = re.sub(r"\x1b\[[0-9;]*m", "", out.stderr)
    if out.returncode != 0:
        return None
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", err)
    h, m, s = wall.groups()
    seconds = int(h or 0) * 3600 + int(m) * 60 + float(s)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1)) // 1024
    trained = re.search(r"items_trained=(\d+)", err)
    return seconds, rss, trained.group(1) if trained else "?"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--origin", default="target/debug/origin")
    p.add_argument("--max-items", default="5000")
    p.add_argument("--sizes", default="0,2000,5000,20000,100000")
    p.add_argument("--uncapped-up-to", type=int, default=5000)
    p.add_argument("--model", default="hybrid")
    a = p.parse_args()
    print(f"| invented item ids | capped (--max-items {a.max_items}): items trained, wall s, peak MB "
          "| uncapped: items trained, wall s, peak MB | capped / uncapped wall |")
    print("|---|---|---|---|")
    for n in [int(x) for x in a.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            db = os.path.join(tmp, "origin.sqlite")
            subprocess.run([a.origin, "demo-data", "--db", db, "--users", "2000", "--items", "500",
                            "--interactions-per-user", "20"], check=True, capture_output=True)
            if n:
                invent(a.origin, db, n, tmp)
            capped = timed_train(a.origin, db, tmp, ["--model", a.model, "--max-items", a.max_items])
            uncapped = None
            if n <= a.uncapped_up_to:
                uncapped = timed_train(a.origin, db, tmp, ["--model", a.model, "--max-items", "100000000",
                                                           "--train-memory-mb", "100000000"])
            fmt = lambda r: f"{r[2]}, {r[0]:.1f} s, {r[1]} MB" if r else "not run"
            ratio = f"{capped[0] / uncapped[0]:.2f}x" if capped and uncapped else "-"
            print(f"| {n:,} | {fmt(capped)} | {fmt(uncapped)} | {ratio} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
