/* The request log and the trace context; see requestlog.h. */
#include "requestlog.h"
#include "clock.h"
#include "error.h"
#include "pipeline.h"
#include "reqlog_record.h"
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

/* n (a multiple of 8) random lowercase hex digits, not all zero. Eight
 * digits at a time: each nibble of a random word is spread into a byte of
 * its own and turned into '0'..'9' or 'a'..'f' with a few word operations
 * instead of eight table look-ups. */
static void
random_hex(sl_worker_t *w, char *out, size_t n) {
    for (;;) {
        uint32_t any = 0;
        for (size_t i = 0; i < n; i += 8) {
            uint32_t x = sl_worker_random(w);
            any |= x;
            uint64_t v = x;
            v = (v | v << 16) & 0x0000FFFF0000FFFFULL;
            v = (v | v << 8) & 0x00FF00FF00FF00FFULL;
            v = (v | v << 4) & 0x0F0F0F0F0F0F0F0FULL;
            /* 1 in each byte whose nibble is 10..15. */
            uint64_t letter =
                ((v + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL;
            v += 0x3030303030303030ULL + letter * ('a' - '0' - 10);
            memcpy(out + i, &v, 8);
        }
        out[n] = '\0';
        if (any != 0) /* all zeros is the invalid id */
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
    sl_store_batch_t b = {0};
    unsigned char key[SL_REQLOG_KEY_LEN];
    sl_reqlog_key(key, now_us, 0, 0);
    char *out = NULL;
    if (sl_reqlog_encode(&b, key, sizeof(key), r, now_us, sl_now_us()) == 0) {
        size_t at = SL_STORE_ITEM_HDR + sizeof(key); /* the one value */
        out = sl_reqlog_render(b.buf + at, b.len - at, len);
    }
    sl_store_batch_free(&b);
    return out;
}

static int64_t
wall_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

/* A worker's records wait in a batch on its thread and go to the store as
 * one write every BATCH_MS, or sooner when the batch is full: the writer
 * thread is woken and commits once per batch instead of once per request.
 * A record costs its worker a few copies; the JSON is made only when the
 * log is read (reqlog_record.h). A thread's last records go at its exit;
 * what a crash of the process loses is the batch not yet queued (at most
 * BATCH_MS of records) plus the store's own buffered flush. */
#define BATCH_MAX 256
#define BATCH_BYTES (256u << 10)
#define BATCH_MS 50

typedef struct {
    sl_store_t *st;
    struct event *timer;
    sl_store_batch_t b;
    int64_t ttl_ms;
    /* Wall clock minus monotonic clock, taken as a batch starts: records
     * get their wall-clock time from the monotonic one they carry. */
    int64_t wall_offset;
    uint32_t seq;
} batch_t;

static pthread_key_t batch_key;
static pthread_once_t batch_once = PTHREAD_ONCE_INIT;
static int batch_key_ok;

static void
batch_flush(batch_t *bt) {
    /* Refused (a full queue) is dropped: the store counts it. */
    sl_store_put_batch_async(bt->st, SL_STORE_REQUESTLOG, bt->ttl_ms, &bt->b);
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
    sl_store_batch_free(&bt->b);
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
    static __thread batch_t *self;
    if (self != NULL && self->st == st)
        return self;
    pthread_once(&batch_once, batch_key_make);
    if (!batch_key_ok)
        return NULL;
    batch_t *bt = pthread_getspecific(batch_key);
    if (bt != NULL) {
        batch_flush(bt); /* another store (tests): not mixed */
        bt->st = st;
        return self = bt;
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
    return self = bt;
}

void
sl_reqlog_write(sl_store_t *st, const sl_request_t *r, uint64_t now_us) {
    const sl_config_t *cfg = r->cfg;
    if (st == NULL || cfg == NULL || !cfg->reqlog_enabled ||
        (r->route != NULL && r->route->kind == SL_ROUTE_HEALTH))
        return;
    batch_t *bt = batch_self(st, r->w->base);
    if (bt == NULL)
        return; /* out of memory: the record is dropped */
    /* The expiry backs the sweep up: what the sweep misses still goes. */
    int64_t ttl = (int64_t)cfg->reqlog_max_age_hours * 3600 * 1000;
    if (bt->b.n > 0 && ttl != bt->ttl_ms)
        batch_flush(bt); /* a reload changed it: one expiry per batch */
    if (bt->b.n == 0) {
        bt->ttl_ms = ttl;
        bt->wall_offset = wall_us() - (int64_t)sl_now_us();
    }
    /* Stamped with the arrival time: records sort in the order requests
     * came in, whatever order workers finish them in. */
    int64_t ts =
        (int64_t)(r->t_start != 0 ? r->t_start : now_us) + bt->wall_offset;
    unsigned char key[SL_REQLOG_KEY_LEN];
    sl_reqlog_key(key, ts, (unsigned)r->w->id, bt->seq++);
    if (sl_reqlog_encode(&bt->b, key, sizeof(key), r, ts, now_us) != 0)
        return;
    if (bt->b.n >= BATCH_MAX || bt->b.len >= BATCH_BYTES) {
        evtimer_del(bt->timer);
        batch_flush(bt);
    } else if (bt->b.n == 1) {
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
