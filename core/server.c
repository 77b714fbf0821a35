/* The server: binds listeners, runs one event loop per worker thread, and
 * on the main thread a control loop for signals (drain on SIGTERM/SIGINT,
 * reload on SIGHUP) and the admin API. */
#include "admin.h"
#include "store.h"
#include "error.h"
#include "plugin.h"
#include "requestlog.h"
#include "tls.h"
#include "worker.h"
#include "../lua/host.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int
resolve(const sl_listen_t *l, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {0}, *res = NULL;
    char port[16];
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST;
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

static void
log_bound(const char *what, struct sockaddr_storage *ss, socklen_t len)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    getnameinfo((struct sockaddr *)ss, len, host, sizeof(host), serv,
                sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
    fprintf(stderr, "sluice: %s on %s%s%s:%s\n", what,
            ss->ss_family == AF_INET6 ? "[" : "", host,
            ss->ss_family == AF_INET6 ? "]" : "", serv);
}

/* Binds l once per worker in ws[0..n) (SO_REUSEPORT: the kernel spreads
 * connections over them). Port 0: all share the port the first got. */
static int
bind_listen(const sl_listen_t *l, int index, sl_worker_t *ws, int n,
            const char *what)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(l, &ss, &len) != 0) {
        fprintf(stderr, "sluice: cannot resolve listen address %s\n",
                l->addr);
        return SL_EINVAL;
    }
    for (int k = 0; k < n; k++) {
        sl_worker_t *w = &ws[k];
        evutil_socket_t fd = bind_one(&ss, len);
        if (fd < 0) {
            fprintf(stderr, "sluice: cannot listen on %s: %s\n", l->addr,
                    strerror(errno));
            return SL_EIO;
        }
        if (k == 0) {
            len = sizeof(ss);
            getsockname(fd, (struct sockaddr *)&ss, &len);
        }
        w->largs[w->nlisteners].w = w;
        w->largs[w->nlisteners].index = index;
        w->listeners[w->nlisteners] = evconnlistener_new(
            w->base, sl_worker_accept, &w->largs[w->nlisteners],
            LEV_OPT_CLOSE_ON_FREE, -1, fd);
        if (w->listeners[w->nlisteners] == NULL) {
            close(fd);
            return SL_ENOMEM;
        }
        w->nlisteners++;
    }
    log_bound(what, &ss, len);
    return 0;
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
same_listen(const sl_listen_t *a, const sl_listen_t *b)
{
    return strcmp(a->host ? a->host : "", b->host ? b->host : "") == 0 &&
           a->port == b->port;
}

/* What a reload cannot change without a restart. */
static int
check_restart_only(const sl_config_t *old, const sl_config_t *cfg,
                   sl_config_errors_t *errs)
{
    const char *path = NULL, *msg = NULL;
    int changed_listen = old->nlisten != cfg->nlisten;
    for (size_t i = 0; !changed_listen && i < cfg->nlisten; i++)
        changed_listen = !same_listen(&old->listen[i], &cfg->listen[i]);
    if (changed_listen) {
        path = "$.listen";
        msg = "listen addresses change only with a restart";
    } else if (old->workers != cfg->workers) {
        path = "$.workers";
        msg = "the worker count changes only with a restart";
    } else if (!same_listen(&old->admin, &cfg->admin) ||
               (old->admin_token == NULL) != (cfg->admin_token == NULL)) {
        path = "$.admin";
        msg = "the admin listener changes only with a restart";
    } else if (strcmp(old->access_log ? old->access_log : "",
                      cfg->access_log ? cfg->access_log : "") != 0) {
        path = "$.access_log";
        msg = "the access log changes only with a restart";
    } else if (strcmp(old->data_dir, cfg->data_dir) != 0 ||
               old->store_map_size_mb != cfg->store_map_size_mb ||
               old->store_map_size_max_mb != cfg->store_map_size_max_mb ||
               old->store_flush_ms != cfg->store_flush_ms) {
        path = strcmp(old->data_dir, cfg->data_dir) != 0 ? "$.data_dir"
                                                        : "$.store";
        msg = "the store changes only with a restart";
    }
    if (path == NULL)
        return 0;
    if (errs != NULL && errs->count < errs->cap) {
        snprintf(errs->items[errs->count].path,
                 sizeof(errs->items[0].path), "%s", path);
        snprintf(errs->items[errs->count].message,
                 sizeof(errs->items[0].message), "%s", msg);
        errs->items[errs->count].warning = 0;
        errs->count++;
    } else if (errs != NULL) {
        sl_config_error_t *items =
            realloc(errs->items, (errs->cap + 4) * sizeof(*items));
        if (items != NULL) {
            errs->items = items;
            errs->cap += 4;
            return check_restart_only(old, cfg, errs);
        }
    }
    return SL_ECONFIG;
}

static void
free_plugins(void *ps)
{
    sl_plugins_free(ps);
}

/* A snapshot of cfg with its own plugin instances; NULL (cfg freed) with
 * the reasons in errs when a plugin does not load. */
static sl_snapshot_t *
snapshot_build(sl_config_t *cfg, int nslots, uint64_t generation,
               sl_config_errors_t *errs)
{
    SSL_CTX **tls = NULL;
    if (sl_tls_build(cfg, &tls, errs) != 0) {
        sl_config_free(cfg);
        return NULL;
    }
    sl_plugins_t *ps = sl_plugins_load(cfg, errs);
    if (ps == NULL) {
        sl_tls_free(tls, cfg->nlisten);
        sl_config_free(cfg);
        return NULL;
    }
    size_t nlisten = cfg->nlisten;
    sl_lua_set_t *lua = NULL;
    if (sl_lua_load(cfg, nslots, &lua, errs) != 0) {
        sl_plugins_free(ps);
        sl_tls_free(tls, cfg->nlisten);
        sl_config_free(cfg);
        return NULL;
    }
    sl_snapshot_t *s = sl_snapshot_new(cfg, nslots, generation);
    if (s == NULL) {
        sl_lua_free(lua);
        sl_plugins_free(ps);
        sl_tls_free(tls, nlisten);
        return NULL;
    }
    s->tls = tls;
    s->plugins = ps;
    s->plugins_free = free_plugins;
    s->lua = lua;
    s->lua_free = sl_lua_free;
    return s;
}

int
sl_server_reload(sl_server_t *srv, sl_config_errors_t *errs)
{
    sl_config_t *cfg = NULL;
    int rc = sl_config_load_file(srv->config_path, &cfg, errs);
    if (rc != 0) {
        sl_config_free(cfg);
        atomic_fetch_add(&srv->reloads_rejected, 1);
        return rc;
    }
    return sl_server_publish(srv, cfg, errs);
}

int
sl_server_publish(sl_server_t *srv, sl_config_t *cfg,
                  sl_config_errors_t *errs)
{
    sl_snapshot_t *old = atomic_load(&srv->current);
    int rc = check_restart_only(old->cfg, cfg, errs);
    if (rc != 0) {
        sl_config_free(cfg);
        atomic_fetch_add(&srv->reloads_rejected, 1);
        return rc;
    }
    int nslots = srv->nworkers + 1;
    sl_snapshot_t *snap =
        snapshot_build(cfg, nslots, ++srv->generation, errs);
    if (snap == NULL) {
        atomic_fetch_add(&srv->reloads_rejected, 1);
        return SL_ECONFIG;
    }
    atomic_store(&old->next, snap);
    atomic_store(&srv->current, snap);
    /* Each worker switches on its own thread; the admin slot here. */
    for (int i = 0; i < srv->nworkers; i++) {
        ssize_t n = write(srv->workers[i].notify_pipe[1], "r", 1);
        (void)n;
    }
    if (srv->admin != NULL)
        sl_worker_adopt(srv->admin);
    else
        sl_snapshot_retire(snap, srv->nworkers); /* nobody uses that slot */
    sl_snapshot_drop(old); /* the server's own hold on the old one */
    atomic_fetch_add(&srv->reloads_ok, 1);
    fprintf(stderr, "sluice: reloaded %s (generation %llu)\n",
            srv->config_path, (unsigned long long)snap->generation);
    return 0;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    sl_server_t *srv = arg;
    if (sig == SIGHUP) {
        sl_config_errors_t errs = {0};
        if (sl_server_reload(srv, &errs) != 0) {
            /* The reasons first, the verdict last: whoever waits for the
             * verdict line finds the reasons already written. */
            for (size_t i = 0; i < errs.count; i++)
                if (!errs.items[i].warning)
                    fprintf(stderr, "sluice: %s: %s\n", errs.items[i].path,
                            errs.items[i].message);
            fprintf(stderr, "sluice: reload on SIGHUP rejected; the running "
                            "config stays\n");
        }
        sl_config_errors_free(&errs);
        return;
    }
    fprintf(stderr, "sluice: signal %d: draining\n", (int)sig);
    event_base_loopbreak(srv->control);
}

int
sl_server_run(const char *path, sl_config_t *cfg)
{
    sl_server_t srv = {0};
    int rc = 1, started = 0;
    struct event *sigs[3] = {0};
    sl_reqlog_sweeper_t *sweeper = NULL;
    srv.nworkers = cfg->workers;
    srv.accesslog_fd = open_access_log(cfg);
    srv.config_path = strdup(path);
    if (srv.accesslog_fd == -2 || srv.config_path == NULL) {
        sl_config_free(cfg);
        free(srv.config_path);
        return 1;
    }
    int with_admin = cfg->admin_token != NULL;
    sl_store_options_t so = {
        .dir = cfg->data_dir,
        .map_size = (size_t)cfg->store_map_size_mb << 20,
        .map_size_max = (size_t)cfg->store_map_size_max_mb << 20,
        .flush_interval_ms = cfg->store_flush_ms,
    };
    int src = sl_store_open(&so, &srv.store);
    if (src != 0) {
        fprintf(stderr, "sluice: cannot open the store in %s: %s\n",
                cfg->data_dir, sl_strerror(src));
        sl_config_free(cfg);
        goto done_early;
    }
    sl_plugin_host_set_store(srv.store);
    sl_config_errors_t perrs = {0};
    sl_snapshot_t *snap = snapshot_build(cfg, srv.nworkers + 1, 0, &perrs);
    for (size_t i = 0; i < perrs.count; i++)
        fprintf(stderr, "%s: %s: %s\n", path, perrs.items[i].path,
                perrs.items[i].message);
    sl_config_errors_free(&perrs);
    if (snap == NULL)
        goto done_early;
    atomic_init(&srv.current, snap);
    srv.workers = calloc((size_t)srv.nworkers + 1, sizeof(sl_worker_t));
    if (srv.workers == NULL)
        goto done;
    for (int i = 0; i <= srv.nworkers; i++) {
        if (i == srv.nworkers && !with_admin) {
            sl_snapshot_retire(snap, i); /* the admin slot stays empty */
            break;
        }
        if (sl_worker_init(&srv, &srv.workers[i], i, snap) != 0) {
            fprintf(stderr, "sluice: cannot set up worker %d\n", i);
            goto done;
        }
    }
    for (size_t i = 0; i < cfg->nlisten; i++)
        if (bind_listen(&cfg->listen[i], (int)i, srv.workers, srv.nworkers,
                        cfg->listen[i].tls_cert ? "listening (TLS)"
                                                : "listening") != 0)
            goto done;
    if (with_admin) {
        srv.admin = &srv.workers[srv.nworkers];
        srv.admin->admin = 1;
        if (bind_listen(&cfg->admin, -1, srv.admin, 1, "admin API") != 0)
            goto done;
    } else {
        fprintf(stderr, "sluice: admin API off (set %s to enable it)\n",
                cfg->admin_token_env ? cfg->admin_token_env
                                     : "SLUICE_ADMIN_TOKEN");
    }
    /* The control loop is the admin worker's base, or a base of its own. */
    srv.control = with_admin ? srv.admin->base : event_base_new();
    if (srv.control == NULL)
        goto done;
    /* Request-log retention runs here, off the workers. */
    sweeper = sl_reqlog_sweeper_start(srv.control, &srv);
    if (sweeper == NULL)
        goto done;

    /* Signals go to the main thread only: workers block them. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* The handlers go in before any worker serves: a SIGTERM that comes
     * as soon as the first answer did must drain, not kill. */
    int signums[3] = {SIGTERM, SIGINT, SIGHUP};
    for (int i = 0; i < 3; i++) {
        sigs[i] = evsignal_new(srv.control, signums[i], on_signal, &srv);
        if (sigs[i] == NULL || event_add(sigs[i], NULL) != 0)
            goto stop;
    }
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (; started < srv.nworkers; started++)
        if (pthread_create(&srv.workers[started].thread, NULL, sl_worker_main,
                           &srv.workers[started]) != 0)
            break;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    fprintf(stderr, "sluice: %d worker(s) serving (pid %d)\n", started,
            (int)getpid());
    if (started == srv.nworkers) {
        event_base_dispatch(srv.control);
        rc = 0;
    }
stop:
    for (int i = 0; i < started; i++) {
        ssize_t n = write(srv.workers[i].notify_pipe[1], "x", 1);
        (void)n;
    }
    for (int i = 0; i < started; i++)
        pthread_join(srv.workers[i].thread, NULL);
    fprintf(stderr, "sluice: stopped\n");
done:
    sl_reqlog_sweeper_stop(sweeper);
    for (int i = 0; i < 3; i++)
        if (sigs[i] != NULL)
            event_free(sigs[i]);
    if (!with_admin && srv.control != NULL)
        event_base_free(srv.control);
    for (int i = 0; srv.workers != NULL && i <= srv.nworkers; i++)
        if (srv.workers[i].base != NULL)
            sl_worker_free(&srv.workers[i]);
    free(srv.workers);
    sl_snapshot_drop(atomic_load(&srv.current)); /* the server's hold */
done_early:
    sl_plugin_host_set_store(NULL);
    if (srv.store != NULL)
        sl_store_close(srv.store); /* commits what is queued, then syncs */
    free(srv.config_path);
    if (srv.accesslog_fd > 2)
        close(srv.accesslog_fd);
    return rc;
}
