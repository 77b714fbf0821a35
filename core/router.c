/* Route and model resolution, once per request: linear scans over the
 * handful of routes and models a config holds beat hashing at this size. */
#include "router.h"

#include <string.h>

const sl_route_t *
sl_route_match(const sl_config_t *cfg, const char *path, size_t len) {
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const char *p = cfg->routes[i].path;
        if (p != NULL && strlen(p) == len && memcmp(p, path, len) == 0)
            return &cfg->routes[i];
    }
    return NULL;
}

/* Maps rnd onto [0, total) by multiplication, not modulo: no bias towards
 * the first targets and no division on the request path. */
static const sl_target_t *
pick_weighted(const sl_model_t *m, uint32_t rnd) {
    uint32_t x = (uint32_t)(((uint64_t)rnd * m->total_weight) >> 32);

    for (size_t i = 0; i < m->ntargets; i++) {
        if (x < m->targets[i].weight)
            return &m->targets[i];
        x -= m->targets[i].weight;
    }
    return m->ntargets > 0 ? &m->targets[m->ntargets - 1] : NULL;
}

const sl_target_t *
sl_route_model(const sl_config_t *cfg, const char *model, size_t len,
               uint32_t rnd, sl_target_t *direct) {
    const sl_model_t *m = sl_config_model(cfg, model, len);
    const sl_provider_t *p;
    const char *slash;

    if (m != NULL)
        return pick_weighted(m, rnd);
    if (!cfg->allow_direct_models || direct == NULL)
        return NULL;
    slash = memchr(model, '/', len);
    if (slash == NULL || slash == model || slash + 1 == model + len)
        return NULL;
    p = sl_config_provider(cfg, model, (size_t)(slash - model));
    if (p == NULL)
        return NULL;
    direct->provider = (sl_provider_t *)p;
    direct->model = (char *)(slash + 1);
    direct->weight = 1;
    return direct;
}
