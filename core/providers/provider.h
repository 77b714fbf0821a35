/* A model call in flight and the adapters that carry it to a provider.
 * The proxy decodes the client's body once into `json`; an adapter encodes
 * it for its provider and turns the answer back into OpenAI's shape. */
#ifndef SL_PROVIDER_H
#define SL_PROVIDER_H

#include "../request.h"
#include "../sse.h"
#include "../upstream.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>

typedef enum { SL_CALL_CHAT = 1, SL_CALL_EMBEDDINGS } sl_call_kind_t;

typedef struct sl_call {
    sl_request_t *r;
    sl_call_kind_t kind;
    const sl_target_t *target;
    sl_target_t direct; /* storage when the client named provider/model */
    cJSON *json;        /* the client's body, decoded once */
    int stream;         /* the client asked for a stream */
    int client_usage;   /* ...with stream_options.include_usage */

    sl_upcall_t *up;
    struct evbuffer *body; /* non-stream answer (or an error body) */
    sl_sse_t sse;
    int sse_ready;
    int done_seen;   /* the upstream sent data: [DONE] */
    int forwarded;   /* events sent to the client */
    int want_pause;  /* the client's buffer is over its high-water mark */
    struct event *timer; /* the mock's pacing */
    int mock_step;
    void *mock;
} sl_call_t;

/* Adapters. */
void sl_openai_start(sl_call_t *k);
void sl_mock_start(sl_call_t *k);

/* Shared by adapters (proxy.c). */
/* Reads an OpenAI `usage` object into the request's counters. */
void sl_call_take_usage(sl_call_t *k, const cJSON *usage);
/* The headers every successful model answer carries. */
const char *sl_call_success_headers(sl_call_t *k);
/* Forwards one OpenAI-shaped SSE data payload to the client, starting the
 * stream head on the first one. Returns non-zero when the caller should
 * pause (client buffer full). */
int sl_call_forward(sl_call_t *k, const char *data, size_t len);
/* Ends a started stream with an error event and no [DONE]. */
void sl_call_stream_fail(sl_call_t *k, const char *message, const char *code);
/* The text of the last user message (string content or text parts);
 * NULL when none. Arena memory. */
const char *sl_call_last_user_text(sl_call_t *k);

#endif
