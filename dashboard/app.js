/* Sluice dashboard: reads the admin API every 2 s with the admin token and
 * draws it with Chart.js. Rates and percentiles are computed here from two
 * successive /metrics scrapes, as Prometheus' rate() and
 * histogram_quantile() would. Endpoints that a gateway does not have yet
 * (404) show "not available" in their panel; nothing else breaks. */
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const POINTS = 90; // 3 minutes of 2 s points
  const TOKEN_KEY = 'sluice.adminToken';
  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed',
    '#0891b2', '#db2777', '#4b5563', '#65a30d', '#9333ea'];

  const $ = (id) => document.getElementById(id);

  // One color per model or key on every chart, in order of first sight.
  const colorOf = new Map([['requests/s', '#2563eb'], ['errors/s', '#dc2626'],
    ['p50', '#16a34a'], ['p90', '#d97706'], ['p99', '#7c3aed']]);
  function colorFor(label) {
    if (!colorOf.has(label)) colorOf.set(label, COLORS[colorOf.size % COLORS.length]);
    return colorOf.get(label);
  }

  /* ---- the admin API ---------------------------------------------------- */

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function call(path, as) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const res = await fetch(path, {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store',
    });
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try {
        const body = await res.json();
        if (body && body.error && body.error.message) msg = body.error.message;
      } catch (e) { /* not JSON: keep the status line */ }
      throw new HttpError(res.status, msg);
    }
    return as === 'text' ? res.text() : res.json();
  }

  // Resolves to {ok, value} or {ok: false, status, message}: one panel's
  // failure must not stop the others.
  function settle(p) {
    return p.then((value) => ({ ok: true, value }),
      (e) => ({ ok: false, status: e.status || 0, message: e.message }));
  }

  /* ---- Prometheus text ---------------------------------------------------- */

  const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

  function parseMetrics(text) {
    const out = [];
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#') continue;
      const sp = line.lastIndexOf(' ');
      if (sp < 0) continue;
      const head = line.slice(0, sp);
      const value = Number(line.slice(sp + 1));
      const brace = head.indexOf('{');
      const name = brace < 0 ? head : head.slice(0, brace);
      const labels = {};
      if (brace >= 0) {
        for (const m of head.slice(brace).matchAll(LABEL)) {
          labels[m[1]] = m[2].replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
        }
      }
      out.push({ name, labels, value });
    }
    return out;
  }

  // Sums the series of one family by the value of a label (or all: '').
  function sumBy(samples, name, label, filter) {
    const out = new Map();
    for (const s of samples) {
      if (s.name !== name || (filter && !filter(s.labels))) continue;
      const k = label ? (s.labels[label] ?? '') : '';
      out.set(k, (out.get(k) || 0) + s.value);
    }
    return out;
  }

  function total(samples, name, filter) {
    return sumBy(samples, name, '', filter).get('') || 0;
  }

  // Cumulative buckets of a histogram summed over its series: [[le, n]].
  function buckets(samples, name) {
    const by = sumBy(samples, name + '_bucket', 'le');
    return [...by.entries()]
      .map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), n])
      .sort((a, b) => a[0] - b[0]);
  }

  // histogram_quantile() over the increase between two scrapes: linear
  // inside the bucket the rank falls in; null when nothing was observed.
  function quantile(q, now, before) {
    const prev = new Map(before);
    const inc = now.map(([le, n]) => [le, Math.max(0, n - (prev.get(le) || 0))]);
    const count = inc.length ? inc[inc.length - 1][1] : 0;
    if (count === 0) return null;
    const rank = q * count;
    let lower = 0;
    let below = 0;
    for (const [le, n] of inc) {
      if (n >= rank) {
        if (le === Infinity) return lower; // the highest finite bound
        return lower + (le - lower) * ((rank - below) / Math.max(n - below, 1e-12));
      }
      if (le !== Infinity) lower = le;
      below = n;
    }
    return lower;
  }

  /* ---- charts ----------------------------------------------------------- */

  const charts = {};

  function lineChart(id, yTitle) {
    charts[id] = new Chart($(id), {
      type: 'line',
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        spanGaps: false,
        interaction: { mode: 'index', intersect: false },
        elements: { point: { radius: 0 }, line: { borderWidth: 2, tension: 0.2 } },
        scales: {
          x: { ticks: { maxTicksLimit: 8, autoSkip: true } },
          y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle } },
        },
        plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
      },
    });
  }

  function barChart(id) {
    charts[id] = new Chart($(id), {
      type: 'bar',
      data: { labels: [], datasets: [] },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
        plugins: { legend: { position: 'bottom', labels: { boxWidth: 12 } } },
      },
    });
  }

  // The dataset of chart `c` named `label`, made (with earlier points as
  // gaps) the first time it is seen.
  function dataset(c, label) {
    let d = c.data.datasets.find((x) => x.label === label);
    if (!d) {
      const color = colorFor(label);
      d = {
        label,
        data: c.data.labels.map(() => null),
        borderColor: color,
        backgroundColor: color,
      };
      c.data.datasets.push(d);
    }
    return d;
  }

  // Appends one point in time to a line chart: values maps dataset label
  // to a number or null; datasets it does not name get a gap.
  function push(c, label, values) {
    for (const k of Object.keys(values)) dataset(c, k);
    c.data.labels.push(label);
    for (const d of c.data.datasets) {
      const v = values[d.label];
      d.data.push(v === undefined ? null : v);
    }
    if (c.data.labels.length > POINTS) {
      c.data.labels.shift();
      for (const d of c.data.datasets) d.data.shift();
    }
    c.update('none');
  }

  /* ---- tables ----------------------------------------------------------- */

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // cols: [{title, num?, get(row) -> string | Node}]
  function table(box, cols, rows, empty) {
    box.replaceChildren();
    if (rows.length === 0) {
      box.append(el('p', empty || 'nothing yet', 'unavailable'));
      return;
    }
    const t = el('table');
    const hr = el('tr');
    for (const c of cols) hr.append(el('th', c.title, c.num ? 'num' : ''));
    t.append(el('thead'));
    t.tHead.append(hr);
    const body = el('tbody');
    for (const r of rows) {
      const tr = el('tr');
      for (const c of cols) {
        const v = c.get(r);
        const td = el('td', null, c.num ? 'num' : '');
        if (v instanceof Node) td.append(v);
        else td.textContent = v === undefined || v === null ? '' : String(v);
        tr.append(td);
      }
      body.append(tr);
    }
    t.append(body);
    box.append(t);
  }

  function unavailable(box, result, what) {
    box.replaceChildren(el('p', result.status === 404
      ? what + ' is not available on this gateway (404)'
      : what + ': ' + result.message, 'unavailable'));
  }

  function badge(text, cls) {
    return el('span', text, 'badge ' + cls);
  }

  const fmtInt = (n) => (n === undefined || n === null ? '' : Math.round(n).toLocaleString('en-US'));
  const fmtUsd = (n) => (n === undefined || n === null ? '' : '$' + Number(n).toFixed(n < 1 ? 4 : 2));
  const fmtPct = (x) => (x * 100).toFixed(1) + '%';

  /* ---- usage, logs, keys, plugins: tolerant readers --------------------- */

  // The list in an admin answer, whatever its member is called.
  function listOf(body, ...names) {
    if (Array.isArray(body)) return body;
    if (!body || typeof body !== 'object') return [];
    for (const n of [...names, 'data', 'items', 'rows']) {
      if (Array.isArray(body[n])) return body[n];
    }
    return [];
  }

  const first = (o, ...keys) => {
    for (const k of keys) if (o[k] !== undefined && o[k] !== null) return o[k];
    return undefined;
  };

  function rowTokens(r) {
    const t = first(r, 'tokens', 'total_tokens');
    if (typeof t === 'number') return t;
    const src = t && typeof t === 'object' ? t : r;
    let n = 0;
    for (const k of ['prompt', 'completion', 'prompt_tokens', 'completion_tokens',
      'input', 'output', 'input_tokens', 'output_tokens']) {
      if (typeof src[k] === 'number') n += src[k];
    }
    return n;
  }

  function rowCost(r) {
    const c = first(r, 'cost_usd', 'cost');
    if (typeof c === 'number') return c;
    const m = first(r, 'cost_micros', 'cost_micro_usd', 'cost_microdollars');
    return typeof m === 'number' ? m / 1e6 : 0;
  }

  const rowConsumer = (r) => String(first(r, 'consumer', 'key', 'key_id', 'consumer_id') ?? '(none)');

  // A time as "YYYY-MM-DD HH:00" from seconds, milliseconds or a string.
  function rowHour(r) {
    let t = first(r, 'hour', 'time', 'ts', 'bucket', 'from', 'start', 'day', 'date');
    if (t === undefined) return 'all';
    if (typeof t === 'number') t = new Date(t < 1e12 ? t * 1000 : t).toISOString();
    const s = String(t);
    return /^\d{4}-\d\d-\d\dT\d\d/.test(s) ? s.slice(0, 10) + ' ' + s.slice(11, 13) + ':00' : s;
  }

  // A log entry's time: seconds, milliseconds or a string, shown as is.
  function when(t) {
    if (t === undefined || t === null) return '';
    const s = typeof t === 'number' ? new Date(t < 1e12 ? t * 1000 : t).toISOString() : String(t);
    return /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.test(s) ? s.slice(0, 10) + ' ' + s.slice(11, 19) : s;
  }

  /* ---- state and refresh ------------------------------------------------- */

  let prev = null; // {t, samples}
  let timer = null;
  let usageSeries = null; // [[model or key, hourly rows]]
  let refreshes = 0;
  const USAGE_EVERY = 5;

  function clock(d) {
    return d.toTimeString().slice(0, 8);
  }

  // Cached tokens are part of the prompt and reasoning tokens part of the
  // completion: a sum over every kind would count them twice.
  const countedKind = (l) => !l.kind || l.kind === 'prompt' || l.kind === 'completion';

  function renderMetrics(samples, t) {
    const label = clock(new Date(t));
    const models = $('models');
    // Totals since start: these show what happened before the page opened.
    const req = sumBy(samples, 'sluice_requests_total', 'model');
    const tok = sumBy(samples, 'sluice_tokens_total', 'model', countedKind);
    const costFamily = [...new Set(samples.map((s) => s.name))]
      .find((n) => /^sluice_.*cost.*_total$/.test(n));
    const cost = costFamily ? sumBy(samples, costFamily, 'model') : new Map();
    const names = [...new Set([...req.keys(), ...tok.keys()])].filter((m) => m !== '').sort();
    table(models, [
      { title: 'model', get: (m) => m },
      { title: 'requests', num: true, get: (m) => fmtInt(req.get(m) || 0) },
      { title: 'tokens', num: true, get: (m) => fmtInt(tok.get(m) || 0) },
      { title: 'cost', num: true, get: (m) => (costFamily ? fmtUsd(cost.get(m) || 0) : '') },
    ], names, 'no requests yet');

    if (prev === null) return; // rates need two scrapes
    const dt = (t - prev.t) / 1000;
    const rate = (a, b) => (a >= b && dt > 0 ? (a - b) / dt : null); // null: reset
    const isErr = (l) => Number(l.status) >= 400 || l.status === '0';

    push(charts['chart-rps'], label, {
      'requests/s': rate(total(samples, 'sluice_requests_total'),
        total(prev.samples, 'sluice_requests_total')),
      'errors/s': rate(total(samples, 'sluice_requests_total', isErr),
        total(prev.samples, 'sluice_requests_total', isErr)),
    });

    const hNow = buckets(samples, 'sluice_request_duration_seconds');
    const hPrev = buckets(prev.samples, 'sluice_request_duration_seconds');
    const ms = (q) => {
      const v = quantile(q, hNow, hPrev);
      return v === null ? null : v * 1000;
    };
    push(charts['chart-latency'], label, { p50: ms(0.5), p90: ms(0.9), p99: ms(0.99) });

    const tokPrev = sumBy(prev.samples, 'sluice_tokens_total', 'model', countedKind);
    const tv = {};
    for (const [m, n] of tok) tv[m] = rate(n, tokPrev.get(m) || 0);
    push(charts['chart-tokens'], label, tv);

    const note = $('cost-note');
    if (costFamily) {
      const cPrev = sumBy(prev.samples, costFamily, 'model');
      const cv = {};
      for (const [m, n] of cost) {
        const r = rate(n, cPrev.get(m) || 0);
        cv[m] = r === null ? null : r * 60;
      }
      push(charts['chart-cost'], label, cv);
      note.hidden = true;
      $('cost-chart-box').hidden = false;
    } else {
      note.textContent = 'No cost yet: no priced model has answered (prices ' +
        'come from the config\'s "pricing" table).';
      note.hidden = false;
      $('cost-chart-box').hidden = true;
    }
  }

  function renderErrorsFromMetrics(samples) {
    // Without a request log: the error counters since start, by route,
    // model and status, and any guardrail or plugin-verdict counters.
    const rows = samples
      .filter((s) => (s.name === 'sluice_requests_total' &&
        (Number(s.labels.status) >= 400 || s.labels.status === '0')) ||
        (/guardrail|verdict|block/.test(s.name) && s.value > 0))
      .filter((s) => s.value > 0)
      .sort((a, b) => b.value - a.value);
    table($('errors'), [
      { title: 'what', get: (s) => (s.name === 'sluice_requests_total' ? 'status ' + s.labels.status : s.name) },
      { title: 'route / rule', get: (s) => s.labels.route || s.labels.rule || s.labels.plugin || '' },
      { title: 'model', get: (s) => s.labels.model || '' },
      { title: 'provider', get: (s) => s.labels.provider || '' },
      { title: 'count', num: true, get: (s) => fmtInt(s.value) },
    ], rows, 'no errors or blocks since start (from /metrics; the request log is not available)');
  }

  // What a log entry says went wrong: the error code, the plugin that
  // answered instead of the model ("guard: respond in on_request") and
  // the fields plugins logged (a guardrail's rule).
  function whatFailed(e) {
    const out = [];
    if (typeof e.error === 'string') out.push(e.error);
    const v = e.verdict;
    if (v && typeof v === 'object') {
      out.push((v.plugin ?? '?') + ': ' + (v.action ?? '') + (v.phase ? ' in ' + v.phase : ''));
    }
    const f = e.plugin_fields;
    if (f && typeof f === 'object') {
      for (const [k, x] of Object.entries(f)) out.push(k + '=' + (typeof x === 'string' ? x : JSON.stringify(x)));
    }
    return out.join('; ');
  }

  // The newest failures from the request log: its 4xx and 5xx answers
  // (guardrail blocks are refusals, so they are among them).
  function renderLogs(bodies) {
    const stamp = (e) => Number(first(e, 'ts_us')) || Date.parse(first(e, 'time') ?? '') * 1000 || 0;
    const bad = bodies.flatMap((b) => listOf(b, 'logs', 'entries'))
      .sort((a, b) => stamp(b) - stamp(a)).slice(0, 15);
    table($('errors'), [
      { title: 'time (UTC)', get: (e) => when(first(e, 'time', 'ts', 'timestamp')) },
      { title: 'key', get: (e) => first(e, 'consumer') ?? '' },
      { title: 'model', get: (e) => first(e, 'model') ?? '' },
      { title: 'provider', get: (e) => first(e, 'provider') ?? '' },
      { title: 'status', num: true, get: (e) => first(e, 'status') ?? '' },
      { title: 'error / verdict', get: (e) => whatFailed(e) },
      { title: 'latency ms', num: true, get: (e) => (typeof e.latency_ms === 'number' ? e.latency_ms.toFixed(1) : '') },
    ], bad, 'no errors or blocks in the request log');
  }

  function renderProviders(body) {
    const targets = listOf(body, 'targets');
    const provs = new Map(listOf(body, 'providers').map((p) => [p.name, p]));
    table($('providers'), [
      { title: 'model', get: (t) => t.model },
      { title: 'role', get: (t) => t.role },
      { title: 'provider', get: (t) => t.provider },
      { title: 'type', get: (t) => (provs.get(t.provider) || {}).type || '' },
      { title: 'target model', get: (t) => t.target_model },
      { title: 'weight', num: true, get: (t) => t.weight },
      { title: 'breaker', get: (t) => badge(t.breaker, t.breaker) },
      { title: 'in flight', num: true, get: (t) => fmtInt(t.outstanding) },
      { title: 'requests', num: true, get: (t) => fmtInt(t.requests) },
      { title: 'errors', num: true, get: (t) => fmtInt(t.errors) },
      { title: 'error rate', num: true, get: (t) => fmtPct(t.error_rate || 0) },
    ], targets, 'no model targets configured');
  }

  function renderPlugins(body) {
    const list = listOf(body, 'plugins');
    table($('plugins'), [
      {
        title: 'name',
        get: (p) => {
          const e = el('span', p.plugin && p.plugin !== p.name ? p.name + ' (' + p.plugin + ')' : p.name);
          e.title = first(p, 'path', 'file') ?? ''; // the library, on hover
          return e;
        },
      },
      { title: 'version', get: (p) => first(p, 'version') ?? '' },
      {
        title: 'ABI',
        get: (p) => {
          const a = first(p, 'abi', 'abi_version');
          if (a && typeof a === 'object') return (a.major ?? '') + '.' + (a.minor ?? '');
          return a ?? ((p.abi_major !== undefined) ? p.abi_major + '.' + (p.abi_minor ?? 0) : '');
        },
      },
      { title: 'routes', get: (p) => (Array.isArray(p.routes) ? p.routes.join(' ') : '') },
    ], list, 'no plugins loaded');
  }

  // An entry's budget lines: [{what, used, limit}] from each member that
  // is an object with a numeric limit (/admin/budgets gives daily_usd,
  // monthly_usd, total_tokens as {limit, spent, reserved, remaining}); a
  // key record may nest them under "budget".
  function budgetLines(k) {
    const b = first(k, 'budget', 'budgets');
    const src = b && typeof b === 'object' && !Array.isArray(b) ? b : k;
    const out = [];
    for (const [what, v] of Object.entries(src)) {
      if (v && typeof v === 'object' && typeof first(v, 'limit', 'max') === 'number') {
        const used = Number(first(v, 'spent', 'used', 'current') ?? 0) + Number(v.reserved || 0);
        out.push({ what, used, limit: first(v, 'limit', 'max'), money: /usd|cost/.test(what) });
      }
    }
    return out;
  }

  function renderBudgets(body) {
    const rows = [];
    for (const k of listOf(body, 'budgets', 'keys')) {
      for (const l of budgetLines(k)) rows.push({ key: first(k, 'consumer', 'name', 'id'), ...l });
    }
    const amount = (r, v) => (r.money ? fmtUsd(v) : fmtInt(v));
    table($('budgets'), [
      { title: 'key', get: (r) => r.key },
      { title: 'budget', get: (r) => r.what },
      { title: 'used', num: true, get: (r) => amount(r, r.used) },
      { title: 'limit', num: true, get: (r) => amount(r, r.limit) },
      {
        title: 'share',
        get: (r) => {
          const bar = el('span', null, 'bar');
          const fill = el('span');
          const f = r.limit > 0 ? r.used / r.limit : 0;
          fill.style.width = Math.min(100, f * 100).toFixed(1) + '%';
          if (f >= 1) bar.classList.add('over');
          bar.append(fill);
          bar.title = fmtPct(f);
          return bar;
        },
      },
    ], rows, 'no key has a budget');
  }

  function renderConsumers(rows) {
    const top = rows.map((r) => ({
      consumer: rowConsumer(r),
      requests: Number(r.requests || 0),
      tokens: rowTokens(r),
      cost: rowCost(r),
      errors: Number(r.errors || 0),
    })).sort((a, b) => b.cost - a.cost || b.tokens - a.tokens).slice(0, 10);
    table($('consumers'), [
      { title: 'key', get: (a) => a.consumer },
      { title: 'requests', num: true, get: (a) => fmtInt(a.requests) },
      { title: 'tokens', num: true, get: (a) => fmtInt(a.tokens) },
      { title: 'cost', num: true, get: (a) => fmtUsd(a.cost) },
      { title: 'errors', num: true, get: (a) => fmtInt(a.errors) },
    ], top, 'no usage in the last 24 hours');
  }

  const SERIES = 6; // models or keys drawn in the usage chart

  // The usage ledger answers one grouping per call (hour, day, consumer or
  // model): the top keys, the models, then one hourly series for each of
  // the first few of whichever the chart is grouped by.
  async function refreshUsage() {
    const from = Math.floor(Date.now() / 3600000) * 3600 - 23 * 3600;
    const q = (params) => call('/admin/usage?from=' + from + '&' + params);
    const group = $('usage-group').value; // model | consumer
    const byKey = listOf(await q('group_by=consumer'), 'rows', 'usage');
    renderConsumers(byKey);
    const names = group === 'consumer'
      ? byKey.map(rowConsumer)
      : listOf(await q('group_by=model'), 'rows', 'usage').map((r) => String(r.model ?? ''));
    const picked = names.filter((n) => n !== '' && n !== '(none)').slice(0, SERIES);
    const series = await Promise.all(picked.map((n) =>
      q('group_by=hour&' + group + '=' + encodeURIComponent(n))
        .then((b) => [n, listOf(b, 'rows', 'usage')])));
    usageSeries = series;
    drawUsage();
  }

  function drawUsage() {
    const c = charts['chart-usage'];
    if (usageSeries === null) return;
    const measure = $('usage-measure').value;
    const value = measure === 'cost' ? rowCost : measure === 'tokens' ? rowTokens
      : (r) => Number(r.requests || 0);
    const hours = [...new Set(usageSeries.flatMap(([, rows]) => rows.map(rowHour)))].sort();
    c.data.labels = hours;
    c.data.datasets = usageSeries.map(([name, rows]) => {
      const at = new Map();
      for (const r of rows) at.set(rowHour(r), (at.get(rowHour(r)) || 0) + value(r));
      return {
        label: name,
        data: hours.map((h) => at.get(h) || 0),
        backgroundColor: colorFor(name),
        maxBarThickness: 48,
      };
    });
    c.update('none');
    const note = $('usage-note');
    note.hidden = hours.length !== 0;
    note.textContent = 'The usage ledger has nothing for the last 24 hours.';
  }

  function usageUnavailable(r) {
    usageSeries = null;
    $('usage-chart-box').hidden = true;
    const note = $('usage-note');
    note.hidden = false;
    note.textContent = r.status === 404
      ? 'The usage ledger (/admin/usage) is not available on this gateway (404).'
      : 'Usage ledger: ' + r.message;
    unavailable($('consumers'), r, 'The usage ledger (/admin/usage)');
  }

  async function refresh() {
    const t = Date.now();
    const [metrics, providers, logs4, logs5, plugins, budgets, keys, usage] = await Promise.all([
      settle(call('/metrics', 'text')),
      settle(call('/admin/providers')),
      settle(call('/admin/logs?status=4xx&limit=20')),
      settle(call('/admin/logs?status=5xx&limit=20')),
      settle(call('/admin/plugins')),
      settle(call('/admin/budgets')),
      settle(call('/admin/keys')),
      // The ledger is hourly: every USAGE_EVERY refreshes is enough.
      refreshes++ % USAGE_EVERY === 0 || usageSeries === null
        ? settle(refreshUsage()) : Promise.resolve({ ok: true }),
    ]);
    const all = [metrics, providers, logs4, logs5, plugins, budgets, keys, usage];
    if (all.some((r) => !r.ok && r.status === 401)) {
      logout('The gateway refused the admin token (401): log in again.');
      return;
    }
    let samples = null;
    if (metrics.ok) {
      samples = parseMetrics(metrics.value);
      renderMetrics(samples, t);
      prev = { t, samples };
    }
    if (providers.ok) renderProviders(providers.value);
    else unavailable($('providers'), providers, 'Provider state (/admin/providers)');
    if (plugins.ok) renderPlugins(plugins.value);
    else unavailable($('plugins'), plugins, 'The plugin list (/admin/plugins)');
    if (budgets.ok) renderBudgets(budgets.value);
    else if (keys.ok) renderBudgets(keys.value);
    else unavailable($('budgets'), budgets, 'Budgets (/admin/budgets)');
    if (logs4.ok && logs5.ok) renderLogs([logs4.value, logs5.value]);
    else if (samples) renderErrorsFromMetrics(samples);
    else unavailable($('errors'), logs4.ok ? logs5 : logs4, 'The request log (/admin/logs)');
    if (usage.ok) $('usage-chart-box').hidden = false;
    else usageUnavailable(usage);
    const failed = all.filter((r) => !r.ok && r.status !== 404);
    $('status').textContent = 'updated ' + clock(new Date(t)) +
      (failed.length ? ' - ' + failed.map((r) => r.message).join('; ') : '');
  }

  async function loop() {
    try {
      await refresh();
    } catch (e) {
      $('status').textContent = 'refresh failed: ' + e.message;
    }
    if (sessionStorage.getItem(TOKEN_KEY)) timer = setTimeout(loop, REFRESH_MS);
  }

  /* ---- login ------------------------------------------------------------ */

  function showLogin(message) {
    $('dashboard').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    const err = $('login-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('token').focus();
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    timer = null;
    prev = null;
    $('status').textContent = '';
    showLogin(message);
  }

  function start() {
    $('login').hidden = true;
    $('dashboard').hidden = false;
    $('logout').hidden = false;
    for (const id of Object.keys(charts)) {
      const c = charts[id];
      c.data.labels = [];
      c.data.datasets = [];
      c.update('none');
    }
    loop();
  }

  // Checks a token with one cheap call before it is kept.
  async function login(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await call('/admin/providers');
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(e.status === 401
        ? 'Wrong admin token: the gateway answered 401.'
        : 'Cannot reach the admin API: ' + e.message);
      return;
    }
    start();
  }

  lineChart('chart-rps', 'per second');
  lineChart('chart-latency', 'ms');
  lineChart('chart-tokens', 'tokens/s');
  lineChart('chart-cost', 'USD/min');
  barChart('chart-usage');

  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    $('token').value = '';
    login(token);
  });
  $('logout').addEventListener('click', () => logout());
  $('usage-measure').addEventListener('change', drawUsage);
  $('usage-group').addEventListener('change', () => {
    settle(refreshUsage()).then((r) => { if (!r.ok) usageUnavailable(r); });
  });

  // For tests and the curious: the charts and the parsers.
  window.sluiceDashboard = { charts, parseMetrics, quantile, buckets };

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved);
  else showLogin();
}());
