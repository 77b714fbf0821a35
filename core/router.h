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

/* Resolves a client's model string to a target. `rnd` is a uniform random
 * 32-bit value chosen by the caller (per-worker RNG). An alias in
 * cfg->models picks a target by weight; otherwise when
 * cfg->allow_direct_models and the string is "provider/model" with a known
 * provider, *direct is filled (provider + model pointing into the input
 * string, weight 1) and returned: direct->model is the rest of the input
 * after the first '/', NUL-terminated only if the input is. Returns NULL
 * when unknown. */
const sl_target_t *sl_route_model(const sl_config_t *cfg, const char *model,
                                  size_t len, uint32_t rnd,
                                  sl_target_t *direct);

#endif
