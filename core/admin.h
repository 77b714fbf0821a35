/* The admin API, served on its own listener by the main thread: config
 * view, reload, provider and breaker state. Bearer token from the
 * environment; without one the listener is not opened at all. */
#ifndef SL_ADMIN_H
#define SL_ADMIN_H

#include "request.h"

void sl_admin_handle(sl_request_t *r);

/* A copy of the config text with the values of secret-looking keys
 * replaced (malloc'd), for GET /admin/config. */
char *sl_admin_redacted_config(const char *json);

#endif
