// The official Anthropic SDK against the gateway's /v1/messages front door:
// the same providers the openai tests reach, spoken to in Anthropic's
// format (answers, streams, tools, typed errors).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

import { mockRequests, startGateway, stopAndCheck } from '../lib/gateway.mjs';

let gw;
let client;

before(async () => {
  gw = await startGateway();
  client = new Anthropic({
    apiKey: 'sk-ant-client',
    baseURL: gw.baseURL,
    maxRetries: 0,
    timeout: 20000,
  });
});

after(() => stopAndCheck(gw));

const TOOLS = [
  {
    name: 'get_weather',
    description: 'The weather in a city',
    input_schema: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    },
  },
];

function ask(text, extra = {}) {
  return {
    model: 'gpt-test',
    max_tokens: 100,
    messages: [{ role: 'user', content: text }],
    ...extra,
  };
}

// assert.rejects with a check that names what was thrown when it fails.
async function rejectsWith(promise, Class, fields) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof Class,
      `want ${Class.name}, got ${err?.constructor?.name}: ${err}`);
    for (const [k, v] of Object.entries(fields)) {
      assert.equal(err[k], v, `${k} of ${err}`);
    }
    return true;
  });
}

for (const model of ['gpt-test', 'echo']) {
  test(`messages.create (${model}) answers a Message with usage`, async () => {
    const { data: msg, response } = await client.messages
      .create({
        model,
        max_tokens: 100,
        system: 'Echo.',
        messages: [{ role: 'user', content: 'say these five words back' }],
      })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(msg.model, model);
    assert.match(msg.id, /^msg_/);
    assert.deepEqual(msg.content, [{ type: 'text', text: 'say these five words back' }]);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.stop_sequence, null);
    // Both providers count words: "Echo." + the five words.
    assert.equal(msg.usage.input_tokens, 6);
    assert.equal(msg.usage.output_tokens, 5);
  });

  test(`messages.stream (${model}) streams text and ends with usage`, async () => {
    const prompt = 'stream these seven words back to me';
    const stream = client.messages.stream({
      model,
      max_tokens: 100,
      messages: [{ role: 'user', content: prompt }],
    });
    const pieces = [];
    stream.on('text', (t) => pieces.push(t));
    const events = [];
    stream.on('streamEvent', (e) => events.push(e.type));
    const final = await stream.finalMessage();

    assert.equal(pieces.join(''), prompt);
    assert.ok(pieces.length >= 7, `${pieces.length} text events`);
    assert.equal(events[0], 'message_start');
    assert.equal(events.at(-1), 'message_stop');
    assert.deepEqual(final.content, [{ type: 'text', text: prompt }]);
    assert.equal(final.stop_reason, 'end_turn');
    assert.equal(final.model, model);
    assert.equal(final.usage.output_tokens, 7);
    assert.equal(final.usage.input_tokens, 7);
  });
}

test('messages.create with stream: true yields the raw events in order', async () => {
  const stream = await client.messages.create(ask('raw events please', { stream: true }));
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.deepEqual(types.slice(0, 2), ['message_start', 'content_block_start']);
  assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
  assert.ok(types.slice(2, -3).every((t) => t === 'content_block_delta'), types.join());
});

test('tools: the upstream tool call is a tool_use block', async () => {
  const msg = await client.messages.create(
    ask('[mock:tool=get_weather] Paris', {
      tools: TOOLS,
      tool_choice: { type: 'any' },
    }),
  );
  assert.equal(msg.stop_reason, 'tool_use');
  assert.equal(msg.content.length, 1);
  const [block] = msg.content;
  assert.equal(block.type, 'tool_use');
  assert.equal(block.name, 'get_weather');
  assert.deepEqual(block.input, { text: 'Paris' });

  // The upstream saw an OpenAI request with function tools.
  const sent = JSON.parse((await mockRequests(gw.mockURL)).at(-1).body);
  assert.equal(sent.tools[0].type, 'function');
  assert.equal(sent.tools[0].function.name, 'get_weather');
  assert.deepEqual(sent.tools[0].function.parameters, TOOLS[0].input_schema);
  assert.equal(sent.tool_choice, 'required');
});

test('tools: a streamed tool call arrives as input_json deltas the SDK parses', async () => {
  const stream = client.messages.stream(
    ask('[mock:tool=get_weather] somewhere with a rather long name', { tools: TOOLS }),
  );
  const partials = [];
  stream.on('inputJson', (partial) => partials.push(partial));
  const final = await stream.finalMessage();
  assert.ok(partials.length >= 3, `${partials.length} input_json deltas`);
  assert.equal(final.stop_reason, 'tool_use');
  const [block] = final.content;
  assert.equal(block.type, 'tool_use');
  assert.equal(block.name, 'get_weather');
  assert.deepEqual(block.input, { text: 'somewhere with a rather long name' });
});

test('tools: a tool_result goes back up and the conversation goes on', async () => {
  const first = await client.messages.create(
    ask('[mock:tool=get_weather] Rome', { tools: TOOLS }),
  );
  const use = first.content.find((b) => b.type === 'tool_use');
  assert.ok(use, JSON.stringify(first.content));
  const second = await client.messages.create({
    model: 'gpt-test',
    max_tokens: 100,
    tools: TOOLS,
    messages: [
      { role: 'user', content: '[mock:tool=get_weather] Rome' },
      { role: 'assistant', content: first.content },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: use.id, content: '21C and sunny' },
          { type: 'text', text: 'so what should I wear' },
        ],
      },
    ],
  });
  assert.equal(second.stop_reason, 'end_turn');
  assert.deepEqual(second.content, [{ type: 'text', text: 'so what should I wear' }]);
  const sent = JSON.parse((await mockRequests(gw.mockURL)).at(-1).body);
  assert.deepEqual(sent.messages.at(-2), {
    role: 'tool',
    tool_call_id: use.id,
    content: '21C and sunny',
  });
  assert.equal(sent.messages[1].tool_calls[0].id, use.id);
});

test('an unknown model is NotFoundError', async () => {
  await rejectsWith(client.messages.create(ask('hi', { model: 'no-such-model' })),
    Anthropic.NotFoundError, { status: 404, type: 'not_found_error' });
});

test('an upstream 429 is RateLimitError', async () => {
  await rejectsWith(client.messages.create(ask('[mock:status=429] hi')),
    Anthropic.RateLimitError, { status: 429, type: 'rate_limit_error' });
});

test('an upstream 429 on a stream request is RateLimitError too', async () => {
  const stream = client.messages.stream(ask('[mock:status=429] hi'));
  await rejectsWith(stream.finalMessage(), Anthropic.RateLimitError, { status: 429 });
});

test('a request without max_tokens is BadRequestError', async () => {
  const body = ask('hi');
  delete body.max_tokens;
  await rejectsWith(client.messages.create(body), Anthropic.BadRequestError, {
    status: 400,
    type: 'invalid_request_error',
  });
});

test('an upstream 500 is InternalServerError (502 api_error)', async () => {
  await rejectsWith(client.messages.create(ask('[mock:status=500] hi')),
    Anthropic.InternalServerError, { status: 502, type: 'api_error' });
});

test('a stream cut upstream ends in an APIError from the error event', async () => {
  const stream = client.messages.stream(ask('[mock:words=10] [mock:close_after=3]'));
  const pieces = [];
  stream.on('text', (t) => pieces.push(t));
  await assert.rejects(stream.finalMessage(), (err) => {
    assert.ok(err instanceof Anthropic.APIError, `${err?.constructor?.name}: ${err}`);
    assert.equal(err.type, 'api_error');
    return true;
  });
  assert.equal(pieces.join(''), 'w1 w2 ');
});
