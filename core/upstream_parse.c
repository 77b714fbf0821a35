/* The upstream response parser: a state machine over whatever bytes have
 * arrived, so a stream's chunks reach the caller as soon as they are read,
 * straight out of the read buffer. */
#include "upstream_parse.h"
#include "error.h"

#include <string.h>
#include <strings.h>

#define CHUNK_LINE_MAX 4096
#define TRAILER_LINE_MAX 8192

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

void
sl_resp_init(sl_resp_parser_t *p, int head_only)
{
    memset(p, 0, sizeof(*p));
    p->state = SL_RESP_HEAD;
    p->no_body = head_only;
}

static int
fail(sl_resp_parser_t *p, const char *why)
{
    p->why = why;
    return -1;
}

/* "HTTP/1.x NNN[ reason]": sets status and the version's keep-alive
 * default. */
static int
status_line(sl_resp_parser_t *p, const char *s, size_t n)
{
    if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 ||
        (s[7] != '0' && s[7] != '1') || s[8] != ' ' || s[9] < '1' ||
        s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' ||
        s[11] > '9' || (n > 12 && s[12] != ' '))
        return fail(p, "upstream sent an invalid status line");
    for (size_t i = 12; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(p, "upstream sent an invalid status line");
    }
    p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    p->keep_alive = s[7] == '1';
    return 0;
}

/* Does a Connection value list this token? */
static int
has_token(const char *v, size_t n, const char *tok, size_t tn)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tn && strncasecmp(v + s, tok, tn) == 0)
            return 1;
    }
    return 0;
}

/* The head ends at buf[end]: checks and hands over its lines, then picks
 * how the body is framed. */
static int
head_done(sl_resp_parser_t *p, const char *buf, size_t end,
          const sl_resp_sink_t *sink, void *ud)
{
    const char *nl = memchr(buf, '\n', end);
    size_t n = (size_t)(nl - buf) - 1; /* without CRLF */
    if (status_line(p, buf, n) != 0)
        return -1;
    memset(&p->check, 0, sizeof(p->check));
    if (sink->on_line != NULL)
        sink->on_line(ud, buf, n);
    int close = 0, keep = 0;
    size_t at = n + 2;
    while (at < end) {
        nl = memchr(buf + at, '\n', end - at);
        size_t len = (size_t)(nl - (buf + at)) + 1;
        if (sl_upstream_check_header(&p->check, buf + at, len, &p->why) != 0)
            return -1;
        if (len > 2) {
            const char *line = buf + at;
            if (sink->on_line != NULL)
                sink->on_line(ud, line, len - 2);
            if (len > 11 && strncasecmp(line, "Connection:", 11) == 0) {
                close |= has_token(line + 11, len - 13, "close", 5);
                keep |= has_token(line + 11, len - 13, "keep-alive", 10);
            }
        }
        at += len;
    }
    if (sl_upstream_check_header(&p->check, "\r\n", 2, &p->why) != 0)
        return -1;
    if (p->status < 200) {
        if (p->status == 101)
            return fail(p, "upstream switched protocols");
        p->status = 0; /* an interim head: the real one follows */
        return 0;
    }
    if (close)
        p->keep_alive = 0;
    else if (keep)
        p->keep_alive = 1;
    if (p->no_body || p->status == 204 || p->status == 304) {
        p->state = SL_RESP_DONE;
    } else if (p->check.transfer_encodings > 0) {
        p->state = SL_RESP_CHUNK_SIZE;
    } else if (p->check.content_lengths > 0) {
        p->remaining = p->check.content_length;
        p->state = p->remaining > 0 ? SL_RESP_LENGTH : SL_RESP_DONE;
    } else {
        p->state = SL_RESP_TO_EOF;
        p->keep_alive = 0;
    }
    return 0;
}

/* Looks for the end of the head from where the last call stopped; every
 * line end must be CRLF. Returns the head's length, 0 when more bytes are
 * needed, -1 on error. */
static ssize_t
head_end(sl_resp_parser_t *p, const char *buf, size_t len)
{
    size_t i = p->scanned;
    for (;;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        if (nl == NULL)
            break;
        size_t at = (size_t)(nl - buf);
        if (at == 0 || buf[at - 1] != '\r')
            return fail(p, "upstream sent a bare LF line end");
        if (at == i + 1 && i > 0) /* an empty line: the head ends */
            return (ssize_t)(at + 1);
        if (at == 1)
            return fail(p, "upstream sent an empty status line");
        i = at + 1;
    }
    p->scanned = i;
    if (len >= SL_RESP_HEAD_MAX)
        return fail(p, "upstream response head is too large");
    return 0;
}

static int
chunk_size(sl_resp_parser_t *p, const char *s, size_t n)
{
    size_t i = 0;
    int64_t v = 0;
    while (i < n) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            break;
        if (i >= 15)
            return fail(p, "upstream sent a chunk size too large");
        v = v * 16 + d;
        i++;
    }
    if (i == 0)
        return fail(p, "upstream sent an invalid chunk size");
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i < n && s[i] != ';')
        return fail(p, "upstream sent an invalid chunk size");
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(p, "upstream sent a control byte in a chunk line");
    }
    p->remaining = v;
    return 0;
}

/* A complete line at buf[0..] of at most max bytes: its length with CRLF,
 * 0 when more bytes are needed, -1 on error. */
static ssize_t
line_at(sl_resp_parser_t *p, const char *buf, size_t len, size_t max,
        const char *too_long)
{
    const char *nl = memchr(buf, '\n', len < max ? len : max);
    if (nl == NULL)
        return len >= max ? fail(p, too_long) : 0;
    size_t at = (size_t)(nl - buf);
    if (at == 0 || buf[at - 1] != '\r')
        return fail(p, "upstream sent a bare LF line end");
    return (ssize_t)(at + 1);
}

static int
body(sl_resp_parser_t *p, const char *data, size_t n,
     const sl_resp_sink_t *sink, void *ud)
{
    int rc = sink->on_body(ud, data, n);
    if (rc < 0) {
        p->why = NULL;
        return -1;
    }
    if (rc > 0)
        p->paused = 1;
    return 0;
}

ssize_t
sl_resp_feed(sl_resp_parser_t *p, const char *buf, size_t len,
             const sl_resp_sink_t *sink, void *ud)
{
    size_t used = 0;
    while (used < len && p->state != SL_RESP_DONE && !p->paused) {
        const char *at = buf + used;
        size_t avail = len - used;
        ssize_t n;
        switch (p->state) {
        case SL_RESP_HEAD:
            n = head_end(p, at, avail);
            if (n <= 0)
                return n < 0 ? -1 : (ssize_t)used;
            p->scanned = 0;
            if (head_done(p, at, (size_t)n - 2, sink, ud) != 0)
                return -1;
            used += (size_t)n;
            break;
        case SL_RESP_LENGTH:
        case SL_RESP_CHUNK_DATA: {
            size_t take = avail < (uint64_t)p->remaining
                              ? avail
                              : (size_t)p->remaining;
            p->remaining -= (int64_t)take;
            used += take;
            if (p->remaining == 0)
                p->state = p->state == SL_RESP_LENGTH ? SL_RESP_DONE
                                                      : SL_RESP_CHUNK_END;
            if (body(p, at, take, sink, ud) != 0)
                return -1;
            break;
        }
        case SL_RESP_TO_EOF:
            used += avail;
            if (body(p, at, avail, sink, ud) != 0)
                return -1;
            break;
        case SL_RESP_CHUNK_SIZE:
            n = line_at(p, at, avail, CHUNK_LINE_MAX,
                        "upstream sent a chunk size line too long");
            if (n <= 0)
                return n < 0 ? -1 : (ssize_t)used;
            if (chunk_size(p, at, (size_t)n - 2) != 0)
                return -1;
            used += (size_t)n;
            p->state =
                p->remaining > 0 ? SL_RESP_CHUNK_DATA : SL_RESP_TRAILER;
            break;
        case SL_RESP_CHUNK_END:
            if (avail < 2 && at[0] == '\r')
                return (ssize_t)used;
            if (avail < 2 || at[0] != '\r' || at[1] != '\n')
                return fail(p, "upstream chunk data is not followed by "
                               "CRLF");
            used += 2;
            p->state = SL_RESP_CHUNK_SIZE;
            break;
        case SL_RESP_TRAILER:
            n = line_at(p, at, avail, TRAILER_LINE_MAX,
                        "upstream sent a trailer line too long");
            if (n <= 0)
                return n < 0 ? -1 : (ssize_t)used;
            used += (size_t)n;
            if (n == 2)
                p->state = SL_RESP_DONE;
            break;
        }
    }
    return (ssize_t)used;
}

int
sl_resp_eof(sl_resp_parser_t *p)
{
    if (p->state == SL_RESP_TO_EOF || p->state == SL_RESP_DONE) {
        p->state = SL_RESP_DONE;
        return 0;
    }
    return fail(p, p->state == SL_RESP_HEAD && p->status == 0
                       ? "upstream closed the connection before answering"
                       : "upstream closed the connection mid-response");
}
