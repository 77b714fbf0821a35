/* The request log: one record per finished request in the store's
 * REQUESTLOG database (a compact form, rendered to JSON when read:
 * reqlog_record.h), written from the worker in batches of queued writes
 * (it never waits on disk), keyed by wall-clock time so scans come out in time
 * order; retention by age and count in a periodic sweep on the main
 * thread. Also the W3C trace context every request carries: accepted from
 * the client's `traceparent`, sent on to the upstream, logged. */
#ifndef SL_REQUESTLOG_H
#define SL_REQUESTLOG_H

#include "request.h"
#include "store.h"

#include "upstream.h"
#include <event2/event.h>
#include <stdint.h>

/* Keys: wall-clock microseconds (big-endian), worker id, a per-thread
 * sequence number: unique, and ordered by time. */
#define SL_REQLOG_KEY_LEN 14

/* ---- trace context ---- */

/* Parses a traceparent value (version-format-00 rules; a later version
 * may carry more fields after a '-'). trace_id and parent_id get
 * lowercase hex; 0, or SL_EINVAL for anything malformed, an all-zero id,
 * or version ff. */
int sl_trace_parse(const char *v, size_t len, char trace_id[33],
                   char parent_id[17], unsigned char *flags);
/* Gives r its trace: the client's trace id and span (as the parent) from
 * a valid traceparent header, else a new trace id; and a new span id of
 * its own, which the upstream sees as its parent. */
void sl_trace_begin(sl_request_t *r);

/* Called by an adapter as it starts an attempt: the headers to send --
 * the provider's prebuilt list with this request's traceparent in front,
 * one node on the request arena (the shared list is never changed) -- and,
 * when bodies are captured, notes the body the provider gets. */
const sl_headers_t *sl_reqlog_upstream(sl_request_t *r,
                                       const sl_headers_t *base,
                                            const char *body, size_t len);

/* ---- recording (worker threads) ---- */

/* Body capture: the answer as it goes to the client (the first call per
 * request counts), and a stream event's text delta. No-ops unless
 * request_log.capture_bodies is on. */
void sl_reqlog_answer(sl_request_t *r, const char *body, size_t len);
void sl_reqlog_stream_event(sl_request_t *r, const char *data, size_t len);

/* Adds r's record (r ended at monotonic now_us) to its worker's batch,
 * which goes to the store as one write every 50 ms or when full. Never
 * blocks; a full queue or map drops the records (the store counts and
 * reports it). */
void sl_reqlog_write(sl_store_t *st, const sl_request_t *r, uint64_t now_us);

/* The record's JSON as GET /admin/logs shows it (malloc'd, NUL-terminated)
 * and its key; exposed for unit tests. now_us is the wall-clock time of
 * the record. */
char *sl_reqlog_format(const sl_request_t *r, int64_t now_us, size_t *len);
void sl_reqlog_key(unsigned char key[SL_REQLOG_KEY_LEN], int64_t now_us,
                   unsigned worker, uint32_t seq);
/* The wall-clock time a key was made at. */
int64_t sl_reqlog_key_time(const unsigned char *key, size_t klen);

/* ---- retention ---- */

/* Deletes (queued) records older than max_age_ms and the oldest beyond
 * max_entries, at most `batch` of them per call; *deleted gets how many.
 * 0 or SL_E*. */
int sl_reqlog_sweep(sl_store_t *st, int64_t now_us, int64_t max_age_ms,
                    uint64_t max_entries, size_t batch, size_t *deleted);

struct sl_server;
typedef struct sl_reqlog_sweeper sl_reqlog_sweeper_t;
/* Runs sl_reqlog_sweep on base (the main thread) every
 * request_log.sweep_interval_ms of the current config. NULL on failure. */
sl_reqlog_sweeper_t *sl_reqlog_sweeper_start(struct event_base *base,
                                             struct sl_server *srv);
void sl_reqlog_sweeper_stop(sl_reqlog_sweeper_t *s);

#endif
