/* The usage ledger: per-worker sums flushed as store counters, and the
 * queries that read them back. */
#include "ledger.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SL_LEDGER_SLOTS 256 /* a power of two; full: flush at once */
#define SL_LEDGER_HOURLY_TTL_MS (90LL * 86400 * 1000)
#define SL_LEDGER_SCAN_MAX 4000000 /* entries one query may read */

static const char field_code[SL_U_NFIELDS] = {'r', 'p', 'c', 'k',
                                              'x', '$', 'h', 'e'};
static const char *const field_names[SL_U_NFIELDS] = {
    "requests",         "prompt_tokens", "completion_tokens", "cached_tokens",
    "reasoning_tokens", "cost_usd",      "cache_hits",        "errors"};

const char *
sl_usage_field_name(int f) {
    return f >= 0 && f < SL_U_NFIELDS ? field_names[f] : NULL;
}

typedef struct {
    char *consumer; /* NULL: a free slot */
    char *model;
    int64_t hour; /* unix time / 3600 */
    uint32_t hash;
    int64_t v[SL_U_NFIELDS];
} sl_ledger_entry_t;

struct sl_ledger {
    sl_store_t *st;
    struct event *timer;
    struct timeval tv;
    int armed;
    size_t used;
    sl_ledger_entry_t e[SL_LEDGER_SLOTS];
};

static void
on_timer(evutil_socket_t fd, short what, void *arg) {
    sl_ledger_t *l = arg;
    (void)fd, (void)what;
    l->armed = 0;
    sl_ledger_flush(l);
}

sl_ledger_t *
sl_ledger_new(struct event_base *base, sl_store_t *st, long flush_ms) {
    sl_ledger_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->st = st;
    if (flush_ms < 10)
        flush_ms = 10;
    l->tv.tv_sec = flush_ms / 1000;
    l->tv.tv_usec = (flush_ms % 1000) * 1000;
    l->timer = evtimer_new(base, on_timer, l);
    if (l->timer == NULL) {
        free(l);
        return NULL;
    }
    return l;
}

static uint32_t
hash3(int64_t hour, const char *a, const char *b) {
    uint32_t h = 2166136261u ^ (uint32_t)hour;
    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 16777619u;
    return h;
}

/* "YYYYMMDDHH" (hourly) or "YYYYMMDD" for a unix time. */
static size_t
bucket(char *out, size_t cap, int64_t t, int daily) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    return strftime(out, cap, daily ? "%Y%m%d" : "%Y%m%d%H", &tm);
}

static size_t
ledger_key(char *out, size_t cap, const char *b, const char *consumer,
           const char *model, char field) {
    size_t bl = strlen(b), cl = strlen(consumer), ml = strlen(model);
    /* Keys stay well under LMDB's 511 bytes. */
    if (cl > 200)
        cl = 200;
    if (ml > 200)
        ml = 200;
    if (bl + cl + ml + 4 > cap)
        return 0;
    size_t n = 0;
    memcpy(out + n, b, bl);
    n += bl;
    out[n++] = '\0';
    memcpy(out + n, consumer, cl);
    n += cl;
    out[n++] = '\0';
    memcpy(out + n, model, ml);
    n += ml;
    out[n++] = '\0';
    out[n++] = field;
    return n;
}

void
sl_ledger_flush(sl_ledger_t *l) {
    if (l == NULL)
        return;
    for (size_t i = 0; i < SL_LEDGER_SLOTS && l->used > 0; i++) {
        sl_ledger_entry_t *e = &l->e[i];
        if (e->consumer == NULL)
            continue;
        for (int daily = 0; daily < 2 && l->st != NULL; daily++) {
            char b[16], key[512];
            bucket(b, sizeof(b), e->hour * 3600, daily);
            for (int f = 0; f < SL_U_NFIELDS; f++) {
                if (e->v[f] == 0)
                    continue;
                size_t kl = ledger_key(key, sizeof(key), b, e->consumer,
                                       e->model, field_code[f]);
                /* Fire and forget: a failed write is counted by the
                 * store and reported on stderr. */
                if (kl > 0)
                    sl_store_incr_async(
                        l->st, SL_STORE_USAGE, daily ? "usage.d" : "usage.h",
                        key, kl, e->v[f], daily ? 0 : SL_LEDGER_HOURLY_TTL_MS,
                        NULL, NULL);
            }
        }
        free(e->consumer);
        free(e->model);
        memset(e, 0, sizeof(*e));
        l->used--;
    }
    l->used = 0;
}

void
sl_ledger_add(sl_ledger_t *l, int64_t t, const char *consumer,
              const char *model, const int64_t v[SL_U_NFIELDS]) {
    if (l == NULL)
        return;
    int64_t hour = t / 3600;
    uint32_t h = hash3(hour, consumer, model);
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < SL_LEDGER_SLOTS; i++) {
            sl_ledger_entry_t *e = &l->e[(h + i) & (SL_LEDGER_SLOTS - 1)];
            if (e->consumer == NULL) {
                if (l->used >= SL_LEDGER_SLOTS * 3 / 4)
                    break; /* flush, then insert into an empty table */
                e->consumer = strdup(consumer);
                e->model = strdup(model);
                if (e->consumer == NULL || e->model == NULL) {
                    free(e->consumer);
                    free(e->model);
                    e->consumer = e->model = NULL;
                    return;
                }
                e->hour = hour;
                e->hash = h;
                l->used++;
            } else if (e->hash != h || e->hour != hour ||
                       strcmp(e->consumer, consumer) != 0 ||
                       strcmp(e->model, model) != 0) {
                continue;
            }
            for (int f = 0; f < SL_U_NFIELDS; f++)
                e->v[f] += v[f];
            if (!l->armed && evtimer_add(l->timer, &l->tv) == 0)
                l->armed = 1;
            return;
        }
        sl_ledger_flush(l);
    }
}

void
sl_ledger_free(sl_ledger_t *l) {
    if (l == NULL)
        return;
    sl_ledger_flush(l);
    event_free(l->timer);
    free(l);
}

/* ---- queries ---- */

const char *
sl_usage_group_name(sl_usage_group_t g) {
    static const char *const names[] = {"hour", "day", "consumer", "model"};
    return g <= SL_GROUP_MODEL ? names[g] : "?";
}

int
sl_usage_parse_group(const char *s, sl_usage_group_t *out) {
    for (int g = SL_GROUP_HOUR; g <= SL_GROUP_MODEL; g++)
        if (strcmp(s, sl_usage_group_name((sl_usage_group_t)g)) == 0) {
            *out = (sl_usage_group_t)g;
            return 0;
        }
    return SL_EINVAL;
}

int
sl_usage_parse_time(const char *s, int64_t *out) {
    size_t n = strlen(s);
    if (n > 0 && n <= 12 && strspn(s, "0123456789") == n) {
        *out = strtoll(s, NULL, 10);
        return 0;
    }
    struct tm tm = {0};
    int y, mo, d, h = 0, mi = 0, sec = 0, used = 0;
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
        return SL_EINVAL;
    const char *p = s + 10;
    if (*p == 'T' || *p == ' ') {
        int k = 0;
        if (sscanf(p + 1, "%2d%n", &h, &k) != 1 || k != 2)
            return SL_EINVAL;
        p += 3;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &mi, &k) != 1 || k != 2)
                return SL_EINVAL;
            p += 3;
            if (*p == ':') {
                if (sscanf(p + 1, "%2d%n", &sec, &k) != 1 || k != 2)
                    return SL_EINVAL;
                p += 3;
            }
        }
    }
    if (*p == 'Z')
        p++;
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
        mi > 59 || sec > 60 || h < 0 || mi < 0 || sec < 0)
        return SL_EINVAL;
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = (int64_t)timegm(&tm);
    return 0;
}

typedef struct {
    const sl_usage_query_t *q;
    sl_usage_result_t *res;
    char stop[16]; /* "" = none */
    size_t last;   /* the row the previous entry went to */
    long scanned;
    int rc;
} scan_ctx_t;

static sl_usage_row_t *
row_for(scan_ctx_t *c, const char *key) {
    sl_usage_result_t *res = c->res;
    if (c->last < res->n && strcmp(res->rows[c->last].key, key) == 0)
        return &res->rows[c->last];
    for (size_t i = 0; i < res->n; i++)
        if (strcmp(res->rows[i].key, key) == 0) {
            c->last = i;
            return &res->rows[i];
        }
    if (res->n == res->cap) {
        size_t cap = res->cap ? res->cap * 2 : 16;
        sl_usage_row_t *nr = realloc(res->rows, cap * sizeof(*nr));
        if (nr == NULL)
            return NULL;
        res->rows = nr;
        res->cap = cap;
    }
    sl_usage_row_t *r = &res->rows[res->n];
    memset(r, 0, sizeof(*r));
    if ((r->key = strdup(key)) == NULL)
        return NULL;
    c->last = res->n++;
    return r;
}

static int
on_entry(void *ud, const void *key, size_t klen, const void *val, size_t vlen,
         int64_t expires_at) {
    scan_ctx_t *c = ud;
    (void)expires_at;
    if (++c->scanned > SL_LEDGER_SCAN_MAX) {
        c->rc = SL_ETOOBIG;
        return 1;
    }
    const char *k = key, *end = k + klen;
    const char *b = k, *cons = memchr(b, '\0', klen);
    if (cons == NULL)
        return 0;
    size_t bl = (size_t)(cons - b);
    if (c->stop[0] != '\0' &&
        (bl >= strlen(c->stop) ? memcmp(b, c->stop, strlen(c->stop)) >= 0 : 0))
        return 1; /* past the range: keys are in time order */
    cons++;
    const char *model = memchr(cons, '\0', (size_t)(end - cons));
    if (model == NULL)
        return 0;
    size_t cl = (size_t)(model - cons);
    model++;
    const char *fld = memchr(model, '\0', (size_t)(end - model));
    if (fld == NULL || fld + 2 != end)
        return 0;
    size_t ml = (size_t)(fld - model);
    int f = -1;
    for (int i = 0; i < SL_U_NFIELDS; i++)
        if (field_code[i] == fld[1])
            f = i;
    int64_t v;
    if (f < 0 || vlen != sizeof(v))
        return 0;
    memcpy(&v, val, sizeof(v));
    const sl_usage_query_t *q = c->q;
    if (q->consumer != NULL &&
        (strlen(q->consumer) != cl || memcmp(q->consumer, cons, cl) != 0))
        return 0;
    if (q->model != NULL &&
        (strlen(q->model) != ml || memcmp(q->model, model, ml) != 0))
        return 0;
    char gk[256];
    switch (q->group) {
    case SL_GROUP_HOUR:
        if (bl != 10)
            return 0;
        snprintf(gk, sizeof(gk), "%.4s-%.2s-%.2sT%.2s:00:00Z", b, b + 4, b + 6,
                 b + 8);
        break;
    case SL_GROUP_DAY:
        snprintf(gk, sizeof(gk), "%.4s-%.2s-%.2s", b, b + 4, b + 6);
        break;
    case SL_GROUP_CONSUMER:
        snprintf(gk, sizeof(gk), "%.*s", (int)cl, cons);
        break;
    default: snprintf(gk, sizeof(gk), "%.*s", (int)ml, model); break;
    }
    sl_usage_row_t *r = row_for(c, gk);
    if (r == NULL) {
        c->rc = SL_ENOMEM;
        return 1;
    }
    r->v[f] += v;
    c->res->total[f] += v;
    return 0;
}

static int
cmp_rows(const void *a, const void *b) {
    return strcmp(((const sl_usage_row_t *)a)->key,
                  ((const sl_usage_row_t *)b)->key);
}

int
sl_ledger_query(sl_store_t *st, const sl_usage_query_t *q,
                sl_usage_result_t *out) {
    memset(out, 0, sizeof(*out));
    /* Day rollups answer whenever the range is whole days: one entry per
     * day instead of 24. */
    int daily =
        q->group != SL_GROUP_HOUR && q->from % 86400 == 0 && q->to % 86400 == 0;
    out->daily = daily;
    scan_ctx_t c = {.q = q, .res = out};
    char start[16] = "";
    size_t slen = 0;
    if (q->from > 0)
        slen = bucket(start, sizeof(start), q->from, daily);
    if (q->to > 0) {
        /* The first bucket that starts at or after `to` ends the scan. */
        int64_t unit = daily ? 86400 : 3600;
        int64_t t = (q->to + unit - 1) / unit * unit;
        bucket(c.stop, sizeof(c.stop), t, daily);
    }
    int rc = sl_store_scan(st, SL_STORE_USAGE, daily ? "usage.d" : "usage.h",
                           start, slen, on_entry, &c);
    if (rc == 0)
        rc = c.rc;
    if (out->n > 1)
        qsort(out->rows, out->n, sizeof(*out->rows), cmp_rows);
    return rc;
}

void
sl_usage_result_free(sl_usage_result_t *res) {
    for (size_t i = 0; i < res->n; i++)
        free(res->rows[i].key);
    free(res->rows);
    memset(res, 0, sizeof(*res));
}

static void
add_fields(cJSON *o, const int64_t *v) {
    for (int f = 0; f < SL_U_NFIELDS; f++) {
        if (f == SL_U_COST) {
            /* Printed from the integer so it never shows float noise. */
            char s[48];
            snprintf(s, sizeof(s), "%lld.%06lld", (long long)(v[f] / 1000000),
                     (long long)(v[f] % 1000000));
            cJSON_AddItemToObject(o, field_names[f], cJSON_CreateRaw(s));
        } else {
            cJSON_AddNumberToObject(o, field_names[f], (double)v[f]);
        }
    }
}

static void
add_time(cJSON *o, const char *name, int64_t t) {
    if (t <= 0) {
        cJSON_AddNullToObject(o, name);
        return;
    }
    char s[32];
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(o, name, s);
}

cJSON *
sl_usage_result_json(const sl_usage_query_t *q, const sl_usage_result_t *res) {
    cJSON *j = cJSON_CreateObject();
    if (j == NULL)
        return NULL;
    const char *g = sl_usage_group_name(q->group);
    cJSON_AddStringToObject(j, "group_by", g);
    add_time(j, "from", q->from);
    add_time(j, "to", q->to);
    if (q->consumer != NULL)
        cJSON_AddStringToObject(j, "consumer", q->consumer);
    if (q->model != NULL)
        cJSON_AddStringToObject(j, "model", q->model);
    cJSON *rows = cJSON_AddArrayToObject(j, "rows");
    for (size_t i = 0; i < res->n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, g, res->rows[i].key);
        add_fields(o, res->rows[i].v);
        cJSON_AddItemToArray(rows, o);
    }
    cJSON *t = cJSON_AddObjectToObject(j, "total");
    add_fields(t, res->total);
    return j;
}
