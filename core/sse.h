/* Incremental Server-Sent Events parser (WHATWG HTML "event stream
 * interpretation"): bytes in, whole events out, across any chunking. */
#ifndef SL_SSE_H
#define SL_SSE_H

#include <stddef.h>

/* Called once per dispatched event. `event` is the value of the last
 * `event:` field (NULL, 0 when none); `data` is the `data:` lines joined with
 * '\n' (no trailing newline). Both are valid only during the call. A
 * non-zero return stops the feed, which then returns that value. */
typedef int (*sl_sse_event_cb)(void *ud, const char *event, size_t event_len,
                               const char *data, size_t data_len);

typedef struct {
    char *buf; /* the partial line and fields being accumulated (malloc'd) */
    size_t len, cap;
    size_t max_event; /* bytes an event may hold before it is an error */
    /* private parse state: buf holds [event type][data][partial line] */
    size_t event_len; /* bytes of the event type at buf[0] */
    size_t data_len;  /* bytes of data (lines joined by '\n') after it */
    int has_data;     /* a data line was seen (data may still be empty) */
    int last_cr;      /* the last byte fed was a CR: skip one leading LF */
    int bom;          /* BOM bytes matched so far; 3 once decided */
    int err;          /* sticky SL_ETOOBIG / SL_ENOMEM */
} sl_sse_t;

void sl_sse_init(sl_sse_t *p, size_t max_event);
void sl_sse_free(sl_sse_t *p);

/* Feeds bytes; dispatches each complete event to cb. Lines may end in CRLF,
 * LF or CR; ':' lines are comments; `id:` and `retry:` are accepted and
 * ignored; an event with no data is not dispatched. Returns 0, a non-zero
 * value returned by cb, or SL_ETOOBIG when an event grows past max_event
 * (its event type, data and current line together; the error is sticky:
 * later feeds return it too). */
int sl_sse_feed(sl_sse_t *p, const char *buf, size_t len, sl_sse_event_cb cb,
                void *ud);

/* Non-zero when bytes of an unfinished line or event are pending: the stream
 * was cut mid-event. */
int sl_sse_pending(const sl_sse_t *p);

#endif
