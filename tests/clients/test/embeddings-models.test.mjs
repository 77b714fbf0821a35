// Embeddings and the model list through the gateway, via the openai SDK.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { startGateway, stopAndCheck } from '../lib/gateway.mjs';

let gw;
let client;

before(async () => {
  gw = await startGateway();
  client = new OpenAI({
    apiKey: 'sk-client',
    baseURL: `${gw.baseURL}/v1`,
    maxRetries: 0,
    timeout: 20000,
  });
});

after(() => stopAndCheck(gw));

function assertVector8(v) {
  assert.equal(v.length, 8);
  for (const x of v) assert.ok(Number.isFinite(x), `not a number: ${x}`);
  assert.ok(v.some((x) => x !== 0), 'all zeros');
}

for (const model of ['gpt-test', 'echo']) {
  test(`embeddings (${model}, float) give one 8-dim vector per input`, async () => {
    const res = await client.embeddings.create({
      model,
      input: ['first text', 'second text', 'first text'],
      encoding_format: 'float',
    });
    assert.equal(res.object, 'list');
    assert.equal(res.data.length, 3);
    res.data.forEach((d, i) => {
      assert.equal(d.index, i);
      assertVector8(d.embedding);
    });
    // Deterministic: the same text gives the same vector, another text not.
    assert.deepEqual(res.data[0].embedding, res.data[2].embedding);
    assert.notDeepEqual(res.data[0].embedding, res.data[1].embedding);
    assert.ok(res.usage.prompt_tokens > 0);
  });

  // The SDK asks for base64 unless told otherwise and decodes the answer
  // itself, so this is what a default client call sees.
  test(`embeddings (${model}) with the SDK's default encoding decode to 8 dims`, async () => {
    const res = await client.embeddings.create({ model, input: 'default encoding' });
    assert.equal(res.data.length, 1);
    assertVector8(res.data[0].embedding);
  });
}

test('models.list returns the configured aliases', async () => {
  const ids = [];
  for await (const m of client.models.list()) {
    assert.equal(m.object, 'model');
    ids.push(m.id);
  }
  assert.deepEqual(ids.slice().sort(), ['claude-test', 'echo', 'gpt-test']);
});
