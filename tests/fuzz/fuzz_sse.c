/* Fuzzes the SSE parser: the events (type and data) must not depend on how
 * the stream is cut into feeds, and, when no limit is hit, must match a
 * slow, obviously-correct reading of the WHATWG rules over the whole input.
 * Any difference abort()s. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sse.h"

/* The events of one run, serialised as (type len, type, data len, data). */
struct trace {
    unsigned char *b;
    size_t len, cap;
    int rc;
    int pending;
};

static void
trace_put(struct trace *t, const void *s, size_t n) {
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n)
            cap *= 2;
        t->b = realloc(t->b, cap);
        if (t->b == NULL)
            abort();
        t->cap = cap;
    }
    if (n > 0)
        memcpy(t->b + t->len, s, n);
    t->len += n;
}

static void
trace_event(struct trace *t, const char *ev, size_t ev_len, const char *data,
            size_t data_len) {
    trace_put(t, &ev_len, sizeof(ev_len));
    trace_put(t, ev, ev_len);
    trace_put(t, &data_len, sizeof(data_len));
    trace_put(t, data, data_len);
}

static int
on_event(void *ud, const char *ev, size_t ev_len, const char *data,
         size_t data_len) {
    if ((ev == NULL) != (ev_len == 0) || data == NULL)
        abort();
    trace_event(ud, ev, ev_len, data, data_len);
    return 0;
}

/* Feeds `data` in pieces: cuts[] are increasing offsets. */
static void
run(struct trace *t, const uint8_t *data, size_t size, size_t max_event,
    const size_t *cuts, size_t ncuts) {
    sl_sse_t p;
    size_t at = 0;

    memset(t, 0, sizeof(*t));
    sl_sse_init(&p, max_event);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : size;
        if (to < at || to > size)
            continue;
        t->rc = sl_sse_feed(&p, (const char *)data + at, to - at, on_event, t);
        at = to;
        if (t->rc != 0)
            break;
    }
    t->pending = sl_sse_pending(&p);
    sl_sse_free(&p);
}

static void
run_bytewise(struct trace *t, const uint8_t *data, size_t size,
             size_t max_event, size_t step) {
    sl_sse_t p;

    memset(t, 0, sizeof(*t));
    sl_sse_init(&p, max_event);
    for (size_t at = 0; at < size; at += step) {
        size_t n = size - at < step ? size - at : step;
        t->rc = sl_sse_feed(&p, (const char *)data + at, n, on_event, t);
        if (t->rc != 0)
            break;
    }
    t->pending = sl_sse_pending(&p);
    sl_sse_free(&p);
}

static void
same(const struct trace *a, const struct trace *b) {
    if (a->rc != b->rc || a->pending != b->pending || a->len != b->len ||
        (a->len > 0 && memcmp(a->b, b->b, a->len) != 0))
        abort();
}

/* The reference: the spec's algorithm, line by line, over the whole input. */
static void
reference(struct trace *t, const uint8_t *in, size_t size) {
    const char *s = (const char *)in, *end = s + size;
    struct trace ev = {0}, data = {0};
    int has_data = 0;

    memset(t, 0, sizeof(*t));
    if (size >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
        s += 3;
    while (s < end) {
        const char *e = s;
        while (e < end && *e != '\r' && *e != '\n')
            e++;
        if (e == end) {
            t->pending = 1; /* a cut line */
            break;
        }
        size_t n = (size_t)(e - s);
        if (n == 0) {
            if (has_data)
                trace_event(t, (const char *)ev.b, ev.len,
                            data.len ? (const char *)data.b : "", data.len);
            ev.len = data.len = 0;
            has_data = 0;
        } else if (s[0] != ':') {
            size_t f = 0;
            while (f < n && s[f] != ':')
                f++;
            const char *v = f < n ? s + f + 1 : s + n;
            size_t vlen = (size_t)(s + n - v);
            if (vlen > 0 && v[0] == ' ')
                v++, vlen--;
            if (f == 4 && memcmp(s, "data", 4) == 0) {
                if (has_data)
                    trace_put(&data, "\n", 1);
                trace_put(&data, v, vlen);
                has_data = 1;
            } else if (f == 5 && memcmp(s, "event", 5) == 0) {
                ev.len = 0;
                trace_put(&ev, v, vlen);
            }
        }
        s = e + 1;
        if (*e == '\r' && s < end && *s == '\n')
            s++;
    }
    if (ev.len > 0 || has_data)
        t->pending = 1;
    free(ev.b);
    free(data.b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct trace whole, other;
    /* Large enough that no event of this input can reach it. */
    size_t big = size + 1;
    /* Small enough that many inputs hit SL_ETOOBIG, exercising that path. */
    size_t small = 1 + (size > 0 ? data[0] % 48 : 0);
    size_t limits[2] = {big, small};

    reference(&other, data, size);
    run(&whole, data, size, big, NULL, 0);
    if (whole.rc != 0)
        abort();
    same(&whole, &other);
    free(whole.b);
    free(other.b);

    for (size_t l = 0; l < 2; l++) {
        size_t max = limits[l];
        run(&whole, data, size, max, NULL, 0);
        if (whole.rc != 0 && whole.rc != SL_ETOOBIG)
            abort();

        static const size_t steps[] = {1, 2, 3, 7, 64};
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
            run_bytewise(&other, data, size, max, steps[i]);
            same(&whole, &other);
            free(other.b);
        }
        /* every single cut point, on small inputs; a few on large ones */
        size_t stride = size > 512 ? size / 97 + 1 : 1;
        for (size_t cut = 0; cut <= size; cut += stride) {
            size_t cuts[3] = {cut, cut + (size - cut) / 2,
                              cut + (size - cut) / 2 + 1};
            run(&other, data, size, max, cuts, 1);
            same(&whole, &other);
            free(other.b);
            run(&other, data, size, max, cuts, 3);
            same(&whole, &other);
            free(other.b);
        }
        free(whole.b);
    }
    return 0;
}
