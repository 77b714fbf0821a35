// Streamed chat completions through the gateway, via the openai SDK.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import OpenAI from 'openai';

import { mockStats, startGateway, stopAndCheck } from '../lib/gateway.mjs';

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

const PROMPT = 'stream these seven words back to me';

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

function text(chunks) {
  return chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
}

for (const model of ['gpt-test', 'echo']) {
  test(`stream (${model}) with include_usage ends with a usage chunk`, async () => {
    const { data: stream, response } = await client.chat.completions
      .create({
        model,
        messages: [
          { role: 'system', content: 'Echo.' },
          { role: 'user', content: PROMPT },
        ],
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    const chunks = await collect(stream);

    assert.equal(text(chunks), PROMPT);
    // Word by word: one content delta per word.
    const deltas = chunks.filter((c) => c.choices[0]?.delta?.content);
    assert.equal(deltas.length, 7);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assert.deepEqual(
      {
        prompt: last.usage.prompt_tokens,
        completion: last.usage.completion_tokens,
        total: last.usage.total_tokens,
      },
      { prompt: 8, completion: 7, total: 15 },
    );
    // Only the last chunk carries usage.
    for (const c of chunks.slice(0, -1)) assert.ok(!c.usage, JSON.stringify(c));
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finish.length, 1);
    assert.equal(finish[0].choices[0].finish_reason, 'stop');
  });

  test(`stream (${model}) without include_usage has no usage chunk`, async () => {
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: PROMPT }],
      stream: true,
    });
    const chunks = await collect(stream);
    assert.equal(text(chunks), PROMPT);
    for (const c of chunks) {
      assert.ok(!c.usage, `unexpected usage in ${JSON.stringify(c)}`);
      assert.equal(c.choices.length, 1, JSON.stringify(c));
    }
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  });
}

test('a stream the upstream cuts mid-way makes the iterator throw', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-test',
    messages: [{ role: 'user', content: '[mock:close_after=3] alpha beta gamma delta epsilon' }],
    stream: true,
  });
  const got = [];
  await assert.rejects(
    async () => {
      for await (const chunk of stream) got.push(chunk);
    },
    (err) => {
      // The gateway ends a cut stream with an error event, which the SDK
      // raises as an APIError carrying the gateway's code.
      assert.ok(err instanceof OpenAI.APIError, `${err?.constructor?.name}: ${err}`);
      assert.equal(err.code, 'upstream_stream_cut');
      return true;
    },
  );
  // The three events the upstream sent (role, "alpha ", "beta ") came first.
  assert.equal(text(got), 'alpha beta ');
});

test('breaking out of a stream cancels the upstream stream', async () => {
  const before = await mockStats(gw.mockURL);
  const stream = await client.chat.completions.create({
    model: 'gpt-test',
    messages: [{ role: 'user', content: '[mock:gap_ms=100] [mock:words=200]' }],
    stream: true,
  });
  let n = 0;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content && ++n === 2) break;
  }
  // The SDK aborts the request on break; the gateway must cancel upstream.
  const deadline = Date.now() + 5000;
  let now;
  do {
    await new Promise((r) => setTimeout(r, 50));
    now = await mockStats(gw.mockURL);
  } while (now.streams_aborted <= before.streams_aborted && Date.now() < deadline);
  assert.equal(now.streams_aborted, before.streams_aborted + 1);
});

test('a stream request the upstream refuses throws RateLimitError before any chunk', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'gpt-test',
      messages: [{ role: 'user', content: '[mock:status=429] slow down' }],
      stream: true,
    }),
    OpenAI.RateLimitError,
  );
});
