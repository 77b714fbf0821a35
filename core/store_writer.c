/* The store's writer thread, which owns every LMDB write transaction and
 * commits whatever the queue holds in one go, and the syncer thread, which
 * flushes the buffered environment every flush_interval_ms so that the
 * fsync never delays a commit. */
#include "store_impl.h"

#include "clock.h"
#include "error.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Set on the writer thread: a _sync call from a done callback would wait
 * for itself. */
static __thread sl_store_t *tl_writer_of;

bool
sl_store_on_writer(const sl_store_t *st) {
    return tl_writer_of == st;
}

static sl_store_op_t *
take_all(sl_store_t *st) {
    sl_store_op_t *op = atomic_exchange(&st->head, NULL), *fifo = NULL;
    while (op != NULL) {
        sl_store_op_t *next = op->next;
        op->next = fifo;
        fifo = op;
        op = next;
    }
    return fifo;
}

static void
wait_for_work(sl_store_t *st, uint64_t until_us) {
    struct timespec ts = {(time_t)(until_us / 1000000),
                          (long)(until_us % 1000000) * 1000};
    pthread_mutex_lock(&st->wake_mu);
    atomic_store(&st->writer_sleeping, 1);
    if (atomic_load(&st->head) == NULL && !atomic_load(&st->stopping))
        pthread_cond_timedwait(&st->wake_cv, &st->wake_mu, &ts);
    atomic_store(&st->writer_sleeping, 0);
    pthread_mutex_unlock(&st->wake_mu);
}

static void
put_header(void *dst, int64_t expires_at) {
    memcpy(dst, &expires_at, sizeof expires_at);
}

/* Applies a batch of puts with one cursor. Request-log keys grow with
 * time, so most go in with MDB_APPEND, which skips the key search and
 * fills pages instead of splitting them; a key that does not sort last is
 * put the ordinary way. A value over max_value_bytes is skipped. */
static int
apply_puts(sl_store_t *st, MDB_txn *txn, sl_store_op_t *op, int64_t now) {
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, st->dbi[op->db], &c);
    if (rc != 0)
        return rc;
    int64_t exp = op->ttl_ms > 0 ? now + op->ttl_ms : 0;
    const unsigned char *p = op->data, *end = op->data + op->vlen;
    while (rc == 0 && end - p >= SL_STORE_ITEM_HDR) {
        uint16_t kl;
        uint32_t vl;
        memcpy(&kl, p, 2);
        memcpy(&vl, p + 2, 4);
        p += SL_STORE_ITEM_HDR;
        if ((size_t)(end - p) < (size_t)kl + vl)
            break; /* cannot happen: built by sl_store_batch_add */
        MDB_val k = {kl, (void *)p}, v = {SL_STORE_HDR + vl, NULL};
        const unsigned char *val = p + kl;
        p = val + vl;
        if (kl > st->maxkey || vl > st->opt.max_value_bytes) {
            op->rc = SL_EINVAL;
            continue;
        }
        rc = mdb_cursor_put(c, &k, &v, MDB_RESERVE | MDB_APPEND);
        if (rc == MDB_KEYEXIST) {
            v.mv_size = SL_STORE_HDR + vl;
            rc = mdb_cursor_put(c, &k, &v, MDB_RESERVE);
        }
        if (rc != 0)
            break;
        put_header(v.mv_data, exp);
        if (vl > 0)
            memcpy((unsigned char *)v.mv_data + SL_STORE_HDR, val, vl);
    }
    mdb_cursor_close(c);
    return rc;
}

/* Applies one op in txn. Returns an LMDB code that breaks the txn (it
 * must then be aborted); an outcome that concerns only this op goes to
 * op->rc. */
static int
apply_one(sl_store_t *st, MDB_txn *txn, sl_store_op_t *op, int64_t now) {
    MDB_dbi dbi = st->dbi[op->db];
    MDB_val k = {op->klen, op->data}, v;
    int64_t exp = 0, cur = 0;
    int rc;
    op->rc = 0;
    op->value = 0;
    switch (op->kind) {
    case SL_OP_PUT:
        v.mv_size = SL_STORE_HDR + op->vlen;
        if ((rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE)) != 0)
            return rc;
        put_header(v.mv_data, op->ttl_ms > 0 ? now + op->ttl_ms : 0);
        if (op->vlen > 0)
            memcpy((unsigned char *)v.mv_data + SL_STORE_HDR,
                   op->data + op->klen, op->vlen);
        return 0;
    case SL_OP_DEL:
        rc = mdb_get(txn, dbi, &k, &v);
        if (rc == MDB_NOTFOUND) {
            op->rc = SL_ENOTFOUND;
            return 0;
        }
        if (rc != 0)
            return rc;
        if (v.mv_size >= SL_STORE_HDR) {
            memcpy(&exp, v.mv_data, sizeof exp);
            if (exp != 0 && exp <= now)
                op->rc = SL_ENOTFOUND; /* it was gone already */
        }
        return mdb_del(txn, dbi, &k, NULL);
    case SL_OP_INCR:
        rc = mdb_get(txn, dbi, &k, &v);
        if (rc == 0 && v.mv_size >= SL_STORE_HDR) {
            memcpy(&exp, v.mv_data, sizeof exp);
            if (exp != 0 && exp <= now)
                rc = MDB_NOTFOUND; /* a new window */
        }
        if (rc == MDB_NOTFOUND) {
            exp = op->ttl_ms > 0 ? now + op->ttl_ms : 0;
        } else if (rc != 0) {
            return rc;
        } else if (v.mv_size != SL_STORE_HDR + sizeof cur) {
            op->rc = SL_EINVAL;
            return 0;
        } else {
            memcpy(&cur, (unsigned char *)v.mv_data + SL_STORE_HDR, sizeof cur);
        }
        if (__builtin_add_overflow(cur, op->delta, &cur)) {
            op->rc = SL_EINVAL;
            return 0;
        }
        v.mv_size = SL_STORE_HDR + sizeof cur;
        if ((rc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE)) != 0)
            return rc;
        put_header(v.mv_data, exp);
        memcpy((unsigned char *)v.mv_data + SL_STORE_HDR, &cur, sizeof cur);
        op->value = cur;
        return 0;
    case SL_OP_PUTS: return apply_puts(st, txn, op, now);
    case SL_OP_BARRIER: return 0;
    }
    return EINVAL;
}

/* Remaps env e at size bytes (LMDB rounds it up to the pages in use).
 * Readers must not be inside the map meanwhile; each holds its own lock
 * during a read, so this waits for the reads in flight. */
static int
remap(sl_store_t *st, int e, size_t size) {
    sl_store_quiesce(st);
    int rc = mdb_env_set_mapsize(st->env[e], size);
    sl_store_unquiesce(st);
    if (rc != 0)
        sl_store_report(st, "resizing the map to %zu bytes: %s", size,
                        mdb_strerror(rc));
    return rc;
}

/* Doubles a full map, up to map_size_max. 0 when it grew. */
static int
grow_map(sl_store_t *st, int e) {
    size_t cur = atomic_load(&st->map_size[e]), max = st->opt.map_size_max;
    if (cur >= max)
        return -1;
    size_t next = cur > max / 2 ? max : cur * 2;
    if (remap(st, e, next) != 0)
        return -1;
    atomic_store(&st->map_size[e], next);
    atomic_fetch_add(&st->grows, 1);
    return 0;
}

static void
committed(sl_store_t *st, int e) {
    atomic_fetch_add(&st->commits, 1);
    if (e == SL_ENV_BUFFERED)
        atomic_store(&st->buffered_dirty, 1);
}

/* What a write txn does: returns an LMDB code that fails the txn; sets
 * *commit when there is something to commit. */
typedef int (*txn_body_fn)(sl_store_t *st, MDB_txn *txn, void *arg,
                           bool *commit);

/* A deletion in LMDB copies pages before it frees any, so in a map that
 * is full to the last page even a delete fails, and the space could never
 * be recovered. Deletes (and the sweep) may therefore borrow this much
 * beyond the map; the map is then set back to its size, which LMDB rounds
 * up to the pages in use, so puts never get the borrowed room. */
#define DELETE_RESERVE ((size_t)1 << 20)

/* Runs body in one write txn of env e and commits; grows the map or
 * adopts another process's growth and retries. 0 or the LMDB code. */
static int
txn_run(sl_store_t *st, int e, txn_body_fn body, void *arg, bool frees) {
    sl_store_reader_t *w = st->wreader;
    bool borrowed = false;
    int rc;
    for (int tries = 0;; tries++) {
        MDB_txn *txn;
        bool commit = false;
        pthread_mutex_lock(&w->lock);
        rc = mdb_txn_begin(st->env[e], NULL, 0, &txn);
        if (rc == 0) {
            rc = body(st, txn, arg, &commit);
            if (rc == 0 && commit)
                rc = mdb_txn_commit(txn);
            else
                mdb_txn_abort(txn);
        }
        pthread_mutex_unlock(&w->lock);
        if (rc == 0) {
            if (commit)
                committed(st, e);
            break;
        }
        if (tries >= 8)
            break;
        if (rc == MDB_MAP_RESIZED && sl_store_adopt_map(st, e) == 0)
            continue;
        if (rc == MDB_MAP_FULL && grow_map(st, e) == 0)
            continue;
        if (rc == MDB_MAP_FULL && frees && !borrowed &&
            remap(st, e, atomic_load(&st->map_size[e]) + DELETE_RESERVE) == 0) {
            borrowed = true;
            continue;
        }
        break;
    }
    if (borrowed)
        remap(st, e, atomic_load(&st->map_size[e]));
    return rc;
}

struct ops_arg {
    int e;
    sl_store_op_t *ops, *only;
};

/* Applies the ops of env e (all of them, or only `only`). */
static int
apply_ops(sl_store_t *st, MDB_txn *txn, void *arg, bool *commit) {
    struct ops_arg *a = arg;
    int64_t now = sl_store_now(st);
    for (sl_store_op_t *op = a->only ? a->only : a->ops; op != NULL;
         op = a->only ? NULL : op->next) {
        if (op->kind == SL_OP_BARRIER || sl_store_env_of(op->db) != a->e)
            continue;
        int rc = apply_one(st, txn, op, now);
        if (rc != 0)
            return rc;
        *commit = true;
    }
    return 0;
}

static void
run_env(sl_store_t *st, int e, sl_store_op_t *ops) {
    bool any = false;
    for (sl_store_op_t *op = ops; op != NULL && !any; op = op->next)
        any = op->kind != SL_OP_BARRIER && sl_store_env_of(op->db) == e;
    if (!any)
        return;
    struct ops_arg a = {e, ops, NULL};
    int rc = txn_run(st, e, apply_ops, &a, false);
    if (rc == 0)
        return;
    if (rc == MDB_MAP_FULL)
        sl_store_report(st,
                        "the %s map is full (%zu bytes): writes that need "
                        "space fail until entries are deleted or expire; "
                        "raise the store's map_size",
                        e == SL_ENV_DURABLE ? "durable" : "buffered",
                        atomic_load(&st->map_size[e]));
    else
        sl_store_report(st, "write transaction: %s", mdb_strerror(rc));
    /* One op per txn, so the ops that fit (deletes, small puts) still go
     * through and each failure reaches its own caller. */
    for (sl_store_op_t *op = ops; op != NULL; op = op->next) {
        if (op->kind == SL_OP_BARRIER || sl_store_env_of(op->db) != e)
            continue;
        a.only = op;
        if ((rc = txn_run(st, e, apply_ops, &a, op->kind == SL_OP_DEL)) != 0)
            op->rc = sl_store_rc(rc);
    }
}

static void
complete(sl_store_t *st, sl_store_op_t *op) {
    while (op != NULL) {
        sl_store_op_t *next = op->next;
        if (op->kind != SL_OP_BARRIER)
            atomic_fetch_add(&st->ops, 1);
        if (op->rc != 0 && op->rc != SL_ENOTFOUND) {
            atomic_fetch_add(&st->errors, 1);
            if (op->rc == SL_ETOOBIG)
                atomic_fetch_add(&st->map_full, 1);
        }
        atomic_fetch_sub(&st->queued_bytes, op->cost);
        if (op->done != NULL)
            op->done(op->ud, op->rc, op->value);
        free(op);
        op = next;
    }
}

static void
process(sl_store_t *st, sl_store_op_t *ops) {
    bool barrier = false;
    for (sl_store_op_t *op = ops; op != NULL; op = op->next)
        barrier |= op->kind == SL_OP_BARRIER;
    run_env(st, SL_ENV_BUFFERED, ops);
    run_env(st, SL_ENV_DURABLE, ops);
    if (barrier) {
        /* The durable env synced at its commit; make the rest durable. */
        pthread_mutex_lock(&st->wreader->lock);
        int rc = mdb_env_sync(st->env[SL_ENV_BUFFERED], 1);
        pthread_mutex_unlock(&st->wreader->lock);
        atomic_fetch_add(&st->syncs, 1);
        if (rc != 0) {
            sl_store_report(st, "sync: %s", mdb_strerror(rc));
            for (sl_store_op_t *op = ops; op != NULL; op = op->next)
                if (op->kind == SL_OP_BARRIER)
                    op->rc = SL_EIO;
        }
    }
    complete(st, ops);
}

/* ---- expiry sweep: a bounded number of entries per database per tick,
 * resuming where the last one stopped. */

static int
sweep_db(sl_store_t *st, MDB_txn *txn, int db, int64_t now, uint64_t *deleted) {
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, st->dbi[db], &c);
    if (rc != 0)
        return rc;
    MDB_val k = {st->sweep_poslen[db], st->sweep_pos[db]}, v;
    rc = mdb_cursor_get(c, &k, &v, k.mv_size > 0 ? MDB_SET_RANGE : MDB_FIRST);
    for (unsigned n = 0; rc == 0 && n < st->opt.sweep_batch; n++) {
        int64_t exp = 0;
        if (v.mv_size >= SL_STORE_HDR)
            memcpy(&exp, v.mv_data, sizeof exp);
        if (exp != 0 && exp <= now) {
            if ((rc = mdb_cursor_del(c, 0)) != 0)
                break;
            (*deleted)++;
        }
        /* After a delete the cursor already sits on the next entry and
         * MDB_NEXT returns that one. */
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND) {
        st->sweep_poslen[db] = 0; /* wrap around */
        rc = 0;
    } else if (rc == 0 && k.mv_size <= SL_STORE_KEYMAX) {
        memcpy(st->sweep_pos[db], k.mv_data, k.mv_size);
        st->sweep_poslen[db] = k.mv_size;
    }
    mdb_cursor_close(c);
    return rc;
}

struct sweep_arg {
    int e;
    uint64_t deleted;
};

static int
sweep_env(sl_store_t *st, MDB_txn *txn, void *arg, bool *commit) {
    struct sweep_arg *a = arg;
    int64_t now = sl_store_now(st);
    int rc = 0;
    a->deleted = 0;
    for (int db = 0; db < SL_STORE_NDB && rc == 0; db++)
        if (sl_store_env_of(db) == a->e)
            rc = sweep_db(st, txn, db, now, &a->deleted);
    *commit = a->deleted > 0;
    return rc;
}

static void
sweep(sl_store_t *st) {
    for (int e = 0; e < SL_STORE_NENV; e++) {
        struct sweep_arg a = {e, 0};
        /* A failure just leaves the entries for a later tick: expired
         * entries are invisible to reads anyway. */
        if (txn_run(st, e, sweep_env, &a, true) == 0)
            atomic_fetch_add(&st->swept, a.deleted);
    }
}

static void *
writer_main(void *arg) {
    sl_store_t *st = arg;
    tl_writer_of = st;
    uint64_t tick_us = (uint64_t)st->opt.sweep_interval_ms * 1000;
    uint64_t next_sweep = sl_now_us() + tick_us;
    for (;;) {
        sl_store_op_t *ops = take_all(st);
        if (ops == NULL) {
            if (atomic_load(&st->stopping))
                break;
            wait_for_work(st, next_sweep);
        }
        while (ops != NULL) {
            /* Bounded transactions: a huge backlog commits in steps. */
            sl_store_op_t *last = ops, *rest;
            for (unsigned n = 1; n < st->opt.max_batch_ops && last->next; n++)
                last = last->next;
            rest = last->next;
            last->next = NULL;
            process(st, ops);
            ops = rest;
        }
        if (sl_now_us() >= next_sweep) {
            sweep(st);
            next_sweep = sl_now_us() + tick_us;
        }
    }
    pthread_mutex_lock(&st->wreader->lock);
    int rc = mdb_env_sync(st->env[SL_ENV_BUFFERED], 1);
    pthread_mutex_unlock(&st->wreader->lock);
    if (rc != 0)
        sl_store_report(st, "sync at close: %s", mdb_strerror(rc));
    return NULL;
}

static void *
syncer_main(void *arg) {
    sl_store_t *st = arg;
    uint64_t period = (uint64_t)st->opt.flush_interval_ms * 1000;
    pthread_mutex_lock(&st->sync_mu);
    while (!st->sync_stop) {
        uint64_t until = sl_now_us() + period;
        struct timespec ts = {(time_t)(until / 1000000),
                              (long)(until % 1000000) * 1000};
        while (!st->sync_stop && sl_now_us() < until)
            pthread_cond_timedwait(&st->sync_cv, &st->sync_mu, &ts);
        if (st->sync_stop)
            break;
        pthread_mutex_unlock(&st->sync_mu);
        if (atomic_exchange(&st->buffered_dirty, 0)) {
            /* Our own reader lock: a map resize must not run under a
             * sync (newer LMDB reads the meta page here). */
            pthread_mutex_lock(&st->sreader->lock);
            int rc = mdb_env_sync(st->env[SL_ENV_BUFFERED], 1);
            pthread_mutex_unlock(&st->sreader->lock);
            atomic_fetch_add(&st->syncs, 1);
            if (rc != 0) {
                atomic_store(&st->buffered_dirty, 1);
                sl_store_report(st, "periodic sync: %s", mdb_strerror(rc));
            }
        }
        pthread_mutex_lock(&st->sync_mu);
    }
    pthread_mutex_unlock(&st->sync_mu);
    return NULL;
}

int
sl_store_writer_start(sl_store_t *st) {
    if (pthread_create(&st->writer, NULL, writer_main, st) != 0)
        return SL_EIO;
    st->writer_started = true;
    if (pthread_create(&st->syncer, NULL, syncer_main, st) != 0)
        return SL_EIO;
    st->syncer_started = true;
    return 0;
}

void
sl_store_writer_stop(sl_store_t *st) {
    if (st->writer_started) {
        atomic_store(&st->stopping, 1);
        pthread_mutex_lock(&st->wake_mu);
        pthread_cond_signal(&st->wake_cv);
        pthread_mutex_unlock(&st->wake_mu);
        pthread_join(st->writer, NULL);
        st->writer_started = false;
    }
    if (st->syncer_started) {
        pthread_mutex_lock(&st->sync_mu);
        st->sync_stop = true;
        pthread_cond_signal(&st->sync_cv);
        pthread_mutex_unlock(&st->sync_mu);
        pthread_join(st->syncer, NULL);
        st->syncer_started = false;
    }
}
