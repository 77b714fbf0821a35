/* One HTTP request from parse to log, and the calls that answer it. */
#ifndef SL_REQUEST_H
#define SL_REQUEST_H

#include "arena.h"
#include "config.h"
#include "http_parse.h"

#include <event2/buffer.h>
#include <stdint.h>

struct sl_conn;
struct sl_worker;
struct sl_snapshot;
struct sl_pipe;

typedef struct sl_request sl_request_t;

/* A front door that speaks another wire format to its clients (Anthropic
 * Messages): the proxy and the providers keep answering in OpenAI's shape,
 * and the response functions hand each answer to the front instead of the
 * client. A front writes its own answer through the same functions: for a
 * whole answer r->front is already NULL; around stream events it clears
 * and restores r->front itself. */
typedef struct sl_front {
    /* A whole answer (a chat completion, or an error of any status); it
     * must end the request like sl_response_send. */
    void (*respond)(sl_request_t *r, int status, const char *content_type,
                    const char *extra_headers, const char *body, size_t len);
    /* One stream event; returns like sl_response_stream_event. */
    int (*stream_event)(sl_request_t *r, const char *event, size_t event_len,
                        const char *data, size_t len);
} sl_front_t;

struct sl_request {
    struct sl_conn *conn;
    struct sl_worker *w;
    struct sl_snapshot *snap; /* held until the request ends */
    const sl_config_t *cfg;   /* snap->cfg */
    sl_arena_t *arena;
    sl_http_request_t http;
    char *body;
    size_t body_len;
    const sl_route_t *route;

    uint64_t t_start;       /* head complete, monotonic us */
    uint64_t t_upstream;    /* upstream call started */
    uint64_t upstream_us;   /* time spent waiting on the upstream */
    uint64_t t_first_byte;  /* first response byte to the client */

    int status;     /* what the client got */
    int responded;  /* a head has been written */
    int streaming;  /* the head was a chunked SSE head */
    int stream_ok;  /* the stream ended cleanly */
    int client_gone;
    const char *model;        /* as the client sent it */
    const char *provider;     /* the provider that served */
    const char *target_model; /* the provider's model name */
    long prompt_tokens, completion_tokens, total_tokens; /* -1 unknown */
    /* Parts of prompt_tokens read from a provider's cache and of
     * completion_tokens spent reasoning, as the provider reported them
     * (prompt/completion_tokens_details); -1 unknown. */
    long cached_tokens, reasoning_tokens;
    int64_t cost_micros; /* set in the log phase; -1 when not priced */
    struct sl_budget_hold *budget; /* a budget reservation; NULL if none */
    size_t bytes_in, bytes_out;
    int attempts; /* upstream attempts, retries and fallbacks included */
    const char *error_code;

    /* The work in flight (an upstream call, a mock timer): cancel stops it
     * without callbacks when the client goes away; resume is called when a
     * paused stream's client has read enough. */
    void *op;
    void (*cancel)(sl_request_t *r);
    void (*resume)(sl_request_t *r);
    int paused;

    /* Plugins (pipeline.c): the route's instances and their per-request
     * state; NULL when the route runs no plugins. */
    struct sl_pipe *pipe;
    const char *consumer; /* set by an auth plugin; NULL when none */
    /* "Name: value\r\n" lines plugins add to the answer; NULL when none. */
    const char *plugin_headers;
    /* ",\"key\":\"value\"" JSON members plugins add to the access log
     * line (log_field_set); NULL when none. */
    const char *plugin_log;

    /* The front door when not OpenAI's (frontends/); NULL otherwise. */
    const sl_front_t *front;
    void *front_state;

    /* W3C trace context (requestlog.c): lowercase hex, "" when none. */
    char trace_id[33];
    char span_id[17];   /* this request's span: the upstream's parent */
    char parent_id[17]; /* the client's span, from its traceparent */
    unsigned char trace_flags;
    /* request_log.capture_bodies: what the provider got and the answer,
     * arena copies cut to max_body_bytes; NULL when not captured. */
    const char *log_up_body;
    size_t log_up_body_len;
    const char *log_answer;
    size_t log_answer_len;
    struct evbuffer *log_stream_text; /* a stream's deltas */

    /* The route's Lua script (lua/): its per-request state; NULL when the
     * route runs none. */
    struct sl_lua_req *lua;
    /* ctx.vars as a JSON object, for the log phase; NULL when empty. */
    const char *vars;
};

/* The GET /v1/models body for a config; malloc'd, built once at start. */
char *sl_models_json_build(const sl_config_t *cfg);

/* Routes a request whose head and body are complete. */
void sl_request_handle(sl_request_t *r);
/* The end of a request (conn.c): usage, budget and ledger, access log,
 * metrics, request log. For requests without a connection (subcall.c);
 * a connection's requests are logged by the connection. */
void sl_request_log(sl_request_t *r);

/* Responses (implemented by the connection). Each ends the request except
 * stream_start/stream_event; extra_headers are whole "Name: value\r\n"
 * lines or NULL. */
void sl_response_send(sl_request_t *r, int status, const char *content_type,
                      const char *extra_headers, const char *body,
                      size_t len);
/* Moves the body out of `body` (no copy). */
void sl_response_send_buffer(sl_request_t *r, int status,
                             const char *content_type,
                             const char *extra_headers,
                             struct evbuffer *body);
/* An OpenAI-shaped error; the type comes from the status. */
void sl_response_error(sl_request_t *r, int status, const char *message,
                       const char *code);
void sl_response_error_with(sl_request_t *r, int status, const char *message,
                            const char *code, const char *extra_headers);
void sl_response_stream_start(sl_request_t *r, int status,
                              const char *extra_headers);
/* Queues one SSE event: "event: E\n" when event is not NULL, then
 * "data: D\n\n"; sl_response_flush sends it. Returns non-zero when the client's buffer is over the high-water mark:
 * the caller should pause its source until r->resume is called. */
int sl_response_stream_event(sl_request_t *r, const char *event,
                             size_t event_len, const char *data, size_t len);
/* Writes what the stream has queued: one syscall for all the events one
 * upstream read produced. Returns non-zero like stream_event. */
int sl_response_flush(sl_request_t *r);
/* Ends the stream. When !clean, the caller has written an error event and
 * the connection is closed after the last byte. */
void sl_response_stream_end(sl_request_t *r, int clean);
/* A chunked answer of any content type (admin exports): the head, then
 * chunks (returns non-zero like stream_event when the caller should wait
 * for r->resume), then sl_response_stream_end. */
void sl_response_chunked_start(sl_request_t *r, int status,
                               const char *content_type,
                               const char *extra_headers);
int sl_response_chunk(sl_request_t *r, const char *data, size_t len);

/* Milliseconds the gateway itself has spent on r so far (total minus
 * upstream), for x-sluice-overhead-ms. */
double sl_request_overhead_ms(const sl_request_t *r);

#endif
