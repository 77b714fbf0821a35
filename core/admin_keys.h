/* The admin API's API-key endpoints (/admin/keys, /admin/keys/{id}). */
#ifndef SL_ADMIN_KEYS_H
#define SL_ADMIN_KEYS_H

#include "request.h"

/* Answers r when its path is /admin/keys or under it (1), else 0. The
 * caller has checked the admin token. */
int sl_admin_keys(sl_request_t *r);

#endif
