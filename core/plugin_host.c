/* The host function table plugins call (sluice_host_t). Every function
 * checks the phase it is called in, then reads or changes the request
 * through the pipeline state (pipeline.h). Pointers handed out are
 * borrowed or arena-owned; nothing here is freed by a plugin. */
#include "conn.h"
#include "error.h"
#include "json_scan.h"
#include "pipeline.h"
#include "providers/provider.h"
#include "store.h"
#include "worker.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "dev"
#endif

enum {
    P_LOAD = 1 << SLUICE_PHASE_LOAD,
    P_REQ = 1 << SLUICE_PHASE_REQUEST,
    P_RESP = 1 << SLUICE_PHASE_RESPONSE,
    P_CHUNK = 1 << SLUICE_PHASE_CHUNK,
    P_LOG = 1 << SLUICE_PHASE_LOG,
    P_REQUEST_ANY = P_REQ | P_RESP | P_CHUNK | P_LOG,
    P_ALL = P_LOAD | P_REQUEST_ANY,
};

static int
allowed(const sluice_req_t *req, unsigned phases) {
    if (req == NULL || req->inst == NULL || !((1u << req->phase) & phases))
        return 0;
    return req->phase == SLUICE_PHASE_LOAD || req->pipe != NULL;
}

#define PHASE(req, phases)                                                     \
    do {                                                                       \
        if (!allowed(req, phases))                                             \
            return SLUICE_EPHASE;                                              \
    } while (0)

static sl_request_t *
R(sluice_req_t *req) {
    return req->pipe->r;
}

static sl_arena_t *
A(sluice_req_t *req) {
    return req->pipe->r->arena;
}

static void
free_json(void *p) {
    cJSON_Delete(p);
}

/* Keeps a detached item alive until the request ends: a plugin may still
 * hold a pointer into it until its hook returns. */
static void
retire(sluice_req_t *req, cJSON *item) {
    if (item != NULL && sl_arena_cleanup_add(A(req), free_json, item) != 0)
        cJSON_Delete(item);
}

/* A NUL-terminated arena copy of text[0..len) with no NUL inside; NULL
 * when it holds one or on OOM (*rc says which). */
static char *
copy_text(sluice_req_t *req, const char *text, size_t len, int *rc) {
    if (text == NULL || memchr(text, '\0', len) != NULL) {
        *rc = SLUICE_EINVAL;
        return NULL;
    }
    char *s = sl_arena_strndup(A(req), text, len);
    *rc = s != NULL ? SLUICE_OK : SLUICE_ENOMEM;
    return s;
}

static int
out_str(const char *s, const char **out, size_t *len) {
    if (out != NULL)
        *out = s;
    if (len != NULL)
        *len = strlen(s);
    return SLUICE_OK;
}

/* ---- config ---- */

static const cJSON *
cfg_item(const sluice_config_t *cfg, const char *key) {
    if (cfg == NULL || key == NULL)
        return NULL;
    return cJSON_GetObjectItemCaseSensitive(cfg->json, key);
}

static int
h_config_string(const sluice_config_t *cfg, const char *key,
                const char **value) {
    const cJSON *v = cfg_item(cfg, key);
    if (v == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsString(v))
        return SLUICE_EINVAL;
    *value = v->valuestring;
    return SLUICE_OK;
}

static int
h_config_int(const sluice_config_t *cfg, const char *key, int64_t *value) {
    const cJSON *v = cfg_item(cfg, key);
    if (v == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble)
        return SLUICE_EINVAL;
    *value = (int64_t)v->valuedouble;
    return SLUICE_OK;
}

static int
h_config_number(const sluice_config_t *cfg, const char *key, double *value) {
    const cJSON *v = cfg_item(cfg, key);
    if (v == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsNumber(v))
        return SLUICE_EINVAL;
    *value = v->valuedouble;
    return SLUICE_OK;
}

static int
h_config_bool(const sluice_config_t *cfg, const char *key, int *value) {
    const cJSON *v = cfg_item(cfg, key);
    if (v == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsBool(v))
        return SLUICE_EINVAL;
    *value = cJSON_IsTrue(v);
    return SLUICE_OK;
}

static int
h_config_list_count(const sluice_config_t *cfg, const char *key,
                    size_t *count) {
    const cJSON *v = cfg_item(cfg, key);
    if (v == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsArray(v))
        return SLUICE_EINVAL;
    *count = (size_t)cJSON_GetArraySize(v);
    return SLUICE_OK;
}

static int
h_config_list_item(const sluice_config_t *cfg, const char *key, size_t i,
                   const char **value) {
    const cJSON *v = cfg_item(cfg, key);
    if (v == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsArray(v))
        return SLUICE_EINVAL;
    const cJSON *it = i < (size_t)cJSON_GetArraySize(v)
                          ? cJSON_GetArrayItem(v, (int)i)
                          : NULL;
    if (it == NULL)
        return SLUICE_ENOTFOUND;
    if (!cJSON_IsString(it))
        return SLUICE_EINVAL;
    *value = it->valuestring;
    return SLUICE_OK;
}

static int
h_config_json(const sluice_config_t *cfg, const char *key, const char **json) {
    if (cfg == NULL)
        return SLUICE_EINVAL;
    if (key == NULL) {
        *json = cfg->text;
        return SLUICE_OK;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg->cache, key);
    if (!cJSON_IsString(v))
        return SLUICE_ENOTFOUND;
    *json = v->valuestring;
    return SLUICE_OK;
}

/* ---- request line and headers ---- */

static int
h_request_method(sluice_req_t *req, const char **method, size_t *len) {
    PHASE(req, P_REQUEST_ANY);
    *method = R(req)->http.method_str;
    if (len != NULL)
        *len = R(req)->http.method_len;
    return SLUICE_OK;
}

static int
h_request_path(sluice_req_t *req, const char **path, size_t *len) {
    PHASE(req, P_REQUEST_ANY);
    *path = R(req)->http.path;
    if (len != NULL)
        *len = R(req)->http.path_len;
    return SLUICE_OK;
}

static int
h_request_header(sluice_req_t *req, const char *name, const char **value,
                 size_t *len) {
    PHASE(req, P_REQUEST_ANY);
    if (name == NULL)
        return SLUICE_EINVAL;
    const sl_http_header_t *h = sl_http_header_find(&R(req)->http, name);
    if (h == NULL)
        return SLUICE_ENOTFOUND;
    *value = h->value;
    if (len != NULL)
        *len = h->value_len;
    return SLUICE_OK;
}

/* ---- response headers ---- */

/* RFC 9110 tchar: letters, digits and !#$%&'*+-.^_`|~ (0 for NUL ends a
 * scan). */
static const unsigned char tchar[256] = {
    ['!'] = 1,         ['#'] = 1,         ['$'] = 1, ['%'] = 1,
    ['&'] = 1,         ['\''] = 1,        ['*'] = 1, ['+'] = 1,
    ['-'] = 1,         ['.'] = 1,         ['^'] = 1, ['_'] = 1,
    ['`'] = 1,         ['|'] = 1,         ['~'] = 1, ['0' ... '9'] = 1,
    ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

/* A consumer's or an attribute value's bytes: no control characters. */
static const unsigned char pchar[256] = {
    [0x20 ... 0x7e] = 1,
    [0x80 ... 0xff] = 1,
};

/* A header value's bytes: tab and 0x20..0xff but DEL (0 for NUL ends a
 * scan). */
static const unsigned char vchar[256] = {
    ['\t'] = 1,
    [0x20 ... 0x7e] = 1,
    [0x80 ... 0xff] = 1,
};

static unsigned
ascii_lower(unsigned char c) {
    return c + ((unsigned)(c - 'A') < 26u) * 32u;
}

/* Eight bytes at a time (SWAR): names and values are checked on every
 * header a plugin sets, often several per request. */
#define SL_ONES 0x0101010101010101ULL
#define SL_HIGHS 0x8080808080808080ULL

/* 0x80 in each byte of w (every byte < 0x80) that is in lo..hi. */
static inline uint64_t
bytes_in(uint64_t w, unsigned lo, unsigned hi) {
    uint64_t ge = (w + SL_ONES * (0x80 - lo)) & SL_HIGHS;
    uint64_t gt = (w + SL_ONES * (0x7f - hi)) & SL_HIGHS;
    return ge & ~gt;
}

/* 1 when the eight bytes at s are letters, digits or '-' (most header
 * names); 0 says only "look byte by byte". */
static inline int
plain_name8(const char *s) {
    uint64_t w;
    memcpy(&w, s, 8);
    if (w & SL_HIGHS)
        return 0;
    return (bytes_in(w | SL_ONES * 0x20, 'a', 'z') | bytes_in(w, '0', '9') |
            bytes_in(w, '-', '-')) == SL_HIGHS;
}

/* 1 when the eight bytes at s are printable ASCII. */
static inline int
plain_value8(const char *s) {
    uint64_t w;
    memcpy(&w, s, 8);
    return !(w & SL_HIGHS) && bytes_in(w, 0x20, 0x7e) == SL_HIGHS;
}

/* 1 when s[0..n) is all in table (0 for NUL); fast8 vouches for eight
 * bytes at a time where it can. */
static inline int
all_in(const char *s, size_t n, const unsigned char table[256],
       int (*fast8)(const char *)) {
    size_t i = 0;
    while (i + 8 <= n && fast8(s + i))
        i += 8;
    for (; i < n; i++)
        if (!table[(unsigned char)s[i]])
            return 0;
    return 1;
}

/* strncasecmp() == 0 for ASCII, without the locale (header names are
 * ASCII tchars). */
static int
same_name(const char *a, const char *b, size_t n) {
    /* Equal but for case means equal once bit 5 is set in every byte:
     * most different names differ there already. */
    for (size_t i = 0; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if ((x | SL_ONES * 0x20) != (y | SL_ONES * 0x20))
            return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)a[i]) !=
            ascii_lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int
header_owned(const char *name, size_t n) {
    const char *own = NULL;
    switch (n) {
    case 2: own = "te"; break;
    case 6: own = "server"; break;
    case 7: own = (name[0] | 0x20) == 'u' ? "upgrade" : "trailer"; break;
    case 10: own = (name[0] | 0x20) == 'c' ? "connection" : "keep-alive"; break;
    case 12: own = "content-type"; break;
    case 14: own = "content-length"; break;
    case 16: own = "proxy-connection"; break;
    case 17: own = "transfer-encoding"; break;
    }
    if (own != NULL && same_name(name, own, n))
        return 1;
    /* x-sluice-* is the gateway's, but for the bundled plugins' own. */
    return n >= 9 && same_name(name, "x-sluice-", 9) &&
           !(n == 14 && same_name(name + 9, "cache", 5)) &&
           !(n == 18 && same_name(name + 9, "guardrail", 9));
}

/* Writes "name: value\r\n" at dst; returns its length. */
static size_t
header_line(char *dst, const char *name, size_t nlen, const char *value,
            size_t vlen) {
    memcpy(dst, name, nlen);
    dst[nlen] = ':';
    dst[nlen + 1] = ' ';
    memcpy(dst + nlen + 2, value, vlen);
    dst[nlen + 2 + vlen] = '\r';
    dst[nlen + 3 + vlen] = '\n';
    return nlen + vlen + 4;
}

/* Adds or replaces the line of a checked name and value. Plugins set a
 * few headers on every request: the lines are appended to one buffer made
 * on first use, with no printf and no copy of the lines before; only
 * setting a header again rebuilds them. */
static int
header_put(sluice_req_t *req, const char *name, size_t nlen, const char *value,
           size_t vlen) {
    sl_pipe_t *p = req->pipe;
    size_t slot = p->nheaders, line = nlen + vlen + 4, total = p->hlen + line;
    for (size_t i = 0; i < p->nheaders; i++)
        if (p->hname_len[i] == nlen && same_name(p->hname[i], name, nlen)) {
            slot = i;
            total -= p->hline_len[i];
            break;
        }
    if (slot == SL_PIPE_MAX_HEADERS || total > SL_PIPE_HEADER_BYTES)
        return SLUICE_ETOOBIG;
    if (slot == p->nheaders) {
        if (p->hlines == NULL &&
            (p->hlines = sl_arena_alloc(A(req), SL_PIPE_HEADER_BYTES + 1)) ==
                NULL)
            return SLUICE_ENOMEM;
        char *dst = p->hlines + p->hlen;
        header_line(dst, name, nlen, value, vlen);
        p->hname[slot] = dst;
        p->nheaders++;
    } else {
        /* Set again: rebuild into a new buffer (the old one is still
         * read from). */
        char *lines = sl_arena_alloc(A(req), SL_PIPE_HEADER_BYTES + 1);
        if (lines == NULL)
            return SLUICE_ENOMEM;
        size_t off = 0;
        for (size_t i = 0; i < p->nheaders; i++) {
            const char *src = p->hname[i];
            size_t len = p->hline_len[i];
            p->hname[i] = lines + off;
            if (i == slot)
                header_line(lines + off, name, nlen, value, vlen);
            else
                memcpy(lines + off, src, len);
            off += i == slot ? line : len;
        }
        p->hlines = lines;
    }
    p->hname_len[slot] = (unsigned short)nlen;
    p->hline_len[slot] = (unsigned short)line;
    p->hlen = total;
    p->hlines[total] = '\0';
    R(req)->plugin_headers = p->hlines;
    return SLUICE_OK;
}

/* 1 when a plugin may set name; its length in *nlen. */
static int
header_name_ok(const char *name, size_t *nlen) {
    if (name == NULL)
        return 0;
    size_t n = strlen(name);
    *nlen = n;
    return n > 0 && n <= 128 && all_in(name, n, tchar, plain_name8) &&
           !header_owned(name, n);
}

/* Whether a response header may still be set: the phase, and the head
 * not sent yet. */
static int
header_phase(sluice_req_t *req) {
    if (!allowed(req, P_REQ | P_RESP | P_CHUNK))
        return SLUICE_EPHASE;
    return R(req)->responded ? SLUICE_EPHASE : SLUICE_OK; /* head gone */
}

static int
h_response_header_set(sluice_req_t *req, const char *name, const char *value) {
    int rc = header_phase(req);
    if (rc != SLUICE_OK)
        return rc;
    size_t nlen, vlen;
    if (!header_name_ok(name, &nlen) || value == NULL ||
        !all_in(value, vlen = strlen(value), vchar, plain_value8))
        return SLUICE_EINVAL;
    return header_put(req, name, nlen, value, vlen);
}

/* Marks a sluice_header_name_t that response_header_prepare checked. */
#define SL_HEADER_CHECKED 0x534c4831u /* "SLH1" */

static int
h_response_header_prepare(sluice_header_name_t *h, const char *name) {
    size_t nlen;
    if (h == NULL)
        return SLUICE_EINVAL;
    h->checked = 0;
    if (!header_name_ok(name, &nlen))
        return SLUICE_EINVAL;
    h->name = name;
    h->len = nlen;
    h->checked = SL_HEADER_CHECKED;
    return SLUICE_OK;
}

static int
h_response_header_set_prepared(sluice_req_t *req, const sluice_header_name_t *h,
                               const char *value, size_t len) {
    int rc = header_phase(req);
    if (rc != SLUICE_OK)
        return rc;
    if (h == NULL || h->checked != SL_HEADER_CHECKED || value == NULL ||
        !all_in(value, len, vchar, plain_value8))
        return SLUICE_EINVAL;
    return header_put(req, h->name, h->len, value, len);
}

/* ---- the chat request ---- */

/* The request as a cJSON tree, decoded on first use. The proxy reads a
 * body it can scan in place without one (k->scanned); a plugin that only
 * reads the message count, max_tokens and string texts never needs it
 * (scan_* below). NULL without a body, or out of memory. */
static cJSON *
request_tree(sluice_req_t *req) {
    sl_call_t *k = req->pipe->k;
    if (k == NULL)
        return NULL;
    if (k->json == NULL && k->scanned != NULL) {
        const sl_request_t *r = R(req);
        cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
        if (j == NULL || sl_arena_cleanup_add(A(req), free_json, j) != 0) {
            cJSON_Delete(j);
            return NULL;
        }
        k->json = j;
    }
    return k->json;
}

/* The body to scan in place: the client's, while no tree was decoded (a
 * tree may have been changed by a hook; it is the truth once it exists). */
static const char *
scannable(sluice_req_t *req) {
    const sl_call_t *k = req->pipe->k;
    return k != NULL && k->json == NULL && k->scanned != NULL &&
                   k->scanned == R(req)->body
               ? k->scanned
               : NULL;
}

/* Reads the body's top level once: where messages, max_completion_tokens
 * and max_tokens are (the first of each name, as cJSON finds them). 1, or
 * 0 when the scanner refuses the body (the tree answers then). */
static int
scan_top(sluice_req_t *req, const char *body) {
    sl_pipe_t *p = req->pipe;
    if (p->scan_body != body) { /* a script replaced the body since */
        memset(&p->scan_mct, 0, sizeof(p->scan_mct));
        memset(&p->scan_mt, 0, sizeof(p->scan_mt));
        memset(&p->scan_msgs, 0, sizeof(p->scan_msgs));
        p->scan_cur.p = NULL;
        p->scan_state = 0;
        p->scan_body = body;
    }
    if (p->scan_state != 0)
        return p->scan_state > 0;
    p->scan_state = -1;
    sl_jscan_t s;
    sl_jscan_init(&s, body, R(req)->body_len);
    size_t n = 0, klen;
    const char *key;
    if (sl_jscan_enter(&s) != 0)
        return 0;
    for (;;) {
        int rc = sl_jscan_member(&s, &n, &key, &klen);
        if (rc < 0)
            return 0;
        if (rc == 0)
            break;
        sl_jval_t *want = NULL;
        if (sl_json_key_is(key, klen, "messages"))
            want = &p->scan_msgs;
        else if (sl_json_key_is(key, klen, "max_completion_tokens"))
            want = &p->scan_mct;
        else if (sl_json_key_is(key, klen, "max_tokens"))
            want = &p->scan_mt;
        if (want != NULL && want->type == SL_JSON_NONE) {
            if (sl_jscan_value(&s, want) != 0)
                return 0;
        } else if (sl_jscan_value(&s, NULL) != 0) {
            return 0;
        }
    }
    p->scan_state = 1;
    return 1;
}

/* Message i's content in place: SCAN_TEXT with *v on a string, SCAN_NONE
 * when the message has no text (content absent, null, not a string nor
 * parts), SCAN_PAST past the end, SCAN_TREE when the tree must answer
 * (content parts, or a body the scanner refuses). Reading the messages in
 * order steps on from the last one read. */
enum { SCAN_TREE = 0, SCAN_TEXT, SCAN_NONE, SCAN_PAST };

static int
scan_content(sluice_req_t *req, const char *body, size_t i, sl_jval_t *v) {
    sl_pipe_t *p = req->pipe;
    if (!scan_top(req, body) || p->scan_msgs.type != SL_JSON_ARRAY)
        return SCAN_TREE;
    sl_jscan_t *s = &p->scan_cur;
    if (s->p == NULL || i < p->scan_at) { /* from the first element */
        sl_jscan_init(s, p->scan_msgs.start, p->scan_msgs.len);
        p->scan_n = 0;
        p->scan_at = 0;
        if (sl_jscan_enter(s) != 0)
            return SCAN_TREE;
        int rc = sl_jscan_element(s, &p->scan_n);
        if (rc != 1)
            return rc == 0 ? SCAN_PAST : SCAN_TREE;
    }
    while (p->scan_at < i) {
        int rc = sl_jscan_value(s, NULL);
        if (rc == 0)
            rc = sl_jscan_element(s, &p->scan_n);
        if (rc != 1) {
            s->p = NULL;
            return rc == 0 ? SCAN_PAST : SCAN_TREE;
        }
        p->scan_at++;
    }
    /* A copy walks into the element; the cursor stays on it. */
    sl_jscan_t e = *s;
    if (sl_jscan_peek(&e) != SL_JSON_OBJECT)
        return SCAN_NONE;
    if (sl_jscan_enter(&e) != 0)
        return SCAN_TREE;
    const char *key;
    size_t klen, n = 0;
    for (;;) {
        int rc = sl_jscan_member(&e, &n, &key, &klen);
        if (rc <= 0)
            return rc == 0 ? SCAN_NONE : SCAN_TREE;
        if (sl_json_key_is(key, klen, "content")) {
            if (sl_jscan_value(&e, v) != 0)
                return SCAN_TREE;
            return v->type == SL_JSON_STRING  ? SCAN_TEXT
                   : v->type == SL_JSON_ARRAY ? SCAN_TREE
                                              : SCAN_NONE;
        }
        if (sl_jscan_value(&e, NULL) != 0)
            return SCAN_TREE;
    }
}

static cJSON *
messages(sluice_req_t *req) {
    sl_call_t *k = req->pipe->k;
    if (k == NULL || k->kind != SL_CALL_CHAT)
        return NULL;
    cJSON *m = cJSON_GetObjectItemCaseSensitive(request_tree(req), "messages");
    return cJSON_IsArray(m) ? m : NULL;
}

static cJSON *
message_at(sluice_req_t *req, size_t i) {
    cJSON *m = messages(req);
    if (m == NULL || i >= (size_t)cJSON_GetArraySize(m))
        return NULL;
    return cJSON_GetArrayItem(m, (int)i);
}

static int
h_model(sluice_req_t *req, const char **name) {
    PHASE(req, P_REQUEST_ANY);
    if (R(req)->model == NULL)
        return SLUICE_ENOTFOUND;
    *name = R(req)->model;
    return SLUICE_OK;
}

static int
h_stream(sluice_req_t *req) {
    PHASE(req, P_REQUEST_ANY);
    return req->pipe->k != NULL && req->pipe->k->stream ? 1 : 0;
}

static int
h_message_count(sluice_req_t *req, size_t *count) {
    PHASE(req, P_REQUEST_ANY);
    const sl_call_t *k = req->pipe->k;
    if (scannable(req) != NULL) { /* what call_new read of the body */
        *count = k->kind == SL_CALL_CHAT && k->facts.messages == SL_JSON_ARRAY
                     ? k->facts.nmessages
                     : 0;
        return SLUICE_OK;
    }
    cJSON *m = messages(req);
    *count = m != NULL ? (size_t)cJSON_GetArraySize(m) : 0;
    return SLUICE_OK;
}

static int
h_message_role(sluice_req_t *req, size_t i, const char **role) {
    PHASE(req, P_REQUEST_ANY);
    const cJSON *r =
        cJSON_GetObjectItemCaseSensitive(message_at(req, i), "role");
    if (!cJSON_IsString(r))
        return SLUICE_ENOTFOUND;
    *role = r->valuestring;
    return SLUICE_OK;
}

static int
is_text_part(const cJSON *part) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
    return cJSON_IsString(t) &&
           (type == NULL ||
            (cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0));
}

/* A string value's text as cJSON decodes it, in the arena; NULL when out
 * of memory. */
static char *
jval_text(sluice_req_t *req, const sl_jval_t *v, size_t *len) {
    if (!v->escaped) {
        *len = v->len - 2;
        return sl_arena_strndup(A(req), v->start + 1, *len);
    }
    cJSON *j = cJSON_ParseWithLength(v->start, v->len);
    char *t = cJSON_IsString(j) ? sl_arena_strndup(A(req), j->valuestring,
                                                   strlen(j->valuestring))
                                : NULL;
    if (t != NULL)
        *len = strlen(t);
    cJSON_Delete(j);
    return t;
}

static int
h_message_text(sluice_req_t *req, size_t i, const char **text, size_t *len) {
    PHASE(req, P_REQUEST_ANY);
    const char *body = scannable(req);
    if (body != NULL && req->pipe->k->kind == SL_CALL_CHAT) {
        sl_jval_t v;
        switch (scan_content(req, body, i, &v)) {
        case SCAN_TEXT: {
            size_t n = 0;
            char *t = jval_text(req, &v, &n);
            if (t == NULL)
                return SLUICE_ENOMEM;
            *text = t;
            if (len != NULL)
                *len = n;
            return SLUICE_OK;
        }
        case SCAN_NONE:
        case SCAN_PAST: return SLUICE_ENOTFOUND;
        default: break; /* content parts: the tree joins them */
        }
    }
    const cJSON *m = message_at(req, i);
    if (m == NULL)
        return SLUICE_ENOTFOUND;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(c))
        return out_str(c->valuestring, text, len);
    if (!cJSON_IsArray(c))
        return SLUICE_ENOTFOUND;
    size_t total = 0, n = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        if (is_text_part(part)) {
            total += strlen(cJSON_GetObjectItemCaseSensitive(part, "text")
                                ->valuestring) +
                     1;
            n++;
        }
    }
    if (n == 0)
        return SLUICE_ENOTFOUND;
    char *out = sl_arena_alloc(A(req), total + 1), *o = out;
    if (out == NULL)
        return SLUICE_ENOMEM;
    cJSON_ArrayForEach(part, c) {
        if (!is_text_part(part))
            continue;
        const char *t =
            cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        if (o != out)
            *o++ = '\n';
        size_t tl = strlen(t);
        memcpy(o, t, tl);
        o += tl;
    }
    *o = '\0';
    return out_str(out, text, len);
}

static int
h_message_set_text(sluice_req_t *req, size_t i, const char *text, size_t len) {
    PHASE(req, P_REQ);
    cJSON *m = message_at(req, i);
    if (m == NULL)
        return SLUICE_ENOTFOUND;
    int rc;
    char *s = copy_text(req, text, len, &rc);
    if (s == NULL)
        return rc;
    cJSON *item = cJSON_CreateString(s);
    if (item == NULL)
        return SLUICE_ENOMEM;
    cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsArray(c)) {
        /* The first text part takes the text; other text parts go; images
         * and the like stay where they are. */
        cJSON *part = c->child, *first = NULL;
        while (part != NULL) {
            cJSON *next = part->next;
            if (is_text_part(part)) {
                if (first == NULL) {
                    first = part;
                    retire(req, cJSON_DetachItemFromObjectCaseSensitive(
                                    part, "text"));
                    cJSON_AddItemToObject(part, "text", item);
                } else {
                    retire(req, cJSON_DetachItemViaPointer(c, part));
                }
            }
            part = next;
        }
        if (first == NULL) {
            cJSON *np = cJSON_CreateObject();
            if (np == NULL) {
                cJSON_Delete(item);
                return SLUICE_ENOMEM;
            }
            cJSON_AddStringToObject(np, "type", "text");
            cJSON_AddItemToObject(np, "text", item);
            cJSON_InsertItemInArray(c, 0, np);
        }
    } else {
        retire(req, cJSON_DetachItemFromObjectCaseSensitive(m, "content"));
        cJSON_AddItemToObject(m, "content", item);
    }
    req->pipe->msgs_dirty = 1;
    return SLUICE_OK;
}

/* ---- the answer ---- */

static int
h_response_status(sluice_req_t *req, int *status) {
    PHASE(req, P_RESP | P_CHUNK | P_LOG);
    switch (req->phase) {
    case SLUICE_PHASE_RESPONSE: *status = req->pipe->resp_status; break;
    case SLUICE_PHASE_CHUNK: *status = 200; break;
    default: *status = R(req)->status; break;
    }
    return SLUICE_OK;
}

/* choices[choice].<field>.content of a parsed answer or event. */
static cJSON *
choice_content(cJSON *root, size_t choice, const char *field, cJSON **holder) {
    cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsArray(choices) ||
        choice >= (size_t)cJSON_GetArraySize(choices))
        return NULL;
    cJSON *h = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(choices, (int)choice), field);
    if (!cJSON_IsObject(h))
        return NULL;
    if (holder != NULL)
        *holder = h;
    return cJSON_GetObjectItemCaseSensitive(h, "content");
}

static cJSON *
response_json(sl_pipe_t *p) {
    if (!p->resp_parsed) {
        p->resp_parsed = 1;
        p->resp_json = cJSON_ParseWithLength(p->resp_body, p->resp_len);
    }
    return p->resp_json;
}

static cJSON *
chunk_json(sl_pipe_t *p) {
    if (!p->chunk_parsed) {
        p->chunk_parsed = 1;
        p->chunk_json = cJSON_ParseWithLength(p->chunk, p->chunk_len);
    }
    return p->chunk_json;
}

/* Replaces holder.content with text; keeps the old item for the hook. */
static int
set_content(sluice_req_t *req, cJSON *holder, const char *text, size_t len) {
    int rc;
    char *s = copy_text(req, text, len, &rc);
    if (s == NULL)
        return rc;
    cJSON *item = cJSON_CreateString(s);
    if (item == NULL)
        return SLUICE_ENOMEM;
    retire(req, cJSON_DetachItemFromObjectCaseSensitive(holder, "content"));
    cJSON_AddItemToObject(holder, "content", item);
    return SLUICE_OK;
}

static int
h_response_text(sluice_req_t *req, size_t choice, const char **text,
                size_t *len) {
    PHASE(req, P_RESP);
    const cJSON *c =
        choice_content(response_json(req->pipe), choice, "message", NULL);
    if (!cJSON_IsString(c))
        return SLUICE_ENOTFOUND;
    return out_str(c->valuestring, text, len);
}

static int
h_response_set_text(sluice_req_t *req, size_t choice, const char *text,
                    size_t len) {
    PHASE(req, P_RESP);
    cJSON *holder = NULL;
    choice_content(response_json(req->pipe), choice, "message", &holder);
    if (holder == NULL)
        return SLUICE_ENOTFOUND;
    int rc = set_content(req, holder, text, len);
    if (rc == SLUICE_OK)
        req->pipe->resp_dirty = 1;
    return rc;
}

static int
h_delta_text(sluice_req_t *req, const char **text, size_t *len) {
    PHASE(req, P_CHUNK);
    const cJSON *c = choice_content(chunk_json(req->pipe), 0, "delta", NULL);
    if (!cJSON_IsString(c))
        return SLUICE_ENOTFOUND;
    return out_str(c->valuestring, text, len);
}

static int
h_delta_set_text(sluice_req_t *req, const char *text, size_t len) {
    PHASE(req, P_CHUNK);
    cJSON *holder = NULL;
    choice_content(chunk_json(req->pipe), 0, "delta", &holder);
    if (holder == NULL)
        return SLUICE_ENOTFOUND;
    int rc = set_content(req, holder, text, len);
    if (rc == SLUICE_OK)
        req->pipe->chunk_dirty = 1;
    return rc;
}

/* Sets the hook's answer (a copy of body); the last respond*() call of a
 * hook wins. */
static int
set_answer(sluice_req_t *req, int status, const char *body, size_t len,
           int stream, int replay) {
    char *copy = sl_arena_strndup(A(req), body, len);
    if (copy == NULL)
        return SLUICE_ENOMEM;
    req->pipe->answer_status = status;
    req->pipe->answer = copy;
    req->pipe->answer_len = len;
    req->pipe->answer_stream = stream;
    req->pipe->answer_replay = replay;
    return SLUICE_OK;
}

static int
h_respond(sluice_req_t *req, int status, const char *json, size_t len) {
    PHASE(req, P_REQ | P_RESP | P_CHUNK);
    if (status < 200 || status > 599 || json == NULL)
        return SLUICE_EINVAL;
    cJSON *check = cJSON_ParseWithLength(json, len);
    if (check == NULL)
        return SLUICE_EINVAL;
    cJSON_Delete(check);
    return set_answer(req, status, json, len, 0, 0);
}

/* ---- consumer, memory, state ---- */

static int
h_consumer(sluice_req_t *req, const char **id) {
    PHASE(req, P_REQUEST_ANY);
    if (R(req)->consumer == NULL)
        return SLUICE_ENOTFOUND;
    *id = R(req)->consumer;
    return SLUICE_OK;
}

static int
h_consumer_set(sluice_req_t *req, const char *id) {
    PHASE(req, P_REQ);
    if (id == NULL)
        return SLUICE_EINVAL;
    size_t n = strlen(id);
    if (n == 0 || n > 256 || !all_in(id, n, pchar, plain_value8))
        return SLUICE_EINVAL;
    char *copy = sl_arena_strndup(A(req), id, n);
    if (copy == NULL)
        return SLUICE_ENOMEM;
    R(req)->consumer = copy;
    return SLUICE_OK;
}

static void *
h_alloc(sluice_req_t *req, size_t n) {
    if (!allowed(req, P_REQUEST_ANY))
        return NULL;
    return sl_arena_alloc(A(req), n ? n : 1);
}

static void *
h_state_get(sluice_req_t *req) {
    if (!allowed(req, P_REQUEST_ANY))
        return NULL;
    return req->pipe->state[req->pos];
}

static int
h_state_set(sluice_req_t *req, void *state) {
    PHASE(req, P_REQUEST_ANY);
    req->pipe->state[req->pos] = state;
    return SLUICE_OK;
}

/* ---- key-value store ---- */

static _Atomic(sl_store_t *) kv_store;

void
sl_plugin_host_set_store(sl_store_t *st) {
    atomic_store(&kv_store, st);
}

static int
from_store(int rc) {
    switch (rc) {
    case 0: return SLUICE_OK;
    case SL_ENOTFOUND: return SLUICE_ENOTFOUND;
    case SL_EINVAL: return SLUICE_EINVAL;
    case SL_ETOOBIG: return SLUICE_ETOOBIG;
    case SL_EAGAIN: return SLUICE_EAGAIN;
    case SL_ENOMEM: return SLUICE_ENOMEM;
    default: return SLUICE_EIO;
    }
}

/* The store, or NULL with *rc set. */
static sl_store_t *
kv_begin(sluice_req_t *req, const void *key, size_t klen, int *rc) {
    *rc = SLUICE_EPHASE;
    if (!allowed(req, P_ALL))
        return NULL;
    *rc = SLUICE_EINVAL;
    if (key == NULL || klen == 0 || klen > 400)
        return NULL;
    sl_store_t *st = atomic_load(&kv_store);
    *rc = st != NULL ? SLUICE_OK : SLUICE_EUNAVAIL;
    return st;
}

static int
h_kv_get(sluice_req_t *req, const void *key, size_t klen, void *buf, size_t cap,
         size_t *len) {
    int rc;
    sl_store_t *st = kv_begin(req, key, klen, &rc);
    if (st == NULL)
        return rc;
    return from_store(sl_store_get(st, SL_STORE_KV, req->inst->kv_ns, key, klen,
                                   buf, cap, len, NULL));
}

static int
h_kv_set(sluice_req_t *req, const void *key, size_t klen, const void *val,
         size_t vlen, int64_t ttl_ms) {
    int rc;
    sl_store_t *st = kv_begin(req, key, klen, &rc);
    if (st == NULL)
        return rc;
    if ((val == NULL && vlen > 0) || ttl_ms < 0)
        return SLUICE_EINVAL;
    return from_store(sl_store_put_async(st, SL_STORE_KV, req->inst->kv_ns, key,
                                         klen, val ? val : "", vlen, ttl_ms,
                                         NULL, NULL));
}

static int
h_kv_delete(sluice_req_t *req, const void *key, size_t klen) {
    int rc;
    sl_store_t *st = kv_begin(req, key, klen, &rc);
    if (st == NULL)
        return rc;
    return from_store(sl_store_del_async(st, SL_STORE_KV, req->inst->kv_ns, key,
                                         klen, NULL, NULL));
}

static int
h_kv_incr(sluice_req_t *req, const void *key, size_t klen, int64_t delta,
          int64_t ttl_ms, int64_t *value) {
    int rc;
    sl_store_t *st = kv_begin(req, key, klen, &rc);
    if (st == NULL)
        return rc;
    if (ttl_ms < 0)
        return SLUICE_EINVAL;
    /* The writer applies every increment; what we answer is what this
     * gateway has committed so far plus ours, without waiting. */
    int64_t cur = 0;
    rc = sl_store_get_counter(st, SL_STORE_KV, req->inst->kv_ns, key, klen,
                              &cur, NULL);
    if (rc == SL_ENOTFOUND)
        cur = 0;
    else if (rc != 0)
        return from_store(rc);
    if ((delta > 0 && cur > INT64_MAX - delta) ||
        (delta < 0 && cur < INT64_MIN - delta))
        return SLUICE_EINVAL;
    rc = sl_store_incr_async(st, SL_STORE_KV, req->inst->kv_ns, key, klen,
                             delta, ttl_ms, NULL, NULL);
    if (rc != 0)
        return from_store(rc);
    if (value != NULL)
        *value = cur + delta;
    return SLUICE_OK;
}

/* Read-only: the KEYS database belongs to `sluice keys` and the admin
 * API; plugins only look keys up. */
static int
h_keys_get(sluice_req_t *req, const char *ns, const void *key, size_t klen,
           void *buf, size_t cap, size_t *len) {
    int rc;
    if (ns == NULL || ns[0] == '\0' || strlen(ns) > 64)
        return allowed(req, P_ALL) ? SLUICE_EINVAL : SLUICE_EPHASE;
    sl_store_t *st = kv_begin(req, key, klen, &rc);
    if (st == NULL)
        return rc;
    return from_store(
        sl_store_get(st, SL_STORE_KEYS, ns, key, klen, buf, cap, len, NULL));
}

/* The handle is the instance: plugin.c frees it only after destroy(). */
static sluice_kv_t *
h_kv_handle(sluice_req_t *req) {
    if (req == NULL || req->inst == NULL || req->phase != SLUICE_PHASE_LOAD)
        return NULL;
    return (sluice_kv_t *)req->inst;
}

static int
h_kv_handle_set(sluice_kv_t *kv, const void *key, size_t klen, const void *val,
                size_t vlen, int64_t ttl_ms) {
    const sl_plugin_inst_t *in = (const sl_plugin_inst_t *)kv;
    if (in == NULL || key == NULL || klen == 0 || klen > 400 ||
        (val == NULL && vlen > 0) || ttl_ms < 0)
        return SLUICE_EINVAL;
    sl_store_t *st = atomic_load(&kv_store);
    if (st == NULL)
        return SLUICE_EUNAVAIL;
    return from_store(sl_store_put_async(st, SL_STORE_KV, in->kv_ns, key, klen,
                                         val ? val : "", vlen, ttl_ms, NULL,
                                         NULL));
}

static int
h_keys_version(sluice_req_t *req, uint64_t *version) {
    PHASE(req, P_ALL);
    if (version == NULL)
        return SLUICE_EINVAL;
    sl_store_t *st = atomic_load(&kv_store);
    if (st == NULL)
        return SLUICE_EUNAVAIL;
    *version = sl_store_generation(st, SL_STORE_KEYS);
    return SLUICE_OK;
}

/* ---- logging ---- */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void
h_log(sluice_req_t *req, int level, const char *fmt, ...) {
    if (!allowed(req, P_ALL) || fmt == NULL)
        return;
    if (level < SLUICE_LOG_ERROR || level > SLUICE_LOG_DEBUG)
        level = SLUICE_LOG_INFO;
    if (level == SLUICE_LOG_DEBUG && getenv("SLUICE_PLUGIN_DEBUG") == NULL)
        return;
    char line[1024];
    int n =
        snprintf(line, sizeof(line), "sluice: plugin %s: %s: ", req->inst->name,
                 level_names[level]);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    /* One line per call, whatever the plugin put in it. */
    for (size_t i = (size_t)n; i < len; i++)
        if ((unsigned char)line[i] < 0x20)
            line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(2, line, len); /* one write: lines do not interleave */
    (void)w;
}

/* ---- metrics ---- */

/* One table per worker thread (slot 0 is the loading thread), written only
 * by its own thread; a reader sums the slots. */
#define SL_METRIC_SLOTS 258
#define SL_METRIC_SERIES 512

typedef struct {
    atomic_int ready; /* the key below is set */
    uint32_t hash;
    char plugin[65];
    char name[65];
    char labels[193];
    _Atomic double value;
} sl_metric_t;

typedef struct {
    sl_metric_t s[SL_METRIC_SERIES];
} sl_metric_table_t;

static _Atomic(sl_metric_table_t *) metric_tables[SL_METRIC_SLOTS];

static uint32_t
fnv(uint32_t h, const char *s) {
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h * 16777619u;
}

static int
metric_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == ':'))
            return 0;
    return 1;
}

static int
labels_ok(const char *s) {
    if (strlen(s) > 192)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '{' || *s == '}')
            return 0;
    return 1;
}

static sl_metric_t *
metric_find(sl_metric_table_t *t, uint32_t h, const char *plugin,
            const char *name, const char *labels, int create) {
    for (size_t i = 0; i < SL_METRIC_SERIES; i++) {
        sl_metric_t *m = &t->s[(h + i) % SL_METRIC_SERIES];
        if (!atomic_load_explicit(&m->ready, memory_order_acquire)) {
            if (!create)
                return NULL;
            m->hash = h;
            snprintf(m->plugin, sizeof(m->plugin), "%s", plugin);
            snprintf(m->name, sizeof(m->name), "%s", name);
            snprintf(m->labels, sizeof(m->labels), "%s", labels);
            atomic_init(&m->value, 0.0);
            atomic_store_explicit(&m->ready, 1, memory_order_release);
            return m;
        }
        if (m->hash == h && strcmp(m->plugin, plugin) == 0 &&
            strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0)
            return m;
    }
    return NULL;
}

static int
h_metric_add(sluice_req_t *req, const char *name, const char *labels,
             double value) {
    PHASE(req, P_ALL);
    if (labels == NULL)
        labels = "";
    if (name == NULL || !metric_name_ok(name) || !labels_ok(labels) ||
        !isfinite(value) || value < 0)
        return SLUICE_EINVAL;
    int slot = 0;
    if (req->phase != SLUICE_PHASE_LOAD && R(req)->w != NULL)
        slot = R(req)->w->id + 1;
    if (slot < 0 || slot >= SL_METRIC_SLOTS)
        return SLUICE_EINVAL;
    sl_metric_table_t *t = atomic_load(&metric_tables[slot]);
    if (t == NULL) {
        /* Only this thread writes this slot; the pointer is published for
         * readers. Freed never: a few per worker for the process's life. */
        t = calloc(1, sizeof(*t));
        if (t == NULL)
            return SLUICE_ENOMEM;
        atomic_store(&metric_tables[slot], t);
    }
    const char *plugin = req->inst->name;
    uint32_t h = fnv(fnv(fnv(2166136261u, plugin), name), labels);
    sl_metric_t *m = metric_find(t, h, plugin, name, labels, 1);
    if (m == NULL)
        return SLUICE_ETOOBIG;
    double v = atomic_load_explicit(&m->value, memory_order_relaxed);
    atomic_store_explicit(&m->value, v + value, memory_order_relaxed);
    return SLUICE_OK;
}

double
sl_plugin_metric_get(const char *plugin, const char *name, const char *labels) {
    if (labels == NULL)
        labels = "";
    uint32_t h = fnv(fnv(fnv(2166136261u, plugin), name), labels);
    double sum = 0;
    for (int i = 0; i < SL_METRIC_SLOTS; i++) {
        sl_metric_table_t *t = atomic_load(&metric_tables[i]);
        sl_metric_t *m =
            t != NULL ? metric_find(t, h, plugin, name, labels, 0) : NULL;
        if (m != NULL)
            sum += atomic_load_explicit(&m->value, memory_order_relaxed);
    }
    return sum;
}

/* ---- the call context ---- */

static int
h_phase(sluice_req_t *req) {
    return req != NULL ? (int)req->phase : SLUICE_EINVAL;
}

static const char *
h_instance_name(sluice_req_t *req) {
    return req != NULL && req->inst != NULL ? req->inst->name : NULL;
}

/* ---- since 1.1: the client, request attributes, token accounting ---- */

static int
h_client_addr(sluice_req_t *req, const char **addr, size_t *len) {
    PHASE(req, P_REQUEST_ANY);
    sl_pipe_t *p = req->pipe;
    if (p->client_addr == NULL) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        char text[INET6_ADDRSTRLEN] = "";
        const sl_conn_t *c = R(req)->conn;
        if (c == NULL || getpeername(c->fd, (struct sockaddr *)&ss, &sl) != 0)
            return SLUICE_ENOTFOUND;
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, text,
                      sizeof(text));
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
                      text, sizeof(text));
        if (text[0] == '\0')
            return SLUICE_ENOTFOUND;
        p->client_addr = sl_arena_strndup(A(req), text, strlen(text));
        if (p->client_addr == NULL)
            return SLUICE_ENOMEM;
    }
    return out_str(p->client_addr, addr, len);
}

/* An attribute name's bytes: [a-z0-9_.-] (0 for NUL ends a scan). */
static const unsigned char achar[256] = {
    ['a' ... 'z'] = 1, ['0' ... '9'] = 1, ['_'] = 1, ['.'] = 1, ['-'] = 1,
};

static int
h_attr_set(sluice_req_t *req, const char *name, const char *value) {
    PHASE(req, P_REQ);
    sl_pipe_t *p = req->pipe;
    if (name == NULL || value == NULL)
        return SLUICE_EINVAL;
    size_t nlen = 0, vlen = strlen(value);
    while (achar[(unsigned char)name[nlen]])
        nlen++;
    if (nlen == 0 || nlen > 64 || name[nlen] != '\0' || vlen > 1024 ||
        !all_in(value, vlen, pchar, plain_value8))
        return SLUICE_EINVAL;
    size_t slot = p->nattrs;
    for (size_t i = 0; i < p->nattrs; i++)
        if (strcmp(p->aname[i], name) == 0)
            slot = i;
    if (slot == SL_PIPE_MAX_ATTRS)
        return SLUICE_ETOOBIG;
    const char *v = sl_arena_strndup(A(req), value, vlen);
    const char *n = slot < p->nattrs ? p->aname[slot]
                                     : sl_arena_strndup(A(req), name, nlen);
    if (v == NULL || n == NULL)
        return SLUICE_ENOMEM;
    p->aname[slot] = n;
    p->avalue[slot] = v;
    if (slot == p->nattrs)
        p->nattrs++;
    return SLUICE_OK;
}

/* "lua.NAME": ctx.vars.NAME of the route's Lua script, as text. */
static int
lua_var(sluice_req_t *req, const char *name, const char **value) {
    sl_request_t *r = req->pipe->r;
    cJSON *vars = r->vars ? cJSON_Parse(r->vars) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(vars, name);
    char num[32];
    const char *text = NULL;
    if (cJSON_IsString(v))
        text = v->valuestring;
    else if (cJSON_IsBool(v))
        text = cJSON_IsTrue(v) ? "true" : "false";
    else if (cJSON_IsNumber(v) && snprintf(num, sizeof(num), "%.17g",
                                           v->valuedouble) > 0)
        text = num;
    *value = text ? sl_arena_strndup(A(req), text, strlen(text)) : NULL;
    cJSON_Delete(vars);
    return text == NULL ? SLUICE_ENOTFOUND : *value ? SLUICE_OK : SLUICE_ENOMEM;
}

static int
h_attr_get(sluice_req_t *req, const char *name, const char **value) {
    PHASE(req, P_REQUEST_ANY);
    if (name == NULL || value == NULL)
        return SLUICE_EINVAL;
    sl_pipe_t *p = req->pipe;
    for (size_t i = 0; i < p->nattrs; i++)
        if (p->aname[i][0] == name[0] && strcmp(p->aname[i], name) == 0) {
            *value = p->avalue[i];
            return SLUICE_OK;
        }
    if (name[0] == 'l' && strncmp(name, "lua.", 4) == 0)
        return lua_var(req, name + 4, value);
    return SLUICE_ENOTFOUND;
}

/* A number's text as cJSON reads it (strtod, but for plain integers). */
static double
jval_double(const sl_jval_t *v) {
    char buf[64]; /* the scanner takes no longer number */
    if (v->len >= sizeof(buf))
        return -1;
    memcpy(buf, v->start, v->len);
    buf[v->len] = '\0';
    if (v->len <= 15 && strspn(buf, "0123456789") == v->len) {
        double d = 0;
        for (size_t i = 0; i < v->len; i++)
            d = d * 10 + (buf[i] - '0');
        return d;
    }
    return strtod(buf, NULL);
}

static int
h_request_max_tokens(sluice_req_t *req, int64_t *value) {
    PHASE(req, P_REQUEST_ANY);
    if (req->pipe->k == NULL || value == NULL)
        return SLUICE_ENOTFOUND;
    static const char *const keys[] = {"max_completion_tokens", "max_tokens"};
    const char *body = scannable(req);
    const sl_jval_t *scanned[2] = {&req->pipe->scan_mct, &req->pipe->scan_mt};
    int in_place = body != NULL && scan_top(req, body);
    for (size_t i = 0; i < 2; i++) {
        double d = -1;
        if (in_place) {
            if (scanned[i]->type == SL_JSON_NUMBER)
                d = jval_double(scanned[i]);
        } else {
            const cJSON *v =
                cJSON_GetObjectItemCaseSensitive(request_tree(req), keys[i]);
            if (cJSON_IsNumber(v))
                d = v->valuedouble;
        }
        if (d >= 0 && d < 9007199254740992.0) {
            *value = (int64_t)d;
            return SLUICE_OK;
        }
    }
    return SLUICE_ENOTFOUND;
}

static int
h_usage(sluice_req_t *req, int64_t *prompt_tokens, int64_t *completion_tokens) {
    PHASE(req, P_RESP | P_CHUNK | P_LOG);
    const sl_request_t *r = R(req);
    if (r->prompt_tokens < 0 && r->completion_tokens < 0)
        return SLUICE_ENOTFOUND;
    if (prompt_tokens != NULL)
        *prompt_tokens = r->prompt_tokens > 0 ? r->prompt_tokens : 0;
    if (completion_tokens != NULL)
        *completion_tokens =
            r->completion_tokens > 0 ? r->completion_tokens : 0;
    return SLUICE_OK;
}

/* ---- since 1.1: the whole request and answer, stream answers, log ---- */

static int
h_request_json(sluice_req_t *req, const char **json, size_t *len) {
    PHASE(req, P_REQUEST_ANY);
    cJSON *tree = request_tree(req);
    if (tree == NULL || json == NULL)
        return SLUICE_ENOTFOUND;
    char *s = cJSON_PrintUnformatted(tree);
    if (s == NULL)
        return SLUICE_ENOMEM;
    char *copy = sl_arena_strndup(A(req), s, strlen(s));
    free(s);
    if (copy == NULL)
        return SLUICE_ENOMEM;
    return out_str(copy, json, len);
}

/* The JSON a hook before this one may have changed, printed; else raw. */
static int
body_out(sluice_req_t *req, cJSON *j, int dirty, const char *raw,
         size_t rawlen, const char **body, size_t *len) {
    if (dirty && j != NULL) {
        char *s = cJSON_PrintUnformatted(j);
        char *copy = s ? sl_arena_strndup(A(req), s, strlen(s)) : NULL;
        free(s);
        if (copy == NULL)
            return SLUICE_ENOMEM;
        return out_str(copy, body, len);
    }
    if (raw == NULL)
        return SLUICE_ENOTFOUND;
    /* The raw bytes are not NUL-terminated where they sit. */
    char *copy = sl_arena_strndup(A(req), raw, rawlen);
    if (copy == NULL)
        return SLUICE_ENOMEM;
    *body = copy;
    if (len != NULL)
        *len = rawlen;
    return SLUICE_OK;
}

static int
h_response_body(sluice_req_t *req, const char **body, size_t *len) {
    PHASE(req, P_RESP | P_CHUNK);
    sl_pipe_t *p = req->pipe;
    if (body == NULL)
        return SLUICE_EINVAL;
    if (req->phase == SLUICE_PHASE_RESPONSE)
        return body_out(req, p->resp_json, p->resp_dirty, p->resp_body,
                        p->resp_len, body, len);
    return body_out(req, p->chunk_json, p->chunk_dirty, p->chunk,
                    p->chunk_len, body, len);
}

static int
sse_ok(const char *sse, size_t len) {
    return (len >= 5 && memcmp(sse, "data:", 5) == 0) ||
           memmem(sse, len, "\ndata:", 6) != NULL;
}

static int
h_respond_stream(sluice_req_t *req, int status, const char *sse, size_t len) {
    PHASE(req, P_REQ);
    if (status < 200 || status > 599 || sse == NULL || len == 0 ||
        !sse_ok(sse, len))
        return SLUICE_EINVAL;
    return set_answer(req, status, sse, len, 1, 0);
}

static int
h_respond_answer(sluice_req_t *req, int status, const char *json,
                 size_t len) {
    PHASE(req, P_REQ);
    int rc = h_respond(req, status, json, len);
    if (rc == SLUICE_OK)
        req->pipe->answer_replay = 1;
    return rc;
}

static int
h_respond_kept(sluice_req_t *req, int status, const char *body, size_t len,
               int stream) {
    PHASE(req, P_REQ);
    if (status < 200 || status > 599 || body == NULL || len == 0 ||
        (stream && !sse_ok(body, len)))
        return SLUICE_EINVAL;
    /* Flags as respond_stream() and respond_answer() set them. */
    return set_answer(req, status, body, len, stream != 0, stream == 0);
}

static int
h_response_complete(sluice_req_t *req) {
    PHASE(req, P_LOG);
    const sl_request_t *r = R(req);
    if (r->client_gone || !r->responded)
        return 0;
    return r->streaming ? (r->stream_ok ? 1 : 0) : 1;
}

static int
log_key_ok(const char *k) {
    static const char *const core[] = {
        "time", "method", "path", "route", "model", "provider",
        "target_model", "status", "stream", "latency_ms", "upstream_ms",
        "prompt_tokens", "completion_tokens", "bytes_in", "bytes_out",
        "error", "consumer", NULL};
    size_t n = strlen(k);
    if (n == 0 || n > 32)
        return 0;
    for (const char *c = k; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
              *c == '_'))
            return 0;
    for (size_t i = 0; core[i] != NULL; i++)
        if (core[i][0] == k[0] && strcmp(k, core[i]) == 0)
            return 0;
    return 1;
}

/* Bytes a JSON string must escape (sl_json_escape's set). */
static const unsigned char needs_escape[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00.. */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* ..0x1f */
    ['"'] = 1, ['\\'] = 1, [0x7f] = 1};

/* Appends s[0..n) at *o. */
static void
put_span(char **o, const char *s, size_t n) {
    memcpy(*o, s, n);
    *o += n;
}

static int
h_log_field_set(sluice_req_t *req, const char *key, const char *value) {
    PHASE(req, P_REQ | P_RESP | P_CHUNK);
    sl_pipe_t *p = req->pipe;
    if (key == NULL || value == NULL || !log_key_ok(key))
        return SLUICE_EINVAL;
    size_t vn = strnlen(value, 257), plain = 0;
    if (vn > 256)
        return SLUICE_EINVAL;
    /* Values are mostly plain (a cache key, "hit"): copied as they are. */
    while (plain < vn && !needs_escape[(unsigned char)value[plain]])
        plain++;
    size_t esc = plain == vn ? vn : sl_json_escape(NULL, 0, 0, value, vn);
    char *v = sl_arena_alloc(A(req), esc + 1);
    if (v == NULL)
        return SLUICE_ENOMEM;
    if (plain == vn) {
        memcpy(v, value, vn);
        v[vn] = '\0';
    } else {
        sl_json_escape(v, esc + 1, 0, value, vn);
        v[esc] = '\0';
    }
    size_t kn = strlen(key), slot = p->nlog, total = kn + esc + 6;
    size_t klen[SL_PIPE_MAX_LOG_FIELDS], vlen[SL_PIPE_MAX_LOG_FIELDS];
    for (size_t i = 0; i < p->nlog; i++) {
        klen[i] = strlen(p->lname[i]);
        vlen[i] = strlen(p->lvalue[i]);
        if (klen[i] == kn && memcmp(p->lname[i], key, kn) == 0)
            slot = i;
        else
            total += klen[i] + vlen[i] + 6;
    }
    if (slot == SL_PIPE_MAX_LOG_FIELDS || total > SL_PIPE_LOG_BYTES)
        return SLUICE_ETOOBIG;
    const char *k = slot < p->nlog ? p->lname[slot]
                                   : sl_arena_strndup(A(req), key, kn);
    char *line = sl_arena_alloc(A(req), total + 1), *o = line;
    if (k == NULL || line == NULL)
        return SLUICE_ENOMEM;
    p->lname[slot] = k;
    p->lvalue[slot] = v;
    klen[slot] = kn;
    vlen[slot] = esc;
    if (slot == p->nlog)
        p->nlog++;
    for (size_t i = 0; i < p->nlog; i++) {
        put_span(&o, ",\"", 2);
        put_span(&o, p->lname[i], klen[i]);
        put_span(&o, "\":\"", 3);
        put_span(&o, p->lvalue[i], vlen[i]);
        put_span(&o, "\"", 1);
    }
    *o = '\0';
    R(req)->plugin_log = line;
    return SLUICE_OK;
}

static const sluice_host_t host = {
    .size = sizeof(sluice_host_t),
    .abi_major = SLUICE_ABI_MAJOR,
    .abi_minor = SLUICE_ABI_MINOR,
    .gateway_version = PACKAGE_VERSION,
    .config_string = h_config_string,
    .config_int = h_config_int,
    .config_number = h_config_number,
    .config_bool = h_config_bool,
    .config_list_count = h_config_list_count,
    .config_list_item = h_config_list_item,
    .config_json = h_config_json,
    .request_method = h_request_method,
    .request_path = h_request_path,
    .request_header = h_request_header,
    .response_header_set = h_response_header_set,
    .model = h_model,
    .stream = h_stream,
    .message_count = h_message_count,
    .message_role = h_message_role,
    .message_text = h_message_text,
    .message_set_text = h_message_set_text,
    .response_status = h_response_status,
    .response_text = h_response_text,
    .response_set_text = h_response_set_text,
    .delta_text = h_delta_text,
    .delta_set_text = h_delta_set_text,
    .respond = h_respond,
    .consumer = h_consumer,
    .consumer_set = h_consumer_set,
    .alloc = h_alloc,
    .state_get = h_state_get,
    .state_set = h_state_set,
    .kv_get = h_kv_get,
    .kv_set = h_kv_set,
    .kv_delete = h_kv_delete,
    .kv_incr = h_kv_incr,
    .log = h_log,
    .metric_add = h_metric_add,
    .phase = h_phase,
    .instance_name = h_instance_name,
    .keys_get = h_keys_get,
    .client_addr = h_client_addr,
    .attr_set = h_attr_set,
    .attr_get = h_attr_get,
    .request_max_tokens = h_request_max_tokens,
    .usage = h_usage,
    .request_json = h_request_json,
    .response_body = h_response_body,
    .respond_stream = h_respond_stream,
    .response_complete = h_response_complete,
    .log_field_set = h_log_field_set,
    .respond_answer = h_respond_answer,
    .kv_handle = h_kv_handle,
    .kv_handle_set = h_kv_handle_set,
    .keys_version = h_keys_version,
    .response_header_prepare = h_response_header_prepare,
    .response_header_set_prepared = h_response_header_set_prepared,
    .respond_kept = h_respond_kept,
};

const sluice_host_t *
sl_plugin_host(void) {
    return &host;
}
