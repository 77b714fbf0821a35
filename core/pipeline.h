/* Runs a route's plugin hooks around a model call: on_request in route
 * order, on_response / on_chunk / on_log in reverse. The state a request's
 * plugins share lives here, in the request arena; the host functions of
 * plugin_host.c read and change it.
 *
 * on_log runs from an arena cleanup (so whatever way a request ends, it
 * runs once): the request must hold its config snapshot, and with it the
 * plugin instances, until its arena has been reset. */
#ifndef SL_PIPELINE_H
#define SL_PIPELINE_H

#include "json_scan.h"
#include "plugin.h"
#include "request.h"

#include <cjson/cJSON.h>
#include <event2/buffer.h>

struct sl_call;

typedef enum {
    SL_PIPE_REQUEST = 0, /* on_request hooks running */
    SL_PIPE_UPSTREAM,    /* passed: the model call and its stream */
    SL_PIPE_RESPONSE,    /* on_response ran (or was skipped) */
    SL_PIPE_DONE,        /* answered by the pipeline itself, or ended */
} sl_pipe_stage_t;

#define SL_PIPE_MAX_HEADERS 16
#define SL_PIPE_HEADER_BYTES 1024
#define SL_PIPE_MAX_LOG_FIELDS 8
#define SL_PIPE_LOG_BYTES 1024
#define SL_PIPE_MAX_ATTRS 32

typedef struct sl_pipe {
    sl_request_t *r;
    struct sl_call *k;
    const sl_plugin_chain_t *chain;
    void **state; /* per chain position: state_set */
    sl_pipe_stage_t stage;

    /* respond(), respond_stream() */
    int answer_status;
    int answer_stream; /* answer is a text/event-stream body */
    int answer_replay; /* answer stands for the upstream's (a cache hit) */
    size_t upto;       /* way-out hooks run for positions below this */
    char *answer;
    size_t answer_len;

    /* on_response: the answer on its way out */
    int resp_status;
    const char *resp_body;
    size_t resp_len;
    cJSON *resp_json; /* parsed on first use */
    int resp_parsed, resp_dirty;

    /* on_chunk: the event on its way out */
    const char *chunk;
    size_t chunk_len;
    cJSON *chunk_json;
    int chunk_parsed, chunk_dirty;
    char *chunk_out;   /* the rewritten event (malloc, one at a time) */
    int stream_failed; /* a hook failed closed: drop the rest */

    int msgs_dirty; /* a message was rewritten: re-encode the body */

    /* The request body read in place by the host (no tree), once: 0 not
     * yet, 1 read, -1 the scanner refused it (the tree answers). */
    int scan_state;
    const char *scan_body;       /* the body read; another one is read again */
    sl_jval_t scan_mct, scan_mt; /* max_completion_tokens, max_tokens */
    sl_jval_t scan_msgs;         /* the messages member */
    sl_jscan_t scan_cur;         /* in messages, on element scan_at */
    size_t scan_n, scan_at;

    /* response_header_set: the lines "name: value\r\n" in one arena
     * buffer of SL_PIPE_HEADER_BYTES + 1 (r->plugin_headers), made on
     * first use and appended to; hname[i] points at line i. */
    char *hlines;
    size_t hlen;
    const char *hname[SL_PIPE_MAX_HEADERS];
    unsigned short hname_len[SL_PIPE_MAX_HEADERS];
    unsigned short hline_len[SL_PIPE_MAX_HEADERS];
    size_t nheaders;

    /* log_field_set: arena strings, the value already JSON-escaped */
    const char *lname[SL_PIPE_MAX_LOG_FIELDS];
    const char *lvalue[SL_PIPE_MAX_LOG_FIELDS];
    size_t nlog;

    /* attr_set / attr_get: arena strings */
    const char *aname[SL_PIPE_MAX_ATTRS];
    const char *avalue[SL_PIPE_MAX_ATTRS];
    size_t nattrs;
    const char *client_addr; /* client_addr(), found on first use */

    /* The hook that stopped the request or its stream, for the request
     * log: a RESPOND, or an ERROR that failed closed; NULL when none. */
    const char *verdict_plugin;
    const char *verdict;       /* "respond" or "error" */
    sluice_phase_t verdict_phase;
} sl_pipe_t;

/* "on_request", "on_response", "on_chunk", "on_log" for a hook phase. */
const char *sl_pipeline_phase_name(sluice_phase_t phase);

/* The request phase. Returns 0 when the request goes on to the upstream,
 * 1 when it has been answered (a RESPOND, or a hook that failed closed). A
 * route without plugins costs one look-up. */
int sl_pipeline_request(sl_request_t *r, struct sl_call *k);

/* The response phase, for a non-stream answer about to be sent (conn.c):
 * may replace status, content type and body (arena memory). */
void sl_pipeline_response(sl_request_t *r, int *status,
                          const char **content_type, const char **body,
                          size_t *len);
/* The same for an answer held in an evbuffer: when on_response hooks
 * must see it, sends it through sl_response_send and returns 1; else 0
 * and the caller sends it as it is. */
int sl_pipeline_response_buffer(sl_request_t *r, int status,
                                const char *content_type, const char *extra,
                                struct evbuffer *body);

/* The chunk phase, for one stream event's data (not [DONE], which passes):
 * may replace *data and *len (valid until the next call). Returns 1 when the
 * event must be dropped (a hook failed closed earlier in the stream). */
int sl_pipeline_chunk(sl_request_t *r, const char **data, size_t *len);

#endif
