/* Failure-mode directives: `[mock:name=value]` tokens in the last user
 * message (they survive a gateway that forwards only the body) and
 * `x-mock-<name>: value` request headers (for direct use). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mock.h"

#define TOKEN "[mock:"
#define TOKEN_LEN (sizeof(TOKEN) - 1)

void
mock_directives_init(mock_directives_t *d)
{
    memset(d, 0, sizeof(*d));
    d->retry_after = -1;
    d->close_after = -1;
    d->words = -1;
}

/* A number in [min, max], or -1 when the value is not one. */
static long
number(const char *v, size_t n, long min, long max)
{
    if (!v || n == 0 || n > 18)
        return -1;
    long x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    if (x < min)
        return -1;
    return x > max ? max : x;
}

static bool
flag(const char *v, size_t n)
{
    if (!v)
        return true;
    static const char *const off[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++)
        if (strlen(off[i]) == n && strncasecmp(v, off[i], n) == 0)
            return false;
    return true;
}

static enum mock_frame
frame_mode(const char *v, size_t n)
{
    static const struct {
        const char *name;
        enum mock_frame mode;
    } modes[] = {
        {"cl_te", MOCK_FRAME_CL_TE},       {"dup_cl", MOCK_FRAME_DUP_CL},
        {"te_gzip", MOCK_FRAME_TE_GZIP},   {"bad_chunk", MOCK_FRAME_BAD_CHUNK},
        {"obs_fold", MOCK_FRAME_OBS_FOLD}, {"bare_lf", MOCK_FRAME_BARE_LF},
    };
    for (size_t i = 0; v && i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strlen(modes[i].name) == n && strncmp(v, modes[i].name, n) == 0)
            return modes[i].mode;
    return MOCK_FRAME_NONE;
}

static bool
name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* `fail_times=KEY:N:MODE`: the first N requests that carry KEY fail with
 * MODE (an HTTP status, "hang", "garbage" or "cut1": a stream cut after its
 * first event), later ones succeed. It lets a test make one attempt fail
 * and the gateway's retry or fallback succeed. The counters are process
 * wide. */
#define FAIL_KEYS 64
static struct {
    char key[32];
    long count;
} fail_counters[FAIL_KEYS];
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

static int
fail_turn(const char *key, size_t kn, long times)
{
    int fail = 0;
    if (kn == 0 || kn >= sizeof(fail_counters[0].key))
        return 0;
    pthread_mutex_lock(&fail_lock);
    for (int i = 0; i < FAIL_KEYS; i++) {
        if (fail_counters[i].key[0] == '\0') {
            memcpy(fail_counters[i].key, key, kn);
            fail_counters[i].key[kn] = '\0';
        }
        if (strlen(fail_counters[i].key) == kn &&
            memcmp(fail_counters[i].key, key, kn) == 0) {
            fail = fail_counters[i].count++ < times;
            break;
        }
    }
    pthread_mutex_unlock(&fail_lock);
    return fail;
}

static void
apply_fail_times(mock_directives_t *d, const char *v, size_t vn)
{
    const char *c1 = v ? memchr(v, ':', vn) : NULL;
    const char *c2 = c1 ? memchr(c1 + 1, ':', vn - (size_t)(c1 + 1 - v)) : NULL;
    if (c2 == NULL)
        return;
    long times = number(c1 + 1, (size_t)(c2 - c1 - 1), 0, 1000000);
    const char *mode = c2 + 1;
    size_t mn = vn - (size_t)(mode - v);
    if (times < 0 || !fail_turn(v, (size_t)(c1 - v), times))
        return;
    long st;
    if (name_is(mode, mn, "hang"))
        d->hang = true;
    else if (name_is(mode, mn, "garbage"))
        d->garbage = true;
    else if (name_is(mode, mn, "cut1"))
        d->close_after = 1;
    else if ((st = number(mode, mn, 100, 599)) >= 0)
        d->status = (int)st;
}

/* Unknown names and malformed values are ignored: a typo must not turn into
 * a different failure than the one the test asked for. */
static void
apply(mock_directives_t *d, const char *name, size_t nn, const char *v,
      size_t vn)
{
    long x;
    if (name_is(name, nn, "status")) {
        if ((x = number(v, vn, 100, 599)) >= 0)
            d->status = (int)x;
    } else if (name_is(name, nn, "retry_after")) {
        if ((x = number(v, vn, 0, 1000000000L)) >= 0)
            d->retry_after = x;
    } else if (name_is(name, nn, "hang")) {
        d->hang = flag(v, vn);
    } else if (name_is(name, nn, "garbage")) {
        d->garbage = flag(v, vn);
    } else if (name_is(name, nn, "close_after")) {
        if ((x = number(v, vn, 0, 1000000000L)) >= 0)
            d->close_after = x;
    } else if (name_is(name, nn, "first_byte_ms")) {
        if ((x = number(v, vn, 0, MOCK_MAX_MS)) >= 0)
            d->first_byte_ms = x;
    } else if (name_is(name, nn, "gap_ms")) {
        if ((x = number(v, vn, 0, MOCK_MAX_MS)) >= 0)
            d->gap_ms = x;
    } else if (name_is(name, nn, "delay_ms")) {
        if ((x = number(v, vn, 0, MOCK_MAX_MS)) >= 0)
            d->delay_ms = x;
    } else if (name_is(name, nn, "words")) {
        if ((x = number(v, vn, 0, MOCK_MAX_WORDS)) >= 0)
            d->words = x;
    } else if (name_is(name, nn, "frame")) {
        d->frame = frame_mode(v, vn);
    } else if (name_is(name, nn, "fail_times")) {
        apply_fail_times(d, v, vn);
    } else if (name_is(name, nn, "tool")) {
        if (v && vn > 0 && vn < sizeof(d->tool)) {
            memcpy(d->tool, v, vn);
            d->tool[vn] = '\0';
        }
    }
}

void
mock_directives_from_headers(mock_directives_t *d, const mock_req_t *r)
{
    for (int i = 0; i < r->nhdr; i++) {
        const char *name = r->hdr[i].name;
        if (strncmp(name, "x-mock-", 7) != 0)
            continue;
        name += 7;
        /* Header names use dashes; directive names use underscores. */
        char norm[64];
        size_t nn = strlen(name);
        if (nn >= sizeof(norm))
            continue;
        for (size_t k = 0; k < nn; k++)
            norm[k] = name[k] == '-' ? '_' : name[k];
        apply(d, norm, nn, r->hdr[i].value, strlen(r->hdr[i].value));
    }
}

void
mock_directives_from_text(mock_directives_t *d, const char *s, size_t n)
{
    const char *end = s + n;
    const char *p = s;
    while (p < end) {
        const char *tok = memmem(p, (size_t)(end - p), TOKEN, TOKEN_LEN);
        if (!tok)
            break;
        const char *body = tok + TOKEN_LEN;
        const char *close = memchr(body, ']', (size_t)(end - body));
        if (!close)
            break;
        const char *eq = memchr(body, '=', (size_t)(close - body));
        if (eq)
            apply(d, body, (size_t)(eq - body), eq + 1,
                  (size_t)(close - eq - 1));
        else
            apply(d, body, (size_t)(close - body), NULL, 0);
        p = close + 1;
    }
}

static bool
is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

char *
mock_strip_directives(const char *s, size_t n, size_t *out_len)
{
    mock_buf_t b = {0};
    mock_buf_add(&b, "", 0);
    const char *end = s + n;
    const char *p = s;
    while (p < end) {
        const char *tok = memmem(p, (size_t)(end - p), TOKEN, TOKEN_LEN);
        const char *close = tok ? memchr(tok, ']', (size_t)(end - tok)) : NULL;
        if (!close) {
            mock_buf_add(&b, p, (size_t)(end - p));
            break;
        }
        mock_buf_add(&b, p, (size_t)(tok - p));
        p = close + 1;
    }
    size_t a = 0, z = b.len;
    while (a < z && is_space(b.p[a]))
        a++;
    while (z > a && is_space(b.p[z - 1]))
        z--;
    memmove(b.p, b.p + a, z - a);
    b.p[z - a] = '\0';
    *out_len = z - a;
    return b.p;
}
