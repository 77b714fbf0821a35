/* Request-time look-ups over a config snapshot: a path to its route and a
 * client's model string to a provider target. No allocation, no locks. */
#ifndef SL_ROUTER_H
#define SL_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Finds the route for an exact path; NULL when none. */
const sl_route_t *sl_route_match(const sl_config_t *cfg, const char *path,
                                 size_t len);

/* Resolves a client's model string. An alias in cfg->models sets *model
 * (the caller orders its targets with sl_balancer_chain); otherwise, when
 * cfg->allow_direct_models and the string is "provider/model" with a known
 * provider, *model is NULL and *direct is filled (provider + model pointing
 * into the input after the first '/', NUL-terminated only if the input is;
 * weight 1, no breaker state). Returns 0, or SL_ENOTFOUND. */
int sl_route_model(const sl_config_t *cfg, const char *name, size_t len,
                   const sl_model_t **model, sl_target_t *direct);

#endif
