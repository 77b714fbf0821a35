/* Dispatch: route a complete request to its endpoint. */
#include "request.h"
#include "frontends/messages.h"
#include "proxy.h"
#include "router.h"

#include "admin.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
method_not_allowed(sl_request_t *r, const char *allow)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    sl_response_error_with(r, 405, "method not allowed for this path",
                           "method_not_allowed", extra);
}

static int
is_get(const sl_request_t *r)
{
    return r->http.method == SL_METHOD_GET || r->http.method == SL_METHOD_HEAD;
}

static void
models_list(sl_request_t *r)
{
    const char *body = r->snap->models_json;
    sl_response_send(r, 200, "application/json", NULL, body, strlen(body));
}

char *
sl_models_json_build(const sl_config_t *cfg)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    double created = (double)time(NULL);
    for (size_t i = 0; i < cfg->nmodels; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", cfg->models[i].name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddNumberToObject(m, "created", created);
        cJSON_AddStringToObject(m, "owned_by", "sluice");
        cJSON_AddItemToArray(data, m);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

void
sl_request_handle(sl_request_t *r)
{
    if (r->w->admin) {
        sl_admin_handle(r);
        return;
    }
    r->route = sl_route_match(r->cfg, r->http.path, r->http.path_len);
    if (r->route == NULL) {
        sl_response_error(r, 404, "no route for this path", "not_found");
        return;
    }
    switch (r->route->kind) {
    case SL_ROUTE_CHAT:
        if (r->http.method != SL_METHOD_POST)
            method_not_allowed(r, "POST");
        else
            sl_proxy_chat(r);
        break;
    case SL_ROUTE_EMBEDDINGS:
        if (r->http.method != SL_METHOD_POST)
            method_not_allowed(r, "POST");
        else
            sl_proxy_embeddings(r);
        break;
    case SL_ROUTE_MODELS:
        if (!is_get(r))
            method_not_allowed(r, "GET, HEAD");
        else
            models_list(r);
        break;
    case SL_ROUTE_MESSAGES:
        sl_messages_handle(r); /* its 405 is Anthropic-shaped too */
        break;
    case SL_ROUTE_HEALTH:
        if (!is_get(r))
            method_not_allowed(r, "GET, HEAD");
        else
            sl_response_send(r, 200, "application/json", NULL,
                             "{\"status\":\"ok\"}", 15);
        break;
    default:
        sl_response_error(r, 404, "no route for this path", "not_found");
    }
}
