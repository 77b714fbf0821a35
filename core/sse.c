/* Incremental SSE parser. Lines are found with memchr; a line that lies
 * whole in the caller's buffer is parsed in place, and a lone data line is
 * handed to the callback without a copy (the shape of nearly every OpenAI
 * and Anthropic event). Only what must outlive a feed -- the event type, the
 * data and a cut line -- is copied into p->buf, laid out as
 * [event type][data][partial line]. */
#include "sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define SSE_FIRST_CAP 256

/* Fields that still point into the caller's buffer during one feed. */
struct feed {
    sl_sse_t *p;
    sl_sse_event_cb cb;
    void *ud;
    const char *ev; /* event type, when ev_set */
    size_t ev_len;
    const char *data; /* the event's only data line, when data_set */
    size_t data_len;
    int ev_set, data_set;
};

void
sl_sse_init(sl_sse_t *p, size_t max_event) {
    memset(p, 0, sizeof(*p));
    p->max_event = max_event;
}

void
sl_sse_free(sl_sse_t *p) {
    size_t max_event = p->max_event;

    free(p->buf);
    sl_sse_init(p, max_event);
}

int
sl_sse_pending(const sl_sse_t *p) {
    return p->err != 0 || p->len > 0 || p->has_data ||
           (p->bom > 0 && p->bom < 3);
}

static int
sse_fail(sl_sse_t *p, int code) {
    p->err = code;
    p->len = p->event_len = p->data_len = 0;
    p->has_data = 0;
    return code;
}

/* Grows buf geometrically to hold `need` bytes, never past max_event when
 * the need fits in it: the limit bounds the allocation too. */
static int
sse_reserve(sl_sse_t *p, size_t need) {
    size_t cap;
    char *nbuf;

    if (need <= p->cap && p->buf != NULL)
        return 0;
    cap = p->cap ? p->cap : SSE_FIRST_CAP;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > p->max_event && need <= p->max_event)
        cap = p->max_event > 0 ? p->max_event : 1;
    nbuf = realloc(p->buf, cap);
    if (nbuf == NULL)
        return SL_ENOMEM;
    p->buf = nbuf;
    p->cap = cap;
    return 0;
}

static size_t
feed_event_len(const struct feed *f) {
    return f->ev_set ? f->ev_len : f->p->event_len;
}

static size_t
feed_data_len(const struct feed *f) {
    return f->data_set ? f->data_len : f->p->data_len;
}

/* Copies the fields still pointing into the caller's buffer into p->buf.
 * Such references exist only while buf holds no partial line. */
static int
sse_materialize(struct feed *f) {
    sl_sse_t *p = f->p;

    if (f->ev_set) {
        if (sse_reserve(p, f->ev_len + p->data_len + f->data_len) != 0)
            return SL_ENOMEM;
        memmove(p->buf + f->ev_len, p->buf + p->event_len, p->data_len);
        memcpy(p->buf, f->ev, f->ev_len);
        p->event_len = f->ev_len;
        p->len = p->event_len + p->data_len;
        f->ev_set = 0;
    }
    if (f->data_set) {
        /* a data reference exists only while buf holds no data */
        if (sse_reserve(p, p->event_len + f->data_len) != 0)
            return SL_ENOMEM;
        memcpy(p->buf + p->event_len, f->data, f->data_len);
        p->data_len = f->data_len;
        p->len = p->event_len + p->data_len;
        f->data_set = 0;
    }
    return 0;
}

static int
sse_dispatch(struct feed *f) {
    sl_sse_t *p = f->p;
    const char *ev, *data;
    size_t ev_len, data_len;
    int has_data = p->has_data;

    ev = f->ev_set ? f->ev : p->buf;
    ev_len = feed_event_len(f);
    data = f->data_set ? f->data : p->buf ? p->buf + p->event_len : "";
    data_len = feed_data_len(f);
    /* Reset first: the pointers stay valid (buf is not freed) and the
     * parser is consistent whatever the callback returns. */
    f->ev_set = f->data_set = 0;
    p->len = p->event_len = p->data_len = 0;
    p->has_data = 0;
    if (!has_data)
        return 0;
    if (ev_len == 0)
        ev = NULL;
    return f->cb(f->ud, ev, ev_len, data, data_len);
}

/* Appends a data line's value. `in_buf`: the line is the tail of p->buf. */
static int
sse_add_data(struct feed *f, const char *v, size_t vlen, int in_buf) {
    sl_sse_t *p = f->p;
    size_t end;

    if (!in_buf && !p->has_data) {
        f->data = v;
        f->data_len = vlen;
        f->data_set = 1;
        p->has_data = 1;
        return 0;
    }
    if (!in_buf) {
        if (f->data_set) {
            if (sse_reserve(p, p->len + f->data_len) != 0)
                return sse_fail(p, SL_ENOMEM);
            memcpy(p->buf + p->len, f->data, f->data_len);
            p->data_len = f->data_len;
            p->len += f->data_len;
            f->data_set = 0;
        }
        if (sse_reserve(p, p->len + 1 + vlen) != 0)
            return sse_fail(p, SL_ENOMEM);
    }
    /* In buf the value sits past "data:" in the line that follows the data,
     * so moving it down to the end of the data never overlaps badly. */
    end = p->event_len + p->data_len;
    if (p->has_data)
        p->buf[end++] = '\n';
    memmove(p->buf + end, v, vlen);
    p->data_len = end + vlen - p->event_len;
    p->has_data = 1;
    p->len = p->event_len + p->data_len;
    return 0;
}

static void
sse_reverse(char *s, size_t n) {
    for (size_t i = 0; i < n / 2; i++) {
        char c = s[i];
        s[i] = s[n - 1 - i];
        s[n - 1 - i] = c;
    }
}

static void
sse_set_event(struct feed *f, const char *v, size_t vlen, int in_buf) {
    sl_sse_t *p = f->p;
    size_t d = p->data_len;

    if (!in_buf) {
        f->ev = v;
        f->ev_len = vlen;
        f->ev_set = 1;
        return;
    }
    /* [old type][data][line] -> [data][type] -> [type][data], in place:
     * the value never has to live anywhere but buf. */
    memmove(p->buf + p->event_len + d, v, vlen);
    memmove(p->buf, p->buf + p->event_len, d + vlen);
    if (d > 0) {
        sse_reverse(p->buf, d + vlen);
        sse_reverse(p->buf, vlen);
        sse_reverse(p->buf + vlen, d);
    }
    p->event_len = vlen;
    p->len = vlen + d;
}

static int
sse_line(struct feed *f, const char *line, size_t n, int in_buf) {
    sl_sse_t *p = f->p;
    const char *colon, *v;
    size_t flen, vlen;
    int rc = 0;

    if (n == 0)
        return sse_dispatch(f);
    if (line[0] != ':') {
        colon = memchr(line, ':', n);
        flen = colon ? (size_t)(colon - line) : n;
        v = colon ? colon + 1 : line + n;
        vlen = (size_t)(line + n - v);
        if (vlen > 0 && *v == ' ') {
            v++;
            vlen--;
        }
        if (flen == 4 && memcmp(line, "data", 4) == 0)
            rc = sse_add_data(f, v, vlen, in_buf);
        else if (flen == 5 && memcmp(line, "event", 5) == 0)
            sse_set_event(f, v, vlen, in_buf);
    }
    /* drop what is left of a line that was carried in buf */
    if (in_buf)
        p->len = p->event_len + p->data_len;
    return rc;
}

/* Returns the bytes of a leading UTF-8 BOM to skip, remembering a BOM cut
 * between feeds; bytes that turn out not to be one start the first line. */
static int
sse_bom(sl_sse_t *p, const char **s, const char *end) {
    static const unsigned char bom[3] = {0xEF, 0xBB, 0xBF};
    int k;

    while (p->bom < 3 && *s < end && (unsigned char)**s == bom[p->bom]) {
        p->bom++;
        (*s)++;
    }
    if (p->bom == 3 || *s == end)
        return 0;
    k = p->bom;
    p->bom = 3;
    if (k == 0)
        return 0;
    if ((size_t)k > p->max_event)
        return SL_ETOOBIG;
    if (sse_reserve(p, (size_t)k) != 0)
        return SL_ENOMEM;
    memcpy(p->buf, bom, (size_t)k);
    p->len = (size_t)k;
    return 0;
}

int
sl_sse_feed(sl_sse_t *p, const char *buf, size_t len, sl_sse_event_cb cb,
            void *ud) {
    struct feed f = {.p = p, .cb = cb, .ud = ud};
    const char *s = buf, *end = buf + len, *lf = NULL, *cr = NULL;
    int rc;

    if (p->err != 0)
        return p->err;
    if (len == 0)
        return 0;
    if (p->bom < 3 && (rc = sse_bom(p, &s, end)) != 0)
        return sse_fail(p, rc);
    if (p->last_cr && s < end) {
        if (*s == '\n')
            s++;
        p->last_cr = 0;
    }
    while (s < end) {
        const char *eol, *next;
        size_t n;

        /* Both searches are cached so each byte is scanned at most once per
         * character, whichever line ending the stream uses. */
        if (lf == NULL || lf < s) {
            lf = memchr(s, '\n', (size_t)(end - s));
            lf = lf ? lf : end;
        }
        if (cr == NULL || cr < s) {
            cr = memchr(s, '\r', (size_t)(end - s));
            cr = cr ? cr : end;
        }
        eol = lf < cr ? lf : cr;
        if (eol == end)
            break;
        n = (size_t)(eol - s);
        next = eol + 1;
        if (*eol == '\r') {
            if (next == end)
                p->last_cr = 1;
            else if (*next == '\n')
                next++;
        }
        if (p->len > p->event_len + p->data_len) {
            /* the end of a line cut by the previous feed */
            size_t start = p->event_len + p->data_len;

            if (p->len + n > p->max_event)
                return sse_fail(p, SL_ETOOBIG);
            if (sse_reserve(p, p->len + n) != 0)
                return sse_fail(p, SL_ENOMEM);
            memcpy(p->buf + p->len, s, n);
            p->len += n;
            rc = sse_line(&f, p->buf + start, p->len - start, 1);
        } else {
            if (feed_event_len(&f) + feed_data_len(&f) + n > p->max_event)
                return sse_fail(p, SL_ETOOBIG);
            rc = sse_line(&f, s, n, 0);
        }
        s = next;
        if (rc != 0)
            return rc; /* the callback's value, or a sticky error */
    }
    if (sse_materialize(&f) != 0)
        return sse_fail(p, SL_ENOMEM);
    if (s < end) {
        size_t n = (size_t)(end - s);

        if (p->len + n > p->max_event)
            return sse_fail(p, SL_ETOOBIG);
        if (sse_reserve(p, p->len + n) != 0)
            return sse_fail(p, SL_ENOMEM);
        memcpy(p->buf + p->len, s, n);
        p->len += n;
    }
    return 0;
}
