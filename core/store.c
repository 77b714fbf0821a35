/* The LMDB store: open and close, errors and stats. Reads are in
 * store_read.c, the write queue in store_queue.c, the writer and syncer
 * threads in store_writer.c. */
#include "store_impl.h"

#include "error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const db_names[SL_STORE_NDB] = {
    "keys", "prompts", "ratelimit", "cache", "usage", "requestlog", "kv",
};

static const char *const env_names[SL_STORE_NENV] = {"durable", "buffered"};

const char *
sl_store_db_name(sl_store_db_t db) {
    return (unsigned)db < SL_STORE_NDB ? db_names[db] : NULL;
}

int
sl_store_rc(int rc) {
    switch (rc) {
    case 0: return 0;
    case MDB_NOTFOUND: return SL_ENOTFOUND;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL: return SL_ETOOBIG;
    case ENOMEM: return SL_ENOMEM;
    case EINVAL:
    case MDB_BAD_VALSIZE: return SL_EINVAL;
    default: return SL_EIO;
    }
}

static int64_t
realtime_ms(void *ud) {
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
sl_store_now(sl_store_t *st) {
    return st->opt.now_ms(st->opt.clock_ud);
}

void
sl_store_report(sl_store_t *st, const char *fmt, ...) {
    char msg[sizeof st->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int64_t now = realtime_ms(NULL);
    pthread_mutex_lock(&st->err_mu);
    memcpy(st->last_error, msg, sizeof msg);
    bool quiet = st->opt.on_error == NULL && st->last_report_ms != 0 &&
                 now - st->last_report_ms < 10000;
    if (!quiet)
        st->last_report_ms = now;
    pthread_mutex_unlock(&st->err_mu);
    if (st->opt.on_error != NULL)
        st->opt.on_error(st->opt.error_ud, msg);
    else if (!quiet)
        fprintf(stderr, "sluice: store: %s\n", msg);
}

/* ---- open-once guard: LMDB must not open one environment twice in a
 * process (its fcntl locks are per process). Keyed by pid too, so a forked
 * child may open what its parent has open. */

#define GUARD_MAX 16
static pthread_mutex_t guard_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    unsigned long dev, ino;
    pid_t pid;
} guard[GUARD_MAX];

static int
guard_add(unsigned long dev, unsigned long ino) {
    int rc = SL_EINVAL, free_slot = -1;
    pid_t pid = getpid();
    pthread_mutex_lock(&guard_mu);
    for (int i = 0; i < GUARD_MAX; i++) {
        if (guard[i].pid == pid && guard[i].dev == dev && guard[i].ino == ino)
            goto out;
        if (free_slot < 0 && guard[i].pid != pid)
            free_slot = i;
    }
    if (free_slot >= 0) {
        guard[free_slot].dev = dev;
        guard[free_slot].ino = ino;
        guard[free_slot].pid = pid;
        rc = 0;
    }
out:
    pthread_mutex_unlock(&guard_mu);
    return rc;
}

static void
guard_remove(unsigned long dev, unsigned long ino) {
    pid_t pid = getpid();
    pthread_mutex_lock(&guard_mu);
    for (int i = 0; i < GUARD_MAX; i++)
        if (guard[i].pid == pid && guard[i].dev == dev && guard[i].ino == ino)
            guard[i].pid = 0;
    pthread_mutex_unlock(&guard_mu);
}

void
sl_store_stats(sl_store_t *st, sl_store_stats_t *out) {
    memset(out, 0, sizeof *out);
    out->ops = atomic_load(&st->ops);
    out->commits = atomic_load(&st->commits);
    out->syncs = atomic_load(&st->syncs);
    out->errors = atomic_load(&st->errors);
    out->map_full = atomic_load(&st->map_full);
    out->grows = atomic_load(&st->grows);
    out->swept = atomic_load(&st->swept);
    out->rejected = atomic_load(&st->rejected);
    out->queued_bytes = atomic_load(&st->queued_bytes);
    for (int e = 0; e < SL_STORE_NENV; e++)
        out->map_size[e] = atomic_load(&st->map_size[e]);
    pthread_mutex_lock(&st->err_mu);
    memcpy(out->last_error, st->last_error, sizeof out->last_error);
    pthread_mutex_unlock(&st->err_mu);
}

/* ---- open and close */

static int
make_dir(const char *path) {
    struct stat sb;
    if (mkdir(path, 0700) == 0)
        return 0;
    if (errno == EEXIST && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return 0;
    return SL_EIO;
}

static int
open_env(sl_store_t *st, int e, char *err, size_t errlen) {
    char path[4096];
    int mrc;
    if ((size_t)snprintf(path, sizeof path, "%s/store/%s", st->dir,
                         env_names[e]) >= sizeof path)
        return SL_EINVAL;
    if (make_dir(path) != 0) {
        snprintf(err, errlen, "%.120s: %s", path, strerror(errno));
        return SL_EIO;
    }
    if ((mrc = mdb_env_create(&st->env[e])) != 0 ||
        (mrc = mdb_env_set_maxdbs(st->env[e], 32)) != 0 ||
        (mrc = mdb_env_set_maxreaders(st->env[e], st->opt.max_readers)) != 0 ||
        (mrc = mdb_env_set_mapsize(st->env[e], st->opt.map_size)) != 0)
        goto fail;
    /* NOTLS: a reader slot belongs to a txn, not to a thread, so a reset
     * txn keeps its slot and the writer can read in its own txns. */
    unsigned flags = MDB_NOTLS | (e == SL_ENV_BUFFERED ? MDB_NOSYNC : 0);
    if ((mrc = mdb_env_open(st->env[e], path, flags, 0600)) != 0)
        goto fail;
    int dead;
    mdb_reader_check(st->env[e], &dead); /* slots of crashed processes */
    MDB_envinfo info;
    if ((mrc = mdb_env_info(st->env[e], &info)) != 0)
        goto fail;
    atomic_store(&st->map_size[e], info.me_mapsize);
    if (e == SL_ENV_DURABLE) {
        struct stat sb;
        if (stat(path, &sb) != 0) {
            snprintf(err, errlen, "%.120s: %s", path, strerror(errno));
            return SL_EIO;
        }
        st->dev = (unsigned long)sb.st_dev;
        st->ino = (unsigned long)sb.st_ino;
    }
    MDB_txn *txn;
    if ((mrc = mdb_txn_begin(st->env[e], NULL, 0, &txn)) != 0)
        goto fail;
    for (int db = 0; db < SL_STORE_NDB; db++) {
        if (sl_store_env_of(db) != e)
            continue;
        if ((mrc = mdb_dbi_open(txn, db_names[db], MDB_CREATE, &st->dbi[db])) !=
            0) {
            mdb_txn_abort(txn);
            goto fail;
        }
    }
    if ((mrc = mdb_txn_commit(txn)) != 0)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "%.120s: %s", path, mdb_strerror(mrc));
    return sl_store_rc(mrc);
}

static void
store_free(sl_store_t *st) {
    if (st->tls_made)
        pthread_key_delete(st->tls);
    sl_store_reader_t *r = st->readers;
    while (r != NULL) {
        sl_store_reader_t *next = r->next;
        sl_store_reader_free(r);
        r = next;
    }
    for (int e = 0; e < SL_STORE_NENV; e++)
        if (st->env[e] != NULL)
            mdb_env_close(st->env[e]);
    if (st->ino != 0)
        guard_remove(st->dev, st->ino);
    pthread_mutex_destroy(&st->readers_mu);
    pthread_mutex_destroy(&st->wake_mu);
    pthread_cond_destroy(&st->wake_cv);
    pthread_mutex_destroy(&st->sync_mu);
    pthread_cond_destroy(&st->sync_cv);
    pthread_mutex_destroy(&st->err_mu);
    free(st->dir);
    free(st);
}

int
sl_store_open(const sl_store_options_t *opts, sl_store_t **out) {
    char err[sizeof((sl_store_t *)0)->last_error] = "";
    int rc = SL_EINVAL;
    *out = NULL;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0')
        return SL_EINVAL;
    sl_store_t *st = calloc(1, sizeof *st);
    if (st == NULL)
        return SL_ENOMEM;
    st->opt = *opts;
    if ((st->dir = strdup(opts->dir)) == NULL) {
        free(st);
        return SL_ENOMEM;
    }
    st->opt.dir = st->dir;
#define DEFAULT(f, v)                                                          \
    if (!(st->opt.f > 0))                                                      \
        st->opt.f = (v);
    DEFAULT(map_size, (size_t)1 << 30);
    DEFAULT(max_readers, 512);
    DEFAULT(flush_interval_ms, 1000);
    DEFAULT(sweep_interval_ms, 1000);
    DEFAULT(sweep_batch, 1000);
    DEFAULT(max_batch_ops, 4096);
    DEFAULT(max_value_bytes, (size_t)4 << 20);
    DEFAULT(max_queue_bytes, (size_t)64 << 20);
#undef DEFAULT
    if (st->opt.map_size_max < st->opt.map_size)
        st->opt.map_size_max = st->opt.map_size;
    if (st->opt.now_ms == NULL)
        st->opt.now_ms = realtime_ms;
    pthread_mutex_init(&st->readers_mu, NULL);
    pthread_mutex_init(&st->wake_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->wake_cv, &ca);
    pthread_cond_init(&st->sync_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&st->sync_mu, NULL);
    pthread_mutex_init(&st->err_mu, NULL);

    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/store", st->dir) >= sizeof path)
        goto fail;
    if (make_dir(st->dir) != 0 || make_dir(path) != 0) {
        snprintf(err, sizeof err, "%.120s: %s", path, strerror(errno));
        rc = SL_EIO;
        goto fail;
    }
    if ((rc = open_env(st, SL_ENV_DURABLE, err, sizeof err)) != 0)
        goto fail;
    if (guard_add(st->dev, st->ino) != 0) {
        snprintf(err, sizeof err, "%.120s: already open in this process",
                 st->dir);
        st->ino = 0; /* not ours to remove */
        rc = SL_EINVAL;
        goto fail;
    }
    if ((rc = open_env(st, SL_ENV_BUFFERED, err, sizeof err)) != 0)
        goto fail;
    int k = mdb_env_get_maxkeysize(st->env[SL_ENV_DURABLE]);
    st->maxkey = k > SL_STORE_KEYMAX ? SL_STORE_KEYMAX : (size_t)k;
    rc = SL_ENOMEM;
    if (pthread_key_create(&st->tls, sl_store_reader_exit) != 0)
        goto fail;
    st->tls_made = true;
    if ((st->wreader = sl_store_reader_new(st)) == NULL ||
        (st->sreader = sl_store_reader_new(st)) == NULL)
        goto fail;
    if ((rc = sl_store_writer_start(st)) != 0)
        goto fail;
    *out = st;
    return 0;
fail:
    if (err[0] != '\0')
        sl_store_report(st, "%s", err);
    sl_store_writer_stop(st);
    store_free(st);
    return rc;
}

void
sl_store_close(sl_store_t *st) {
    if (st == NULL)
        return;
    sl_store_writer_stop(st);
    store_free(st);
}
