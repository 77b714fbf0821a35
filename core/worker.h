/* Worker threads: each owns an event_base, its listeners (SO_REUSEPORT),
 * its upstream multi handle and its connections; nothing is shared in the
 * request path. */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include "config.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdint.h>

struct sl_conn;
struct sl_upstream;
struct sl_accesslog;

#define SL_MAX_LISTEN 16

typedef struct sl_server sl_server_t;

typedef struct sl_worker {
    int id;
    pthread_t thread;
    sl_server_t *srv;
    struct event_base *base;
    struct evconnlistener *listeners[SL_MAX_LISTEN];
    size_t nlisteners;
    struct event *drain_ev;    /* the main thread writes drain_pipe on SIGTERM */
    int drain_pipe[2];
    struct event *drain_timer; /* gives up on stragglers */
    struct sl_upstream *upstream;
    struct sl_accesslog *log;
    struct sl_conn *conns; /* every open connection */
    long nconns, max_conns;
    int draining;
    uint64_t rng;
    /* libevent common timeouts: O(1) timer adds for every connection. */
    const struct timeval *tv_header, *tv_body, *tv_idle;
} sl_worker_t;

struct sl_server {
    const sl_config_t *cfg;
    sl_worker_t *workers;
    int nworkers;
    /* Per provider, parallel to cfg->providers: the request headers, built
     * once at start and only read by workers. */
    struct curl_slist **provider_headers;
    struct curl_slist **provider_stream_headers;
    int accesslog_fd; /* -1 when off */
    char *models_json; /* the GET /v1/models answer */
};

/* Binds every listener (so a bad address fails before anything runs),
 * starts the workers, and serves until SIGTERM/SIGINT has drained them.
 * Returns the process exit code. */
int sl_server_run(const sl_config_t *cfg);

/* A uniform 32-bit random value from the worker's own generator. */
uint32_t sl_worker_random(sl_worker_t *w);

/* Called by a connection when it closes, so drain can finish. */
void sl_worker_conn_closed(sl_worker_t *w);

#endif
