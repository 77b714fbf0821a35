#include "admin.h"
#include "admin_cache.h"
#include "admin_keys.h"
#include "admin_plugins.h"
#include "admin_prompts.h"
#include "balancer.h"
#include "clock.h"
#include "dashboard.h"
#include "error.h"
#include "metrics.h"
#include "admin_logs.h"
#include "usage.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Compares in time that depends only on the lengths. */
static int
token_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (blen ? blen : 1)]);
    return diff == 0;
}

static int
authorized(sl_request_t *r)
{
    const sl_http_header_t *h = sl_http_header_find(&r->http, "authorization");
    const char *tok = r->cfg->admin_token;
    if (h == NULL || tok == NULL || h->value_len < 7 ||
        strncasecmp(h->value, "Bearer ", 7) != 0)
        return 0;
    return token_equal(h->value + 7, h->value_len - 7, tok);
}

static int
secret_key(const char *k)
{
    size_t n = strlen(k);
    if (n >= 4 && strcmp(k + n - 4, "_env") == 0)
        return 0; /* the variable's name, not its value */
    static const char *const words[] = {"key", "token", "secret", "password"};
    for (size_t i = 0; i < 4; i++)
        if (strcasestr(k, words[i]) != NULL)
            return 1;
    return 0;
}

static void
redact(cJSON *node)
{
    cJSON *it;
    cJSON_ArrayForEach(it, node)
    {
        if (it->string != NULL && cJSON_IsString(it) && secret_key(it->string))
            cJSON_SetValuestring(it, "[redacted]");
        else if (cJSON_IsObject(it) || cJSON_IsArray(it))
            redact(it);
    }
}

char *
sl_admin_redacted_config(const char *json)
{
    cJSON *root = cJSON_Parse(json);
    if (root == NULL)
        return NULL;
    redact(root);
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    return out;
}

static void
send_json(sl_request_t *r, int status, cJSON *j)
{
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (out == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    char *body = sl_arena_strndup(r->arena, out, strlen(out));
    free(out);
    sl_response_send(r, status, "application/json", NULL, body,
                     strlen(body));
}

static void
get_config(sl_request_t *r)
{
    char *out = sl_admin_redacted_config(r->cfg->source ? r->cfg->source
                                                        : "{}");
    if (out == NULL) {
        sl_response_error(r, 500, "cannot render the config", "internal");
        return;
    }
    char *body = sl_arena_strndup(r->arena, out, strlen(out));
    free(out);
    sl_response_send(r, 200, "application/json", NULL, body, strlen(body));
}

static void
post_reload(sl_request_t *r)
{
    sl_server_t *srv = r->w->srv;
    sl_config_errors_t errs = {0};
    int rc = sl_server_reload(srv, &errs);
    cJSON *j = cJSON_CreateObject();
    if (rc == 0) {
        cJSON_AddStringToObject(j, "status", "reloaded");
        cJSON_AddNumberToObject(j, "generation", (double)srv->generation);
        cJSON *warn = cJSON_AddArrayToObject(j, "warnings");
        for (size_t i = 0; i < errs.count; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", errs.items[i].path);
            cJSON_AddStringToObject(e, "message", errs.items[i].message);
            cJSON_AddItemToArray(warn, e);
        }
        sl_config_errors_free(&errs);
        send_json(r, 200, j);
        return;
    }
    cJSON *err = cJSON_AddObjectToObject(j, "error");
    char msg[1024];
    size_t first = 0;
    while (first < errs.count && errs.items[first].warning)
        first++;
    if (first < errs.count)
        snprintf(msg, sizeof(msg),
                 "the new config is invalid; the running config stays: "
                 "%s: %s",
                 errs.items[first].path, errs.items[first].message);
    else
        snprintf(msg, sizeof(msg), "reload failed: %s", sl_strerror(rc));
    cJSON_AddStringToObject(err, "message", msg);
    cJSON_AddStringToObject(err, "type", "invalid_request_error");
    cJSON_AddStringToObject(err, "code", "invalid_config");
    cJSON *details = cJSON_AddArrayToObject(err, "details");
    for (size_t i = 0; i < errs.count; i++) {
        if (errs.items[i].warning)
            continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "path", errs.items[i].path);
        cJSON_AddStringToObject(e, "message", errs.items[i].message);
        cJSON_AddItemToArray(details, e);
    }
    sl_config_errors_free(&errs);
    send_json(r, 400, j);
}

static void
add_targets(cJSON *arr, const sl_model_t *m, const sl_target_t *t, size_t n,
            const char *role, int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        const sl_target_state_t *st = t[i].state;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", m->name);
        cJSON_AddStringToObject(o, "role", role);
        cJSON_AddStringToObject(o, "provider", t[i].provider->name);
        cJSON_AddStringToObject(o, "target_model", t[i].model);
        cJSON_AddNumberToObject(o, "weight", t[i].weight);
        cJSON_AddStringToObject(
            o, "breaker", sl_breaker_name(sl_balancer_state(m, &t[i], now)));
        long req = st ? atomic_load(&st->requests) : 0;
        long err = st ? atomic_load(&st->errors) : 0;
        cJSON_AddNumberToObject(o, "outstanding",
                                st ? (double)atomic_load(&st->outstanding)
                                   : 0);
        cJSON_AddNumberToObject(o, "requests", (double)req);
        cJSON_AddNumberToObject(o, "errors", (double)err);
        cJSON_AddNumberToObject(o, "error_rate",
                                req > 0 ? (double)err / (double)req : 0);
        cJSON_AddNumberToObject(o, "recent_failures",
                                st ? (double)atomic_load(&st->failures) : 0);
        cJSON_AddItemToArray(arr, o);
    }
}

static void
get_providers(sl_request_t *r)
{
    const sl_config_t *cfg = r->cfg;
    int64_t now = (int64_t)(sl_now_us() / 1000u);
    cJSON *j = cJSON_CreateObject();
    cJSON *provs = cJSON_AddArrayToObject(j, "providers");
    for (size_t i = 0; i < cfg->nproviders; i++) {
        cJSON *p = cJSON_CreateObject();
        cJSON_AddStringToObject(p, "name", cfg->providers[i].name);
        static const char *const types[] = {"?", "openai", "mock",
                                            "anthropic", "azure", "gemini"};
        int t = cfg->providers[i].type;
        cJSON_AddStringToObject(p, "type",
                                t >= 1 && t <= 5 ? types[t] : "?");
        if (cfg->providers[i].base_url != NULL)
            cJSON_AddStringToObject(p, "base_url", cfg->providers[i].base_url);
        cJSON_AddBoolToObject(p, "has_key", cfg->providers[i].api_key != NULL);
        cJSON_AddItemToArray(provs, p);
    }
    cJSON *targets = cJSON_AddArrayToObject(j, "targets");
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const sl_model_t *m = &cfg->models[i];
        add_targets(targets, m, m->targets, m->ntargets, "target", now);
        add_targets(targets, m, m->fallback, m->nfallback, "fallback", now);
    }
    send_json(r, 200, j);
}

void
sl_admin_handle(sl_request_t *r)
{
    /* The page and its assets are public: every number on it comes
     * through the calls below, with the token. */
    if (sl_dashboard_path(r->http.path, r->http.path_len)) {
        sl_dashboard_serve(r);
        return;
    }
    if (!authorized(r)) {
        sl_response_error_with(r, 401, "missing or wrong admin token",
                               "invalid_admin_token",
                               "WWW-Authenticate: Bearer\r\n");
        return;
    }
    const char *p = r->http.path;
    size_t n = r->http.path_len;
    int get = r->http.method == SL_METHOD_GET;
    int post = r->http.method == SL_METHOD_POST;
#define IS(s) (n == sizeof(s) - 1 && memcmp(p, s, n) == 0)
    if (IS("/metrics") && get) {
        char *text = sl_metrics_render(r->w->srv);
        char *body = text ? sl_arena_strndup(r->arena, text, strlen(text))
                          : NULL;
        free(text);
        if (body == NULL)
            sl_response_error(r, 503, "out of memory", "server_busy");
        else
            sl_response_send(r, 200, "text/plain; version=0.0.4", NULL, body,
                             strlen(body));
    } else if (sl_admin_keys(r))
        ;
    else if (sl_admin_plugins(r))
        ;
    else if (sl_admin_prompts(r))
        ; /* /admin/prompts[/NAME[@VERSION]] */
    else if (IS("/admin/config") && get)
        get_config(r);
    else if (IS("/admin/reload") && post)
        post_reload(r);
    else if (IS("/admin/providers") && get)
        get_providers(r);
    else if (sl_admin_cache(r))
        ; /* DELETE /admin/cache[?model=] */
    else if (sl_admin_logs(r))
        ; /* /admin/logs, /admin/logs/export */
    else if (IS("/admin/usage") && get)
        sl_usage_admin_usage(r);
    else if (IS("/admin/budgets") && get)
        sl_usage_admin_budgets(r);
    else if (IS("/admin/config") || IS("/admin/reload") ||
             IS("/admin/providers") || IS("/admin/usage") ||
             IS("/admin/budgets"))
        sl_response_error(r, 405, "method not allowed for this path",
                          "method_not_allowed");
    else
        sl_response_error(r, 404, "no admin endpoint at this path",
                          "not_found");
#undef IS
}
