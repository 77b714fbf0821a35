/* Test plugin: logs, in its log phase, the request attributes its config
 * names -- "lua.NAME" ones are what the route's Lua script left in
 * ctx.vars. */
#include <sluice/plugin.h>

#include <stdlib.h>

static const sluice_config_field_t schema[] = {
    {"attrs", SLUICE_CFG_STRING_LIST, "[]", 0, "attribute names to log"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct {
    const sluice_host_t *host;
    const sluice_config_t *config;
} lv_t;

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    lv_t *t = calloc(1, sizeof(*t));
    if (t == NULL || !SLUICE_HOST_HAS(host, attr_get)) {
        free(t);
        return SLUICE_ENOMEM;
    }
    t->host = host;
    t->config = config;
    *instance = t;
    return SLUICE_OK;
}

static void
destroy(void *instance) {
    free(instance);
}

static sluice_verdict_t
on_log(void *instance, sluice_req_t *req) {
    lv_t *t = instance;
    const sluice_host_t *h = t->host;
    size_t n = 0;
    h->config_list_count(t->config, "attrs", &n);
    for (size_t i = 0; i < n; i++) {
        const char *name = NULL, *value = NULL;
        if (h->config_list_item(t->config, "attrs", i, &name) != SLUICE_OK)
            continue;
        int rc = h->attr_get(req, name, &value);
        h->log(req, SLUICE_LOG_INFO, "attr %s=%s", name,
               rc == SLUICE_OK ? value : "(unset)");
    }
    return SLUICE_CONTINUE;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "luavars",
    .version = "1.0.0",
    .description = "logs request attributes in on_log",
    .config_schema = schema,
    .create = create,
    .destroy = destroy,
    .on_log = on_log,
};
