/* A strict JSON reader that walks a document in place and builds nothing:
 * the hot path reads a few members (a model name, usage counters) at a
 * fraction of what a cJSON tree costs to build and free.
 *
 * It accepts only RFC 8259 JSON that cJSON reads the same way; anything
 * else (trailing bytes, lone surrogates, keys with escapes, numbers longer
 * than cJSON reads, nesting deeper than SL_JSON_MAX_DEPTH) fails with -1,
 * and the caller falls back to cJSON, whose verdict then stands. So a
 * document either reads the same through both, or goes the slow way. */
#ifndef SL_JSON_SCAN_H
#define SL_JSON_SCAN_H

#include <stddef.h>
#include <string.h>

#define SL_JSON_MAX_DEPTH 128

typedef enum {
    SL_JSON_NONE = 0, /* absent */
    SL_JSON_STRING,
    SL_JSON_NUMBER,
    SL_JSON_OBJECT,
    SL_JSON_ARRAY,
    SL_JSON_TRUE,
    SL_JSON_FALSE,
    SL_JSON_NULL,
} sl_json_type_t;

/* A cursor into one document. */
typedef struct sl_jscan {
    const char *p, *end;
    int depth; /* containers entered with sl_jscan_enter */
} sl_jscan_t;

/* A value the cursor went past: its whole text (quotes included). */
typedef struct sl_jval {
    sl_json_type_t type;
    const char *start;
    size_t len;
    int escaped; /* a string holding a backslash escape */
} sl_jval_t;

/* The byte after the closing quote of the string whose opening quote is
 * just before p, or NULL; *escaped is set when it holds an escape. */
const char *sl_json_string_end(const char *p, const char *end, int *escaped);
/* Checks and steps over the whole value at the cursor; v may be NULL. */
int sl_jscan_value(sl_jscan_t *s, sl_jval_t *v);

/* The cursor's small steps are inline: reading a request's few members
 * cost more in calls than in bytes. */

static inline const char *
sl_json_skip_ws(const char *p, const char *end)
{
    if (p < end && (unsigned char)*p > ' ')
        return p; /* compact JSON has none */
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static inline void
sl_jscan_init(sl_jscan_t *s, const char *text, size_t len)
{
    s->p = text;
    s->end = text + len;
    s->depth = 0;
}

/* The type of the value at the cursor (white space skipped), or -1. */
static inline int
sl_jscan_peek(sl_jscan_t *s)
{
    s->p = sl_json_skip_ws(s->p, s->end);
    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '{': return SL_JSON_OBJECT;
    case '[': return SL_JSON_ARRAY;
    case '"': return SL_JSON_STRING;
    case 't': return SL_JSON_TRUE;
    case 'f': return SL_JSON_FALSE;
    case 'n': return SL_JSON_NULL;
    default:
        return *s->p == '-' || (*s->p >= '0' && *s->p <= '9') ? SL_JSON_NUMBER
                                                               : -1;
    }
}

/* Steps into the object or array at the cursor. 0 or -1. */
static inline int
sl_jscan_enter(sl_jscan_t *s)
{
    int t = sl_jscan_peek(s);
    if ((t != SL_JSON_OBJECT && t != SL_JSON_ARRAY) ||
        s->depth + 1 >= SL_JSON_MAX_DEPTH)
        return -1;
    s->p++;
    s->depth++;
    return 0;
}

/* Before the next item of a container: 1 when there is one (the comma
 * consumed), 0 after the closing bracket, -1. */
static inline int
sl_jscan_next_item(sl_jscan_t *s, size_t *n, char close)
{
    const char *p = sl_json_skip_ws(s->p, s->end);
    if (p >= s->end)
        return -1;
    if (*p == close) {
        s->p = p + 1;
        s->depth--;
        return 0;
    }
    if (*n > 0) {
        if (*p != ',')
            return -1;
        p = sl_json_skip_ws(p + 1, s->end);
    }
    (*n)++;
    s->p = p;
    return 1;
}

/* Next member of the object entered last: 1 with the key (raw bytes, no
 * escapes) and the cursor on its value, 0 after the closing brace, -1.
 * *n counts the members read so far; start it at 0. */
static inline int
sl_jscan_member(sl_jscan_t *s, size_t *n, const char **key, size_t *klen)
{
    int rc = sl_jscan_next_item(s, n, '}');
    if (rc <= 0)
        return rc;
    const char *p = s->p;
    int esc = 0;
    if (p >= s->end || *p != '"')
        return -1;
    const char *k = p + 1;
    if ((p = sl_json_string_end(k, s->end, &esc)) == NULL || esc)
        return -1; /* a key with escapes could name anything: cJSON's turn */
    *key = k;
    *klen = (size_t)(p - 1 - k);
    p = sl_json_skip_ws(p, s->end);
    if (p >= s->end || *p != ':')
        return -1;
    s->p = sl_json_skip_ws(p + 1, s->end);
    return 1;
}

/* Next element of the array entered last: 1 with the cursor on it, 0 after
 * the closing bracket, -1. *n as for sl_jscan_member. */
static inline int
sl_jscan_element(sl_jscan_t *s, size_t *n)
{
    return sl_jscan_next_item(s, n, ']');
}

/* 0 when only white space is left, -1 otherwise. */
static inline int
sl_jscan_finish(sl_jscan_t *s)
{
    s->p = sl_json_skip_ws(s->p, s->end);
    return s->p == s->end && s->depth == 0 ? 0 : -1;
}

/* memmem for the short needles the stream path looks for in every event
 * ("\"usage\"", "\"content\""); glibc's costs a few hundred instructions
 * per call on such needles. needle_len >= 2. */
const char *sl_json_find(const char *hay, size_t len, const char *needle,
                         size_t needle_len);
/* A number value as cJSON gives it to (long)valuedouble. 0 or -1. */
int sl_json_long(const sl_jval_t *v, long *out);
/* 1 when a key read by sl_jscan_member is `name` (inline: the length
 * of a literal name folds away). */
static inline int
sl_json_key_is(const char *key, size_t klen, const char *name)
{
    size_t n = strlen(name);
    return klen == n && memcmp(key, name, n) == 0;
}

#endif
