/* Unit tests for the LMDB store (core/store*.c): reads and queued writes,
 * expiry, counters under concurrency, group commit, durability across a
 * killed process, a full map, map growth, the queue limit and scans. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "store.h"

/* ---- fixtures: a fresh directory per test, a fake clock, quiet errors */

static char dir[64];
static _Atomic int64_t fake_now = 1700000000000;
static atomic_int reported;

static int64_t
fake_clock(void *ud) {
    (void)ud;
    return atomic_load(&fake_now);
}

static void
count_error(void *ud, const char *msg) {
    (void)ud;
    (void)msg;
    atomic_fetch_add(&reported, 1);
}

static sl_store_options_t
options(void) {
    sl_store_options_t o = {.dir = dir};
    o.map_size = (size_t)64 << 20;
    o.on_error = count_error;
    return o;
}

static sl_store_t *
open_store(const sl_store_options_t *o) {
    sl_store_t *st = NULL;
    assert_int_equal(sl_store_open(o, &st), 0);
    assert_non_null(st);
    return st;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state) {
    (void)state;
    strcpy(dir, "/tmp/sl_store_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    atomic_store(&reported, 0);
    return 0;
}

static int
teardown(void **state) {
    (void)state;
    return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- basic reads and writes */

static void
test_put_get_and_delete(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    char buf[64];
    size_t len = 0;
    int64_t exp = -1;
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "p", "k", 1, buf, sizeof buf, &len, &exp),
        SL_ENOTFOUND);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "p", "k", 1, "hello", 5, 0), 0);
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "p", "k", 1, buf, sizeof buf, &len, &exp),
        0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(exp, 0);
    /* Overwrite with a shorter value, then delete. */
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "p", "k", 1, "yo", 2, 0), 0);
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "p", "k", 1, buf, sizeof buf, &len, NULL),
        0);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, "yo", 2);
    assert_int_equal(sl_store_del_sync(st, SL_STORE_KV, "p", "k", 1), 0);
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "p", "k", 1, buf, sizeof buf, &len, NULL),
        SL_ENOTFOUND);
    assert_int_equal(sl_store_del_sync(st, SL_STORE_KV, "p", "k", 1),
                     SL_ENOTFOUND);
    /* An empty value is a value. */
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_CACHE, NULL, "e", 1, NULL, 0, 0), 0);
    assert_int_equal(
        sl_store_get(st, SL_STORE_CACHE, NULL, "e", 1, NULL, 0, &len, NULL), 0);
    assert_int_equal(len, 0);
    sl_store_close(st);
}

static void
test_get_with_a_small_buffer_reports_the_length(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    char big[3000];
    memset(big, 'x', sizeof big);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_CACHE, NULL, "b", 1, big, sizeof big, 0),
        0);
    size_t len = 0;
    char small[16];
    assert_int_equal(sl_store_get(st, SL_STORE_CACHE, NULL, "b", 1, small,
                                  sizeof small, &len, NULL),
                     SL_ETOOBIG);
    assert_int_equal(len, sizeof big);
    assert_int_equal(
        sl_store_get(st, SL_STORE_CACHE, NULL, "b", 1, NULL, 0, &len, NULL),
        SL_ETOOBIG);
    assert_int_equal(len, sizeof big);
    sl_store_close(st);
}

static void
test_invalid_arguments_are_refused(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.max_value_bytes = 100;
    sl_store_t *st = open_store(&o);
    char key[600];
    memset(key, 'k', sizeof key);
    char val[101] = {0};
    /* LMDB's limit is 511 bytes, counting "n\0". */
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "n", key, 510, "v", 1, 0),
        SL_EINVAL);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "n", key, 509, "v", 1, 0), 0);
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, NULL, key, 600, val, 1, NULL, NULL),
        SL_EINVAL);
    assert_int_equal(
        sl_store_put_async(st, SL_STORE_KV, NULL, "", 0, "v", 1, 0, NULL, NULL),
        SL_EINVAL);
    assert_int_equal(sl_store_put_async(st, SL_STORE_NDB, NULL, "k", 1, "v", 1,
                                        0, NULL, NULL),
                     SL_EINVAL);
    assert_int_equal(sl_store_put_async(st, SL_STORE_KV, NULL, "k", 1, val,
                                        sizeof val, 0, NULL, NULL),
                     SL_EINVAL);
    assert_int_equal(sl_store_put_async(st, SL_STORE_KV, NULL, "k", 1, "v", 1,
                                        -5, NULL, NULL),
                     SL_EINVAL);
    /* A long namespace plus a short key is still within the limit. */
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "ns", key, 400, "v", 1, 0), 0);
    sl_store_close(st);
}

static void
test_namespaces_and_databases_isolate_keys(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    assert_int_equal(sl_store_put_sync(st, SL_STORE_KV, "a", "x", 1, "1", 1, 0),
                     0);
    assert_int_equal(sl_store_put_sync(st, SL_STORE_KV, "b", "x", 1, "2", 1, 0),
                     0);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_CACHE, "a", "x", 1, "3", 1, 0), 0);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KEYS, "a", "x", 1, "4", 1, 0), 0);
    const struct {
        sl_store_db_t db;
        const char *ns;
        char want;
    } cases[] = {{SL_STORE_KV, "a", '1'},
                 {SL_STORE_KV, "b", '2'},
                 {SL_STORE_CACHE, "a", '3'},
                 {SL_STORE_KEYS, "a", '4'}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char c = 0;
        assert_int_equal(sl_store_get(st, cases[i].db, cases[i].ns, "x", 1, &c,
                                      1, NULL, NULL),
                         0);
        assert_int_equal(c, cases[i].want);
    }
    char c;
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "c", "x", 1, &c, 1, NULL, NULL),
        SL_ENOTFOUND);
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, NULL, "x", 1, &c, 1, NULL, NULL),
        SL_ENOTFOUND);
    /* "ab" + "" is not "a" + "b". */
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "ax", "", 0, &c, 1, NULL, NULL),
        SL_ENOTFOUND);
    /* Deleting in one namespace leaves the other. */
    assert_int_equal(sl_store_del_sync(st, SL_STORE_KV, "a", "x", 1), 0);
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "b", "x", 1, &c, 1, NULL, NULL), 0);
    sl_store_close(st);
}

/* ---- expiry */

static void
test_values_expire_after_their_ttl(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.now_ms = fake_clock;
    sl_store_t *st = open_store(&o);
    int64_t t0 = atomic_load(&fake_now);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_CACHE, NULL, "t", 1, "v", 1, 1000), 0);
    int64_t exp = 0;
    char c;
    assert_int_equal(
        sl_store_get(st, SL_STORE_CACHE, NULL, "t", 1, &c, 1, NULL, &exp), 0);
    assert_int_equal(exp, t0 + 1000);
    atomic_store(&fake_now, t0 + 999);
    assert_int_equal(
        sl_store_get(st, SL_STORE_CACHE, NULL, "t", 1, &c, 1, NULL, NULL), 0);
    atomic_store(&fake_now, t0 + 1000);
    assert_int_equal(
        sl_store_get(st, SL_STORE_CACHE, NULL, "t", 1, &c, 1, NULL, NULL),
        SL_ENOTFOUND);
    /* Deleting an expired value finds nothing to delete. */
    assert_int_equal(sl_store_del_sync(st, SL_STORE_CACHE, NULL, "t", 1),
                     SL_ENOTFOUND);
    sl_store_close(st);
}

static int
count_entry(void *ud, const void *k, size_t kl, const void *v, size_t vl,
            int64_t exp) {
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (void)exp;
    (*(int *)ud)++;
    return 0;
}

static void
test_the_writer_sweeps_expired_entries(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.now_ms = fake_clock;
    o.sweep_interval_ms = 10;
    o.sweep_batch = 7; /* fewer than the entries: resumes across ticks */
    sl_store_t *st = open_store(&o);
    for (int i = 0; i < 50; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%02d", i);
        assert_int_equal(sl_store_put_async(st, SL_STORE_RATELIMIT, "s", k,
                                            (size_t)n, "v", 1, i % 2 ? 0 : 500,
                                            NULL, NULL),
                         0);
    }
    assert_int_equal(sl_store_flush(st), 0);
    sl_store_stats_t s;
    sleep_ms(50);
    sl_store_stats(st, &s);
    assert_int_equal(s.swept, 0); /* nothing has expired yet */
    atomic_fetch_add(&fake_now, 501);
    for (int i = 0; i < 300; i++) {
        sl_store_stats(st, &s);
        if (s.swept >= 25)
            break;
        sleep_ms(5);
    }
    assert_int_equal(s.swept, 25);
    int live = 0;
    assert_int_equal(
        sl_store_scan(st, SL_STORE_RATELIMIT, "s", NULL, 0, count_entry, &live),
        0);
    assert_int_equal(live, 25);
    sl_store_close(st);
}

/* ---- counters */

#define NTHREADS 8
#define NINCR 10000

static atomic_uchar seen[NTHREADS * NINCR + 1];
static atomic_int bad_values, completions, incr_errors;

static void
incr_done(void *ud, int rc, int64_t value) {
    (void)ud;
    if (rc != 0)
        atomic_fetch_add(&incr_errors, 1);
    else if (value < 1 || value > NTHREADS * NINCR ||
             atomic_exchange(&seen[value], 1) != 0)
        atomic_fetch_add(&bad_values, 1);
    atomic_fetch_add(&completions, 1);
}

static void *
incr_async_thread(void *arg) {
    sl_store_t *st = arg;
    for (int i = 0; i < NINCR; i++) {
        int rc;
        while ((rc = sl_store_incr_async(st, SL_STORE_RATELIMIT, "rl", "hits",
                                         4, 1, 0, incr_done, NULL)) ==
               SL_EAGAIN)
            sleep_ms(1);
        if (rc != 0)
            atomic_fetch_add(&incr_errors, 1);
    }
    return NULL;
}

static void
test_concurrent_increments_are_exact_and_commit_in_groups(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    memset(seen, 0, sizeof seen);
    atomic_store(&bad_values, 0);
    atomic_store(&completions, 0);
    atomic_store(&incr_errors, 0);
    sl_store_stats_t before, after;
    sl_store_stats(st, &before);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, incr_async_thread, st), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(atomic_load(&completions), NTHREADS * NINCR);
    assert_int_equal(atomic_load(&incr_errors), 0);
    /* Every value from 1 to 80000 was handed out exactly once. */
    assert_int_equal(atomic_load(&bad_values), 0);
    int64_t v = 0;
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_RATELIMIT, "rl", "hits", 4, &v, NULL),
        0);
    assert_int_equal(v, NTHREADS * NINCR);
    sl_store_stats(st, &after);
    uint64_t ops = after.ops - before.ops;
    uint64_t commits = after.commits - before.commits;
    assert_int_equal(ops, NTHREADS * NINCR);
    assert_true(commits < ops / 4);
    print_message("    %llu increments in %llu commits\n",
                  (unsigned long long)ops, (unsigned long long)commits);
    sl_store_close(st);
}

static void *
incr_sync_thread(void *arg) {
    sl_store_t *st = arg;
    for (int i = 0; i < 1000; i++) {
        int64_t v;
        if (sl_store_incr_sync(st, SL_STORE_USAGE, "u", "tokens", 6, 3, 0,
                               &v) != 0 ||
            v % 3 != 0)
            atomic_fetch_add(&incr_errors, 1);
    }
    return NULL;
}

static void
test_blocking_increments_from_many_threads_are_exact(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    atomic_store(&incr_errors, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, incr_sync_thread, st), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&incr_errors), 0);
    int64_t v = 0;
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_USAGE, "u", "tokens", 6, &v, NULL),
        0);
    assert_int_equal(v, 4 * 1000 * 3);
    sl_store_close(st);
}

static void
test_a_counter_restarts_when_its_window_expires(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.now_ms = fake_clock;
    sl_store_t *st = open_store(&o);
    int64_t t0 = atomic_load(&fake_now), v = 0, exp = 0;
    assert_int_equal(
        sl_store_incr_sync(st, SL_STORE_RATELIMIT, "w", "c", 1, 5, 60000, &v),
        0);
    assert_int_equal(v, 5);
    atomic_store(&fake_now, t0 + 30000);
    /* A live counter keeps the expiry it was created with. */
    assert_int_equal(
        sl_store_incr_sync(st, SL_STORE_RATELIMIT, "w", "c", 1, -2, 60000, &v),
        0);
    assert_int_equal(v, 3);
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_RATELIMIT, "w", "c", 1, &v, &exp), 0);
    assert_int_equal(exp, t0 + 60000);
    atomic_store(&fake_now, t0 + 60000);
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_RATELIMIT, "w", "c", 1, &v, &exp),
        SL_ENOTFOUND);
    assert_int_equal(
        sl_store_incr_sync(st, SL_STORE_RATELIMIT, "w", "c", 1, 1, 60000, &v),
        0);
    assert_int_equal(v, 1);
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_RATELIMIT, "w", "c", 1, &v, &exp), 0);
    assert_int_equal(exp, t0 + 120000);
    sl_store_close(st);
}

static void
test_a_counter_op_on_a_non_counter_fails(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    int64_t v = 0;
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "n", "s", 1, "text", 4, 0), 0);
    assert_int_equal(sl_store_incr_sync(st, SL_STORE_KV, "n", "s", 1, 1, 0, &v),
                     SL_EINVAL);
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_KV, "n", "s", 1, &v, NULL),
        SL_EINVAL);
    assert_int_equal(
        sl_store_incr_sync(st, SL_STORE_KV, "n", "m", 1, INT64_MAX, 0, &v), 0);
    assert_int_equal(sl_store_incr_sync(st, SL_STORE_KV, "n", "m", 1, 1, 0, &v),
                     SL_EINVAL);
    /* The value is untouched by the failed ops. */
    char buf[8];
    size_t len;
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "n", "s", 1, buf, 8, &len, NULL), 0);
    assert_memory_equal(buf, "text", 4);
    sl_store_close(st);
}

/* ---- durability and lifecycle */

static void
test_values_survive_close_and_reopen(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.now_ms = fake_clock;
    sl_store_t *st = open_store(&o);
    int64_t t0 = atomic_load(&fake_now), v = 0, exp = 0;
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KEYS, NULL, "sk-1", 4, "alice", 5, 0),
        0);
    assert_int_equal(sl_store_put_async(st, SL_STORE_PROMPTS, "p", "v1", 2,
                                        "Hi {{name}}", 11, 0, NULL, NULL),
                     0);
    assert_int_equal(sl_store_put_async(st, SL_STORE_CACHE, NULL, "c", 1, "x",
                                        1, 5000, NULL, NULL),
                     0);
    assert_int_equal(
        sl_store_incr_async(st, SL_STORE_USAGE, "u", "t", 1, 42, 0, NULL, NULL),
        0);
    sl_store_close(st);
    /* A second store in the same process after close is fine. */
    st = open_store(&o);
    char buf[32];
    size_t len = 0;
    assert_int_equal(sl_store_get(st, SL_STORE_KEYS, NULL, "sk-1", 4, buf,
                                  sizeof buf, &len, NULL),
                     0);
    assert_memory_equal(buf, "alice", 5);
    assert_int_equal(sl_store_get(st, SL_STORE_PROMPTS, "p", "v1", 2, buf,
                                  sizeof buf, &len, NULL),
                     0);
    assert_memory_equal(buf, "Hi {{name}}", 11);
    assert_int_equal(sl_store_get(st, SL_STORE_CACHE, NULL, "c", 1, buf,
                                  sizeof buf, &len, &exp),
                     0);
    assert_int_equal(exp, t0 + 5000);
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_USAGE, "u", "t", 1, &v, NULL), 0);
    assert_int_equal(v, 42);
    sl_store_close(st);
}

static void
test_close_commits_pending_writes(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    for (int i = 0; i < 20000; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "%06d", i);
        assert_int_equal(sl_store_put_async(st, SL_STORE_REQUESTLOG, NULL, k,
                                            (size_t)n, k, (size_t)n, 0, NULL,
                                            NULL),
                         0);
    }
    sl_store_close(st); /* no flush first */
    st = open_store(&o);
    int count = 0;
    assert_int_equal(sl_store_scan(st, SL_STORE_REQUESTLOG, NULL, NULL, 0,
                                   count_entry, &count),
                     0);
    assert_int_equal(count, 20000);
    sl_store_close(st);
}

static void
test_an_async_put_is_visible_after_flush(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    char k[16];
    int n = 0;
    for (int i = 0; i < 10000; i++) {
        n = snprintf(k, sizeof k, "%06d", i);
        assert_int_equal(sl_store_put_async(st, SL_STORE_KV, "f", k, (size_t)n,
                                            "v", 1, 0, NULL, NULL),
                         0);
    }
    assert_int_equal(sl_store_flush(st), 0);
    /* The last one queued before the flush is committed. */
    char c;
    assert_int_equal(
        sl_store_get(st, SL_STORE_KV, "f", k, (size_t)n, &c, 1, NULL, NULL), 0);
    sl_store_stats_t s;
    sl_store_stats(st, &s);
    assert_true(s.syncs >= 1);
    assert_int_equal(s.queued_bytes, 0);
    sl_store_close(st);
}

/* Children run this binary again (fork then exec at once: LMDB and the
 * sanitizers both dislike a forked copy of a threaded process), with
 * "--child MODE DIR"; see child_main. */
static int
run_child(const char *mode) {
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "test_store", "--child", mode, dir,
              (char *)NULL);
        _exit(127);
    }
    int status = -1;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return status;
}

static int
child_main(const char *mode, const char *path) {
    sl_store_options_t o = {.dir = path, .map_size = (size_t)64 << 20};
    sl_store_t *st;
    int64_t v;
    if (strcmp(mode, "grow") == 0)
        o.map_size = 4 << 20;
    if (sl_store_open(&o, &st) != 0)
        return 1;
    if (strcmp(mode, "kill") == 0) {
        /* Committed but never synced (buffered) and synced (durable). */
        if (sl_store_incr_sync(st, SL_STORE_RATELIMIT, "r", "k", 1, 7, 0, &v) !=
                0 ||
            sl_store_put_sync(st, SL_STORE_KEYS, NULL, "key", 3, "bob", 3, 0) !=
                0)
            return 2;
        raise(SIGKILL);
    }
    char buf[1000];
    memset(buf, 'c', sizeof buf);
    for (int i = 0; i < 500; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "%05d", i);
        if (sl_store_put_sync(st, SL_STORE_KV, "x", k, (size_t)n, buf,
                              sizeof buf, 0) != 0)
            return 3;
    }
    sl_store_close(st);
    return 0;
}

static void
test_committed_writes_survive_a_killed_process(void **state) {
    (void)state;
    sl_store_options_t o = options();
    int status = run_child("kill");
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    sl_store_t *st = open_store(&o);
    int64_t v = 0;
    assert_int_equal(
        sl_store_get_counter(st, SL_STORE_RATELIMIT, "r", "k", 1, &v, NULL), 0);
    assert_int_equal(v, 7);
    char buf[8];
    assert_int_equal(sl_store_get(st, SL_STORE_KEYS, NULL, "key", 3, buf,
                                  sizeof buf, NULL, NULL),
                     0);
    assert_memory_equal(buf, "bob", 3);
    /* And the store still writes: the dead writer's lock was released. */
    assert_int_equal(
        sl_store_incr_sync(st, SL_STORE_RATELIMIT, "r", "k", 1, 1, 0, &v), 0);
    assert_int_equal(v, 8);
    sl_store_close(st);
}

static void
test_a_directory_is_opened_once_per_process(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o), *again = NULL;
    assert_int_equal(sl_store_open(&o, &again), SL_EINVAL);
    assert_null(again);
    sl_store_close(st);
}

/* ---- a full map */

static int
fill_until_full(sl_store_t *st, const char *ns, int max) {
    char val[1000];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < max; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "%05d", i);
        int rc = sl_store_put_sync(st, SL_STORE_KV, ns, k, (size_t)n, val,
                                   sizeof val, 0);
        if (rc != 0) {
            assert_int_equal(rc, SL_ETOOBIG);
            return i;
        }
    }
    return max;
}

static void
test_a_full_map_refuses_writes_and_keeps_serving(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.map_size = 256 << 10;
    sl_store_t *st = open_store(&o);
    int n = fill_until_full(st, "full", 1000);
    assert_true(n > 0 && n < 1000);
    sl_store_stats_t s;
    sl_store_stats(st, &s);
    assert_true(s.map_full >= 1);
    assert_true(strstr(s.last_error, "full") != NULL);
    assert_true(atomic_load(&reported) >= 1);
    /* Reads still work. */
    char buf[1000];
    for (int i = 0; i < n; i++) {
        char k[16];
        int kn = snprintf(k, sizeof k, "%05d", i);
        assert_int_equal(sl_store_get(st, SL_STORE_KV, "full", k, (size_t)kn,
                                      buf, sizeof buf, NULL, NULL),
                         0);
    }
    /* A fire-and-forget put fails quietly, the queue keeps moving. */
    assert_int_equal(sl_store_put_async(st, SL_STORE_KV, "full", "zz", 2, buf,
                                        sizeof buf, 0, NULL, NULL),
                     0);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(sl_store_get(st, SL_STORE_KV, "full", "zz", 2, buf,
                                  sizeof buf, NULL, NULL),
                     SL_ENOTFOUND);
    /* Deleting frees room for new writes (whole pages: half of the keys,
     * in one range). */
    for (int i = 0; i < n / 2; i++) {
        char k[16];
        int kn = snprintf(k, sizeof k, "%05d", i);
        assert_int_equal(
            sl_store_del_sync(st, SL_STORE_KV, "full", k, (size_t)kn), 0);
    }
    int m = fill_until_full(st, "again", n);
    assert_true(m >= n / 4 && m < n);
    assert_int_equal(sl_store_get(st, SL_STORE_KV, "again", "00000", 5, buf,
                                  sizeof buf, NULL, NULL),
                     0);
    sl_store_close(st);
}

static void
test_a_full_map_grows_up_to_map_size_max(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.map_size = 64 << 10;
    o.map_size_max = 1 << 20;
    sl_store_t *st = open_store(&o);
    int n = fill_until_full(st, "g", 2000);
    /* Far more than 64 KiB (about 25 values) went in, and the map stopped
     * at its maximum. */
    assert_true(n > 300 && n < 2000);
    sl_store_stats_t s;
    sl_store_stats(st, &s);
    assert_true(s.grows >= 4);
    assert_int_equal(s.map_size[1], 1 << 20);
    char buf[1000];
    assert_int_equal(sl_store_get(st, SL_STORE_KV, "g", "00300", 5, buf,
                                  sizeof buf, NULL, NULL),
                     0);
    sl_store_close(st);
}

static void
test_a_map_grown_by_another_process_is_adopted(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.map_size = 64 << 10;
    sl_store_t *st = open_store(&o);
    char buf[1000];
    /* Make this process's read txns exist before the map changes. */
    assert_int_equal(sl_store_get(st, SL_STORE_KV, "x", "00000", 5, buf,
                                  sizeof buf, NULL, NULL),
                     SL_ENOTFOUND);
    int status = run_child("grow");
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The data now lies beyond this process's 64 KiB map. */
    assert_int_equal(sl_store_get(st, SL_STORE_KV, "x", "00499", 5, buf,
                                  sizeof buf, NULL, NULL),
                     0);
    assert_int_equal(buf[0], 'c');
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "x", "mine", 4, "m", 1, 0), 0);
    sl_store_close(st);
}

/* ---- the queue */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_open, gate_reached;

static void
block_writer(void *ud, int rc, int64_t v) {
    (void)ud;
    (void)rc;
    (void)v;
    pthread_mutex_lock(&gate_mu);
    gate_reached = 1;
    pthread_cond_broadcast(&gate_cv);
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
}

static void
test_a_full_queue_refuses_writes_with_eagain(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.max_queue_bytes = 64 << 10;
    sl_store_t *st = open_store(&o);
    gate_open = gate_reached = 0;
    /* Hold the writer inside a completion so the queue can only grow. */
    assert_int_equal(sl_store_put_async(st, SL_STORE_KV, "q", "first", 5, "v",
                                        1, 0, block_writer, NULL),
                     0);
    pthread_mutex_lock(&gate_mu);
    while (!gate_reached)
        pthread_cond_wait(&gate_cv, &gate_mu);
    pthread_mutex_unlock(&gate_mu);
    char val[1000] = {0};
    int accepted = 0, rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "%04d", i);
        rc = sl_store_put_async(st, SL_STORE_KV, "q", k, (size_t)n, val,
                                sizeof val, 0, NULL, NULL);
        accepted += rc == 0;
    }
    assert_int_equal(rc, SL_EAGAIN);
    assert_true(accepted > 10 && accepted < 64);
    pthread_mutex_lock(&gate_mu);
    gate_open = 1;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
    assert_int_equal(sl_store_flush(st), 0);
    int count = 0;
    assert_int_equal(
        sl_store_scan(st, SL_STORE_KV, "q", NULL, 0, count_entry, &count), 0);
    assert_int_equal(count, accepted + 1);
    sl_store_stats_t s;
    sl_store_stats(st, &s);
    assert_int_equal(s.rejected, 1);
    /* Room again once drained. */
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_KV, "q", "after", 5, val, sizeof val, 0),
        0);
    sl_store_close(st);
}

static atomic_int nested_rc;

static void
sync_from_callback(void *ud, int rc, int64_t v) {
    (void)rc;
    (void)v;
    sl_store_t *st = ud;
    atomic_store(&nested_rc, sl_store_flush(st));
}

static void
test_a_blocking_call_from_a_completion_is_refused(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    atomic_store(&nested_rc, 1);
    assert_int_equal(sl_store_put_async(st, SL_STORE_KV, "n", "k", 1, "v", 1, 0,
                                        sync_from_callback, st),
                     0);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(atomic_load(&nested_rc), SL_EINVAL);
    sl_store_close(st);
}

/* ---- readers */

static atomic_int reader_errors, stop_readers;

static void *
reader_thread(void *arg) {
    sl_store_t *st = arg;
    unsigned seed = (unsigned)(uintptr_t)pthread_self();
    while (!atomic_load(&stop_readers)) {
        char k[16], buf[64];
        int i = (int)(rand_r(&seed) % 200);
        int n = snprintf(k, sizeof k, "%03d", i);
        size_t len;
        int rc = sl_store_get(st, SL_STORE_CACHE, "r", k, (size_t)n, buf,
                              sizeof buf, &len, NULL);
        /* A value is its key repeated: a torn read would not be. */
        if (rc == 0) {
            for (size_t j = 0; j < len; j++)
                if (buf[j] != k[j % 3])
                    atomic_fetch_add(&reader_errors, 1);
        } else if (rc != SL_ENOTFOUND) {
            atomic_fetch_add(&reader_errors, 1);
        }
    }
    return NULL;
}

static void
test_readers_see_whole_values_while_the_writer_commits(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    atomic_store(&reader_errors, 0);
    atomic_store(&stop_readers, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, reader_thread, st), 0);
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 200; i++) {
            char k[16], v[64];
            int n = snprintf(k, sizeof k, "%03d", i);
            size_t vl = (size_t)(3 + (round * 7 + i) % 60);
            for (size_t j = 0; j < vl; j++)
                v[j] = k[j % 3];
            if ((round + i) % 5 == 0)
                sl_store_del_async(st, SL_STORE_CACHE, "r", k, (size_t)n, NULL,
                                   NULL);
            else
                sl_store_put_async(st, SL_STORE_CACHE, "r", k, (size_t)n, v, vl,
                                   0, NULL, NULL);
        }
        sleep_ms(1);
    }
    assert_int_equal(sl_store_flush(st), 0);
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(atomic_load(&reader_errors), 0);
    sl_store_close(st);
}

static void *
read_once(void *arg) {
    char c;
    if (sl_store_get(arg, SL_STORE_KV, "t", "k", 1, &c, 1, NULL, NULL) != 0)
        atomic_fetch_add(&reader_errors, 1);
    return NULL;
}

static void
test_a_thread_that_exits_gives_back_its_reader_slot(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.max_readers = 8; /* far fewer than the threads below */
    sl_store_t *st = open_store(&o);
    assert_int_equal(sl_store_put_sync(st, SL_STORE_KV, "t", "k", 1, "v", 1, 0),
                     0);
    atomic_store(&reader_errors, 0);
    for (int i = 0; i < 40; i++) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, read_once, st), 0);
        pthread_join(t, NULL);
    }
    assert_int_equal(atomic_load(&reader_errors), 0);
    sl_store_close(st);
}

/* ---- scans */

struct collected {
    char keys[8][16];
    int n;
};

static int
collect(void *ud, const void *k, size_t kl, const void *v, size_t vl,
        int64_t exp) {
    (void)v;
    (void)vl;
    (void)exp;
    struct collected *c = ud;
    if (kl >= sizeof c->keys[0])
        return 1;
    memcpy(c->keys[c->n], k, kl);
    c->keys[c->n][kl] = '\0';
    return ++c->n == 8;
}

static void
test_scan_lists_a_namespace_in_key_order_without_expired_entries(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.now_ms = fake_clock;
    sl_store_t *st = open_store(&o);
    const char *keys[] = {"b", "a", "d", "c", "e"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(
            sl_store_put_async(st, SL_STORE_PROMPTS, "tpl", keys[i], 1, "x", 1,
                               keys[i][0] == 'c' ? 10 : 0, NULL, NULL),
            0);
    assert_int_equal(sl_store_put_async(st, SL_STORE_PROMPTS, "tplx", "a", 1,
                                        "x", 1, 0, NULL, NULL),
                     0);
    assert_int_equal(sl_store_put_async(st, SL_STORE_PROMPTS, "tp", "z", 1, "x",
                                        1, 0, NULL, NULL),
                     0);
    assert_int_equal(sl_store_flush(st), 0);
    atomic_fetch_add(&fake_now, 10);
    struct collected c = {.n = 0};
    assert_int_equal(
        sl_store_scan(st, SL_STORE_PROMPTS, "tpl", NULL, 0, collect, &c), 0);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.keys[0], "a");
    assert_string_equal(c.keys[1], "b");
    assert_string_equal(c.keys[2], "d");
    assert_string_equal(c.keys[3], "e");
    c.n = 0;
    assert_int_equal(
        sl_store_scan(st, SL_STORE_PROMPTS, "tpl", "c", 1, collect, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[0], "d");
    sl_store_close(st);
}

static int
read_inside_scan(void *ud, const void *k, size_t kl, const void *v, size_t vl,
                 int64_t exp) {
    (void)v;
    (void)vl;
    (void)exp;
    sl_store_t *st = ud;
    char c;
    /* The callback may read with the thread's own txn. */
    return sl_store_get(st, SL_STORE_KV, "other", k, kl, &c, 1, NULL, NULL) == 0
               ? 0
               : 1;
}

static void
test_a_scan_callback_may_read_the_store(void **state) {
    (void)state;
    sl_store_options_t o = options();
    sl_store_t *st = open_store(&o);
    sl_store_put_async(st, SL_STORE_KV, "one", "k", 1, "v", 1, 0, NULL, NULL);
    sl_store_put_async(st, SL_STORE_KV, "other", "k", 1, "w", 1, 0, NULL, NULL);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(
        sl_store_scan(st, SL_STORE_KV, "one", NULL, 0, read_inside_scan, st),
        0);
    sl_store_close(st);
}

/* ---- batches of puts */

static void
batch_put(sl_store_batch_t *b, const char *key, const char *val) {
    void *p = sl_store_batch_add(b, key, strlen(key), strlen(val));
    assert_non_null(p);
    memcpy(p, val, strlen(val));
}

static void
test_a_batch_puts_every_record_whatever_the_key_order(void **state) {
    (void)state;
    sl_store_options_t o = options();
    o.now_ms = fake_clock;
    sl_store_t *st = open_store(&o);
    assert_int_equal(
        sl_store_put_sync(st, SL_STORE_REQUESTLOG, NULL, "k2", 2, "old", 3, 0),
        0);
    sl_store_batch_t b = {0};
    /* After the last key (appended), before it, and over an old value. */
    batch_put(&b, "k5", "five");
    batch_put(&b, "k7", "seven");
    batch_put(&b, "k1", "one");
    batch_put(&b, "k2", "two");
    batch_put(&b, "k6", "");
    /* A bad key is refused and leaves the batch as it was. */
    assert_null(sl_store_batch_add(&b, "", 0, 1));
    assert_int_equal(b.n, 5);
    assert_int_equal(sl_store_put_batch_async(st, SL_STORE_REQUESTLOG, 0, &b),
                     0);
    assert_int_equal(b.n, 0); /* emptied, ready for the next one */
    assert_int_equal(b.len, 0);
    assert_int_equal(sl_store_flush(st), 0);
    struct collected c = {.n = 0};
    assert_int_equal(
        sl_store_scan(st, SL_STORE_REQUESTLOG, NULL, NULL, 0, collect, &c), 0);
    assert_int_equal(c.n, 5);
    static const char *const want[] = {"k1", "k2", "k5", "k6", "k7"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(c.keys[i], want[i]);
    char buf[16];
    size_t len = 0;
    assert_int_equal(sl_store_get(st, SL_STORE_REQUESTLOG, NULL, "k2", 2, buf,
                                  sizeof buf, &len, NULL),
                     0);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "two", 3);
    assert_int_equal(sl_store_get(st, SL_STORE_REQUESTLOG, NULL, "k6", 2, buf,
                                  sizeof buf, &len, NULL),
                     0);
    assert_int_equal(len, 0);
    /* The batch's expiry applies to each of its records. */
    batch_put(&b, "k9", "nine");
    assert_int_equal(sl_store_put_batch_async(st, SL_STORE_REQUESTLOG, 10, &b),
                     0);
    assert_int_equal(sl_store_flush(st), 0);
    int64_t exp = 0;
    assert_int_equal(sl_store_get(st, SL_STORE_REQUESTLOG, NULL, "k9", 2, buf,
                                  sizeof buf, &len, &exp),
                     0);
    assert_int_equal(exp, atomic_load(&fake_now) + 10);
    atomic_fetch_add(&fake_now, 10);
    assert_int_equal(sl_store_get(st, SL_STORE_REQUESTLOG, NULL, "k9", 2, buf,
                                  sizeof buf, &len, NULL),
                     SL_ENOTFOUND);
    /* An empty batch queues nothing. */
    assert_int_equal(sl_store_put_batch_async(st, SL_STORE_REQUESTLOG, 0, &b),
                     0);
    sl_store_batch_free(&b);
    sl_store_close(st);
}

int
main(int argc, char **argv) {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_put_get_and_delete),
        T(test_get_with_a_small_buffer_reports_the_length),
        T(test_invalid_arguments_are_refused),
        T(test_namespaces_and_databases_isolate_keys),
        T(test_values_expire_after_their_ttl),
        T(test_the_writer_sweeps_expired_entries),
        T(test_concurrent_increments_are_exact_and_commit_in_groups),
        T(test_blocking_increments_from_many_threads_are_exact),
        T(test_a_counter_restarts_when_its_window_expires),
        T(test_a_counter_op_on_a_non_counter_fails),
        T(test_values_survive_close_and_reopen),
        T(test_close_commits_pending_writes),
        T(test_an_async_put_is_visible_after_flush),
        T(test_committed_writes_survive_a_killed_process),
        T(test_a_directory_is_opened_once_per_process),
        T(test_a_full_map_refuses_writes_and_keeps_serving),
        T(test_a_full_map_grows_up_to_map_size_max),
        T(test_a_map_grown_by_another_process_is_adopted),
        T(test_a_full_queue_refuses_writes_with_eagain),
        T(test_a_blocking_call_from_a_completion_is_refused),
        T(test_readers_see_whole_values_while_the_writer_commits),
        T(test_a_thread_that_exits_gives_back_its_reader_slot),
        T(test_scan_lists_a_namespace_in_key_order_without_expired_entries),
        T(test_a_scan_callback_may_read_the_store),
        T(test_a_batch_puts_every_record_whatever_the_key_order),
    };
#undef T
    /* An optional filter, e.g. "*concurrent*". */
    if (argc == 4 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], argv[3]);
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
