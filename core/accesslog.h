/* The access log: one JSON line per request, buffered per worker and
 * written whole lines at a time so workers never interleave. */
#ifndef SL_ACCESSLOG_H
#define SL_ACCESSLOG_H

#include "request.h"

#include <event2/event.h>

typedef struct sl_accesslog sl_accesslog_t;

/* fd -1 means off (every call is then a no-op). */
sl_accesslog_t *sl_accesslog_create(struct event_base *base, int fd);
void sl_accesslog_write(sl_accesslog_t *l, const sl_request_t *r);
void sl_accesslog_flush(sl_accesslog_t *l);
void sl_accesslog_destroy(sl_accesslog_t *l);

#endif
