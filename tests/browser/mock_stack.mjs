// A stand-in for the edge and the origin, for checking the two pages and the browser
// test without building the Rust stack. It is NOT the system under test: it serves the
// real edge/static/demo.html and origin/static/dashboard.html, and fakes the routes they
// call with the documented JSON shapes.
//
//   node tests/browser/mock_stack.mjs [PORT]          # default 8799; prints its URL
//   node tests/browser/demo_click.mjs http://127.0.0.1:8799 http://127.0.0.1:8799 out u7
//
// Routes: GET / (demo), GET /dashboard, GET /v1/recommendations/{user}?n=,
// POST /v1/events (202, or 400 JSON for a bad body), GET /v1/analytics/recommendations,
// GET /v1/analytics/real-time. Clicked items drop out of the clicking user's list.
// MOCK_NO_EVENTS=1 answers POST /v1/events with the 404 JSON of an edge without the route.

import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const page = (p) => readFileSync(root + p, "utf8");
const port = Number(process.argv[2] || 8799);
const REGIONS = ["us-east", "europe", "asia"];
const clicks = new Map(); // user -> Set of clicked items
const events = [];
let requests = 0;
let hits = 0;
const started = Date.now();

function json(res, status, body, headers = {}) {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store", ...headers });
  res.end(JSON.stringify(body));
}
const error = (res, status, code, message) => json(res, status, { error: { code, message } }, { "X-Edge-Region": "us-east" });

function recommendations(user, n) {
  const seed = [...user].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7);
  const clicked = clicks.get(user) ?? new Set();
  const items = Array.from({ length: n + clicked.size }, (_, i) => ({
    item_id: `i${(seed + i * 37) % 1000}`,
    score: +(0.95 - i * 0.05).toFixed(3),
    reason: i % 2 ? `similar to i${(seed + 3) % 1000}` : "popular in your region",
  })).filter((it) => !clicked.has(it.item_id)).slice(0, n);
  return items;
}

function funnel(list) {
  const impressions = list.filter((e) => e.type === "recommendation_viewed").length;
  const c = list.filter((e) => e.type === "click").length;
  const conversions = list.filter((e) => e.type === "purchase").length;
  return { impressions, clicks: c, ctr: impressions ? c / impressions : 0, conversions,
    conversion_rate: c ? conversions / c : 0, avg_impression_score: null };
}
const group = (key) => Object.fromEntries(
  [...new Set(events.map((e) => e[key] ?? "unknown"))].map((k) => [k, funnel(events.filter((e) => (e[key] ?? "unknown") === k))]));

createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const path = url.pathname;
  if (req.method === "GET" && path === "/") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    return res.end(page("edge/static/demo.html"));
  }
  if (req.method === "GET" && path === "/dashboard") {
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    return res.end(page("origin/static/dashboard.html"));
  }
  const m = path.match(/^\/v1\/recommendations\/([^/]+)$/);
  if (req.method === "GET" && m) {
    const user = decodeURIComponent(m[1]);
    if (!/^[A-Za-z0-9._@-]{1,128}$/.test(user)) return error(res, 400, "invalid_user_id", "user ids use A-Z a-z 0-9 . _ @ -");
    const n = Number(url.searchParams.get("n") || 10);
    const region = REGIONS[user.length % REGIONS.length];
    const hit = requests++ % 3 !== 0;
    if (hit) hits++;
    const items = recommendations(user, n);
    const now = Math.floor(Date.now() / 1000);
    for (const it of items) events.push({ type: "recommendation_viewed", item_id: it.item_id, source: hit ? "edge-cache" : "kv", region });
    return json(res, 200, {
      tenant: "default", user_id: user, region, items, model_version: "mock#item-knn",
      generated_at: now - 42, fresh_for_s: 300, stale_for_s: 86400, source: hit ? "edge-cache" : "kv", stale: false,
    }, { "X-Edge-Region": region, "X-Cache": hit ? "HIT" : "MISS", "X-Served-By": hit ? "edge-cache" : "kv" });
  }
  if (req.method === "POST" && path === "/v1/events" && !process.env.MOCK_NO_EVENTS) {
    let body = "";
    req.on("data", (c) => { body += c; });
    return req.on("end", () => {
      let e;
      try { e = JSON.parse(body); } catch { return error(res, 400, "invalid_body", "not JSON"); }
      if (!e || typeof e.user_id !== "string" || typeof e.item_id !== "string" || typeof e.type !== "string") {
        return error(res, 400, "invalid_event", "user_id, item_id and type are required");
      }
      events.push({ ...e, region: REGIONS[e.user_id.length % REGIONS.length] });
      if (e.type === "click") (clicks.get(e.user_id) ?? clicks.set(e.user_id, new Set()).get(e.user_id)).add(e.item_id);
      json(res, 202, { accepted: 1, first_seq: events.length, last_seq: events.length });
    });
  }
  if (req.method === "GET" && path === "/v1/analytics/recommendations") {
    const now = Math.floor(Date.now() / 1000);
    const top = [...new Set(events.map((e) => e.item_id))].map((item_id) => {
      const f = funnel(events.filter((e) => e.item_id === item_id));
      return { item_id, impressions: f.impressions, clicks: f.clicks, conversions: f.conversions };
    }).sort((a, b) => b.clicks - a.clicks || b.impressions - a.impressions).slice(0, 10);
    return json(res, 200, { range: url.searchParams.get("range") || "24h", since: now - 3600, until: now,
      ...funnel(events), impressed_items: new Set(events.map((e) => e.item_id)).size, top_items: top,
      by_source: group("source"), by_region: group("region") });
  }
  if (req.method === "GET" && path === "/v1/analytics/real-time") {
    const secs = Math.max(1, (Date.now() - started) / 1000);
    return json(res, 200, {
      requests_per_second: requests / Math.min(60, secs), requests_total: requests,
      active_users: clicks.size, events_per_second: events.length / Math.min(60, secs),
      edge_cache: { requests, hits, hit_rate: requests ? hits / requests : 0 },
      edge_cache_by_region: { "us-east": { requests, hits, hit_rate: requests ? hits / requests : 0 } },
      last_event_seq: events.length, store: { ok: true },
      publishers: { kv: { last_success_at: Math.floor(Date.now() / 1000) - 5, last_failure_at: null, last_error: null, successes: 3, failures: 0 } },
      model_version: "mock#item-knn", generated_at: Math.floor(Date.now() / 1000),
    });
  }
  if (path === "/favicon.ico") { res.writeHead(204); return res.end(); }
  return error(res, 404, "not_found", `no route ${req.method} ${path}`);
}).listen(port, "127.0.0.1", () => console.log(`mock stack on http://127.0.0.1:${port}`));
