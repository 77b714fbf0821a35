/* Worker threads: accept, serve, switch snapshots on reload, drain. */
#include "worker.h"
#include "accesslog.h"
#include "conn.h"
#include "error.h"
#include "ledger.h"
#include "metrics.h"
#include "tls.h"
#include "upstream.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char busy_response[] =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Content-Type: application/json\r\n"
    "Connection: close\r\n"
    "x-sluice-overhead-ms: 0.000\r\n"
    "Content-Length: 99\r\n\r\n"
    "{\"error\":{\"message\":\"too many open connections\","
    "\"type\":\"service_unavailable\",\"code\":\"server_busy\"}}";

uint32_t
sl_worker_random(sl_worker_t *w)
{
    /* xorshift64*: per worker, so no shared state and no lock. */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

static void
maybe_finish_drain(sl_worker_t *w)
{
    if (w->draining && w->nconns == 0 && !w->admin)
        event_base_loopbreak(w->base);
}

void
sl_worker_conn_closed(sl_worker_t *w)
{
    w->nconns--;
    maybe_finish_drain(w);
}

void
sl_worker_accept(struct evconnlistener *l, evutil_socket_t fd,
                 struct sockaddr *sa, int socklen, void *arg)
{
    struct sl_listen_arg *la = arg;
    sl_worker_t *w = la->w;
    if (w->draining) {
        evutil_closesocket(fd);
        return;
    }
    if (w->nconns >= w->max_conns) {
        /* Best effort: the socket is new, its buffer takes this at once. */
        ssize_t n = send(fd, busy_response, sizeof(busy_response) - 1,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    SSL_CTX *tls = la->index >= 0 && w->snap->tls != NULL
                       ? w->snap->tls[la->index]
                       : NULL;
    sl_conn_new(w, fd, tls);
}

static void
on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    sl_worker_t *w = arg;
    fprintf(stderr, "sluice: worker %d: drain timeout, closing %ld "
                    "connection(s)\n", w->id, w->nconns);
    event_base_loopbreak(w->base);
}

static void
start_drain(sl_worker_t *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    for (size_t i = 0; i < w->nlisteners; i++) {
        evconnlistener_free(w->listeners[i]);
        w->listeners[i] = NULL;
    }
    w->nlisteners = 0;
    /* Idle keep-alive connections go now; busy ones after their answer. */
    sl_conn_t *c = w->conns;
    while (c != NULL) {
        sl_conn_t *next = c->next;
        if (sl_conn_is_idle(c))
            sl_conn_close(c);
        c = next;
    }
    long ms = w->snap->cfg->limits.drain_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->drain_timer, &tv);
    maybe_finish_drain(w);
}

static void
set_timeouts(sl_worker_t *w)
{
    const sl_limits_t *lim = &w->snap->cfg->limits;
    struct timeval tv;
#define COMMON(field, ms)                                                      \
    tv.tv_sec = (ms) / 1000;                                                   \
    tv.tv_usec = ((ms) % 1000) * 1000;                                         \
    w->field = event_base_init_common_timeout(w->base, &tv);
    COMMON(tv_header, lim->header_timeout_ms);
    COMMON(tv_body, lim->body_timeout_ms);
    COMMON(tv_idle, lim->idle_timeout_ms);
#undef COMMON
    int n = w->srv->nworkers;
    w->max_conns = (lim->max_connections + n - 1) / n;
}

void
sl_worker_adopt(sl_worker_t *w)
{
    sl_snapshot_t *now = atomic_load(&w->srv->current);
    if (now == w->snap)
        return;
    /* The server gave every slot a hold on each snapshot it published:
     * retire the one this worker used and any it skipped (two reloads
     * before it woke up), in order, up to `now`. */
    sl_snapshot_t *s = w->snap;
    w->snap = now;
    set_timeouts(w);
    while (s != now) {
        sl_snapshot_t *next = atomic_load(&s->next);
        sl_snapshot_retire(s, w->id);
        s = next;
    }
}

static void
on_notify(evutil_socket_t fd, short what, void *arg)
{
    sl_worker_t *w = arg;
    char buf[64];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == 'r')
                sl_worker_adopt(w);
            else if (buf[i] == 'x')
                start_drain(w);
        }
    }
}

void *
sl_worker_main(void *arg)
{
    sl_worker_t *w = arg;
    event_base_dispatch(w->base);
    /* Whatever is left after a drain timeout is closed here. */
    while (w->conns != NULL)
        sl_conn_close(w->conns);
    sl_accesslog_flush(w->log);
    return NULL;
}

int
sl_worker_init(sl_server_t *srv, sl_worker_t *w, int id, sl_snapshot_t *snap)
{
    w->id = id;
    w->srv = srv;
    w->snap = snap;
    w->rng = ((uint64_t)time(NULL) << 16) ^ ((uint64_t)getpid() << 8) ^
             (uint64_t)(id + 1) * 0x9E3779B97F4A7C15ULL;
    if (w->rng == 0)
        w->rng = 1;
    /* The changelist folds a del/add pair on one fd within a loop turn
     * (an event re-armed for another kind) into at most one epoll_ctl. */
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return SL_ENOMEM;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK |
                                  EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL)
        return SL_ENOMEM;
    set_timeouts(w);
    if (pipe2(w->notify_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return SL_EIO;
    w->notify_ev = event_new(w->base, w->notify_pipe[0], EV_READ | EV_PERSIST,
                             on_notify, w);
    w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
    w->upstream = sl_upstream_create(w->base);
    w->log = sl_accesslog_create(w->base, srv->accesslog_fd);
    w->metrics = sl_metrics_new();
    if (w->notify_ev == NULL || w->drain_timer == NULL ||
        w->upstream == NULL || w->log == NULL || w->metrics == NULL ||
        event_add(w->notify_ev, NULL) != 0)
        return SL_ENOMEM;
    return 0;
}

void
sl_worker_free(sl_worker_t *w)
{
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i] != NULL)
            evconnlistener_free(w->listeners[i]);
    while (w->conns != NULL)
        sl_conn_close(w->conns);
    if (w->log != NULL)
        sl_accesslog_destroy(w->log);
    if (w->upstream != NULL)
        sl_upstream_destroy(w->upstream);
    sl_metrics_free(w->metrics);
    sl_ledger_free(w->ledger); /* its last sums go to the store */
    if (w->notify_ev != NULL)
        event_free(w->notify_ev);
    if (w->drain_timer != NULL)
        event_free(w->drain_timer);
    if (w->notify_pipe[0] > 0) {
        close(w->notify_pipe[0]);
        close(w->notify_pipe[1]);
    }
    if (w->base != NULL)
        event_base_free(w->base);
    if (w->snap != NULL)
        sl_snapshot_retire(w->snap, w->id);
}
