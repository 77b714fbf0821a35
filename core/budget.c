/* Budget meters, admission and settlement. The table of consumers is
 * process-wide and lock-free (slots are claimed with a compare-and-swap
 * and never freed) because it must outlive every config snapshot and be
 * shared by every worker; it is bounded, and a consumer beyond it is
 * refused rather than let through unmetered. */
#include "budget.h"
#include "error.h"
#include "pricing.h"
#include "providers/provider.h"
#include "worker.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SL_BUDGET_SLOTS 4096 /* a power of two */
#define SL_BUDGET_NS "usage.b"
#define DAY_MS (86400LL * 1000)

enum { DIM_DAY, DIM_MONTH, DIM_TOKENS, NDIM };

typedef struct {
    _Atomic(char *) consumer; /* NULL: free slot */
    atomic_int loaded;        /* 0 no, 1 being read from the store, 2 yes */
    sl_meter_t m[NDIM];
} sl_budget_state_t;

static sl_budget_state_t states[SL_BUDGET_SLOTS];

struct sl_budget_hold {
    sl_budget_state_t *s;
    sl_store_t *store;
    int64_t est[NDIM];
    int64_t window[NDIM];
    int reserved[NDIM];
    int settled;
};

int64_t
sl_budget_day(int64_t t) {
    return t >= 0 ? t / 86400 : 0;
}

int64_t
sl_budget_month(int64_t t) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    return (int64_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
}

/* Moves a meter to a newer window: what was used before is forgotten. */
static void
roll(sl_meter_t *m, int64_t window) {
    int64_t w = atomic_load(&m->window);
    if (w < window && atomic_compare_exchange_strong(&m->window, &w, window)) {
        atomic_store(&m->used, 0);
        atomic_store(&m->spent, 0);
    }
}

int
sl_meter_reserve(sl_meter_t *m, int64_t window, int64_t est, int64_t limit) {
    roll(m, window);
    int64_t u = atomic_load(&m->used);
    do {
        if (limit >= 0 && (u >= limit || u + est > limit))
            return -1;
    } while (!atomic_compare_exchange_weak(&m->used, &u, u + est));
    return 0;
}

void
sl_meter_settle(sl_meter_t *m, int64_t window, int64_t reserved_window,
                int64_t est, int64_t actual) {
    roll(m, window);
    /* A reservation from a window that has ended is not in `used` now. */
    atomic_fetch_add(&m->used,
                     reserved_window == window ? actual - est : actual);
    atomic_fetch_add(&m->spent, actual);
}

static uint32_t
hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static size_t
state_key(char *out, size_t cap, const char *consumer, char dim,
          int64_t window) {
    size_t n = strlen(consumer);
    if (n + 32 > cap)
        n = cap - 32;
    memcpy(out, consumer, n);
    out[n++] = '\0';
    out[n++] = dim;
    if (dim != 't')
        n += (size_t)snprintf(out + n, cap - n, "%lld", (long long)window);
    return n;
}

/* Adds what the store says was spent in the current windows, once per
 * process: a restart keeps its budgets. */
static void
load(sl_budget_state_t *s, sl_store_t *st, int64_t now) {
    int expect = 0;
    if (st == NULL || atomic_load(&s->loaded) == 2 ||
        !atomic_compare_exchange_strong(&s->loaded, &expect, 1))
        return;
    const char *c = atomic_load(&s->consumer);
    static const char dims[NDIM] = {'d', 'm', 't'};
    int64_t win[NDIM] = {sl_budget_day(now), sl_budget_month(now), 0};
    for (int d = 0; d < NDIM; d++) {
        char key[256];
        size_t kl = state_key(key, sizeof(key), c, dims[d], win[d]);
        int64_t v = 0;
        if (sl_store_get_counter(st, SL_STORE_USAGE, SL_BUDGET_NS, key, kl, &v,
                                 NULL) != 0 ||
            v <= 0)
            continue;
        roll(&s->m[d], win[d]);
        if (atomic_load(&s->m[d].window) == win[d]) {
            atomic_fetch_add(&s->m[d].used, v);
            atomic_fetch_add(&s->m[d].spent, v);
        }
    }
    atomic_store(&s->loaded, 2);
}

/* The consumer's meters, created on first use; NULL when the table is
 * full or out of memory. */
static sl_budget_state_t *
state_of(const char *consumer) {
    uint32_t h = hash(consumer);
    char *copy = NULL;
    for (size_t i = 0; i < SL_BUDGET_SLOTS; i++) {
        sl_budget_state_t *s = &states[(h + i) & (SL_BUDGET_SLOTS - 1)];
        char *c = atomic_load(&s->consumer);
        if (c == NULL) {
            if (copy == NULL && (copy = strdup(consumer)) == NULL)
                return NULL;
            if (atomic_compare_exchange_strong(&s->consumer, &c, copy))
                return s;
            /* Someone else took the slot: c is theirs now. */
        }
        if (strcmp(c, consumer) == 0) {
            free(copy);
            return s;
        }
    }
    free(copy);
    return NULL;
}

/* Characters of text a call sends: messages' contents, or the input. */
static size_t
text_chars(const cJSON *v) {
    size_t n = 0;
    if (cJSON_IsString(v))
        return strlen(v->valuestring);
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v) {
            if (it->string != NULL && strcmp(it->string, "content") != 0 &&
                strcmp(it->string, "text") != 0)
                continue;
            n += text_chars(it);
        }
    }
    return n;
}

static void
estimate(sl_request_t *r, sl_call_t *k, int64_t *micros, int64_t *tokens) {
    const cJSON *j = k->json;
    size_t chars =
        k->kind == SL_CALL_CHAT
            ? text_chars(cJSON_GetObjectItemCaseSensitive(j, "messages"))
            : text_chars(cJSON_GetObjectItemCaseSensitive(j, "input"));
    long prompt = (long)((chars + 3) / 4), out = 0;
    const cJSON *mt =
        cJSON_GetObjectItemCaseSensitive(j, "max_completion_tokens");
    if (!cJSON_IsNumber(mt))
        mt = cJSON_GetObjectItemCaseSensitive(j, "max_tokens");
    if (cJSON_IsNumber(mt) && mt->valuedouble > 0 && mt->valuedouble < 1e9)
        out = (long)mt->valuedouble;
    const sl_target_t *t = k->nchain > 0 ? k->chain[0] : NULL;
    const sl_price_t *p =
        sl_pricing_find(r->cfg->usage, t ? t->provider->name : NULL,
                        t ? t->model : NULL, r->model);
    *micros = sl_cost_micros(p, prompt, out, 0);
    *tokens = prompt + out;
}

static void
refuse(sl_request_t *r, const char *consumer, int dim, int64_t used,
       int64_t limit, int64_t now) {
    char msg[512], ra[64] = "";
    if (dim == DIM_TOKENS) {
        snprintf(msg, sizeof(msg),
                 "budget exceeded: consumer '%.200s' has used %lld of its "
                 "%lld total tokens (requests in flight included)",
                 consumer, (long long)used, (long long)limit);
    } else {
        time_t tt = (time_t)now;
        struct tm tm;
        gmtime_r(&tt, &tm);
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        if (dim == DIM_DAY)
            tm.tm_mday++;
        else
            tm.tm_mday = 1, tm.tm_mon++;
        time_t reset = timegm(&tm);
        gmtime_r(&reset, &tm);
        char when[32];
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(
            msg, sizeof(msg),
            "budget exceeded: consumer '%.200s' has used $%lld.%06lld "
            "of its %s budget of $%lld.%06lld (requests in flight "
            "included); it resets at %s",
            consumer, (long long)(used / 1000000), (long long)(used % 1000000),
            dim == DIM_DAY ? "daily" : "monthly", (long long)(limit / 1000000),
            (long long)(limit % 1000000), when);
        snprintf(ra, sizeof(ra), "Retry-After: %lld\r\n",
                 (long long)(reset - now > 0 ? reset - now : 1));
    }
    sl_response_error_with(r, 429, msg, "budget_exceeded", ra[0] ? ra : NULL);
}

static void
hold_cleanup(void *arg) {
    sl_request_t *r = arg;
    sl_budget_settle(r, 0, 0); /* a request that never reached the log */
}

int
sl_budget_admit(sl_request_t *r, sl_call_t *k) {
    const char *consumer = r->consumer ? r->consumer : "anonymous";
    const sl_budget_conf_t *b = sl_budget_conf_find(r->cfg->usage, consumer);
    if (b == NULL)
        return 0;
    int64_t now = (int64_t)time(NULL);
    sl_budget_state_t *s = state_of(consumer);
    struct sl_budget_hold *h = sl_arena_calloc(r->arena, sizeof(*h));
    if (s == NULL || h == NULL ||
        sl_arena_cleanup_add(r->arena, hold_cleanup, r) != 0) {
        sl_response_error(r, 503, "cannot track this consumer's budget",
                          "server_busy");
        return -1;
    }
    sl_store_t *st =
        r->w != NULL && r->w->srv != NULL ? r->w->srv->store : NULL;
    load(s, st, now);
    h->s = s;
    h->store = st;
    estimate(r, k, &h->est[DIM_DAY], &h->est[DIM_TOKENS]);
    h->est[DIM_MONTH] = h->est[DIM_DAY];
    h->window[DIM_DAY] = sl_budget_day(now);
    h->window[DIM_MONTH] = sl_budget_month(now);
    h->window[DIM_TOKENS] = 0;
    const int64_t limit[NDIM] = {b->daily_micros, b->monthly_micros,
                                 b->total_tokens};
    for (int d = 0; d < NDIM; d++) {
        if (limit[d] < 0)
            continue;
        if (sl_meter_reserve(&s->m[d], h->window[d], h->est[d], limit[d]) !=
            0) {
            int64_t used = atomic_load(&s->m[d].used);
            for (int u = 0; u < d; u++)
                if (h->reserved[u])
                    sl_meter_settle(&s->m[u], h->window[u], h->window[u],
                                    h->est[u], 0);
            h->settled = 1;
            refuse(r, consumer, d, used, limit[d], now);
            return -1;
        }
        h->reserved[d] = 1;
    }
    r->budget = h;
    return 0;
}

/* What settlements spent waits on its worker and reaches the store as one
 * increment per consumer, dimension and window every
 * store.flush_interval_ms (and at the thread's exit): a settlement costs a
 * look-up in a small table, not a queued write and a wake-up of the
 * writer. Admission never reads these: the meters in memory are exact on
 * their own; the store only brings them back after a restart. */
#define PEND_MAX 64

typedef struct {
    sl_budget_state_t *s; /* slots are never freed */
    int64_t window, delta;
    int dim;
} pend_t;

typedef struct {
    sl_store_t *st;
    struct event *timer;
    struct timeval tv;
    int armed;
    size_t n;
    pend_t e[PEND_MAX];
} pending_t;

static const char dim_char[NDIM] = {'d', 'm', 't'};
static const int64_t dim_ttl[NDIM] = {3 * DAY_MS, 64 * DAY_MS, 0};

static void
persist(sl_store_t *st, sl_budget_state_t *s, int d, int64_t window,
        int64_t delta) {
    char key[256];
    size_t kl = state_key(key, sizeof(key), atomic_load(&s->consumer),
                          dim_char[d], window);
    sl_store_incr_async(st, SL_STORE_USAGE, SL_BUDGET_NS, key, kl, delta,
                        dim_ttl[d], NULL, NULL);
}

static void
pending_flush(pending_t *p) {
    for (size_t i = 0; i < p->n; i++)
        persist(p->st, p->e[i].s, p->e[i].dim, p->e[i].window, p->e[i].delta);
    p->n = 0;
    p->armed = 0;
}

static void
on_pending_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    pending_flush(arg);
}

/* Thread exit: the worker's loop has stopped; its event_base and the
 * store are freed after the join. */
static void
pending_exit(void *arg) {
    pending_t *p = arg;
    pending_flush(p);
    event_free(p->timer);
    free(p);
}

static pthread_key_t pending_key;
static pthread_once_t pending_once = PTHREAD_ONCE_INIT;
static int pending_key_ok;

static void
pending_key_make(void) {
    pending_key_ok = pthread_key_create(&pending_key, pending_exit) == 0;
}

/* The calling worker's table for st; NULL when there is none to be had
 * (the caller then writes at once). */
static pending_t *
pending_self(sl_store_t *st, struct event_base *base, long flush_ms) {
    pthread_once(&pending_once, pending_key_make);
    if (!pending_key_ok || base == NULL)
        return NULL;
    pending_t *p = pthread_getspecific(pending_key);
    if (p == NULL) {
        p = calloc(1, sizeof(*p));
        if (p == NULL)
            return NULL;
        p->timer = evtimer_new(base, on_pending_timer, p);
        if (p->timer == NULL || pthread_setspecific(pending_key, p) != 0) {
            if (p->timer != NULL)
                event_free(p->timer);
            free(p);
            return NULL;
        }
    } else if (p->st != st) {
        pending_flush(p); /* another store (tests): not mixed */
    }
    p->st = st;
    flush_ms = flush_ms > 0 ? flush_ms : 1000;
    p->tv.tv_sec = flush_ms / 1000;
    p->tv.tv_usec = (flush_ms % 1000) * 1000;
    return p;
}

static void
pending_add(pending_t *p, sl_budget_state_t *s, int d, int64_t window,
            int64_t delta) {
    for (size_t i = 0; i < p->n; i++) {
        pend_t *e = &p->e[i];
        if (e->s == s && e->dim == d && e->window == window) {
            e->delta += delta;
            return;
        }
    }
    if (p->n == PEND_MAX) {
        evtimer_del(p->timer);
        pending_flush(p);
    }
    p->e[p->n++] = (pend_t){s, window, delta, d};
    if (!p->armed && evtimer_add(p->timer, &p->tv) == 0)
        p->armed = 1;
}

void
sl_budget_settle(sl_request_t *r, int64_t cost, int64_t tokens) {
    struct sl_budget_hold *h = r->budget;
    if (h == NULL || h->settled)
        return;
    h->settled = 1;
    cost = cost > 0 ? cost : 0;
    tokens = tokens > 0 ? tokens : 0;
    int64_t now = (int64_t)time(NULL);
    int64_t win[NDIM] = {sl_budget_day(now), sl_budget_month(now), 0};
    int64_t actual[NDIM] = {cost, cost, tokens};
    pending_t *p = NULL;
    if (h->store != NULL && (cost > 0 || tokens > 0))
        p = pending_self(h->store, r->w != NULL ? r->w->base : NULL,
                         r->cfg != NULL ? r->cfg->store_flush_ms : 0);
    for (int d = 0; d < NDIM; d++) {
        /* Unlimited dimensions are metered too, for the report. */
        sl_meter_settle(&h->s->m[d], win[d], h->window[d],
                        h->reserved[d] ? h->est[d] : 0, actual[d]);
        if (h->store == NULL || actual[d] <= 0)
            continue;
        if (p != NULL)
            pending_add(p, h->s, d, win[d], actual[d]);
        else
            persist(h->store, h->s, d, win[d], actual[d]);
    }
}

static cJSON *
dim_json(const sl_meter_t *m, int64_t window, int64_t limit, int money) {
    cJSON *o = cJSON_CreateObject();
    int64_t used = 0, spent = 0;
    if (atomic_load(&m->window) == window) {
        used = atomic_load(&m->used);
        spent = atomic_load(&m->spent);
    }
    double scale = money ? 1e6 : 1;
    cJSON_AddNumberToObject(o, "limit", (double)limit / scale);
    cJSON_AddNumberToObject(o, "spent", (double)spent / scale);
    cJSON_AddNumberToObject(o, "reserved",
                            (double)(used > spent ? used - spent : 0) / scale);
    cJSON_AddNumberToObject(o, "remaining",
                            (double)(limit > used ? limit - used : 0) / scale);
    return o;
}

cJSON *
sl_budget_report(const sl_config_t *cfg, sl_store_t *st, const char *only) {
    cJSON *j = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(j, "budgets");
    const sl_usage_conf_t *u = cfg->usage;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; u != NULL && i < u->nbudgets; i++) {
        const sl_budget_conf_t *b = &u->budgets[i];
        if (only != NULL && strcmp(only, b->consumer) != 0)
            continue;
        sl_budget_state_t *s = state_of(b->consumer);
        if (s == NULL)
            continue;
        load(s, st, now);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "consumer", b->consumer);
        int64_t day = sl_budget_day(now), month = sl_budget_month(now);
        for (int d = 0; d < NDIM; d++)
            roll(&s->m[d], d == DIM_DAY ? day : d == DIM_MONTH ? month : 0);
        if (b->daily_micros >= 0)
            cJSON_AddItemToObject(
                o, "daily_usd",
                dim_json(&s->m[DIM_DAY], day, b->daily_micros, 1));
        if (b->monthly_micros >= 0)
            cJSON_AddItemToObject(
                o, "monthly_usd",
                dim_json(&s->m[DIM_MONTH], month, b->monthly_micros, 1));
        if (b->total_tokens >= 0)
            cJSON_AddItemToObject(
                o, "total_tokens",
                dim_json(&s->m[DIM_TOKENS], 0, b->total_tokens, 0));
        cJSON_AddItemToArray(arr, o);
    }
    return j;
}

void
sl_budget_describe_key(const sl_config_t *cfg, sl_store_t *st, cJSON *record) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(record, "name");
    cJSON *budget = NULL;
    if (cJSON_IsString(name) &&
        sl_budget_conf_find(cfg->usage, name->valuestring) != NULL) {
        cJSON *all = sl_budget_report(cfg, st, name->valuestring);
        cJSON *arr = cJSON_GetObjectItemCaseSensitive(all, "budgets");
        cJSON *one = cJSON_DetachItemFromArray(arr, 0);
        cJSON_Delete(all);
        if (one != NULL) {
            cJSON_DeleteItemFromObjectCaseSensitive(one, "consumer");
            budget = one;
        }
    }
    cJSON_AddItemToObject(record, "budget",
                          budget != NULL ? budget : cJSON_CreateNull());
}
