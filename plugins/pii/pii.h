/* The pii plugin's internals, shared by its files: detectors (detect.c),
 * validators (validate.c), the placeholder map and rewriting
 * (tokenize.c), the stream restorer (stream.c) and the glue to the
 * gateway (plugin.c). Everything but plugin.c is free of the host table,
 * so the unit tests drive it with plain malloc. */
#ifndef PII_H
#define PII_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>

typedef enum {
    PII_MODE_REDACT = 0,   /* [EMAIL] */
    PII_MODE_MASK = 1,     /* ************1111 */
    PII_MODE_TOKENIZE = 2, /* <EMAIL_1>, restored in the answer */
} pii_mode_t;

/* Memory for one request. The plugin hands out the request arena (never
 * freed one by one); tests hand out malloc and free at exit. */
typedef struct {
    void *(*fn)(void *ud, size_t n);
    void *ud;
} pii_alloc_t;

/* Non-zero when s[0..n) is a real value of the detector's kind. */
typedef int (*pii_validate_fn)(const char *s, size_t n);

typedef struct {
    char name[64];  /* "email", or a custom pattern's name */
    char label[64]; /* "EMAIL": what [LABEL] and <LABEL_N> say */
    pii_mode_t mode;
    pii_validate_fn validate; /* NULL: every match counts */
    char need;                /* non-zero: a byte every match contains */
    unsigned short reach;     /* see detect.c */
    /* What every match the validator accepts holds (0: no bound); a
     * text with less is not scanned: most prompts have no 8 digits. */
    unsigned char min_digits, min_upper;
    unsigned char needs; /* PII_NEEDS_* */
    pcre2_code *re;
} pii_detector_t;

#define PII_NEEDS_ASSIGN 1  /* a ':' or '=' */
#define PII_NEEDS_BEARER 2  /* "bearer", any case */
#define PII_NEEDS_PEM 4     /* "-----" */
#define PII_NEEDS_KEYSEP 8  /* "k-" or "k_" (sk-..., rk_live_...) */
#define PII_NEEDS_GH 16     /* "gh" or "github_pat_" */
#define PII_NEEDS_XOX 32    /* "xox" */
#define PII_NEEDS_EYJ 64    /* "eyJ" (a JWT's header) */

#define PII_MD_POOL 8

/* The detectors of one instance, compiled once at create. Read-only
 * afterwards, so every worker shares it, but for the match data scans
 * reuse: taken and given back with atomic exchanges, without a lock. */
typedef struct {
    pii_detector_t *d;
    size_t n;
    _Atomic(pcre2_match_data *) md[PII_MD_POOL];
} pii_detectors_t;

typedef struct {
    size_t start, end;
    const pii_detector_t *det;
} pii_match_t;

typedef struct {
    pii_match_t *m;
    size_t n, cap;
} pii_matches_t;

typedef struct {
    char *p;
    size_t n, cap;
} pii_buf_t;

/* One placeholder and the value it stands for. */
typedef struct {
    char *ph; /* "<EMAIL_1>" */
    size_t phlen;
    char *val;
    size_t vlen;
} pii_entry_t;

typedef struct {
    pii_entry_t *e;
    size_t n, cap;
} pii_map_t;

/* ---- validate.c ---- */
int pii_luhn_ok(const char *s, size_t n);
int pii_card_ok(const char *s, size_t n);
int pii_iban_ok(const char *s, size_t n);
int pii_ssn_ok(const char *s, size_t n);
int pii_phone_ok(const char *s, size_t n);
int pii_ipv4_ok(const char *s, size_t n);
int pii_ipv6_ok(const char *s, size_t n);
int pii_email_ok(const char *s, size_t n);
int pii_secret_ok(const char *s, size_t n);

/* ---- detect.c ---- */
/* The built-in detector names, in priority order (an earlier one wins an
 * overlap of equal length); NULL-terminated. */
extern const char *const pii_builtin_names[];
/* Appends built-in detector `name` with `mode` to ds (one or more
 * compiled patterns; ds->d is malloc'd, freed by pii_detectors_free).
 * -1 for an unknown name; -2 when PCRE2 refused (a bug: the patterns are
 * ours) or out of memory, err filled. */
int pii_detectors_add_builtin(pii_detectors_t *ds, const char *name,
                              pii_mode_t mode, char *err, size_t errlen);
/* Compiles a custom pattern. On a bad regex returns -1 with *erroffset
 * and err (PCRE2's message). */
int pii_detector_custom(pii_detector_t *d, const char *name, const char *label,
                        const char *pattern, pii_mode_t mode, size_t *erroffset,
                        char *err, size_t errlen);
void pii_detectors_free(pii_detectors_t *ds);
/* Every validated match of every detector in text, sorted by start,
 * without overlaps (the longer match wins, then the earlier detector).
 * 0, or -1 on out of memory. */
int pii_scan(const pii_detectors_t *ds, const char *text, size_t len,
             pii_matches_t *out, const pii_alloc_t *a);

/* ---- tokenize.c ---- */
void *pii_alloc(const pii_alloc_t *a, size_t n);
int pii_buf_add(pii_buf_t *b, const char *s, size_t n, const pii_alloc_t *a);
/* The placeholder for value (an existing one, or <LABEL_N> with the next
 * N for that label). NULL on out of memory. */
const pii_entry_t *pii_map_put(pii_map_t *m, const char *label, const char *val,
                               size_t vlen, const pii_alloc_t *a);
/* Adds a known pair (a persisted map); 0 or -1. */
int pii_map_add(pii_map_t *m, const char *ph, size_t phlen, const char *val,
                size_t vlen, const pii_alloc_t *a);
const pii_entry_t *pii_map_find(const pii_map_t *m, const char *ph,
                                size_t phlen);
/* The map as "ph\0val\0..." and back (the kv value). */
int pii_map_encode(const pii_map_t *m, pii_buf_t *out, const pii_alloc_t *a);
int pii_map_decode(pii_map_t *m, const char *s, size_t n, const pii_alloc_t *a);
/* Rewrites text: each match replaced as its detector's mode says, or as
 * `force` says when force >= 0. *changed counts replacements. 0 or -1. */
int pii_rewrite(const pii_detectors_t *ds, pii_map_t *map, int force,
                const char *text, size_t len, pii_buf_t *out, size_t *changed,
                const pii_alloc_t *a);
/* Replaces every complete placeholder of the map in text by its value. */
int pii_restore(const pii_map_t *map, const char *text, size_t len,
                pii_buf_t *out, const pii_alloc_t *a);
/* Length of the longest suffix of text that is a proper prefix of some
 * placeholder in the map: what a stream must hold back. */
size_t pii_partial_tail(const pii_map_t *map, const char *text, size_t len);

/* ---- stream.c ---- */
typedef struct {
    pii_buf_t pending; /* text received but not yet sent */
} pii_stream_t;

/* Feeds one delta. Appends to out the text that may go now: placeholders
 * restored (when map has any), PII the model produced rewritten with
 * scan_mode when scan is non-NULL. Holds back only a trailing partial
 * placeholder and, when scanning, the tail after the last point where no
 * value can straddle. final: flush everything. 0 or -1. */
int pii_stream_feed(pii_stream_t *st, const pii_map_t *map,
                    const pii_detectors_t *scan, int scan_mode,
                    const char *delta, size_t len, int final, pii_buf_t *out,
                    const pii_alloc_t *a);

#endif
