/* The LMDB store: state that survives a restart (api keys, rate-limit
 * counters, the response cache, the usage ledger, the request log, prompt
 * templates, plugin and script key-value data).
 *
 * Threads: open one store per process, before the workers start. Any thread
 * reads directly (a short read-only transaction per call, reused per thread).
 * Every write goes through a queue to the store's one writer thread, which
 * applies everything queued in one transaction and commits it (group
 * commit); no caller ever waits on disk I/O unless it asks to (the _sync
 * calls, meant for CLI tools, the admin path off the workers, and tests).
 *
 * Keys: a database, an optional namespace (a C string; the key is stored as
 * ns '\0' key) and a key of 1..~500 bytes in total. In one database use a
 * namespace always or never: a raw key "a\0b" is the key "b" in namespace
 * "a". Values carry an expiry time; an expired value reads as absent and the
 * writer removes it later.
 *
 * Errors (negative SL_E*): SL_EINVAL bad argument (unknown db, key too long
 * or empty, value over max_value_bytes, a counter op on a non-counter),
 * SL_ENOTFOUND absent or expired, SL_ETOOBIG a write did not fit in the map
 * (map full) or a read's buffer is too small, SL_EAGAIN the write queue is
 * full (max_queue_bytes), SL_ENOMEM, SL_EIO any other LMDB or system error.
 * sl_store_stats() keeps the text of the last write error. See docs/store.md
 * for durability and what a crash loses. */
#ifndef SL_STORE_H
#define SL_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct sl_store sl_store_t;

/* One LMDB database per concern. KEYS and PROMPTS are synced to disk on
 * every commit; the others are flushed every flush_interval_ms. */
typedef enum {
    SL_STORE_KEYS = 0,   /* api keys and consumers */
    SL_STORE_PROMPTS,    /* stored, versioned prompt templates */
    SL_STORE_RATELIMIT,  /* rate-limit counters */
    SL_STORE_CACHE,      /* cached responses */
    SL_STORE_USAGE,      /* the usage ledger (tokens, cost) */
    SL_STORE_REQUESTLOG, /* the request log */
    SL_STORE_KV,         /* sluice.kv and the plugin kv, one ns each */
    SL_STORE_NDB
} sl_store_db_t;

typedef struct {
    const char *dir;        /* data_dir; created (0700) if missing */
    size_t map_size;        /* per environment; 0 = 1 GiB */
    size_t map_size_max;    /* grow a full map up to this; 0 = no growth */
    unsigned max_readers;   /* threads that may read at once; 0 = 512 */
    long flush_interval_ms; /* buffered dbs reach disk by then; 0 = 1000 */
    long sweep_interval_ms; /* expired entries are removed; 0 = 1000 */
    unsigned sweep_batch;   /* entries checked per db per sweep; 0 = 1000 */
    unsigned max_batch_ops; /* ops per write transaction; 0 = 4096 */
    size_t max_value_bytes; /* 0 = 4 MiB */
    size_t max_queue_bytes; /* queued writes beyond it: SL_EAGAIN; 64 MiB */
    /* Wall-clock milliseconds since the epoch for expiry (expiry survives
     * a restart, so not a monotonic clock); NULL = CLOCK_REALTIME. Tests
     * pass a fake one. */
    int64_t (*now_ms)(void *ud);
    void *clock_ud;
    /* Write failures nobody waits for (a fire-and-forget put that hit a
     * full map) are reported here, on the writer thread; NULL = stderr, at
     * most one line per 10 s. */
    void (*on_error)(void *ud, const char *message);
    void *error_ud;
} sl_store_options_t;

/* Completion of a queued write, called on the WRITER thread after the
 * commit (after the fsync for KEYS and PROMPTS): rc is 0 or a negative
 * SL_E*, value is the counter's new value for an increment, else 0. It must
 * be quick and must not call a _sync function or sl_store_flush (they would
 * wait for the thread that runs it); a libevent worker hands the result back
 * to its own thread (queue it and event_active() a per-worker event, or
 * write a notification pipe) and never touches its event_base state here. */
typedef void (*sl_store_done_fn)(void *ud, int rc, int64_t value);

/* Opens (creating if needed) the two environments under opts->dir, every
 * database, and starts the writer and syncer threads. Refuses (SL_EINVAL)
 * a directory this process already has open. 0 or SL_E*; *out on success. */
int sl_store_open(const sl_store_options_t *opts, sl_store_t **out);
/* Commits every queued write, syncs, stops the threads and frees the
 * store. No other thread may be inside a store call (or exit with a store
 * reader) while it runs; call it after the workers are joined. */
void sl_store_close(sl_store_t *st);

/* Copies the value of (db, ns, key) into out_buf. *len (may be NULL) gets
 * the value's length whenever it exists, *expires_at (may be NULL) its
 * expiry in ms since the epoch or 0 for never. SL_ETOOBIG when cap < *len
 * (pass cap 0 to ask for the length), SL_ENOTFOUND when absent or expired.
 * No LMDB transaction outlives the call. */
int sl_store_get(sl_store_t *st, sl_store_db_t db, const char *ns,
                 const void *key, size_t klen, void *out_buf, size_t cap,
                 size_t *len, int64_t *expires_at);
/* Reads a counter written by sl_store_incr_*; SL_ENOTFOUND when absent or
 * expired (a fresh window: count it as 0), SL_EINVAL when not a counter. */
int sl_store_get_counter(sl_store_t *st, sl_store_db_t db, const char *ns,
                         const void *key, size_t klen, int64_t *value,
                         int64_t *expires_at);

/* Calls fn for each live entry of (db, ns) whose key is >= start, in key
 * byte order, with the key without its namespace; the pointers are valid
 * only during the call. fn returns 0 to go on, anything else to stop. One
 * read snapshot for the whole scan, so keep it bounded (admin listings);
 * fn may read the store but must not wait for a write. 0 or SL_E*. */
typedef int (*sl_store_scan_fn)(void *ud, const void *key, size_t klen,
                                const void *val, size_t vlen,
                                int64_t expires_at);
int sl_store_scan(sl_store_t *st, sl_store_db_t db, const char *ns,
                  const void *start, size_t slen, sl_store_scan_fn fn,
                  void *ud);

/* The same in descending key order: entries whose key is <= end (from
 * the last one when elen is 0), newest first for time-ordered keys. */
int sl_store_scan_rev(sl_store_t *st, sl_store_db_t db, const char *ns,
                      const void *end, size_t elen, sl_store_scan_fn fn,
                      void *ud);
/* The number of entries in db, every namespace, expired ones not yet
 * swept included: O(1), for size-based retention. */
int sl_store_count(sl_store_t *st, sl_store_db_t db, uint64_t *out);

/* Queued writes. They return at once: 0 when queued (the outcome then goes
 * to done, which may be NULL for fire-and-forget), or an SL_E* when
 * refused (done is then not called). Writes are applied in the order they
 * were queued. ttl_ms 0 = never expires. */
int sl_store_put_async(sl_store_t *st, sl_store_db_t db, const char *ns,
                       const void *key, size_t klen, const void *val,
                       size_t vlen, int64_t ttl_ms, sl_store_done_fn done,
                       void *ud);
/* done gets SL_ENOTFOUND when there was nothing (live) to delete. */
int sl_store_del_async(sl_store_t *st, sl_store_db_t db, const char *ns,
                       const void *key, size_t klen, sl_store_done_fn done,
                       void *ud);
/* Adds delta to a 64-bit counter, atomically with respect to every other
 * write. A counter that is absent or expired starts at delta and expires
 * ttl_ms later (0 = never); a live one keeps its expiry, which makes fixed
 * windows: key by window, incr with the window's length. done gets the new
 * value, or SL_EINVAL on overflow or a non-counter value. */
int sl_store_incr_async(sl_store_t *st, sl_store_db_t db, const char *ns,
                        const void *key, size_t klen, int64_t delta,
                        int64_t ttl_ms, sl_store_done_fn done, void *ud);

/* A batch of puts into one database, built by one thread and queued as
 * one write: a thread that writes many small records (the request log)
 * pays one queue push, at most one writer wake-up and one allocation per
 * batch instead of per record, and the writer appends them in one pass.
 * Keys have no namespace (a raw key; see above). Zero-initialise; the
 * buffer is kept across batches. */
typedef struct {
    unsigned char *buf; /* items: key length (2 bytes) and value length
                           (4), host order, then the key and the value */
    size_t len, cap;
    size_t n; /* puts in it */
} sl_store_batch_t;
#define SL_STORE_ITEM_HDR 6

/* Adds a put of key (1..511 bytes) with a value of vlen bytes and returns
 * where the value goes, for the caller to fill in before the batch is
 * queued; NULL on OOM or a bad key (the batch is unchanged). */
void *sl_store_batch_add(sl_store_batch_t *b, const void *key, size_t klen,
                         size_t vlen);
/* Queues b's puts (each expiring ttl_ms later, 0 = never) as one write,
 * fire-and-forget, applied in order; b is emptied either way. 0 (also for
 * an empty batch) or SL_E* like sl_store_put_async. */
int sl_store_put_batch_async(sl_store_t *st, sl_store_db_t db, int64_t ttl_ms,
                             sl_store_batch_t *b);
void sl_store_batch_free(sl_store_batch_t *b);

/* The same, blocking the caller until the write is committed (and synced
 * for KEYS and PROMPTS). For CLI tools, tests and threads that may block;
 * never from a worker's event loop or a done callback (SL_EINVAL). */
int sl_store_put_sync(sl_store_t *st, sl_store_db_t db, const char *ns,
                      const void *key, size_t klen, const void *val,
                      size_t vlen, int64_t ttl_ms);
int sl_store_del_sync(sl_store_t *st, sl_store_db_t db, const char *ns,
                      const void *key, size_t klen);
int sl_store_incr_sync(sl_store_t *st, sl_store_db_t db, const char *ns,
                       const void *key, size_t klen, int64_t delta,
                       int64_t ttl_ms, int64_t *value);
/* Waits until everything queued before the call is committed and on disk. */
int sl_store_flush(sl_store_t *st);

/* A number that changes whenever a write to db's environment commits, in
 * this process or another (LMDB's last transaction id): while it stays the
 * same, what db holds has not changed. No transaction, a few loads: for
 * caches of what db holds (the auth plugin's verified keys). 0 on error. */
uint64_t sl_store_generation(sl_store_t *st, sl_store_db_t db);

typedef struct {
    uint64_t ops;         /* writes applied (including failed ones) */
    uint64_t commits;     /* write transactions committed */
    uint64_t syncs;       /* explicit flushes of the buffered environment */
    uint64_t errors;      /* writes that failed */
    uint64_t map_full;    /* writes refused because a map was full */
    uint64_t grows;       /* map size increases */
    uint64_t swept;       /* expired entries removed */
    uint64_t rejected;    /* writes refused because the queue was full */
    size_t queued_bytes;  /* waiting for the writer now */
    size_t map_size[2];   /* durable, buffered: current map sizes */
    char last_error[192]; /* "" when none */
} sl_store_stats_t;

void sl_store_stats(sl_store_t *st, sl_store_stats_t *out);
/* "keys", "prompts", "ratelimit", "cache", "usage", "requestlog", "kv";
 * NULL for an unknown db. */
const char *sl_store_db_name(sl_store_db_t db);

#endif
