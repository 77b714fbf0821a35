/* Upstream HTTP calls: one libcurl multi handle per worker, driven by the
 * worker's event_base, so no call ever blocks the worker. */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include <curl/curl.h>
#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_upstream sl_upstream_t;
typedef struct sl_upcall sl_upcall_t;

typedef struct {
    const char *url;
    const struct curl_slist *headers; /* borrowed; must outlive the call */
    const char *body;                 /* borrowed until on_done */
    size_t body_len;
    long connect_timeout_ms;
    long first_byte_timeout_ms; /* until the first body byte */
    long timeout_ms;            /* the whole transfer */
    /* "GET", "PUT", "DELETE", "HEAD"...; NULL (or "POST") is a POST, as
     * every provider call is. body is sent with any method but GET and
     * HEAD. */
    const char *method;
    /* Optional: gets each response head line as received, CRLF removed,
     * with the call's ud -- a status line ("HTTP/1.1 200 OK") starts a
     * head (1xx heads may come before the last one), then "Name: value"
     * lines. */
    void (*on_header)(void *ud, const char *line, size_t len);
} sl_upcall_params_t;

typedef struct {
    /* Response body bytes as they arrive; `status` is the final HTTP status.
     * Return 0 to go on, non-zero to abort (then on_done gets SL_EINVAL). */
    int (*on_data)(void *ud, int status, const char *data, size_t len);
    /* Exactly once per started call unless cancelled: result 0 when the
     * transfer completed, SL_ETIMEDOUT, SL_EUPSTREAM (connect error, reset,
     * bad framing: `why` says which), or SL_EINVAL when on_data aborted. */
    void (*on_done)(void *ud, int result, int status, const char *why);
} sl_upcall_ops_t;

sl_upstream_t *sl_upstream_create(struct event_base *base);
void sl_upstream_destroy(sl_upstream_t *u);

/* Starts a request (a POST unless p->method says otherwise). Returns NULL
 * on failure (out of memory). */
sl_upcall_t *sl_upcall_start(sl_upstream_t *u, const sl_upcall_params_t *p,
                             const sl_upcall_ops_t *ops, void *ud);
/* Stops a call at once (the client went away); no callback follows. */
void sl_upcall_cancel(sl_upcall_t *c);
/* The value of a response header seen so far (Retry-After...), or NULL.
 * Only the few headers the gateway passes on are kept. */
const char *sl_upcall_retry_after(const sl_upcall_t *c);
const char *sl_upcall_content_type(const sl_upcall_t *c);
/* Pauses or resumes delivery (back-pressure from a slow client). */
void sl_upcall_pause(sl_upcall_t *c, int paused);

/* Number of calls in flight on this worker (tests and drain). */
size_t sl_upstream_active(const sl_upstream_t *u);

/* Checks one raw response header line as curl hands it over, for the same
 * strictness as requests (RFC 9112). `state` is zeroed before the status
 * line. Returns 0 or SL_EINVAL with *why. Exposed for unit tests. */
typedef struct {
    int content_lengths;
    int transfer_encodings;
    int64_t content_length;
} sl_resp_check_t;
int sl_upstream_check_header(sl_resp_check_t *state, const char *line,
                             size_t len, const char **why);

#endif
