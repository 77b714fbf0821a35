// Starts the mock upstream and the real gateway with its admin listener on
// (a token set), both on free loopback ports, for the dashboard test.
//
//   SLUICE_BIN       path to core/sluice
//   SLUICE_MOCK_BIN  path to tests/mock/sluice-mock
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const START_TIMEOUT_MS = 15000;
export const ADMIN_TOKEN = 'e2e-admin-token-5f1c';

function requiredEnv(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`${name} is not set: point it at the build's binary ` +
      '(tests/run-all.sh does this for the release build)');
  }
  return v;
}

// Resolves with the first match of re in everything the child printed.
function waitFor(child, out, re, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(
      `${what}: no ${re} in ${START_TIMEOUT_MS} ms:\n${out.text}`)), START_TIMEOUT_MS);
    const check = () => {
      const m = re.exec(out.text);
      if (m) done(null, m);
    };
    const exited = (code, sig) => done(new Error(
      `${what} exited (${code ?? sig}) before printing ${re}:\n${out.text}`));
    function done(err, m) {
      clearTimeout(timer);
      child.stdout.off('data', check);
      child.stderr.off('data', check);
      child.off('exit', exited);
      if (err) reject(err);
      else resolve(m);
    }
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.on('exit', exited);
    check();
  });
}

function start(bin, args, env) {
  const out = { text: '' };
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  for (const s of [child.stdout, child.stderr]) {
    s.setEncoding('utf8');
    s.on('data', (d) => { out.text += d; });
  }
  return { child, out };
}

function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
    child.kill('SIGTERM');
  });
}

// Models: "gpt-test" -> the mock upstream (openai type), "echo" -> the
// built-in mock provider. The chat route runs the bundled guardrails
// plugin (from the build's plugins/), which blocks "project bluebird".
// Both models are priced, and the anonymous consumer has a budget.
// Returns {baseURL, adminURL, output(), stop()}.
export async function startGateway() {
  const pluginDir = join(dirname(dirname(requiredEnv('SLUICE_BIN'))), 'plugins');
  if (!existsSync(join(pluginDir, 'guardrails.so'))) {
    throw new Error(`no ${pluginDir}/guardrails.so: build the gateway with make first`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'sluice-e2e-'));
  const procs = [];
  const cleanup = async () => {
    const res = [];
    for (const p of procs.reverse()) res.push(await stop(p));
    rmSync(dir, { recursive: true, force: true });
    return res;
  };
  try {
    const mock = start(requiredEnv('SLUICE_MOCK_BIN'), ['--port', '0'], process.env);
    procs.push(mock.child);
    const [, mockPort] = await waitFor(mock.child, mock.out, /READY (\d+)/, 'sluice-mock');

    const config = {
      listen: [{ addr: '127.0.0.1:0' }],
      workers: 2,
      admin: { addr: '127.0.0.1:0', token_env: 'SLUICE_E2E_ADMIN_TOKEN' },
      data_dir: join(dir, 'data'),
      providers: {
        upstream: { type: 'openai', base_url: `http://127.0.0.1:${mockPort}/v1` },
        mock: { type: 'mock' },
      },
      models: {
        'gpt-test': { targets: [{ provider: 'upstream', model: 'mock-model' }] },
        echo: { targets: [{ provider: 'mock', model: 'echo' }] },
      },
      // Dollars per million tokens: dear, so that a few requests cost cents.
      pricing: {
        'mock-model': { input: 1000, output: 3000 },
        echo: { input: 500, output: 500 },
      },
      budgets: { anonymous: { daily_usd: 1000, total_tokens: 10000000 } },
      plugin_dir: pluginDir,
      plugins: {
        guard: {
          path: 'guardrails.so',
          config: { deny: { 'no-codenames': { pattern: '(?i)project\\s+bluebird' } } },
        },
      },
      routes: [
        { path: '/v1/chat/completions', plugins: ['guard'] },
        { path: '/healthz' },
      ],
      access_log: 'off',
    };
    const cfgPath = join(dir, 'sluice.json');
    writeFileSync(cfgPath, JSON.stringify(config, null, 2));
    const gw = start(requiredEnv('SLUICE_BIN'), ['-c', cfgPath],
      { ...process.env, SLUICE_E2E_ADMIN_TOKEN: ADMIN_TOKEN });
    procs.push(gw.child);
    const [, adminPort] = await waitFor(gw.child, gw.out,
      /admin API on 127\.0\.0\.1:(\d+)/, 'sluice');
    const [, port] = await waitFor(gw.child, gw.out,
      /listening on 127\.0\.0\.1:(\d+)/, 'sluice');
    await waitFor(gw.child, gw.out, /worker\(s\) serving/, 'sluice');
    return {
      baseURL: `http://127.0.0.1:${port}`,
      adminURL: `http://127.0.0.1:${adminPort}`,
      output: () => gw.out.text,
      async stop() {
        const [gwExit] = await cleanup();
        return { ...gwExit, stderr: gw.out.text };
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

// One chat completion through the gateway; resolves with the status.
export async function chat(baseURL, model, text) {
  const res = await fetch(`${baseURL}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: text }] }),
  });
  await res.arrayBuffer();
  return res.status;
}
