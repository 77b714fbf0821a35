/* Writes from any thread: each becomes an op pushed onto the writer's
 * queue; the blocking variants wait for its completion. */
#include "store_impl.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

/* ---- the write queue */

static sl_store_op_t *
op_new(sl_store_t *st, sl_store_op_kind_t kind, sl_store_db_t db,
       const char *ns, const void *key, size_t klen, const void *val,
       size_t vlen, int *rc) {
    unsigned char kb[SL_STORE_KEYMAX];
    size_t kl = 0;
    *rc = SL_EINVAL;
    if (kind != SL_OP_BARRIER) {
        if ((unsigned)db >= SL_STORE_NDB || vlen > st->opt.max_value_bytes ||
            (val == NULL && vlen > 0))
            return NULL;
        if ((*rc = sl_store_encode_key(st, ns, key, klen, kb, &kl)) != 0)
            return NULL;
    }
    sl_store_op_t *op = malloc(sizeof *op + kl + vlen);
    if (op == NULL) {
        *rc = SL_ENOMEM;
        return NULL;
    }
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->db = db;
    op->klen = kl;
    op->vlen = vlen;
    op->cost = sizeof *op + kl + vlen;
    memcpy(op->data, kb, kl);
    if (vlen > 0)
        memcpy(op->data + kl, val, vlen);
    *rc = 0;
    return op;
}

static int
enqueue(sl_store_t *st, sl_store_op_t *op) {
    if (atomic_load_explicit(&st->stopping, memory_order_relaxed)) {
        free(op);
        return SL_EINVAL;
    }
    size_t q = atomic_fetch_add(&st->queued_bytes, op->cost) + op->cost;
    if (op->kind != SL_OP_BARRIER && q > st->opt.max_queue_bytes) {
        atomic_fetch_sub(&st->queued_bytes, op->cost);
        atomic_fetch_add(&st->rejected, 1);
        free(op);
        return SL_EAGAIN;
    }
    sl_store_op_t *old = atomic_load_explicit(&st->head, memory_order_relaxed);
    do
        op->next = old;
    while (!atomic_compare_exchange_weak(&st->head, &old, op));
    /* Only the push onto an empty queue can find the writer asleep; the
     * seq_cst pair (head here, writer_sleeping there) closes the race. */
    if (old == NULL && atomic_load(&st->writer_sleeping)) {
        pthread_mutex_lock(&st->wake_mu);
        pthread_cond_signal(&st->wake_cv);
        pthread_mutex_unlock(&st->wake_mu);
    }
    return 0;
}

static int
submit(sl_store_t *st, sl_store_op_kind_t kind, sl_store_db_t db,
       const char *ns, const void *key, size_t klen, const void *val,
       size_t vlen, int64_t ttl_ms, int64_t delta, sl_store_done_fn done,
       void *ud) {
    int rc;
    if (ttl_ms < 0)
        return SL_EINVAL;
    sl_store_op_t *op = op_new(st, kind, db, ns, key, klen, val, vlen, &rc);
    if (op == NULL)
        return rc;
    op->ttl_ms = ttl_ms;
    op->delta = delta;
    op->done = done;
    op->ud = ud;
    return enqueue(st, op);
}

int
sl_store_put_async(sl_store_t *st, sl_store_db_t db, const char *ns,
                   const void *key, size_t klen, const void *val, size_t vlen,
                   int64_t ttl_ms, sl_store_done_fn done, void *ud) {
    return submit(st, SL_OP_PUT, db, ns, key, klen, val, vlen, ttl_ms, 0, done,
                  ud);
}

int
sl_store_del_async(sl_store_t *st, sl_store_db_t db, const char *ns,
                   const void *key, size_t klen, sl_store_done_fn done,
                   void *ud) {
    return submit(st, SL_OP_DEL, db, ns, key, klen, NULL, 0, 0, 0, done, ud);
}

int
sl_store_incr_async(sl_store_t *st, sl_store_db_t db, const char *ns,
                    const void *key, size_t klen, int64_t delta, int64_t ttl_ms,
                    sl_store_done_fn done, void *ud) {
    return submit(st, SL_OP_INCR, db, ns, key, klen, NULL, 0, ttl_ms, delta,
                  done, ud);
}

/* ---- batches */

void *
sl_store_batch_add(sl_store_batch_t *b, const void *key, size_t klen,
                   size_t vlen) {
    if (key == NULL || klen == 0 || klen >= SL_STORE_KEYMAX ||
        vlen > UINT32_MAX)
        return NULL;
    size_t need = b->len + SL_STORE_ITEM_HDR + klen + vlen;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < need)
            cap *= 2;
        unsigned char *p = realloc(b->buf, cap);
        if (p == NULL)
            return NULL;
        b->buf = p;
        b->cap = cap;
    }
    unsigned char *p = b->buf + b->len;
    uint16_t kl = (uint16_t)klen;
    uint32_t vl = (uint32_t)vlen;
    memcpy(p, &kl, 2);
    memcpy(p + 2, &vl, 4);
    memcpy(p + SL_STORE_ITEM_HDR, key, klen);
    b->len = need;
    b->n++;
    return p + SL_STORE_ITEM_HDR + klen;
}

int
sl_store_put_batch_async(sl_store_t *st, sl_store_db_t db, int64_t ttl_ms,
                         sl_store_batch_t *b) {
    size_t len = b->len;
    b->len = b->n = 0;
    if (len == 0)
        return 0;
    if ((unsigned)db >= SL_STORE_NDB || ttl_ms < 0)
        return SL_EINVAL;
    sl_store_op_t *op = malloc(sizeof *op + len);
    if (op == NULL)
        return SL_ENOMEM;
    memset(op, 0, sizeof *op);
    op->kind = SL_OP_PUTS;
    op->db = db;
    op->ttl_ms = ttl_ms;
    op->vlen = len;
    op->cost = sizeof *op + len;
    memcpy(op->data, b->buf, len);
    return enqueue(st, op);
}

void
sl_store_batch_free(sl_store_batch_t *b) {
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = b->n = 0;
}

/* ---- blocking wrappers */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    int64_t value;
} waiter_t;

static void
waiter_done(void *ud, int rc, int64_t value) {
    waiter_t *w = ud;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->value = value;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int
submit_wait(sl_store_t *st, sl_store_op_kind_t kind, sl_store_db_t db,
            const char *ns, const void *key, size_t klen, const void *val,
            size_t vlen, int64_t ttl_ms, int64_t delta, int64_t *value) {
    if (sl_store_on_writer(st))
        return SL_EINVAL; /* would wait for itself */
    waiter_t w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc;
    if (kind == SL_OP_BARRIER) {
        sl_store_op_t *op = op_new(st, kind, 0, NULL, NULL, 0, NULL, 0, &rc);
        if (op != NULL) {
            op->done = waiter_done;
            op->ud = &w;
            rc = enqueue(st, op);
        }
    } else {
        rc = submit(st, kind, db, ns, key, klen, val, vlen, ttl_ms, delta,
                    waiter_done, &w);
    }
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.rc;
        if (value != NULL)
            *value = w.value;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

int
sl_store_put_sync(sl_store_t *st, sl_store_db_t db, const char *ns,
                  const void *key, size_t klen, const void *val, size_t vlen,
                  int64_t ttl_ms) {
    return submit_wait(st, SL_OP_PUT, db, ns, key, klen, val, vlen, ttl_ms, 0,
                       NULL);
}

int
sl_store_del_sync(sl_store_t *st, sl_store_db_t db, const char *ns,
                  const void *key, size_t klen) {
    return submit_wait(st, SL_OP_DEL, db, ns, key, klen, NULL, 0, 0, 0, NULL);
}

int
sl_store_incr_sync(sl_store_t *st, sl_store_db_t db, const char *ns,
                   const void *key, size_t klen, int64_t delta, int64_t ttl_ms,
                   int64_t *value) {
    return submit_wait(st, SL_OP_INCR, db, ns, key, klen, NULL, 0, ttl_ms,
                       delta, value);
}

int
sl_store_flush(sl_store_t *st) {
    return submit_wait(st, SL_OP_BARRIER, 0, NULL, NULL, 0, NULL, 0, 0, 0,
                       NULL);
}
