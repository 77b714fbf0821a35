/* Strict HTTP/1.1 request framing. The head parser keeps no state between
 * calls: it runs one left-to-right pass over whatever has arrived, so an
 * error is found at the first byte that makes the prefix invalid and a
 * complete head is parsed exactly as a prefix of it was. */
#include "http_parse.h"
#include "error.h"

#include <limits.h>
#include <string.h>

/* Byte classes: token (RFC 9110 tchar), field-value byte (HTAB, visible
 * ASCII, SP, obs-text), request-target byte (visible ASCII), Host byte
 * (uri-host and port), hex digit. */
enum { C_TOKEN = 1, C_VALUE = 2, C_TARGET = 4, C_HOST = 8, C_HEX = 16 };

/* clang-format off */
static const unsigned char cls[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0, /* 0x00 */
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
     2, 15,  6,  7, 15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15,  6, /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 14, 14,  6, 14,  6,  6, /* 0x30 */
     6, 31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14,  6, 14,  7, 15, /* 0x50 */
     7, 31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,  6,  7,  6, 15,  0, /* 0x70 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0x80 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0x90 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xA0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xB0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xC0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xD0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xE0 */
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2, /* 0xF0 */
};
/* clang-format on */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static int
lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c | 0x20 : c;
}

/* Case-insensitive comparison of p[0..n) with a lowercase literal. */
static int
ieq(const unsigned char *p, size_t n, const char *lit, size_t lit_len)
{
    if (n != lit_len)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define IEQ(p, n, lit) ieq((p), (n), lit, sizeof(lit) - 1)

/* Index of the first byte in p[i..n) that is not in class bit. */
static size_t
span(const unsigned char *p, size_t i, size_t n, unsigned bit)
{
    while (i < n && (cls[p[i]] & bit))
        i++;
    return i;
}

/* span() for field values and targets, eight bytes at a time while a word
 * holds no control byte, DEL or (for targets) SP or byte >= 0x80: values are
 * the bulk of a head and nearly always plain printable ASCII. */
static size_t
span_fast(const unsigned char *p, size_t i, size_t n, unsigned bit)
{
    const uint64_t below = bit == C_TARGET ? 0x21 : 0x20;
    for (;;) {
        while (n - i >= 8) {
            uint64_t x, y;
            memcpy(&x, p + i, 8);
            y = x ^ (ONES * 0x7f);
            uint64_t stop =
                ((x - ONES * below) & ~x & HIGHS) | ((y - ONES) & ~y & HIGHS);
            if (bit == C_TARGET)
                stop |= x & HIGHS;
            if (stop)
                break;
            i += 8;
        }
        size_t end = n - i >= 8 ? i + 8 : n;
        for (; i < end; i++)
            if (!(cls[p[i]] & bit))
                return i;
        if (i == n)
            return n;
    }
}

typedef struct {
    int *status;
    const char **why;
    int host;  /* Host fields seen */
    int te;    /* a Transfer-Encoding field was seen */
    int close; /* Connection: close */
    int ka;    /* Connection: keep-alive */
} parse_t;

static int
fail(parse_t *ps, int status, const char *why)
{
    *ps->status = status;
    *ps->why = why;
    return status == 431 ? SL_ETOOBIG : SL_EINVAL;
}

/* Out of bytes: wait for more, unless the head may not grow any further. */
static int
more(parse_t *ps, size_t len, size_t max_head)
{
    if (len >= max_head)
        return fail(ps, 431, "request head too large");
    return SL_EAGAIN;
}

/* The reason for an unexpected byte c: a LF here is never preceded by CR. */
static const char *
why_byte(unsigned char c, const char *otherwise)
{
    return c == '\n' ? "bare LF line ending" : otherwise;
}

static int
parse_content_length(parse_t *ps, sl_http_request_t *req,
                     const unsigned char *v, size_t n)
{
    int64_t cl = 0;

    if (req->content_length >= 0)
        return fail(ps, 400, "duplicate Content-Length");
    if (ps->te)
        return fail(ps, 400, "both Transfer-Encoding and Content-Length");
    if (n == 0)
        return fail(ps, 400, "empty Content-Length");
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return fail(ps, 400, "Content-Length is not a decimal number");
        int d = v[i] - '0';
        if (cl > (INT64_MAX - d) / 10)
            return fail(ps, 400, "Content-Length too large");
        cl = cl * 10 + d;
    }
    req->content_length = cl;
    return 0;
}

static int
parse_transfer_encoding(parse_t *ps, sl_http_request_t *req,
                        const unsigned char *v, size_t n)
{
    if (req->version_minor == 0)
        return fail(ps, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (ps->te)
        return fail(ps, 400, "duplicate Transfer-Encoding");
    ps->te = 1;
    if (req->content_length >= 0)
        return fail(ps, 400, "both Transfer-Encoding and Content-Length");
    if (n == 0)
        return fail(ps, 400, "empty Transfer-Encoding");
    if (memchr(v, ',', n) != NULL)
        return fail(ps, 400, "Transfer-Encoding must be chunked alone");
    if (IEQ(v, n, "chunked")) {
        req->chunked = 1;
        return 0;
    }
    if (span(v, 0, n, C_TOKEN) == n)
        return fail(ps, 501, "unsupported transfer coding");
    return fail(ps, 400, "malformed Transfer-Encoding");
}

/* Connection is a comma-separated token list; only close and keep-alive
 * matter here. */
static void
parse_connection(parse_t *ps, const unsigned char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const unsigned char *comma = memchr(v + i, ',', n - i);
        size_t end = comma != NULL ? (size_t)(comma - v) : n;
        size_t a = i, b = end;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (IEQ(v + a, b - a, "close"))
            ps->close = 1;
        else if (IEQ(v + a, b - a, "keep-alive"))
            ps->ka = 1;
        i = end + 1;
    }
}

/* Applies the fields that decide framing and connection handling, as soon as
 * each is complete, so that a conflict is refused at the line that makes it. */
static int
apply_header(parse_t *ps, sl_http_request_t *req, const sl_http_header_t *h)
{
    const unsigned char *name = (const unsigned char *)h->name;
    const unsigned char *v = (const unsigned char *)h->value;
    size_t n = h->value_len;

    switch (h->name_len) {
    case 4:
        if (!IEQ(name, 4, "host"))
            break;
        if (ps->host++)
            return fail(ps, 400, "more than one Host");
        if (span(v, 0, n, C_HOST) != n)
            return fail(ps, 400, "invalid Host");
        break;
    case 6:
        if (IEQ(name, 6, "expect") && req->version_minor == 1 &&
            IEQ(v, n, "100-continue"))
            req->expect_continue = 1;
        break;
    case 10:
        if (IEQ(name, 10, "connection"))
            parse_connection(ps, v, n);
        break;
    case 14:
        if (IEQ(name, 14, "content-length"))
            return parse_content_length(ps, req, v, n);
        break;
    case 17:
        if (IEQ(name, 17, "transfer-encoding"))
            return parse_transfer_encoding(ps, req, v, n);
        break;
    }
    return 0;
}

static sl_method_t
method_of(const unsigned char *m, size_t n)
{
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(m, lit, n) == 0)
    switch (n) {
    case 3:
        return IS("GET")   ? SL_METHOD_GET
               : IS("PUT") ? SL_METHOD_PUT
                           : SL_METHOD_OTHER;
    case 4:
        return IS("POST")   ? SL_METHOD_POST
               : IS("HEAD") ? SL_METHOD_HEAD
                            : SL_METHOD_OTHER;
    case 5: return IS("PATCH") ? SL_METHOD_PATCH : SL_METHOD_OTHER;
    case 6: return IS("DELETE") ? SL_METHOD_DELETE : SL_METHOD_OTHER;
    case 7: return IS("OPTIONS") ? SL_METHOD_OPTIONS : SL_METHOD_OTHER;
    default: return SL_METHOD_OTHER;
    }
#undef IS
}

int
sl_http_parse_request(const char *buf, size_t len, size_t max_head,
                      sl_http_request_t *req, int *status, const char **why)
{
    const unsigned char *p = (const unsigned char *)buf;
    parse_t ps = {status, why, 0, 0, 0, 0};
    size_t i = 0, n;

    *status = 0;
    *why = NULL;
    req->method = SL_METHOD_OTHER;
    req->method_str = req->target = req->path = NULL;
    req->method_len = req->target_len = req->path_len = 0;
    req->version_minor = -1;
    req->nheaders = 0;
    req->content_length = -1;
    req->chunked = req->keep_alive = req->expect_continue = 0;

    if (max_head > INT_MAX)
        max_head = INT_MAX; /* the length is returned as an int */
    n = len < max_head ? len : max_head;

    /* Empty lines before the request line (left after a previous body by
     * some clients) are skipped but count in the head. */
    while (i < n && p[i] == '\r') {
        if (i + 1 == n)
            return more(&ps, len, max_head);
        if (p[i + 1] != '\n')
            return fail(&ps, 400, "bare CR");
        i += 2;
    }

    /* method SP */
    size_t m0 = i;
    i = span(p, i, n, C_TOKEN);
    if (i == n)
        return more(&ps, len, max_head);
    if (p[i] != ' ' || i == m0)
        return fail(&ps, 400, why_byte(p[i], "malformed request method"));
    req->method_str = buf + m0;
    req->method_len = i - m0;
    req->method = method_of(p + m0, i - m0);
    i++;

    /* request-target SP: origin-form, or "*" for OPTIONS */
    size_t t0 = i;
    if (i == n)
        return more(&ps, len, max_head);
    if (p[i] == '*' && req->method == SL_METHOD_OPTIONS) {
        i++;
    } else if (p[i] == '/') {
        i = span_fast(p, i, n, C_TARGET);
    } else {
        return fail(&ps, 400,
                    why_byte(p[i], "request target must start with '/'"));
    }
    if (i == n)
        return more(&ps, len, max_head);
    if (p[i] != ' ')
        return fail(&ps, 400, why_byte(p[i], "invalid byte in request target"));
    req->target = buf + t0;
    req->target_len = i - t0;
    {
        const unsigned char *q = memchr(p + t0, '?', i - t0);
        req->path = buf + t0;
        req->path_len = q != NULL ? (size_t)(q - (p + t0)) : i - t0;
    }
    i++;

    /* HTTP-version CRLF: "HTTP/" DIGIT "." DIGIT, then only 1.0 or 1.1 */
    size_t v0 = i;
    for (size_t k = 0; k < 8; k++) {
        if (v0 + k == n)
            return more(&ps, len, max_head);
        unsigned char c = p[v0 + k];
        int ok = k < 5    ? c == (unsigned char)"HTTP/"[k]
                 : k == 6 ? c == '.'
                          : c >= '0' && c <= '9';
        if (!ok)
            return fail(&ps, 400, why_byte(c, "malformed HTTP version"));
    }
    if (p[v0 + 5] != '1' || (p[v0 + 7] != '0' && p[v0 + 7] != '1'))
        return fail(&ps, 505, "HTTP version not supported");
    req->version_minor = p[v0 + 7] - '0';
    i = v0 + 8;
    if (i == n)
        return more(&ps, len, max_head);
    if (p[i] != '\r')
        return fail(&ps, 400, why_byte(p[i], "junk after HTTP version"));
    if (i + 1 == n)
        return more(&ps, len, max_head);
    if (p[i + 1] != '\n')
        return fail(&ps, 400, "bare CR");
    i += 2;

    /* field lines, up to the empty line */
    for (;;) {
        if (i == n)
            return more(&ps, len, max_head);
        if (p[i] == '\r') {
            if (i + 1 == n)
                return more(&ps, len, max_head);
            if (p[i + 1] != '\n')
                return fail(&ps, 400, "bare CR");
            i += 2;
            break;
        }
        if (p[i] == ' ' || p[i] == '\t')
            return fail(&ps, 400, "obsolete line folding");
        if (req->nheaders == SL_HTTP_MAX_HEADERS)
            return fail(&ps, 431, "too many header fields");

        size_t h0 = i;
        i = span(p, i, n, C_TOKEN);
        if (i == n)
            return more(&ps, len, max_head);
        if (p[i] != ':') {
            const char *w = p[i] == ' ' || p[i] == '\t'
                                ? "whitespace before colon in header field"
                            : p[i] == '\r' ? "header field without colon"
                                           : "invalid byte in header name";
            return fail(&ps, 400, why_byte(p[i], w));
        }
        if (i == h0)
            return fail(&ps, 400, "empty header name");
        size_t h1 = i++;

        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t f0 = i;
        i = span_fast(p, i, n, C_VALUE);
        if (i == n)
            return more(&ps, len, max_head);
        if (p[i] != '\r')
            return fail(&ps, 400,
                        why_byte(p[i], "control byte in header value"));
        if (i + 1 == n)
            return more(&ps, len, max_head);
        if (p[i + 1] != '\n')
            return fail(&ps, 400, "bare CR");
        size_t f1 = i;
        while (f1 > f0 && (p[f1 - 1] == ' ' || p[f1 - 1] == '\t'))
            f1--;
        i += 2;

        sl_http_header_t *h = &req->headers[req->nheaders++];
        h->name = buf + h0;
        h->name_len = h1 - h0;
        h->value = buf + f0;
        h->value_len = f1 - f0;
        int rc = apply_header(&ps, req, h);
        if (rc != 0)
            return rc;
    }

    if (req->version_minor == 1 && ps.host == 0)
        return fail(&ps, 400, "missing Host");
    req->keep_alive = req->version_minor == 1 ? !ps.close : ps.ka && !ps.close;
    return (int)i;
}

const sl_http_header_t *
sl_http_header_find(const sl_http_request_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const sl_http_header_t *h = &req->headers[i];
        if (h->name_len != n)
            continue;
        size_t k = 0;
        while (k < n && lower((unsigned char)h->name[k]) ==
                            lower((unsigned char)name[k]))
            k++;
        if (k == n)
            return h;
    }
    return NULL;
}

/* Chunked decoder states. */
enum {
    CK_SIZE,    /* chunk-size hex digits; line_len counts them */
    CK_SIZE_WS, /* BWS after the size, which only ';' may follow */
    CK_EXT,     /* chunk extension: skipped */
    CK_SIZE_LF, /* CR ending the size line seen */
    CK_DATA,    /* remaining bytes of chunk data */
    CK_DATA_CR, /* CRLF after the data */
    CK_DATA_LF,
    CK_TRAILER,    /* start of a trailer line or of the final CRLF */
    CK_TNAME,      /* trailer field name */
    CK_TVALUE,     /* trailer field value */
    CK_TRAILER_LF, /* CR ending a trailer line seen */
    CK_FINAL_LF,   /* CR of the final CRLF seen */
    CK_DONE,
    CK_FAILED,
};

#define SL_CHUNK_LINE_MAX 4096
#define SL_CHUNK_SIZE_DIGITS 16

void
sl_chunked_init(sl_chunked_t *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CK_SIZE;
}

static int
hexval(unsigned char ch)
{
    return ch <= '9' ? ch - '0' : lower(ch) - 'a' + 10;
}

ssize_t
sl_chunked_decode(sl_chunked_t *c, const char *in, size_t len, char *out,
                  size_t *out_len, uint64_t max_body, const char **why)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0, o = 0;
    int err = SL_EINVAL;

    *why = NULL;
    if (c->state == CK_FAILED) {
        *out_len = 0;
        *why = "chunked decoder already failed";
        return SL_EINVAL;
    }
    while (i < len && c->state != CK_DONE) {
        unsigned char ch = p[i];
        switch (c->state) {
        case CK_DATA: {
            size_t take = len - i;
            if (take > c->remaining)
                take = (size_t)c->remaining;
            memcpy(out + o, in + i, take);
            o += take;
            i += take;
            c->remaining -= take;
            c->total += take;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            continue;
        }
        case CK_SIZE:
            if (cls[ch] & C_HEX) {
                if (c->line_len == SL_CHUNK_SIZE_DIGITS) {
                    *why = "chunk size too long";
                    goto fail;
                }
                c->remaining = c->remaining << 4 | (uint64_t)hexval(ch);
                c->line_len++;
                break;
            }
            if (c->line_len == 0) {
                *why = why_byte(ch, "missing chunk size");
                goto fail;
            }
            if (c->total > max_body || c->remaining > max_body - c->total) {
                *why = "chunked body too large";
                err = SL_ETOOBIG;
                goto fail;
            }
            if (ch == '\r') {
                c->state = CK_SIZE_LF;
            } else if (ch == ';') {
                c->state = CK_EXT;
            } else if (ch == ' ' || ch == '\t') {
                c->state = CK_SIZE_WS;
            } else {
                *why = why_byte(ch, "invalid chunk size");
                goto fail;
            }
            c->line_len++;
            break;
        case CK_SIZE_WS:
            if (ch == ';') {
                c->state = CK_EXT;
            } else if (ch != ' ' && ch != '\t') {
                *why = why_byte(ch, "whitespace after chunk size");
                goto fail;
            }
            if (++c->line_len > SL_CHUNK_LINE_MAX) {
                *why = "chunk size line too long";
                goto fail;
            }
            break;
        case CK_EXT:
            if (ch == '\r') {
                c->state = CK_SIZE_LF;
            } else if (!(cls[ch] & C_VALUE)) {
                *why = why_byte(ch, "control byte in chunk extension");
                goto fail;
            } else if (++c->line_len > SL_CHUNK_LINE_MAX) {
                *why = "chunk size line too long";
                goto fail;
            }
            break;
        case CK_SIZE_LF:
            if (ch != '\n') {
                *why = "bare CR";
                goto fail;
            }
            c->line_len = 0;
            c->state = c->remaining == 0 ? CK_TRAILER : CK_DATA;
            break;
        case CK_DATA_CR:
            if (ch != '\r') {
                *why = "chunk data not followed by CRLF";
                goto fail;
            }
            c->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n') {
                *why = "chunk data not followed by CRLF";
                goto fail;
            }
            c->state = CK_SIZE;
            break;
        case CK_TRAILER:
            if (ch == '\r') {
                c->state = CK_FINAL_LF;
            } else if (ch == ' ' || ch == '\t') {
                *why = "obsolete line folding in trailer";
                goto fail;
            } else if (!(cls[ch] & C_TOKEN)) {
                *why = why_byte(ch, "invalid byte in trailer name");
                goto fail;
            } else if (c->trailers == SL_HTTP_MAX_HEADERS) {
                *why = "too many trailer fields";
                goto fail;
            } else {
                c->trailers++;
                c->line_len = 1;
                c->state = CK_TNAME;
            }
            break;
        case CK_TNAME:
            if (ch == ':') {
                c->state = CK_TVALUE;
            } else if (!(cls[ch] & C_TOKEN)) {
                *why = ch == ' ' || ch == '\t'
                           ? "whitespace before colon in trailer field"
                       : ch == '\r'
                           ? "trailer field without colon"
                           : why_byte(ch, "invalid byte in trailer name");
                goto fail;
            }
            if (++c->line_len > SL_CHUNK_LINE_MAX) {
                *why = "trailer line too long";
                goto fail;
            }
            break;
        case CK_TVALUE:
            if (ch == '\r') {
                c->state = CK_TRAILER_LF;
            } else if (!(cls[ch] & C_VALUE)) {
                *why = why_byte(ch, "control byte in trailer value");
                goto fail;
            } else if (++c->line_len > SL_CHUNK_LINE_MAX) {
                *why = "trailer line too long";
                goto fail;
            }
            break;
        case CK_TRAILER_LF:
            if (ch != '\n') {
                *why = "bare CR";
                goto fail;
            }
            c->line_len = 0;
            c->state = CK_TRAILER;
            break;
        case CK_FINAL_LF:
            if (ch != '\n') {
                *why = "bare CR";
                goto fail;
            }
            c->state = CK_DONE;
            c->done = 1;
            break;
        }
        i++;
    }
    *out_len = o;
    return (ssize_t)i;

fail:
    c->state = CK_FAILED;
    *out_len = o;
    return err;
}
