/* Worker threads: each owns an event_base, its listeners (SO_REUSEPORT),
 * its upstream multi handle and its connections; nothing is shared in the
 * request path. The admin listener is served the same way by one more
 * "worker" that runs on the main thread. */
#ifndef SL_WORKER_H
#define SL_WORKER_H

#include "config.h"
#include "snapshot.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct sl_conn;
struct sl_upstream;
struct sl_accesslog;

#define SL_MAX_LISTEN 16

typedef struct sl_server sl_server_t;

typedef struct sl_worker {
    int id; /* also its slot in snapshot ref counts */
    int admin; /* serves the admin API (main thread) */
    pthread_t thread;
    sl_server_t *srv;
    struct event_base *base;
    sl_snapshot_t *snap; /* what new requests on this worker start on */
    struct evconnlistener *listeners[SL_MAX_LISTEN];
    size_t nlisteners;
    /* Which listen entry each listener serves (its TLS context). */
    struct sl_listen_arg {
        struct sl_worker *w;
        int index; /* into cfg->listen; -1 for the admin listener */
    } largs[SL_MAX_LISTEN];
    /* The main thread writes 'r' (reload: switch snapshot) or 'x' (drain)
     * down this pipe; event_active() from another thread would need
     * libevent's locks on every event operation. */
    int notify_pipe[2];
    struct event *notify_ev;
    struct event *drain_timer; /* gives up on stragglers */
    struct sl_upstream *upstream;
    struct sl_accesslog *log;
    struct sl_metrics *metrics; /* written by this worker only */
    struct sl_ledger *ledger;   /* usage sums; made on first use */
    struct sl_conn *conns; /* every open connection */
    long nconns, max_conns;
    int draining;
    uint64_t rng;
    /* libevent common timeouts: O(1) timer adds for every connection. */
    const struct timeval *tv_header, *tv_body, *tv_idle;
} sl_worker_t;

struct sl_server {
    char *config_path; /* re-read on reload */
    _Atomic(sl_snapshot_t *) current;
    uint64_t generation;
    sl_worker_t *workers; /* nworkers request workers, then the admin one */
    int nworkers;
    sl_worker_t *admin;   /* NULL when the admin API is off */
    int accesslog_fd; /* -1 when off */
    struct event_base *control; /* main thread: signals, admin */
    struct sl_store *store;     /* LMDB under data_dir, for the process */
    atomic_long reloads_ok, reloads_rejected;
};

/* Binds every listener (so a bad address fails before anything runs),
 * starts the workers, and serves until SIGTERM/SIGINT has drained them.
 * Takes ownership of cfg. Returns the process exit code. */
int sl_server_run(const char *path, sl_config_t *cfg);

/* Re-reads the config file and, when it is valid and changes nothing that
 * needs a restart, publishes it to every worker. On failure errs holds the
 * reasons and the running config stays. Main thread only. */
int sl_server_reload(sl_server_t *srv, sl_config_errors_t *errs);
/* The same with a config already loaded (PUT /admin/plugins/NAME): takes
 * cfg, checks what needs a restart, builds the snapshot (plugin configs
 * against their schemas) and publishes it. Main thread only. */
int sl_server_publish(sl_server_t *srv, sl_config_t *cfg,
                      sl_config_errors_t *errs);

/* Sets up a worker's event loop; serving starts when its thread runs
 * sl_worker_main (or, for the admin worker, the control loop). */
int sl_worker_init(sl_server_t *srv, sl_worker_t *w, int id,
                   sl_snapshot_t *snap);
void sl_worker_free(sl_worker_t *w);
void *sl_worker_main(void *arg);
/* Switches w to the server's current snapshot (on its own thread). */
void sl_worker_adopt(sl_worker_t *w);

/* A uniform 32-bit random value from the worker's own generator. */
uint32_t sl_worker_random(sl_worker_t *w);

/* Called by a connection when it closes, so drain can finish. */
void sl_worker_conn_closed(sl_worker_t *w);
/* Accepts a connection on w (listener callback). */
void sl_worker_accept(struct evconnlistener *l, evutil_socket_t fd,
                      struct sockaddr *sa, int socklen, void *arg);

#endif
