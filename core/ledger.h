/* The usage ledger: per consumer x model x UTC hour, with day rollups, in
 * the store's usage database. Each worker sums its requests in memory and
 * flushes the sums as counter increments every store.flush_interval_ms, so
 * a request costs a hash look-up, not a store write; a crash loses at most
 * that interval (plus the store's own buffered flush).
 *
 * Keys are built for scans by time: namespace "usage.h" (hourly) or
 * "usage.d" (daily), key BUCKET '\0' CONSUMER '\0' MODEL '\0' FIELD, where
 * BUCKET is "YYYYMMDDHH" or "YYYYMMDD" (UTC) and FIELD one byte per
 * counter (see sl_usage_field_t). Hourly entries expire after 90 days,
 * daily ones never. */
#ifndef SL_LEDGER_H
#define SL_LEDGER_H

#include "store.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdint.h>

typedef enum {
    SL_U_REQUESTS = 0,
    SL_U_PROMPT,     /* prompt tokens, cached ones included */
    SL_U_COMPLETION, /* completion tokens, reasoning ones included */
    SL_U_CACHED,
    SL_U_REASONING,
    SL_U_COST, /* micro-dollars */
    SL_U_CACHE_HITS,
    SL_U_ERRORS, /* status >= 400 */
    SL_U_NFIELDS
} sl_usage_field_t;

/* The JSON name of a field ("requests", "prompt_tokens", ...). */
const char *sl_usage_field_name(int f);

typedef struct sl_ledger sl_ledger_t;

/* A worker's ledger: sums flushed to st on base every flush_ms. */
sl_ledger_t *sl_ledger_new(struct event_base *base, sl_store_t *st,
                           long flush_ms);
/* Adds one request's counts at wall-clock time t (seconds). */
void sl_ledger_add(sl_ledger_t *l, int64_t t, const char *consumer,
                   const char *model, const int64_t v[SL_U_NFIELDS]);
/* Queues every sum as store increments now. */
void sl_ledger_flush(sl_ledger_t *l);
/* Flushes, then frees (before the event_base is freed). */
void sl_ledger_free(sl_ledger_t *l);

typedef enum {
    SL_GROUP_HOUR = 0,
    SL_GROUP_DAY,
    SL_GROUP_CONSUMER,
    SL_GROUP_MODEL
} sl_usage_group_t;

typedef struct {
    const char *consumer, *model; /* NULL: all */
    int64_t from, to;             /* unix seconds, [from, to); to 0: none */
    sl_usage_group_t group;
} sl_usage_query_t;

typedef struct {
    char *key; /* "2026-11-22T13:00:00Z", "2026-11-22", a consumer, a model */
    int64_t v[SL_U_NFIELDS];
} sl_usage_row_t;

typedef struct {
    sl_usage_row_t *rows; /* sorted by key */
    size_t n, cap;
    int64_t total[SL_U_NFIELDS];
    int daily; /* answered from the day rollups */
} sl_usage_result_t;

/* Answers q from the store. 0 or SL_E*; free the result either way. */
int sl_ledger_query(sl_store_t *st, const sl_usage_query_t *q,
                    sl_usage_result_t *out);
void sl_usage_result_free(sl_usage_result_t *res);
/* {"group_by","from","to","rows":[{key: ..., fields...}],"total":{...}};
 * cost in dollars. NULL on OOM. */
cJSON *sl_usage_result_json(const sl_usage_query_t *q,
                            const sl_usage_result_t *res);

/* "2026-11-22", "2026-11-22T13", "...T13:05", "...T13:05:09" with an
 * optional "Z", or unix seconds. 0 or SL_EINVAL. */
int sl_usage_parse_time(const char *s, int64_t *out);
/* "hour", "day", "consumer", "model". 0 or SL_EINVAL. */
int sl_usage_parse_group(const char *s, sl_usage_group_t *out);
const char *sl_usage_group_name(sl_usage_group_t g);

#endif
