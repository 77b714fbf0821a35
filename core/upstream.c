/* libcurl multi on the worker's event_base (the curl "multi_socket" API):
 * curl tells us which sockets to watch, libevent tells curl when they are
 * ready. Easy handles are pooled so that a request only sets options. */
#include "upstream.h"
#include "error.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SL_UPCALL_POOL_MAX 1024

struct sl_upcall {
    sl_upstream_t *u;
    CURL *easy;
    const sl_upcall_ops_t *ops;
    void *ud;
    struct event *fb_timer;
    struct sl_upcall *next_free;
    sl_resp_check_t check;
    int status;
    int got_body;
    int bad_framing;
    int aborted_by_cb;
    int not_post; /* the pooled handle was set up for another method */
    void (*on_header)(void *ud, const char *line, size_t len);
    const char *why;
    char retry_after[32];
    char content_type[128];
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct sl_sock sl_sock_t;

struct sl_upstream {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    sl_upcall_t *free_list;
    size_t nfree;
    size_t active;
    sl_sock_t **socks; /* by fd */
    size_t nsocks;
};

/* A socket curl asked us to watch. When curl is done with a keep-alive
 * connection (POLL_REMOVE) its event stays registered, "parked", so that
 * the next transfer on it costs no epoll_ctl; a parked socket that turns
 * readable (the server closed it) is unregistered and left to curl's own
 * liveness check. Sockets are found by fd, never through curl's pointer,
 * because curl may close a socket before or after removing it. */
struct sl_sock {
    struct event *ev;
    sl_upstream_t *u;
    curl_socket_t fd;
    short kind;
    int added;
    int parked;
};

static void check_multi_info(sl_upstream_t *u);

static sl_sock_t *
sock_lookup(sl_upstream_t *u, curl_socket_t fd)
{
    return fd >= 0 && (size_t)fd < u->nsocks ? u->socks[fd] : NULL;
}

static sl_sock_t *
sock_new(sl_upstream_t *u, curl_socket_t fd)
{
    if ((size_t)fd >= u->nsocks) {
        size_t n = u->nsocks ? u->nsocks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        sl_sock_t **grown = realloc(u->socks, n * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        memset(grown + u->nsocks, 0, (n - u->nsocks) * sizeof(*grown));
        u->socks = grown;
        u->nsocks = n;
    }
    sl_sock_t *sk = calloc(1, sizeof(*sk));
    if (sk == NULL)
        return NULL;
    sk->u = u;
    sk->fd = fd;
    u->socks[fd] = sk;
    return sk;
}

static void
sock_free(sl_upstream_t *u, sl_sock_t *sk)
{
    if (sk->ev != NULL)
        event_free(sk->ev);
    u->socks[sk->fd] = NULL;
    free(sk);
}

static void
on_socket_ready(evutil_socket_t fd, short what, void *arg)
{
    sl_sock_t *sk = arg;
    sl_upstream_t *u = sk->u;
    if (sk->parked) {
        event_del(sk->ev);
        sk->added = 0;
        return;
    }
    int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                 ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(u->multi, fd, action, &running);
    check_multi_info(u);
}

static int
sock_watch(sl_sock_t *sk, short kind)
{
    if (sk->added && sk->kind == kind)
        return 0;
    if (sk->ev == NULL) {
        sk->ev = event_new(sk->u->base, sk->fd, kind, on_socket_ready, sk);
        if (sk->ev == NULL)
            return -1;
    } else {
        if (sk->added)
            event_del(sk->ev);
        event_assign(sk->ev, sk->u->base, sk->fd, kind, on_socket_ready, sk);
    }
    sk->kind = kind;
    sk->added = event_add(sk->ev, NULL) == 0;
    return sk->added ? 0 : -1;
}

static int
on_curl_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    sl_upstream_t *u = userp;
    sl_sock_t *sk = sock_lookup(u, s);
    if (what == CURL_POLL_REMOVE) {
        if (sk != NULL) {
            sk->parked = 1;
            if (sk->added && !(sk->kind & EV_READ)) {
                event_del(sk->ev);
                sk->added = 0;
            }
        }
        return 0;
    }
    if (sk == NULL && (sk = sock_new(u, s)) == NULL)
        return -1;
    sk->parked = 0;
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    return sock_watch(sk, kind);
}

static int
on_close_socket(void *clientp, curl_socket_t fd)
{
    sl_upstream_t *u = clientp;
    sl_sock_t *sk = sock_lookup(u, fd);
    if (sk != NULL)
        sock_free(u, sk);
    return close(fd);
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    sl_upstream_t *u = arg;
    int running;
    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info(u);
}

static int
on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    sl_upstream_t *u = userp;
    if (timeout_ms < 0) {
        evtimer_del(u->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(u->timer, &tv);
    return 0;
}

sl_upstream_t *
sl_upstream_create(struct event_base *base)
{
    sl_upstream_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->base = base;
    u->multi = curl_multi_init();
    u->timer = evtimer_new(base, on_timer, u);
    if (u->multi == NULL || u->timer == NULL)
        goto fail;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    /* Keep enough idle keep-alive connections for a busy worker. */
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 512L);
    return u;
fail:
    if (u->multi != NULL)
        curl_multi_cleanup(u->multi);
    if (u->timer != NULL)
        event_free(u->timer);
    free(u);
    return NULL;
}

static void
upcall_free(sl_upcall_t *c)
{
    curl_easy_cleanup(c->easy);
    event_free(c->fb_timer);
    free(c);
}

void
sl_upstream_destroy(sl_upstream_t *u)
{
    if (u == NULL)
        return;
    while (u->free_list != NULL) {
        sl_upcall_t *c = u->free_list;
        u->free_list = c->next_free;
        upcall_free(c);
    }
    curl_multi_cleanup(u->multi);
    for (size_t i = 0; i < u->nsocks; i++)
        if (u->socks[i] != NULL)
            sock_free(u, u->socks[i]);
    free(u->socks);
    event_free(u->timer);
    free(u);
}

size_t
sl_upstream_active(const sl_upstream_t *u)
{
    return u->active;
}

static int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

int
sl_upstream_check_header(sl_resp_check_t *st, const char *line, size_t len,
                         const char **why)
{
    if (len < 2 || line[len - 2] != '\r' || line[len - 1] != '\n') {
        *why = "upstream header line does not end in CRLF";
        return SL_EINVAL;
    }
    len -= 2;
    if (len == 0) { /* end of the head */
        if (st->content_lengths > 0 && st->transfer_encodings > 0) {
            *why = "upstream sent both Content-Length and Transfer-Encoding";
            return SL_EINVAL;
        }
        return 0;
    }
    if (line[0] == ' ' || line[0] == '\t') {
        *why = "upstream sent an obsolete folded header line";
        return SL_EINVAL;
    }
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i >= len || line[i] != ':') {
        *why = "upstream sent an invalid header name";
        return SL_EINVAL;
    }
    size_t name_len = i;
    const char *v = line + i + 1, *end = line + len;
    for (const char *p = v; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *why = "upstream sent a control byte in a header value";
            return SL_EINVAL;
        }
    }
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vlen = (size_t)(end - v);
    if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
        if (++st->content_lengths > 1) {
            *why = "upstream sent more than one Content-Length";
            return SL_EINVAL;
        }
        if (vlen == 0 || vlen > 18) {
            *why = "upstream sent an invalid Content-Length";
            return SL_EINVAL;
        }
        int64_t n = 0;
        for (size_t k = 0; k < vlen; k++) {
            if (v[k] < '0' || v[k] > '9') {
                *why = "upstream sent an invalid Content-Length";
                return SL_EINVAL;
            }
            n = n * 10 + (v[k] - '0');
        }
        st->content_length = n;
    } else if (name_len == 17 &&
               strncasecmp(line, "Transfer-Encoding", 17) == 0) {
        if (++st->transfer_encodings > 1 || vlen != 7 ||
            strncasecmp(v, "chunked", 7) != 0) {
            *why = "upstream sent a Transfer-Encoding other than chunked";
            return SL_EINVAL;
        }
    }
    return 0;
}

static void
copy_value(char *dst, size_t cap, const char *line, size_t len,
           size_t name_len)
{
    const char *v = line + name_len + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t' ||
                       end[-1] == '\r' || end[-1] == '\n'))
        end--;
    size_t n = (size_t)(end - v);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static size_t
on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    sl_upcall_t *c = ud;
    size_t len = size * nitems;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new status line (after a 1xx too) starts a new head. */
        memset(&c->check, 0, sizeof(c->check));
        c->retry_after[0] = c->content_type[0] = '\0';
        if (len < 2 || buf[len - 2] != '\r') {
            c->bad_framing = 1;
            c->why = "upstream status line does not end in CRLF";
            return 0;
        }
        if (c->on_header != NULL)
            c->on_header(c->ud, buf, len - 2);
        return len;
    }
    if (sl_upstream_check_header(&c->check, buf, len, &c->why) != 0) {
        c->bad_framing = 1;
        return 0;
    }
    if (c->on_header != NULL && len > 2)
        c->on_header(c->ud, buf, len - 2);
    if (len > 12 && strncasecmp(buf, "Retry-After:", 12) == 0)
        copy_value(c->retry_after, sizeof(c->retry_after), buf, len, 11);
    else if (len > 13 && strncasecmp(buf, "Content-Type:", 13) == 0)
        copy_value(c->content_type, sizeof(c->content_type), buf, len, 12);
    return len;
}

static size_t
on_write(char *buf, size_t size, size_t nmemb, void *ud)
{
    sl_upcall_t *c = ud;
    size_t len = size * nmemb;
    if (!c->got_body) {
        c->got_body = 1;
        evtimer_del(c->fb_timer);
        long code = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
        c->status = (int)code;
    }
    if (c->ops->on_data(c->ud, c->status, buf, len) != 0) {
        c->aborted_by_cb = 1;
        return 0;
    }
    return len;
}

static void
release(sl_upcall_t *c)
{
    sl_upstream_t *u = c->u;
    evtimer_del(c->fb_timer);
    curl_multi_remove_handle(u->multi, c->easy);
    u->active--;
    if (u->nfree >= SL_UPCALL_POOL_MAX) {
        upcall_free(c);
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
    int status = c->status;
    if (status == 0) {
        long code = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &code);
        status = (int)code;
    }
    release(c);
    ops->on_done(ud, result, status, why);
}

static void
on_first_byte_timeout(evutil_socket_t fd, short what, void *arg)
{
    finish(arg, SL_ETIMEDOUT, "no answer from the upstream in time");
}

static void
check_multi_info(sl_upstream_t *u)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(u->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        sl_upcall_t *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        CURLcode rc = msg->data.result;
        if (c->bad_framing)
            finish(c, SL_EUPSTREAM, c->why);
        else if (c->aborted_by_cb)
            finish(c, SL_EINVAL, "the response was refused");
        else if (rc == CURLE_OK)
            finish(c, 0, NULL);
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            finish(c, SL_ETIMEDOUT, "the upstream timed out");
        else
            finish(c, SL_EUPSTREAM,
                   c->errbuf[0] ? c->errbuf : curl_easy_strerror(rc));
    }
}

static sl_upcall_t *
upcall_get(sl_upstream_t *u)
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
    c->easy = curl_easy_init();
    c->fb_timer = evtimer_new(u->base, on_first_byte_timeout, c);
    if (c->easy == NULL || c->fb_timer == NULL) {
        if (c->easy)
            curl_easy_cleanup(c->easy);
        if (c->fb_timer)
            event_free(c->fb_timer);
        free(c);
        return NULL;
    }
    /* Options that never change for a pooled handle. */
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    return c;
}

/* Another method than the POST pooled handles are set up for; the next
 * POST on this handle puts POST back. */
static void
set_method(sl_upcall_t *c, const char *method)
{
    CURL *e = c->easy;
    c->not_post = 1;
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
}

sl_upcall_t *
sl_upcall_start(sl_upstream_t *u, const sl_upcall_params_t *p,
                const sl_upcall_ops_t *ops, void *ud)
{
    sl_upcall_t *c = upcall_get(u);
    if (c == NULL)
        return NULL;
    c->ops = ops;
    c->ud = ud;
    c->on_header = p->on_header;
    c->status = 0;
    c->got_body = c->bad_framing = c->aborted_by_cb = 0;
    c->why = NULL;
    c->errbuf[0] = c->retry_after[0] = c->content_type[0] = '\0';
    memset(&c->check, 0, sizeof(c->check));
    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, p->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, p->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, p->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body_len);
    /* After the body: setting POSTFIELDS makes the request a POST again. */
    if (p->method != NULL && strcmp(p->method, "POST") != 0) {
        set_method(c, p->method);
    } else if (c->not_post) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        c->not_post = 0;
    }
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, p->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, p->timeout_ms);
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK) {
        c->next_free = u->free_list;
        u->free_list = c;
        u->nfree++;
        return NULL;
    }
    u->active++;
    if (p->first_byte_timeout_ms > 0) {
        struct timeval tv = {p->first_byte_timeout_ms / 1000,
                             (p->first_byte_timeout_ms % 1000) * 1000};
        evtimer_add(c->fb_timer, &tv);
    }
    return c;
}

void
sl_upcall_cancel(sl_upcall_t *c)
{
    if (c != NULL)
        release(c);
}

void
sl_upcall_pause(sl_upcall_t *c, int paused)
{
    curl_easy_pause(c->easy, paused ? CURLPAUSE_RECV : CURLPAUSE_CONT);
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
