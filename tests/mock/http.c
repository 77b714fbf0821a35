/* The mock's own small HTTP/1.1 server on libevent events and evbuffers:
 * it reads requests (Content-Length or chunked bodies, keep-alive, pipelined
 * in order) and carries out each request's plan byte by byte, including the
 * broken answers evhttp would refuse to send.
 *
 * Output is written to the socket at the end of the callback that produced
 * it; a write event is armed only when the kernel pushes back. That keeps a
 * keep-alive request at three system calls (epoll_wait, recv, writev),
 * where a bufferevent adds an ioctl and two epoll_ctl. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "mock.h"

/* A stream stops generating while this much is waiting for the socket. */
#define STREAM_HIGH_WATER (256 * 1024)

enum conn_state {
    ST_HEAD,    /* waiting for a request head */
    ST_BODY_CL, /* reading a Content-Length body */
    ST_BODY_CHUNKED,
    ST_BUSY,    /* answering; later requests wait in the input buffer */
    ST_HANG,    /* never answering; discarding input until the peer closes */
    ST_CLOSING, /* closing once the output has drained */
};

enum chunk_state { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER };

enum timer_job { T_NONE, T_WAIT, T_GAP };

#define READ_SIZE (64 * 1024)

struct mock_conn {
    mock_conn_t *prev, *next;
    mock_conns_t *list;
    int fd;
    struct event *ev_read;
    struct event *ev_write; /* armed only while output waits for the kernel */
    struct event *timer;
    struct evbuffer *in;
    struct evbuffer *out;
    enum timer_job job;
    enum conn_state state;
    bool in_input;   /* conn_input is on the stack: do not re-enter it */
    bool keep_alive; /* of the request being answered */
    bool http10;     /* ... which is HTTP/1.0: keep-alive must be said */
    bool gap_due;    /* the gap before the next stream event has passed */
    bool wait_drain; /* the stream waits for the output to drain */
    bool streaming;  /* stream headers are out: a close now is an abort */
    bool pending;    /* scratch holds the next stream event, not yet sent */

    mock_req_t req;
    size_t body_need;
    enum chunk_state chunk;
    struct evbuffer *body; /* a chunked body as it arrives */

    mock_plan_t plan;
    mock_buf_t scratch; /* one stream event at a time */
};

static void conn_input(mock_conn_t *c);
static void respond(mock_conn_t *c);
static void pump(mock_conn_t *c);

static void
req_reset(mock_req_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static void
conn_free(mock_conn_t *c)
{
    if (c->streaming)
        atomic_fetch_add(&mock_stats.streams_aborted, 1);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->list->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mock_plan_free(&c->plan);
    req_reset(&c->req);
    mock_buf_free(&c->scratch);
    evbuffer_free(c->body);
    event_free(c->timer);
    event_free(c->ev_read);
    event_free(c->ev_write);
    evbuffer_free(c->in);
    evbuffer_free(c->out);
    evutil_closesocket(c->fd);
    atomic_fetch_sub(&mock_stats.open_connections, 1);
    free(c);
}

/* Closes once everything queued has reached the socket: flush() frees the
 * connection, so code deep in a callback may go on touching c. */
static void
close_soon(mock_conn_t *c)
{
    c->state = ST_CLOSING;
    event_del(c->ev_read);
    evtimer_del(c->timer);
}

static void
arm(mock_conn_t *c, enum timer_job job, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    c->job = job;
    evtimer_add(c->timer, &tv);
}

/* Head of a normal answer; len < 0 means a chunked body. */
static void
write_head(mock_conn_t *c, long len)
{
    const mock_plan_t *p = &c->plan;
    char h[512];
    int n = snprintf(h, sizeof(h), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n",
                     p->status, mock_reason(p->status), p->content_type);
    if (len >= 0)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Content-Length: %ld\r\n",
                      len);
    else
        n += snprintf(h + n, sizeof(h) - (size_t)n,
                      "Transfer-Encoding: chunked\r\n"
                      "Cache-Control: no-cache\r\n");
    if (p->retry_after >= 0)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Retry-After: %ld\r\n",
                      p->retry_after);
    if (!c->keep_alive)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Connection: close\r\n");
    else if (c->http10)
        n += snprintf(h + n, sizeof(h) - (size_t)n,
                      "Connection: keep-alive\r\n");
    n += snprintf(h + n, sizeof(h) - (size_t)n, "\r\n");
    evbuffer_add(c->out, h, (size_t)n);
}

static void
write_chunk(struct evbuffer *out, const char *p, size_t n)
{
    evbuffer_add_printf(out, "%zx\r\n", n);
    evbuffer_add(out, p, n);
    evbuffer_add(out, "\r\n", 2);
}

/* The answer is out: take the next pipelined request, or close. */
static void
response_done(mock_conn_t *c)
{
    mock_plan_free(&c->plan);
    if (!c->keep_alive) {
        close_soon(c);
        return;
    }
    c->state = ST_HEAD;
    if (!c->in_input)
        conn_input(c);
}

/* The frame directive: a whole answer with framing a strict client must
 * refuse. The connection closes after it since its framing cannot be
 * trusted to say where the next answer starts. */
static void
write_framed(mock_conn_t *c)
{
    mock_plan_t *p = &c->plan;
    mock_buf_t all = {0};
    const mock_buf_t *body = &p->body;
    if (p->stream) {
        while (p->stream->next(p->stream, &all))
            ;
        body = &all;
    }
    const char *eol = p->frame == MOCK_FRAME_BARE_LF ? "\n" : "\r\n";
    struct evbuffer *out = c->out;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s%sContent-Type: %s%s", p->status,
                        mock_reason(p->status), eol, p->content_type, eol);
    if (p->retry_after >= 0)
        evbuffer_add_printf(out, "Retry-After: %ld%s", p->retry_after, eol);
    bool chunked = false;
    switch (p->frame) {
    case MOCK_FRAME_CL_TE:
        evbuffer_add_printf(out,
                            "Content-Length: %zu\r\n"
                            "Transfer-Encoding: chunked\r\n",
                            body->len);
        chunked = true;
        break;
    case MOCK_FRAME_DUP_CL:
        evbuffer_add_printf(out,
                            "Content-Length: %zu\r\nContent-Length: %zu\r\n",
                            body->len, body->len + 7);
        break;
    case MOCK_FRAME_TE_GZIP:
        evbuffer_add_printf(out, "Transfer-Encoding: gzip, chunked\r\n");
        chunked = true;
        break;
    case MOCK_FRAME_BAD_CHUNK:
        evbuffer_add_printf(out, "Transfer-Encoding: chunked\r\n\r\nzz\r\n");
        evbuffer_add(out, body->p, body->len);
        evbuffer_add(out, "\r\n0\r\n\r\n", 7);
        goto done;
    case MOCK_FRAME_OBS_FOLD:
        evbuffer_add_printf(out,
                            "Content-Length: %zu\r\n"
                            "X-Mock-Folded: first part\r\n"
                            " continued on a folded line\r\n",
                            body->len);
        break;
    case MOCK_FRAME_BARE_LF:
        evbuffer_add_printf(out, "Content-Length: %zu\n", body->len);
        break;
    case MOCK_FRAME_NONE: break;
    }
    evbuffer_add(out, eol, strlen(eol));
    if (chunked) {
        write_chunk(out, body->p, body->len);
        evbuffer_add(out, "0\r\n\r\n", 5);
    } else {
        evbuffer_add(out, body->p, body->len);
    }
done:
    mock_buf_free(&all);
    mock_plan_free(p);
    close_soon(c);
}

static void
respond(mock_conn_t *c)
{
    mock_plan_t *p = &c->plan;
    if (p->frame != MOCK_FRAME_NONE) {
        write_framed(c);
        return;
    }
    if (p->stream) {
        write_head(c, -1);
        c->streaming = true;
        c->gap_due = true; /* no gap before the first event */
        c->pending = false;
        atomic_fetch_add(&mock_stats.streams_started, 1);
        pump(c);
        return;
    }
    if (p->close_after >= 0) {
        write_head(c, (long)p->body.len);
        evbuffer_add(c->out, p->body.p, p->body.len / 2);
        mock_plan_free(p);
        close_soon(c);
        return;
    }
    write_head(c, (long)p->body.len);
    evbuffer_add(c->out, p->body.p, p->body.len);
    response_done(c);
}

/* close_after: the connection ends without the terminating chunk. */
static void
cut_stream(mock_conn_t *c)
{
    c->streaming = c->pending = false;
    atomic_fetch_add(&mock_stats.streams_cut, 1);
    mock_plan_free(&c->plan);
    close_soon(c);
}

/* Writes stream events until the stream ends, a gap must pass, or the
 * socket is behind; each event is one HTTP chunk. */
static void
pump(mock_conn_t *c)
{
    mock_plan_t *p = &c->plan;
    mock_stream_t *s = p->stream;
    struct evbuffer *out = c->out;
    for (;;) {
        if (p->close_after >= 0 && s->emitted >= p->close_after) {
            cut_stream(c);
            return;
        }
        /* The next event is made before its gap, so the end of the stream
         * follows the last event at once. */
        if (!c->pending) {
            c->scratch.len = 0;
            if (!s->next(s, &c->scratch)) {
                /* Cut even a stream shorter than close_after. */
                if (p->close_after >= 0) {
                    cut_stream(c);
                    return;
                }
                evbuffer_add(out, "0\r\n\r\n", 5);
                c->streaming = false;
                atomic_fetch_add(&mock_stats.streams_completed, 1);
                response_done(c);
                return;
            }
            c->pending = true;
        }
        if (p->gap_ms > 0 && !c->gap_due) {
            arm(c, T_GAP, p->gap_ms);
            return;
        }
        c->gap_due = false;
        c->pending = false;
        write_chunk(out, c->scratch.p, c->scratch.len);
        s->emitted++;
        if (evbuffer_get_length(out) >= STREAM_HIGH_WATER) {
            c->wait_drain = true;
            return;
        }
    }
}

static void
dispatch(mock_conn_t *c)
{
    c->state = ST_BUSY;
    c->keep_alive = c->req.keep_alive;
    c->http10 = c->req.minor == 0;
    mock_plan_init(&c->plan);
    mock_route(&c->req, &c->plan);
    req_reset(&c->req);
    if (c->plan.hang) {
        mock_plan_free(&c->plan);
        c->state = ST_HANG;
        evbuffer_drain(c->in, evbuffer_get_length(c->in));
        return;
    }
    if (c->plan.wait_ms > 0) {
        arm(c, T_WAIT, c->plan.wait_ms);
        return;
    }
    respond(c);
}

/* An answer to a request the mock could not read; the connection closes
 * because the rest of the input cannot be trusted. */
static void
fail(mock_conn_t *c, int status, const char *msg)
{
    req_reset(&c->req);
    c->keep_alive = false;
    mock_plan_free(&c->plan);
    mock_plan_init(&c->plan);
    mock_error_openai(&c->plan, status, msg);
    write_head(c, (long)c->plan.body.len);
    evbuffer_add(c->out, c->plan.body.p, c->plan.body.len);
    mock_plan_free(&c->plan);
    close_soon(c);
}

static bool
has_token(const char *list, const char *token)
{
    size_t n = strlen(token);
    for (const char *p = list; (p = strcasestr(p, token)); p += n) {
        bool start = p == list || p[-1] == ',' || p[-1] == ' ';
        bool end = p[n] == '\0' || p[n] == ',' || p[n] == ' ';
        if (start && end)
            return true;
    }
    return false;
}

/* Splits the head copy in place into the request line and headers. */
static int
parse_head(mock_req_t *r, char *head, size_t len)
{
    char *line = head, *end = head + len;
    int lineno = 0;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            nl = end;
        char *le = nl;
        if (le > line && le[-1] == '\r')
            le--;
        *le = '\0';
        if (lineno++ == 0) {
            char *sp1 = strchr(line, ' ');
            char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
            if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1)
                return -1;
            *sp1 = *sp2 = '\0';
            r->method = line;
            r->target = sp1 + 1;
            if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
                r->minor = 1;
            else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
                r->minor = 0;
            else
                return -1;
            r->path_len = strcspn(r->target, "?");
        } else if (*line) {
            char *colon = strchr(line, ':');
            if (!colon || colon == line || r->nhdr == MOCK_MAX_HEADERS)
                return -1;
            for (char *k = line; k < colon; k++) {
                if (*k == ' ' || *k == '\t')
                    return -1; /* also refuses obs-fold continuations */
                *k = (char)tolower((unsigned char)*k);
            }
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            char *ve = v + strlen(v);
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                *--ve = '\0';
            r->hdr[r->nhdr].name = line;
            r->hdr[r->nhdr].value = v;
            r->nhdr++;
        }
        line = nl + 1;
    }
    const char *conn = mock_req_header(r, "connection");
    if (r->minor == 1)
        r->keep_alive = !(conn && has_token(conn, "close"));
    else
        r->keep_alive = conn && has_token(conn, "keep-alive");
    return 0;
}

const char *
mock_req_header(const mock_req_t *r, const char *lname)
{
    for (int i = 0; i < r->nhdr; i++)
        if (strcmp(r->hdr[i].name, lname) == 0)
            return r->hdr[i].value;
    return NULL;
}

bool
mock_req_path_is(const mock_req_t *r, const char *path)
{
    size_t n = strlen(path);
    return r->path_len == n && memcmp(r->target, path, n) == 0;
}

static void
body_done(mock_conn_t *c, struct evbuffer *from, size_t n)
{
    c->req.body = malloc(n + 1);
    if (!c->req.body)
        abort();
    evbuffer_remove(from, c->req.body, n);
    c->req.body[n] = '\0';
    c->req.body_len = n;
    dispatch(c);
}

/* Returns 1 when a request head was read, 0 when more input is needed,
 * -1 after answering an error. */
static int
read_head(mock_conn_t *c, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    /* Empty lines before a request line are allowed (RFC 9112 2.2). */
    while (len > 0) {
        unsigned char *first = evbuffer_pullup(in, 1);
        if (first[0] != '\r' && first[0] != '\n')
            break;
        evbuffer_drain(in, 1);
        len--;
    }
    if (!len)
        return 0;
    size_t look = len < MOCK_MAX_HEAD + 4 ? len : MOCK_MAX_HEAD + 4;
    char *p = (char *)evbuffer_pullup(in, (ssize_t)look);
    char *crlf = memmem(p, look, "\r\n\r\n", 4);
    char *lf = memmem(p, crlf ? (size_t)(crlf - p) + 2 : look, "\n\n", 2);
    size_t head_len;
    if (lf)
        head_len = (size_t)(lf - p) + 2;
    else if (crlf)
        head_len = (size_t)(crlf - p) + 4;
    else if (len > MOCK_MAX_HEAD) {
        fail(c, 431, "request head too large");
        return -1;
    } else
        return 0;
    if (head_len > MOCK_MAX_HEAD) {
        fail(c, 431, "request head too large");
        return -1;
    }

    mock_req_t *r = &c->req;
    r->head = malloc(head_len + 1);
    if (!r->head)
        abort();
    evbuffer_remove(in, r->head, head_len);
    r->head[head_len] = '\0';
    if (parse_head(r, r->head, head_len) < 0) {
        fail(c, 400, "malformed request head");
        return -1;
    }

    const char *te = mock_req_header(r, "transfer-encoding");
    const char *cl = mock_req_header(r, "content-length");
    if (te) {
        if (strcasecmp(te, "chunked") != 0) {
            fail(c, 400, "unsupported transfer-encoding");
            return -1;
        }
        c->state = ST_BODY_CHUNKED;
        c->chunk = CH_SIZE;
        evbuffer_drain(c->body, evbuffer_get_length(c->body));
    } else if (cl) {
        char *e;
        unsigned long long n = strtoull(cl, &e, 10);
        if (e == cl || *e || cl[0] == '-') {
            fail(c, 400, "bad content-length");
            return -1;
        }
        if (n > MOCK_MAX_BODY) {
            fail(c, 413, "request body too large");
            return -1;
        }
        c->state = ST_BODY_CL;
        c->body_need = (size_t)n;
    } else {
        body_done(c, in, 0);
        return 1;
    }

    const char *expect = mock_req_header(r, "expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 &&
        (c->state == ST_BODY_CHUNKED || evbuffer_get_length(in) < c->body_need))
        evbuffer_add(c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 1;
}

/* Reads as much of a chunked body as has arrived. Returns 1 when the
 * request was dispatched, 0 when more input is needed, -1 on error. */
static int
read_chunked(mock_conn_t *c, struct evbuffer *in)
{
    for (;;) {
        if (c->chunk == CH_DATA) {
            size_t avail = evbuffer_get_length(in);
            size_t n = avail < c->body_need ? avail : c->body_need;
            if (n == 0)
                return 0;
            evbuffer_remove_buffer(in, c->body, n);
            c->body_need -= n;
            if (c->body_need)
                return 0;
            c->chunk = CH_DATA_END;
            continue;
        }
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        if (!line) {
            if (evbuffer_get_length(in) > 4096) {
                fail(c, 400, "chunk line too long");
                return -1;
            }
            return 0;
        }
        int bad = 0;
        if (c->chunk == CH_SIZE) {
            char *e;
            unsigned long long size = strtoull(line, &e, 16);
            bad = e == line || (*e && *e != ';' && *e != ' ' && *e != '\t');
            if (!bad && size > MOCK_MAX_BODY - evbuffer_get_length(c->body)) {
                free(line);
                fail(c, 413, "request body too large");
                return -1;
            }
            c->body_need = (size_t)size;
            c->chunk = size ? CH_DATA : CH_TRAILER;
        } else if (c->chunk == CH_DATA_END) {
            bad = n != 0;
            c->chunk = CH_SIZE;
        } else if (n == 0) { /* the empty line after the trailers */
            free(line);
            body_done(c, c->body, evbuffer_get_length(c->body));
            return 1;
        }
        free(line);
        if (bad) {
            fail(c, 400, "malformed chunked body");
            return -1;
        }
    }
}

static void
conn_input(mock_conn_t *c)
{
    struct evbuffer *in = c->in;
    if (c->state == ST_HANG) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    c->in_input = true;
    for (;;) {
        int r = 0;
        if (c->state == ST_HEAD)
            r = read_head(c, in);
        else if (c->state == ST_BODY_CL) {
            if (evbuffer_get_length(in) >= c->body_need) {
                body_done(c, in, c->body_need);
                r = 1;
            }
        } else if (c->state == ST_BODY_CHUNKED)
            r = read_chunked(c, in);
        if (r <= 0)
            break;
    }
    c->in_input = false;
}

/* Writes what the socket takes; then acts on a drained output: closes, or
 * lets a stream waiting for room go on. Called last in every callback that
 * may have written. Returns -1 when it freed c. */
static int
flush(mock_conn_t *c)
{
    for (;;) {
        while (evbuffer_get_length(c->out) > 0) {
            int n = evbuffer_write(c->out, c->fd);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                conn_free(c); /* the peer is gone */
                return -1;
            }
            if (n <= 0 || evbuffer_get_length(c->out) > 0) {
                event_add(c->ev_write, NULL);
                return 0;
            }
        }
        event_del(c->ev_write);
        if (c->state == ST_CLOSING) {
            conn_free(c);
            return -1;
        }
        if (!c->wait_drain)
            return 0;
        c->wait_drain = false;
        pump(c);
    }
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    mock_conn_t *c = arg;
    enum timer_job job = c->job;
    c->job = T_NONE;
    if (job == T_WAIT)
        respond(c);
    else if (job == T_GAP) {
        c->gap_due = true;
        pump(c);
    }
    flush(c);
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush(arg);
}

static void
on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    mock_conn_t *c = arg;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(c->in, READ_SIZE, &v, 1) < 1)
        abort();
    ssize_t n = recv(fd, v.iov_base, v.iov_len, 0);
    if (n > 0) {
        v.iov_len = (size_t)n;
        evbuffer_commit_space(c->in, &v, 1);
        conn_input(c);
        flush(c);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    /* The peer closed or failed. One that half-closes after its request
     * still gets an answer already queued; anything in progress (a stream,
     * a delay, a hang) is abandoned. */
    if (n == 0 && c->state == ST_HEAD && evbuffer_get_length(c->out) > 0) {
        close_soon(c);
        flush(c);
        return;
    }
    conn_free(c);
}

void
mock_conn_accept(struct event_base *base, mock_conns_t *list, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    mock_conn_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->fd = fd;
    c->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
    c->ev_write = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, c);
    c->timer = evtimer_new(base, on_timer, c);
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    c->body = evbuffer_new();
    if (!c->ev_read || !c->ev_write || !c->timer || !c->in || !c->out ||
        !c->body)
        abort();
    c->list = list;
    c->next = list->head;
    if (list->head)
        list->head->prev = c;
    list->head = c;
    atomic_fetch_add(&mock_stats.connections_accepted, 1);
    atomic_fetch_add(&mock_stats.open_connections, 1);
    event_add(c->ev_read, NULL);
}

void
mock_conns_free_all(mock_conns_t *list)
{
    while (list->head) {
        list->head->streaming = false; /* shutting down is not an abort */
        conn_free(list->head);
    }
}
