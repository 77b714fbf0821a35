/* JSON text <-> Lua values directly, without a cJSON tree in between:
 * what scripts see of requests, answers and stream events is decoded
 * from and encoded to text once per phase, on the hot path, so it is
 * worth skipping the tree's allocations and cJSON's number printing
 * (sprintf, then sscanf to check the round trip).
 *
 * Decoding: objects become tables, arrays tables with the array
 * metatable, null sluice.json.null. Encoding: a table is an array when it
 * carries that metatable or its keys are exactly 1..n (n > 0), else an
 * object. */
#include "lua_int.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LUA_JSON_DEPTH 128

/* ---- decoding ---- */

typedef struct {
    const char *p, *end, *start;
    lua_State *L;
    int array_mt;
    const char *err;
} dec_t;

static void
skip_ws(dec_t *d) {
    while (d->p < d->end &&
           (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r'))
        d->p++;
}

static int
fail(dec_t *d, const char *why) {
    if (d->err == NULL)
        d->err = why;
    return -1;
}

static int
hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

static size_t
utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Pushes the string whose opening quote d->p is past. */
static int
dec_string(dec_t *d) {
    const char *s = d->p, *q = s;
    while (q < d->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
        q++;
    if (q < d->end && *q == '"') { /* no escapes: the common case */
        lua_pushlstring(d->L, s, (size_t)(q - s));
        d->p = q + 1;
        return 0;
    }
    /* Escapes never lengthen the text: a buffer of its size will do. */
    const char *close = q;
    while (close < d->end && *close != '"')
        close += *close == '\\' ? 2 : 1;
    if (close >= d->end)
        return fail(d, "unterminated string");
    luaL_Buffer b;
    luaL_buffinit(d->L, &b);
    for (q = s; q < close;) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20)
            return fail(d, "control character in a string");
        if (c != '\\') {
            luaL_addchar(&b, (char)c);
            q++;
            continue;
        }
        char e = q[1];
        q += 2;
        switch (e) {
        case '"': luaL_addchar(&b, '"'); break;
        case '\\': luaL_addchar(&b, '\\'); break;
        case '/': luaL_addchar(&b, '/'); break;
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'n': luaL_addchar(&b, '\n'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            char u8[4];
            if (close - q < 4 || hex4(q, &cp) != 0)
                return fail(d, "bad \\u escape");
            q += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (close - q < 6 || q[0] != '\\' || q[1] != 'u' ||
                    hex4(q + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                    return fail(d, "bad surrogate pair");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                q += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(d, "bad surrogate pair");
            }
            luaL_addlstring(&b, u8, utf8_put(u8, cp));
            break;
        }
        default: return fail(d, "bad escape");
        }
    }
    luaL_pushresult(&b);
    d->p = close + 1;
    return 0;
}

static int
dec_number(dec_t *d) {
    const char *s = d->p, *q = s;
    int frac = 0;
    if (q < d->end && *q == '-')
        q++;
    if (q >= d->end || *q < '0' || *q > '9')
        return fail(d, "bad number");
    if (*q == '0')
        q++;
    else
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
    if (q < d->end && *q == '.') {
        frac = 1;
        q++;
        if (q >= d->end || *q < '0' || *q > '9')
            return fail(d, "bad number");
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < d->end && (*q == 'e' || *q == 'E')) {
        frac = 1;
        q++;
        if (q < d->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= d->end || *q < '0' || *q > '9')
            return fail(d, "bad number");
        while (q < d->end && *q >= '0' && *q <= '9')
            q++;
    }
    double v;
    if (!frac && q - s <= 15) { /* exact in a double: no strtod */
        const char *r = s;
        long long n = 0;
        int neg = *r == '-';
        r += neg;
        while (r < q)
            n = n * 10 + (*r++ - '0');
        v = (double)(neg ? -n : n);
    } else {
        char tmp[64];
        size_t n = (size_t)(q - s);
        if (n >= sizeof(tmp))
            return fail(d, "number too long");
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        v = strtod(tmp, NULL);
    }
    lua_pushnumber(d->L, v);
    d->p = q;
    return 0;
}

static int
dec_value(dec_t *d, int depth) {
    skip_ws(d);
    if (d->p >= d->end)
        return fail(d, "unexpected end");
    if (depth > SL_LUA_JSON_DEPTH || !lua_checkstack(d->L, 4))
        return fail(d, "nested too deep");
    char c = *d->p;
    if (c == '"') {
        d->p++;
        return dec_string(d);
    }
    if (c == '{') {
        d->p++;
        lua_createtable(d->L, 0, 4);
        skip_ws(d);
        if (d->p < d->end && *d->p == '}') {
            d->p++;
            return 0;
        }
        for (;;) {
            skip_ws(d);
            if (d->p >= d->end || *d->p != '"')
                return fail(d, "expected a key");
            d->p++;
            if (dec_string(d) != 0)
                return -1;
            skip_ws(d);
            if (d->p >= d->end || *d->p != ':')
                return fail(d, "expected ':'");
            d->p++;
            if (dec_value(d, depth + 1) != 0)
                return -1;
            lua_rawset(d->L, -3);
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == '}') {
                d->p++;
                return 0;
            }
            return fail(d, "expected ',' or '}'");
        }
    }
    if (c == '[') {
        int i = 1;
        d->p++;
        lua_createtable(d->L, 4, 0);
        lua_rawgeti(d->L, LUA_REGISTRYINDEX, d->array_mt);
        lua_setmetatable(d->L, -2);
        skip_ws(d);
        if (d->p < d->end && *d->p == ']') {
            d->p++;
            return 0;
        }
        for (;;) {
            if (dec_value(d, depth + 1) != 0)
                return -1;
            lua_rawseti(d->L, -2, i++);
            skip_ws(d);
            if (d->p < d->end && *d->p == ',') {
                d->p++;
                continue;
            }
            if (d->p < d->end && *d->p == ']') {
                d->p++;
                return 0;
            }
            return fail(d, "expected ',' or ']'");
        }
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return dec_number(d);
    size_t left = (size_t)(d->end - d->p);
    if (left >= 4 && memcmp(d->p, "true", 4) == 0) {
        lua_pushboolean(d->L, 1);
        d->p += 4;
        return 0;
    }
    if (left >= 5 && memcmp(d->p, "false", 5) == 0) {
        lua_pushboolean(d->L, 0);
        d->p += 5;
        return 0;
    }
    if (left >= 4 && memcmp(d->p, "null", 4) == 0) {
        lua_pushlightuserdata(d->L, NULL);
        d->p += 4;
        return 0;
    }
    return fail(d, "unexpected character");
}

int
sl_lua_json_decode(lua_State *L, const char *s, size_t len, char *err,
                   size_t errcap) {
    int top = lua_gettop(L);
    dec_t d = {s, s + len, s, L, sl_lua_vm_of(L)->array_mt, NULL};
    if (dec_value(&d, 0) == 0) {
        skip_ws(&d);
        if (d.p == d.end)
            return 0;
        fail(&d, "text after the value");
    }
    lua_settop(L, top);
    snprintf(err, errcap, "invalid JSON at byte %zu: %s",
             (size_t)(d.p - d.start), d.err);
    return -1;
}

/* ---- encoding ---- */

typedef struct {
    char *buf;
    size_t len, cap;
    lua_State *L;
    int array_mt;
    char *err;
    size_t errcap;
    int failed;
} enc_t;

static int
grow(enc_t *e, size_t need) {
    if (e->len + need <= e->cap)
        return 0;
    size_t cap = e->cap ? e->cap * 2 : 1024;
    while (cap < e->len + need)
        cap *= 2;
    char *nb = realloc(e->buf, cap);
    if (nb == NULL) {
        snprintf(e->err, e->errcap, "out of memory");
        return -1;
    }
    e->buf = nb;
    e->cap = cap;
    return 0;
}

static int
put(enc_t *e, const char *s, size_t n) {
    if (grow(e, n) != 0)
        return -1;
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    return 0;
}

/* 1 for the bytes a JSON string must escape, 5 for those said as \u00XX
 * (what each adds to the length). */
static const unsigned char esc_extra[256] =
    {
        5, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1, 5, 1, 1, 5, 5, /* \b \t \n \f \r */
        5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
        0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* " */
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* \\ */
};

size_t
sl_lua_json_plain(const char *s, size_t n) {
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    /* Eight bytes at a time: a byte below 0x20, a quote or a backslash
     * sets the high bit of its lane (the lowest set lane is exact). */
    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, b;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        uint64_t hit = ((w - ones * 0x20) & ~w & highs) |
                       ((q - ones) & ~q & highs) | ((b - ones) & ~b & highs);
        if (hit != 0)
            return i + ((size_t)__builtin_ctzll(hit) >> 3);
    }
    while (i < n && esc_extra[(unsigned char)s[i]] == 0)
        i++;
    return i;
}

size_t
sl_lua_json_quoted_len(const char *s, size_t n) {
    size_t out = n + 2;
    for (size_t i = sl_lua_json_plain(s, n); i < n; i++)
        out += esc_extra[(unsigned char)s[i]];
    return out;
}

size_t
sl_lua_json_quote(char *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    char *start = o;
    *o++ = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (esc_extra[c] == 0)
            continue;
        memcpy(o, s + run, i - run);
        o += i - run;
        run = i + 1;
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            memcpy(o, "u00", 3);
            o[3] = hex[c >> 4];
            o[4] = hex[c & 15];
            o += 5;
        }
    }
    memcpy(o, s + run, n - run);
    o += n - run;
    *o++ = '"';
    return (size_t)(o - start);
}

static int
put_string(enc_t *e, const char *s, size_t n) {
    size_t q = sl_lua_json_quoted_len(s, n);
    if (grow(e, q) != 0)
        return -1;
    if (q == n + 2) { /* nothing to escape: the common case */
        e->buf[e->len] = '"';
        memcpy(e->buf + e->len + 1, s, n);
        e->buf[e->len + n + 1] = '"';
    } else {
        sl_lua_json_quote(e->buf + e->len, s, n);
    }
    e->len += q;
    return 0;
}

static int
put_number(enc_t *e, double v) {
    char tmp[40];
    int n;
    if (!isfinite(v)) {
        snprintf(e->err, e->errcap, "cannot encode %s in JSON",
                 v != v ? "NaN" : "an infinity");
        return -1;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        long long i = (long long)v;
        char *p = tmp + sizeof(tmp);
        unsigned long long u =
            i < 0 ? 0ULL - (unsigned long long)i : (unsigned long long)i;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u != 0);
        if (i < 0)
            *--p = '-';
        return put(e, p, (size_t)(tmp + sizeof(tmp) - p));
    }
    /* The shortest of %.15g and %.17g that reads back the same. */
    n = snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v)
        n = snprintf(tmp, sizeof(tmp), "%.17g", v);
    return put(e, tmp, (size_t)n);
}

static int enc_value(enc_t *e, int idx, int depth);

static int
enc_table(enc_t *e, int idx, int depth) {
    lua_State *L = e->L;
    if (depth >= SL_LUA_JSON_DEPTH || !lua_checkstack(L, 6)) {
        snprintf(e->err, e->errcap, "table nested too deep (or a cycle)");
        return -1;
    }
    int marked = 0;
    if (lua_getmetatable(L, idx)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, e->array_mt);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    size_t n = lua_objlen(L, idx);
    if (!marked && n > 0) {
        /* An array when the keys are exactly 1..count (a table whose
         * length is 0 has no key 1: an object, or empty). */
        size_t count = 0;
        double max = 0;
        int ints = 1;
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            lua_pop(L, 1);
            count++;
            if (ints && lua_type(L, -1) == LUA_TNUMBER) {
                double k = lua_tonumber(L, -1);
                if (k >= 1 && k == floor(k) && k < 4294967296.0) {
                    if (k > max)
                        max = k;
                    continue;
                }
            }
            ints = 0;
        }
        if (count > 0 && ints && (double)count == max) {
            marked = 1;
            n = count;
        }
    }
    if (!marked)
        n = 0;
    if (marked) {
        if (put(e, "[", 1) != 0)
            return -1;
        for (size_t i = 1; i <= n; i++) {
            if (i > 1 && put(e, ",", 1) != 0)
                return -1;
            lua_rawgeti(L, idx, (int)i);
            int rc = enc_value(e, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
            if (rc != 0)
                return -1;
        }
        return put(e, "]", 1);
    }
    if (put(e, "{", 1) != 0)
        return -1;
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        char num[40];
        const char *k;
        size_t kl;
        if (lua_type(L, -2) == LUA_TSTRING) {
            k = lua_tolstring(L, -2, &kl);
        } else if (lua_type(L, -2) == LUA_TNUMBER) {
            kl = (size_t)snprintf(num, sizeof(num), "%.14g",
                                  lua_tonumber(L, -2));
            k = num;
        } else {
            snprintf(e->err, e->errcap, "cannot encode a table key of type %s",
                     luaL_typename(L, -2));
            lua_pop(L, 2);
            return -1;
        }
        if ((!first && put(e, ",", 1) != 0) || put_string(e, k, kl) != 0 ||
            put(e, ":", 1) != 0 ||
            enc_value(e, lua_gettop(L), depth + 1) != 0) {
            lua_pop(L, 2);
            return -1;
        }
        first = 0;
        lua_pop(L, 1);
    }
    return put(e, "}", 1);
}

static int
enc_value(enc_t *e, int idx, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return put(e, "null", 4);
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNUMBER: return put_number(e, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_string(e, s, n);
    }
    case LUA_TTABLE: return enc_table(e, idx, depth);
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return put(e, "null", 4);
        break;
    default: break;
    }
    snprintf(e->err, e->errcap, "cannot encode a %s in JSON",
             luaL_typename(L, idx));
    return -1;
}

char *
sl_lua_json_encode(lua_State *L, int idx, size_t *len, char *err,
                   size_t errcap) {
    enc_t e = {NULL, 0, 0, L, sl_lua_vm_of(L)->array_mt, err, errcap, 0};
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    err[0] = '\0';
    if (enc_value(&e, idx, 0) != 0 || grow(&e, 1) != 0) {
        free(e.buf);
        return NULL;
    }
    e.buf[e.len] = '\0';
    *len = e.len;
    return e.buf;
}
