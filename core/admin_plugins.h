/* The admin API's plugin endpoints: GET /admin/plugins lists the running
 * instances; PUT /admin/plugins/NAME gives one instance a new config,
 * applied as a new snapshot (the library stays loaded). */
#ifndef SL_ADMIN_PLUGINS_H
#define SL_ADMIN_PLUGINS_H

#include "request.h"

/* Answers r and returns 1 when its path is a plugin endpoint; else 0.
 * The caller has checked the admin token. Main thread (the admin loop). */
int sl_admin_plugins(sl_request_t *r);

#endif
