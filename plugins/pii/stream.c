/* Restores placeholders (and, when asked, masks PII the model produced)
 * in a stream, where a placeholder or a value may be cut anywhere between
 * two events. Holds back as little as possible: only a trailing "<..."
 * that can still become one of this request's placeholders, and, when
 * scanning, the words after the last point no value can straddle. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, inet_pton under -std=c11 */
#endif
#include "pii.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* Past this much held text a scan cuts anyway: a stream must move. */
#define PII_SCAN_HOLD_MAX 4096

/* Whether the text may be cut at i (before text[i]) without cutting a
 * value: after whitespace that follows a lowercase word or closing
 * punctuation. Values that contain spaces (phones, cards, IBANs, SSNs)
 * are digits and capitals; "Bearer <token>" is the one lowercase-led
 * value, so a cut never follows "bearer". */
static int
safe_at(const char *t, size_t i) {
    if (i < 2 || !isspace((unsigned char)t[i - 1]))
        return 0;
    unsigned char c = (unsigned char)t[i - 2];
    if (!(islower(c) || strchr(",;!?\"'", c) != NULL) || c == '\0')
        return 0;
    if (i >= 7 && strncasecmp(t + i - 7, "bearer", 6) == 0)
        return 0;
    return 1;
}

/* The largest safe cut <= limit, or 0. A private key block that has begun
 * and not ended is held whole. */
static size_t
scan_cut(const char *t, size_t len, size_t limit) {
    const char *begin = NULL;
    for (const char *p = t;
         (p = memmem(p, len - (size_t)(p - t), "-----BEGIN", 10)) != NULL;
         p += 10)
        begin = p;
    if (begin != NULL &&
        memmem(begin, len - (size_t)(begin - t), "-----END", 8) == NULL) {
        size_t b = (size_t)(begin - t);
        if (b < limit)
            limit = b;
    }
    for (size_t i = limit; i > 0; i--)
        if (safe_at(t, i))
            return i;
    return 0;
}

int
pii_stream_feed(pii_stream_t *st, const pii_map_t *map,
                const pii_detectors_t *scan, int scan_mode, const char *delta,
                size_t len, int final, pii_buf_t *out, const pii_alloc_t *a) {
    if (pii_buf_add(&st->pending, delta, len, a) != 0)
        return -1;
    const char *t = st->pending.p;
    size_t n = st->pending.n, cut = n;
    if (!final) {
        cut = n - pii_partial_tail(map, t, n);
        if (scan != NULL) {
            size_t c = scan_cut(t, n, cut);
            if (c > 0 || n <= PII_SCAN_HOLD_MAX)
                cut = c;
        }
    }
    pii_buf_t tmp = {0}, restored = {0};
    const char *emit = t;
    size_t en = cut;
    if (scan != NULL && cut > 0) {
        size_t changed;
        if (pii_rewrite(scan, NULL, scan_mode, t, cut, &tmp, &changed, a) != 0)
            return -1;
        emit = tmp.p;
        en = tmp.n;
    }
    if (map->n > 0 && en > 0) {
        if (pii_restore(map, emit, en, &restored, a) != 0)
            return -1;
        emit = restored.p;
        en = restored.n;
    }
    if (pii_buf_add(out, emit, en, a) != 0)
        return -1;
    /* Keep the rest at the front of pending (it only shrinks here). */
    memmove(st->pending.p, t + cut, n - cut);
    st->pending.n = n - cut;
    st->pending.p[st->pending.n] = '\0';
    return 0;
}
