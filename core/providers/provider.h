/* A model call in flight and the adapters that carry it to a provider.
 * The proxy decodes the client's body once into `json`; an adapter encodes
 * it for its provider and turns the answer back into OpenAI's shape. */
#ifndef SL_PROVIDER_H
#define SL_PROVIDER_H

#include "../balancer.h"
#include "../chat_scan.h"
#include "../request.h"
#include "../sse.h"
#include "../upstream.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>

typedef enum { SL_CALL_CHAT = 1, SL_CALL_EMBEDDINGS } sl_call_kind_t;

typedef struct sl_call {
    sl_request_t *r;
    sl_call_kind_t kind;
    const sl_target_t *target; /* the one being tried */
    sl_target_t direct; /* storage when the client named provider/model */
    const sl_model_t *model; /* NULL for a direct provider/model */
    const sl_target_t *chain[SL_CHAIN_MAX]; /* the order targets are tried */
    size_t nchain, ichain;
    int attempts;        /* upstream calls started, retries included */
    int tries_on_target; /* of the current target */
    int slot;            /* holds a balancer slot on target */
    int probe;           /* ...as the breaker's half-open probe */
    uint64_t deadline;   /* monotonic us by which attempts must start; 0 */
    struct event *retry_timer;
    struct evbuffer *held; /* the stream preamble, until the commit point */
    /* The client's body, decoded once, or NULL until something asks for it
     * (sl_call_json): a pass-through call reads what it needs in place. */
    cJSON *json;
    sl_chat_facts_t facts; /* what call_new read of the body */
    const char *scanned;   /* the body the facts point into; NULL if none */
    int stream;         /* the client asked for a stream */
    int client_usage;   /* ...with stream_options.include_usage */

    sl_upcall_t *up;
    struct evbuffer *body; /* non-stream answer (or an error body) */
    sl_sse_t sse;
    int sse_ready;   /* sse is initialised (freed with the arena) */
    int sse_on;      /* this attempt's answer is an event stream */
    size_t stream_bytes; /* of this attempt's stream so far */
    int done_seen;   /* the upstream sent data: [DONE] */
    int forwarded;   /* events sent to the client */
    int want_pause;  /* the client's buffer is over its high-water mark */
    struct event *timer; /* the mock's pacing */
    int mock_step;
    void *mock;
} sl_call_t;

/* Adapters: start one attempt on k->target. */
void sl_openai_start(sl_call_t *k);
void sl_anthropic_start(sl_call_t *k);
void sl_gemini_start(sl_call_t *k);
void sl_mock_start(sl_call_t *k);

/* Resilience (proxy.c). Adapters call sl_call_retry before answering an
 * upstream failure that happened before anything reached the client:
 * `result` is the upcall result (0 when an HTTP status came back),
 * `status` that status, `retry_after` the upstream's Retry-After or NULL.
 * Returns 1 when another attempt has been scheduled (the adapter must then
 * return without answering and without touching the request again), 0 when
 * the adapter should answer with this failure. */
int sl_call_retry(sl_call_t *k, int result, int status,
                  const char *retry_after);
/* The URL this attempt posts to; NULL when a direct model name cannot
 * stand in a URL. */
const char *sl_call_url(sl_call_t *k);
/* Gives the target's slot back; success feeds its breaker. Idempotent. */
void sl_call_release(sl_call_t *k, int success);
/* Orders the targets of r->model into the chain again (a script changed
 * the model); answers 404 and returns -1 when it is not served here. */
int sl_call_reroute(sl_call_t *k);
/* Starts the first attempt of a call whose request phase waited (a
 * script's on_request). */
void sl_call_attempt(sl_call_t *k);

/* Shared by adapters (proxy.c). */
/* The client's body as a cJSON tree, decoded on first use; NULL (and the
 * client answered 503) when out of memory. Adapters that do not send the
 * client's bytes through, plugins and scripts need it. */
cJSON *sl_call_json(sl_call_t *k);
/* The same without answering: NULL when out of memory. For host calls made
 * from inside a plugin hook or a script, which must not answer. */
cJSON *sl_call_tree(sl_call_t *k);
/* Reads an OpenAI `usage` object into the request's counters. */
void sl_call_take_usage(sl_call_t *k, const cJSON *usage);
/* Reads the usage of an OpenAI answer or stream event (text) into the
 * request's counters; *choices_empty (may be NULL) tells a usage-only
 * event. 0, or -1 when text is not a JSON object. */
int sl_call_take_answer(sl_call_t *k, const char *text, size_t len,
                        int *choices_empty);
/* The headers every successful model answer carries. */
const char *sl_call_success_headers(sl_call_t *k);
/* Forwards one OpenAI-shaped SSE data payload to the client, starting the
 * stream head on the first one. Returns non-zero when the caller should
 * pause (client buffer full). */
int sl_call_forward(sl_call_t *k, const char *data, size_t len);
/* Ends a committed stream that the upstream failed (result, why as
 * on_done got them; `ended` says what was missing when the upstream just
 * stopped): the breaker hears of it and the client gets an error event. */
void sl_call_stream_cut(sl_call_t *k, int result, const char *why,
                        const char *ended);
/* Answers (or retries) an upstream call that failed before any HTTP answer
 * (result != 0): 504 on a timeout, 502 otherwise. Returns 0 when result is
 * 0 and the caller goes on, 1 when the request was dealt with. */
int sl_call_transport_failed(sl_call_t *k, int result, const char *why);
/* Ends a started stream with an error event and no [DONE]. */
void sl_call_stream_fail(sl_call_t *k, const char *message, const char *code);
/* The text of the last user message (string content or text parts);
 * NULL when none. Arena memory. */
const char *sl_call_last_user_text(sl_call_t *k);

#endif
