// Screenshot of a Superset dashboard with every chart drawn: `aqi dashboards screenshot OUT.png`
// (aqi/screenshot.py) runs it. Debian's chromium, driven by playwright-core, no browser download.
//
// Input: one JSON document on stdin (the password stays off the command line):
//   {"url": "http://127.0.0.1:8088", "dashboard": "air-quality", "username": "admin",
//    "password": "...", "out": "/abs/path.png", "executable": "/usr/bin/chromium",
//    "width": 1600, "height": 1200, "timeout_ms": 120000}
// Output: one JSON line on stdout, e.g.
//   {"charts": 8, "rendered": 8, "loading": 0, "errors": [], "file": "...", "titles": [...]}
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

// Counts, in the page, the charts that are drawn, still loading, or show an error panel.
// (Runs in the browser: it gets everything it needs as its argument.)
function inspect({ chart, drawn, loading, error }) {
  const squash = text => text.replace(/\s+/g, ' ').trim().slice(0, 300);
  const charts = [...document.querySelectorAll(chart)];
  const result = { charts: charts.length, rendered: 0, loading: 0, errors: [], titles: [] };
  for (const element of charts) {
    const title = element.querySelector('[data-test="editable-title"]');
    result.titles.push(title ? squash(title.textContent) : '');
    const failed = element.querySelector(error);
    if (failed) {
      result.errors.push(`${result.titles.at(-1)}: ${squash(failed.textContent)}`);
    } else if (element.querySelector(loading)) {
      result.loading += 1;
    } else if (element.querySelector(drawn)) {
      result.rendered += 1;
    }
  }
  // error panels outside the charts (the dashboard failed to load, say)
  for (const panel of document.querySelectorAll(error)) {
    if (!panel.closest(chart)) result.errors.push(`page: ${squash(panel.textContent)}`);
  }
  return result;
}

async function shoot(cfg, context) {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(cfg.timeout_ms);

  // log in through the login form (the dashboard's own requests then use the session cookie)
  await page.goto(`${cfg.url}/login/`, { waitUntil: 'domcontentloaded' });
  await page.locator('[data-test="username-input"]').fill(cfg.username);
  await page.locator('[data-test="password-input"]').fill(cfg.password);
  await Promise.all([
    page.waitForURL(url => !url.pathname.startsWith('/login'), { timeout: 30000 }).catch(() => {}),
    page.locator('[data-test="login-button"]').click(),
  ]);
  if (new URL(page.url()).pathname.startsWith('/login')) {
    throw new Fatal(`login as ${cfg.username} failed at ${cfg.url}/login/`);
  }

  const dashboard = `${cfg.url}/superset/dashboard/${cfg.dashboard}/?standalone=1`;
  const response = await page.goto(dashboard, { waitUntil: 'domcontentloaded' });
  if (!response || !response.ok()) {
    throw new Fatal(`${dashboard} answered ${response ? response.status() : 'nothing'}`);
  }
  await page.waitForSelector(CHART);

  // wait until every chart is drawn or failed and nothing is loading any more (scrolling to
  // the end first, in case charts below the fold are only rendered when seen)
  const selectors = { chart: CHART, drawn: DRAWN, loading: LOADING, error: ERROR };
  await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await page.waitForTimeout(300);
  await page.evaluate(() => window.scrollTo(0, 0));
  const deadline = Date.now() + cfg.timeout_ms;
  for (;;) {
    const state = await page.evaluate(inspect, selectors);
    const done = state.rendered + state.errors.length >= state.charts;
    if ((state.charts > 0 && state.loading === 0 && done) || Date.now() > deadline) break;
    await page.waitForTimeout(500);
  }
  // let animations (ECharts, deck.gl) and tile requests finish, then count once more
  await page.waitForLoadState('networkidle', { timeout: 15000 }).catch(() => {});
  await page.waitForTimeout(2500);
  const state = await page.evaluate(inspect, selectors);
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
