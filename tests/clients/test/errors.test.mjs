// Gateway and upstream errors reach the openai SDK as its typed errors.
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

function chat(content, model = 'gpt-test') {
  return client.chat.completions.create({
    model,
    messages: [{ role: 'user', content }],
  });
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

test('an unknown model is NotFoundError 404 model_not_found', async () => {
  await rejectsWith(chat('hi', 'no-such-model'), OpenAI.NotFoundError, {
    status: 404,
    code: 'model_not_found',
    type: 'invalid_request_error',
  });
});

test('empty messages are BadRequestError 400 invalid_messages', async () => {
  await rejectsWith(
    client.chat.completions.create({ model: 'gpt-test', messages: [] }),
    OpenAI.BadRequestError,
    { status: 400, code: 'invalid_messages' },
  );
});

test('a message without a role is BadRequestError 400', async () => {
  await rejectsWith(
    client.chat.completions.create({ model: 'gpt-test', messages: [{ content: 'x' }] }),
    OpenAI.BadRequestError,
    { status: 400, code: 'invalid_messages' },
  );
});

test('embeddings without input are BadRequestError 400 invalid_input', async () => {
  await rejectsWith(
    client.embeddings.create({ model: 'gpt-test', encoding_format: 'float' }),
    OpenAI.BadRequestError,
    { status: 400, code: 'invalid_input' },
  );
});

test('an upstream 429 is RateLimitError with the upstream body and Retry-After', async () => {
  await assert.rejects(chat('[mock:status=429] [mock:retry_after=7] hi'), (err) => {
    assert.ok(err instanceof OpenAI.RateLimitError, `${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 429);
    // The upstream's OpenAI-shaped error is forwarded as-is.
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.match(err.message, /mock error: status 429/);
    assert.equal(err.headers.get('retry-after'), '7');
    return true;
  });
});

test('an upstream 500 is InternalServerError 502 upstream_error', async () => {
  await rejectsWith(chat('[mock:status=500] hi'), OpenAI.InternalServerError, {
    status: 502,
    code: 'upstream_error',
  });
});

test('an upstream 200 that is not JSON is 502 upstream_bad_response', async () => {
  await rejectsWith(chat('[mock:garbage] hi'), OpenAI.InternalServerError, {
    status: 502,
    code: 'upstream_bad_response',
  });
});

test('an upstream 422 passes through as UnprocessableEntityError', async () => {
  await rejectsWith(chat('[mock:status=422] hi'), OpenAI.UnprocessableEntityError, {
    status: 422,
  });
});

test('the gateway keeps serving after errors', async () => {
  const res = await chat('still alive');
  assert.equal(res.choices[0].message.content, 'still alive');
});
