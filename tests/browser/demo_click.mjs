// Browser test of the demo page and the dashboard, in Debian's chromium driven by
// playwright-core:
//
//   node tests/browser/demo_click.mjs EDGE_URL ORIGIN_URL OUT_DIR USER [EXPERIMENT]
//
// Opens EDGE_URL/, loads USER's recommendations, clicks the first item, waits for the
// page to say the click event was accepted, opens the product view of an item (its
// similar items from the edge), applies a category filter and clicks a similar item,
// then opens ORIGIN_URL/dashboard and polls
// (up to 20 s) until the clicks total is at least 1, and checks that the clicks-per-minute
// chart counts it. Then checks the latency card: the
// per-route table lists the origin's /v1/events (where the edge forwarded the click)
// with a p99, the chart has a p99 line, and picking that route redraws the chart for
// it. With EXPERIMENT (a running A/B experiment), the page shows the user's variant, the
// dashboard's experiment card names the experiment, and the experiment's results count
// the click for that variant. Saves OUT_DIR/demo.png and
// OUT_DIR/dashboard.png, prints one line of JSON, exits 0 on success and 1 with a
// message on stderr otherwise (2 on bad arguments). Uncaught page errors fail the test.
// CHROMIUM overrides the browser path (default /usr/bin/chromium).

import { mkdirSync, mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const [edgeArg, originArg, outArg, user, experiment] = process.argv.slice(2);
if (!edgeArg || !originArg || !outArg || !user) {
  console.error("usage: node tests/browser/demo_click.mjs EDGE_URL ORIGIN_URL OUT_DIR USER");
  process.exit(2);
}
const EDGE = edgeArg.replace(/\/+$/, "");
const ORIGIN = originArg.replace(/\/+$/, "");
const OUT = resolve(outArg);
const EXECUTABLE = process.env.CHROMIUM || "/usr/bin/chromium";
const DASHBOARD_WAIT_MS = 20_000;

const summary = { ok: false, user, edge: EDGE, origin: ORIGIN };
const problems = { page_errors: [], console_errors: [] };

class TestFailure extends Error {}
const fail = (msg) => { throw new TestFailure(msg); };

function watch(page, name) {
  page.on("pageerror", (e) => problems.page_errors.push(`${name}: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.console_errors.push(`${name}: ${m.text()}`);
  });
}

const text = async (page, testid) =>
  ((await page.getByTestId(testid).first().textContent()) ?? "").trim();

async function screenshot(page, file) {
  if (!page || page.isClosed()) return;
  try {
    await page.screenshot({ path: join(OUT, file), fullPage: true });
    (summary.screenshots ??= []).push(join(OUT, file));
  } catch (e) {
    console.error(`could not save ${file}: ${e.message}`);
  }
}

async function demo(context) {
  const page = await context.newPage();
  watch(page, "demo");
  const resp = await page.goto(`${EDGE}/`, { waitUntil: "domcontentloaded", timeout: 15_000 });
  if (!resp || !resp.ok()) fail(`GET ${EDGE}/ answered ${resp ? resp.status() : "nothing"}, not the demo page`);
  await page.getByTestId("user-input").fill(user);
  await page.getByTestId("load").click();
  // Either items appear or the page reports an error.
  const status = page.getByTestId("status");
  await page.waitForFunction(
    () => document.querySelector('[data-testid="rec-item"]') ||
      document.querySelector('[data-testid="status"]')?.getAttribute("data-state") === "error",
    null, { timeout: 15_000 },
  ).catch(() => null);
  if (!(await page.getByTestId("rec-item").count()) && (await status.getAttribute("data-state")) !== "error") {
    fail(`no recommendations for ${user} within 15 s (status: ${(await status.textContent())?.trim()})`);
  }
  if ((await status.getAttribute("data-state")) === "error") {
    fail(`loading ${user} failed: ${(await status.textContent())?.trim()}`);
  }
  const first = page.getByTestId("rec-item").first();
  summary.items = await page.getByTestId("rec-item").count();
  summary.item_id = await first.getAttribute("data-item-id");
  summary.source = await text(page, "source");
  summary.region = await text(page, "region");
  summary.cache = await text(page, "cache");
  summary.freshness = await text(page, "freshness");
  summary.variant = await text(page, "variant");
  if (experiment && !/^[A-Za-z0-9_-]+$/.test(summary.variant)) fail(`the page shows no A/B variant for ${user}: ${summary.variant}`);

  await first.click();
  await page.waitForFunction(
    () => ["event-accepted", "error"].includes(
      document.querySelector('[data-testid="status"]')?.getAttribute("data-state")),
    null, { timeout: 10_000 },
  ).catch(() => fail("the page did not report the click event's outcome within 10 s"));
  const after = (await status.textContent())?.trim();
  if ((await status.getAttribute("data-state")) === "error") fail(`the click was not accepted: ${after}`);
  summary.event_status = after;
  // The page reloads the list ~1.5 s after an accepted click; wait for it (best effort).
  await page.waitForFunction(
    () => /after the click/.test(document.querySelector('[data-testid="status"]')?.textContent ?? ""),
    null, { timeout: 8_000 },
  ).then(async () => { summary.reloaded = (await status.textContent())?.trim(); })
    .catch(() => { summary.reloaded = null; });
  await productView(page);
  await screenshot(page, "demo.png");
  return page;
}

// Opens the first item's product view: its similar items load from the edge, none is
// the item itself; a category filter keeps only items of that category; a click on a
// similar item is accepted as an event.
async function productView(page) {
  const view = page.getByTestId("view-item").first();
  const item = await view.getAttribute("data-item-id");
  await view.click();
  const status = page.getByTestId("product-status");
  await page.waitForFunction(
    () => ["ok", "error"].includes(document.querySelector('[data-testid="product-status"]')?.getAttribute("data-state")),
    null, { timeout: 15_000 },
  ).catch(() => fail(`the product view of ${item} did not load within 15 s`));
  if ((await status.getAttribute("data-state")) !== "ok") fail(`similar items of ${item}: ${(await status.textContent())?.trim()}`);
  if ((await page.getByTestId("product-title").getAttribute("data-item-id")) !== item) fail("the product view names another item");
  const similar = page.getByTestId("similar-item");
  const ids = await similar.evaluateAll((bs) => bs.map((b) => b.getAttribute("data-item-id")));
  if (!ids.length) fail(`no similar items for ${item}`);
  if (ids.includes(item)) fail(`${item} is listed as similar to itself: ${ids}`);
  summary.similar = { item, ids, source: await status.getAttribute("data-source") };
  // The first category offered (from the item and its similar items).
  const category = await page.getByTestId("category-filter").evaluate(
    (s) => Array.from(s.options).map((o) => o.value).find((v) => v) ?? null);
  if (!category) fail(`no category to filter by in the product view of ${item}`);
  await page.getByTestId("category-filter").selectOption(category);
  await page.waitForFunction(
    (c) => {
      const st = document.querySelector('[data-testid="product-status"]');
      return st?.getAttribute("data-state") === "ok" && st.textContent.includes(" in " + c);
    },
    category, { timeout: 15_000 },
  ).catch(async () => fail(`filtering by ${category} did not finish: ${(await status.textContent())?.trim()}`));
  const filtered = await similar.evaluateAll((bs) => bs.map((b) => (b.getAttribute("data-categories") || "").split(",")));
  if (filtered.some((cats) => !cats.includes(category))) fail(`an item outside ${category} is shown: ${JSON.stringify(filtered)}`);
  summary.similar.category = { category, items: filtered.length, status: (await status.textContent())?.trim() };
  // A similar item other than the one clicked in the user's list, so the status names it.
  const shownIds = await similar.evaluateAll((bs) => bs.map((b) => b.getAttribute("data-item-id")));
  const target = shownIds.find((id) => id !== summary.item_id);
  if (target) {
    await page.locator(`[data-testid="similar-item"][data-item-id="${target}"]`).click();
    await page.waitForFunction(
      (id) => ["event-accepted", "error"].includes(document.querySelector('[data-testid="status"]')?.getAttribute("data-state")) &&
        (document.querySelector('[data-testid="status"]')?.textContent ?? "").includes("Click on " + id + " "),
      target, { timeout: 10_000 },
    ).catch(() => fail(`the click on similar item ${target} got no answer within 10 s`));
    const st = page.getByTestId("status");
    if ((await st.getAttribute("data-state")) === "error") fail(`the click on a similar item was refused: ${(await st.textContent())?.trim()}`);
    summary.similar.click = (await st.textContent())?.trim();
  }
}

async function dashboard(context) {
  const page = await context.newPage();
  watch(page, "dashboard");
  const resp = await page.goto(`${ORIGIN}/dashboard`, { waitUntil: "domcontentloaded", timeout: 15_000 });
  if (!resp || !resp.ok()) fail(`GET ${ORIGIN}/dashboard answered ${resp ? resp.status() : "nothing"}`);
  const deadline = Date.now() + DASHBOARD_WAIT_MS;
  let clicks = NaN;
  for (;;) {
    const raw = await text(page, "clicks-total");
    clicks = Number(raw.replace(/[^0-9.]/g, "") || NaN);
    if (clicks >= 1) break;
    if (Date.now() > deadline) {
      await screenshot(page, "dashboard.png");
      fail(`the dashboard's clicks total stayed at ${JSON.stringify(raw)} for ${DASHBOARD_WAIT_MS / 1000} s ` +
        `(poll status: ${await text(page, "poll-status")})`);
    }
    await page.waitForTimeout(500);
  }
  summary.clicks_total = clicks;
  summary.impressions_total = await text(page, "impressions-total");
  summary.ctr = await text(page, "ctr");
  // The per-minute chart (from /v1/analytics/timeline) has the click in its hour.
  const conv = page.getByTestId("conversions-chart").locator("svg");
  summary.clicks_chart = await conv.getAttribute("aria-label");
  if (!/in range: clicks [1-9]/.test(summary.clicks_chart ?? "")) {
    fail(`the clicks-per-minute chart does not count the click: ${summary.clicks_chart}`);
  }
  await latency(page);
  if (experiment) await experimentCounted(page);
  // Let one more poll land so the charts have at least two points.
  await page.waitForTimeout(2_500);
  await screenshot(page, "dashboard.png");
  return page;
}

// The experiment card names the running experiment, and the experiment's results count
// the click in the variant the page showed (the variant is the user's by the hash).
async function experimentCounted(page) {
  await page.waitForFunction(
    (name) => (document.querySelector('[data-testid="experiment-name"]')?.textContent ?? "").includes(name),
    experiment, { timeout: 10_000 },
  ).catch(async () => fail(`the dashboard's experiment card shows ${await text(page, "experiment-name")}, not ${experiment}`));
  const deadline = Date.now() + DASHBOARD_WAIT_MS;
  for (;;) {
    const res = await fetch(`${ORIGIN}/v1/analytics/experiments/${experiment}`);
    const body = await res.json().catch(() => null);
    if (!res.ok || !body) fail(`GET /v1/analytics/experiments/${experiment} answered ${res.status}`);
    const results = body.results ?? body.experiment?.results ?? [];
    const mine = results.find((r) => r.name === summary.variant);
    if (!mine) fail(`no results for variant ${summary.variant}: ${JSON.stringify(body).slice(0, 400)}`);
    const total = results.reduce((n, r) => n + (r.clicks ?? 0), 0);
    if (mine.clicks >= 1) {
      summary.experiment = { name: experiment, variant: summary.variant, clicks: mine.clicks, all_clicks: total };
      return;
    }
    if (Date.now() > deadline) fail(`the click is not counted for variant ${summary.variant}: ${JSON.stringify(results)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

// The latency card shows the origin's own series: the click reached the origin's
// POST /v1/events through the edge, so that route has measured requests.
async function latency(page) {
  const row = page.getByTestId("latency-by-route").locator("tr", { hasText: "/v1/events" });
  await row.first().waitFor({ timeout: 10_000 })
    .catch(() => fail("the latency table has no /v1/events row within 10 s"));
  const cells = (await row.first().locator("td").allTextContents()).map((c) => c.trim());
  summary.latency_events = cells;
  if (!(Number(cells[1].replace(/[^0-9]/g, "")) >= 1)) fail(`/v1/events shows ${cells[1]} requests`);
  if (!/^[0-9.,]+$/.test(cells[4])) fail(`/v1/events has no p99: ${JSON.stringify(cells)}`);
  const chart = page.getByTestId("latency-chart").locator("svg");
  const label = (await chart.getAttribute("aria-label")) ?? "";
  if (!/p99 [0-9]/.test(label)) fail(`the latency chart has no p99 line: ${label}`);
  await page.getByTestId("latency-route").selectOption("/v1/events");
  await page.waitForFunction(
    () => /of \/v1\/events; latest: .*p99 [0-9]/.test(
      document.querySelector('[data-testid="latency-chart"] svg')?.getAttribute("aria-label") ?? ""),
    null, { timeout: 10_000 },
  ).catch(async () => fail(`picking /v1/events did not redraw the chart: ${await chart.getAttribute("aria-label")}`));
  summary.latency_chart = await page.getByTestId("latency-chart").locator("svg").getAttribute("aria-label");
}

let context;
let userDataDir;
let code = 1;
let page = null;
try {
  if (!existsSync(EXECUTABLE)) fail(`no browser at ${EXECUTABLE}: run scripts/setup.sh (installs Debian's chromium)`);
  mkdirSync(OUT, { recursive: true });
  userDataDir = mkdtempSync(join(tmpdir(), "edge-recs-browser-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: EXECUTABLE,
    headless: true,
    viewport: { width: 1100, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  page = await demo(context);
  page = await dashboard(context);
  if (problems.page_errors.length) fail(`uncaught errors in the pages: ${problems.page_errors.join(" | ")}`);
  summary.ok = true;
  code = 0;
} catch (e) {
  summary.error = e instanceof TestFailure ? e.message : `${e.name}: ${e.message}`;
  const open = context?.pages().filter((p) => !p.isClosed()) ?? [];
  if (open.length) await screenshot(open[open.length - 1], "failure.png");
  console.error(`browser test failed: ${summary.error}`);
} finally {
  await context?.close().catch(() => {});
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
}
Object.assign(summary, problems);
console.log(JSON.stringify(summary));
process.exit(code);
