/* The upstream HTTP/1.1 client. Each worker keeps, per origin (scheme,
 * host, port), a LIFO pool of idle keep-alive connections whose read event
 * stays registered, so reusing one costs no epoll_ctl and no liveness poll:
 * a server that closes an idle connection makes it readable, and it is
 * dropped then. A request is written with one writev (head and body) and
 * the answer is parsed where it was read (upstream_parse.c), so a stream's
 * bytes reach the client as they arrive.
 *
 * Nothing here calls back into the caller from sl_upcall_start: failures
 * found there are reported from the event loop. */
#include "upstream.h"
#include "error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SL_UPCALL_POOL_MAX 1024
#define SL_UP_BUF 16384          /* a connection's first read buffer */
#define SL_UP_IDLE_MAX 512       /* idle connections kept per origin */
#define SL_UP_IDLE_S 30          /* an idle connection is closed after */
#define SL_UP_SWEEP_S 5          /* how often idle connections are aged */
#define SL_UP_DNS_TTL_S 60       /* a resolved address is used this long */

typedef struct sl_origin sl_origin_t;
typedef struct sl_upconn sl_upconn_t;

enum { CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY };

struct sl_origin {
    sl_upstream_t *u;
    sl_origin_t *next;
    char *key; /* "scheme://authority" as the URL spells it */
    size_t key_len;
    char *host;     /* for DNS, SNI and certificate checks */
    char *hostport; /* the Host header */
    char port[8];
    int tls;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    time_t addr_until; /* 0: not resolved (a literal never expires) */
    sl_upconn_t *idle; /* most recently used first */
    size_t nidle;
    SSL_SESSION *session; /* for resumption on the next connection */
};

struct sl_upconn {
    sl_origin_t *o;
    sl_upconn_t *prev, *next; /* in the origin's idle list */
    sl_upcall_t *call;        /* NULL while idle */
    evutil_socket_t fd;
    SSL *ssl;
    struct event *ev;
    short ev_kind; /* what ev waits for; 0: not added */
    int state;
    int idle;   /* in the origin's idle list */
    int reused; /* has answered a request before */
    time_t idle_since;
    char *buf; /* bytes read and not yet parsed */
    size_t len, cap;
};

struct sl_upcall {
    sl_upstream_t *u;
    sl_upcall_t *next_free;
    const sl_upcall_ops_t *ops;
    void *ud;
    void (*on_header)(void *ud, const char *line, size_t len);
    sl_origin_t *o;
    sl_upconn_t *conn;
    struct event *t_total, *t_first_byte, *t_connect;
    struct event *later; /* reports a result or resumes, from the loop */
    struct evdns_getaddrinfo_request *dns;
    long connect_timeout_ms;
    sl_resp_parser_t parser;
    char *head; /* the request head, built once: a retry writes it again */
    size_t head_len, head_cap;
    const char *body;
    size_t body_len;
    size_t written; /* of head and body */
    int later_result;
    const char *later_why;
    int dns_pending;
    int retried;
    int got_body;
    int paused;
    int in_cb;     /* inside a callback of the caller's */
    int cancelled; /* cancelled inside one: freed when it returns */
    char retry_after[32];
    char content_type[128];
    char why[192];
};

struct sl_upstream {
    struct event_base *base;
    struct evdns_base *dns;
    SSL_CTX *tls;
    struct event *sweep;
    sl_origin_t *origins;
    sl_upcall_t *free_list;
    size_t nfree;
    size_t active;
};

static void conn_close(sl_upconn_t *k);
static void conn_begin(sl_upcall_t *c, sl_upconn_t *k);
static void call_connect(sl_upcall_t *c);
static void finish(sl_upcall_t *c, int result, const char *why);

/* ---- header lists ---- */

sl_headers_t *
sl_headers_append(sl_headers_t *list, const char *line)
{
    size_t n = strlen(line);
    sl_headers_t *h = malloc(sizeof(*h) + n + 3);
    if (h == NULL)
        return NULL;
    char *d = (char *)(h + 1);
    memcpy(d, line, n);
    memcpy(d + n, "\r\n", 3);
    h->data = d;
    h->len = n + 2;
    h->next = NULL;
    if (list == NULL)
        return h;
    sl_headers_t *t = list;
    while (t->next != NULL)
        t = (sl_headers_t *)t->next;
    t->next = h;
    return list;
}

void
sl_headers_free(sl_headers_t *list)
{
    while (list != NULL) {
        sl_headers_t *next = (sl_headers_t *)list->next;
        free(list);
        list = next;
    }
}

/* ---- origins ---- */

static void
origin_free(sl_origin_t *o)
{
    while (o->idle != NULL)
        conn_close(o->idle);
    if (o->session != NULL)
        SSL_SESSION_free(o->session);
    free(o->key);
    free(o->host);
    free(o->hostport);
    free(o);
}

/* Splits "scheme://authority/path": the origin for scheme://authority
 * (made on first use) and the path, "/" when the URL has none. */
static sl_origin_t *
origin_for(sl_upstream_t *u, const char *url, const char **path,
           const char **why)
{
    int tls;
    size_t skip;
    if (strncasecmp(url, "http://", 7) == 0) {
        tls = 0;
        skip = 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        tls = 1;
        skip = 8;
    } else {
        *why = "the upstream URL must start with http:// or https://";
        return NULL;
    }
    const char *auth = url + skip;
    size_t alen = strcspn(auth, "/?#");
    *path = auth[alen] == '/' ? auth + alen : "/";
    size_t klen = skip + alen;
    for (sl_origin_t *o = u->origins; o != NULL; o = o->next)
        if (o->key_len == klen && memcmp(o->key, url, klen) == 0)
            return o;

    if (alen == 0 || memchr(auth, '@', alen) != NULL) {
        *why = "the upstream URL has no host (or has user info)";
        return NULL;
    }
    const char *host = auth, *port = NULL;
    size_t hlen = alen;
    if (auth[0] == '[') { /* [v6]:port */
        const char *close = memchr(auth, ']', alen);
        if (close == NULL) {
            *why = "the upstream URL has a bad IPv6 host";
            return NULL;
        }
        host = auth + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < auth + alen) {
            if (close[1] != ':') {
                *why = "the upstream URL has a bad port";
                return NULL;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(auth, ':', alen);
        if (colon != NULL) {
            hlen = (size_t)(colon - auth);
            port = colon + 1;
        }
    }
    size_t plen = port ? (size_t)(auth + alen - port) : 0;
    if (hlen == 0 || (port != NULL && (plen == 0 || plen > 5 ||
                                       strspn(port, "0123456789") < plen))) {
        *why = "the upstream URL has a bad host or port";
        return NULL;
    }
    sl_origin_t *o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->u = u;
    o->tls = tls;
    o->key = strndup(url, klen);
    o->key_len = klen;
    o->host = strndup(host, hlen);
    o->hostport = strndup(auth, alen);
    if (port != NULL)
        memcpy(o->port, port, plen);
    else
        strcpy(o->port, tls ? "443" : "80");
    if (o->key == NULL || o->host == NULL || o->hostport == NULL) {
        origin_free(o);
        return NULL;
    }
    /* A literal address needs no resolving, ever. */
    struct sockaddr_in *v4 = (struct sockaddr_in *)&o->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&o->addr;
    int pn = atoi(o->port);
    if (inet_pton(AF_INET, o->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)pn);
        o->addrlen = sizeof(*v4);
        o->addr_until = (time_t)-1;
    } else if (inet_pton(AF_INET6, o->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)pn);
        o->addrlen = sizeof(*v6);
        o->addr_until = (time_t)-1;
    }
    o->next = u->origins;
    u->origins = o;
    return o;
}

static int
origin_is_literal(const sl_origin_t *o)
{
    return o->addr_until == (time_t)-1;
}

/* ---- connections ---- */

static void on_conn_event(evutil_socket_t fd, short what, void *arg);

/* Makes ev wait for `kind` (EV_READ, EV_WRITE, both, or 0 for nothing). */
static int
conn_watch(sl_upconn_t *k, short kind)
{
    if (k->ev_kind == kind)
        return 0;
    if (k->ev_kind != 0)
        event_del(k->ev);
    k->ev_kind = 0;
    if (kind == 0)
        return 0;
    event_assign(k->ev, k->o->u->base, k->fd, (short)(kind | EV_PERSIST),
                 on_conn_event, k);
    if (event_add(k->ev, NULL) != 0)
        return -1;
    k->ev_kind = kind;
    return 0;
}

static void
idle_unlink(sl_upconn_t *k)
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

static void
conn_close(sl_upconn_t *k)
{
    if (k->idle)
        idle_unlink(k);
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
    if (o->nidle >= SL_UP_IDLE_MAX || conn_watch(k, EV_READ) != 0) {
        conn_close(k);
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
    k->ev = event_new(o->u->base, -1, 0, on_conn_event, k);
    if (k->buf == NULL || k->ev == NULL) {
        free(k->buf);
        if (k->ev != NULL)
            event_free(k->ev);
        free(k);
        return NULL;
    }
    return k;
}

/* ---- the TLS context ---- */

static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    sl_upconn_t *k = SSL_get_app_data(ssl);
    if (k == NULL)
        return 0;
    if (k->o->session != NULL)
        SSL_SESSION_free(k->o->session);
    k->o->session = sess;
    return 1; /* we keep the reference */
}

static SSL_CTX *
tls_ctx(sl_upstream_t *u)
{
    if (u->tls != NULL)
        return u->tls;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* The system's CAs, or SSL_CERT_FILE / SSL_CERT_DIR when set. */
    SSL_CTX_set_default_verify_paths(ctx);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    u->tls = ctx;
    return ctx;
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

/* ---- calls ---- */

static void on_total_timeout(evutil_socket_t fd, short what, void *arg);
static void on_first_byte_timeout(evutil_socket_t fd, short what, void *arg);
static void on_connect_timeout(evutil_socket_t fd, short what, void *arg);
static void on_later(evutil_socket_t fd, short what, void *arg);

static void
call_free(sl_upcall_t *c)
{
    event_free(c->t_total);
    event_free(c->t_first_byte);
    event_free(c->t_connect);
    event_free(c->later);
    free(c->head);
    free(c);
}

static sl_upcall_t *
call_get(sl_upstream_t *u)
{
    sl_upcall_t *c = u->free_list;
    if (c != NULL) {
        u->free_list = c->next_free;
        u->nfree--;
        return c;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->u = u;
    c->t_total = evtimer_new(u->base, on_total_timeout, c);
    c->t_first_byte = evtimer_new(u->base, on_first_byte_timeout, c);
    c->t_connect = evtimer_new(u->base, on_connect_timeout, c);
    c->later = event_new(u->base, -1, 0, on_later, c);
    c->head_cap = 1024;
    c->head = malloc(c->head_cap);
    if (c->t_total == NULL || c->t_first_byte == NULL ||
        c->t_connect == NULL || c->later == NULL || c->head == NULL) {
        call_free(c);
        return NULL;
    }
    return c;
}

/* Stops everything the call waits on and returns it to the pool; its
 * connection, if any, is closed (it is mid-exchange). */
static void
call_put(sl_upcall_t *c)
{
    sl_upstream_t *u = c->u;
    evtimer_del(c->t_total);
    evtimer_del(c->t_first_byte);
    evtimer_del(c->t_connect);
    event_del(c->later);
    if (c->dns != NULL) {
        struct evdns_getaddrinfo_request *d = c->dns;
        c->dns = NULL;
        evdns_getaddrinfo_cancel(d); /* its callback sees EAI_CANCEL */
    }
    if (c->conn != NULL)
        conn_close(c->conn);
    u->active--;
    if (u->nfree >= SL_UPCALL_POOL_MAX) {
        call_free(c);
        return;
    }
    c->next_free = u->free_list;
    u->free_list = c;
    u->nfree++;
}

static void
finish(sl_upcall_t *c, int result, const char *why)
{
    const sl_upcall_ops_t *ops = c->ops;
    void *ud = c->ud;
    int status = c->parser.status;
    char copy[sizeof(c->why)];
    if (why == c->why) { /* the buffer goes back to the pool */
        memcpy(copy, c->why, sizeof(copy));
        why = copy;
    }
    call_put(c);
    ops->on_done(ud, result, status, why);
}

/* Reports a result from the event loop, not from the caller's stack. */
static void
fail_later(sl_upcall_t *c, int result, const char *why)
{
    c->later_result = result;
    c->later_why = why;
    event_assign(c->later, c->u->base, -1, 0, on_later, c);
    event_active(c->later, EV_TIMEOUT, 1);
}

static void
on_later(evutil_socket_t fd, short what, void *arg)
{
    sl_upcall_t *c = arg;
    if (c->later_result != 0) {
        finish(c, c->later_result, c->later_why);
        return;
    }
    /* A resume: parse what was read while paused. */
    sl_upconn_t *k = c->conn;
    if (k != NULL)
        on_conn_event(k->fd, EV_READ, k);
}

static void
on_total_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, SL_ETIMEDOUT, "the upstream timed out");
}

static void
on_first_byte_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, SL_ETIMEDOUT, "no answer from the upstream in time");
}

static void
on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, SL_ETIMEDOUT, "connecting to the upstream timed out");
}

static void
arm(struct event *ev, long ms)
{
    if (ms <= 0)
        return;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ---- the exchange ---- */

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
        call_put(c);
        return 1;
    }
    if (n < 0) {
        finish(c, c->parser.why ? SL_EUPSTREAM : SL_EINVAL,
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
            conn_close(k);
        finish(c, 0, NULL);
        return 1;
    }
    if (c->parser.paused)
        conn_watch(k, (short)(k->ev_kind & ~EV_READ));
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
    conn_close(k);
    if (retry) {
        c->retried = 1;
        c->written = 0;
        call_connect(c);
        return;
    }
    finish(c, SL_EUPSTREAM, why);
}

static void
conn_eof(sl_upconn_t *k)
{
    sl_upcall_t *c = k->call;
    if (c->parser.state == SL_RESP_TO_EOF) {
        sl_resp_eof(&c->parser);
        c->conn = NULL;
        k->call = NULL;
        conn_close(k);
        finish(c, 0, NULL);
        return;
    }
    sl_resp_eof(&c->parser);
    conn_failed(k, c->parser.why);
}

/* Writes what is left of the request. 0 when all is written or the kernel
 * is full (EV_WRITE then waits), -1 when the connection failed. */
static int
conn_write(sl_upconn_t *k)
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
                    return conn_watch(k, EV_READ | EV_WRITE);
                if (e == SSL_ERROR_WANT_READ)
                    return conn_watch(k, EV_READ);
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
                    return conn_watch(k, EV_READ | EV_WRITE);
                if (errno == EINTR)
                    continue;
                return -1;
            }
        }
        c->written += (size_t)n;
    }
    return conn_watch(k, c->paused ? 0 : EV_READ);
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
                finish(c, SL_EUPSTREAM, "upstream response head is too "
                                        "large");
                return;
            }
            char *grown = realloc(k->buf, k->cap * 2);
            if (grown == NULL) {
                finish(c, SL_EUPSTREAM, "out of memory");
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
                    conn_watch(k, EV_READ | EV_WRITE);
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
        conn_watch(k, EV_READ);
        return;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        conn_watch(k, EV_READ | EV_WRITE);
        return;
    }
    const char *why = tls_error(c, "TLS handshake with the upstream failed");
    conn_close(k);
    finish(c, SL_EUPSTREAM, why);
}

static void
on_conn_event(evutil_socket_t fd, short what, void *arg)
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
        conn_close(k);
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
            conn_close(k);
            finish(c, SL_EUPSTREAM, c->why);
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
        if (conn_write(k) != 0) {
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
    if (conn_write(k) != 0) {
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
        finish(c, SL_EUPSTREAM, "out of memory");
        return;
    }
    k->call = c;
    c->conn = k;
    k->fd = socket(o->addr.ss_family,
                   SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        snprintf(c->why, sizeof(c->why), "cannot make a socket: %s",
                 strerror(errno));
        conn_close(k);
        finish(c, SL_EUPSTREAM, c->why);
        return;
    }
    int one = 1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(k->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (o->tls) {
        SSL_CTX *ctx = tls_ctx(o->u);
        k->ssl = ctx != NULL ? SSL_new(ctx) : NULL;
        if (k->ssl == NULL || SSL_set_fd(k->ssl, k->fd) != 1) {
            conn_close(k);
            finish(c, SL_EUPSTREAM, "cannot set up TLS");
            return;
        }
        SSL_set_app_data(k->ssl, k);
        if (origin_is_literal(o)) {
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
        conn_close(k);
        finish(c, SL_EUPSTREAM, c->why);
        return;
    }
    if (conn_watch(k, EV_WRITE) != 0) {
        conn_close(k);
        finish(c, SL_EUPSTREAM, "cannot watch the upstream connection");
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
        finish(c, SL_EUPSTREAM, c->why);
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
static void
call_connect(sl_upcall_t *c)
{
    sl_origin_t *o = c->o;
    /* The connect timeout covers resolving, connecting and TLS. */
    arm(c->t_connect, c->connect_timeout_ms);
    if (origin_is_literal(o) || (o->addr_until != 0 &&
                                 time(NULL) < o->addr_until)) {
        connect_to(c);
        return;
    }
    sl_upstream_t *u = c->u;
    if (u->dns == NULL) {
        u->dns = evdns_base_new(u->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (u->dns == NULL) {
            finish(c, SL_EUPSTREAM, "cannot start the DNS resolver");
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

static void
on_start_connect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    call_connect(arg);
}

static int
head_reserve(sl_upcall_t *c, size_t need)
{
    if (need <= c->head_cap)
        return 0;
    size_t cap = c->head_cap;
    while (cap < need)
        cap *= 2;
    char *grown = realloc(c->head, cap);
    if (grown == NULL)
        return -1;
    c->head = grown;
    c->head_cap = cap;
    return 0;
}

static char *
put(char *d, const char *s, size_t n)
{
    memcpy(d, s, n);
    return d + n;
}

/* "METHOD path HTTP/1.1", Host, the caller's lines, Content-Length. */
static int
build_head(sl_upcall_t *c, const char *method, const char *path,
           const sl_headers_t *headers, int with_body)
{
    size_t mlen = strlen(method), plen = strlen(path);
    size_t hlen = strlen(c->o->hostport);
    size_t need = mlen + plen + hlen + 64;
    for (const sl_headers_t *h = headers; h != NULL; h = h->next)
        need += h->len;
    if (head_reserve(c, need) != 0)
        return -1;
    char *d = c->head;
    d = put(d, method, mlen);
    *d++ = ' ';
    d = put(d, path, plen);
    d = put(d, " HTTP/1.1\r\nHost: ", 17);
    d = put(d, c->o->hostport, hlen);
    d = put(d, "\r\n", 2);
    for (const sl_headers_t *h = headers; h != NULL; h = h->next)
        d = put(d, h->data, h->len);
    if (with_body) {
        char num[24];
        int i = (int)sizeof(num);
        size_t v = c->body_len;
        do {
            num[--i] = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        d = put(d, "Content-Length: ", 16);
        d = put(d, num + i, sizeof(num) - (size_t)i);
        d = put(d, "\r\n", 2);
    }
    d = put(d, "\r\n", 2);
    c->head_len = (size_t)(d - c->head);
    return 0;
}

sl_upcall_t *
sl_upcall_start(sl_upstream_t *u, const sl_upcall_params_t *p,
                const sl_upcall_ops_t *ops, void *ud)
{
    sl_upcall_t *c = call_get(u);
    if (c == NULL)
        return NULL;
    u->active++;
    c->ops = ops;
    c->ud = ud;
    c->on_header = p->on_header;
    c->conn = NULL;
    c->dns = NULL;
    c->dns_pending = c->retried = c->got_body = c->paused = 0;
    c->in_cb = c->cancelled = 0;
    c->written = 0;
    c->later_result = 0;
    c->retry_after[0] = c->content_type[0] = c->why[0] = '\0';
    c->connect_timeout_ms = p->connect_timeout_ms;
    const char *method = p->method != NULL ? p->method : "POST";
    int head_only = strcmp(method, "HEAD") == 0;
    int with_body = !head_only && strcmp(method, "GET") != 0;
    c->body = with_body ? p->body : NULL;
    c->body_len = with_body && p->body != NULL ? p->body_len : 0;
    sl_resp_init(&c->parser, head_only);

    const char *path = "/", *why = "out of memory";
    c->o = origin_for(u, p->url, &path, &why);
    if (c->o == NULL || build_head(c, method, path, p->headers, with_body)) {
        c->o = NULL;
        fail_later(c, SL_EUPSTREAM, why);
        return c;
    }
    arm(c->t_total, p->timeout_ms);
    arm(c->t_first_byte, p->first_byte_timeout_ms);

    sl_upconn_t *k = c->o->idle;
    if (k != NULL) {
        idle_unlink(k);
        c->conn = k;
        k->call = c;
        /* Written now: the request is on its way before the loop turns.
         * A failure is reported (or retried) from the loop. */
        if (conn_write(k) != 0)
            event_active(k->ev, EV_WRITE, 1);
        return c;
    }
    /* Connecting may fail at once; its report must come from the loop. */
    event_assign(c->later, u->base, -1, 0, on_start_connect, c);
    event_active(c->later, EV_TIMEOUT, 1);
    return c;
}

void
sl_upcall_cancel(sl_upcall_t *c)
{
    if (c == NULL)
        return;
    if (c->in_cb) {
        c->cancelled = 1;
        return;
    }
    call_put(c);
}

void
sl_upcall_pause(sl_upcall_t *c, int paused)
{
    if (c->paused == paused)
        return;
    c->paused = paused;
    sl_upconn_t *k = c->conn;
    if (paused) {
        /* on_body stops the parser; reading stops here. */
        if (k != NULL && !c->in_cb)
            conn_watch(k, (short)(k->ev_kind & ~EV_READ));
        return;
    }
    c->parser.paused = 0;
    if (k == NULL || k->state != CONN_READY)
        return;
    conn_watch(k, (short)(k->ev_kind | EV_READ));
    /* Bytes read before the pause are parsed from the loop. */
    if (k->len > 0 && !event_pending(c->later, EV_TIMEOUT, NULL)) {
        event_assign(c->later, c->u->base, -1, 0, on_later, c);
        event_active(c->later, EV_TIMEOUT, 1);
    }
}

const char *
sl_upcall_retry_after(const sl_upcall_t *c)
{
    return c->retry_after[0] ? c->retry_after : NULL;
}

const char *
sl_upcall_content_type(const sl_upcall_t *c)
{
    return c->content_type[0] ? c->content_type : NULL;
}

size_t
sl_upstream_active(const sl_upstream_t *u)
{
    return u->active;
}

/* Closes connections idle for longer than the servers are likely to keep
 * them (and that we would otherwise hold for nothing). */
static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
    sl_upstream_t *u = arg;
    (void)fd;
    (void)what;
    time_t old = time(NULL) - SL_UP_IDLE_S;
    for (sl_origin_t *o = u->origins; o != NULL; o = o->next) {
        sl_upconn_t *k = o->idle;
        while (k != NULL) {
            sl_upconn_t *next = k->next;
            if (k->idle_since < old)
                conn_close(k);
            k = next;
        }
    }
}

sl_upstream_t *
sl_upstream_create(struct event_base *base)
{
    sl_upstream_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->base = base;
    u->sweep = event_new(base, -1, EV_PERSIST, on_sweep, u);
    struct timeval tv = {SL_UP_SWEEP_S, 0};
    if (u->sweep == NULL || event_add(u->sweep, &tv) != 0) {
        if (u->sweep != NULL)
            event_free(u->sweep);
        free(u);
        return NULL;
    }
    return u;
}

void
sl_upstream_destroy(sl_upstream_t *u)
{
    if (u == NULL)
        return;
    while (u->origins != NULL) {
        sl_origin_t *o = u->origins;
        u->origins = o->next;
        origin_free(o);
    }
    while (u->free_list != NULL) {
        sl_upcall_t *c = u->free_list;
        u->free_list = c->next_free;
        call_free(c);
    }
    if (u->dns != NULL)
        evdns_base_free(u->dns, 1);
    if (u->tls != NULL)
        SSL_CTX_free(u->tls);
    event_free(u->sweep);
    free(u);
}
