/* A client connection: reads and frames requests, writes responses,
 * enforces limits and timeouts, keeps alive. */
#ifndef SL_CONN_H
#define SL_CONN_H

#include "request.h"
#include "worker.h"

#include <event2/buffer.h>

typedef enum {
    SL_CONN_HEAD,     /* waiting for (the rest of) a request head */
    SL_CONN_BODY,     /* reading the body */
    SL_CONN_HANDLING, /* the request is being answered */
    SL_CONN_CLOSING,  /* flushing the last response, then close */
} sl_conn_state_t;

typedef struct sl_conn {
    sl_worker_t *w;
    evutil_socket_t fd;
    struct evbuffer *in, *out;
    struct event *rev, *wev; /* wev is added only while output waits */
    int want_write;
    int broken; /* a write failed: freed from the write event */
    struct ssl_st *ssl;  /* NULL on a plain connection */
    int ssl_read_on_write; /* SSL_read wanted the socket writable */
    char *tls_peer;      /* the verified client certificate's CN */
    struct sl_conn *prev, *next;
    sl_conn_state_t state;
    struct event *timer;
    int timer_kind; /* what the timer is armed for */
    int timer_want, timer_rearm; /* set by timer_set, armed by timer_apply */
    sl_arena_t *arena; /* reset after every request */
    sl_request_t *req;
    sl_chunked_t chunked;
    size_t body_cap;
    int keep_alive;
    int processing; /* inside conn_process: do not re-enter */
    unsigned requests;
} sl_conn_t;

/* Takes over an accepted socket. Returns NULL (and closes fd) on failure. */
sl_conn_t *sl_conn_new(sl_worker_t *w, evutil_socket_t fd,
                       struct ssl_ctx_st *tls);
/* Closes a connection that has no request in flight (drain). */
int sl_conn_is_idle(const sl_conn_t *c);
void sl_conn_close(sl_conn_t *c);

#endif
