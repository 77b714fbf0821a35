/* The request log's record as stored: a compact binary form that a worker
 * makes with a few copies when a request ends (numbers, then the strings
 * with their lengths), and the JSON that GET /admin/logs answers, rendered
 * from it only when someone reads. Values written before this form (JSON
 * text, starting with '{') are still read as they are. */
#ifndef SL_REQLOG_RECORD_H
#define SL_REQLOG_RECORD_H

#include "request.h"
#include "store.h"

#include <stdint.h>

/* A string of a decoded record; p NULL is JSON null. Not NUL-terminated:
 * it points into the stored value. */
typedef struct {
    const char *p;
    uint32_t len;
} sl_rstr_t;

typedef struct {
    int64_t ts_us;                         /* wall clock: the key's time */
    int64_t latency_us, upstream_us;       /* -1: null */
    int64_t ttft_us;                       /* -1: null (not a stream) */
    int64_t cost_micros;                   /* -1: not priced */
    int64_t prompt, completion, total;     /* -1: unknown */
    int64_t cached, reasoning;             /* -1: unknown */
    int64_t attempts, bytes_in, bytes_out; /* -1: null */
    int32_t status;
    int stream;
    sl_rstr_t trace_id, span_id, parent_id, method, path, route, consumer,
        model, provider, target_model, error, verdict_plugin, verdict_action,
        verdict_phase, plugin_log, request_body, response_text;
    /* The route's plugins, then the attributes as name, value pairs:
     * strings in a row, each a 4-byte length and its bytes. */
    uint32_t nplugins, nattrs;
    const unsigned char *plugins, *attrs;
    const unsigned char *end; /* of the stored value */
} sl_reqlog_rec_t;

/* Adds r's record under key to batch b: ts_us is its wall-clock time,
 * now_us the monotonic time it ended. 0, or SL_ENOMEM. */
int sl_reqlog_encode(sl_store_batch_t *b, const unsigned char *key, size_t klen,
                     const sl_request_t *r, int64_t ts_us, uint64_t now_us);
/* Reads a stored binary record; 0, or SL_EINVAL when val is not one (a
 * JSON record of an older version, or damaged). */
int sl_reqlog_decode(const void *val, size_t vlen, sl_reqlog_rec_t *out);
/* The record's JSON object (malloc'd, NUL-terminated, *len its length):
 * a binary record rendered, a JSON one copied. NULL on OOM or a damaged
 * record. */
char *sl_reqlog_render(const void *val, size_t vlen, size_t *len);

#endif
