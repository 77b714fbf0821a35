/* The request log and the trace context; see requestlog.h. */
#include "requestlog.h"
#include "clock.h"
#include "error.h"
#include "pipeline.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* ---- trace context ---- */

static int
hexval(char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1; /* upper case is invalid in traceparent */
}

/* n lowercase hex digits, not all zero, copied into out (NUL-ended). */
static int
hex_id(const char *s, size_t n, char *out) {
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        if (hexval(s[i]) < 0)
            return SL_EINVAL;
        nonzero |= s[i] != '0';
        out[i] = s[i];
    }
    out[n] = '\0';
    return nonzero ? 0 : SL_EINVAL;
}

int
sl_trace_parse(const char *v, size_t len, char trace_id[33], char parent_id[17],
               unsigned char *flags) {
    /* Surrounding white space is allowed by the header's grammar. */
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    /* vv-<32>-<16>-ff */
    if (len < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return SL_EINVAL;
    int v0 = hexval(v[0]), v1 = hexval(v[1]);
    if (v0 < 0 || v1 < 0 || (v0 == 15 && v1 == 15))
        return SL_EINVAL;
    int version = v0 * 16 + v1;
    /* Version 00 has exactly four fields; a later one may append more. */
    if ((version == 0 && len != 55) || (len > 55 && v[55] != '-'))
        return SL_EINVAL;
    int f0 = hexval(v[53]), f1 = hexval(v[54]);
    if (f0 < 0 || f1 < 0)
        return SL_EINVAL;
    char t[33], p[17];
    if (hex_id(v + 3, 32, t) != 0 || hex_id(v + 36, 16, p) != 0)
        return SL_EINVAL;
    memcpy(trace_id, t, 33);
    memcpy(parent_id, p, 17);
    *flags = (unsigned char)(f0 * 16 + f1);
    return 0;
}

static void
random_hex(sl_worker_t *w, char *out, size_t n) {
    static const char hex[] = "0123456789abcdef";
    for (;;) {
        int nonzero = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint32_t x = sl_worker_random(w);
            for (size_t j = 0; j < 8 && i + j < n; j++, x >>= 4) {
                out[i + j] = hex[x & 15];
                nonzero |= (x & 15) != 0;
            }
        }
        out[n] = '\0';
        if (nonzero) /* all zeros is the invalid id */
            return;
    }
}

void
sl_trace_begin(sl_request_t *r) {
    const sl_http_header_t *h = sl_http_header_find(&r->http, "traceparent");
    if (h == NULL || sl_trace_parse(h->value, h->value_len, r->trace_id,
                                    r->parent_id, &r->trace_flags) != 0) {
        /* None, or not one we can trust: a trace of our own, sampled. */
        random_hex(r->w, r->trace_id, 32);
        r->parent_id[0] = '\0';
        r->trace_flags = 1;
    }
    random_hex(r->w, r->span_id, 16);
}

/* A body for the log: an arena copy of at most max_body_bytes, cut at a
 * character boundary. */
static const char *
capture(sl_request_t *r, const char *s, size_t len, size_t *out_len) {
    size_t cap = (size_t)r->cfg->reqlog_max_body_bytes;
    if (len > cap) {
        len = cap;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80)
            len--; /* s[len] continues a character: cut before it */
    }
    char *copy = sl_arena_strndup(r->arena, s, len);
    *out_len = copy != NULL ? len : 0;
    return copy;
}

const sl_headers_t *
sl_reqlog_upstream(sl_request_t *r, const sl_headers_t *base,
                   const char *body, size_t len) {
    if (r->cfg->reqlog_enabled && r->cfg->reqlog_capture_bodies && body != NULL)
        r->log_up_body = capture(r, body, len, &r->log_up_body_len);
    if (r->trace_id[0] == '\0')
        return base;
    /* The client only reads the list: a node of our own in front of the
     * shared one adds the header without copying or changing the rest. */
    sl_headers_t *node = sl_arena_alloc(r->arena, sizeof(*node));
    char *line = sl_arena_printf(r->arena, "traceparent: 00-%s-%s-%02x\r\n",
                                 r->trace_id, r->span_id, r->trace_flags);
    if (node == NULL || line == NULL)
        return base;
    node->data = line;
    node->len = strlen(line);
    node->next = base;
    /* tracestate goes along with the trace it belongs to, as it came (the
     * W3C spec lets a participant that adds nothing pass it unchanged);
     * with a trace of our own it would describe someone else's. */
    const sl_http_header_t *ts =
        r->parent_id[0] != '\0' ? sl_http_header_find(&r->http, "tracestate")
                                : NULL;
    if (ts != NULL && ts->value_len > 0 && ts->value_len <= 512) {
        sl_headers_t *tn = sl_arena_alloc(r->arena, sizeof(*tn));
        char *tl = sl_arena_printf(r->arena, "tracestate: %.*s\r\n",
                                   (int)ts->value_len, ts->value);
        if (tn != NULL && tl != NULL) {
            tn->data = tl;
            tn->len = strlen(tl);
            tn->next = node;
            return tn;
        }
    }
    return node;
}

/* ---- body capture ---- */

static int
capturing(const sl_request_t *r) {
    return r->cfg != NULL && r->cfg->reqlog_enabled &&
           r->cfg->reqlog_capture_bodies && !r->w->admin;
}

void
sl_reqlog_answer(sl_request_t *r, const char *body, size_t len) {
    if (!capturing(r) || r->log_answer != NULL || body == NULL)
        return;
    /* A chat completion's text is what a reader wants; anything else
     * (an error, embeddings) is kept as it was sent. */
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *ch =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ch, "message"), "content");
    if (cJSON_IsString(c))
        r->log_answer = capture(r, c->valuestring, strlen(c->valuestring),
                                &r->log_answer_len);
    else
        r->log_answer = capture(r, body, len, &r->log_answer_len);
    cJSON_Delete(j);
}

static void
free_evbuffer(void *p) {
    evbuffer_free(p);
}

void
sl_reqlog_stream_event(sl_request_t *r, const char *data, size_t len) {
    if (!capturing(r) || len < 2 || data[0] != '{')
        return;
    struct evbuffer *b = r->log_stream_text;
    if (b != NULL &&
        evbuffer_get_length(b) >= (size_t)r->cfg->reqlog_max_body_bytes)
        return;
    cJSON *j = cJSON_ParseWithLength(data, len);
    const cJSON *ch =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(ch, "delta"), "content");
    if (cJSON_IsString(c) && c->valuestring[0] != '\0') {
        if (b == NULL) {
            b = evbuffer_new();
            if (b != NULL &&
                sl_arena_cleanup_add(r->arena, free_evbuffer, b) != 0) {
                evbuffer_free(b);
                b = NULL;
            }
            r->log_stream_text = b;
        }
        if (b != NULL)
            evbuffer_add(b, c->valuestring, strlen(c->valuestring));
    }
    cJSON_Delete(j);
}

/* ---- the record ---- */

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

static void jb_printf(jbuf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
jb_printf(jbuf_t *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        jb_add(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
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
jb_key_str(jbuf_t *b, const char *key, const char *v) {
    jb_key(b, key);
    jb_str(b, v, v != NULL ? strlen(v) : 0);
}

static void
jb_key_num(jbuf_t *b, const char *key, long v) {
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

void
sl_reqlog_key(unsigned char key[SL_REQLOG_KEY_LEN], int64_t now_us,
              unsigned worker, uint32_t seq) {
    uint64_t t = (uint64_t)now_us;
    for (int i = 0; i < 8; i++)
        key[i] = (unsigned char)(t >> (56 - 8 * i));
    key[8] = (unsigned char)(worker >> 8);
    key[9] = (unsigned char)worker;
    for (int i = 0; i < 4; i++)
        key[10 + i] = (unsigned char)(seq >> (24 - 8 * i));
}

int64_t
sl_reqlog_key_time(const unsigned char *key, size_t klen) {
    uint64_t t = 0;
    for (size_t i = 0; i < 8 && i < klen; i++)
        t = t << 8 | key[i];
    return (int64_t)t;
}

char *
sl_reqlog_format(const sl_request_t *r, int64_t now_us, size_t *len) {
    jbuf_t b;
    jb_init(&b);
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
    JB_LIT(&b, "{\"time\":\"");
    jb_add(&b, stamp, stamp_len);
    jb_add(&b, micro, 8);
    JB_LIT(&b, "\",\"ts_us\":");
    jb_u64(&b, (uint64_t)now_us);
    jb_key_str(&b, "trace_id", r->trace_id[0] ? r->trace_id : NULL);
    jb_key_str(&b, "span_id", r->span_id[0] ? r->span_id : NULL);
    jb_key_str(&b, "parent_span_id", r->parent_id[0] ? r->parent_id : NULL);
    JB_LIT(&b, ",\"method\":");
    jb_str(&b, r->http.method_str, r->http.method_str ? r->http.method_len : 0);
    JB_LIT(&b, ",\"path\":");
    jb_str(&b, r->http.path, r->http.path ? r->http.path_len : 0);
    jb_key_str(&b, "route", r->route ? r->route->path : NULL);
    jb_key_str(&b, "consumer", r->consumer);
    jb_key_str(&b, "model", r->model);
    jb_key_str(&b, "provider", r->provider);
    jb_key_str(&b, "target_model", r->target_model);
    jb_key_num(&b, "status", r->status);
    uint64_t now = sl_now_us();
    if (r->streaming)
        JB_LIT(&b, ",\"stream\":true");
    else
        JB_LIT(&b, ",\"stream\":false");
    jb_key_ms(&b, "latency_ms", r->t_start ? (int64_t)(now - r->t_start) : 0);
    jb_key_ms(&b, "upstream_ms", (int64_t)r->upstream_us);
    jb_key_ms(&b, "ttft_ms",
              r->streaming && r->t_start != 0 && r->t_first_byte > r->t_start
                  ? (int64_t)(r->t_first_byte - r->t_start)
                  : -1);
    jb_key_num(&b, "prompt_tokens", r->prompt_tokens);
    jb_key_num(&b, "completion_tokens", r->completion_tokens);
    jb_key_num(&b, "total_tokens", r->total_tokens);
    jb_key_num(&b, "cached_tokens", r->cached_tokens);
    jb_key_num(&b, "reasoning_tokens", r->reasoning_tokens);
    /* Priced in the log phase, before this record is made; exact
     * micro-dollars, printed without a float's rounding. */
    if (r->cost_micros >= 0)
        jb_printf(&b, ",\"cost\":%lld.%06lld",
                  (long long)(r->cost_micros / 1000000),
                  (long long)(r->cost_micros % 1000000));
    else
        JB_LIT(&b, ",\"cost\":null");
    jb_key_num(&b, "attempts", r->attempts);
    jb_key_num(&b, "bytes_in", (long)r->bytes_in);
    jb_key_num(&b, "bytes_out", (long)r->bytes_out);
    jb_key_str(&b, "error", r->error_code);
    if (r->route != NULL && r->route->nplugins > 0) {
        JB_LIT(&b, ",\"plugins\":[");
        for (size_t i = 0; i < r->route->nplugins; i++) {
            if (i > 0)
                jb_add(&b, ",", 1);
            jb_str(&b, r->route->plugins[i], strlen(r->route->plugins[i]));
        }
        jb_add(&b, "]", 1);
    }
    const sl_pipe_t *pp = r->pipe;
    if (pp != NULL && pp->verdict_plugin != NULL) {
        JB_LIT(&b, ",\"verdict\":{\"plugin\":");
        jb_str(&b, pp->verdict_plugin, strlen(pp->verdict_plugin));
        jb_printf(&b, ",\"action\":\"%s\",\"phase\":\"%s\"}", pp->verdict,
                  sl_pipeline_phase_name(pp->verdict_phase));
    }
    if (pp != NULL && pp->nattrs > 0) {
        /* What the plugins told each other (a key id, its limits). */
        JB_LIT(&b, ",\"attributes\":{");
        for (size_t i = 0; i < pp->nattrs; i++) {
            if (i > 0)
                jb_add(&b, ",", 1);
            jb_str(&b, pp->aname[i], strlen(pp->aname[i]));
            jb_add(&b, ":", 1);
            jb_str(&b, pp->avalue[i], strlen(pp->avalue[i]));
        }
        jb_add(&b, "}", 1);
    }
    if (r->plugin_log != NULL && r->plugin_log[0] == ',') {
        /* Fields plugins log (cache, guardrail): already JSON members,
         * kept apart so that none can shadow a field of ours. */
        JB_LIT(&b, ",\"plugin_fields\":{");
        jb_add(&b, r->plugin_log + 1, strlen(r->plugin_log + 1));
        jb_add(&b, "}", 1);
    }
    if (r->log_up_body != NULL) {
        JB_LIT(&b, ",\"request_body\":");
        jb_str(&b, r->log_up_body, r->log_up_body_len);
    }
    if (r->log_stream_text != NULL) {
        struct evbuffer *t = r->log_stream_text;
        size_t n = evbuffer_get_length(t),
               cap = (size_t)r->cfg->reqlog_max_body_bytes;
        const char *p = (const char *)evbuffer_pullup(t, -1);
        if (n > cap) {
            n = cap;
            while (n > 0 && ((unsigned char)p[n] & 0xC0) == 0x80)
                n--;
        }
        JB_LIT(&b, ",\"response_text\":");
        jb_str(&b, p, n);
    } else if (r->log_answer != NULL) {
        JB_LIT(&b, ",\"response_text\":");
        jb_str(&b, r->log_answer, r->log_answer_len);
    }
    jb_add(&b, "}", 1);
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

static int64_t
wall_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* Records wait a moment on their worker thread and go to the store in
 * bursts: the writer thread is woken once per burst instead of once per
 * request, which at tens of thousands of requests a second is most of
 * what a record costs. A thread's last records go at its exit. */
#define BATCH_MAX 256
#define BATCH_MS 20

typedef struct {
    unsigned char key[SL_REQLOG_KEY_LEN];
    char *val;
    size_t len;
    int64_t ttl_ms;
} pending_t;

typedef struct {
    sl_store_t *st;
    struct event *timer;
    size_t n;
    pending_t items[BATCH_MAX];
} batch_t;

static pthread_key_t batch_key;
static pthread_once_t batch_once = PTHREAD_ONCE_INIT;
static int batch_key_ok;

static void
batch_flush(batch_t *bt) {
    for (size_t i = 0; i < bt->n; i++) {
        pending_t *it = &bt->items[i];
        /* Refused (a full queue) is dropped: the store counts it. */
        sl_store_put_async(bt->st, SL_STORE_REQUESTLOG, NULL, it->key,
                           sizeof(it->key), it->val, it->len, it->ttl_ms, NULL,
                           NULL);
        free(it->val);
    }
    bt->n = 0;
}

static void
on_batch_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    batch_flush(arg);
}

/* Thread exit: the worker's loop has stopped, its event_base and the
 * store are still there (both are freed after the join). */
static void
batch_exit(void *arg) {
    batch_t *bt = arg;
    batch_flush(bt);
    if (bt->timer != NULL)
        event_free(bt->timer);
    free(bt);
}

static void
batch_key_make(void) {
    batch_key_ok = pthread_key_create(&batch_key, batch_exit) == 0;
}

static batch_t *
batch_self(sl_store_t *st, struct event_base *base) {
    pthread_once(&batch_once, batch_key_make);
    if (!batch_key_ok)
        return NULL;
    batch_t *bt = pthread_getspecific(batch_key);
    if (bt != NULL) {
        if (bt->st != st) { /* another store (tests): not mixed */
            batch_flush(bt);
            bt->st = st;
        }
        return bt;
    }
    bt = calloc(1, sizeof(*bt));
    if (bt == NULL)
        return NULL;
    bt->st = st;
    bt->timer = evtimer_new(base, on_batch_timer, bt);
    if (bt->timer == NULL || pthread_setspecific(batch_key, bt) != 0) {
        if (bt->timer != NULL)
            event_free(bt->timer);
        free(bt);
        return NULL;
    }
    return bt;
}

void
sl_reqlog_write(sl_store_t *st, const sl_request_t *r) {
    static __thread uint32_t seq;
    const sl_config_t *cfg = r->cfg;
    if (st == NULL || cfg == NULL || !cfg->reqlog_enabled ||
        (r->route != NULL && r->route->kind == SL_ROUTE_HEALTH))
        return;
    /* Stamped with the arrival time: records sort in the order requests
     * came in, whatever order workers finish them in. */
    int64_t now = wall_us();
    if (r->t_start != 0)
        now -= (int64_t)(sl_now_us() - r->t_start);
    size_t len;
    char *val = sl_reqlog_format(r, now, &len);
    if (val == NULL)
        return;
    /* The expiry backs the sweep up: what the sweep misses still goes. */
    int64_t ttl = (int64_t)cfg->reqlog_max_age_hours * 3600 * 1000;
    batch_t *bt = batch_self(st, r->w->base);
    if (bt == NULL) {
        unsigned char key[SL_REQLOG_KEY_LEN];
        sl_reqlog_key(key, now, (unsigned)r->w->id, seq++);
        sl_store_put_async(st, SL_STORE_REQUESTLOG, NULL, key, sizeof(key), val,
                           len, ttl, NULL, NULL);
        free(val);
        return;
    }
    pending_t *it = &bt->items[bt->n++];
    sl_reqlog_key(it->key, now, (unsigned)r->w->id, seq++);
    it->val = val;
    it->len = len;
    it->ttl_ms = ttl;
    if (bt->n == BATCH_MAX) {
        evtimer_del(bt->timer);
        batch_flush(bt);
    } else if (bt->n == 1) {
        struct timeval tv = {0, BATCH_MS * 1000};
        evtimer_add(bt->timer, &tv);
    }
}

/* ---- retention ---- */

struct sweep_scan {
    int64_t cutoff_us; /* records older than this go */
    uint64_t over;     /* and this many of the oldest, whatever their age */
    size_t batch;
    unsigned char *keys; /* batch * SL_REQLOG_KEY_LEN */
    size_t n;
};

static int
sweep_visit(void *ud, const void *key, size_t klen, const void *val,
            size_t vlen, int64_t expires_at) {
    struct sweep_scan *s = ud;
    (void)val;
    (void)vlen;
    (void)expires_at;
    if (s->n >= s->batch)
        return 1;
    if (klen != SL_REQLOG_KEY_LEN) {
        /* Not ours: it goes too, it can only be in the way. */
    } else if (s->n >= s->over &&
               sl_reqlog_key_time(key, klen) >= s->cutoff_us) {
        return 1; /* the oldest left is young enough, and within the count */
    }
    memcpy(s->keys + s->n * SL_REQLOG_KEY_LEN, key,
           klen < SL_REQLOG_KEY_LEN ? klen : SL_REQLOG_KEY_LEN);
    if (klen < SL_REQLOG_KEY_LEN)
        memset(s->keys + s->n * SL_REQLOG_KEY_LEN + klen, 0,
               SL_REQLOG_KEY_LEN - klen);
    s->n++;
    return 0;
}

int
sl_reqlog_sweep(sl_store_t *st, int64_t now_us, int64_t max_age_ms,
                uint64_t max_entries, size_t batch, size_t *deleted) {
    uint64_t count = 0;
    *deleted = 0;
    int rc = sl_store_count(st, SL_STORE_REQUESTLOG, &count);
    if (rc != 0)
        return rc;
    if (count == 0 || batch == 0)
        return 0;
    struct sweep_scan s = {
        .cutoff_us = now_us - max_age_ms * 1000,
        .over = count > max_entries ? count - max_entries : 0,
        .batch = batch,
        .keys = malloc(batch * SL_REQLOG_KEY_LEN),
    };
    if (s.keys == NULL)
        return SL_ENOMEM;
    /* Oldest first; the deletes are queued after the scan's snapshot
     * is gone. */
    rc = sl_store_scan(st, SL_STORE_REQUESTLOG, NULL, NULL, 0, sweep_visit, &s);
    for (size_t i = 0; rc == 0 && i < s.n; i++) {
        int e = sl_store_del_async(st, SL_STORE_REQUESTLOG, NULL,
                                   s.keys + i * SL_REQLOG_KEY_LEN,
                                   SL_REQLOG_KEY_LEN, NULL, NULL);
        if (e == SL_EAGAIN)
            break; /* the queue is full: the next sweep goes on */
        if (e == 0)
            (*deleted)++;
    }
    free(s.keys);
    return rc;
}

struct sl_reqlog_sweeper {
    struct event *timer;
    sl_server_t *srv;
};

static void
arm(sl_reqlog_sweeper_t *s, long ms) {
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg) {
    sl_reqlog_sweeper_t *s = arg;
    (void)fd;
    (void)what;
    const sl_config_t *cfg = atomic_load(&s->srv->current)->cfg;
    size_t deleted = 0;
    if (s->srv->store != NULL)
        sl_reqlog_sweep(s->srv->store, wall_us(),
                        (int64_t)cfg->reqlog_max_age_hours * 3600 * 1000,
                        (uint64_t)cfg->reqlog_max_entries, 10000, &deleted);
    /* A full batch: more is waiting, come back soon. */
    arm(s, deleted >= 10000 ? 10 : cfg->reqlog_sweep_interval_ms);
}

sl_reqlog_sweeper_t *
sl_reqlog_sweeper_start(struct event_base *base, sl_server_t *srv) {
    sl_reqlog_sweeper_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->srv = srv;
    s->timer = evtimer_new(base, on_sweep, s);
    if (s->timer == NULL) {
        free(s);
        return NULL;
    }
    arm(s, atomic_load(&srv->current)->cfg->reqlog_sweep_interval_ms);
    return s;
}

void
sl_reqlog_sweeper_stop(sl_reqlog_sweeper_t *s) {
    if (s == NULL)
        return;
    event_free(s->timer);
    free(s);
}
