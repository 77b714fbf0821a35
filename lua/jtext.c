/* Finding one value in JSON text without decoding the rest: ctx.prompt and
 * ctx.answer read and splice a single string of a request or an answer,
 * and a walk over bytes costs a fraction of building a tree of the whole
 * document. Malformed text is "not found", never an error: the caller
 * then falls back to the exact path or says there is no value.
 *
 * Not core/json_scan.c: that one checks every byte it passes, because it
 * decides whether a body is JSON at all. The texts here were read by the
 * proxy already (the request when it arrived, a model's answer before it
 * is passed on), and this walk stays within bounds whatever it is given,
 * so it only finds where values end: about two thirds of the cost on the
 * benchmark's answer. */
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

/* The value of key in the object at p (after whitespace), or NULL; ORs
 * into *esc whether a key written with escapes was passed. */
static inline const char *
member(const char *p, const char *end, const char *key, size_t klen, int *esc) {
    if (p >= end || *p != '{')
        return NULL;
    for (p = ws(p + 1, end); p < end && *p == '"';) {
        const char *k = p + 1;
        p = skip_string(p, end, esc);
        if (p == NULL)
            return NULL;
        size_t kn = (size_t)(p - 1 - k);
        p = ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        p = ws(p + 1, end);
        if (kn == klen && memcmp(k, key, klen) == 0)
            return p;
        p = skip_value(p, end);
        p = p ? ws(p, end) : NULL;
        if (p == NULL || p >= end || *p != ',')
            return NULL;
        p = ws(p + 1, end);
    }
    return NULL;
}

const char *
sl_lua_jtext_member(const char *p, const char *end, const char *key,
                    size_t klen, int *escaped) {
    int esc = 0;
    const char *v = member(ws(p, end), end, key, klen, &esc);
    /* A key written with escapes is compared as written. */
    if (escaped != NULL)
        *escaped |= esc;
    return v;
}

/* One message of a chat request at p ('{'): the spans of its first "role"
 * and "content" values (NULL when absent). The end of the message, or
 * NULL when it is not one a byte walk reads exactly. */
static const char *
message(const char *p, const char *end, const char **role,
        const char **role_end, const char **content, const char **content_end) {
    int esc = 0;
    *role = *role_end = *content = *content_end = NULL;
    p = ws(p + 1, end);
    if (p < end && *p == '}')
        return p + 1;
    for (;;) {
        if (p >= end || *p != '"')
            return NULL;
        const char *k = p + 1;
        p = skip_string(p, end, &esc);
        if (p == NULL || esc)
            return NULL;
        size_t kn = (size_t)(p - 1 - k);
        p = ws(p, end);
        if (p >= end || *p != ':')
            return NULL;
        const char *v = ws(p + 1, end);
        p = skip_value(v, end);
        if (p == NULL)
            return NULL;
        /* The first of repeated keys counts, as in the decoded tree. */
        if (kn == 4 && memcmp(k, "role", 4) == 0 && *role == NULL) {
            *role = v;
            *role_end = p;
        } else if (kn == 7 && memcmp(k, "content", 7) == 0 &&
                   *content == NULL) {
            *content = v;
            *content_end = p;
        }
        p = ws(p, end);
        if (p >= end || *p != ',')
            break;
        p = ws(p + 1, end);
    }
    return p < end && *p == '}' ? p + 1 : NULL;
}

int
sl_lua_jtext_prompt(const char *s, size_t len, const char **v, const char **e) {
    const char *end = s + len, *found = NULL, *found_end = NULL;
    int esc = 0, users = 0;
    const char *p = member(ws(s, end), end, "messages", 8, &esc);
    if (p == NULL || *p != '[' || esc)
        return -1;
    for (p = ws(p + 1, end);;) {
        const char *role, *rend, *c, *cend;
        if (p >= end || *p != '{')
            return -1; /* not a message: the decoder says what it is */
        p = message(p, end, &role, &rend, &c, &cend);
        if (p == NULL || role == NULL || *role != '"')
            return -1;
        if (rend - role == 6 && memcmp(role, "\"user\"", 6) == 0) {
            users++;
            found = c;
            found_end = cend;
        } else if (memchr(role, '\\', (size_t)(rend - role)) != NULL) {
            return -1; /* an escaped "user" is one too */
        }
        p = ws(p, end);
        if (p >= end || *p != ',')
            break;
        p = ws(p + 1, end);
    }
    if (p >= end || *p != ']' || users == 0 || found_end == NULL)
        return -1;
    *v = found;
    *e = found_end;
    return 0;
}

int
sl_lua_jtext_answer(const char *s, size_t len, const char **v, const char **e) {
    const char *end = s + len;
    int esc = 0;
    const char *p = member(ws(s, end), end, "choices", 7, &esc);
    if (p == NULL || *p != '[')
        return -1;
    p = member(ws(p + 1, end), end, "message", 7, &esc);
    p = p ? member(p, end, "content", 7, &esc) : NULL;
    const char *pe = p ? skip_value(p, end) : NULL;
    if (pe == NULL)
        return -1;
    *v = p;
    *e = pe;
    return 0;
}
