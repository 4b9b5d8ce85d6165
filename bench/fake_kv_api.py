#!/usr/bin/env python3
"""A local stand-in for Cloudflare's Workers KV REST API, for benchmarks.

There is no local version of Cloudflare's REST API, so `bench/publish_targets.sh` publishes
to this server, which implements the documented endpoints the origin uses and checks their
limits on every call:

  PUT /client/v4/accounts/{account}/storage/kv/namespaces/{namespace}/bulk
      JSON array of {key, value, expiration_ttl?}: at most 10,000 pairs, under 100 MB,
      keys 1-512 bytes, values up to 25 MiB, expiration_ttl at least 60; Bearer token.
  GET /client/v4/accounts/{account}/storage/kv/namespaces/{namespace}/values/{key}

It keeps each key's value length (not the value, to keep memory small) and the pointer
values, and answers GET /stats with what it received: calls, pairs, bytes, the largest call,
and any limit violations. Standard library only.

Usage: fake_kv_api.py PORT TOKEN
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

MAX_PAIRS = 10_000
MAX_BODY = 100_000_000
MAX_KEY = 512
MAX_VALUE = 25 * 1024 * 1024

lock = threading.Lock()
stats = {
    "calls": 0,
    "pairs": 0,
    "bytes": 0,
    "max_call_pairs": 0,
    "max_call_bytes": 0,
    "violations": [],
    "distinct_keys": 0,
}
lengths = {}
small_values = {}


def envelope(ok, n=0, message=""):
    if ok:
        return {"success": True, "errors": [], "messages": [],
                "result": {"successful_key_count": n, "unsuccessful_keys": []}}
    return {"success": False, "errors": [{"code": 10001, "message": message}],
            "messages": [], "result": None}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self):
        parts = self.path.split("/")
        # ['', 'client', 'v4', 'accounts', A, 'storage', 'kv', 'namespaces', N, 'bulk']
        if len(parts) != 10 or parts[9] != "bulk":
            return self.answer(404, envelope(False, message="no such route"))
        if self.headers.get("authorization") != f"Bearer {TOKEN}":
            return self.answer(403, envelope(False, message="bad token"))
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        problems = []
        if length > MAX_BODY:
            problems.append(f"body of {length} bytes")
        try:
            pairs = json.loads(body)
        except ValueError as e:
            return self.answer(400, envelope(False, message=f"body: {e}"))
        if not isinstance(pairs, list) or not 1 <= len(pairs) <= MAX_PAIRS:
            problems.append(f"{len(pairs) if isinstance(pairs, list) else '?'} pairs")
            pairs = pairs if isinstance(pairs, list) else []
        for p in pairs:
            key, value = p.get("key", ""), p.get("value", "")
            if not 1 <= len(key.encode()) <= MAX_KEY or len(value.encode()) > MAX_VALUE:
                problems.append(f"pair {key[:40]!r}")
            ttl = p.get("expiration_ttl")
            if ttl is not None and ttl < 60:
                problems.append(f"ttl of {key[:40]!r}")
        with lock:
            if problems:
                stats["violations"].extend(problems[:10])
                return self.answer(400, envelope(False, message="; ".join(problems[:5])))
            stats["calls"] += 1
            stats["pairs"] += len(pairs)
            stats["bytes"] += length
            stats["max_call_pairs"] = max(stats["max_call_pairs"], len(pairs))
            stats["max_call_bytes"] = max(stats["max_call_bytes"], length)
            for p in pairs:
                lengths[p["key"]] = len(p["value"])
                if len(p["value"]) < 200:
                    small_values[p["key"]] = p["value"]
            stats["distinct_keys"] = len(lengths)
        self.answer(200, envelope(True, len(pairs)))

    def do_GET(self):
        if self.path == "/stats":
            with lock:
                return self.answer(200, stats)
        parts = self.path.split("/")
        if len(parts) == 11 and parts[9] == "values":
            key = unquote(parts[10])
            with lock:
                value = small_values.get(key)
            if value is None:
                return self.answer(404, envelope(False, message="key not found"))
            return self.answer(200, value.encode(), "text/plain")
        self.answer(404, envelope(False, message="no such route"))


if __name__ == "__main__":
    PORT, TOKEN = int(sys.argv[1]), sys.argv[2]
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
