// The dashboard in headless Debian Chromium (driven by playwright-core):
// real requests go through the real gateway to the mock upstream, the page
// logs in with the admin token and must chart what those requests did.
// A screenshot is left in build/artifacts/dashboard.png.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { ADMIN_TOKEN, chat, startGateway } from '../lib/gateway.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const ARTIFACTS = process.env.SLUICE_ARTIFACTS || join(ROOT, 'build', 'artifacts');
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
// The closed network refuses Chromium's own background connections: these
// flags keep it from trying (see the machine notes on Chromium).
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let gw;
let context;
let page;
let profile;
let traffic;
const pageErrors = [];

// Requests in the background while the page watches: rates and
// percentiles are computed from successive scrapes, so they need traffic
// between two of them. Every tenth one fails upstream (a 500 from the
// mock) and every seventh is blocked by the guardrails plugin.
function startTraffic(baseURL) {
  let n = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      n++;
      const text = n % 10 === 0 ? 'boom [mock:status=500]'
        : n % 7 === 0 ? 'tell me about Project Bluebird'
          : `hello dashboard ${n} [mock:delay_ms=15]`;
      await chat(baseURL, n % 3 === 0 ? 'echo' : 'gpt-test', text);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return async () => {
    running = false;
    await loop;
  };
}

before(async () => {
  gw = await startGateway();
  for (let i = 0; i < 20; i++) {
    assert.equal(await chat(gw.baseURL, 'gpt-test', `warm up ${i}`), 200);
  }
  assert.equal(await chat(gw.baseURL, 'nope', 'x'), 404);
  assert.equal(await chat(gw.baseURL, 'gpt-test', 'project bluebird plans'), 400);
  profile = mkdtempSync(join(tmpdir(), 'sluice-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 1500 },
  });
  page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[14]/.test(m.text())) {
      pageErrors.push(`console: ${m.text()}`);
    }
  });
});

after(async () => {
  if (traffic) await traffic();
  if (context) await context.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  if (gw) {
    const exit = await gw.stop();
    assert.equal(exit.code, 0, `gateway exit after SIGTERM:\n${exit.stderr}`);
  }
});

test('the page is public but its data calls need the admin token', async () => {
  const res = await page.goto(`${gw.adminURL}/dashboard`);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  assert.equal(await page.title(), 'Sluice dashboard');
  await page.waitForSelector('#login-form', { state: 'visible' });
  const status = await page.evaluate(async () => (await fetch('/metrics')).status);
  assert.equal(status, 401);
});

test('a wrong token is refused with an error and the dashboard stays hidden', async () => {
  await page.fill('#token', 'not-the-token');
  await page.click('#login-submit');
  await page.waitForSelector('#login-error', { state: 'visible' });
  assert.match(await page.textContent('#login-error'), /wrong admin token/i);
  assert.equal(await page.isVisible('#dashboard'), false);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
});

test('the charts show the requests sent through the gateway', async () => {
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('#login-submit');
  await page.waitForSelector('#dashboard', { state: 'visible' });
  assert.equal(await page.isVisible('#login-error'), false);
  traffic = startTraffic(gw.baseURL);

  // Chart.js instances, read back from their canvases.
  const read = () => page.evaluate(() => {
    const sets = (id) => Object.fromEntries(Chart.getChart(id).data.datasets
      .map((d) => [d.label, d.data]));
    return {
      rps: sets('chart-rps'),
      latency: sets('chart-latency'),
      tokens: sets('chart-tokens'),
      cost: sets('chart-cost'),
      usage: sets('chart-usage'),
    };
  });
  const positive = (xs) => (xs || []).some((v) => typeof v === 'number' && v > 0);
  await page.waitForFunction(() => {
    const has = (id, label) => {
      const d = Chart.getChart(id).data.datasets.find((x) => x.label === label);
      return d && d.data.some((v) => typeof v === 'number' && v > 0);
    };
    return has('chart-rps', 'requests/s') && has('chart-rps', 'errors/s') &&
      has('chart-latency', 'p50') && has('chart-latency', 'p90') &&
      has('chart-latency', 'p99') &&
      has('chart-tokens', 'gpt-test') && has('chart-tokens', 'echo') &&
      has('chart-cost', 'gpt-test') && has('chart-usage', 'gpt-test');
  }, null, { timeout: 20000, polling: 250 }).catch(async (e) => {
    throw new Error(`charts never showed the traffic: ${JSON.stringify(await read())}\n${e}`);
  });

  const data = await read();
  assert.ok(positive(data.rps['requests/s']));
  // The mock delays half the answers by 15 ms (the others are instant:
  // the built-in echo, blocks, failures): p90 sits above 10 ms.
  const p90 = data.latency.p90.filter((v) => v > 0);
  assert.ok(Math.max(...p90) >= 10, `p90 points: ${p90}`);
  assert.ok(positive(data.latency.p50));
  assert.ok(positive(data.tokens['gpt-test']));
  assert.ok(positive(data.cost['gpt-test']));
  // The usage ledger's hourly tokens for the model (the default view).
  assert.ok(positive(data.usage['gpt-test']));
});

test('rates and quantiles are computed as Prometheus computes them', async () => {
  const r = await page.evaluate(() => {
    const d = window.sluiceDashboard;
    const text = [
      '# HELP x y',
      'sluice_requests_total{route="/v1/chat",model="a \\"q\\"",status="200"} 7',
      'h_bucket{route="r",le="0.1"} 0', 'h_bucket{route="r",le="0.5"} 10',
      'h_bucket{route="r",le="1"} 10', 'h_bucket{route="r",le="+Inf"} 10',
      'h_bucket{route="s",le="0.1"} 0', 'h_bucket{route="s",le="0.5"} 0',
      'h_bucket{route="s",le="1"} 10', 'h_bucket{route="s",le="+Inf"} 12',
    ].join('\n');
    const s = d.parseMetrics(text);
    const now = d.buckets(s, 'h');
    return {
      first: s[0],
      buckets: now.map(([le, n]) => [String(le), n]),
      // 22 observations: 10 in (0.1, 0.5], 10 in (0.5, 1], 2 above 1.
      p50: d.quantile(0.5, now, []),
      p99: d.quantile(0.99, now, []),
      // Only what happened since the previous scrape counts.
      since: d.quantile(0.5, now, [[0.1, 0], [0.5, 10], [1, 10], [Infinity, 10]]),
      idle: d.quantile(0.5, now, now),
    };
  });
  assert.deepEqual(r.first, {
    name: 'sluice_requests_total',
    labels: { route: '/v1/chat', model: 'a "q"', status: '200' },
    value: 7,
  });
  assert.deepEqual(r.buckets, [['0.1', 0], ['0.5', 10], ['1', 20], ['Infinity', 22]]);
  assert.ok(Math.abs(r.p50 - 0.55) < 1e-9, r.p50); // rank 11: 1/10 into (0.5, 1]
  assert.equal(r.p99, 1); // in +Inf: the highest finite bound
  assert.ok(Math.abs(r.since - 0.8) < 1e-9, r.since); // rank 6 of 12: 6/10 into (0.5, 1]
  assert.equal(r.idle, null);
});

test('the tables show providers, breakers and per-model totals', async () => {
  const providers = await page.textContent('#providers');
  assert.match(providers, /gpt-test/);
  assert.match(providers, /upstream/);
  assert.match(providers, /mock-model/);
  assert.match(providers, /closed/);
  const rows = await page.$$eval('#providers tbody tr', (trs) => trs.length);
  assert.equal(rows, 2); // one target per model

  // The totals include the warm-up requests sent before the page opened.
  await page.waitForFunction(() => {
    const row = [...document.querySelectorAll('#models tbody tr')]
      .find((tr) => tr.cells[0].textContent === 'gpt-test');
    return row && Number(row.cells[1].textContent.replace(/,/g, '')) > 20;
  }, null, { timeout: 5000 });

  // Errors: from the request log where the gateway has one, else from the
  // status counters: the 404 for "nope", the mock's 500s (a 502 here) and
  // the guardrail's 400s.
  await page.waitForFunction(() => {
    const t = document.getElementById('errors').textContent;
    return /502/.test(t) && /400/.test(t);
  }, null, { timeout: 5000 });
  const errors = await page.textContent('#errors');
  if (/time \(UTC\)/.test(errors)) { // the request log: who answered
    assert.match(errors, /upstream_error/);
    assert.match(errors, /guard: respond in on_request/);
  }

  // The ledger's consumers (no auth plugin: everyone is "anonymous") with
  // a cost, and that consumer's budgets.
  const consumers = await page.textContent('#consumers');
  assert.match(consumers, /anonymous/);
  assert.match(consumers, /\$(0\.0*[1-9]|[1-9])/); // more than $0
  const budgets = await page.textContent('#budgets');
  assert.match(budgets, /anonymous/);
  assert.match(budgets, /daily_usd/);
  assert.match(budgets, /total_tokens/);

  // The plugin list, where the gateway has one: the guardrails instance.
  const plugins = await page.textContent('#plugins');
  if (!/not available/.test(plugins)) {
    assert.match(plugins, /guard \(guardrails\)/);
    assert.match(plugins, /\d+\.\d+\.\d+/); // its version
    assert.match(plugins, /\/v1\/chat\/completions/);
  }

  // Every panel says something: data, "nothing yet", or "not available".
  for (const id of ['budgets', 'consumers', 'errors', 'plugins', 'models']) {
    const text = (await page.textContent(`#${id}`)).trim();
    assert.doesNotMatch(text, /undefined|NaN|\[object/, `panel #${id}: ${text}`);
  }
});

test('the token lasts for the tab: a reload stays logged in', async () => {
  await page.reload();
  await page.waitForSelector('#dashboard', { state: 'visible' });
  assert.equal(await page.isVisible('#login-form'), false);
  // Wait for two refreshes so the screenshot has fresh points too.
  await page.waitForFunction(() => Chart.getChart('chart-rps').data.labels.length >= 3,
    null, { timeout: 20000 });
});

test('a screenshot is saved and the page logged no errors', async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = join(ARTIFACTS, 'dashboard.png');
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
  assert.deepEqual(pageErrors, []);
});

test('logging out forgets the token', async () => {
  await page.click('#logout');
  await page.waitForSelector('#login-form', { state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.reload();
  await page.waitForSelector('#login-form', { state: 'visible' });
});
