/* Google's Gemini generateContent API spoken to OpenAI chat clients: pure
 * translations (no I/O, no request state) so each can be tested on its own.
 * The adapter that carries a call over the network is sl_gemini_start
 * (provider.h). */
#ifndef SL_GEMINI_H
#define SL_GEMINI_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* OpenAI chat request -> generateContent request (the model is in the URL,
 * so it is not in the body). Returns 0 and *out (the caller deletes it),
 * SL_EINVAL with a message for the client in err (the request cannot be
 * said to Gemini: a 400), or SL_ENOMEM. */
int sl_gemini_request(const cJSON *chat, cJSON **out, char *err, size_t errcap);

/* generateContent response -> chat.completion. `model` and `id` stand in
 * when the response has no modelVersion / responseId; `created` stamps it.
 * Returns 0 and *out (the caller deletes it), SL_EINVAL when resp is not a
 * GenerateContentResponse, or SL_ENOMEM. */
int sl_gemini_response(const cJSON *resp, const char *model, const char *id,
                       long created, cJSON **out);

/* usageMetadata -> OpenAI usage (promptTokenCount already includes cached
 * tokens; completion counts thoughts). NULL when meta is not an object or
 * on out of memory. */
cJSON *sl_gemini_usage(const cJSON *meta);

/* A Gemini finishReason (may be NULL) -> OpenAI finish_reason, static.
 * `tool_calls`: the answer called functions. */
const char *sl_gemini_finish_reason(const char *reason, int tool_calls);

/* OpenAI error JSON ({"error":{message,type,code}}) for a Gemini error
 * ({"error":{"code","message","status"}}) that came with upstream_status
 * (0 for an error event inside a stream: then `code` of the error says).
 * `gstatus` is Gemini's status name (RESOURCE_EXHAUSTED...), may be NULL;
 * `message` may be NULL. Fills *status and *code (static) for the answer:
 * 4xx kept (401/403 -> 502: the gateway's key, not the client's fault),
 * 5xx -> 502. NULL on out of memory. */
cJSON *sl_gemini_error_json(int upstream_status, const char *gstatus,
                            const char *message, const char *provider,
                            int *status, const char **code);

/* The same for an error answer's body as received: any bytes. */
cJSON *sl_gemini_error_body(int upstream_status, const char *body, size_t len,
                            const char *provider, int *status,
                            const char **code);

/* Streams (alt=sse): each event's data is a GenerateContentResponse; out
 * come chat.completion.chunk objects. */
typedef struct sl_gemini_stream sl_gemini_stream_t;

/* Called once per chunk: `chunk` is the object, `json` it printed; both
 * valid during the call. Return 0, or a negative SL_E* that stops the
 * stream (the feeding call returns it). */
typedef int (*sl_gemini_chunk_fn)(void *ud, const cJSON *chunk,
                                  const char *json, size_t len);

/* `model` and `id` name the chunks unless the first event brings
 * modelVersion / responseId; `created` stamps every chunk. NULL on out of
 * memory. */
sl_gemini_stream_t *sl_gemini_stream_new(const char *model, const char *id,
                                         long created, sl_gemini_chunk_fn cb,
                                         void *ud);
void sl_gemini_stream_free(sl_gemini_stream_t *s);

/* Feeds one event's data. Emits the role chunk first, then a content
 * delta per text part, a tool_calls delta per functionCall part, and the
 * finish chunk when a finishReason (or a blocked prompt) appears. Returns
 * 0, SL_EUPSTREAM for an error event, SL_EINVAL for data that is not a
 * GenerateContentResponse, SL_ENOMEM, or the callback's error; after an
 * error later events are refused with the same code. */
int sl_gemini_stream_event(sl_gemini_stream_t *s, const char *data, size_t len);

/* The upstream closed the stream. When a finish was seen, emits the usage
 * chunk (choices: [], from the last usageMetadata; none when there was
 * none) and returns 1: the caller writes data: [DONE]. Returns 0 when the
 * stream was cut before its finish (nothing is emitted), or the error a
 * previous event failed with. */
int sl_gemini_stream_end(sl_gemini_stream_t *s);

/* 1 once a finish was seen. */
int sl_gemini_stream_finished(const sl_gemini_stream_t *s);

/* After SL_EUPSTREAM or SL_EINVAL: what went wrong (never NULL then);
 * *upstream_status is the error event's code (0 for a malformed event) and
 * *gstatus its status name or NULL. NULL when there was no error. */
const char *sl_gemini_stream_error(const sl_gemini_stream_t *s,
                                   int *upstream_status, const char **gstatus);

#endif
