/* Usage in the log phase (cost, budget settlement, the ledger) and the
 * admin endpoints that read it back. docs/usage.md is the user's view. */
#ifndef SL_USAGE_H
#define SL_USAGE_H

#include "request.h"

struct sl_worker;

/* Prices r, settles its budget and adds it to the worker's ledger. Every
 * finished request passes here once, on its worker's thread. */
void sl_usage_request_done(struct sl_worker *w, sl_request_t *r);

/* GET /admin/usage?consumer=&model=&from=&to=&group_by= */
void sl_usage_admin_usage(sl_request_t *r);
/* GET /admin/budgets[?consumer=] */
void sl_usage_admin_budgets(sl_request_t *r);

/* The value of query parameter `name` in the request target,
 * percent-decoded into the arena; NULL when absent. */
const char *sl_usage_query_param(sl_request_t *r, const char *name);

#endif
