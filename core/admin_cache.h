/* The response cache in the admin API: DELETE /admin/cache purges every
 * entry of the config's cache plugin instances, DELETE
 * /admin/cache?model=NAME only that model's, DELETE /admin/cache?key=HASH
 * the one entry the access log's cache_key names. */
#ifndef SL_ADMIN_CACHE_H
#define SL_ADMIN_CACHE_H

#include "request.h"

/* Answers r and returns 1 when its path is /admin/cache; 0 (r untouched)
 * otherwise. The caller has checked the admin token. */
int sl_admin_cache(sl_request_t *r);

#endif
