#include "metrics.h"
#include "balancer.h"
#include "clock.h"
#include "request.h"
#include "snapshot.h"
#include "store.h"
#include "worker.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_M_BUCKETS 14
static const double bucket_le[SL_M_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1,     2.5,  5,     10};
/* The same bounds in microseconds: a request picks its bucket with
 * integer compares. */
static const uint64_t bucket_us[SL_M_BUCKETS] = {
    500,    1000,   2500,   5000,    10000,   25000,   50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

typedef struct {
    char *labels; /* NULL: empty slot */
    uint32_t hash;
    atomic_uint_fast64_t value;           /* counters; histograms: count */
    atomic_uint_fast64_t sum_us;          /* histograms */
    atomic_uint_fast64_t buckets[SL_M_BUCKETS];
} sl_series_t;

typedef struct {
    sl_series_t *slots;
    size_t cap;
    atomic_size_t used;
} sl_table_t;

struct sl_metrics_cache;

struct sl_metrics {
    sl_table_t t[SL_M_NFAMILIES];
    struct sl_metrics_cache *cache; /* made on first use */
};

static const struct {
    const char *name, *help;
    int histogram;
} families[SL_M_NFAMILIES] = {
    {"sluice_requests_total", "Requests answered, by route, model, "
                              "provider and status.", 0},
    {"sluice_tokens_total", "Tokens reported by providers, by kind.", 0},
    {"sluice_upstream_attempts_total",
     "Extra upstream attempts: retries of a target and fallbacks to the "
     "next.", 0},
    {"sluice_client_aborts_total", "Clients that went away before the end "
                                   "of their answer.", 0},
    {"sluice_request_duration_seconds", "Total request latency.", 1},
    {"sluice_upstream_duration_seconds", "Time spent waiting on providers.",
     1},
    {"sluice_time_to_first_token_seconds",
     "Streams: from the request to the first event sent.", 1},
    {"sluice_gateway_overhead_seconds",
     "Time spent in the gateway itself (total minus upstream).", 1},
    {"sluice_cost_usd_total", "Cost of answered requests in US dollars, "
                              "from the config's pricing table.", 0},
};

/* Tables are sized once: a scrape may read a table while its worker
 * writes, so it never moves. Label sets are bounded by the config (routes,
 * aliases, providers, statuses), and past the cap new series are dropped
 * rather than grown into. */
#define SL_M_CAP 4096

sl_metrics_t *
sl_metrics_new(void)
{
    sl_metrics_t *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    for (int f = 0; f < SL_M_NFAMILIES; f++) {
        m->t[f].cap = SL_M_CAP;
        m->t[f].slots = calloc(SL_M_CAP, sizeof(sl_series_t));
        if (m->t[f].slots == NULL) {
            sl_metrics_free(m);
            return NULL;
        }
    }
    return m;
}

void
sl_metrics_free(sl_metrics_t *m)
{
    if (m == NULL)
        return;
    for (int f = 0; f < SL_M_NFAMILIES; f++) {
        for (size_t i = 0; m->t[f].slots && i < m->t[f].cap; i++)
            free(m->t[f].slots[i].labels);
        free(m->t[f].slots);
    }
    free(m->cache);
    free(m);
}

static uint32_t
hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* Looks a series up without adding it: safe from the scraping thread. */
static sl_series_t *
find(sl_table_t *t, const char *labels)
{
    uint32_t h = hash(labels);
    for (size_t i = 0; i < t->cap; i++) {
        sl_series_t *s = &t->slots[(h + i) & (t->cap - 1)];
        char *l = atomic_load_explicit((_Atomic(char *) *)&s->labels,
                                       memory_order_acquire);
        if (l == NULL)
            return NULL;
        if (s->hash == h && strcmp(l, labels) == 0)
            return s;
    }
    return NULL;
}

static sl_series_t *
series(sl_table_t *t, const char *labels)
{
    uint32_t h = hash(labels);
    for (size_t i = 0; i < t->cap; i++) {
        sl_series_t *s = &t->slots[(h + i) & (t->cap - 1)];
        char *l = atomic_load_explicit((_Atomic(char *) *)&s->labels,
                                       memory_order_acquire);
        if (l == NULL) {
            if (atomic_load(&t->used) >= t->cap / 2)
                return NULL; /* full enough: drop, never thrash */
            char *copy = strdup(labels);
            if (copy == NULL)
                return NULL;
            s->hash = h;
            /* Publish the key last: a scrape sees a whole series or none. */
            atomic_store_explicit((_Atomic(char *) *)&s->labels, copy,
                                  memory_order_release);
            atomic_fetch_add(&t->used, 1);
            return s;
        }
        if (s->hash == h && strcmp(l, labels) == 0)
            return s;
    }
    return NULL;
}

static void
bump(atomic_uint_fast64_t *a, uint64_t v)
{
    /* One writer per table: load + store, no locked instruction. */
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

void
sl_metrics_add(sl_metrics_t *m, sl_metric_family_t f, const char *labels,
               uint64_t v)
{
    sl_series_t *s = series(&m->t[f], labels);
    if (s != NULL)
        bump(&s->value, v);
}

void
sl_metrics_observe(sl_metrics_t *m, sl_metric_family_t f, const char *labels,
                   double seconds)
{
    sl_series_t *s = series(&m->t[f], labels);
    if (s == NULL)
        return;
    bump(&s->value, 1);
    bump(&s->sum_us, (uint64_t)(seconds * 1e6));
    for (int b = 0; b < SL_M_BUCKETS; b++)
        if (seconds <= bucket_le[b]) {
            bump(&s->buckets[b], 1); /* cumulated at render time */
            break;
        }
}

/* Label values come from the config or are escaped here. */
static size_t
esc(char *out, size_t cap, const char *v)
{
    size_t n = 0;
    for (; v && *v && n + 2 < cap; v++) {
        if (*v == '"' || *v == '\\' || *v == '\n') {
            out[n++] = '\\';
            out[n++] = *v == '\n' ? 'n' : *v;
        } else {
            out[n++] = *v;
        }
    }
    out[n] = '\0';
    return n;
}

/* What a request's label sets resolve to, cached per worker: a request
 * whose route, model, provider and status were seen before on the same
 * snapshot does arithmetic only. The key is pointers the snapshot owns
 * (its route, model and provider names), valid as long as the snapshot,
 * and the snapshot's generation, so a reload never matches an old entry.
 * A series is resolved the first time it is needed, so the cache adds no
 * series the request did not count. */
enum {
    C_REQ,
    C_REQ_SEC,
    C_OVERHEAD,
    C_ABORTS,
    C_UP_SEC,
    C_TTFT,
    C_TOK0,
    C_COST = C_TOK0 + 4,
    C_ATTEMPTS,
    C_N
};
#define SL_M_CACHE 64 /* a power of two */

typedef struct {
    const void *snap;
    uint64_t gen;
    const void *route, *model, *provider;
    int status;
    sl_series_t *s[C_N];
} sl_mcache_t;

struct sl_metrics_cache {
    sl_mcache_t e[SL_M_CACHE];
};

static sl_mcache_t *
cache_get(sl_metrics_t *m, const sl_request_t *r, const void *model) {
    const void *snap = r->snap;
    if (snap == NULL) /* nothing holds its config's pointers: no cache */
        return NULL;
    /* A Lua sub-request's route lives in its own arena: its address may
     * come back for another route once that is freed. Only the config's
     * routes are keys. */
    uintptr_t rt = (uintptr_t)r->route, first = (uintptr_t)r->cfg->routes;
    if (r->route != NULL &&
        (rt < first || rt >= first + r->cfg->nroutes * sizeof(sl_route_t)))
        return NULL;
    if (m->cache == NULL && (m->cache = calloc(1, sizeof(*m->cache))) == NULL)
        return NULL;
    uint64_t gen = r->snap->generation;
    uintptr_t h = (uintptr_t)r->route ^ (uintptr_t)model * 31 ^
                  (uintptr_t)r->provider * 131 ^ (uintptr_t)r->status * 7919;
    h ^= h >> 17;
    sl_mcache_t *e = &m->cache->e[(h ^ h >> 7) & (SL_M_CACHE - 1)];
    if (e->snap == snap && e->gen == gen && e->route == r->route &&
        e->model == model && e->provider == r->provider &&
        e->status == r->status)
        return e;
    memset(e, 0, sizeof(*e));
    e->snap = snap;
    e->gen = gen;
    e->route = r->route;
    e->model = model;
    e->provider = r->provider;
    e->status = r->status;
    return e;
}

/* The label values of a request, escaped. */
typedef struct {
    char route[128], model[128], provider[128];
} sl_mlabels_t;

static const char *
model_label(const sl_request_t *r, const void **key) {
    /* A model the config does not name (a direct provider/model, a typo)
     * must not become a label value: labels stay bounded. */
    static const char direct[] = "direct", unknown[] = "unknown", none[] = "";
    const sl_model_t *cm =
        r->model != NULL ? sl_config_model(r->cfg, r->model, strlen(r->model))
                         : NULL;
    const char *name = cm != NULL                                ? cm->name
                       : r->model != NULL && r->provider != NULL ? direct
                       : r->model != NULL                        ? unknown
                                                                 : none;
    *key = cm != NULL ? (const void *)cm : (const void *)name;
    return name;
}

/* Resolves slot c of e: the label set is built only on a miss. */
static sl_series_t *
slot(sl_metrics_t *m, sl_mcache_t *e, int c, const sl_request_t *r,
     const char *mname) {
    if (e != NULL && e->s[c] != NULL)
        return e->s[c];
    sl_mlabels_t lv;
    char labels[512];
    esc(lv.route, sizeof(lv.route), r->route ? r->route->path : "none");
    esc(lv.model, sizeof(lv.model), mname);
    esc(lv.provider, sizeof(lv.provider), r->provider ? r->provider : "");
    static const char *const kinds[] = {"prompt", "completion", "cached",
                                        "reasoning"};
    sl_metric_family_t f;
    switch (c) {
    case C_REQ:
        f = SL_M_REQUESTS;
        snprintf(labels, sizeof(labels),
                 "route=\"%s\",model=\"%s\",provider=\"%s\",status=\"%d\"",
                 lv.route, lv.model, lv.provider, r->status);
        break;
    case C_REQ_SEC:
    case C_OVERHEAD:
    case C_ABORTS:
        f = c == C_REQ_SEC    ? SL_M_REQUEST_SECONDS
            : c == C_OVERHEAD ? SL_M_OVERHEAD_SECONDS
                              : SL_M_CLIENT_ABORTS;
        snprintf(labels, sizeof(labels), "route=\"%s\"", lv.route);
        break;
    case C_UP_SEC:
    case C_TTFT:
        f = c == C_UP_SEC ? SL_M_UPSTREAM_SECONDS : SL_M_TTFT_SECONDS;
        snprintf(labels, sizeof(labels), "provider=\"%s\"", lv.provider);
        break;
    case C_COST:
        f = SL_M_COST;
        snprintf(labels, sizeof(labels), "model=\"%s\",provider=\"%s\"",
                 lv.model, lv.provider);
        break;
    case C_ATTEMPTS:
        f = SL_M_ATTEMPTS;
        snprintf(labels, sizeof(labels), "model=\"%s\"", lv.model);
        break;
    default:
        f = SL_M_TOKENS;
        snprintf(labels, sizeof(labels),
                 "model=\"%s\",provider=\"%s\",kind=\"%s\"", lv.model,
                 lv.provider, kinds[c - C_TOK0]);
        break;
    }
    sl_series_t *s = series(&m->t[f], labels);
    if (e != NULL)
        e->s[c] = s;
    return s;
}

static void
count(sl_series_t *s, uint64_t v) {
    if (s != NULL)
        bump(&s->value, v);
}

static void
observe_us(sl_series_t *s, uint64_t us) {
    if (s == NULL)
        return;
    bump(&s->value, 1);
    bump(&s->sum_us, us);
    for (int b = 0; b < SL_M_BUCKETS; b++)
        if (us <= bucket_us[b]) {
            bump(&s->buckets[b], 1); /* cumulated at render time */
            break;
        }
}

void
sl_metrics_request_done(sl_metrics_t *m, const sl_request_t *r,
                        uint64_t now_us) {
    if (m == NULL)
        return;
    const void *mkey;
    const char *mname = model_label(r, &mkey);
    sl_mcache_t *e = cache_get(m, r, mkey);
    count(slot(m, e, C_REQ, r, mname), 1);

    uint64_t total =
        r->t_start && now_us > r->t_start ? now_us - r->t_start : 0;
    uint64_t up = r->upstream_us;
    observe_us(slot(m, e, C_REQ_SEC, r, mname), total);
    observe_us(slot(m, e, C_OVERHEAD, r, mname), total > up ? total - up : 0);
    if (r->client_gone)
        count(slot(m, e, C_ABORTS, r, mname), 1);
    if (r->provider == NULL)
        return;
    if (up > 0)
        observe_us(slot(m, e, C_UP_SEC, r, mname), up);
    if (r->streaming && r->t_first_byte > r->t_start)
        observe_us(slot(m, e, C_TTFT, r, mname), r->t_first_byte - r->t_start);
    /* cached is part of prompt and reasoning part of completion: a sum
     * over every kind counts them twice. */
    long counts[] = {r->prompt_tokens, r->completion_tokens,
                     r->cached_tokens, r->reasoning_tokens};
    for (int i = 0; i < 4; i++)
        if (counts[i] > 0)
            count(slot(m, e, C_TOK0 + i, r, mname), (uint64_t)counts[i]);
    if (r->cost_micros > 0)
        count(slot(m, e, C_COST, r, mname), (uint64_t)r->cost_micros);
    if (r->attempts > 1)
        count(slot(m, e, C_ATTEMPTS, r, mname), (uint64_t)r->attempts - 1);
}

/* A growing output buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} sl_out_t;

static void __attribute__((format(printf, 2, 3)))
outf(sl_out_t *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL,
                          o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (o->p != NULL && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap ? o->cap * 2 : 65536) + (size_t)n;
        char *np = realloc(o->p, cap);
        if (np == NULL)
            return;
        o->p = np;
        o->cap = cap;
    }
}

/* Sums family f over the workers into one table (the first worker's label
 * order), then prints it. */
static void
render_family(sl_out_t *o, sl_server_t *srv, int f)
{
    int nw = srv->nworkers;
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", families[f].name,
         families[f].help, families[f].name,
         families[f].histogram ? "histogram" : "counter");
    for (int w = 0; w < nw; w++) {
        sl_table_t *t = &srv->workers[w].metrics->t[f];
        for (size_t i = 0; i < t->cap; i++) {
            char *l = atomic_load_explicit(
                (_Atomic(char *) *)&t->slots[i].labels, memory_order_acquire);
            if (l == NULL)
                continue;
            /* Print each label set once: at the first worker that has it. */
            int seen = 0;
            for (int v = 0; v < w && !seen; v++)
                seen = find(&srv->workers[v].metrics->t[f], l) != NULL;
            if (seen)
                continue;
            uint64_t value = 0, sum = 0, b[SL_M_BUCKETS] = {0};
            for (int v = w; v < nw; v++) {
                sl_series_t *x = find(&srv->workers[v].metrics->t[f], l);
                if (x == NULL)
                    continue;
                value += atomic_load_explicit(&x->value, memory_order_relaxed);
                sum += atomic_load_explicit(&x->sum_us, memory_order_relaxed);
                for (int k = 0; k < SL_M_BUCKETS; k++)
                    b[k] += atomic_load_explicit(&x->buckets[k],
                                                 memory_order_relaxed);
            }
            if (f == SL_M_COST) {
                outf(o, "%s{%s} %llu.%06llu\n", families[f].name, l,
                     (unsigned long long)(value / 1000000),
                     (unsigned long long)(value % 1000000));
                continue;
            }
            if (!families[f].histogram) {
                outf(o, "%s{%s} %llu\n", families[f].name, l,
                     (unsigned long long)value);
                continue;
            }
            uint64_t cum = 0;
            for (int k = 0; k < SL_M_BUCKETS; k++) {
                cum += b[k];
                outf(o, "%s_bucket{%s,le=\"%g\"} %llu\n", families[f].name, l,
                     bucket_le[k], (unsigned long long)cum);
            }
            outf(o, "%s_bucket{%s,le=\"+Inf\"} %llu\n", families[f].name, l,
                 (unsigned long long)value);
            outf(o, "%s_sum{%s} %.6f\n", families[f].name, l,
                 (double)sum / 1e6);
            outf(o, "%s_count{%s} %llu\n", families[f].name, l,
                 (unsigned long long)value);
        }
    }
}

char *
sl_metrics_render(sl_server_t *srv)
{
    sl_out_t o = {0};
    for (int f = 0; f < SL_M_NFAMILIES; f++)
        render_family(&o, srv, f);
    long conns = 0;
    for (int w = 0; w < srv->nworkers; w++)
        conns += __atomic_load_n(&srv->workers[w].nconns, __ATOMIC_RELAXED);
    outf(&o, "# HELP sluice_open_connections Client connections open now.\n"
             "# TYPE sluice_open_connections gauge\n"
             "sluice_open_connections %ld\n", conns);
    outf(&o, "# HELP sluice_reloads_total Config reloads.\n"
             "# TYPE sluice_reloads_total counter\n"
             "sluice_reloads_total{result=\"ok\"} %ld\n"
             "sluice_reloads_total{result=\"rejected\"} %ld\n",
         atomic_load(&srv->reloads_ok), atomic_load(&srv->reloads_rejected));
    sl_snapshot_t *snap = atomic_load(&srv->current);
    const sl_config_t *cfg = snap->cfg;
    int64_t now = (int64_t)(sl_now_us() / 1000u);
    outf(&o, "# HELP sluice_breaker_state Circuit breaker per target: 0 "
             "closed, 1 open, 2 half-open.\n"
             "# TYPE sluice_breaker_state gauge\n"
             "# HELP sluice_target_outstanding Calls in flight per target.\n"
             "# TYPE sluice_target_outstanding gauge\n");
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const sl_model_t *m = &cfg->models[i];
        for (int pass = 0; pass < 2; pass++) {
            const sl_target_t *t = pass ? m->fallback : m->targets;
            size_t n = pass ? m->nfallback : m->ntargets;
            for (size_t k = 0; k < n; k++) {
                char a[128], p[128], tm[128];
                esc(a, sizeof(a), m->name);
                esc(p, sizeof(p), t[k].provider->name);
                esc(tm, sizeof(tm), t[k].model);
                outf(&o,
                     "sluice_breaker_state{model=\"%s\",provider=\"%s\","
                     "target_model=\"%s\"} %d\n",
                     a, p, tm, (int)sl_balancer_state(m, &t[k], now));
                outf(&o,
                     "sluice_target_outstanding{model=\"%s\",provider=\"%s\","
                     "target_model=\"%s\"} %ld\n",
                     a, p, tm,
                     t[k].state ? atomic_load(&t[k].state->outstanding) : 0);
            }
        }
    }
    if (srv->store != NULL) {
        sl_store_stats_t st;
        sl_store_stats(srv->store, &st);
        outf(&o,
             "# HELP sluice_store_map_bytes LMDB map size per environment.\n"
             "# TYPE sluice_store_map_bytes gauge\n"
             "sluice_store_map_bytes{env=\"durable\"} %zu\n"
             "sluice_store_map_bytes{env=\"buffered\"} %zu\n"
             "# HELP sluice_store_commits_total Store write transactions.\n"
             "# TYPE sluice_store_commits_total counter\n"
             "sluice_store_commits_total %llu\n"
             "# HELP sluice_store_map_full_total Writes refused: map full.\n"
             "# TYPE sluice_store_map_full_total counter\n"
             "sluice_store_map_full_total %llu\n"
             "# HELP sluice_store_queued_bytes Writes waiting to commit.\n"
             "# TYPE sluice_store_queued_bytes gauge\n"
             "sluice_store_queued_bytes %zu\n",
             st.map_size[0], st.map_size[1],
             (unsigned long long)st.commits,
             (unsigned long long)st.map_full, st.queued_bytes);
    }
    return o.p;
}
