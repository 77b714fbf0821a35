/* Client connections. The socket is read and written directly, not
 * through a bufferevent: a response is written at once with one writev and
 * a write event is registered only when the kernel cannot take it all, and
 * reads need no FIONREAD first; that is three syscalls per request fewer.
 * The head is parsed by our strict parser straight out of the input
 * buffer, then copied once into the request arena so the request can point
 * into it. */
#include "conn.h"
#include "../lua/host.h"
#include "accesslog.h"
#include "clock.h"
#include "error.h"
#include "tls.h"
#include "pipeline.h"
#include "metrics.h"
#include "requestlog.h"
#include "usage.h"

#include <errno.h>
#include <stddef.h>
#include <openssl/err.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

enum { TIMER_NONE, TIMER_IDLE, TIMER_HEADER, TIMER_BODY };

/* Past this much unsent output a stream's source is paused. */
#define SL_OUT_HIGH (1u << 20)
#define SL_OUT_LOW (1u << 18)

static void conn_process(sl_conn_t *c);

/* The end of every request, answered or abandoned: cost, budget and
 * ledger, log line and metrics. */
static void
request_log(sl_worker_t *w, sl_request_t *r)
{
    uint64_t now = sl_now_us(); /* one clock read for all of them */
    sl_usage_request_done(w, r);
    sl_accesslog_write(w->log, r);
    if (r->cfg->metrics)
        sl_metrics_request_done(w->metrics, r, now);
    if (!w->admin)
        sl_reqlog_write(w->srv->store, r, now);
}

void
sl_request_log(sl_request_t *r)
{
    request_log(r->w, r);
}
static void conn_flush(sl_conn_t *c);

static const char *
status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 400 ? "OK" : "Error";
    }
}

/* Arms the timer for what the connection now waits for. Inside
 * conn_process this is only noted, and applied once when it returns: a
 * request that arrives whole in one read goes from idle to handled
 * without arming the header and body timers it never waits on. */
static void
timer_set(sl_conn_t *c, int kind)
{
    c->timer_want = kind;
    c->timer_rearm = 1;
}

static void
timer_apply(sl_conn_t *c)
{
    if (!c->timer_rearm)
        return;
    c->timer_rearm = 0;
    int kind = c->timer_want;
    if (kind == TIMER_NONE && c->timer_kind == TIMER_NONE)
        return;
    const struct timeval *tv = NULL;
    switch (kind) {
    case TIMER_IDLE: tv = c->w->tv_idle; break;
    case TIMER_HEADER: tv = c->w->tv_header; break;
    case TIMER_BODY: tv = c->w->tv_body; break;
    default: break;
    }
    c->timer_kind = kind;
    if (tv == NULL)
        evtimer_del(c->timer);
    else
        evtimer_add(c->timer, tv);
}

static void
conn_free(sl_conn_t *c)
{
    sl_worker_t *w = c->w;
    if (c->req != NULL) {
        sl_request_t *r = c->req;
        if (r->cancel != NULL) {
            r->cancel(r);
            r->cancel = NULL;
        }
        if (!r->responded || r->streaming) {
            r->client_gone = 1;
            if (!r->responded)
                r->status = 499;
            r->error_code = r->streaming ? "client_closed_mid_stream"
                                         : "client_closed";
            request_log(w, r);
        }
        c->req = NULL;
    }
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    event_free(c->timer);
    event_free(c->rev);
    event_free(c->wev);
    if (c->ssl != NULL) {
        SSL_set_quiet_shutdown(c->ssl, 1);
        SSL_free(c->ssl);
    }
    free(c->tls_peer);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    evutil_closesocket(c->fd);
    sl_arena_destroy(c->arena);
    free(c);
    sl_worker_conn_closed(w);
}

/* Stops reading and closes once the output has been flushed. */
static void
conn_close_after_write(sl_conn_t *c)
{
    c->state = SL_CONN_CLOSING;
    c->keep_alive = 0;
    c->timer_want = c->timer_kind = TIMER_NONE;
    c->timer_rearm = 0;
    event_del(c->rev);
    /* Bound the flush: a client that never reads must not pin us. */
    evtimer_add(c->timer, c->w->tv_body);
    if (evbuffer_get_length(c->out) == 0 && !c->processing)
        conn_free(c);
}

void
sl_conn_close(sl_conn_t *c)
{
    conn_free(c);
}

int
sl_conn_is_idle(const sl_conn_t *c)
{
    return c->state == SL_CONN_HEAD && evbuffer_get_length(c->in) == 0;
}

/* The request is answered: log it, and get ready for the next one. */
static void
request_done(sl_conn_t *c)
{
    sl_request_t *r = c->req;
    request_log(c->w, r);
    c->req = NULL;
    sl_arena_reset(c->arena);
    c->requests++;
    if (!c->keep_alive || c->w->draining) {
        conn_close_after_write(c);
        return;
    }
    c->state = SL_CONN_HEAD;
    timer_set(c, evbuffer_get_length(c->in) > 0 ? TIMER_HEADER : TIMER_IDLE);
    if (!c->processing)
        conn_process(c);
}

/* Microseconds the gateway itself has spent on r by `now` (total minus
 * upstream). */
static uint64_t
overhead_us(const sl_request_t *r, uint64_t now)
{
    uint64_t total = now - r->t_start;
    uint64_t up = r->upstream_us;
    if (r->t_upstream != 0 && up == 0)
        up = now - r->t_upstream; /* still waiting (stream head) */
    return total > up ? total - up : 0;
}

double
sl_request_overhead_ms(const sl_request_t *r)
{
    return (double)overhead_us(r, sl_now_us()) / 1000.0;
}

/* A response head is built by hand: snprintf was a tenth of what the
 * gateway spent on a pass-through request. Every append is clamped to the
 * buffer; the caller's buffer always has room for the fixed parts. */
typedef struct {
    char *buf;
    size_t cap, len;
} head_t;

static void
head_put(head_t *h, const char *s, size_t n)
{
    if (n > h->cap - 1 - h->len)
        n = h->cap - 1 - h->len;
    memcpy(h->buf + h->len, s, n);
    h->len += n;
}

#define HEAD_LIT(h, s) head_put((h), (s), sizeof(s) - 1)

static void
head_str(head_t *h, const char *s)
{
    head_put(h, s, strlen(s));
}

/* Decimal digits of v, at least `min` of them. */
static void
head_uint(head_t *h, unsigned long long v, int min)
{
    char d[24];
    int n = 0;
    do {
        d[sizeof(d) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 || n < min);
    head_put(h, d + sizeof(d) - n, (size_t)n);
}

/* Writes the status line and the common headers into buf. */
static size_t
format_head(sl_request_t *r, char *buf, size_t cap, int status,
            const char *content_type, long long content_length,
            const char *pre, const char *extra)
{
    sl_conn_t *c = r->conn;
    head_t h = {buf, cap, 0};
    if (c->w->draining || r->http.version_minor == 0)
        c->keep_alive = c->keep_alive && !c->w->draining;
    /* response_begin has just read the clock */
    uint64_t over = overhead_us(r, r->t_first_byte);
    HEAD_LIT(&h, "HTTP/1.1 ");
    head_uint(&h, (unsigned)status, 3);
    HEAD_LIT(&h, " ");
    head_str(&h, status_text(status));
    HEAD_LIT(&h, "\r\nServer: sluice\r\nx-sluice-overhead-ms: ");
    head_uint(&h, over / 1000, 1);
    HEAD_LIT(&h, ".");
    head_uint(&h, over % 1000, 3);
    HEAD_LIT(&h, "\r\n");
    if (content_type != NULL) {
        HEAD_LIT(&h, "Content-Type: ");
        head_str(&h, content_type);
        HEAD_LIT(&h, "\r\n");
    }
    if (content_length >= 0) {
        HEAD_LIT(&h, "Content-Length: ");
        head_uint(&h, (unsigned long long)content_length, 1);
        HEAD_LIT(&h, "\r\n");
    }
    if (!c->keep_alive)
        HEAD_LIT(&h, "Connection: close\r\n");
    else if (r->http.version_minor == 0)
        HEAD_LIT(&h, "Connection: keep-alive\r\n");
    if (pre != NULL)
        head_str(&h, pre);
    if (extra != NULL)
        head_str(&h, extra);
    if (r->trace_id[0] != '\0') {
        HEAD_LIT(&h, "x-sluice-trace-id: ");
        head_str(&h, r->trace_id);
        HEAD_LIT(&h, "\r\n");
    }
    if (r->plugin_headers != NULL &&
        h.len + strlen(r->plugin_headers) + 3 < cap)
        head_str(&h, r->plugin_headers);
    HEAD_LIT(&h, "\r\n");
    return h.len;
}

static void
response_begin(sl_request_t *r, int status)
{
    r->status = status;
    r->responded = 1;
    r->t_first_byte = sl_now_us();
}

void
sl_response_send(sl_request_t *r, int status, const char *content_type,
                 const char *extra, const char *body, size_t len)
{
    sl_conn_t *c = r->conn;
    char head[2048];
    if (r->lua != NULL &&
        sl_lua_response(r, status, content_type, extra, body, len))
        return;
    if (r->pipe != NULL)
        sl_pipeline_response(r, &status, &content_type, &body, &len);
    sl_reqlog_answer(r, body, len);
    if (r->front != NULL) {
        const sl_front_t *f = r->front;
        r->front = NULL;
        f->respond(r, status, content_type, extra, body, len);
        return;
    }
    response_begin(r, status);
    size_t hl = format_head(r, head, sizeof(head), status, content_type,
                            (long long)len, NULL, extra);
    struct evbuffer *out = c->out;
    evbuffer_add(out, head, hl);
    if (r->http.method != SL_METHOD_HEAD && len > 0)
        evbuffer_add(out, body, len);
    r->bytes_out = hl + len;
    conn_flush(c);
    request_done(c);
}

void
sl_response_send_buffer(sl_request_t *r, int status, const char *content_type,
                        const char *extra, struct evbuffer *body)
{
    sl_conn_t *c = r->conn;
    char head[2048];
    if (r->lua != NULL) { /* on_response wants the answer in one piece */
        size_t n = evbuffer_get_length(body);
        const char *b = n > 0 ? (const char *)evbuffer_pullup(body, -1) : "";
        sl_response_send(r, status, content_type, extra, b, n);
        return;
    }
    if (r->pipe != NULL &&
        sl_pipeline_response_buffer(r, status, content_type, extra, body))
        return;
    size_t len = evbuffer_get_length(body);
    if (r->front != NULL) {
        sl_response_send(r, status, content_type, extra,
                         (const char *)evbuffer_pullup(body, -1), len);
        return;
    }
    if (r->cfg->reqlog_capture_bodies && r->log_answer == NULL && len > 0)
        sl_reqlog_answer(r, (const char *)evbuffer_pullup(body, -1), len);
    response_begin(r, status);
    size_t hl = format_head(r, head, sizeof(head), status, content_type,
                            (long long)len, NULL, extra);
    struct evbuffer *out = c->out;
    evbuffer_add(out, head, hl);
    evbuffer_add_buffer(out, body);
    r->bytes_out = hl + len;
    conn_flush(c);
    request_done(c);
}

void
sl_response_error_with(sl_request_t *r, int status, const char *message,
                       const char *code, const char *extra)
{
    char body[1024];
    size_t n = sl_error_json(body, sizeof(body), message,
                             sl_error_type_for_status(status), code);
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    if (r->error_code == NULL)
        r->error_code = code;
    sl_response_send(r, status, "application/json", extra, body, n);
}

void
sl_response_error(sl_request_t *r, int status, const char *message,
                  const char *code)
{
    sl_response_error_with(r, status, message, code, NULL);
}

/* Writes "<hex size>\r\n" (at most 18 bytes); returns its length. */
static size_t
chunk_size_line(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char d[16];
    size_t k = 0;
    do {
        d[sizeof(d) - 1 - k++] = hex[n & 15];
        n >>= 4;
    } while (n != 0);
    memcpy(out, d + sizeof(d) - k, k);
    out[k] = '\r';
    out[k + 1] = '\n';
    return k + 2;
}

/* The head of a chunked answer (a close-delimited one for HTTP/1.0). */
static void
chunked_head(sl_request_t *r, int status, const char *content_type,
             const char *extra)
{
    sl_conn_t *c = r->conn;
    char head[2048];
    response_begin(r, status);
    r->streaming = 1;
    int chunked = r->http.version_minor >= 1;
    if (!chunked)
        c->keep_alive = 0;
    size_t hl = format_head(r, head, sizeof(head), status, content_type, -1,
                            chunked ? "Transfer-Encoding: chunked\r\n" : NULL,
                            extra);
    evbuffer_add(c->out, head, hl);
    r->bytes_out += hl;
}

void
sl_response_chunked_start(sl_request_t *r, int status,
                          const char *content_type, const char *extra)
{
    chunked_head(r, status, content_type, extra);
}

int
sl_response_chunk(sl_request_t *r, const char *data, size_t len)
{
    sl_conn_t *c = r->conn;
    if (len == 0)
        return evbuffer_get_length(c->out) > SL_OUT_HIGH;
    if (r->http.version_minor >= 1) {
        char pre[24];
        size_t pl = chunk_size_line(pre, len);
        evbuffer_add(c->out, pre, pl);
    }
    evbuffer_add(c->out, data, len);
    if (r->http.version_minor >= 1)
        evbuffer_add(c->out, "\r\n", 2);
    r->bytes_out += len;
    conn_flush(c);
    return evbuffer_get_length(c->out) > SL_OUT_HIGH;
}

void
sl_response_stream_start(sl_request_t *r, int status, const char *extra)
{
    sl_conn_t *c = r->conn;
    char head[2048];
    response_begin(r, status);
    r->streaming = 1;
    /* HTTP/1.0 has no chunked coding: the stream ends with the connection. */
    int chunked = r->http.version_minor >= 1;
    if (!chunked)
        c->keep_alive = 0;
    size_t hl = format_head(r, head, sizeof(head), status,
                            "text/event-stream; charset=utf-8", -1,
                            chunked ? "Cache-Control: no-cache\r\n"
                                      "X-Accel-Buffering: no\r\n"
                                      "Transfer-Encoding: chunked\r\n"
                                    : "Cache-Control: no-cache\r\n"
                                      "X-Accel-Buffering: no\r\n",
                            extra);
    evbuffer_add(c->out, head, hl);
    r->bytes_out += hl;
    /* Not flushed: the head goes out with the first event. */
}

int
sl_response_stream_event(sl_request_t *r, const char *event, size_t event_len,
                         const char *data, size_t len)
{
    sl_reqlog_stream_event(r, data, len);
    if (r->front != NULL)
        return r->front->stream_event(r, event, event_len, data, len);
    sl_conn_t *c = r->conn;
    struct evbuffer *out = c->out;
    size_t body = (event != NULL ? 7 + event_len + 1 : 0) + 6 + len + 2;
    char pre[64];
    size_t pl = 0;
    if (r->http.version_minor >= 1)
        pl = chunk_size_line(pre, body);
    if (event == NULL && len <= 1024) {
        /* A token's event: one copy into the buffer instead of four. */
        char frame[1024 + 64];
        memcpy(frame, pre, pl);
        memcpy(frame + pl, "data: ", 6);
        memcpy(frame + pl + 6, data, len);
        memcpy(frame + pl + 6 + len, "\n\n\r\n", 4);
        evbuffer_add(out, frame,
                     pl + 6 + len + (r->http.version_minor >= 1 ? 4 : 2));
        r->bytes_out += body;
        return evbuffer_get_length(out) > SL_OUT_HIGH;
    }
    if (event != NULL) {
        memcpy(pre + pl, "event: ", 7);
        pl += 7;
        evbuffer_add(out, pre, pl);
        evbuffer_add(out, event, event_len);
        pl = 0;
        pre[pl++] = '\n';
    }
    memcpy(pre + pl, "data: ", 6);
    pl += 6;
    evbuffer_add(out, pre, pl);
    evbuffer_add(out, data, len);
    if (r->http.version_minor >= 1)
        evbuffer_add(out, "\n\n\r\n", 4);
    else
        evbuffer_add(out, "\n\n", 2);
    r->bytes_out += body;
    return evbuffer_get_length(out) > SL_OUT_HIGH;
}

int
sl_response_flush(sl_request_t *r)
{
    sl_conn_t *c = r->conn;
    conn_flush(c);
    return evbuffer_get_length(c->out) > SL_OUT_HIGH;
}

void
sl_response_stream_end(sl_request_t *r, int clean)
{
    sl_conn_t *c = r->conn;
    if (r->http.version_minor >= 1)
        evbuffer_add(c->out, "0\r\n\r\n", 5);
    conn_flush(c);
    r->stream_ok = clean;
    if (!clean)
        c->keep_alive = 0; /* a cut stream also ends its connection */
    request_done(c);
}

/* Answers a framing error that leaves the connection unusable. */
static void
conn_fail(sl_conn_t *c, int status, const char *why, const char *code)
{
    sl_request_t *r = c->req;
    c->keep_alive = 0;
    r->http.method = SL_METHOD_OTHER;
    r->http.version_minor = 1;
    r->route = NULL;
    if (r->t_start == 0)
        r->t_start = sl_now_us();
    c->state = SL_CONN_HANDLING;
    sl_response_error(r, status, why, code);
}

static void
release_snapshot(void *arg)
{
    sl_request_t *r = arg;
    sl_snapshot_release(r->snap, r->w->id);
}

static sl_request_t *
request_new(sl_conn_t *c)
{
    sl_request_t *r = sl_arena_alloc(c->arena, sizeof(*r));
    if (r == NULL)
        return NULL;
    /* All but the header slots, most of the request's size: the parser
     * fills those it reports and nothing reads the others. */
    size_t hs = offsetof(sl_request_t, http.headers);
    size_t he = hs + sizeof(r->http.headers);
    memset(r, 0, hs);
    memset((char *)r + he, 0, sizeof(*r) - he);
    r->conn = c;
    r->w = c->w;
    r->snap = c->w->snap;
    r->cfg = r->snap->cfg;
    r->arena = c->arena;
    /* The request keeps its snapshot until it ends, reloads or not. */
    if (sl_arena_cleanup_add(c->arena, release_snapshot, r) != 0)
        return NULL;
    sl_snapshot_hold(r->snap, c->w->id);
    r->prompt_tokens = r->completion_tokens = r->total_tokens = -1;
    r->cached_tokens = r->reasoning_tokens = -1;
    r->cost_micros = -1;
    if (c->ssl != NULL && c->tls_peer == NULL && SSL_is_init_finished(c->ssl))
        c->tls_peer = sl_tls_peer_name(c->ssl);
    /* A verified client certificate names the consumer; an auth plugin may
     * name another. */
    r->consumer = c->tls_peer;
    c->req = r;
    return r;
}

static void
rebase(sl_http_request_t *h, const char *from, const char *to)
{
#define RB(p) ((p) = (p) ? to + ((p)-from) : NULL)
    RB(h->method_str);
    RB(h->target);
    RB(h->path);
    for (size_t i = 0; i < h->nheaders; i++) {
        RB(h->headers[i].name);
        RB(h->headers[i].value);
    }
#undef RB
}

/* Returns 1 when a head was parsed, 0 when more input is needed, -1 when
 * the connection is being closed. */
static int
read_head(sl_conn_t *c)
{
    struct evbuffer *in = c->in;
    size_t avail = evbuffer_get_length(in);
    if (avail == 0)
        return 0;
    if (c->timer_want == TIMER_IDLE)
        timer_set(c, TIMER_HEADER);
    const sl_limits_t *lim = &c->w->snap->cfg->limits;
    size_t n = avail < lim->max_header_bytes + 1 ? avail
                                                 : lim->max_header_bytes + 1;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)n);
    if (c->req == NULL && request_new(c) == NULL) {
        conn_close_after_write(c); /* out of memory: drop */
        return -1;
    }
    sl_request_t *r = c->req;
    int status = 400;
    const char *why = NULL;
    int rc = sl_http_parse_request(p, n, lim->max_header_bytes, &r->http,
                                   &status, &why);
    if (rc == SL_EAGAIN)
        return 0;
    if (rc < 0) {
        r->bytes_in = n;
        conn_fail(c, status, why ? why : "malformed request",
                  status == 431 ? "headers_too_large"
                  : status == 501 ? "unsupported_transfer_encoding"
                  : status == 505 ? "http_version_not_supported"
                                  : "bad_request");
        return -1;
    }
    char *copy = sl_arena_alloc(c->arena, (size_t)rc);
    if (copy == NULL) {
        conn_fail(c, 503, "out of memory", "server_busy");
        return -1;
    }
    memcpy(copy, p, (size_t)rc);
    rebase(&r->http, p, copy);
    evbuffer_drain(in, (size_t)rc);
    r->bytes_in = (size_t)rc;
    r->t_start = sl_now_us();
    if (!c->w->admin)
        sl_trace_begin(r);
    c->keep_alive = r->http.keep_alive;
    if (r->http.content_length > 0 &&
        (uint64_t)r->http.content_length > lim->max_body_bytes) {
        conn_fail(c, 413, "request body is larger than the limit",
                  "body_too_large");
        return -1;
    }
    if (r->http.expect_continue && r->http.version_minor >= 1 &&
        (r->http.chunked || r->http.content_length > 0) &&
        evbuffer_get_length(in) == 0) {
        evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        conn_flush(c);
    }
    c->state = SL_CONN_BODY;
    c->body_cap = 0;
    sl_chunked_init(&c->chunked);
    timer_set(c, TIMER_BODY);
    return 1;
}

/* Returns 1 when the body is complete, 0 when more is needed, -1 when the
 * connection is being closed. */
static int
read_body(sl_conn_t *c)
{
    sl_request_t *r = c->req;
    struct evbuffer *in = c->in;
    const sl_limits_t *lim = &c->w->snap->cfg->limits;
    if (!r->http.chunked) {
        size_t need = r->http.content_length > 0
                          ? (size_t)r->http.content_length
                          : 0;
        if (evbuffer_get_length(in) < need)
            return 0;
        r->body = sl_arena_alloc(c->arena, need + 1);
        if (r->body == NULL) {
            conn_fail(c, 503, "out of memory", "server_busy");
            return -1;
        }
        evbuffer_remove(in, r->body, need);
        r->body[need] = '\0';
        r->body_len = need;
        r->bytes_in += need;
        return 1;
    }
    size_t avail = evbuffer_get_length(in);
    if (avail == 0)
        return 0;
    if (r->body_len + avail + 1 > c->body_cap) {
        size_t cap = (r->body_len + avail + 1) * 2;
        if (cap > lim->max_body_bytes + 1)
            cap = lim->max_body_bytes + avail + 1;
        char *nb = sl_arena_alloc(c->arena, cap);
        if (nb == NULL) {
            conn_fail(c, 503, "out of memory", "server_busy");
            return -1;
        }
        if (r->body_len)
            memcpy(nb, r->body, r->body_len);
        r->body = nb;
        c->body_cap = cap;
    }
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)avail);
    size_t out_len = 0;
    const char *why = NULL;
    ssize_t used = sl_chunked_decode(&c->chunked, p, avail,
                                     r->body + r->body_len, &out_len,
                                     lim->max_body_bytes, &why);
    if (used == SL_ETOOBIG) {
        conn_fail(c, 413, "request body is larger than the limit",
                  "body_too_large");
        return -1;
    }
    if (used < 0) {
        conn_fail(c, 400, why ? why : "malformed chunked body",
                  "bad_request");
        return -1;
    }
    r->body_len += out_len;
    r->bytes_in += (size_t)used;
    evbuffer_drain(in, (size_t)used);
    if (!c->chunked.done)
        return 0;
    r->body[r->body_len] = '\0';
    return 1;
}

static void
conn_process(sl_conn_t *c)
{
    c->processing = 1;
    for (;;) {
        if (c->state == SL_CONN_HEAD) {
            if (c->w->draining && c->requests > 0 &&
                evbuffer_get_length(c->in) == 0) {
                conn_close_after_write(c);
                break;
            }
            if (read_head(c) <= 0)
                break;
        }
        if (c->state == SL_CONN_BODY) {
            if (read_body(c) <= 0)
                break;
            c->state = SL_CONN_HANDLING;
            timer_set(c, TIMER_NONE);
            sl_request_handle(c->req);
        }
        if (c->state != SL_CONN_HEAD)
            break;
    }
    c->processing = 0;
    if (c->state != SL_CONN_CLOSING)
        timer_apply(c);
    if (c->state == SL_CONN_CLOSING &&
        evbuffer_get_length(c->out) == 0)
        conn_free(c);
}

/* Reads what a TLS connection has: records may hold more than one read
 * returns, so it reads until OpenSSL wants the socket again. */
static int
read_some_tls(sl_conn_t *c)
{
    for (int round = 0; round < 64; round++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->in, 16384, &v, 1) < 1)
            return -1;
        int n = SSL_read(c->ssl, v.iov_base, (int)v.iov_len);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(c->in, &v, 1);
            continue;
        }
        switch (SSL_get_error(c->ssl, n)) {
        case SSL_ERROR_WANT_READ:
            return 0;
        case SSL_ERROR_WANT_WRITE:
            c->ssl_read_on_write = 1;
            if (!c->want_write) {
                event_add(c->wev, NULL);
                c->want_write = 1;
            }
            return 0;
        default: /* closed, or a handshake that failed */
            ERR_clear_error();
            return -1;
        }
    }
    event_active(c->rev, EV_READ, 1); /* more pending: later, be fair */
    return 0;
}

/* Reads what the socket has. Returns 0, or -1 when the peer is gone. */
static int
read_some(sl_conn_t *c)
{
    if (c->ssl != NULL)
        return read_some_tls(c);
    for (int round = 0; round < 4; round++) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->in, 16384, &v, 1) < 1)
            return -1;
        ssize_t n = read(c->fd, v.iov_base, v.iov_len);
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(c->in, &v, 1);
            if ((size_t)n < 16384)
                return 0;
            continue; /* there may be more */
        }
        if (n == 0)
            return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR)
            return -1;
    }
    return 0;
}

static void
on_readable(evutil_socket_t fd, short what, void *arg)
{
    sl_conn_t *c = arg;
    if (read_some(c) != 0) {
        /* EOF or error: the client is gone; what is in flight stops now. */
        conn_free(c);
        return;
    }
    if (c->state == SL_CONN_HANDLING) {
        /* Pipelined bytes wait for their turn, within a bound. */
        const sl_limits_t *lim = &c->w->snap->cfg->limits;
        if (evbuffer_get_length(c->in) >
            lim->max_header_bytes + lim->max_body_bytes)
            event_del(c->rev);
        return;
    }
    if (c->state == SL_CONN_CLOSING)
        return;
    conn_process(c);
}

/* Writes what the kernel takes now; the rest waits for a write event.
 * Never frees the connection: a failed write is handled from the write
 * event, so callers in the middle of a response keep a valid request. */
static void
conn_flush(sl_conn_t *c)
{
    if (c->broken)
        return;
    while (c->ssl != NULL && evbuffer_get_length(c->out) > 0) {
        size_t len = evbuffer_get_length(c->out);
        if (len > 16384)
            len = 16384; /* one TLS record */
        const void *p = evbuffer_pullup(c->out, (ssize_t)len);
        int n = SSL_write(c->ssl, p, (int)len);
        if (n > 0) {
            evbuffer_drain(c->out, (size_t)n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            if (!c->want_write) {
                event_add(c->wev, NULL);
                c->want_write = 1;
            }
            return;
        }
        ERR_clear_error();
        c->broken = 1;
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        event_active(c->wev, EV_WRITE, 1);
        return;
    }
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_write) {
                event_add(c->wev, NULL);
                c->want_write = 1;
            }
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        c->broken = 1;
        evbuffer_drain(c->out, evbuffer_get_length(c->out));
        event_active(c->wev, EV_WRITE, 1);
        return;
    }
    if (c->want_write) {
        event_del(c->wev);
        c->want_write = 0;
    }
}

static void
on_writable(evutil_socket_t fd, short what, void *arg)
{
    sl_conn_t *c = arg;
    if (c->broken) {
        conn_free(c);
        return;
    }
    if (c->ssl_read_on_write) {
        c->ssl_read_on_write = 0;
        event_active(c->rev, EV_READ, 1);
    }
    conn_flush(c);
    if (c->broken)
        return; /* the event is active again: freed on the next turn */
    size_t left = evbuffer_get_length(c->out);
    if (c->state == SL_CONN_CLOSING) {
        if (left == 0)
            conn_free(c);
        return;
    }
    sl_request_t *r = c->req;
    if (r != NULL && r->paused && left <= SL_OUT_LOW) {
        r->paused = 0;
        if (r->resume != NULL)
            r->resume(r);
    }
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    sl_conn_t *c = arg;
    switch (c->state) {
    case SL_CONN_HEAD:
        if (c->timer_kind == TIMER_HEADER) {
            if (c->req == NULL && request_new(c) == NULL)
                break;
            conn_fail(c, 408, "timed out reading the request head",
                      "request_timeout");
            return;
        }
        break;
    case SL_CONN_BODY:
        conn_fail(c, 408, "timed out reading the request body",
                  "request_timeout");
        return;
    default:
        break;
    }
    conn_free(c);
}

sl_conn_t *
sl_conn_new(sl_worker_t *w, evutil_socket_t fd, SSL_CTX *tls)
{
    sl_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        evutil_closesocket(fd);
        return NULL;
    }
    c->w = w;
    c->fd = fd;
    c->arena = sl_arena_create(8192);
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->timer = evtimer_new(w->base, on_timer, c);
    if (c->arena == NULL || c->in == NULL || c->out == NULL ||
        c->rev == NULL || c->wev == NULL || c->timer == NULL ||
        event_add(c->rev, NULL) != 0) {
        if (c->rev != NULL)
            event_free(c->rev);
        if (c->wev != NULL)
            event_free(c->wev);
        if (c->timer != NULL)
            event_free(c->timer);
        if (c->in != NULL)
            evbuffer_free(c->in);
        if (c->out != NULL)
            evbuffer_free(c->out);
        sl_arena_destroy(c->arena);
        evutil_closesocket(fd);
        free(c);
        return NULL;
    }
    if (tls != NULL) {
        c->ssl = SSL_new(tls);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
            /* The same clean-up as any failed connection. */
            c->next = w->conns;
            if (w->conns != NULL)
                w->conns->prev = c;
            w->conns = c;
            w->nconns++;
            conn_free(c);
            return NULL;
        }
        SSL_set_accept_state(c->ssl);
    }
    c->state = SL_CONN_HEAD;
    c->keep_alive = 1;
    c->next = w->conns;
    if (w->conns != NULL)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    timer_set(c, TIMER_HEADER);
    timer_apply(c);
    return c;
}
