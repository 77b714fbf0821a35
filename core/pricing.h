/* Prices and budgets from the config ("pricing", "budgets"), and the cost
 * of a request. Money is integers: a price is kept in pico-dollars per
 * token (a "$ per 1M tokens" figure times 10^6), so the arithmetic is exact
 * and a cost rounds once, to micro-dollars, at the end. */
#ifndef SL_PRICING_H
#define SL_PRICING_H

#include "config.h"

#include <cjson/cJSON.h>
#include <stdint.h>

typedef struct {
    char *model; /* the key: "provider/model", a provider model or an alias */
    int64_t input, output, cached_input; /* pico-dollars per token */
} sl_price_t;

typedef struct {
    char *consumer;
    int64_t daily_micros;   /* -1 = no daily limit */
    int64_t monthly_micros; /* -1 = no monthly limit */
    int64_t total_tokens;   /* -1 = no token limit (lifetime) */
} sl_budget_conf_t;

typedef struct sl_usage_conf {
    int ledger; /* "ledger": false turns the usage ledger off; default on */
    sl_price_t *prices;
    size_t nprices;
    sl_budget_conf_t *budgets;
    size_t nbudgets;
} sl_usage_conf_t;

/* Validates $.pricing, $.budgets and $.ledger (any may be NULL: absent)
 * and builds *out; every problem goes to errs with its JSON path. 0,
 * SL_ECONFIG (errors appended; *out NULL) or SL_ENOMEM. */
int sl_usage_conf_load(const cJSON *pricing, const cJSON *budgets,
                       const cJSON *ledger, sl_usage_conf_t **out,
                       sl_config_errors_t *errs);
void sl_usage_conf_free(sl_usage_conf_t *u);

/* The price for a call: "provider/target_model" first, then the provider's
 * model name (what is billed), then the alias the client sent. Any
 * argument may be NULL. NULL when none is priced. */
const sl_price_t *sl_pricing_find(const sl_usage_conf_t *u,
                                  const char *provider,
                                  const char *target_model, const char *alias);

/* The cost in micro-dollars (rounded half up) of a call's normalised
 * usage: prompt includes the cached tokens, which are priced at
 * cached_input and counted once; completion includes reasoning tokens.
 * Negative counts are unknown and count as 0. */
int64_t sl_cost_micros(const sl_price_t *p, long prompt, long completion,
                       long cached);

/* The budget of a consumer, or NULL. */
const sl_budget_conf_t *sl_budget_conf_find(const sl_usage_conf_t *u,
                                            const char *consumer);

#endif
