/* Upstream connections: connecting (with a resolve and a TLS handshake
 * when needed), writing a call's request, reading and parsing its answer
 * where it was read, and handing the connection back to its origin's idle
 * pool when the answer allows another request on it. */
#include "upstream_int.h"
#include "error.h"

#include <errno.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <unistd.h>

static void conn_begin(sl_upcall_t *c, sl_upconn_t *k);

/* Makes ev wait for `kind` (EV_READ, EV_WRITE, both, or 0 for nothing). */
int
sl_up_conn_watch(sl_upconn_t *k, short kind)
{
    if (k->ev_kind == kind)
        return 0;
    if (k->ev_kind != 0)
        event_del(k->ev);
    k->ev_kind = 0;
    if (kind == 0)
        return 0;
    event_assign(k->ev, k->o->u->base, k->fd, (short)(kind | EV_PERSIST),
                 sl_up_conn_event, k);
    if (event_add(k->ev, NULL) != 0)
        return -1;
    k->ev_kind = kind;
    return 0;
}

void
sl_up_idle_unlink(sl_upconn_t *k)
{
    sl_origin_t *o = k->o;
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        o->idle = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    k->prev = k->next = NULL;
    k->idle = 0;
    o->nidle--;
}

void
sl_up_conn_close(sl_upconn_t *k)
{
    if (k->idle)
        sl_up_idle_unlink(k);
    if (k->call != NULL)
        k->call->conn = NULL;
    if (k->ev_kind != 0)
        event_del(k->ev);
    event_free(k->ev);
    if (k->ssl != NULL) {
        SSL_set_quiet_shutdown(k->ssl, 1);
        SSL_free(k->ssl);
    }
    if (k->fd >= 0)
        close(k->fd);
    free(k->buf);
    free(k);
}

/* The call on k is over and k may carry another: back to the pool. */
static void
conn_release(sl_upconn_t *k)
{
    sl_origin_t *o = k->o;
    k->call = NULL;
    k->reused = 1;
    if (o->nidle >= SL_UP_IDLE_MAX || sl_up_conn_watch(k, EV_READ) != 0) {
        sl_up_conn_close(k);
        return;
    }
    k->idle_since = time(NULL);
    k->idle = 1;
    k->prev = NULL;
    k->next = o->idle;
    if (o->idle != NULL)
        o->idle->prev = k;
    o->idle = k;
    o->nidle++;
}

static sl_upconn_t *
conn_new(sl_origin_t *o)
{
    sl_upconn_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return NULL;
    k->o = o;
    k->fd = -1;
    k->buf = malloc(SL_UP_BUF);
    k->cap = SL_UP_BUF;
    k->ev = event_new(o->u->base, -1, 0, sl_up_conn_event, k);
    if (k->buf == NULL || k->ev == NULL) {
        free(k->buf);
        if (k->ev != NULL)
            event_free(k->ev);
        free(k);
        return NULL;
    }
    return k;
}

static const char *
tls_error(sl_upcall_t *c, const char *what)
{
    unsigned long e = ERR_get_error();
    char detail[120] = "";
    if (e != 0)
        ERR_error_string_n(e, detail, sizeof(detail));
    ERR_clear_error();
    long v = c->conn && c->conn->ssl ? SSL_get_verify_result(c->conn->ssl)
                                      : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(c->why, sizeof(c->why), "%s: %s", what,
                 X509_verify_cert_error_string(v));
    else
        snprintf(c->why, sizeof(c->why), "%s%s%s", what, e ? ": " : "",
                 detail);
    return c->why;
}

static void
on_line(void *ud, const char *line, size_t len)
{
    sl_upcall_t *c = ud;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        c->retry_after[0] = c->content_type[0] = '\0';
    } else {
        size_t cap = 0, skip = 0;
        char *dst = NULL;
        if (len > 12 && strncasecmp(line, "Retry-After:", 12) == 0) {
            dst = c->retry_after;
            cap = sizeof(c->retry_after);
            skip = 12;
        } else if (len > 13 && strncasecmp(line, "Content-Type:", 13) == 0) {
            dst = c->content_type;
            cap = sizeof(c->content_type);
            skip = 13;
        }
        if (dst != NULL) {
            const char *v = line + skip, *end = line + len;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            size_t n = (size_t)(end - v);
            if (n >= cap)
                n = cap - 1;
            memcpy(dst, v, n);
            dst[n] = '\0';
        }
    }
    if (c->on_header != NULL)
        c->on_header(c->ud, line, len);
}

static int
on_body(void *ud, const char *data, size_t len)
{
    sl_upcall_t *c = ud;
    if (!c->got_body) {
        c->got_body = 1;
        evtimer_del(c->t_first_byte);
    }
    if (len == 0)
        return 0;
    if (c->ops->on_data(c->ud, c->parser.status, data, len) != 0)
        return -1;
    if (c->cancelled)
        return -1;
    return c->paused ? 1 : 0;
}

static const sl_resp_sink_t sink = {on_line, on_body};

/* Parses what k has buffered. Returns 1 when the call is over (finished
 * or cancelled), 0 to keep reading. */
static int
conn_parse(sl_upconn_t *k)
{
    sl_upcall_t *c = k->call;
    c->in_cb = 1;
    ssize_t n = sl_resp_feed(&c->parser, k->buf, k->len, &sink, c);
    c->in_cb = 0;
    if (c->cancelled) {
        c->cancelled = 0;
        sl_up_call_put(c);
        return 1;
    }
    if (n < 0) {
        sl_up_finish(c, c->parser.why ? SL_EUPSTREAM : SL_EINVAL,
               c->parser.why ? c->parser.why : "the response was refused");
        return 1;
    }
    if (n > 0) {
        k->len -= (size_t)n;
        if (k->len > 0)
            memmove(k->buf, k->buf + n, k->len);
    }
    if (c->parser.state == SL_RESP_DONE) {
        int reuse = c->parser.keep_alive && k->len == 0 &&
                    c->written == c->head_len + c->body_len;
        c->conn = NULL;
        k->call = NULL;
        if (reuse)
            conn_release(k);
        else
            sl_up_conn_close(k);
        sl_up_finish(c, 0, NULL);
        return 1;
    }
    if (c->parser.paused)
        sl_up_conn_watch(k, (short)(k->ev_kind & ~EV_READ));
    return 0;
}

/* The connection failed or closed under a call. A reused connection that
 * the server closed before sending a byte of the answer (its keep-alive
 * timeout raced our request) is retried once on a new connection. */
static void
conn_failed(sl_upconn_t *k, const char *why)
{
    sl_upcall_t *c = k->call;
    int untouched = c->parser.state == SL_RESP_HEAD && c->parser.status == 0 &&
                    k->len == 0 && c->parser.scanned == 0;
    int retry = k->reused && untouched && !c->retried;
    sl_up_conn_close(k);
    if (retry) {
        c->retried = 1;
        c->written = 0;
        sl_up_connect(c);
        return;
    }
    sl_up_finish(c, SL_EUPSTREAM, why);
}

static void
conn_eof(sl_upconn_t *k)
{
    sl_upcall_t *c = k->call;
    if (c->parser.state == SL_RESP_TO_EOF) {
        sl_resp_eof(&c->parser);
        c->conn = NULL;
        k->call = NULL;
        sl_up_conn_close(k);
        sl_up_finish(c, 0, NULL);
        return;
    }
    sl_resp_eof(&c->parser);
    conn_failed(k, c->parser.why);
}

/* Writes what is left of the request. 0 when all is written or the kernel
 * is full (EV_WRITE then waits), -1 when the connection failed. */
int
sl_up_conn_write(sl_upconn_t *k)
{
    sl_upcall_t *c = k->call;
    size_t total = c->head_len + c->body_len;
    while (c->written < total) {
        ssize_t n;
        if (k->ssl != NULL) {
            const char *p;
            size_t left;
            if (c->written < c->head_len) {
                p = c->head + c->written;
                left = c->head_len - c->written;
            } else {
                p = c->body + (c->written - c->head_len);
                left = total - c->written;
            }
            ERR_clear_error();
            int r = SSL_write(k->ssl, p, left > INT32_MAX ? INT32_MAX
                                                          : (int)left);
            if (r <= 0) {
                int e = SSL_get_error(k->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE)
                    return sl_up_conn_watch(k, EV_READ | EV_WRITE);
                if (e == SSL_ERROR_WANT_READ)
                    return sl_up_conn_watch(k, EV_READ);
                return -1;
            }
            n = r;
        } else {
            struct iovec iov[2];
            int cnt = 0;
            if (c->written < c->head_len) {
                iov[cnt].iov_base = c->head + c->written;
                iov[cnt++].iov_len = c->head_len - c->written;
                if (c->body_len > 0) {
                    iov[cnt].iov_base = (void *)c->body;
                    iov[cnt++].iov_len = c->body_len;
                }
            } else {
                iov[cnt].iov_base =
                    (void *)(c->body + (c->written - c->head_len));
                iov[cnt++].iov_len = total - c->written;
            }
            n = writev(k->fd, iov, cnt);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return sl_up_conn_watch(k, EV_READ | EV_WRITE);
                if (errno == EINTR)
                    continue;
                return -1;
            }
        }
        c->written += (size_t)n;
    }
    return sl_up_conn_watch(k, c->paused ? 0 : EV_READ);
}

static void
conn_read(sl_upconn_t *k)
{
    sl_upcall_t *c = k->call;
    for (;;) {
        if (k->len == k->cap) {
            /* Only a head (or a chunk line) fills the buffer: body bytes
             * are handed on as they come. */
            if (k->cap >= SL_RESP_HEAD_MAX + SL_UP_BUF) {
                sl_up_finish(c, SL_EUPSTREAM, "upstream response head is too "
                                        "large");
                return;
            }
            char *grown = realloc(k->buf, k->cap * 2);
            if (grown == NULL) {
                sl_up_finish(c, SL_EUPSTREAM, "out of memory");
                return;
            }
            k->buf = grown;
            k->cap *= 2;
        }
        ssize_t n;
        size_t room = k->cap - k->len;
        if (k->ssl != NULL) {
            ERR_clear_error();
            int r = SSL_read(k->ssl, k->buf + k->len,
                             (int)(k->cap - k->len));
            if (r <= 0) {
                int e = SSL_get_error(k->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    return;
                if (e == SSL_ERROR_WANT_WRITE) {
                    sl_up_conn_watch(k, EV_READ | EV_WRITE);
                    return;
                }
                if (e == SSL_ERROR_ZERO_RETURN ||
                    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
                    conn_eof(k);
                    return;
                }
                conn_failed(k, tls_error(c, "TLS error on the upstream "
                                            "connection"));
                return;
            }
            n = r;
        } else {
            n = read(k->fd, k->buf + k->len, k->cap - k->len);
            if (n == 0) {
                conn_eof(k);
                return;
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                if (errno == EINTR)
                    continue;
                snprintf(c->why, sizeof(c->why),
                         "upstream connection error: %s", strerror(errno));
                conn_failed(k, c->why);
                return;
            }
        }
        k->len += (size_t)n;
        if (conn_parse(k) != 0 || c->parser.paused)
            return;
        /* A TLS record may hold more than one read returned; a plain
         * socket that did not fill the room has nothing more for now. */
        if (k->ssl == NULL && (size_t)n < room)
            return;
    }
}

static void
handshake(sl_upconn_t *k)
{
    sl_upcall_t *c = k->call;
    ERR_clear_error();
    int r = SSL_connect(k->ssl);
    if (r == 1) {
        k->state = CONN_READY;
        evtimer_del(c->t_connect);
        conn_begin(c, k);
        return;
    }
    int e = SSL_get_error(k->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        sl_up_conn_watch(k, EV_READ);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        sl_up_conn_watch(k, EV_READ | EV_WRITE);
        return;
    }
    const char *why = tls_error(c, "TLS handshake with the upstream failed");
    sl_up_conn_close(k);
    sl_up_finish(c, SL_EUPSTREAM, why);
}

void
sl_up_conn_event(evutil_socket_t fd, short what, void *arg)
{
    sl_upconn_t *k = arg;
    (void)fd;
    sl_upcall_t *c = k->call;
    if (c == NULL) {
        /* Idle: bytes or EOF from the server mean it is done with the
         * connection (a TLS server may send session tickets: those are
         * read and the connection kept). */
        if (k->ssl != NULL) {
            char b[256];
            ERR_clear_error();
            int r = SSL_read(k->ssl, b, sizeof(b));
            if (r <= 0 && SSL_get_error(k->ssl, r) == SSL_ERROR_WANT_READ)
                return;
        }
        sl_up_conn_close(k);
        return;
    }
    if (k->state == CONN_CONNECTING) {
        if (!(what & EV_WRITE))
            return;
        int err = 0;
        socklen_t elen = sizeof(err);
        if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
            err = errno;
        if (err != 0) {
            snprintf(c->why, sizeof(c->why),
                     "cannot connect to the upstream %s: %s", k->o->hostport,
                     strerror(err));
            sl_up_conn_close(k);
            sl_up_finish(c, SL_EUPSTREAM, c->why);
            return;
        }
        if (k->ssl != NULL) {
            k->state = CONN_HANDSHAKE;
            handshake(k);
        } else {
            k->state = CONN_READY;
            evtimer_del(c->t_connect);
            conn_begin(c, k);
        }
        return;
    }
    if (k->state == CONN_HANDSHAKE) {
        handshake(k);
        return;
    }
    if ((what & EV_WRITE) && c->written < c->head_len + c->body_len) {
        if (sl_up_conn_write(k) != 0) {
            snprintf(c->why, sizeof(c->why),
                     "cannot send the request upstream: %s", strerror(errno));
            conn_failed(k, c->why);
            return;
        }
    }
    if (what & EV_READ) {
        if (k->len > 0 && conn_parse(k) != 0)
            return;
        if (!c->parser.paused)
            conn_read(k);
    }
}

/* A ready connection takes the call: the request is written at once. */
static void
conn_begin(sl_upcall_t *c, sl_upconn_t *k)
{
    c->conn = k;
    k->call = c;
    if (sl_up_conn_write(k) != 0) {
        snprintf(c->why, sizeof(c->why),
                 "cannot send the request upstream: %s", strerror(errno));
        conn_failed(k, c->why);
    }
}

static void
connect_to(sl_upcall_t *c)
{
    sl_origin_t *o = c->o;
    sl_upconn_t *k = conn_new(o);
    if (k == NULL) {
        sl_up_finish(c, SL_EUPSTREAM, "out of memory");
        return;
    }
    k->call = c;
    c->conn = k;
    k->fd = socket(o->addr.ss_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        snprintf(c->why, sizeof(c->why), "cannot make a socket: %s",
                 strerror(errno));
        sl_up_conn_close(k);
        sl_up_finish(c, SL_EUPSTREAM, c->why);
        return;
    }
    int one = 1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(k->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (o->tls) {
        SSL_CTX *ctx = sl_up_tls_ctx(o->u);
        k->ssl = ctx != NULL ? SSL_new(ctx) : NULL;
        if (k->ssl == NULL || SSL_set_fd(k->ssl, k->fd) != 1) {
            sl_up_conn_close(k);
            sl_up_finish(c, SL_EUPSTREAM, "cannot set up TLS");
            return;
        }
        SSL_set_app_data(k->ssl, k);
        if (sl_up_origin_literal(o)) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), o->host);
        } else {
            SSL_set_tlsext_host_name(k->ssl, o->host);
            SSL_set1_host(k->ssl, o->host);
        }
        if (o->session != NULL)
            SSL_set_session(k->ssl, o->session);
        SSL_set_connect_state(k->ssl);
    }
    k->state = CONN_CONNECTING;
    if (connect(k->fd, (struct sockaddr *)&o->addr, o->addrlen) != 0 &&
        errno != EINPROGRESS) {
        snprintf(c->why, sizeof(c->why),
                 "cannot connect to the upstream %s: %s", o->hostport,
                 strerror(errno));
        sl_up_conn_close(k);
        sl_up_finish(c, SL_EUPSTREAM, c->why);
        return;
    }
    if (sl_up_conn_watch(k, EV_WRITE) != 0) {
        sl_up_conn_close(k);
        sl_up_finish(c, SL_EUPSTREAM, "cannot watch the upstream connection");
    }
}

static void
on_resolved(int err, struct evutil_addrinfo *res, void *arg)
{
    if (err == EVUTIL_EAI_CANCEL) {
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return; /* the call is gone: arg must not be touched */
    }
    sl_upcall_t *c = arg;
    c->dns = NULL;
    c->dns_pending = 0;
    if (err != 0 || res == NULL) {
        snprintf(c->why, sizeof(c->why), "cannot resolve %s: %s",
                 c->o->host, evutil_gai_strerror(err));
        if (res != NULL)
            evutil_freeaddrinfo(res);
        sl_up_finish(c, SL_EUPSTREAM, c->why);
        return;
    }
    /* IPv4 first: local model servers often listen on it alone. */
    struct evutil_addrinfo *pick = res;
    for (struct evutil_addrinfo *a = res; a != NULL; a = a->ai_next)
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    sl_origin_t *o = c->o;
    memcpy(&o->addr, pick->ai_addr, pick->ai_addrlen);
    o->addrlen = (socklen_t)pick->ai_addrlen;
    o->addr_until = time(NULL) + SL_UP_DNS_TTL_S;
    evutil_freeaddrinfo(res);
    connect_to(c);
}

/* The call needs a new connection: resolve when the address is unknown or
 * stale, then connect. Runs from the loop (a resolve may answer at once). */
void
sl_up_connect(sl_upcall_t *c)
{
    sl_origin_t *o = c->o;
    /* The connect timeout covers resolving, connecting and TLS. */
    sl_up_arm(c->t_connect, c->connect_timeout_ms);
    if (sl_up_origin_literal(o) || (o->addr_until != 0 &&
                                 time(NULL) < o->addr_until)) {
        connect_to(c);
        return;
    }
    sl_upstream_t *u = c->u;
    if (u->dns == NULL) {
        u->dns = evdns_base_new(u->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (u->dns == NULL) {
            sl_up_finish(c, SL_EUPSTREAM, "cannot start the DNS resolver");
            return;
        }
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    c->dns_pending = 1;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(u->dns, o->host, o->port, &hints, on_resolved, c);
    if (c->dns_pending)
        c->dns = req;
}
