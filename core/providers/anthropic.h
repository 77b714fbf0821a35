/* The Anthropic Messages API spoken to OpenAI chat clients: pure
 * translations (no I/O, no request state) so each can be tested on its own.
 * The adapter that carries a call over the network is sl_anthropic_start
 * (provider.h). */
#ifndef SL_ANTHROPIC_H
#define SL_ANTHROPIC_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* OpenAI chat request -> Messages request for `model`; default_max_tokens
 * when the client set neither max_tokens nor max_completion_tokens.
 * Returns 0 and *out (the caller deletes it), SL_EINVAL with a message for
 * the client in err (the request cannot be said to Anthropic: a 400), or
 * SL_ENOMEM. */
int sl_anthropic_request(const cJSON *chat, const char *model,
                         long default_max_tokens, cJSON **out, char *err,
                         size_t errcap);

/* Messages response -> chat.completion stamped `created`. Returns 0 and
 * *out (the caller deletes it), SL_EINVAL when msg is not a message, or
 * SL_ENOMEM. */
int sl_anthropic_response(const cJSON *msg, long created, cJSON **out);

/* How an Anthropic error reaches the client (one table in anthropic.c). */
typedef struct {
    int status;       /* HTTP status for the client */
    const char *code; /* OpenAI error code, static */
    int client_fault; /* the client's own mistake: Anthropic's message is
                         passed on as it is, without the provider's name */
} sl_anthropic_error_map_t;

/* The row for an Anthropic error type (may be NULL), else for the status
 * it came with. */
sl_anthropic_error_map_t sl_anthropic_error_map(const char *type,
                                                int upstream_status);

/* OpenAI error JSON ({"error":{message,type,code}}) for an Anthropic error
 * of `type` (may be NULL) with `message` (may be NULL) that came with
 * upstream_status (0 for an error event in a stream) from the provider
 * named `provider`. Fills *status and *code (static) for the answer.
 * NULL on out of memory. */
cJSON *sl_anthropic_error_json(const char *type, const char *message,
                               int upstream_status, const char *provider,
                               int *status, const char **code);

/* The same for an error answer's body as received: any bytes, Anthropic's
 * {"type":"error","error":{"type","message"}} or not. */
cJSON *sl_anthropic_error_body(int upstream_status, const char *body,
                               size_t len, const char *provider, int *status,
                               const char **code);

/* Streams: Anthropic SSE events in, chat.completion.chunk objects out. */
typedef struct sl_anthropic_stream sl_anthropic_stream_t;

/* Called once per chunk: `chunk` is the object, `json` it printed; both
 * valid during the call. The usage chunk (choices: []) is emitted at
 * message_stop whether or not the client asked for it. Return 0, or a
 * negative SL_E* that stops the stream (sl_anthropic_stream_event returns
 * it). */
typedef int (*sl_anthropic_chunk_fn)(void *ud, const cJSON *chunk,
                                     const char *json, size_t len);

/* `model` names the chunks until message_start gives the provider's own;
 * `created` stamps every chunk. NULL on out of memory. */
sl_anthropic_stream_t *sl_anthropic_stream_new(const char *model, long created,
                                               sl_anthropic_chunk_fn cb,
                                               void *ud);
void sl_anthropic_stream_free(sl_anthropic_stream_t *s);

/* Feeds one event: its name (may be NULL: the data's "type" is used) and
 * data. Returns 0 to go on, 1 once message_stop is handled (the stream is
 * complete: the caller writes data: [DONE]), SL_EUPSTREAM for an error
 * event, SL_EINVAL for an event that is not JSON or not the shape its type
 * promises, SL_ENOMEM, or the callback's error. After an error, later
 * events are refused with the same code; once complete, they are ignored. */
int sl_anthropic_stream_event(sl_anthropic_stream_t *s, const char *event,
                              size_t event_len, const char *data, size_t len);

/* 1 once message_stop was handled. A stream that ends without it was cut. */
int sl_anthropic_stream_done(const sl_anthropic_stream_t *s);

/* After SL_EUPSTREAM or SL_EINVAL: what went wrong (never NULL then); *type
 * is the Anthropic error type for an error event, NULL for a malformed
 * event. NULL when there was no error. */
const char *sl_anthropic_stream_error(const sl_anthropic_stream_t *s,
                                      const char **type);

#endif
