/* Route and model resolution, once per request: linear scans over the
 * handful of routes and models a config holds beat hashing at this size. */
#include "router.h"

#include <string.h>

#include "error.h"

const sl_route_t *
sl_route_match(const sl_config_t *cfg, const char *path, size_t len) {
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const char *p = cfg->routes[i].path;
        if (p != NULL && strlen(p) == len && memcmp(p, path, len) == 0)
            return &cfg->routes[i];
    }
    return NULL;
}

int
sl_route_model(const sl_config_t *cfg, const char *name, size_t len,
               const sl_model_t **model, sl_target_t *direct) {
    const sl_provider_t *p;
    const char *slash;

    *model = sl_config_model(cfg, name, len);
    if (*model != NULL)
        return 0;
    if (!cfg->allow_direct_models)
        return SL_ENOTFOUND;
    slash = memchr(name, '/', len);
    if (slash == NULL || slash == name || slash + 1 == name + len)
        return SL_ENOTFOUND;
    p = sl_config_provider(cfg, name, (size_t)(slash - name));
    if (p == NULL)
        return SL_ENOTFOUND;
    memset(direct, 0, sizeof(*direct));
    direct->provider = (sl_provider_t *)p;
    direct->model = (char *)(slash + 1);
    direct->weight = 1;
    return 0;
}
