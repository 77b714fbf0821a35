// The openai SDK over TLS: a gateway with a TLS listener and a test CA made
// here with the openssl command; the SDK runs in a child process that
// trusts the CA through NODE_EXTRA_CA_CERTS (read at node start-up).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
let dir;
let gw;
let port;

function openssl(...args) {
  execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-tls-'));
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '2', '-subj', '/CN=Test CA', '-keyout', 'ca.key', '-out', 'ca.pem');
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-subj', '/CN=localhost', '-keyout', 'srv.key', '-out', 'srv.csr');
  writeFileSync(join(dir, 'srv.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', 'srv.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', '7', '-days', '2', '-extfile', 'srv.ext', '-out', 'srv.pem');
  const config = {
    listen: [{ addr: '127.0.0.1:0', tls: { cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') } }],
    workers: 1,
    data_dir: join(dir, 'data'),
    providers: { mock: { type: 'mock' } },
    models: { echo: { targets: [{ provider: 'mock', model: 'echo' }] } },
    access_log: 'off',
  };
  writeFileSync(join(dir, 'sluice.json'), JSON.stringify(config));
  gw = spawn(process.env.SLUICE_BIN, ['-c', join(dir, 'sluice.json')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  gw.stderr.setEncoding('utf8');
  port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listen line:\n${err}`)), 15000);
    gw.stderr.on('data', (s) => {
      err += s;
      const m = /listening \(TLS\) on 127\.0\.0\.1:(\d+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    gw.on('exit', (code) => reject(new Error(`sluice exited ${code}:\n${err}`)));
  });
});

after(async () => {
  if (gw && gw.exitCode === null) {
    const exited = new Promise((r) => gw.once('exit', (code) => r(code)));
    gw.kill('SIGTERM');
    assert.equal(await exited, 0);
  }
  rmSync(dir, { recursive: true, force: true });
});

const script = `
import OpenAI from 'openai';
const client = new OpenAI({ apiKey: 'x', baseURL: process.argv[1], maxRetries: 0 });
const res = await client.chat.completions.create({
  model: 'echo', messages: [{ role: 'user', content: 'hello over tls' }] });
let text = '';
for await (const c of await client.chat.completions.create({
  model: 'echo', stream: true, messages: [{ role: 'user', content: 'a b c' }] }))
  text += c.choices[0]?.delta?.content ?? '';
console.log(JSON.stringify({ content: res.choices[0].message.content, text }));
`;

function runClient(env) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath,
      ['--input-type=module', '-e', script, `https://127.0.0.1:${port}/v1`],
      { cwd: join(here, '..'), env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

test('the openai SDK talks to the gateway over TLS with a verified certificate', async () => {
  const r = await runClient({ NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out), { content: 'hello over tls', text: 'a b c' });
});

test('without the CA the SDK refuses the certificate', async () => {
  const r = await runClient({ NODE_EXTRA_CA_CERTS: '' });
  assert.notEqual(r.code, 0);
});
