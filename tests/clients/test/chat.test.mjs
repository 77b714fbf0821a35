// Chat completions through the gateway, driven by the official openai SDK.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { mockRequests, startGateway, stopAndCheck } from '../lib/gateway.mjs';

let gw;
let client;

before(async () => {
  gw = await startGateway();
  client = new OpenAI({
    apiKey: 'sk-client-key-not-for-upstream',
    baseURL: `${gw.baseURL}/v1`,
    maxRetries: 0,
    timeout: 20000,
  });
});

after(() => stopAndCheck(gw));

test('chat completion through an openai provider echoes the prompt with usage', async () => {
  const prompt = 'Hello from the node SDK test';
  const { data, response } = await client.chat.completions
    .create({
      model: 'gpt-test',
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: prompt },
      ],
    })
    .withResponse();

  assert.equal(response.status, 200);
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.choices.length, 1);
  assert.equal(data.choices[0].message.role, 'assistant');
  assert.equal(data.choices[0].message.content, prompt);
  assert.equal(data.choices[0].finish_reason, 'stop');
  // The mock counts words: 3 system + 6 user in, 6 out.
  assert.deepEqual(
    {
      prompt: data.usage.prompt_tokens,
      completion: data.usage.completion_tokens,
      total: data.usage.total_tokens,
    },
    { prompt: 9, completion: 6, total: 15 },
  );
  assert.equal(response.headers.get('x-sluice-provider'), 'upstream');
  assert.equal(response.headers.get('x-sluice-model'), 'mock-model');
  const overhead = response.headers.get('x-sluice-overhead-ms');
  assert.ok(overhead !== null && Number.isFinite(Number(overhead)),
    `x-sluice-overhead-ms: ${overhead}`);
});

test('the upstream sees the target model and the provider key, not the client key', async () => {
  const marker = 'upstream-sees-this-marker';
  await client.chat.completions.create({
    model: 'gpt-test',
    messages: [{ role: 'user', content: marker }],
  });
  const seen = (await mockRequests(gw.mockURL)).filter(
    (r) => r.path === '/v1/chat/completions' && r.body.includes(marker),
  );
  assert.equal(seen.length, 1);
  assert.equal(JSON.parse(seen[0].body).model, 'mock-model');
  assert.equal(seen[0].headers.authorization, 'Bearer sk-node-test');
});

test('chat completion through the built-in mock provider echoes the prompt', async () => {
  const { data, response } = await client.chat.completions
    .create({
      model: 'echo',
      messages: [{ role: 'user', content: 'built in echo works' }],
    })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'built in echo works');
  assert.equal(data.usage.prompt_tokens, 4);
  assert.equal(data.usage.completion_tokens, 4);
  assert.equal(response.headers.get('x-sluice-provider'), 'mock');
  assert.equal(response.headers.get('x-sluice-model'), 'echo');
});

test('a provider/model name routes directly to that provider', async () => {
  const { data, response } = await client.chat.completions
    .create({
      model: 'upstream/some-direct-model',
      messages: [{ role: 'user', content: 'direct route' }],
    })
    .withResponse();
  assert.equal(data.choices[0].message.content, 'direct route');
  assert.equal(response.headers.get('x-sluice-provider'), 'upstream');
  assert.equal(response.headers.get('x-sluice-model'), 'some-direct-model');
});
