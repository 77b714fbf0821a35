/* GET /admin/plugins and PUT /admin/plugins/NAME. A PUT edits the running
 * config's text (the config the current snapshot was built from), loads it
 * as if read from the config file, and publishes it like a reload: the
 * plugin's schema validates the new config, a new instance is created, the
 * library is shared with the old snapshot (same file), and requests in
 * flight finish on the old instance. The file on disk is not touched, so
 * the next reload from the file brings the file's config back. */
#include "admin_plugins.h"
#include "admin.h"
#include "error.h"
#include "plugin.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
send_json(sl_request_t *r, int status, cJSON *j) {
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char *body = out ? sl_arena_strndup(r->arena, out, strlen(out)) : NULL;
    free(out);
    if (body == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_response_send(r, status, "application/json", NULL, body, strlen(body));
}

static const char *
hook_name(unsigned bit) {
    switch (bit) {
    case SL_HOOK_REQUEST: return "on_request";
    case SL_HOOK_RESPONSE: return "on_response";
    case SL_HOOK_CHUNK: return "on_chunk";
    default: return "on_log";
    }
}

static cJSON *
describe(const sl_config_t *cfg, const sl_plugins_t *ps, size_t i) {
    const sl_plugin_inst_t *in = &ps->insts[i];
    cJSON *o = cJSON_CreateObject();
    char abi[32];
    cJSON_AddStringToObject(o, "name", in->name);
    cJSON_AddStringToObject(o, "plugin", in->desc.name ? in->desc.name : "");
    cJSON_AddStringToObject(o, "path",
                            cfg->plugins[i].file ? cfg->plugins[i].file : "");
    cJSON_AddStringToObject(o, "version",
                            in->desc.version ? in->desc.version : "");
    snprintf(abi, sizeof(abi), "%u.%u", (unsigned)in->desc.abi_major,
             (unsigned)in->desc.abi_minor);
    cJSON_AddStringToObject(o, "abi", abi);
    if (in->desc.description != NULL)
        cJSON_AddStringToObject(o, "description", in->desc.description);
    cJSON_AddBoolToObject(o, "fail_open", in->fail_open);
    cJSON *hooks = cJSON_AddArrayToObject(o, "hooks");
    for (unsigned b = SL_HOOK_REQUEST; b <= SL_HOOK_LOG; b <<= 1)
        if (in->hooks & b)
            cJSON_AddItemToArray(hooks, cJSON_CreateString(hook_name(b)));
    /* The effective config (defaults filled in), secrets redacted the way
     * GET /admin/config redacts them. */
    char *red =
        sl_admin_redacted_config(in->config.text ? in->config.text : "{}");
    cJSON *conf = red ? cJSON_Parse(red) : NULL;
    free(red);
    cJSON_AddItemToObject(o, "config", conf ? conf : cJSON_CreateObject());
    cJSON *routes = cJSON_AddArrayToObject(o, "routes");
    for (size_t k = 0; k < ps->nroutes && k < cfg->nroutes; k++) {
        const sl_plugin_chain_t *ch = &ps->routes[k];
        for (size_t j = 0; j < ch->n; j++)
            if (ch->items[j] == in) {
                cJSON_AddItemToArray(routes,
                                     cJSON_CreateString(cfg->routes[k].path));
                break;
            }
    }
    return o;
}

static void
get_plugins(sl_request_t *r) {
    const sl_snapshot_t *s = atomic_load(&r->w->srv->current);
    const sl_plugins_t *ps = s->plugins;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "generation", (double)s->generation);
    cJSON *arr = cJSON_AddArrayToObject(j, "plugins");
    for (size_t i = 0; ps != NULL && i < ps->ninsts; i++)
        cJSON_AddItemToArray(arr, describe(s->cfg, ps, i));
    send_json(r, 200, j);
}

static void
bad_request(sl_request_t *r, const char *path, const char *msg,
            const sl_config_errors_t *errs) {
    cJSON *j = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(j, "error");
    char text[1024];
    snprintf(text, sizeof(text),
             "the new plugin config is invalid; the running config stays: "
             "%s: %s",
             path, msg);
    cJSON_AddStringToObject(e, "message", text);
    cJSON_AddStringToObject(e, "type", "invalid_request_error");
    cJSON_AddStringToObject(e, "code", "invalid_config");
    cJSON *details = cJSON_AddArrayToObject(e, "details");
    for (size_t i = 0; errs != NULL && i < errs->count; i++) {
        if (errs->items[i].warning)
            continue;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "path", errs->items[i].path);
        cJSON_AddStringToObject(d, "message", errs->items[i].message);
        cJSON_AddItemToArray(details, d);
    }
    if (errs == NULL || cJSON_GetArraySize(details) == 0) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "path", path);
        cJSON_AddStringToObject(d, "message", msg);
        cJSON_AddItemToArray(details, d);
    }
    send_json(r, 400, j);
}

/* The running config's text with $.plugins.NAME.config replaced by conf
 * (taken); malloc'd, NULL on OOM. */
static char *
edited_source(const sl_config_t *cfg, const char *name, cJSON *conf) {
    cJSON *root = cJSON_Parse(cfg->source ? cfg->source : "{}");
    cJSON *entry = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "plugins"), name);
    if (!cJSON_IsObject(entry)) {
        cJSON_Delete(root);
        cJSON_Delete(conf);
        return NULL;
    }
    if (cJSON_HasObjectItem(entry, "config"))
        cJSON_ReplaceItemInObjectCaseSensitive(entry, "config", conf);
    else
        cJSON_AddItemToObject(entry, "config", conf);
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    return out;
}

static void
put_plugin(sl_request_t *r, const char *name) {
    sl_server_t *srv = r->w->srv;
    const sl_snapshot_t *cur = atomic_load(&srv->current);
    const sl_config_t *cfg = cur->cfg;
    int found = 0;
    for (size_t i = 0; i < cfg->nplugins; i++)
        found |= strcmp(cfg->plugins[i].name, name) == 0;
    if (!found) {
        sl_response_error(r, 404, "no plugin instance of that name",
                          "not_found");
        return;
    }
    char path[256];
    sl_config_path_key(path, sizeof(path), "$.plugins", name);
    cJSON *body = cJSON_ParseWithLength(r->body ? r->body : "", r->body_len);
    cJSON *conf = cJSON_DetachItemFromObjectCaseSensitive(body, "config");
    if (!cJSON_IsObject(body) || !cJSON_IsObject(conf)) {
        cJSON_Delete(body);
        cJSON_Delete(conf);
        bad_request(r, "$",
                    "the body must be a JSON object "
                    "{\"config\": {...}}",
                    NULL);
        return;
    }
    cJSON_Delete(body);
    char *text = edited_source(cfg, name, conf);
    if (text == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_config_errors_t errs = {0};
    sl_config_t *ncfg = NULL;
    int rc = sl_config_load_string_as(text, strlen(text), srv->config_path,
                                      &ncfg, &errs);
    free(text);
    if (rc == 0)
        rc = sl_server_publish(srv, ncfg, &errs);
    else
        sl_config_free(ncfg);
    if (rc != 0) {
        size_t first = 0;
        while (first < errs.count && errs.items[first].warning)
            first++;
        if (first < errs.count)
            bad_request(r, errs.items[first].path, errs.items[first].message,
                        &errs);
        else
            bad_request(r, path, sl_strerror(rc), NULL);
        sl_config_errors_free(&errs);
        return;
    }
    sl_config_errors_free(&errs);
    fprintf(stderr,
            "sluice: plugin %s: new config applied (generation "
            "%llu)\n",
            name, (unsigned long long)srv->generation);
    const sl_snapshot_t *now = atomic_load(&srv->current);
    const sl_plugins_t *ps = now->plugins;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", "applied");
    cJSON_AddNumberToObject(j, "generation", (double)now->generation);
    for (size_t i = 0; ps != NULL && i < ps->ninsts; i++)
        if (strcmp(ps->insts[i].name, name) == 0)
            cJSON_AddItemToObject(j, "plugin", describe(now->cfg, ps, i));
    send_json(r, 200, j);
}

int
sl_admin_plugins(sl_request_t *r) {
    static const char prefix[] = "/admin/plugins";
    const size_t plen = sizeof(prefix) - 1;
    const char *p = r->http.path;
    size_t n = r->http.path_len;
    if (n < plen || memcmp(p, prefix, plen) != 0)
        return 0;
    if (n == plen) {
        if (r->http.method == SL_METHOD_GET)
            get_plugins(r);
        else
            sl_response_error(r, 405, "method not allowed for this path",
                              "method_not_allowed");
        return 1;
    }
    if (p[plen] != '/')
        return 0;
    char name[80];
    size_t nl = n - plen - 1;
    if (nl == 0 || nl >= sizeof(name) || memchr(p + plen + 1, '/', nl)) {
        sl_response_error(r, 404, "no admin endpoint at this path",
                          "not_found");
        return 1;
    }
    memcpy(name, p + plen + 1, nl);
    name[nl] = '\0';
    if (r->http.method == SL_METHOD_PUT)
        put_plugin(r, name);
    else
        sl_response_error(r, 405, "method not allowed for this path",
                          "method_not_allowed");
    return 1;
}
