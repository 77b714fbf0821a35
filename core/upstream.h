/* Upstream HTTP/1.1 calls, our own client on the worker's event_base: a
 * pool of keep-alive connections per origin and worker, plain or TLS, so no
 * call ever blocks the worker and a request on a warm connection costs one
 * write and one read. */
#ifndef SL_UPSTREAM_H
#define SL_UPSTREAM_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream_parse.h"

typedef struct sl_upstream sl_upstream_t;
typedef struct sl_upcall sl_upcall_t;

/* Request header lines: each node holds one or more complete lines, every
 * one ending in CRLF. The client only reads the list, so a shared prebuilt
 * list (a provider's headers in the snapshot) takes a per-request line by
 * putting a node from the request arena in front of it. Host and
 * Content-Length are the client's; the list must not carry them. */
typedef struct sl_headers {
    const char *data;
    size_t len;
    const struct sl_headers *next;
} sl_headers_t;

/* A node for one line "Name: value" (CRLF added), or NULL without memory;
 * free with sl_headers_free (the whole list). */
sl_headers_t *sl_headers_append(sl_headers_t *list, const char *line);
void sl_headers_free(sl_headers_t *list);

typedef struct {
    const char *url; /* http:// or https:// */
    const sl_headers_t *headers; /* borrowed; must outlive the call */
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

#endif
