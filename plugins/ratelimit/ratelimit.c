/* The bundled rate limit: requests and tokens per minute, per consumer
 * (the client's IP when no auth plugin named one), per route instance and
 * per model, overridable per API key. Tokens are reserved at admission
 * (the prompt estimated at chars/4, plus max_tokens or a default) and
 * settled against the provider's usage when the answer ends, so one large
 * request cannot overshoot a limit and an aborted one gives its
 * reservation back.
 *
 * The live counters are in memory, shared by every worker thread, one
 * atomic word per (bucket, window) (window.h): exact under concurrency
 * without a lock. The instances a reload makes share the counters of the
 * instance of the same name they replace (a table per name, counted by
 * reference), so requests in flight across a reload are counted once.
 *
 * The store keeps the counts for a restart in the same window. With
 * persist_interval_ms (1000 by default) a request only marks its buckets
 * dirty; a thread of the table writes the dirty ones back every interval,
 * and once more when the last instance of the name goes (a clean stop or
 * a reload that drops it): a crash loses at most the last interval's
 * counts. With 0, every admission and settlement is queued to the store
 * at once. */
#define _POSIX_C_SOURCE 200809L
#include "window.h"

#include <sluice/plugin.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RL_MAX_MODELS 64
#define RL_TTL_MS 120000 /* a window's counters outlive it by a minute */

static const sluice_config_field_t schema[] = {
    {"requests_per_minute", SLUICE_CFG_INT, "0", 0,
     "requests per consumer per minute; 0 = no limit"},
    {"tokens_per_minute", SLUICE_CFG_INT, "0", 0,
     "prompt + completion tokens per consumer per minute; 0 = no limit"},
    {"models", SLUICE_CFG_STRING_LIST, "[]", 0,
     "per-model limits, counted apart: \"MODEL rpm=N tpm=N\""},
    {"default_max_tokens", SLUICE_CFG_INT, "1024", 0,
     "completion tokens reserved when a request sets no max_tokens"},
    {"persist", SLUICE_CFG_BOOL, "true", 0,
     "keep the counters in the store so a restart keeps them"},
    {"persist_interval_ms", SLUICE_CFG_INT, "1000", 0,
     "write the counts back this often, and when the gateway stops (0: "
     "after every request); a crash may lose the last interval's counts"},
    {"max_buckets", SLUICE_CFG_INT, "65536", 0,
     "consumers (x models) counted at once; past it new ones pass uncounted"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct {
    _Atomic uint64_t key;        /* the bucket's hash; 0 = free */
    _Atomic int ready;           /* seeded from the store */
    _Atomic int dirty;           /* on the dirty list: counts not written yet */
    _Atomic uint32_t next_dirty; /* the next on the list, index + 1 */
    rl_counter_t reqs, toks;
} rl_bucket_t;

static const char *const header_names[2][3] = {
    {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
     "x-ratelimit-reset-requests"},
    {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
     "x-ratelimit-reset-tokens"},
};

typedef struct {
    char model[128];
    int64_t rpm, tpm;
} rl_model_t;

struct rl;

/* The counters of one instance name, shared by the instances reloads
 * make of it; registered in `tables` while any holds it. */
typedef struct rl_table {
    struct rl_table *next;
    char *name;
    int refs;
    rl_bucket_t *buckets;
    size_t mask;
    /* The dirty buckets, a stack of index + 1 (0 = empty): requests push,
     * only a flush takes, and it takes the whole stack. */
    _Atomic uint32_t dirty_head;
    pthread_mutex_t mu; /* flushes, holders, the flusher's settings */
    pthread_cond_t cv;
    struct rl *holders; /* the live instances holding this table */
    int64_t interval_ms;
    int stop;
    int flusher_started;
    pthread_t flusher;
} rl_table_t;

typedef struct rl {
    const sluice_host_t *host;
    int64_t rpm, tpm, default_max;
    int persist;
    int64_t persist_interval_ms;
    rl_model_t models[RL_MAX_MODELS];
    size_t nmodels;
    rl_table_t *t;
    sluice_kv_t *kv; /* for writes outside a hook */
    /* The route's limits as header values, formatted once. */
    char rpm_buf[RL_U64_CHARS], tpm_buf[RL_U64_CHARS];
    const char *rpm_text, *tpm_text;
    size_t rpm_len, tpm_len;
    /* The header names, checked once by the host when it can. */
    sluice_header_name_t hn[2][3];
    int prepared;
    struct rl *next_holder; /* in t->holders */
    atomic_int full_logged;
} rl_t;

static pthread_mutex_t tables_mu = PTHREAD_MUTEX_INITIALIZER;
static rl_table_t *tables;

/* One limit a request is checked against. */
typedef struct {
    rl_bucket_t *b;
    uint64_t hash;
    int64_t rpm, tpm;
} rl_check_t;

/* What on_log settles and persists. */
typedef struct {
    uint32_t win;
    size_t n;
    rl_check_t c[2];
    uint64_t reserved; /* tokens taken at admission */
} rl_state_t;

static int64_t
now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

/* FNV-1a 64 with a final mix; never 0 (0 marks a free bucket). */
static uint64_t
hash_of(const char *kind, const char *a, const char *b) {
    uint64_t h = 14695981039346656037ULL;
    const char *parts[3] = {kind, a, b};
    for (int i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)parts[i];
             p != NULL && *p; p++)
            h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xff) * 1099511628211ULL; /* separator */
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h ? h : 1;
}

/* ---- persistence ---- */

/* The store keeps, per bucket and window, its two counts: {requests,
 * tokens}, native uint64_t. */
static int
store_key(char *buf, size_t cap, uint32_t win, uint64_t hash) {
    return snprintf(buf, cap, "w:%u:%016llx", (unsigned)win,
                    (unsigned long long)hash);
}

static void
seed(const rl_t *rl, sluice_req_t *req, rl_bucket_t *b, uint32_t win,
     uint64_t hash) {
    char key[64];
    uint64_t v[2] = {0, 0};
    size_t len = 0;
    int n = store_key(key, sizeof(key), win, hash);
    if (rl->host->kv_get(req, key, (size_t)n, v, sizeof(v), &len) !=
            SLUICE_OK ||
        len != sizeof(v))
        v[0] = v[1] = 0;
    rl_seed(&b->reqs, win, v[0]);
    rl_seed(&b->toks, win, v[1]);
}

/* Queues the bucket's counts in the current window (persist_interval_ms
 * 0): one write per admission and settlement. Two requests of one
 * consumer ending at once on two threads may queue their snapshots out of
 * order: the store then lags by a request until the next write. */
static void
persist_now(const rl_t *rl, sluice_req_t *req, rl_bucket_t *b, uint32_t win) {
    char key[64];
    uint64_t v[2] = {rl_count(&b->reqs, win), rl_count(&b->toks, win)};
    int n = store_key(key, sizeof(key), win,
                      atomic_load_explicit(&b->key, memory_order_relaxed));
    rl->host->kv_set(req, key, (size_t)n, v, sizeof(v), RL_TTL_MS);
}

/* Puts the bucket on the table's dirty list, once until a flush. Called
 * after the counts changed; the fence and load pair with flush()'s
 * clearing and fence: either this sees the flag cleared and lists the
 * bucket again, or that flush reads the new counts. */
static void
mark_dirty(rl_table_t *t, rl_bucket_t *b) {
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&b->dirty) || atomic_exchange(&b->dirty, 1))
        return;
    uint32_t self = (uint32_t)(b - t->buckets) + 1;
    uint32_t head = atomic_load_explicit(&t->dirty_head, memory_order_relaxed);
    do
        atomic_store_explicit(&b->next_dirty, head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&t->dirty_head, &head, self,
                                                  memory_order_release,
                                                  memory_order_relaxed));
}

static void
persist(const rl_t *rl, sluice_req_t *req, rl_bucket_t *b, uint32_t win) {
    if (rl->persist_interval_ms == 0)
        persist_now(rl, req, b, win);
    else
        mark_dirty(rl->t, b);
}

static int64_t now_s(void);

/* Writes the dirty buckets' counts of the current window through kv;
 * t->mu held (kv stays valid). A bucket changed while it is written goes
 * back on the list. */
static void
flush(rl_table_t *t, const sluice_host_t *h, sluice_kv_t *kv) {
    uint32_t i =
        atomic_exchange_explicit(&t->dirty_head, 0, memory_order_acquire);
    uint32_t win = rl_window(now_s());
    while (i != 0) {
        rl_bucket_t *b = &t->buckets[i - 1];
        i = atomic_load_explicit(&b->next_dirty, memory_order_relaxed);
        atomic_store(&b->dirty, 0); /* before the read: a later change
                                       marks it again */
        atomic_thread_fence(memory_order_seq_cst);
        char key[64];
        uint64_t v[2] = {rl_count(&b->reqs, win), rl_count(&b->toks, win)};
        int n = store_key(key, sizeof(key), win,
                          atomic_load_explicit(&b->key, memory_order_relaxed));
        if (kv != NULL)
            h->kv_handle_set(kv, key, (size_t)n, v, sizeof(v), RL_TTL_MS);
    }
}

/* The table's writer: every interval, the dirty buckets. */
static void *
flusher_main(void *arg) {
    rl_table_t *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ms = t->interval_ms > 0 ? t->interval_ms : 1000;
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        if (!t->stop && t->holders != NULL)
            flush(t, t->holders->host, t->holders->kv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ---- the shared tables ---- */

static void
table_free(rl_table_t *t) {
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t->buckets);
    free(t->name);
    free(t);
}

static rl_table_t *
table_new(const char *name, size_t cap) {
    rl_table_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->name = strdup(name);
    t->buckets = calloc(cap, sizeof(*t->buckets));
    if (t->name == NULL || t->buckets == NULL) {
        table_free(t);
        return NULL;
    }
    t->mask = cap - 1;
    return t;
}

/* Makes rl hold the table of its name (cap buckets), the one an instance
 * of the same name before it holds when its size is the same. */
static int
table_attach(rl_t *rl, const char *name, size_t cap) {
    pthread_mutex_lock(&tables_mu);
    rl_table_t *t = tables;
    while (t != NULL && !(strcmp(t->name, name) == 0 && t->mask + 1 == cap))
        t = t->next;
    if (t == NULL) {
        /* A new size starts from the store: write the old table's counts
         * there first. */
        for (rl_table_t *o = tables; o != NULL; o = o->next)
            if (strcmp(o->name, name) == 0) {
                pthread_mutex_lock(&o->mu);
                if (o->holders != NULL)
                    flush(o, o->holders->host, o->holders->kv);
                pthread_mutex_unlock(&o->mu);
            }
        if ((t = table_new(name, cap)) == NULL) {
            pthread_mutex_unlock(&tables_mu);
            return SLUICE_ENOMEM;
        }
        t->next = tables;
        tables = t;
    }
    pthread_mutex_lock(&t->mu);
    t->refs++;
    rl->t = t;
    rl->next_holder = t->holders; /* the newest first: its settings rule */
    t->holders = rl;
    t->interval_ms = rl->persist_interval_ms;
    int start = rl->persist && rl->persist_interval_ms > 0 && rl->kv != NULL &&
                !t->flusher_started;
    if (start)
        t->flusher_started =
            pthread_create(&t->flusher, NULL, flusher_main, t) == 0;
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_unlock(&tables_mu);
    return SLUICE_OK;
}

/* Lets go of rl's table; the last holder stops its writer and writes
 * what is dirty one last time. */
static void
table_detach(rl_t *rl) {
    rl_table_t *t = rl->t;
    if (t == NULL)
        return;
    pthread_mutex_lock(&tables_mu);
    pthread_mutex_lock(&t->mu);
    for (rl_t **p = &t->holders; *p != NULL; p = &(*p)->next_holder)
        if (*p == rl) {
            *p = rl->next_holder;
            break;
        }
    int last = --t->refs == 0;
    if (last) {
        for (rl_table_t **p = &tables; *p != NULL; p = &(*p)->next)
            if (*p == t) {
                *p = t->next;
                break;
            }
        t->stop = 1;
        pthread_cond_signal(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_unlock(&tables_mu);
    if (!last)
        return;
    if (t->flusher_started)
        pthread_join(t->flusher, NULL);
    if (rl->persist) {
        pthread_mutex_lock(&t->mu);
        flush(t, rl->host, rl->kv);
        pthread_mutex_unlock(&t->mu);
    }
    table_free(t);
}

/* ---- buckets ---- */

/* The bucket of hash, claimed and seeded on first use; NULL when the
 * table is full. */
static rl_bucket_t *
bucket(rl_t *rl, sluice_req_t *req, uint64_t hash, uint32_t win) {
    rl_table_t *t = rl->t;
    for (size_t i = 0; i <= t->mask; i++) {
        rl_bucket_t *b = &t->buckets[(hash + i) & t->mask];
        uint64_t k = atomic_load_explicit(&b->key, memory_order_acquire);
        if (k == 0) {
            uint64_t zero = 0;
            if (atomic_compare_exchange_strong(&b->key, &zero, hash)) {
                if (rl->persist)
                    seed(rl, req, b, win, hash);
                atomic_store_explicit(&b->ready, 1, memory_order_release);
                return b;
            }
            k = zero; /* someone else took it: is it ours? */
        }
        if (k == hash) {
            /* Seeding is a store read: wait it out. */
            while (!atomic_load_explicit(&b->ready, memory_order_acquire))
                sched_yield();
            return b;
        }
    }
    return NULL;
}

/* ---- config ---- */

static int
parse_model(rl_model_t *m, const char *s, char *err, size_t errlen) {
    const char *sp = strchr(s, ' ');
    size_t n = sp ? (size_t)(sp - s) : strlen(s);
    if (n == 0 || n >= sizeof(m->model)) {
        snprintf(err, errlen, "models: \"%.80s\" names no model", s);
        return -1;
    }
    memcpy(m->model, s, n);
    m->model[n] = '\0';
    m->rpm = m->tpm = -1;
    for (const char *p = sp; p != NULL && *p;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        char *end;
        long long v;
        if (strncmp(p, "rpm=", 4) == 0 || strncmp(p, "tpm=", 4) == 0) {
            v = strtoll(p + 4, &end, 10);
            if (end == p + 4 || v < 0 || (*end != ' ' && *end != '\0'))
                goto bad;
            if (p[0] == 'r')
                m->rpm = v;
            else
                m->tpm = v;
            p = end;
        } else {
            goto bad;
        }
    }
    if (m->rpm < 0 && m->tpm < 0)
        goto bad;
    return 0;
bad:
    snprintf(err, errlen,
             "models: \"%.80s\" is not \"MODEL rpm=N tpm=N\" (either may be "
             "left out, not both)",
             s);
    return -1;
}

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    if (!SLUICE_HOST_HAS(host, usage)) {
        snprintf(err, errlen,
                 "needs Sluice plugin ABI 1.1 (this gateway "
                 "has %u.%u)",
                 (unsigned)host->abi_major, (unsigned)host->abi_minor);
        return SLUICE_EINVAL;
    }
    rl_t *rl = calloc(1, sizeof(*rl));
    if (rl == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    rl->host = host;
    int64_t maxb = 65536;
    host->config_int(config, "requests_per_minute", &rl->rpm);
    host->config_int(config, "tokens_per_minute", &rl->tpm);
    host->config_int(config, "default_max_tokens", &rl->default_max);
    host->config_bool(config, "persist", &rl->persist);
    host->config_int(config, "persist_interval_ms", &rl->persist_interval_ms);
    if (rl->persist_interval_ms < 0 || rl->persist_interval_ms > 60000) {
        snprintf(err, errlen, "persist_interval_ms must be 0..60000");
        goto fail;
    }
    host->config_int(config, "max_buckets", &maxb);
    if (rl->rpm < 0 || rl->tpm < 0 || rl->default_max < 0) {
        snprintf(err, errlen, "limits and default_max_tokens must be >= 0");
        goto fail;
    }
    if (maxb < 16 || maxb > (1 << 24)) {
        snprintf(err, errlen, "max_buckets must be 16..16777216");
        goto fail;
    }
    size_t nm = 0;
    host->config_list_count(config, "models", &nm);
    if (nm > RL_MAX_MODELS) {
        snprintf(err, errlen, "models: at most %d entries", RL_MAX_MODELS);
        goto fail;
    }
    for (size_t i = 0; i < nm; i++) {
        const char *s = NULL;
        host->config_list_item(config, "models", i, &s);
        if (s == NULL || parse_model(&rl->models[i], s, err, errlen) != 0)
            goto fail;
    }
    rl->nmodels = nm;
    rl->rpm_text = rl_format_u64((uint64_t)rl->rpm, rl->rpm_buf);
    rl->tpm_text = rl_format_u64((uint64_t)rl->tpm, rl->tpm_buf);
    rl->rpm_len = strlen(rl->rpm_text);
    rl->tpm_len = strlen(rl->tpm_text);
    rl->prepared = SLUICE_HOST_HAS(host, response_header_set_prepared);
    for (int k = 0; rl->prepared && k < 6; k++)
        rl->prepared =
            host->response_header_prepare(
                &rl->hn[k / 3][k % 3], header_names[k / 3][k % 3]) == SLUICE_OK;
    /* Twice the buckets asked for, a power of two: probes stay short. */
    size_t cap = 16;
    while (cap < (size_t)maxb * 2)
        cap <<= 1;
    if (SLUICE_HOST_HAS(host, kv_handle_set))
        rl->kv = host->kv_handle(ctx);
    if (rl->kv == NULL)
        rl->persist_interval_ms = 0; /* nothing could write later */
    const char *name = host->instance_name(ctx);
    if (table_attach(rl, name != NULL ? name : "", cap) != SLUICE_OK) {
        snprintf(err, errlen, "out of memory for %zu buckets", cap);
        goto fail;
    }
    *instance = rl;
    return SLUICE_OK;
fail:
    free(rl);
    return SLUICE_EINVAL;
}

static void
destroy(void *instance) {
    rl_t *rl = instance;
    if (rl != NULL)
        table_detach(rl);
    free(rl);
}

/* ---- the request ---- */

/* An attribute set by an auth plugin for this key: a limit >= 0, or -1. */
static int64_t
key_limit(const rl_t *rl, sluice_req_t *req, const char *name) {
    const char *v = NULL;
    if (rl->host->attr_get(req, name, &v) != SLUICE_OK)
        return -1;
    char *end;
    long long n = strtoll(v, &end, 10);
    return end != v && *end == '\0' && n >= 0 ? n : -1;
}

static uint64_t
estimate(const rl_t *rl, sluice_req_t *req) {
    size_t n = 0, chars = 0;
    rl->host->message_count(req, &n);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *t;
        if (rl->host->message_text(req, i, &t, &len) == SLUICE_OK)
            chars += len;
    }
    int64_t max = 0;
    if (rl->host->request_max_tokens(req, &max) != SLUICE_OK)
        max = rl->default_max;
    return rl_estimate_tokens(chars) + (uint64_t)max;
}

/* Sets header [tokens][which] to value[0..len). */
static void
set_header(const rl_t *rl, sluice_req_t *req, int tokens, int which,
           const char *value, size_t len) {
    if (rl->prepared)
        rl->host->response_header_set_prepared(req, &rl->hn[tokens][which],
                                               value, len);
    else
        rl->host->response_header_set(req, header_names[tokens][which],
                                      value); /* NUL-terminated too */
}

static void
set_num(const rl_t *rl, sluice_req_t *req, int tokens, int which, uint64_t v) {
    char buf[RL_U64_CHARS];
    const char *s = rl_format_u64(v, buf);
    set_header(rl, req, tokens, which, s, (size_t)(buf + RL_U64_CHARS - 1 - s));
}

/* The x-ratelimit-*-requests or -tokens trio for the tightest check;
 * reset is the reset header's value. */
static void
headers(const rl_t *rl, sluice_req_t *req, int tokens, int64_t limit,
        uint64_t used, const char *reset, size_t reset_len) {
    if (limit == (tokens ? rl->tpm : rl->rpm))
        set_header(rl, req, tokens, 0, tokens ? rl->tpm_text : rl->rpm_text,
                   tokens ? rl->tpm_len : rl->rpm_len);
    else
        set_num(rl, req, tokens, 0, (uint64_t)limit);
    set_num(rl, req, tokens, 1,
            used < (uint64_t)limit ? (uint64_t)limit - used : 0);
    set_header(rl, req, tokens, 2, reset, reset_len);
}

static sluice_verdict_t
refuse(const rl_t *rl, sluice_req_t *req, int reset, const char *what,
       int64_t limit, int too_big) {
    char msg[400], body[600], ra[16];
    snprintf(ra, sizeof(ra), "%d", reset);
    rl->host->response_header_set(req, "retry-after", ra);
    if (too_big)
        snprintf(msg, sizeof(msg),
                 "Request too large: it needs more tokens than the limit of "
                 "%lld tokens per minute allows",
                 (long long)limit);
    else
        snprintf(msg, sizeof(msg),
                 "Rate limit reached: %lld %s per minute. Try again in %ds.",
                 (long long)limit, what, reset);
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"%s\",\"type\":"
                     "\"rate_limit_error\",\"code\":\"rate_limit_exceeded\"}}",
                     msg);
    rl->host->metric_add(
        req, "sluice_ratelimit_rejected_total",
        what[0] == 'r' ? "limit=\"requests\"" : "limit=\"tokens\"", 1);
    if (rl->host->respond(req, 429, body, (size_t)n) != SLUICE_OK)
        return SLUICE_ERROR;
    return SLUICE_RESPOND;
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    rl_t *rl = instance;
    const sluice_host_t *h = rl->host;
    const char *who = NULL, *model = NULL;
    char ipwho[80];
    if (h->consumer(req, &who) != SLUICE_OK) {
        const char *ip = NULL;
        if (h->client_addr(req, &ip, NULL) != SLUICE_OK)
            ip = "unknown";
        snprintf(ipwho, sizeof(ipwho), "ip:%s", ip);
        who = ipwho;
    }
    if (h->model(req, &model) != SLUICE_OK)
        model = "";

    rl_check_t checks[2];
    size_t n = 0;
    int64_t krpm = key_limit(rl, req, "ratelimit.rpm");
    int64_t ktpm = key_limit(rl, req, "ratelimit.tpm");
    rl_check_t *c = &checks[n];
    c->rpm = krpm >= 0 ? krpm : rl->rpm;
    c->tpm = ktpm >= 0 ? ktpm : rl->tpm;
    c->hash = hash_of("consumer", who, NULL);
    if (c->rpm > 0 || c->tpm > 0)
        n++;
    for (size_t i = 0; i < rl->nmodels; i++) {
        if (strcmp(rl->models[i].model, model) != 0)
            continue;
        c = &checks[n];
        c->rpm = rl->models[i].rpm > 0 ? rl->models[i].rpm : 0;
        c->tpm = rl->models[i].tpm > 0 ? rl->models[i].tpm : 0;
        c->hash = hash_of("model", who, model);
        if (c->rpm > 0 || c->tpm > 0)
            n++;
        break;
    }
    if (n == 0)
        return SLUICE_CONTINUE;

    int64_t now = now_s();
    uint32_t win = rl_window(now);
    int reset = rl_reset_seconds(now);
    for (size_t i = 0; i < n; i++) {
        checks[i].b = bucket(rl, req, checks[i].hash, win);
        if (checks[i].b == NULL) {
            if (!atomic_exchange(&rl->full_logged, 1))
                h->log(req, SLUICE_LOG_WARN,
                       "all %zu buckets are in use: new consumers pass "
                       "uncounted (raise max_buckets)",
                       (rl->t->mask + 1) / 2);
            return SLUICE_CONTINUE;
        }
    }
    int need_tokens = checks[0].tpm > 0 || (n > 1 && checks[1].tpm > 0);
    uint64_t reserve = need_tokens ? estimate(rl, req) : 0;

    /* Take from every check; undo what was taken when one refuses. */
    uint64_t rused[2] = {0, 0}, tused[2] = {0, 0};
    size_t took_r = 0, took_t = 0;
    int refused = 0, too_big = 0;
    const char *what = NULL;
    int64_t lim = 0;
    for (size_t i = 0; i < n && !refused; i++) {
        rl_check_t *k = &checks[i];
        if (k->rpm > 0 &&
            !rl_take(&k->b->reqs, win, 1, (uint64_t)k->rpm, &rused[i])) {
            refused = 1, what = "requests", lim = k->rpm;
            rused[i] = (uint64_t)k->rpm;
            break;
        }
        took_r = i + 1;
        if (k->tpm > 0 &&
            !rl_take(&k->b->toks, win, reserve, (uint64_t)k->tpm, &tused[i])) {
            refused = 1, what = "tokens", lim = k->tpm;
            too_big = reserve > (uint64_t)k->tpm;
            break;
        }
        took_t = i + 1;
    }
    if (refused) {
        for (size_t i = 0; i < took_r; i++)
            if (checks[i].rpm > 0)
                rl_give(&checks[i].b->reqs, win, 1);
        for (size_t i = 0; i < took_t; i++)
            if (checks[i].tpm > 0)
                rl_give(&checks[i].b->toks, win, reserve);
    }

    /* The headers speak of the tightest check: the first with a limit of
     * each kind whose remainder is the smallest. */
    int64_t best_r = -1, best_t = -1;
    uint64_t br_used = 0, bt_used = 0;
    for (size_t i = 0; i < n; i++) {
        rl_check_t *k = &checks[i];
        if (k->rpm > 0) {
            uint64_t u = refused ? rl_count(&k->b->reqs, win) : rused[i];
            if (best_r < 0 ||
                (int64_t)(k->rpm - (int64_t)u) < best_r - (int64_t)br_used)
                best_r = k->rpm, br_used = u;
        }
        if (k->tpm > 0) {
            uint64_t u = refused ? rl_count(&k->b->toks, win) : tused[i];
            if (best_t < 0 ||
                (int64_t)(k->tpm - (int64_t)u) < best_t - (int64_t)bt_used)
                best_t = k->tpm, bt_used = u;
        }
    }
    char rbuf[16];
    size_t rlen = strlen(rl_format_reset(reset, rbuf, sizeof(rbuf)));
    if (best_r > 0)
        headers(rl, req, 0, best_r, br_used, rbuf, rlen);
    if (best_t > 0)
        headers(rl, req, 1, best_t, bt_used, rbuf, rlen);
    if (refused)
        return refuse(rl, req, reset, what, lim, too_big);

    /* Stored (or marked for the next write) now too, not only when the
     * request ends: the gateway may stop while it is in flight. */
    for (size_t i = 0; rl->persist && i < n; i++)
        persist(rl, req, checks[i].b, win);
    if (!need_tokens)
        return SLUICE_CONTINUE;
    rl_state_t *st = h->alloc(req, sizeof(*st));
    if (st == NULL)
        return SLUICE_CONTINUE; /* nothing to settle: the reservation stays */
    st->win = win;
    st->n = n;
    memcpy(st->c, checks, sizeof(checks));
    st->reserved = reserve;
    h->state_set(req, st);
    return SLUICE_CONTINUE;
}

/* Settles the reservation against what the provider reported; with no
 * usage (an error, a client that went away, a RESPOND by a later plugin)
 * the whole reservation goes back. */
static int
settle(const rl_t *rl, sluice_req_t *req, rl_state_t *st) {
    int64_t prompt = 0, completion = 0;
    uint64_t used = 0;
    if (rl->host->usage(req, &prompt, &completion) == SLUICE_OK)
        used = (uint64_t)prompt + (uint64_t)completion;
    int64_t delta = (int64_t)used - (int64_t)st->reserved;
    if (delta == 0)
        return 0;
    for (size_t i = 0; i < st->n; i++) {
        rl_check_t *k = &st->c[i];
        if (k->tpm <= 0 || delta == 0)
            continue;
        if (delta < 0)
            rl_give(&k->b->toks, st->win, (uint64_t)-delta);
        else
            rl_add(&k->b->toks, st->win, (uint64_t)delta);
    }
    return 1;
}

/* Once the request is over: settle, then queue the new counts. */
static sluice_verdict_t
on_log(void *instance, sluice_req_t *req) {
    rl_t *rl = instance;
    rl_state_t *st = rl->host->state_get(req);
    if (st == NULL)
        return SLUICE_CONTINUE;
    /* Admission stored the request; only a settled reservation changes
     * what the store holds. */
    if (st->reserved == 0 || !settle(rl, req, st))
        return SLUICE_CONTINUE;
    for (size_t i = 0; rl->persist && i < st->n; i++)
        persist(rl, req, st->c[i].b, st->win);
    return SLUICE_CONTINUE;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "ratelimit",
    .version = "1.0.0",
    .description = "requests and tokens per minute, per consumer, route, "
                   "model and key",
    .config_schema = schema,
    .fail_open = 0,
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
    .on_log = on_log,
};
