// Screenshot of a Superset dashboard with every chart drawn: `aqi dashboards screenshot OUT.png`
// (aqi/screenshot.py) runs it. Debian's chromium, driven by playwright-core, no browser download.
//
// Input: one JSON document on stdin (the password stays off the command line):
//   {"url": "http://127.0.0.1:8088", "dashboard": "air-quality", "username": "admin",
//    "password": "...", "out": "/abs/path.png", "executable": "/usr/bin/chromium",
//    "width": 1600, "height": 1200, "timeout_ms": 120000, "min_ink": 0.0003,
//    "swatches": {"land": [247, 245, 238], ...}, "swatch_distance": 24}
// Output: one JSON line on stdout, e.g.
//   {"charts": 8, "rendered": 8, "loading": 0, "errors": [], "file": "...", "titles": [...],
//    "viz_types": ["deck_scatter", ...], "ink": [0.031, ...],
//    "swatches": [{"land": 0.41, ...}, null, ...]}
// "swatches" (when the request names colours): for each map (deck.gl) chart, the share of its
// body's pixels within swatch_distance (RGB) of each colour, e.g. the base map's land and
// border colours; null for the other charts.
// A chart counts as rendered when its visualisation element exists (DRAWN) AND its body shows
// ink: the share of its pixels that differ from its background colour is at least min_ink.
// An element alone is not enough: an ECharts or deck.gl canvas exists before anything is
// drawn on it, and a screenshot taken then shows empty panels.
// Exit status: 0 when every chart rendered and no error panel shows, 1 otherwise (the PNG is
// written either way, to show what went wrong), 2 when the browser or the login failed.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

// flags that work headless in a container without a GPU or a sandbox
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-angle=swiftshader',
];

// Every chart of a dashboard is a "chart-grid-component" (Markdown blocks are not); once its
// visualisation is drawn it holds one of DRAWN; while it loads, LOADING; on failure, ERROR.
const CHART = '[data-test="chart-grid-component"]';
const DRAWN = [
  'canvas',
  'svg',
  'table',
  '.superset-legacy-chart-big-number .header-line',
  '.superset-legacy-chart-calendar',
].join(', ');
const LOADING = '[data-test="loading-indicator"], .loading';
// the visualisation inside a chart panel (without the panel's title and menu)
const BODY = '.slice_container';
// the request's min_ink (aqi/screenshot.py MIN_INK) is the least ink of a drawn chart body

const ERROR = '.alert-danger, .ant-alert-error, [data-test="error-message"]';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

class Fatal extends Error {}

function oneLine(text, max = 300) {
  return text.replace(/\s+/g, ' ').trim().slice(0, max);
}

// Counts, in the page, the charts still loading or showing an error panel, and says which
// have their visualisation element (whether it shows anything is drawnState's question).
// (Runs in the browser: it gets everything it needs as its argument.)
function inspect({ chart, drawn, loading, error }) {
  const squash = text => text.replace(/\s+/g, ' ').trim().slice(0, 300);
  const charts = [...document.querySelectorAll(chart)];
  const result = {
    charts: charts.length, loading: 0, errors: [], titles: [], drawn: [], viz_types: [],
  };
  for (const element of charts) {
    result.viz_types.push(element.getAttribute('data-test-viz-type') ?? '');
    const title = element.querySelector('[data-test="editable-title"]');
    result.titles.push(title ? squash(title.textContent) : '');
    const failed = element.querySelector(error);
    if (failed) {
      result.errors.push(`${result.titles.at(-1)}: ${squash(failed.textContent)}`);
    } else if (element.querySelector(loading)) {
      result.loading += 1;
    }
    result.drawn.push(Boolean(element.querySelector(drawn)) && !failed);
  }
  // error panels outside the charts (the dashboard failed to load, say)
  for (const panel of document.querySelectorAll(error)) {
    if (!panel.closest(chart)) result.errors.push(`page: ${squash(panel.textContent)}`);
  }
  return result;
}

// What a PNG shows, computed in a blank page: `ink`, the share of its pixels that differ from
// its most common colour (colours in 16 levels per channel, so anti-aliasing noise of a blank
// panel does not count), and `shares`, the share of its pixels within `distance` of each named
// RGB colour of `swatches`.
async function pixelStats([base64, swatches, distance]) {
  const image = new Image();
  image.src = `data:image/png;base64,${base64}`;
  await image.decode();
  const canvas = document.createElement('canvas');
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(image, 0, 0);
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  const pixels = data.length / 4;
  const counts = new Map();
  for (let i = 0; i < data.length; i += 4) {
    const key = ((data[i] >> 4) << 8) | ((data[i + 1] >> 4) << 4) | (data[i + 2] >> 4);
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const ink = pixels ? (pixels - Math.max(0, ...counts.values())) / pixels : 0;
  const shares = {};
  for (const [name, [r, g, b]] of Object.entries(swatches)) {
    let near = 0;
    for (let i = 0; i < data.length; i += 4) {
      const d = Math.hypot(data[i] - r, data[i + 1] - g, data[i + 2] - b);
      if (d <= distance) near += 1;
    }
    shares[name] = pixels ? Math.round((near / pixels) * 100000) / 100000 : 0;
  }
  return { ink, shares };
}

// The swatch shares of every map chart's body (deck.gl), null for the others.
async function swatches(page, lab, vizTypes, cfg) {
  const charts = page.locator(CHART);
  const result = [];
  for (let i = 0; i < vizTypes.length; i += 1) {
    if (!cfg.swatches || !vizTypes[i].startsWith('deck_')) {
      result.push(null);
      continue;
    }
    const body = charts.nth(i).locator(BODY);
    const target = (await body.count()) > 0 ? body.first() : charts.nth(i);
    const png = await target.screenshot({ timeout: 10000 }).catch(() => null);
    result.push(png
      ? (await lab.evaluate(pixelStats, [png.toString('base64'), cfg.swatches, cfg.swatch_distance ?? 24])).shares
      : null);
  }
  return result;
}

// The ink of every chart's body, in the order of the panels on the page; 0 without a
// screenshot for the charts not to measure (no visualisation element yet: nothing to see).
async function inks(page, lab, measure) {
  const charts = page.locator(CHART);
  const result = [];
  for (let i = 0; i < (await charts.count()); i += 1) {
    if (!measure[i]) {
      result.push(0);
      continue;
    }
    const body = charts.nth(i).locator(BODY);
    const target = (await body.count()) > 0 ? body.first() : charts.nth(i);
    const png = await target.screenshot({ timeout: 10000 }).catch(() => null);
    const share = png ? (await lab.evaluate(pixelStats, [png.toString('base64'), {}, 0])).ink : 0;
    result.push(Math.round(share * 10000) / 10000);
  }
  return result;
}

// inspect()'s counts and "rendered": drawn (the element exists) and showing ink
async function drawnState(page, lab, selectors, minInk) {
  const state = await page.evaluate(inspect, selectors);
  const ink = await inks(page, lab, state.drawn);
  const { drawn, ...counts } = state;
  const rendered = drawn.filter((isDrawn, i) => isDrawn && (ink[i] ?? 0) >= minInk).length;
  return { ...counts, rendered, ink };
}

async function shoot(cfg, context) {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(cfg.timeout_ms);

  // log in through the login form (the dashboard's own requests then use the session cookie).
  // Up to 3 tries: the login page sends an event-log request as it leaves, and when that
  // request's answer (an anonymous session cookie) lands after the login's, the browser is
  // sent back to /login (seen in CI: POST /login/ 302, then / -> /login/?next=...)
  for (let attempt = 1; ; attempt += 1) {
    await page.goto(`${cfg.url}/login/`, { waitUntil: 'domcontentloaded' });
    await page.locator('[data-test="username-input"]').fill(cfg.username);
    await page.locator('[data-test="password-input"]').fill(cfg.password);
    await Promise.all([
      page.waitForURL(url => !url.pathname.startsWith('/login'), { timeout: 30000 }).catch(() => {}),
      page.locator('[data-test="login-button"]').click(),
    ]);
    await page.waitForLoadState('networkidle', { timeout: 10000 }).catch(() => {});
    if (!new URL(page.url()).pathname.startsWith('/login')) break;
    if (attempt === 3) throw new Fatal(`login as ${cfg.username} failed at ${cfg.url}/login/`);
  }

  const dashboard = `${cfg.url}/superset/dashboard/${cfg.dashboard}/?standalone=1`;
  const selectors = { chart: CHART, drawn: DRAWN, loading: LOADING, error: ERROR };
  const lab = await context.newPage(); // about:blank: decodes the PNGs, no page CSP applies
  const deadline = Date.now() + cfg.timeout_ms;
  const settled = async () => {
    const state = await drawnState(page, lab, selectors, cfg.min_ink);
    const done = state.rendered + state.errors.length >= state.charts;
    return { state, ready: state.charts > 0 && state.loading === 0 && done };
  };
  // Opened at the requested size and, when the dashboard is taller, once more in a viewport
  // as tall as the page: a full-page screenshot of a taller page resizes the viewport while
  // capturing, and the map, redrawn meanwhile, showed a blank strip where its tiles had been
  // (and the sticky header half-way down the picture); resizing and waiting left the layout
  // shifted. Reopened at the final size, every chart draws once, at the size it is shown.
  // The page's height is known as soon as its grid is there (each panel has its size before
  // its chart draws), so the first opening waits for nothing else when it is reopened.
  const open = async () => {
    const response = await page.goto(dashboard, { waitUntil: 'domcontentloaded' });
    if (!response || !response.ok()) {
      throw new Fatal(`${dashboard} answered ${response ? response.status() : 'nothing'}`);
    }
    await page.waitForSelector(CHART);
  };
  await open();
  const full = await page.evaluate(() => document.documentElement.scrollHeight);
  if (full > page.viewportSize().height) {
    await page.setViewportSize({ width: cfg.width, height: Math.min(full, 10000) });
    await open();
  }

  // wait until every chart is drawn or failed and nothing is loading any more (scrolling to
  // the end first, in case charts below the fold are only rendered when seen)
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.waitForTimeout(300);
  await page.evaluate(() => window.scrollTo(0, 0));
  for (;;) {
    const { ready } = await settled();
    if (ready || Date.now() > deadline) break;
    await page.waitForTimeout(500);
  }
  // let animations (ECharts, deck.gl) and tile requests finish, then count once more: the
  // screenshot is taken only once two counts in a row say every chart is drawn
  await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
  await page.waitForTimeout(2500);
  let { state, ready } = await settled();
  while (!ready && Date.now() < deadline) {
    await page.waitForTimeout(1000);
    ({ state, ready } = await settled());
  }
  state.swatches = await swatches(page, lab, state.viz_types, cfg);
  await lab.close();
  await page.screenshot({ path: cfg.out, fullPage: true });
  return state;
}

const cfg = await readStdin();
const userDataDir = mkdtempSync(join(tmpdir(), 'aq-chromium-'));
let context;
try {
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: cfg.executable,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: cfg.width, height: cfg.height },
      deviceScaleFactor: 1,
    });
  } catch (err) {
    throw new Fatal(`could not start ${cfg.executable}: ${oneLine(String(err.message))}`);
  }
  const state = await shoot(cfg, context);
  const ok = state.errors.length === 0 && state.loading === 0 && state.rendered === state.charts;
  process.stdout.write(`${JSON.stringify({ ...state, file: cfg.out })}\n`);
  process.exitCode = ok ? 0 : 1;
} catch (err) {
  const message =
    err instanceof Fatal ? err.message : `${err.name}: ${oneLine(String(err.message))}`;
  process.stdout.write(`${JSON.stringify({ fatal: message })}\n`);
  process.exitCode = 2;
} finally {
  if (context) await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
