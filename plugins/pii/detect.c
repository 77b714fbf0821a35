/* Detectors: one PCRE2 pattern per kind of PII, JIT-compiled once when an
 * instance is created, and the scan that runs them over a text and keeps
 * the matches their validators accept. */
#include "pii.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *name, *label;
    const char *pattern;
    pii_validate_fn validate;
    char need; /* a byte every match holds; a text without it is skipped */
    /* >0: no match starts more than this many bytes before its `need`
     * byte, so a scan may jump there (an email's local part is <= 64) */
    unsigned short reach;
    /* what a valid match holds at least: ASCII digits, capitals, and
     * PII_NEEDS_* (from the pattern, or the validator's minimum) */
    unsigned char min_digits, min_upper, needs;
} builtin_t;

/* Lookarounds keep a match from starting or ending inside a longer run
 * of the same characters (a card inside a 30-digit reference). */
static const builtin_t builtins[] = {
    /* Secrets are several patterns, not one alternation: each keeps
     * PCRE2's first-character optimisation, five times faster on prose. */
    {"secret", "SECRET",
     "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\\s\\S]*?"
     "-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
     pii_secret_ok, '-', 0, 0, 0, PII_NEEDS_PEM},
    {"secret", "SECRET",
     "(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"
     "|(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}",
     pii_secret_ok, 'A', 0, 0, 0, 0},
    {"secret", "SECRET",
     "(?<![A-Za-z0-9_-])sk-(?:proj-|ant-(?:api03-)?)?[A-Za-z0-9_-]{20,}"
     "|(?<![A-Za-z0-9])[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",
     pii_secret_ok, 'k', 0, 0, 0, PII_NEEDS_KEYSEP},
    {"secret", "SECRET",
     "(?<![A-Za-z0-9])gh[pousr]_[A-Za-z0-9]{36,}"
     "|(?<![A-Za-z0-9])github_pat_[A-Za-z0-9_]{22,}",
     pii_secret_ok, '_', 0, 0, 0, PII_NEEDS_GH},
    {"secret", "SECRET", "(?<![A-Za-z0-9])xox[abprs]-[A-Za-z0-9-]{10,}",
     pii_secret_ok, '-', 0, 0, 0, PII_NEEDS_XOX},
    {"secret", "SECRET",
     "(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\\.eyJ[A-Za-z0-9_-]{8,}"
     "\\.[A-Za-z0-9_-]{8,}",
     pii_secret_ok, '.', 0, 0, 0, PII_NEEDS_EYJ},
    {"secret", "SECRET", "(?i:bearer)\\s+\\K[A-Za-z0-9._~+/-]{20,}=*",
     pii_secret_ok, 0, 0, 0, 0, PII_NEEDS_BEARER},
    /* the lookbehind before (?i:...) keeps this fast: without it every
     * letter of a text is a start */
    {"secret", "SECRET",
     "(?<![A-Za-z0-9])(?i:(?:api[_-]?key|secret[_-]?key|access[_-]?token"
     "|auth[_-]?token|client[_-]?secret|password|passwd)[\"']?\\s*[:=]\\s*"
     "[\"']?)"
     "\\K[A-Za-z0-9_\\-./+=!@#$%^&*]{12,}",
     pii_secret_ok, 0, 0, 0, 0, PII_NEEDS_ASSIGN},
    {"email", "EMAIL",
     "(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
     "(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z]{2,24}"
     "(?![A-Za-z0-9-]|\\.[A-Za-z0-9])",
     pii_email_ok, '@', 64, 0, 0, 0},
    {"card", "CARD",
     "(?<![0-9A-Za-z.-])(?<![0-9][ -])(?:[0-9][ -]?){12,18}[0-9]"
     "(?![0-9A-Za-z]|[.-][0-9])",
     pii_card_ok, 0, 0, 13, 0, 0}, /* pii_card_ok: 13..19 digits */
    {"iban", "IBAN",
     "(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: "
     "?[A-Z0-9]{1,3})?"
     "(?![A-Za-z0-9])",
     pii_iban_ok, 0, 0, 2, 2, 0},
    {"ssn", "SSN",
     "(?<![0-9A-Za-z.-])(?<![0-9][ -])[0-9]{3}([- ])[0-9]{2}\\1[0-9]{4}"
     "(?![0-9A-Za-z]|[.-][0-9])",
     pii_ssn_ok, 0, 0, 9, 0, 0},
    {"phone", "PHONE",
     /* international: +CC then 2..6 groups */
     "(?<![0-9A-Za-z+.-])(?<![0-9][ -])(?:\\+[1-9][0-9]{0,2}[ "
     ".-]?(?:\\([0-9]{1,4}\\)[ .-]?)?"
     "[0-9]{1,5}(?:[ .-]?[0-9]{1,5}){1,5}"
     /* North America: (555) 123-4567, 555-123-4567, 555.123.4567 */
     "|(?:1[ .-])?(?:\\([2-9][0-9]{2}\\) ?|[2-9][0-9]{2}[ .-])"
     "[2-9][0-9]{2}[ .-][0-9]{4}"
     /* trunk-prefix 0 formats: 020 7946 0958, 06 12 34 56 78,
      * 030 12345678, 030/1234567, (030) 1234567 */
     "|(?:0[1-9][0-9]{0,3}|\\(0[1-9][0-9]{0,3}\\))[ /.-]"
     "[0-9]{2,8}(?:[ .-][0-9]{2,4}){0,3})"
     "(?![0-9A-Za-z]|[.-][0-9])",
     pii_phone_ok, 0, 0, 8, 0, 0}, /* pii_phone_ok: 8..15 digits */
    {"ipv4", "IP",
     "(?<![0-9A-Za-z.])(?:[0-9]{1,3}\\.){3}[0-9]{1,3}(?![0-9A-Za-z]|\\.[0-9])",
     pii_ipv4_ok, '.', 0, 4, 0, 0},
    {"ipv6", "IP",
     "(?<![0-9A-Za-z:])(?:[0-9A-Fa-f]{0,4}:){2,7}"
     "(?:(?:[0-9]{1,3}\\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?"
     "(?![0-9A-Za-z:]|\\.[0-9])",
     pii_ipv6_ok, ':', 0, 0, 0, 0},
};

const char *const pii_builtin_names[] = {
    "secret", "email", "card", "iban", "ssn", "phone", "ipv4", "ipv6", NULL};

static int
compile(pii_detector_t *d, const char *pattern, size_t *erroffset, char *err,
        size_t errlen) {
    int code;
    PCRE2_SIZE off;
    d->re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &code, &off, NULL);
    if (d->re == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, errlen, "%s", (const char *)msg);
        if (erroffset != NULL)
            *erroffset = (size_t)off;
        return -1;
    }
    /* Without JIT (a platform that lacks it) the interpreter still
     * matches the same: slower, not wrong. */
    (void)pcre2_jit_compile(d->re, PCRE2_JIT_COMPLETE);
    return 0;
}

int
pii_detectors_add_builtin(pii_detectors_t *ds, const char *name,
                          pii_mode_t mode, char *err, size_t errlen) {
    int found = 0;
    for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
        if (strcmp(builtins[i].name, name) != 0)
            continue;
        pii_detector_t *d = realloc(ds->d, (ds->n + 1) * sizeof(*d));
        if (d == NULL) {
            snprintf(err, errlen, "out of memory");
            return -2;
        }
        ds->d = d;
        d = &ds->d[ds->n];
        memset(d, 0, sizeof(*d));
        snprintf(d->name, sizeof(d->name), "%s", builtins[i].name);
        snprintf(d->label, sizeof(d->label), "%s", builtins[i].label);
        d->mode = mode;
        d->validate = builtins[i].validate;
        d->need = builtins[i].need;
        d->reach = builtins[i].reach;
        d->min_digits = builtins[i].min_digits;
        d->min_upper = builtins[i].min_upper;
        d->needs = builtins[i].needs;
        if (compile(d, builtins[i].pattern, NULL, err, errlen) != 0)
            return -2;
        ds->n++;
        found = 1;
    }
    return found ? 0 : -1;
}

int
pii_detector_custom(pii_detector_t *d, const char *name, const char *label,
                    const char *pattern, pii_mode_t mode, size_t *erroffset,
                    char *err, size_t errlen) {
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->label, sizeof(d->label), "%s", label);
    d->mode = mode;
    return compile(d, pattern, erroffset, err, errlen);
}

void
pii_detectors_free(pii_detectors_t *ds) {
    for (size_t i = 0; i < PII_MD_POOL; i++)
        pcre2_match_data_free(atomic_exchange(&ds->md[i], NULL));
    for (size_t i = 0; i < ds->n; i++)
        pcre2_code_free(ds->d[i].re);
    free(ds->d);
    ds->d = NULL;
    ds->n = 0;
}

/* The start of the character after the one at i (UTF-8). */
static size_t
next_char(const char *text, size_t len, size_t i) {
    i++;
    while (i < len && ((unsigned char)text[i] & 0xC0) == 0x80)
        i++;
    return i;
}

static int
push(pii_matches_t *out, size_t s, size_t e, const pii_detector_t *det,
     const pii_alloc_t *a) {
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 16;
        pii_match_t *m = pii_alloc(a, cap * sizeof(*m));
        if (m == NULL)
            return -1;
        if (out->n)
            memcpy(m, out->m, out->n * sizeof(*m));
        out->m = m;
        out->cap = cap;
    }
    out->m[out->n++] = (pii_match_t){s, e, det};
    return 0;
}

/* Longer first at the same start; then the detector listed first. */
static int
by_start(const void *x, const void *y) {
    const pii_match_t *a = x, *b = y;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end > b->end ? -1 : 1;
    return a->det < b->det ? -1 : a->det > b->det;
}

/* What the prefilter knows of a text. */
typedef struct {
    size_t digits, upper;
    unsigned needs;
} pii_text_t;

static void
survey(const char *text, size_t len, pii_text_t *t) {
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= '0' && c <= '9')
            t->digits++;
        else if (c >= 'A' && c <= 'Z')
            t->upper++;
        const char *at = text + i;
        size_t left = len - i;
        switch (c) {
        case ':':
        case '=': t->needs |= PII_NEEDS_ASSIGN; break;
        case 'b':
        case 'B':
            if (left >= 6 && strncasecmp(at, "bearer", 6) == 0)
                t->needs |= PII_NEEDS_BEARER;
            break;
        case '-':
            if (left >= 5 && memcmp(at, "-----", 5) == 0)
                t->needs |= PII_NEEDS_PEM;
            break;
        case 'k':
            if (left >= 2 && (at[1] == '-' || at[1] == '_'))
                t->needs |= PII_NEEDS_KEYSEP;
            break;
        case 'g':
            if ((left >= 2 && at[1] == 'h') ||
                (left >= 11 && memcmp(at, "github_pat_", 11) == 0))
                t->needs |= PII_NEEDS_GH;
            break;
        case 'x':
            if (left >= 3 && memcmp(at, "xox", 3) == 0)
                t->needs |= PII_NEEDS_XOX;
            break;
        case 'e':
            if (left >= 3 && memcmp(at, "eyJ", 3) == 0)
                t->needs |= PII_NEEDS_EYJ;
            break;
        default: break;
        }
    }
}

/* Whether a match of d's might be in a text like t. */
static int
may_match(const pii_detector_t *d, const pii_text_t *t) {
    return t->digits >= d->min_digits && t->upper >= d->min_upper &&
           (t->needs & d->needs) == d->needs;
}

/* Match data from the pool (a new one when it is empty). */
static pcre2_match_data *
md_take(const pii_detectors_t *ds) {
    /* The pool is the one part of a detector set scans change. */
    pii_detectors_t *m = (pii_detectors_t *)ds;
    for (size_t i = 0; i < PII_MD_POOL; i++) {
        pcre2_match_data *md = atomic_exchange(&m->md[i], NULL);
        if (md != NULL)
            return md;
    }
    return pcre2_match_data_create(4, NULL);
}

static void
md_give(const pii_detectors_t *ds, pcre2_match_data *md) {
    pii_detectors_t *m = (pii_detectors_t *)ds;
    for (size_t i = 0; i < PII_MD_POOL; i++) {
        pcre2_match_data *none = NULL;
        if (atomic_compare_exchange_strong(&m->md[i], &none, md))
            return;
    }
    pcre2_match_data_free(md);
}

int
pii_scan(const pii_detectors_t *ds, const char *text, size_t len,
         pii_matches_t *out, const pii_alloc_t *a) {
    out->n = 0;
    if (len == 0 || ds->n == 0)
        return 0;
    pii_text_t t;
    survey(text, len, &t);
    pcre2_match_data *md = NULL;
    int rc = 0;
    for (size_t i = 0; i < ds->n && rc == 0; i++) {
        const pii_detector_t *d = &ds->d[i];
        size_t at = 0;
        if ((d->need != 0 && memchr(text, d->need, len) == NULL) ||
            !may_match(d, &t))
            continue;
        if (md == NULL && (md = md_take(ds)) == NULL)
            return -1;
        while (at <= len) {
            if (d->reach > 0) {
                const char *p = memchr(text + at, d->need, len - at);
                if (p == NULL)
                    break;
                size_t from = (size_t)(p - text);
                from = from > d->reach ? from - d->reach : 0;
                while (from > at && from < len &&
                       ((unsigned char)text[from] & 0xC0) == 0x80)
                    from++; /* a character's start, for PCRE2_UTF */
                if (from > at)
                    at = from;
            }
            int r = pcre2_match(d->re, (PCRE2_SPTR)text, len, at, 0, md, NULL);
            if (r < 0)
                break; /* no match, or text the regex cannot read */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t s = ov[0], e = ov[1];
            if (e <= s) { /* an empty match: step over one byte */
                at = next_char(text, len, e);
                continue;
            }
            if (d->validate != NULL && !d->validate(text + s, e - s)) {
                at = next_char(text, len, s); /* one may start inside */
                continue;
            }
            if (push(out, s, e, d, a) != 0) {
                rc = -1;
                break;
            }
            at = e;
        }
    }
    if (md != NULL)
        md_give(ds, md);
    if (rc != 0 || out->n < 2)
        return rc;
    qsort(out->m, out->n, sizeof(out->m[0]), by_start);
    /* Drop overlaps: a kept match swallows anything starting inside it,
     * unless the later one is longer (a card inside a phone shape). */
    size_t k = 0;
    for (size_t i = 0; i < out->n; i++) {
        if (k > 0 && out->m[i].start < out->m[k - 1].end) {
            size_t la = out->m[k - 1].end - out->m[k - 1].start;
            size_t lb = out->m[i].end - out->m[i].start;
            if (lb > la && k > 0 &&
                (k < 2 || out->m[k - 2].end <= out->m[i].start))
                out->m[k - 1] = out->m[i];
            continue;
        }
        out->m[k++] = out->m[i];
    }
    out->n = k;
    return 0;
}
