/* The "pricing" and "budgets" config sections and cost arithmetic. */
#include "pricing.h"
#include "error.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* $ per 1M tokens above this is a typo, not a price. */
#define SL_PRICE_MAX 10000.0
#define SL_BUDGET_USD_MAX 1e9

static const cJSON *
member(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static int
dup_key(const cJSON *obj, const cJSON *item) {
    for (const cJSON *o = obj->child; o != NULL && o != item; o = o->next)
        if (strcmp(o->string, item->string) == 0)
            return 1;
    return 0;
}

static int
known_keys(const cJSON *obj, const char *path, const char *const *keys,
           sl_config_errors_t *errs) {
    int bad = 0;
    char p[256];
    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        int ok = 0;
        for (size_t i = 0; keys[i] != NULL && !ok; i++)
            ok = strcmp(keys[i], it->string) == 0;
        sl_config_path_key(p, sizeof(p), path, it->string);
        if (dup_key(obj, it)) {
            sl_config_error_add(errs, 0, p, "duplicate key");
            bad = 1;
        } else if (!ok) {
            sl_config_error_add(errs, 0, p, "unknown key");
            bad = 1;
        }
    }
    return bad;
}

/* A number in [0, max]; 1 when set, 0 when absent, -1 when wrong. */
static int
get_amount(const cJSON *obj, const char *path, const char *key, double max,
           double *out, sl_config_errors_t *errs) {
    const cJSON *v = member(obj, key);
    char p[256];
    if (v == NULL)
        return 0;
    sl_config_path_key(p, sizeof(p), path, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > max) {
        sl_config_error_add(errs, 0, p, "must be a number between 0 and %g",
                            max);
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

static int
load_price(sl_price_t *pr, const cJSON *v, const char *path,
           sl_config_errors_t *errs) {
    static const char *const keys[] = {"input", "output", "cached_input", NULL};
    char p[256];
    if (!cJSON_IsObject(v)) {
        sl_config_error_add(errs, 0, path, "must be an object");
        return -1;
    }
    int bad = known_keys(v, path, keys, errs);
    double in = 0, out = 0, cached = -1;
    static const char *const need[] = {"input", "output"};
    for (int i = 0; i < 2; i++)
        if (member(v, need[i]) == NULL) {
            sl_config_path_key(p, sizeof(p), path, need[i]);
            sl_config_error_add(errs, 0, p, "required");
            bad = 1;
        }
    bad |= get_amount(v, path, "input", SL_PRICE_MAX, &in, errs) < 0;
    bad |= get_amount(v, path, "output", SL_PRICE_MAX, &out, errs) < 0;
    bad |= get_amount(v, path, "cached_input", SL_PRICE_MAX, &cached, errs) < 0;
    /* Without a cached price, a cached token costs what any input does. */
    if (cached < 0)
        cached = in;
    pr->input = llround(in * 1e6);
    pr->output = llround(out * 1e6);
    pr->cached_input = llround(cached * 1e6);
    return bad ? -1 : 0;
}

static int
load_budget(sl_budget_conf_t *b, const cJSON *v, const char *path,
            sl_config_errors_t *errs) {
    static const char *const keys[] = {"daily_usd", "monthly_usd",
                                       "total_tokens", NULL};
    char p[256];
    if (!cJSON_IsObject(v)) {
        sl_config_error_add(errs, 0, path, "must be an object");
        return -1;
    }
    int bad = known_keys(v, path, keys, errs);
    double day = 0, month = 0;
    b->daily_micros = b->monthly_micros = b->total_tokens = -1;
    int n = 0, rc;
    if ((rc = get_amount(v, path, "daily_usd", SL_BUDGET_USD_MAX, &day,
                         errs)) != 0)
        n++, bad |= rc < 0;
    if ((rc = get_amount(v, path, "monthly_usd", SL_BUDGET_USD_MAX, &month,
                         errs)) != 0)
        n++, bad |= rc < 0;
    const cJSON *t = member(v, "total_tokens");
    if (t != NULL) {
        n++;
        sl_config_path_key(p, sizeof(p), path, "total_tokens");
        if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 1e15 ||
            t->valuedouble != floor(t->valuedouble)) {
            sl_config_error_add(errs, 0, p,
                                "must be an integer between 0 and 1e15");
            bad = 1;
        } else {
            b->total_tokens = (int64_t)t->valuedouble;
        }
    }
    if (n == 0 && !bad) {
        sl_config_error_add(errs, 0, path,
                            "set at least one of daily_usd, monthly_usd, "
                            "total_tokens");
        bad = 1;
    }
    /* 0 is a limit (nothing may be spent); absent is none. */
    if (member(v, "daily_usd") != NULL)
        b->daily_micros = llround(day * 1e6);
    if (member(v, "monthly_usd") != NULL)
        b->monthly_micros = llround(month * 1e6);
    return bad ? -1 : 0;
}

int
sl_usage_conf_load(const cJSON *pricing, const cJSON *budgets,
                   const cJSON *ledger, sl_usage_conf_t **out,
                   sl_config_errors_t *errs) {
    char p[256];
    int bad = 0;
    *out = NULL;
    sl_usage_conf_t *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return SL_ENOMEM;
    u->ledger = 1;
    if (ledger != NULL && !cJSON_IsBool(ledger)) {
        sl_config_error_add(errs, 0, "$.ledger", "must be true or false");
        bad = 1;
    } else if (ledger != NULL) {
        u->ledger = cJSON_IsTrue(ledger);
    }
    if (pricing != NULL && !cJSON_IsObject(pricing)) {
        sl_config_error_add(errs, 0, "$.pricing", "must be an object");
        bad = 1;
    } else if (pricing != NULL) {
        size_t n = (size_t)cJSON_GetArraySize(pricing);
        u->prices = calloc(n ? n : 1, sizeof(*u->prices));
        if (u->prices == NULL)
            goto oom;
        for (const cJSON *it = pricing->child; it != NULL; it = it->next) {
            sl_config_path_key(p, sizeof(p), "$.pricing", it->string);
            if (dup_key(pricing, it)) {
                sl_config_error_add(errs, 0, p, "duplicate key");
                bad = 1;
                continue;
            }
            if (it->string[0] == '\0') {
                sl_config_error_add(errs, 0, p, "a model name is required");
                bad = 1;
                continue;
            }
            sl_price_t *pr = &u->prices[u->nprices];
            if (load_price(pr, it, p, errs) != 0) {
                bad = 1;
                continue;
            }
            if ((pr->model = strdup(it->string)) == NULL)
                goto oom;
            u->nprices++;
        }
    }
    if (budgets != NULL && !cJSON_IsObject(budgets)) {
        sl_config_error_add(errs, 0, "$.budgets", "must be an object");
        bad = 1;
    } else if (budgets != NULL) {
        size_t n = (size_t)cJSON_GetArraySize(budgets);
        u->budgets = calloc(n ? n : 1, sizeof(*u->budgets));
        if (u->budgets == NULL)
            goto oom;
        for (const cJSON *it = budgets->child; it != NULL; it = it->next) {
            sl_config_path_key(p, sizeof(p), "$.budgets", it->string);
            if (dup_key(budgets, it)) {
                sl_config_error_add(errs, 0, p, "duplicate key");
                bad = 1;
                continue;
            }
            if (it->string[0] == '\0' || strlen(it->string) > 200) {
                sl_config_error_add(errs, 0, p,
                                    "a consumer name of 1 to 200 bytes is "
                                    "required");
                bad = 1;
                continue;
            }
            sl_budget_conf_t *b = &u->budgets[u->nbudgets];
            if (load_budget(b, it, p, errs) != 0) {
                bad = 1;
                continue;
            }
            if ((b->consumer = strdup(it->string)) == NULL)
                goto oom;
            u->nbudgets++;
        }
    }
    if (bad) {
        sl_usage_conf_free(u);
        return SL_ECONFIG;
    }
    *out = u;
    return 0;
oom:
    sl_usage_conf_free(u);
    return SL_ENOMEM;
}

void
sl_usage_conf_free(sl_usage_conf_t *u) {
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->nprices; i++)
        free(u->prices[i].model);
    free(u->prices);
    for (size_t i = 0; i < u->nbudgets; i++)
        free(u->budgets[i].consumer);
    free(u->budgets);
    free(u);
}

static const sl_price_t *
find(const sl_usage_conf_t *u, const char *a, size_t alen, const char *b) {
    size_t blen = b != NULL ? strlen(b) : 0;
    for (size_t i = 0; i < u->nprices; i++) {
        const char *m = u->prices[i].model;
        size_t mlen = strlen(m);
        if (b == NULL) {
            if (mlen == alen && memcmp(m, a, alen) == 0)
                return &u->prices[i];
        } else if (mlen == alen + 1 + blen && memcmp(m, a, alen) == 0 &&
                   m[alen] == '/' && memcmp(m + alen + 1, b, blen) == 0) {
            return &u->prices[i];
        }
    }
    return NULL;
}

const sl_price_t *
sl_pricing_find(const sl_usage_conf_t *u, const char *provider,
                const char *target_model, const char *alias) {
    const sl_price_t *p = NULL;
    if (u == NULL || u->nprices == 0)
        return NULL;
    if (provider != NULL && target_model != NULL)
        p = find(u, provider, strlen(provider), target_model);
    if (p == NULL && target_model != NULL)
        p = find(u, target_model, strlen(target_model), NULL);
    if (p == NULL && alias != NULL)
        p = find(u, alias, strlen(alias), NULL);
    return p;
}

int64_t
sl_cost_micros(const sl_price_t *p, long prompt, long completion, long cached) {
    if (p == NULL)
        return 0;
    __int128 in = prompt > 0 ? prompt : 0;
    __int128 out = completion > 0 ? completion : 0;
    __int128 c = cached > 0 ? cached : 0;
    if (c > in)
        c = in; /* a provider never caches more than the prompt */
    __int128 pico = (in - c) * p->input + c * p->cached_input + out * p->output;
    __int128 micros = (pico + 500000) / 1000000;
    return micros > INT64_MAX ? INT64_MAX : (int64_t)micros;
}

const sl_budget_conf_t *
sl_budget_conf_find(const sl_usage_conf_t *u, const char *consumer) {
    if (u == NULL || consumer == NULL)
        return NULL;
    for (size_t i = 0; i < u->nbudgets; i++)
        if (strcmp(u->budgets[i].consumer, consumer) == 0)
            return &u->budgets[i];
    return NULL;
}
