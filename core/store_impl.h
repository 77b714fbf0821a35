/* Internals shared by core/store.c (open, close, reads, the write queue)
 * and core/store_writer.c (the writer and syncer threads). */
#ifndef SL_STORE_IMPL_H
#define SL_STORE_IMPL_H

#include "store.h"

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Two environments, split by durability: a system crash while the
 * buffered one has unsynced commits can corrupt it (MDB_NOSYNC), and that
 * must never take the api keys with it. */
enum { SL_ENV_DURABLE = 0, SL_ENV_BUFFERED = 1, SL_STORE_NENV = 2 };

/* Each stored value starts with its expiry: int64 ms since the epoch in
 * host byte order, 0 = never. */
#define SL_STORE_HDR 8
#define SL_STORE_KEYMAX 512 /* >= mdb_env_get_maxkeysize() (511) */

static inline int
sl_store_env_of(sl_store_db_t db) {
    return db == SL_STORE_KEYS || db == SL_STORE_PROMPTS ? SL_ENV_DURABLE
                                                         : SL_ENV_BUFFERED;
}

typedef enum {
    SL_OP_PUT,
    SL_OP_DEL,
    SL_OP_INCR,
    SL_OP_PUTS,    /* a batch: data holds sl_store_batch_t items, no key */
    SL_OP_BARRIER, /* sl_store_flush: completes after commit and sync */
} sl_store_op_kind_t;

typedef struct sl_store_op {
    struct sl_store_op *next;
    sl_store_op_kind_t kind;
    sl_store_db_t db;
    int64_t ttl_ms;
    int64_t delta;
    sl_store_done_fn done;
    void *ud;
    int rc;        /* outcome, set by the writer */
    int64_t value; /* incr: the new value */
    size_t cost;   /* bytes counted in queued_bytes */
    size_t klen;   /* encoded key (ns '\0' key) */
    size_t vlen;
    unsigned char data[]; /* key, then value */
} sl_store_op_t;

/* A thread's read transactions, one per environment, reset between calls
 * and renewed by the next. The lock is recursive and uncontended: only a
 * map resize (sl_store_quiesce) takes it from another thread. The writer
 * and the syncer have one too, held while they use an environment. */
typedef struct sl_store_reader {
    pthread_mutex_t lock;
    MDB_txn *txn[SL_STORE_NENV];
    sl_store_t *st;
    struct sl_store_reader *prev, *next;
} sl_store_reader_t;

struct sl_store {
    sl_store_options_t opt; /* defaults applied; opt.dir points at dir */
    char *dir;
    MDB_env *env[SL_STORE_NENV];
    MDB_dbi dbi[SL_STORE_NDB];
    size_t maxkey;
    unsigned long dev, ino; /* of the durable env dir: the open-once guard */

    pthread_key_t tls; /* this store's reader of the calling thread */
    bool tls_made;
    pthread_mutex_t readers_mu; /* the list; taken before any reader lock */
    sl_store_reader_t *readers;

    /* The queue: a lock-free stack of ops, newest first; the writer takes
     * it whole and reverses it. */
    _Atomic(sl_store_op_t *) head;
    atomic_size_t queued_bytes;
    atomic_int writer_sleeping;
    atomic_int stopping;
    pthread_mutex_t wake_mu;
    pthread_cond_t wake_cv; /* CLOCK_MONOTONIC */
    pthread_t writer;
    bool writer_started;
    sl_store_reader_t *wreader; /* the writer's */

    pthread_t syncer;
    bool syncer_started;
    sl_store_reader_t *sreader; /* the syncer's */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    bool sync_stop;
    atomic_int buffered_dirty; /* commits since the last sync */

    /* Writer only. */
    unsigned char sweep_pos[SL_STORE_NDB][SL_STORE_KEYMAX];
    size_t sweep_poslen[SL_STORE_NDB];

    atomic_size_t map_size[SL_STORE_NENV];
    atomic_uint_fast64_t ops, commits, syncs, errors, map_full, grows, swept,
        rejected;
    pthread_mutex_t err_mu;
    char last_error[192];
    int64_t last_report_ms;
};

/* LMDB and errno codes to SL_E*. */
int sl_store_rc(int mdb_rc);
int64_t sl_store_now(sl_store_t *st);
/* Records a write failure for the stats and reports it through on_error
 * (or stderr, rate-limited). */
void sl_store_report(sl_store_t *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Holds every reader's lock (and the list lock) so a map can be resized:
 * the caller must hold no reader lock. */
void sl_store_quiesce(sl_store_t *st);
void sl_store_unquiesce(sl_store_t *st);
/* Adopts a map that another process grew (MDB_MAP_RESIZED). */
int sl_store_adopt_map(sl_store_t *st, int e);
/* A reader on the store's list, not yet bound to a thread. */
sl_store_reader_t *sl_store_reader_new(sl_store_t *st);
/* Unlinks and frees a thread's reader: the thread-specific key's
 * destructor. */
void sl_store_reader_exit(void *r);
/* Frees a reader already off the list (close). */
void sl_store_reader_free(sl_store_reader_t *r);
/* ns '\0' key into buf (SL_STORE_KEYMAX); 0 or SL_EINVAL. */
int sl_store_encode_key(const sl_store_t *st, const char *ns, const void *key,
                        size_t klen, unsigned char *buf, size_t *out);

int sl_store_writer_start(sl_store_t *st);
/* True on st's writer thread (where a _sync call would wait for itself). */
bool sl_store_on_writer(const sl_store_t *st);
void sl_store_writer_stop(sl_store_t *st);

#endif
