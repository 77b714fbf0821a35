/* The log phase's usage work and the admin endpoints over the ledger and
 * the budgets. */
#include "usage.h"
#include "budget.h"
#include "error.h"
#include "ledger.h"
#include "pricing.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The ledger's model: the alias when the config names it, the model a
 * direct provider/model call asked for, else "unknown" -- a client's typo
 * must not become a row. */
static const char *
ledger_model(const sl_request_t *r) {
    if (r->model == NULL)
        return NULL;
    if (r->provider != NULL ||
        sl_config_model(r->cfg, r->model, strlen(r->model)) != NULL)
        return r->model;
    return "unknown";
}

/* The cache plugin says so in its answer header: a whole line
 * "x-sluice-cache: hit". */
static int
cache_hit(const sl_request_t *r) {
    static const char line[] = "x-sluice-cache: hit\r\n";
    const char *h = r->plugin_headers;
    while (h != NULL && *h != '\0') {
        if (strncasecmp(h, line, sizeof(line) - 1) == 0)
            return 1;
        h = strchr(h, '\n');
        if (h != NULL)
            h++;
    }
    return 0;
}

void
sl_usage_request_done(sl_worker_t *w, sl_request_t *r) {
    const char *model = ledger_model(r);
    if (w->admin || model == NULL) {
        sl_budget_settle(r, 0, 0);
        return;
    }
    const sl_price_t *p =
        sl_pricing_find(r->cfg->usage, r->provider, r->target_model, r->model);
    int known = r->prompt_tokens >= 0 || r->completion_tokens >= 0;
    r->cost_micros = p != NULL && known ? sl_cost_micros(p, r->prompt_tokens,
                                                         r->completion_tokens,
                                                         r->cached_tokens)
                                        : -1;
    long prompt = r->prompt_tokens > 0 ? r->prompt_tokens : 0;
    long completion = r->completion_tokens > 0 ? r->completion_tokens : 0;
    long cached = r->cached_tokens > 0 ? r->cached_tokens : 0;
    if (cached > prompt)
        cached = prompt;
    int64_t tokens =
        r->total_tokens >= 0 ? r->total_tokens : prompt + completion;
    sl_budget_settle(r, r->cost_micros, tokens);
    if (w->srv == NULL || w->srv->store == NULL ||
        (r->cfg->usage != NULL && !r->cfg->usage->ledger))
        return;
    if (w->ledger == NULL) {
        w->ledger =
            sl_ledger_new(w->base, w->srv->store, r->cfg->store_flush_ms);
        if (w->ledger == NULL)
            return;
    }
    int64_t v[SL_U_NFIELDS] = {0};
    v[SL_U_REQUESTS] = 1;
    v[SL_U_PROMPT] = prompt;
    v[SL_U_COMPLETION] = completion;
    v[SL_U_CACHED] = cached;
    v[SL_U_REASONING] = r->reasoning_tokens > 0 ? r->reasoning_tokens : 0;
    v[SL_U_COST] = r->cost_micros > 0 ? r->cost_micros : 0;
    v[SL_U_CACHE_HITS] = cache_hit(r);
    v[SL_U_ERRORS] = r->status >= 400;
    sl_ledger_add(w->ledger, (int64_t)time(NULL),
                  r->consumer ? r->consumer : "anonymous", model, v);
}

static int
hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

const char *
sl_usage_query_param(sl_request_t *r, const char *name) {
    const char *t = r->http.target, *end = t + r->http.target_len;
    const char *q = memchr(t, '?', r->http.target_len);
    size_t nl = strlen(name);
    for (const char *p = q ? q + 1 : end; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1;
            char *out = sl_arena_alloc(r->arena, (size_t)(e - v) + 1), *o;
            if (out == NULL)
                return NULL;
            for (o = out; v < e; v++) {
                int hi, lo;
                if (*v == '%' && e - v >= 3 && (hi = hexval(v[1])) >= 0 &&
                    (lo = hexval(v[2])) >= 0) {
                    *o++ = (char)(hi * 16 + lo);
                    v += 2;
                } else {
                    *o++ = *v == '+' ? ' ' : *v;
                }
            }
            *o = '\0';
            return out;
        }
        p = e + 1;
    }
    return NULL;
}

static void
send_json(sl_request_t *r, cJSON *j) {
    char *out = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    char *body = out ? sl_arena_strndup(r->arena, out, strlen(out)) : NULL;
    free(out);
    if (body == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_response_send(r, 200, "application/json", NULL, body, strlen(body));
}

void
sl_usage_admin_usage(sl_request_t *r) {
    sl_usage_query_t q = {0};
    q.group = SL_GROUP_DAY;
    q.consumer = sl_usage_query_param(r, "consumer");
    q.model = sl_usage_query_param(r, "model");
    const char *from = sl_usage_query_param(r, "from");
    const char *to = sl_usage_query_param(r, "to");
    const char *g = sl_usage_query_param(r, "group_by");
    if (from != NULL && sl_usage_parse_time(from, &q.from) != 0) {
        sl_response_error(r, 400,
                          "'from' must be a time like 2026-11-22, "
                          "2026-11-22T13:00Z or unix seconds",
                          "invalid_request");
        return;
    }
    if (to != NULL && sl_usage_parse_time(to, &q.to) != 0) {
        sl_response_error(r, 400,
                          "'to' must be a time like 2026-11-22, "
                          "2026-11-22T13:00Z or unix seconds",
                          "invalid_request");
        return;
    }
    if (g != NULL && sl_usage_parse_group(g, &q.group) != 0) {
        sl_response_error(r, 400,
                          "'group_by' must be hour, day, consumer or model",
                          "invalid_request");
        return;
    }
    sl_usage_result_t res;
    int rc = sl_ledger_query(r->w->srv->store, &q, &res);
    if (rc != 0) {
        sl_usage_result_free(&res);
        sl_response_error(r, rc == SL_ETOOBIG ? 413 : 500,
                          rc == SL_ETOOBIG
                              ? "the range holds too many ledger entries; "
                                "narrow it"
                              : "cannot read the usage ledger",
                          "ledger_error");
        return;
    }
    cJSON *j = sl_usage_result_json(&q, &res);
    sl_usage_result_free(&res);
    send_json(r, j);
}

void
sl_usage_admin_budgets(sl_request_t *r) {
    send_json(r, sl_budget_report(r->cfg, r->w->srv->store,
                                  sl_usage_query_param(r, "consumer")));
}
