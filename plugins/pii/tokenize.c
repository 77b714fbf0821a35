/* The placeholder map (value <-> <LABEL_N>) and the rewrites that use it:
 * masking a text on the way in, restoring placeholders on the way out. */
#include "pii.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *
pii_alloc(const pii_alloc_t *a, size_t n) {
    return a->fn(a->ud, n ? n : 1);
}

int
pii_buf_add(pii_buf_t *b, const char *s, size_t n, const pii_alloc_t *a) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = pii_alloc(a, cap);
        if (p == NULL)
            return -1;
        if (b->n)
            memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static char *
copy_str(const char *s, size_t n, const pii_alloc_t *a) {
    char *p = pii_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

int
pii_map_add(pii_map_t *m, const char *ph, size_t phlen, const char *val,
            size_t vlen, const pii_alloc_t *a) {
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        pii_entry_t *e = pii_alloc(a, cap * sizeof(*e));
        if (e == NULL)
            return -1;
        if (m->n)
            memcpy(e, m->e, m->n * sizeof(*e));
        m->e = e;
        m->cap = cap;
    }
    pii_entry_t *e = &m->e[m->n];
    e->ph = copy_str(ph, phlen, a);
    e->val = copy_str(val, vlen, a);
    if (e->ph == NULL || e->val == NULL)
        return -1;
    e->phlen = phlen;
    e->vlen = vlen;
    m->n++;
    return 0;
}

const pii_entry_t *
pii_map_find(const pii_map_t *m, const char *ph, size_t phlen) {
    for (size_t i = 0; i < m->n; i++)
        if (m->e[i].phlen == phlen && memcmp(m->e[i].ph, ph, phlen) == 0)
            return &m->e[i];
    return NULL;
}

const pii_entry_t *
pii_map_put(pii_map_t *m, const char *label, const char *val, size_t vlen,
            const pii_alloc_t *a) {
    size_t ll = strlen(label);
    unsigned long next = 1;
    for (size_t i = 0; i < m->n; i++) {
        const pii_entry_t *e = &m->e[i];
        if (e->phlen > ll + 2 && memcmp(e->ph + 1, label, ll) == 0 &&
            e->ph[ll + 1] == '_') {
            if (e->vlen == vlen && memcmp(e->val, val, vlen) == 0)
                return e;
            unsigned long k = strtoul(e->ph + ll + 2, NULL, 10);
            if (k >= next)
                next = k + 1;
        }
    }
    char ph[96];
    int n = snprintf(ph, sizeof(ph), "<%s_%lu>", label, next);
    if (n < 0 || (size_t)n >= sizeof(ph) ||
        pii_map_add(m, ph, (size_t)n, val, vlen, a) != 0)
        return NULL;
    return &m->e[m->n - 1];
}

int
pii_map_encode(const pii_map_t *m, pii_buf_t *out, const pii_alloc_t *a) {
    for (size_t i = 0; i < m->n; i++)
        if (pii_buf_add(out, m->e[i].ph, m->e[i].phlen + 1, a) != 0 ||
            pii_buf_add(out, m->e[i].val, m->e[i].vlen + 1, a) != 0)
            return -1;
    return 0;
}

int
pii_map_decode(pii_map_t *m, const char *s, size_t n, const pii_alloc_t *a) {
    size_t i = 0;
    while (i < n) {
        const char *ph = s + i, *z1 = memchr(ph, '\0', n - i);
        if (z1 == NULL)
            return -1;
        const char *val = z1 + 1;
        if (val >= s + n)
            return -1;
        const char *z2 = memchr(val, '\0', (size_t)(s + n - val));
        if (z2 == NULL)
            return -1;
        if (pii_map_find(m, ph, (size_t)(z1 - ph)) == NULL &&
            pii_map_add(m, ph, (size_t)(z1 - ph), val, (size_t)(z2 - val), a) !=
                0)
            return -1;
        i = (size_t)(z2 + 1 - s);
    }
    return 0;
}

/* Everything but the last 4 letters and digits becomes '*'; separators
 * stay, so a masked card still reads as a card. */
static int
mask(pii_buf_t *out, const char *s, size_t n, const pii_alloc_t *a) {
    size_t alnum = 0, seen = 0;
    for (size_t i = 0; i < n; i++)
        alnum += isalnum((unsigned char)s[i]) != 0;
    size_t keep_from = alnum > 4 ? alnum - 4 : 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (isalnum((unsigned char)c) && seen++ < keep_from)
            c = '*';
        if (pii_buf_add(out, &c, 1, a) != 0)
            return -1;
    }
    return 0;
}

int
pii_rewrite(const pii_detectors_t *ds, pii_map_t *map, int force,
            const char *text, size_t len, pii_buf_t *out, size_t *changed,
            const pii_alloc_t *a) {
    pii_matches_t ms = {0};
    if (pii_scan(ds, text, len, &ms, a) != 0)
        return -1;
    *changed = ms.n;
    size_t at = 0;
    out->n = 0;
    if (pii_buf_add(out, "", 0, a) != 0)
        return -1;
    for (size_t i = 0; i < ms.n; i++) {
        const pii_match_t *m = &ms.m[i];
        const char *v = text + m->start;
        size_t vn = m->end - m->start;
        if (pii_buf_add(out, text + at, m->start - at, a) != 0)
            return -1;
        pii_mode_t mode = force >= 0 ? (pii_mode_t)force : m->det->mode;
        int rc = 0;
        if (mode == PII_MODE_TOKENIZE && map != NULL) {
            const pii_entry_t *e = pii_map_put(map, m->det->label, v, vn, a);
            rc = e ? pii_buf_add(out, e->ph, e->phlen, a) : -1;
        } else if (mode == PII_MODE_MASK) {
            rc = mask(out, v, vn, a);
        } else {
            char tag[80];
            int k = snprintf(tag, sizeof(tag), "[%s]", m->det->label);
            rc = pii_buf_add(out, tag, (size_t)k, a);
        }
        if (rc != 0)
            return -1;
        at = m->end;
    }
    return pii_buf_add(out, text + at, len - at, a);
}

/* Length of a placeholder-shaped run "<LABEL_N>" at s, or 0. */
static size_t
placeholder_at(const char *s, size_t n) {
    size_t i = 1;
    if (n < 4 || s[0] != '<')
        return 0;
    while (i < n && i < 80 &&
           (isupper((unsigned char)s[i]) || isdigit((unsigned char)s[i]) ||
            s[i] == '_'))
        i++;
    return i < n && s[i] == '>' ? i + 1 : 0;
}

int
pii_restore(const pii_map_t *map, const char *text, size_t len, pii_buf_t *out,
            const pii_alloc_t *a) {
    size_t at = 0, i = 0;
    out->n = 0;
    if (pii_buf_add(out, "", 0, a) != 0)
        return -1;
    while (map->n > 0 && i < len) {
        const char *lt = memchr(text + i, '<', len - i);
        if (lt == NULL)
            break;
        i = (size_t)(lt - text);
        size_t pl = placeholder_at(lt, len - i);
        const pii_entry_t *e = pl ? pii_map_find(map, lt, pl) : NULL;
        if (e == NULL) {
            i++;
            continue;
        }
        if (pii_buf_add(out, text + at, i - at, a) != 0 ||
            pii_buf_add(out, e->val, e->vlen, a) != 0)
            return -1;
        i += pl;
        at = i;
    }
    return pii_buf_add(out, text + at, len - at, a);
}

size_t
pii_partial_tail(const pii_map_t *map, const char *text, size_t len) {
    /* Only the last '<' can start a partial placeholder: a placeholder
     * has no '<' inside, so any earlier one is either complete or dead. */
    size_t from = len > 80 ? len - 80 : 0;
    for (size_t i = len; i-- > from;) {
        if (text[i] != '<')
            continue;
        size_t t = len - i;
        for (size_t k = 0; k < map->n; k++)
            if (map->e[k].phlen > t && memcmp(map->e[k].ph, text + i, t) == 0)
                return t;
        return 0;
    }
    return 0;
}
