/* The server: binds listeners, runs one event loop per worker thread, and
 * drains on SIGTERM/SIGINT. */
#include "worker.h"
#include "accesslog.h"
#include "conn.h"
#include "error.h"
#include "upstream.h"

#include <errno.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
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
    if (w->draining && w->nconns == 0)
        event_base_loopbreak(w->base);
}

void
sl_worker_conn_closed(sl_worker_t *w)
{
    w->nconns--;
    maybe_finish_drain(w);
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
          int socklen, void *arg)
{
    sl_worker_t *w = arg;
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
    sl_conn_new(w, fd);
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
on_drain(evutil_socket_t fd, short what, void *arg)
{
    sl_worker_t *w = arg;
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
    long ms = w->srv->cfg->limits.drain_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(w->drain_timer, &tv);
    maybe_finish_drain(w);
}

static void *
worker_main(void *arg)
{
    sl_worker_t *w = arg;
    event_base_dispatch(w->base);
    /* Whatever is left after a drain timeout is closed here. */
    while (w->conns != NULL)
        sl_conn_close(w->conns);
    sl_accesslog_flush(w->log);
    return NULL;
}

static int
split_addr(const sl_listen_t *l, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", l->port);
    if (getaddrinfo(l->host, port, &hints, &res) != 0 || res == NULL)
        return SL_EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static evutil_socket_t
bind_one(struct sockaddr_storage *ss, socklen_t len)
{
    evutil_socket_t fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK |
                                                   SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ss->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int
bind_listeners(sl_server_t *srv)
{
    const sl_config_t *cfg = srv->cfg;
    if (cfg->nlisten > SL_MAX_LISTEN) {
        fprintf(stderr, "sluice: at most %d listen entries\n", SL_MAX_LISTEN);
        return SL_EINVAL;
    }
    for (size_t i = 0; i < cfg->nlisten; i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (split_addr(&cfg->listen[i], &ss, &len) != 0) {
            fprintf(stderr, "sluice: cannot resolve listen address %s\n",
                    cfg->listen[i].addr);
            return SL_EINVAL;
        }
        for (int k = 0; k < srv->nworkers; k++) {
            sl_worker_t *w = &srv->workers[k];
            evutil_socket_t fd = bind_one(&ss, len);
            if (fd < 0) {
                fprintf(stderr, "sluice: cannot listen on %s: %s\n",
                        cfg->listen[i].addr, strerror(errno));
                return SL_EIO;
            }
            if (k == 0) {
                /* Port 0: every worker shares the port the first got. */
                len = sizeof(ss);
                getsockname(fd, (struct sockaddr *)&ss, &len);
            }
            w->listeners[w->nlisteners] = evconnlistener_new(
                w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE, -1, fd);
            if (w->listeners[w->nlisteners] == NULL) {
                close(fd);
                return SL_ENOMEM;
            }
            w->nlisteners++;
        }
        char host[NI_MAXHOST], serv[NI_MAXSERV];
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), serv,
                    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
        fprintf(stderr, "sluice: listening on %s%s%s:%s\n",
                ss.ss_family == AF_INET6 ? "[" : "", host,
                ss.ss_family == AF_INET6 ? "]" : "", serv);
    }
    return 0;
}

static struct curl_slist *
headers_for(const sl_provider_t *p, int stream)
{
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, stream ? "Accept: text/event-stream"
                                    : "Accept: application/json");
    /* No "Expect: 100-continue" round trip before the body. */
    h = curl_slist_append(h, "Expect:");
    if (p->type == SL_PROVIDER_ANTHROPIC) {
        char v[160];
        snprintf(v, sizeof(v), "anthropic-version: %s", p->anthropic_version);
        h = curl_slist_append(h, v);
    }
    if (p->auth_header != NULL)
        h = curl_slist_append(h, p->auth_header);
    return h;
}

static int
open_access_log(const sl_config_t *cfg)
{
    if (cfg->access_log == NULL || strcmp(cfg->access_log, "stderr") == 0)
        return 2;
    if (strcmp(cfg->access_log, "off") == 0)
        return -1;
    int fd = open(cfg->access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                  0644);
    if (fd < 0)
        fprintf(stderr, "sluice: cannot open access log %s: %s\n",
                cfg->access_log, strerror(errno));
    return fd < 0 ? -2 : fd;
}

static int
worker_init(sl_server_t *srv, sl_worker_t *w, int id)
{
    const sl_limits_t *lim = &srv->cfg->limits;
    w->id = id;
    w->srv = srv;
    w->rng = ((uint64_t)time(NULL) << 16) ^ ((uint64_t)getpid() << 8) ^
             (uint64_t)(id + 1) * 0x9E3779B97F4A7C15ULL;
    if (w->rng == 0)
        w->rng = 1;
    w->max_conns = (lim->max_connections + srv->nworkers - 1) / srv->nworkers;
    /* The changelist folds curl's per-transfer socket del/add pairs into
     * nothing instead of an epoll_ctl each. */
    struct event_config *ec = event_config_new();
    if (ec == NULL)
        return SL_ENOMEM;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK |
                                  EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (w->base == NULL)
        return SL_ENOMEM;
    struct timeval tv;
#define COMMON(field, ms)                                                      \
    tv.tv_sec = (ms) / 1000;                                                   \
    tv.tv_usec = ((ms) % 1000) * 1000;                                         \
    w->field = event_base_init_common_timeout(w->base, &tv);
    COMMON(tv_header, lim->header_timeout_ms);
    COMMON(tv_body, lim->body_timeout_ms);
    COMMON(tv_idle, lim->idle_timeout_ms);
#undef COMMON
    /* A pipe, not event_active() from the main thread: that would need
     * libevent's locks on every event operation of every worker. */
    if (pipe2(w->drain_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
        return SL_EIO;
    w->drain_ev = event_new(w->base, w->drain_pipe[0], EV_READ, on_drain, w);
    w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
    event_add(w->drain_ev, NULL);
    w->upstream = sl_upstream_create(w->base);
    w->log = sl_accesslog_create(w->base, srv->accesslog_fd);
    if (w->drain_ev == NULL || w->drain_timer == NULL || w->upstream == NULL ||
        w->log == NULL)
        return SL_ENOMEM;
    return 0;
}

static void
worker_free(sl_worker_t *w)
{
    for (size_t i = 0; i < w->nlisteners; i++)
        evconnlistener_free(w->listeners[i]);
    if (w->log != NULL)
        sl_accesslog_destroy(w->log);
    if (w->upstream != NULL)
        sl_upstream_destroy(w->upstream);
    if (w->drain_ev != NULL)
        event_free(w->drain_ev);
    if (w->drain_timer != NULL)
        event_free(w->drain_timer);
    if (w->drain_pipe[0] > 0) {
        close(w->drain_pipe[0]);
        close(w->drain_pipe[1]);
    }
    if (w->base != NULL)
        event_base_free(w->base);
}

static volatile sig_atomic_t stop_signal;

static void
on_stop_signal(int sig)
{
    stop_signal = sig;
}

int
sl_server_run(const sl_config_t *cfg)
{
    sl_server_t srv = {0};
    int rc = 1;
    srv.cfg = cfg;
    srv.nworkers = cfg->workers;
    srv.accesslog_fd = open_access_log(cfg);
    if (srv.accesslog_fd == -2)
        return 1;
    srv.workers = calloc((size_t)srv.nworkers, sizeof(sl_worker_t));
    srv.provider_headers = calloc(cfg->nproviders + 1, sizeof(void *));
    srv.provider_stream_headers = calloc(cfg->nproviders + 1, sizeof(void *));
    if (srv.workers == NULL || srv.provider_headers == NULL ||
        srv.provider_stream_headers == NULL)
        goto done;
    srv.models_json = sl_models_json_build(cfg);
    if (srv.models_json == NULL)
        goto done;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        srv.provider_headers[i] = headers_for(&cfg->providers[i], 0);
        srv.provider_stream_headers[i] = headers_for(&cfg->providers[i], 1);
    }
    for (int i = 0; i < srv.nworkers; i++)
        if (worker_init(&srv, &srv.workers[i], i) != 0) {
            fprintf(stderr, "sluice: cannot set up worker %d\n", i);
            goto done;
        }
    if (bind_listeners(&srv) != 0)
        goto done;

    /* Signals go to the main thread only: workers block them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    int started = 0;
    for (; started < srv.nworkers; started++)
        if (pthread_create(&srv.workers[started].thread, NULL, worker_main,
                           &srv.workers[started]) != 0)
            break;
    struct sigaction sa = {0};
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    fprintf(stderr, "sluice: %d worker(s) serving (pid %d)\n", started,
            (int)getpid());
    if (started == srv.nworkers) {
        sigset_t wait_set = old;
        sigdelset(&wait_set, SIGTERM);
        sigdelset(&wait_set, SIGINT);
        while (!stop_signal)
            sigsuspend(&wait_set);
        fprintf(stderr, "sluice: signal %d: draining\n", (int)stop_signal);
        rc = 0;
    }
    for (int i = 0; i < started; i++) {
        ssize_t n = write(srv.workers[i].drain_pipe[1], "x", 1);
        (void)n;
    }
    for (int i = 0; i < started; i++)
        pthread_join(srv.workers[i].thread, NULL);
    fprintf(stderr, "sluice: stopped\n");
done:
    for (int i = 0; srv.workers != NULL && i < srv.nworkers; i++)
        worker_free(&srv.workers[i]);
    for (size_t i = 0; srv.provider_headers && i < cfg->nproviders; i++) {
        curl_slist_free_all(srv.provider_headers[i]);
        curl_slist_free_all(srv.provider_stream_headers[i]);
    }
    free(srv.provider_headers);
    free(srv.provider_stream_headers);
    free(srv.workers);
    free(srv.models_json);
    if (srv.accesslog_fd > 2)
        close(srv.accesslog_fd);
    return rc;
}
