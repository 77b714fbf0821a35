/* The request log in the admin API: GET /admin/logs (newest first, JSON)
 * and GET /admin/logs/export (JSON lines, oldest first, sent in chunks as
 * it is read so that a large export never sits in memory). */
#ifndef SL_ADMIN_LOGS_H
#define SL_ADMIN_LOGS_H

#include "request.h"

/* Answers r and returns 1 when its path is one of the log endpoints;
 * 0 (r untouched) otherwise. The caller has checked the admin token. */
int sl_admin_logs(sl_request_t *r);

#endif
