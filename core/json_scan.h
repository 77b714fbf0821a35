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

void sl_jscan_init(sl_jscan_t *s, const char *text, size_t len);
/* The type of the value at the cursor (white space skipped), or -1. */
int sl_jscan_peek(sl_jscan_t *s);
/* Steps into the object or array at the cursor. 0 or -1. */
int sl_jscan_enter(sl_jscan_t *s);
/* Next member of the object entered last: 1 with the key (raw bytes, no
 * escapes) and the cursor on its value, 0 after the closing brace, -1.
 * *n counts the members read so far; start it at 0. */
int sl_jscan_member(sl_jscan_t *s, size_t *n, const char **key,
                    size_t *klen);
/* Next element of the array entered last: 1 with the cursor on it, 0 after
 * the closing bracket, -1. *n as for sl_jscan_member. */
int sl_jscan_element(sl_jscan_t *s, size_t *n);
/* Checks and steps over the whole value at the cursor; v may be NULL. */
int sl_jscan_value(sl_jscan_t *s, sl_jval_t *v);
/* 0 when only white space is left, -1 otherwise. */
int sl_jscan_finish(sl_jscan_t *s);

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
