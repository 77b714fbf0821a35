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
#include "upstream_int.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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
void
sl_up_call_put(sl_upcall_t *c)
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
        sl_up_conn_close(c->conn);
    u->active--;
    if (u->nfree >= SL_UPCALL_POOL_MAX) {
        call_free(c);
        return;
    }
    c->next_free = u->free_list;
    u->free_list = c;
    u->nfree++;
}

void
sl_up_finish(sl_upcall_t *c, int result, const char *why)
{
    const sl_upcall_ops_t *ops = c->ops;
    void *ud = c->ud;
    int status = c->parser.status;
    char copy[sizeof(c->why)];
    if (why == c->why) { /* the buffer goes back to the pool */
        memcpy(copy, c->why, sizeof(copy));
        why = copy;
    }
    sl_up_call_put(c);
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
        sl_up_finish(c, c->later_result, c->later_why);
        return;
    }
    /* A resume: parse what was read while paused. */
    sl_upconn_t *k = c->conn;
    if (k != NULL)
        sl_up_conn_event(k->fd, EV_READ, k);
}

static void
on_total_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sl_up_finish(arg, SL_ETIMEDOUT, "the upstream timed out");
}

static void
on_first_byte_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sl_up_finish(arg, SL_ETIMEDOUT, "no answer from the upstream in time");
}

static void
on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sl_up_finish(arg, SL_ETIMEDOUT, "connecting to the upstream timed out");
}

void
sl_up_arm(struct event *ev, long ms)
{
    if (ms <= 0)
        return;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void
on_start_connect(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sl_up_connect(arg);
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
    c->o = sl_up_origin_for(u, p->url, &path, &why);
    if (c->o == NULL || build_head(c, method, path, p->headers, with_body)) {
        c->o = NULL;
        fail_later(c, SL_EUPSTREAM, why);
        return c;
    }
    sl_up_arm(c->t_total, p->timeout_ms);
    sl_up_arm(c->t_first_byte, p->first_byte_timeout_ms);

    sl_upconn_t *k = c->o->idle;
    if (k != NULL) {
        sl_up_idle_unlink(k);
        c->conn = k;
        k->call = c;
        /* Written now: the request is on its way before the loop turns.
         * A failure is reported (or retried) from the loop. */
        if (sl_up_conn_write(k) != 0)
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
    sl_up_call_put(c);
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
            sl_up_conn_watch(k, (short)(k->ev_kind & ~EV_READ));
        return;
    }
    c->parser.paused = 0;
    if (k == NULL || k->state != CONN_READY)
        return;
    sl_up_conn_watch(k, (short)(k->ev_kind | EV_READ));
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
                sl_up_conn_close(k);
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
        sl_up_origin_free(o);
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
