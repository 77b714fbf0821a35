/* C plugins: loading them for a config (dlopen, ABI check, config schema,
 * create) and the instances a config's routes run. The ABI itself is
 * sdk/include/sluice/plugin.h; the host functions are plugin_host.c; the
 * hooks are run by pipeline.c. */
#ifndef SL_PLUGIN_H
#define SL_PLUGIN_H

#include "../sdk/include/sluice/plugin.h"
#include "config.h"

#include <stdio.h>

#include <cjson/cJSON.h>

struct sl_store;
struct sl_pipe;

/* Hook bits, to skip a phase no plugin of a route has. */
enum {
    SL_HOOK_REQUEST = 1,
    SL_HOOK_RESPONSE = 2,
    SL_HOOK_CHUNK = 4,
    SL_HOOK_LOG = 8,
};

typedef struct sl_plugin_lib sl_plugin_lib_t;
typedef struct sl_plugin_inst sl_plugin_inst_t;

/* What an instance's config accessors read (sluice_config_t). */
struct sluice_config {
    cJSON *json;  /* the validated config with defaults filled in */
    char *text;   /* json printed, for config_json(cfg, NULL) */
    cJSON *cache; /* key -> printed JSON, filled at load */
};

/* The call context handed to hooks (sluice_req_t): the request's pipeline
 * state (NULL in the load phase), the instance being called and its
 * position in the route's chain. */
struct sluice_req {
    struct sl_pipe *pipe;
    const sl_plugin_inst_t *inst;
    size_t pos;
    sluice_phase_t phase;
};

struct sl_plugin_inst {
    char *name; /* the key in $.plugins */
    sl_plugin_lib_t *lib;
    sluice_plugin_t desc; /* fields past the plugin's struct_size are 0 */
    void *instance;
    int created;
    int fail_open;
    unsigned hooks; /* SL_HOOK_* */
    char *kv_ns;    /* "plugin:" name, the store namespace */
    struct sluice_config config;
};

/* The plugins of one route, in order. */
typedef struct {
    sl_plugin_inst_t **items;
    size_t n;
    unsigned hooks; /* the union of the items' hooks */
} sl_plugin_chain_t;

/* The plugin instances of one config snapshot. */
typedef struct sl_plugins {
    sl_plugin_inst_t *insts;
    size_t ninsts;
    sl_plugin_chain_t *routes; /* parallel to cfg->routes */
    size_t nroutes;
} sl_plugins_t;

/* Loads every plugin of cfg: opens each library (once per process while
 * any snapshot uses it), checks its ABI, validates its config against its
 * schema and creates the instance; builds each route's chain. Every
 * problem goes to errs with its JSON path ($.plugins.NAME...). Returns
 * NULL on any error (nothing stays loaded), else the set (also when cfg
 * has no plugins). Not the hot path; never on a worker's loop. */
sl_plugins_t *sl_plugins_load(const sl_config_t *cfg, sl_config_errors_t *errs);
/* Destroys the instances and lets go of the libraries (closed when no
 * other set uses them). Any thread. NULL is fine. */
void sl_plugins_free(sl_plugins_t *ps);
/* The chain of cfg->routes[i]; NULL when it has no plugins. */
const sl_plugin_chain_t *sl_plugins_route(const sl_plugins_t *ps, size_t i);

/* Prints plugin `name` of cfg: its library, version, ABI and config schema
 * (`sluice plugins describe`). 0, or SL_E* with err set. */
int sl_plugin_describe(const sl_config_t *cfg, const char *name, FILE *out,
                       char *err, size_t errlen);

/* The host table handed to every plugin. */
const sluice_host_t *sl_plugin_host(void);
/* The store kv goes to; NULL (the default) makes kv SLUICE_EUNAVAIL. Set
 * it after sl_store_open and before the workers start; clear it before
 * sl_store_close. */
void sl_plugin_host_set_store(struct sl_store *st);
/* A metric_add counter summed over worker threads; 0 when absent. labels
 * as the plugin passed them (NULL for none). For tests until /metrics. */
double sl_plugin_metric_get(const char *plugin, const char *name,
                            const char *labels);

#endif
