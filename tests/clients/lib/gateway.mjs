// Starts the real gateway binary and the mock upstream on free loopback
// ports for one test file, and stops both at the end. It lives outside
// test/ because node --test runs every .mjs file under a test/ folder.
//
// The runner says which build to test through the environment:
//   SLUICE_BIN       path to core/sluice
//   SLUICE_MOCK_BIN  path to tests/mock/sluice-mock
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const START_TIMEOUT_MS = 15000;

function requiredEnv(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(
      `${name} is not set: point it at the build's binary ` +
        '(tests/run-all.sh does this for each build)',
    );
  }
  return v;
}

// Resolves with the first match of re in the child's stream (stdout or
// stderr); rejects if the child exits first or the wait times out. The
// whole output is kept in out.text for error messages.
function waitForLine(child, stream, re, out, what) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (err, m) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(m);
    };
    const onData = () => {
      const m = re.exec(out.text);
      if (m) finish(null, m);
    };
    const onExit = (code, signal) =>
      finish(
        new Error(
          `${what} exited (code ${code}, signal ${signal}) before ` +
            `printing ${re}:\n${out.text}`,
        ),
      );
    const timer = setTimeout(
      () => finish(new Error(`${what}: no ${re} in ${START_TIMEOUT_MS} ms:\n${out.text}`)),
      START_TIMEOUT_MS,
    );
    stream.on('data', onData);
    child.on('exit', onExit);
    onData();
  });
}

function collect(stream, out) {
  stream.setEncoding('utf8');
  stream.on('data', (s) => {
    out.text += s;
  });
}

async function waitHealthy(baseURL) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${baseURL}/healthz`);
      const body = await res.json();
      if (res.status === 200 && body.status === 'ok') return;
      last = new Error(`/healthz answered ${res.status}`);
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gateway never became healthy: ${last}`);
}

// SIGTERM, then wait for the exit; SIGKILL after a grace period so a hung
// process cannot hang the test run. Resolves with {code, signal}.
function stopChild(child, graceMs = 10000) {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
    child.kill('SIGTERM');
  });
}

// Starts the mock upstream and a gateway in front of it. The config has:
//   "gpt-test" -> the mock upstream (an openai-type provider)
//   "echo"     -> the built-in mock provider
//   "claude-test" -> the mock upstream's Anthropic Messages API
// Returns {baseURL, mockURL, stop()}; stop() resolves with the gateway's
// exit {code, signal} and its stderr so a test can assert a clean exit.
export async function startGateway() {
  const sluiceBin = requiredEnv('SLUICE_BIN');
  const mockBin = requiredEnv('SLUICE_MOCK_BIN');
  const dir = mkdtempSync(join(tmpdir(), 'sluice-node-'));
  const procs = [];
  const stopAll = async () => {
    const results = [];
    for (const p of procs.reverse()) results.push(await stopChild(p));
    rmSync(dir, { recursive: true, force: true });
    return results;
  };

  try {
    const mockOut = { text: '' };
    const mock = spawn(mockBin, ['--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    procs.push(mock);
    collect(mock.stdout, mockOut);
    collect(mock.stderr, mockOut);
    const [, mockPort] = await waitForLine(
      mock, mock.stdout, /READY (\d+)/, mockOut, 'sluice-mock');
    const mockURL = `http://127.0.0.1:${mockPort}`;

    const config = {
      listen: [{ addr: '127.0.0.1:0' }],
      workers: 1,
      data_dir: join(dir, 'data'),
      providers: {
        upstream: {
          type: 'openai',
          base_url: `${mockURL}/v1`,
          api_key_env: 'SLUICE_TEST_MOCK_KEY',
        },
        mock: { type: 'mock' },
        claude: {
          type: 'anthropic',
          base_url: mockURL,
          api_key_env: 'SLUICE_TEST_MOCK_KEY',
        },
      },
      models: {
        'gpt-test': { targets: [{ provider: 'upstream', model: 'mock-model' }] },
        echo: { targets: [{ provider: 'mock', model: 'echo' }] },
        'claude-test': {
          targets: [{ provider: 'claude', model: 'claude-mock-1' }],
        },
      },
      access_log: join(dir, 'access.log'),
    };
    const configPath = join(dir, 'sluice.json');
    writeFileSync(configPath, JSON.stringify(config, null, 2));

    const gwOut = { text: '' };
    const gw = spawn(sluiceBin, ['-c', configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SLUICE_TEST_MOCK_KEY: 'sk-node-test' },
    });
    procs.push(gw);
    collect(gw.stdout, gwOut);
    collect(gw.stderr, gwOut);
    const [, port] = await waitForLine(
      gw, gw.stderr, /listening on 127\.0\.0\.1:(\d+)/, gwOut, 'sluice');
    const baseURL = `http://127.0.0.1:${port}`;
    await waitHealthy(baseURL);

    return {
      baseURL,
      mockURL,
      output: () => gwOut.text,
      async stop() {
        const [gwExit] = await stopAll();
        return { ...gwExit, stderr: gwOut.text };
      },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

// Everything the mock upstream received, oldest first (GET /mock/requests).
export async function mockRequests(mockURL) {
  const res = await fetch(`${mockURL}/mock/requests`);
  return res.json();
}

// Counters of the mock upstream (GET /mock/stats).
export async function mockStats(mockURL) {
  const res = await fetch(`${mockURL}/mock/stats`);
  return res.json();
}

// Sanitizer reports in the gateway's stderr fail the file that ran it.
const SANITIZER_MARKS = /ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:/;

// Stops the gateway and asserts it drained and exited 0 with no sanitizer
// report: a crash or a leak at shutdown is a failure of the tests that ran.
export async function stopAndCheck(gw) {
  const exit = await gw.stop();
  assert.ok(!SANITIZER_MARKS.test(exit.stderr), `sanitizer report:\n${exit.stderr}`);
  assert.equal(exit.code, 0, `gateway exit after SIGTERM:\n${exit.stderr}`);
}
