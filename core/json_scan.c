/* Strict JSON, walked in place (see json_scan.h for what it refuses and
 * why refusing is always safe). */
#include "json_scan.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* cJSON copies at most 63 characters of a number before strtod: a longer
 * one does not parse there, so it must not parse here. */
#define SL_JSON_MAX_NUMBER 63

static int
hex4(const char *p, const char *end, unsigned *out)
{
    unsigned v = 0;
    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char c = (unsigned char)p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Steps over plain string bytes (not '"', '\\' or a control character):
 * prompts are long runs of them. */
static const char *
skip_plain(const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i ctl = _mm_set1_epi8(0x1f);
    /* c <= 0x1f unsigned: max(c, 0x1f) == 0x1f */
#define SL_HIT(v)                                                              \
    _mm_or_si128(                                                              \
        _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),     \
        _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl))
    /* Most strings are short: one 16-byte look ends them. */
    if (end - p >= 16) {
        int m = _mm_movemask_epi8(
            SL_HIT(_mm_loadu_si128((const __m128i *)(const void *)p)));
        if (m != 0)
            return p + __builtin_ctz((unsigned)m);
        p += 16;
    }
    /* Long prompts: 64 bytes a turn until something stops them. */
    while (end - p >= 64) {
        const __m128i *q = (const __m128i *)(const void *)p;
        __m128i h = _mm_or_si128(
            _mm_or_si128(SL_HIT(_mm_loadu_si128(q)),
                         SL_HIT(_mm_loadu_si128(q + 1))),
            _mm_or_si128(SL_HIT(_mm_loadu_si128(q + 2)),
                         SL_HIT(_mm_loadu_si128(q + 3))));
        if (_mm_movemask_epi8(h) != 0)
            break;
        p += 64;
    }
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        int m = _mm_movemask_epi8(SL_HIT(v));
        if (m != 0)
            return p + __builtin_ctz((unsigned)m);
        p += 16;
    }
#undef SL_HIT
#endif
    while (p < end && (unsigned char)*p >= 0x20 && *p != '"' && *p != '\\')
        p++;
    return p;
}

/* Surrogates must pair up: cJSON refuses a lone one. */
const char *
sl_json_string_end(const char *p, const char *end, int *escaped)
{
    while ((p = skip_plain(p, end)) < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        *escaped = 1;
        if (++p >= end)
            return NULL;
        switch (*p) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't': p++; continue;
        case 'u': break;
        default: return NULL;
        }
        unsigned u, lo;
        if (hex4(p + 1, end, &u) != 0)
            return NULL;
        p += 5;
        if (u >= 0xDC00 && u <= 0xDFFF)
            return NULL;
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' ||
                hex4(p + 2, end, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                return NULL;
            p += 6;
        }
    }
    return NULL;
}

static const char *
scan_number(const char *p, const char *end)
{
    const char *s = p;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        const char *d = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return NULL;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return NULL;
    }
    return p - s > SL_JSON_MAX_NUMBER ? NULL : p;
}

static const char *
scan_word(const char *p, const char *end, const char *w, size_t n)
{
    return (size_t)(end - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

/* One scalar at p (no white space before it): its end, or NULL. */
static const char *
scan_scalar(const char *p, const char *end, sl_json_type_t *type,
            int *escaped)
{
    switch (*p) {
    case '"':
        *type = SL_JSON_STRING;
        return sl_json_string_end(p + 1, end, escaped);
    case 't': *type = SL_JSON_TRUE; return scan_word(p, end, "true", 4);
    case 'f': *type = SL_JSON_FALSE; return scan_word(p, end, "false", 5);
    case 'n': *type = SL_JSON_NULL; return scan_word(p, end, "null", 4);
    default: *type = SL_JSON_NUMBER; return scan_number(p, end);
    }
}

/* The object or array at p, through its closing bracket: its end or NULL.
 * Iterative, with the brackets still open on a small stack. */
static const char *
scan_container(const char *p, const char *end, int depth)
{
    char stack[SL_JSON_MAX_DEPTH];
    int top = 0, esc;
    sl_json_type_t t;
    for (;;) { /* p is on an opening bracket */
        if (depth + top >= SL_JSON_MAX_DEPTH)
            return NULL;
        stack[top++] = *p == '{' ? '}' : ']';
        p = sl_json_skip_ws(p + 1, end);
        if (p >= end || *p != stack[top - 1])
            goto item;
        p++;
        if (--top == 0)
            return p;
    after: /* a value ended inside stack[top - 1] */
        p = sl_json_skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == ',') {
            p = sl_json_skip_ws(p + 1, end);
            goto item;
        }
        if (*p != stack[top - 1])
            return NULL;
        p++;
        if (--top == 0)
            return p;
        goto after;
    item:
        if (stack[top - 1] == '}') {
            if (p >= end || *p != '"' ||
                (p = sl_json_string_end(p + 1, end, &esc)) == NULL)
                return NULL;
            p = sl_json_skip_ws(p, end);
            if (p >= end || *p != ':')
                return NULL;
            p = sl_json_skip_ws(p + 1, end);
        }
        if (p >= end)
            return NULL;
        if (*p == '{' || *p == '[')
            continue;
        if ((p = scan_scalar(p, end, &t, &esc)) == NULL)
            return NULL;
        goto after;
    }
}

int
sl_jscan_value(sl_jscan_t *s, sl_jval_t *v)
{
    const char *p = sl_json_skip_ws(s->p, s->end), *e;
    sl_json_type_t t;
    int esc = 0;
    if (p >= s->end)
        return -1;
    if (*p == '{' || *p == '[') {
        t = *p == '{' ? SL_JSON_OBJECT : SL_JSON_ARRAY;
        e = scan_container(p, s->end, s->depth);
    } else {
        e = scan_scalar(p, s->end, &t, &esc);
    }
    if (e == NULL)
        return -1;
    if (v != NULL) {
        v->type = t;
        v->start = p;
        v->len = (size_t)(e - p);
        v->escaped = esc;
    }
    s->p = e;
    return 0;
}

int
sl_json_long(const sl_jval_t *v, long *out)
{
    if (v->type != SL_JSON_NUMBER || v->len == 0)
        return -1;
    const char *p = v->start, *end = v->start + v->len;
    int neg = *p == '-';
    p += neg;
    /* Up to 15 digits a double holds exactly: no strtod needed. */
    if (end - p <= 15) {
        long n = 0;
        const char *q = p;
        while (q < end && *q >= '0' && *q <= '9')
            n = n * 10 + (*q++ - '0');
        if (q == end) {
            *out = neg ? -n : n;
            return 0;
        }
    }
    char buf[SL_JSON_MAX_NUMBER + 1];
    memcpy(buf, v->start, v->len);
    buf[v->len] = '\0';
    double d = strtod(buf, NULL);
    /* cJSON's number is this double; a cast out of range is undefined, so
     * clamp where cJSON's valueint does. */
    if (d >= (double)LONG_MAX)
        *out = LONG_MAX;
    else if (d <= (double)LONG_MIN)
        *out = LONG_MIN;
    else
        *out = (long)d;
    return 0;
}

const char *
sl_json_find(const char *hay, size_t len, const char *needle,
             size_t needle_len)
{
    if (len < needle_len)
        return NULL;
    const char *p = hay, *last = hay + len - needle_len; /* last start */
    const char a = needle[0], b = needle[1];
#ifdef __SSE2__
    /* Starts where the first two bytes match, 16 candidates at a time. */
    const __m128i va = _mm_set1_epi8(a), vb = _mm_set1_epi8(b);
    while (last - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i y = _mm_loadu_si128((const __m128i *)(const void *)(p + 1));
        unsigned m = (unsigned)_mm_movemask_epi8(
            _mm_and_si128(_mm_cmpeq_epi8(x, va), _mm_cmpeq_epi8(y, vb)));
        while (m != 0) {
            const char *s = p + __builtin_ctz(m);
            if (memcmp(s + 2, needle + 2, needle_len - 2) == 0)
                return s;
            m &= m - 1;
        }
        p += 16;
    }
#endif
    for (; p <= last; p++)
        if (p[0] == a && p[1] == b &&
            memcmp(p + 2, needle + 2, needle_len - 2) == 0)
            return p;
    return NULL;
}
