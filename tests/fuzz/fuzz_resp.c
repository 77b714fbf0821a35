/* Fuzzes the upstream response parser: what it reports (head lines, body
 * bytes, the verdict) must not depend on how the answer is cut into reads
 * or where the consumer pauses. The first input byte picks the cut size
 * and whether the consumer pauses; the rest is the answer. Any difference
 * abort()s. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upstream_parse.h"

struct trace {
    unsigned char *b;
    size_t len, cap;
    int pause;
};

static void
put(struct trace *t, const void *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1)
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
on_line(void *ud, const char *line, size_t len)
{
    put(ud, "L", 1);
    put(ud, line, len);
    put(ud, "\n", 1);
}

static int
on_body(void *ud, const char *data, size_t len)
{
    struct trace *t = ud;
    put(t, data, len); /* bytes only: how they are split may differ */
    return t->pause;
}

static const sl_resp_sink_t sink = {on_line, on_body};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Parses data cut into `step`-byte reads; the verdict goes in the trace. */
static void
parse(struct trace *t, const uint8_t *data, size_t size, size_t step)
{
    unsigned char *buf = malloc(size + 1);
    if (buf == NULL)
        abort();
    sl_resp_parser_t p;
    sl_resp_init(&p, 0);
    size_t have = 0, given = 0;
    int verdict = 1; /* needs more */
    while (verdict == 1) {
        size_t n = size - given < step ? size - given : step;
        memcpy(buf + have, data + given, n);
        have += n;
        given += n;
        for (;;) {
            ssize_t used = sl_resp_feed(&p, (char *)buf, have, &sink, t);
            if (used < 0) {
                verdict = -1;
                break;
            }
            if ((size_t)used > have)
                abort();
            memmove(buf, buf + used, have - (size_t)used);
            have -= (size_t)used;
            if (p.state == SL_RESP_DONE) {
                verdict = 0;
                break;
            }
            if (!p.paused)
                break;
            p.paused = 0;
        }
        if (verdict == 1 && given == size) {
            if (have >= SL_RESP_HEAD_MAX)
                verdict = -1;
            else
                verdict = sl_resp_eof(&p) == 0 ? 2 : -1;
        }
    }
    char v = (char)('0' + verdict + 1);
    put(t, "V", 1);
    put(t, &v, 1);
    free(buf);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (data[0] & 0x3f) + 1;
    int pause = (data[0] & 0x40) != 0;
    data++;
    size--;
    struct trace whole = {0}, cut = {0};
    cut.pause = pause;
    parse(&whole, data, size, size ? size : 1);
    parse(&cut, data, size, step);
    if (whole.len != cut.len || memcmp(whole.b, cut.b, whole.len) != 0)
        abort();
    free(whole.b);
    free(cut.b);
    return 0;
}
