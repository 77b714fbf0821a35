/* The request log's record: encoded on the worker, rendered on read; see
 * reqlog_record.h. */
#include "reqlog_record.h"
#include "error.h"
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the stored form ----
 *
 * REC_MAGIC, the fixed numbers (host order: the store is never moved
 * between machines of another byte order), then the strings of
 * sl_reqlog_rec_t in the order of rec_strs(), each a 4-byte length
 * (NULL_LEN for null) and its bytes, then the plugins and the attributes,
 * each a 4-byte count and that many strings. */
#define REC_MAGIC 0x01
#define NULL_LEN 0xffffffffu

typedef struct {
    int64_t ts_us, latency_us, upstream_us, ttft_us, cost_micros;
    int64_t prompt, completion, total, cached, reasoning;
    int64_t attempts, bytes_in, bytes_out;
    int32_t status, stream;
} fixed_t;

enum { NSTR = 17 };

/* The record's strings in their stored order. */
static void
rec_strs(sl_reqlog_rec_t *rec, sl_rstr_t *s[NSTR]) {
    sl_rstr_t *all[NSTR] = {
        &rec->trace_id,       &rec->span_id,       &rec->parent_id,
        &rec->method,         &rec->path,          &rec->route,
        &rec->consumer,       &rec->model,         &rec->provider,
        &rec->target_model,   &rec->error,         &rec->verdict_plugin,
        &rec->verdict_action, &rec->verdict_phase, &rec->plugin_log,
        &rec->request_body,   &rec->response_text};
    memcpy(s, all, sizeof(all));
}

static sl_rstr_t
cstr(const char *s) {
    return (sl_rstr_t){s, s != NULL ? (uint32_t)strlen(s) : 0};
}

static sl_rstr_t
nstr(const char *s, size_t n) {
    return (sl_rstr_t){s, s != NULL ? (uint32_t)n : 0};
}

static unsigned char *
put_str(unsigned char *p, sl_rstr_t s) {
    uint32_t n = s.p != NULL ? s.len : NULL_LEN;
    memcpy(p, &n, 4);
    p += 4;
    if (s.p != NULL && s.len > 0) {
        memcpy(p, s.p, s.len);
        p += s.len;
    }
    return p;
}

int
sl_reqlog_encode(sl_store_batch_t *b, const unsigned char *key, size_t klen,
                 const sl_request_t *r, int64_t ts_us, uint64_t now_us) {
    const sl_pipe_t *pp = r->pipe;
    int verdict = pp != NULL && pp->verdict_plugin != NULL;
    sl_rstr_t v[NSTR] = {
        /* In the order of rec_strs(). */
        cstr(r->trace_id[0] ? r->trace_id : NULL),
        cstr(r->span_id[0] ? r->span_id : NULL),
        cstr(r->parent_id[0] ? r->parent_id : NULL),
        nstr(r->http.method_str, r->http.method_len),
        nstr(r->http.path, r->http.path_len),
        cstr(r->route != NULL ? r->route->path : NULL),
        cstr(r->consumer),
        cstr(r->model),
        cstr(r->provider),
        cstr(r->target_model),
        cstr(r->error_code),
        cstr(verdict ? pp->verdict_plugin : NULL),
        cstr(verdict ? pp->verdict : NULL),
        cstr(verdict ? sl_pipeline_phase_name(pp->verdict_phase) : NULL),
        /* Fields plugins log: already JSON members, kept apart at render
         * so that none can shadow a field of ours. */
        cstr(r->plugin_log != NULL && r->plugin_log[0] == ','
                 ? r->plugin_log + 1
                 : NULL),
        nstr(r->log_up_body, r->log_up_body_len),
        nstr(r->log_answer, r->log_answer_len),
    };
    if (r->log_stream_text != NULL) {
        struct evbuffer *t = r->log_stream_text;
        size_t n = evbuffer_get_length(t),
               cap = (size_t)r->cfg->reqlog_max_body_bytes;
        const char *p = (const char *)evbuffer_pullup(t, -1);
        if (n > cap) {
            n = cap;
            while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80)
                n--; /* p[n] continues a character: cut before it */
        }
        v[NSTR - 1] = nstr(p != NULL ? p : "", n);
    }
    size_t size = 1 + sizeof(fixed_t) + 4 * NSTR + 8;
    for (int i = 0; i < NSTR; i++)
        size += v[i].len;
    size_t np = r->route != NULL ? r->route->nplugins : 0;
    size_t na = pp != NULL ? pp->nattrs : 0;
    for (size_t i = 0; i < np; i++)
        size += 4 + strlen(r->route->plugins[i]);
    for (size_t i = 0; i < na; i++)
        size += 8 + strlen(pp->aname[i]) + strlen(pp->avalue[i]);

    unsigned char *p = sl_store_batch_add(b, key, klen, size);
    if (p == NULL)
        return SL_ENOMEM;
    fixed_t f = {
        .ts_us = ts_us,
        .latency_us = r->t_start ? (int64_t)(now_us - r->t_start) : 0,
        .upstream_us = (int64_t)r->upstream_us,
        .ttft_us =
            r->streaming && r->t_start != 0 && r->t_first_byte > r->t_start
                ? (int64_t)(r->t_first_byte - r->t_start)
                : -1,
        .cost_micros = r->cost_micros >= 0 ? r->cost_micros : -1,
        .prompt = r->prompt_tokens,
        .completion = r->completion_tokens,
        .total = r->total_tokens,
        .cached = r->cached_tokens,
        .reasoning = r->reasoning_tokens,
        .attempts = r->attempts,
        .bytes_in = (long)r->bytes_in,
        .bytes_out = (long)r->bytes_out,
        .status = r->status,
        .stream = r->streaming != 0,
    };
    *p++ = REC_MAGIC;
    memcpy(p, &f, sizeof(f));
    p += sizeof(f);
    for (int i = 0; i < NSTR; i++)
        p = put_str(p, v[i]);
    uint32_t n32 = (uint32_t)np;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < np; i++)
        p = put_str(p, cstr(r->route->plugins[i]));
    n32 = (uint32_t)na;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < na; i++) {
        p = put_str(p, cstr(pp->aname[i]));
        p = put_str(p, cstr(pp->avalue[i]));
    }
    return 0;
}

/* ---- reading it back ---- */

typedef struct {
    const unsigned char *p, *end;
} rd_t;

static int
get_str(rd_t *d, sl_rstr_t *out) {
    uint32_t n;
    if (d->end - d->p < 4)
        return -1;
    memcpy(&n, d->p, 4);
    d->p += 4;
    if (n == NULL_LEN) {
        *out = (sl_rstr_t){NULL, 0};
        return 0;
    }
    if ((size_t)(d->end - d->p) < n)
        return -1;
    *out = (sl_rstr_t){(const char *)d->p, n};
    d->p += n;
    return 0;
}

/* Skips count strings; the start of the first in *start. */
static int
get_list(rd_t *d, uint32_t *count, const unsigned char **start, uint32_t per) {
    if (d->end - d->p < 4)
        return -1;
    memcpy(count, d->p, 4);
    d->p += 4;
    *start = d->p;
    sl_rstr_t skip;
    for (uint64_t i = 0; i < (uint64_t)*count * per; i++)
        if (get_str(d, &skip) != 0)
            return -1;
    return 0;
}

int
sl_reqlog_decode(const void *val, size_t vlen, sl_reqlog_rec_t *out) {
    const unsigned char *v = val;
    fixed_t f;
    if (vlen < 1 + sizeof(f) || v[0] != REC_MAGIC)
        return SL_EINVAL;
    memcpy(&f, v + 1, sizeof(f));
    memset(out, 0, sizeof(*out));
    out->ts_us = f.ts_us;
    out->latency_us = f.latency_us;
    out->upstream_us = f.upstream_us;
    out->ttft_us = f.ttft_us;
    out->cost_micros = f.cost_micros;
    out->prompt = f.prompt;
    out->completion = f.completion;
    out->total = f.total;
    out->cached = f.cached;
    out->reasoning = f.reasoning;
    out->attempts = f.attempts;
    out->bytes_in = f.bytes_in;
    out->bytes_out = f.bytes_out;
    out->status = f.status;
    out->stream = f.stream;
    rd_t d = {v + 1 + sizeof(f), v + vlen};
    out->end = v + vlen;
    sl_rstr_t *s[NSTR];
    rec_strs(out, s);
    for (int i = 0; i < NSTR; i++)
        if (get_str(&d, s[i]) != 0)
            return SL_EINVAL;
    if (get_list(&d, &out->nplugins, &out->plugins, 1) != 0 ||
        get_list(&d, &out->nattrs, &out->attrs, 2) != 0)
        return SL_EINVAL;
    return 0;
}

/* ---- JSON ---- */

/* A growing output buffer that starts on the stack. */
typedef struct {
    char *p;
    size_t len, cap;
    int heap, failed;
    char first[2048];
} jbuf_t;

static void
jb_init(jbuf_t *b) {
    b->p = b->first;
    b->len = 0;
    b->cap = sizeof(b->first);
    b->heap = b->failed = 0;
}

static int
jb_reserve(jbuf_t *b, size_t more) {
    if (b->failed)
        return -1;
    if (b->len + more + 1 <= b->cap)
        return 0;
    size_t cap = (b->len + more + 1) * 2;
    char *p = b->heap ? realloc(b->p, cap) : malloc(cap);
    if (p == NULL) {
        b->failed = 1;
        return -1;
    }
    if (!b->heap)
        memcpy(p, b->p, b->len);
    b->p = p;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

static void
jb_add(jbuf_t *b, const char *s, size_t n) {
    if (jb_reserve(b, n) == 0) {
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = '\0';
    }
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t need;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4;
    else
        return 0;
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) ||
        (c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
        return 0; /* overlong, surrogate, or past U+10FFFF */
    return need;
}

/* A JSON string of s; bytes that are not UTF-8 become U+FFFD so that the
 * record stays valid JSON whatever a client sent. */
static void
jb_str(jbuf_t *b, const char *s, size_t n) {
    if (s == NULL) {
        jb_add(b, "null", 4);
        return;
    }
    jb_add(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n) {
            size_t l = utf8_len((const unsigned char *)s + run, n - run);
            if (l == 0)
                break;
            run += l;
        }
        if (run > i) {
            size_t need = sl_json_escape(NULL, 0, 0, s + i, run - i);
            if (jb_reserve(b, need) == 0) {
                sl_json_escape(b->p, b->cap, b->len, s + i, run - i);
                b->len += need;
            }
            i = run;
        }
        if (i < n) {
            jb_add(b, "\\ufffd", 6);
            i++;
        }
    }
    jb_add(b, "\"", 1);
}

/* Appends a string literal: no format parsing on the hot path. */
#define JB_LIT(b, lit) jb_add((b), (lit), sizeof(lit) - 1)

static void
jb_u64(jbuf_t *b, uint64_t v) {
    char tmp[24];
    size_t n = sizeof(tmp);
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    jb_add(b, tmp + n, sizeof(tmp) - n);
}

/* ,"key": */
static void
jb_key(jbuf_t *b, const char *key) {
    JB_LIT(b, ",\"");
    jb_add(b, key, strlen(key));
    JB_LIT(b, "\":");
}

static void
jb_rstr(jbuf_t *b, sl_rstr_t s) {
    jb_str(b, s.p, s.len);
}

static void
jb_key_str(jbuf_t *b, const char *key, sl_rstr_t v) {
    jb_key(b, key);
    jb_rstr(b, v);
}

static void
jb_key_num(jbuf_t *b, const char *key, int64_t v) {
    jb_key(b, key);
    if (v < 0)
        JB_LIT(b, "null");
    else
        jb_u64(b, (uint64_t)v);
}

/* Microseconds as milliseconds with three decimals, or null when < 0. */
static void
jb_key_ms(jbuf_t *b, const char *key, int64_t us) {
    jb_key(b, key);
    if (us < 0) {
        JB_LIT(b, "null");
        return;
    }
    char frac[4] = {(char)('0' + us / 100 % 10), (char)('0' + us / 10 % 10),
                    (char)('0' + us % 10), 0};
    jb_u64(b, (uint64_t)(us / 1000));
    JB_LIT(b, ".");
    jb_add(b, frac, 3);
}

static void
render(jbuf_t *b, const sl_reqlog_rec_t *rec) {
    int64_t now_us = rec->ts_us;
    /* The date part changes once a second: format it once per second. */
    static __thread time_t stamp_sec = -1;
    static __thread char stamp[32];
    static __thread size_t stamp_len;
    time_t sec = (time_t)(now_us / 1000000);
    if (sec != stamp_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        stamp_len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        stamp_sec = sec;
    }
    char micro[8];
    int64_t us = now_us % 1000000;
    for (int i = 6; i >= 1; i--, us /= 10)
        micro[i] = (char)('0' + us % 10);
    micro[0] = '.';
    micro[7] = 'Z';
    JB_LIT(b, "{\"time\":\"");
    jb_add(b, stamp, stamp_len);
    jb_add(b, micro, 8);
    JB_LIT(b, "\",\"ts_us\":");
    jb_u64(b, (uint64_t)now_us);
    jb_key_str(b, "trace_id", rec->trace_id);
    jb_key_str(b, "span_id", rec->span_id);
    jb_key_str(b, "parent_span_id", rec->parent_id);
    jb_key_str(b, "method", rec->method);
    jb_key_str(b, "path", rec->path);
    jb_key_str(b, "route", rec->route);
    jb_key_str(b, "consumer", rec->consumer);
    jb_key_str(b, "model", rec->model);
    jb_key_str(b, "provider", rec->provider);
    jb_key_str(b, "target_model", rec->target_model);
    jb_key_num(b, "status", rec->status);
    if (rec->stream)
        JB_LIT(b, ",\"stream\":true");
    else
        JB_LIT(b, ",\"stream\":false");
    jb_key_ms(b, "latency_ms", rec->latency_us);
    jb_key_ms(b, "upstream_ms", rec->upstream_us);
    jb_key_ms(b, "ttft_ms", rec->ttft_us);
    jb_key_num(b, "prompt_tokens", rec->prompt);
    jb_key_num(b, "completion_tokens", rec->completion);
    jb_key_num(b, "total_tokens", rec->total);
    jb_key_num(b, "cached_tokens", rec->cached);
    jb_key_num(b, "reasoning_tokens", rec->reasoning);
    /* Exact micro-dollars, printed without a float's rounding. */
    jb_key(b, "cost");
    if (rec->cost_micros >= 0) {
        char frac[6];
        int64_t c = rec->cost_micros % 1000000;
        for (int i = 5; i >= 0; i--, c /= 10)
            frac[i] = (char)('0' + c % 10);
        jb_u64(b, (uint64_t)(rec->cost_micros / 1000000));
        JB_LIT(b, ".");
        jb_add(b, frac, 6);
    } else {
        JB_LIT(b, "null");
    }
    jb_key_num(b, "attempts", rec->attempts);
    jb_key_num(b, "bytes_in", rec->bytes_in);
    jb_key_num(b, "bytes_out", rec->bytes_out);
    jb_key_str(b, "error", rec->error);
    /* Both lists were checked by sl_reqlog_decode. */
    rd_t d = {rec->plugins, rec->end};
    sl_rstr_t s = {NULL, 0}, t = {NULL, 0};
    if (rec->nplugins > 0) {
        JB_LIT(b, ",\"plugins\":[");
        for (uint32_t i = 0; i < rec->nplugins; i++) {
            get_str(&d, &s);
            if (i > 0)
                jb_add(b, ",", 1);
            jb_rstr(b, s);
        }
        jb_add(b, "]", 1);
    }
    if (rec->verdict_plugin.p != NULL) {
        JB_LIT(b, ",\"verdict\":{\"plugin\":");
        jb_rstr(b, rec->verdict_plugin);
        JB_LIT(b, ",\"action\":");
        jb_str(b, rec->verdict_action.p ? rec->verdict_action.p : "",
               rec->verdict_action.len);
        JB_LIT(b, ",\"phase\":");
        jb_str(b, rec->verdict_phase.p ? rec->verdict_phase.p : "",
               rec->verdict_phase.len);
        jb_add(b, "}", 1);
    }
    if (rec->nattrs > 0) {
        /* What the plugins told each other (a key id, its limits). */
        d = (rd_t){rec->attrs, rec->end};
        JB_LIT(b, ",\"attributes\":{");
        for (uint32_t i = 0; i < rec->nattrs; i++) {
            get_str(&d, &s);
            get_str(&d, &t);
            if (i > 0)
                jb_add(b, ",", 1);
            jb_rstr(b, s);
            jb_add(b, ":", 1);
            jb_rstr(b, t);
        }
        jb_add(b, "}", 1);
    }
    if (rec->plugin_log.p != NULL) {
        JB_LIT(b, ",\"plugin_fields\":{");
        jb_add(b, rec->plugin_log.p, rec->plugin_log.len);
        jb_add(b, "}", 1);
    }
    if (rec->request_body.p != NULL) {
        JB_LIT(b, ",\"request_body\":");
        jb_rstr(b, rec->request_body);
    }
    if (rec->response_text.p != NULL) {
        JB_LIT(b, ",\"response_text\":");
        jb_rstr(b, rec->response_text);
    }
    jb_add(b, "}", 1);
}

char *
sl_reqlog_render(const void *val, size_t vlen, size_t *len) {
    const char *v = val;
    if (vlen > 0 && v[0] == '{') { /* written as JSON by an older version */
        char *out = strndup(v, vlen);
        if (out != NULL && len != NULL)
            *len = vlen;
        return out;
    }
    sl_reqlog_rec_t rec;
    if (sl_reqlog_decode(val, vlen, &rec) != 0)
        return NULL;
    jbuf_t b;
    jb_init(&b);
    render(&b, &rec);
    if (b.failed) {
        if (b.heap)
            free(b.p);
        return NULL;
    }
    char *out = b.heap ? b.p : strndup(b.p, b.len);
    if (out != NULL && len != NULL)
        *len = b.len;
    return out;
}
