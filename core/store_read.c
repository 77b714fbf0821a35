/* Reads, on the caller's thread: each thread keeps one read-only txn per
 * environment, reset after every call and renewed by the next, so a read
 * costs no allocation and no reader-table lock, and no txn outlives it. */
#include "store_impl.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

void
sl_store_reader_free(sl_store_reader_t *r) {
    for (int e = 0; e < SL_STORE_NENV; e++)
        if (r->txn[e] != NULL)
            mdb_txn_abort(r->txn[e]);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

sl_store_reader_t *
sl_store_reader_new(sl_store_t *st) {
    sl_store_reader_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    /* Recursive: a scan callback may read with the same reader. */
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    int rc = pthread_mutex_init(&r->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0) {
        free(r);
        return NULL;
    }
    r->st = st;
    pthread_mutex_lock(&st->readers_mu);
    r->next = st->readers;
    if (st->readers != NULL)
        st->readers->prev = r;
    st->readers = r;
    pthread_mutex_unlock(&st->readers_mu);
    return r;
}

void
sl_store_reader_exit(void *p) {
    sl_store_reader_t *r = p;
    sl_store_t *st = r->st;
    pthread_mutex_lock(&st->readers_mu);
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        st->readers = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    pthread_mutex_unlock(&st->readers_mu);
    sl_store_reader_free(r);
}

/* The calling thread's reader, made on its first read. A thread-specific
 * key per store (not a bare __thread pointer) so that a thread can use
 * two stores, thread exit frees the reader, and close can find and free
 * the readers of threads that are still alive. */
static sl_store_reader_t *
reader_self(sl_store_t *st) {
    sl_store_reader_t *r = pthread_getspecific(st->tls);
    if (r != NULL)
        return r;
    if ((r = sl_store_reader_new(st)) == NULL)
        return NULL;
    if (pthread_setspecific(st->tls, r) != 0) {
        sl_store_reader_exit(r);
        return NULL;
    }
    return r;
}

void
sl_store_quiesce(sl_store_t *st) {
    pthread_mutex_lock(&st->readers_mu);
    for (sl_store_reader_t *r = st->readers; r != NULL; r = r->next)
        pthread_mutex_lock(&r->lock);
}

void
sl_store_unquiesce(sl_store_t *st) {
    for (sl_store_reader_t *r = st->readers; r != NULL; r = r->next)
        pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&st->readers_mu);
}

int
sl_store_adopt_map(sl_store_t *st, int e) {
    sl_store_quiesce(st);
    size_t mine = atomic_load(&st->map_size[e]);
    /* 0 = take the size the other process recorded (at least the data). */
    int rc = mdb_env_set_mapsize(st->env[e], 0);
    MDB_envinfo info;
    if (rc == 0 && (rc = mdb_env_info(st->env[e], &info)) == 0) {
        if (info.me_mapsize < mine)
            rc = mdb_env_set_mapsize(st->env[e], mine);
        else
            atomic_store(&st->map_size[e], info.me_mapsize);
    }
    sl_store_unquiesce(st);
    return rc;
}

uint64_t
sl_store_generation(sl_store_t *st, sl_store_db_t db) {
    MDB_envinfo info;
    if ((unsigned)db >= SL_STORE_NDB ||
        mdb_env_info(st->env[sl_store_env_of(db)], &info) != 0)
        return 0;
    return (uint64_t)info.me_last_txnid;
}

/* A ready read txn of reader r on env e; r->lock held by the caller. */
static int
reader_txn(sl_store_t *st, sl_store_reader_t *r, int e, MDB_txn **out) {
    int rc;
    if (r->txn[e] == NULL)
        rc = mdb_txn_begin(st->env[e], NULL, MDB_RDONLY, &r->txn[e]);
    else if ((rc = mdb_txn_renew(r->txn[e])) != 0) {
        mdb_txn_abort(r->txn[e]);
        r->txn[e] = NULL;
    }
    if (rc != 0)
        r->txn[e] = NULL;
    *out = r->txn[e];
    return rc;
}

/* ns '\0' key into buf, its length into *out; 0 or SL_EINVAL. */
int
sl_store_encode_key(const sl_store_t *st, const char *ns, const void *key,
                    size_t klen, unsigned char *buf, size_t *out) {
    size_t nl = ns != NULL ? strlen(ns) + 1 : 0;
    if ((key == NULL && klen > 0) || nl + klen == 0 || nl + klen > st->maxkey ||
        klen > st->maxkey)
        return SL_EINVAL;
    if (nl > 0)
        memcpy(buf, ns, nl);
    if (klen > 0)
        memcpy(buf + nl, key, klen);
    *out = nl + klen;
    return 0;
}

static int64_t
value_expiry(const MDB_val *v) {
    int64_t exp;
    memcpy(&exp, v->mv_data, sizeof exp);
    return exp;
}

/* Runs fn with a read txn of the calling thread on db's environment,
 * adopting a map another process grew. */
typedef int (*read_fn)(sl_store_t *st, MDB_txn *txn, void *arg);

static int
with_read_txn(sl_store_t *st, sl_store_db_t db, bool own_txn, read_fn fn,
              void *arg) {
    int e = sl_store_env_of(db);
    sl_store_reader_t *r = reader_self(st);
    if (r == NULL)
        return SL_ENOMEM;
    for (int tries = 0;; tries++) {
        MDB_txn *txn;
        int rc;
        pthread_mutex_lock(&r->lock);
        if (own_txn)
            rc = mdb_txn_begin(st->env[e], NULL, MDB_RDONLY, &txn);
        else
            rc = reader_txn(st, r, e, &txn);
        if (rc == 0) {
            rc = fn(st, txn, arg);
            if (own_txn)
                mdb_txn_abort(txn);
            else
                mdb_txn_reset(txn);
            pthread_mutex_unlock(&r->lock);
            return rc;
        }
        pthread_mutex_unlock(&r->lock);
        if (rc != MDB_MAP_RESIZED || tries == 2)
            return sl_store_rc(rc);
        if ((rc = sl_store_adopt_map(st, e)) != 0)
            return sl_store_rc(rc);
    }
}

struct get_args {
    sl_store_db_t db;
    MDB_val key;
    void *out;
    size_t cap;
    size_t *len;
    int64_t *expires_at;
};

static int
get_in_txn(sl_store_t *st, MDB_txn *txn, void *arg) {
    struct get_args *a = arg;
    MDB_val v;
    int rc = mdb_get(txn, st->dbi[a->db], &a->key, &v);
    if (rc != 0)
        return sl_store_rc(rc);
    if (v.mv_size < SL_STORE_HDR)
        return SL_EIO; /* not written by this store */
    int64_t exp = value_expiry(&v);
    if (exp != 0 && exp <= sl_store_now(st))
        return SL_ENOTFOUND;
    size_t n = v.mv_size - SL_STORE_HDR;
    if (a->len != NULL)
        *a->len = n;
    if (a->expires_at != NULL)
        *a->expires_at = exp;
    if (n > a->cap)
        return SL_ETOOBIG;
    if (n > 0)
        memcpy(a->out, (unsigned char *)v.mv_data + SL_STORE_HDR, n);
    return 0;
}

int
sl_store_get(sl_store_t *st, sl_store_db_t db, const char *ns, const void *key,
             size_t klen, void *out_buf, size_t cap, size_t *len,
             int64_t *expires_at) {
    unsigned char kb[SL_STORE_KEYMAX];
    struct get_args a = {db,  {0, kb},   out_buf, out_buf ? cap : 0,
                         len, expires_at};
    if ((unsigned)db >= SL_STORE_NDB)
        return SL_EINVAL;
    int rc = sl_store_encode_key(st, ns, key, klen, kb, &a.key.mv_size);
    if (rc != 0)
        return rc;
    return with_read_txn(st, db, false, get_in_txn, &a);
}

int
sl_store_get_counter(sl_store_t *st, sl_store_db_t db, const char *ns,
                     const void *key, size_t klen, int64_t *value,
                     int64_t *expires_at) {
    int64_t v;
    size_t len;
    int rc =
        sl_store_get(st, db, ns, key, klen, &v, sizeof v, &len, expires_at);
    if (rc == SL_ETOOBIG || (rc == 0 && len != sizeof v))
        return SL_EINVAL;
    if (rc == 0 && value != NULL)
        *value = v;
    return rc;
}

struct scan_args {
    sl_store_db_t db;
    MDB_val start;
    size_t nslen; /* ns '\0', the prefix every key of the scan has */
    sl_store_scan_fn fn;
    void *ud;
    bool rev; /* descending, from start (or the namespace's last key) */
};

/* Positions c on the last key <= a->start, or on the namespace's last key
 * when only the namespace was given. */
static int
scan_rev_first(MDB_cursor *c, const struct scan_args *a, MDB_val *k,
               MDB_val *v) {
    unsigned char bound[SL_STORE_KEYMAX];
    MDB_val b = a->start;
    int rc;
    if (b.mv_size == 0)
        return mdb_cursor_get(c, k, v, MDB_LAST);
    if (b.mv_size == a->nslen) {
        /* Just past the namespace: "ns\0" sorts before "ns\1". */
        memcpy(bound, b.mv_data, b.mv_size);
        bound[b.mv_size - 1] = 1;
        b.mv_data = bound;
    }
    *k = b;
    rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND)
        return mdb_cursor_get(c, k, v, MDB_LAST);
    if (rc != 0)
        return rc;
    if (b.mv_data != bound && k->mv_size == b.mv_size &&
        memcmp(k->mv_data, b.mv_data, b.mv_size) == 0)
        return 0; /* the end key itself */
    return mdb_cursor_get(c, k, v, MDB_PREV);
}

static int
scan_in_txn(sl_store_t *st, MDB_txn *txn, void *arg) {
    struct scan_args *a = arg;
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, st->dbi[a->db], &c);
    if (rc != 0)
        return sl_store_rc(rc);
    unsigned char *prefix = a->start.mv_data;
    MDB_val k = a->start, v;
    int64_t now = sl_store_now(st);
    MDB_cursor_op step = a->rev ? MDB_PREV : MDB_NEXT;
    if (a->rev)
        rc = scan_rev_first(c, a, &k, &v);
    else
        rc = k.mv_size > 0 ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
                           : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, step)) {
        if (k.mv_size < a->nslen || memcmp(k.mv_data, prefix, a->nslen) != 0)
            break;
        if (v.mv_size < SL_STORE_HDR)
            continue;
        int64_t exp = value_expiry(&v);
        if (exp != 0 && exp <= now)
            continue;
        if (a->fn(a->ud, (unsigned char *)k.mv_data + a->nslen,
                  k.mv_size - a->nslen,
                  (unsigned char *)v.mv_data + SL_STORE_HDR,
                  v.mv_size - SL_STORE_HDR, exp) != 0)
            break;
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : sl_store_rc(rc);
}

int
sl_store_scan(sl_store_t *st, sl_store_db_t db, const char *ns,
              const void *start, size_t slen, sl_store_scan_fn fn, void *ud) {
    unsigned char kb[SL_STORE_KEYMAX];
    struct scan_args a = {db, {0, kb}, ns ? strlen(ns) + 1 : 0, fn, ud,
                          false};
    if ((unsigned)db >= SL_STORE_NDB || fn == NULL)
        return SL_EINVAL;
    if (a.nslen + slen > 0) {
        int rc = sl_store_encode_key(st, ns, start, slen, kb, &a.start.mv_size);
        if (rc != 0)
            return rc;
    }
    /* Its own txn: fn may call sl_store_get, which uses the thread's. */
    return with_read_txn(st, db, true, scan_in_txn, &a);
}

int
sl_store_scan_rev(sl_store_t *st, sl_store_db_t db, const char *ns,
                  const void *end, size_t elen, sl_store_scan_fn fn,
                  void *ud) {
    unsigned char kb[SL_STORE_KEYMAX];
    struct scan_args a = {db, {0, kb}, ns ? strlen(ns) + 1 : 0, fn, ud,
                          true};
    if ((unsigned)db >= SL_STORE_NDB || fn == NULL)
        return SL_EINVAL;
    if (a.nslen + elen > 0) {
        int rc = sl_store_encode_key(st, ns, end, elen, kb, &a.start.mv_size);
        if (rc != 0)
            return rc;
    }
    return with_read_txn(st, db, true, scan_in_txn, &a);
}

struct count_args {
    sl_store_db_t db;
    uint64_t n;
};

static int
count_in_txn(sl_store_t *st, MDB_txn *txn, void *arg) {
    struct count_args *a = arg;
    MDB_stat ms;
    int rc = mdb_stat(txn, st->dbi[a->db], &ms);
    if (rc != 0)
        return sl_store_rc(rc);
    a->n = ms.ms_entries;
    return 0;
}

int
sl_store_count(sl_store_t *st, sl_store_db_t db, uint64_t *out) {
    struct count_args a = {db, 0};
    if ((unsigned)db >= SL_STORE_NDB || out == NULL)
        return SL_EINVAL;
    int rc = with_read_txn(st, db, false, count_in_txn, &a);
    if (rc == 0)
        *out = a.n;
    return rc;
}
