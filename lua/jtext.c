/* Finding one value in JSON text without decoding the rest: ctx.prompt and
 * ctx.answer read and splice a single string of a request or an answer,
 * and a walk over bytes costs a fraction of building a tree of the whole
 * document. Malformed text is "not found", never an error: the caller
 * then falls back to the exact path or says there is no value. */
#include "lua_int.h"

#include <stdint.h>
#include <string.h>

enum { C_PLAIN = 0, C_WS, C_QUOTE, C_BACKSLASH, C_OPEN, C_CLOSE, C_DELIM };

/* What each byte is to a walk over JSON text. */
static const unsigned char cls[256] = {
    ['\t'] = C_WS,   ['\n'] = C_WS,        ['\r'] = C_WS,   [' '] = C_WS,
    ['"'] = C_QUOTE, ['\\'] = C_BACKSLASH, ['{'] = C_OPEN,  ['['] = C_OPEN,
    ['}'] = C_CLOSE, [']'] = C_CLOSE,      [','] = C_DELIM, [':'] = C_DELIM,
};

static inline const char *
ws(const char *p, const char *end) {
    while (p < end && cls[(unsigned char)*p] == C_WS)
        p++;
    return p;
}

const char *
sl_lua_jtext_ws(const char *p, const char *end) {
    return ws(p, end);
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* The end of the string whose opening quote is at p, or NULL; *esc is set
 * when it holds an escape. Eight bytes at a time: a quote or a backslash
 * sets the high bit of its lane, and the lowest set lane is exact. */
static inline const char *
skip_string(const char *p, const char *end, int *esc) {
    for (p++;;) {
        for (;;) {
            if (end - p < 8) {
                while (p < end && *p != '"' && *p != '\\')
                    p++;
                if (p >= end)
                    return NULL;
                break;
            }
            uint64_t w, q, b, hit;
            memcpy(&w, p, 8);
            q = w ^ (ONES * '"');
            b = w ^ (ONES * '\\');
            hit = ((q - ONES) & ~q & HIGHS) | ((b - ONES) & ~b & HIGHS);
            if (hit != 0) {
                p += __builtin_ctzll(hit) >> 3;
                break;
            }
            p += 8;
        }
        if (*p == '"')
            return p + 1;
        *esc = 1;
        p += 2; /* the escaped byte, whatever it is */
    }
}

/* The end of the object or array at p: brackets are counted and matched,
 * strings skipped; what lies between is not checked further. */
static const char *
skip_nested(const char *p, const char *end) {
    uint64_t arrays = 0; /* bit d: the bracket at depth d is '[' */
    int depth = 0, esc;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        switch (cls[c]) {
        case C_QUOTE:
            p = skip_string(p, end, &esc);
            if (p == NULL)
                return NULL;
            continue;
        case C_OPEN:
            if (depth == 64)
                return NULL;
            arrays =
                (arrays & ~(1ull << depth)) | ((uint64_t)(c == '[') << depth);
            depth++;
            break;
        case C_CLOSE:
            if (depth == 0 ||
                ((arrays >> (depth - 1)) & 1) != (uint64_t)(c == ']'))
                return NULL;
            if (--depth == 0)
                return p + 1;
            break;
        default: break;
        }
        p++;
    }
    return NULL;
}

static inline const char *
skip_value(const char *p, const char *end) {
    int esc;
    p = ws(p, end);
    if (p >= end)
        return NULL;
    switch (cls[(unsigned char)*p]) {
    case C_QUOTE: return skip_string(p, end, &esc);
    case C_OPEN: return skip_nested(p, end);
    case C_PLAIN: break;
    default: return NULL;
    }
    const char *start = p;
    while (p < end && cls[(unsigned char)*p] == C_PLAIN)
        p++;
    return p > start ? p : NULL;
}

const char *
sl_lua_jtext_skip(const char *p, const char *end) {
    return skip_value(p, end);
}

int
sl_lua_jtext_object(sl_lua_jtext_obj_t *o, const char *p, const char *end) {
    p = ws(p, end);
    o->end = end;
    o->escaped = 0;
    o->first = 1;
    o->in_value = 0;
    if (p >= end || *p != '{')
        return -1;
    o->p = p + 1;
    return 0;
}

const char *
sl_lua_jtext_value_end(sl_lua_jtext_obj_t *o) {
    if (o->in_value) {
        o->p = skip_value(o->p, o->end);
        o->in_value = 0;
    }
    return o->p;
}

int
sl_lua_jtext_next(sl_lua_jtext_obj_t *o, const char **key, size_t *klen,
                  const char **val) {
    const char *p = sl_lua_jtext_value_end(o), *end = o->end;
    int esc = 0;
    if (p == NULL)
        return -1;
    p = ws(p, end);
    o->p = p;
    if (p < end && *p == '}')
        return 0;
    if (!o->first) {
        if (p >= end || *p != ',')
            return -1;
        p = ws(p + 1, end);
    }
    o->first = 0;
    if (p >= end || *p != '"')
        return -1;
    const char *k = p + 1, *kend = skip_string(p, end, &esc);
    if (kend == NULL)
        return -1;
    o->escaped |= esc;
    p = ws(kend, end);
    if (p >= end || *p != ':')
        return -1;
    p = ws(p + 1, end);
    *key = k;
    *klen = (size_t)(kend - 1 - k);
    *val = p;
    o->p = p;
    o->in_value = 1;
    return 1;
}

const char *
sl_lua_jtext_member(const char *p, const char *end, const char *key,
                    size_t klen, int *escaped) {
    int esc = 0;
    const char *found = NULL;
    p = ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    for (p = ws(p + 1, end); p < end && *p == '"';) {
        const char *k = p + 1;
        p = skip_string(p, end, &esc);
        if (p == NULL)
            break;
        size_t kn = (size_t)(p - 1 - k);
        p = ws(p, end);
        if (p >= end || *p != ':')
            break;
        p = ws(p + 1, end);
        if (kn == klen && memcmp(k, key, klen) == 0) {
            found = p;
            break;
        }
        p = skip_value(p, end);
        p = p ? ws(p, end) : NULL;
        if (p == NULL || p >= end || *p != ',')
            break;
        p = ws(p + 1, end);
    }
    /* A key written with escapes is compared as written. */
    if (escaped != NULL)
        *escaped |= esc;
    return found;
}

int
sl_lua_jtext_has_escape(const char *v, const char *e) {
    return memchr(v, '\\', (size_t)(e - v)) != NULL;
}
