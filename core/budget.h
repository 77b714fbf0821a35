/* Budgets per consumer ($.budgets): cost per UTC day and month and total
 * tokens, enforced like a rate limiter with reserve-then-settle. Admission
 * reserves an estimate (prompt characters / 4 plus max_tokens, priced at
 * the model's prices); the log phase settles with the actual cost, which
 * also gives a reservation back when the client went away.
 *
 * The meters are process-wide atomics, so admission is exact across
 * workers with no lock; they outlive config snapshots (a reload changes the
 * limits, not what was spent) and are persisted to the store (usage db,
 * namespace "usage.b") so a restart keeps what was spent. */
#ifndef SL_BUDGET_H
#define SL_BUDGET_H

#include "request.h"
#include "store.h"

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdint.h>

struct sl_call;

/* One limit's counter. `used` is spent plus reserved in `window` (a UTC
 * day or month number; 0 for the lifetime token meter): admission checks
 * and moves it with one compare-and-swap, so two workers can never both
 * take the last of a budget. */
typedef struct {
    _Atomic int64_t used;
    _Atomic int64_t spent;
    _Atomic int64_t window;
} sl_meter_t;

/* Reserves est in window when it fits under limit (limit < 0: none):
 * 0, or -1 when refused (used >= limit, or used + est > limit). */
int sl_meter_reserve(sl_meter_t *m, int64_t window, int64_t est, int64_t limit);
/* Replaces a reservation of est made in reserved_window by actual. */
void sl_meter_settle(sl_meter_t *m, int64_t window, int64_t reserved_window,
                     int64_t est, int64_t actual);

/* Admission for a model call: 0 to go on (reserved, or no budget), -1 when
 * refused: the client has got its 429 budget_exceeded. */
int sl_budget_admit(sl_request_t *r, struct sl_call *k);
/* Settles r's reservation (if any) with the actual cost (micro-dollars)
 * and tokens; negative values count as 0. Idempotent. */
void sl_budget_settle(sl_request_t *r, int64_t cost_micros, int64_t tokens);

/* {"budgets":[...]}: every configured budget (or only `consumer`) with
 * limit, spent, reserved and remaining per dimension. NULL on OOM. */
cJSON *sl_budget_report(const sl_config_t *cfg, sl_store_t *st,
                        const char *consumer);

/* Adds "budget" to an API key record (cJSON object with "name", the
 * consumer the auth plugin names): its budget as in sl_budget_report
 * (daily_usd, monthly_usd, total_tokens), or null when it has none. */
void sl_budget_describe_key(const sl_config_t *cfg, sl_store_t *st,
                            cJSON *record);

/* The UTC day number and month number (year * 12 + month) of a time. */
int64_t sl_budget_day(int64_t unix_sec);
int64_t sl_budget_month(int64_t unix_sec);

#endif
