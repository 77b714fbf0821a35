// The openai SDK served by an anthropic-type provider: the gateway
// translates requests to the Messages API and answers, streams and tool
// calls back, so an OpenAI application moves to Claude by config alone.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { mockRequests, startGateway, stopAndCheck } from '../lib/gateway.mjs';

let gw;
let client;

const tools = [
  {
    type: 'function',
    function: {
      name: 'lookup',
      description: 'Looks a thing up',
      parameters: {
        type: 'object',
        properties: { text: { type: 'string' } },
        required: ['text'],
      },
    },
  },
];

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

test('chat through an anthropic provider comes back OpenAI-shaped', async () => {
  const res = await client.chat.completions.create({
    model: 'claude-test',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hello claude' },
    ],
  });
  assert.equal(res.object, 'chat.completion');
  assert.equal(res.choices[0].message.content, 'hello claude');
  assert.equal(res.choices[0].finish_reason, 'stop');
  assert.ok(res.usage.prompt_tokens > 0);
  assert.equal(res.usage.completion_tokens, 2);
  const sent = (await mockRequests(gw.mockURL)).at(-1);
  assert.equal(sent.path, '/v1/messages');
  const body = JSON.parse(sent.body);
  assert.equal(body.model, 'claude-mock-1');
  assert.equal(body.system, 'Be brief.');
  assert.equal(sent.headers['x-api-key'], 'sk-node-test');
  assert.ok(sent.headers['anthropic-version']);
});

test('a stream through an anthropic provider has deltas, a finish and usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'claude-test',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'one two three four' }],
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, 'one two three four');
  assert.equal(finish, 'stop');
  assert.ok(usage, 'the usage chunk arrives when asked for');
  assert.equal(usage.completion_tokens, 4);
});

test('tool calls come back as OpenAI tool_calls', async () => {
  const res = await client.chat.completions.create({
    model: 'claude-test',
    tools,
    messages: [{ role: 'user', content: 'find it [mock:tool=lookup]' }],
  });
  const msg = res.choices[0].message;
  assert.equal(res.choices[0].finish_reason, 'tool_calls');
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].type, 'function');
  assert.equal(msg.tool_calls[0].function.name, 'lookup');
  assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), {
    text: 'find it',
  });
  const sent = JSON.parse((await mockRequests(gw.mockURL)).at(-1).body);
  assert.equal(sent.tools[0].name, 'lookup');
  assert.deepEqual(sent.tools[0].input_schema, tools[0].function.parameters);
});

test('streamed tool calls arrive as indexed argument fragments', async () => {
  const stream = await client.chat.completions.create({
    model: 'claude-test',
    stream: true,
    tools,
    messages: [{ role: 'user', content: 'stream it [mock:tool=lookup]' }],
  });
  const calls = {};
  let fragments = 0;
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      finish = c.finish_reason ?? finish;
      for (const tc of c.delta.tool_calls ?? []) {
        const call = (calls[tc.index] ??= { name: '', args: '', id: null });
        if (tc.id) call.id = tc.id;
        if (tc.function?.name) call.name += tc.function.name;
        if (tc.function?.arguments) {
          call.args += tc.function.arguments;
          fragments++;
        }
      }
    }
  }
  assert.equal(finish, 'tool_calls');
  assert.deepEqual(Object.keys(calls), ['0']);
  assert.equal(calls[0].name, 'lookup');
  assert.ok(calls[0].id);
  assert.ok(fragments >= 3, `arguments came in ${fragments} fragment(s)`);
  assert.deepEqual(JSON.parse(calls[0].args), { text: 'stream it' });
});

test('an Anthropic 429 surfaces as RateLimitError', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'claude-test',
      messages: [{ role: 'user', content: 'x [mock:status=429]' }],
    }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429,
  );
});
