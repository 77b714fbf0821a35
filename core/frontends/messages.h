/* POST /v1/messages: the Anthropic Messages wire format as a front door, so
 * Anthropic clients reach any provider. The request is said in OpenAI's
 * shape and goes down the normal proxy path; what comes back is said in
 * Anthropic's shape again. The translations are pure (no I/O, no request
 * state) so each can be tested on its own: messages_request.c for the
 * request, messages_response.c for answers, errors and streams;
 * messages.c is the glue. The opposite direction (OpenAI clients,
 * Anthropic providers) lives in providers/anthropic.c. */
#ifndef SL_MESSAGES_H
#define SL_MESSAGES_H

#include "../request.h"

#include <cjson/cJSON.h>
#include <stddef.h>

/* Answers a request on a "messages" route. */
void sl_messages_handle(sl_request_t *r);

/* Messages request -> OpenAI chat request. Returns 0 and *out (the caller
 * deletes it), SL_EINVAL with a message for the client in err (a 400
 * invalid_request_error), or SL_ENOMEM. */
int sl_messages_request(const cJSON *msg, cJSON **out, char *err,
                        size_t errcap);

/* chat.completion -> Messages response naming `model` (the client's
 * model string). Returns 0 and *out (the caller deletes it), SL_EINVAL when
 * chat is not a chat completion, or SL_ENOMEM. */
int sl_messages_response(const cJSON *chat, const char *model, cJSON **out);

/* Anthropic's error type for an HTTP status (static). */
const char *sl_messages_error_type(int status);

/* {"type":"error","error":{"type","message"}} for an error answered with
 * `status`: body is what the gateway or the provider said (OpenAI-shaped
 * {"error":{"message",...}} or any bytes; NULL when none). NULL on out of
 * memory. */
cJSON *sl_messages_error_body(int status, const char *body, size_t len);

/* Streams: chat.completion.chunk payloads in, Anthropic events out. */
typedef struct sl_messages_stream sl_messages_stream_t;

/* Called once per event: its name ("message_start", ...) and data JSON,
 * valid during the call. A non-zero return is or'd into what
 * sl_messages_stream_feed returns (the client's buffer is full). */
typedef int (*sl_messages_event_fn)(void *ud, const char *event,
                                    const char *json, size_t len);

/* `model` (the client's model string) names the message. NULL on out of
 * memory. */
sl_messages_stream_t *sl_messages_stream_new(const char *model,
                                             sl_messages_event_fn cb, void *ud);
void sl_messages_stream_free(sl_messages_stream_t *s);

/* Feeds one SSE data payload: a chunk, "[DONE]", or an error object
 * ({"error":{...}}, which becomes an `error` event and ends the stream).
 * message_delta goes out once the finish reason is known and the usage
 * chunk or [DONE] has come; message_stop at [DONE]. Payloads after the end
 * and chunks that are not JSON are ignored. Returns the callbacks' or'd
 * results. */
int sl_messages_stream_feed(sl_messages_stream_t *s, const char *data,
                            size_t len);

/* 1 once message_stop or an error event was emitted. */
int sl_messages_stream_done(const sl_messages_stream_t *s);

#endif
