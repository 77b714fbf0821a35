/* Unit tests for the usage ledger (core/ledger.c): per-worker sums flushed
 * to a real store, queries by hour, day, consumer and model over a time
 * range, and the time and group parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <event2/event.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "ledger.h"
#include "store.h"

static char dir[64];
static sl_store_t *st;

static int
rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    return remove(p);
}

static int
setup(void **state) {
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/sl-ledger-XXXXXX");
    assert_non_null(mkdtemp(dir));
    sl_store_options_t o = {.dir = dir, .map_size = 16 << 20};
    assert_int_equal(sl_store_open(&o, &st), 0);
    return 0;
}

static int
teardown(void **state) {
    (void)state;
    sl_store_close(st);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* 2026-11-22T10:15:00Z and friends. */
#define T0 1795342500LL
#define HOUR 3600LL
#define DAY 86400LL

static void
add(sl_ledger_t *l, int64_t t, const char *c, const char *m, int64_t prompt,
    int64_t cost, int err) {
    int64_t v[SL_U_NFIELDS] = {0};
    v[SL_U_REQUESTS] = 1;
    v[SL_U_PROMPT] = prompt;
    v[SL_U_COMPLETION] = 2;
    v[SL_U_CACHED] = 1;
    v[SL_U_COST] = cost;
    v[SL_U_ERRORS] = err;
    sl_ledger_add(l, t, c, m, v);
}

static void
fill(void) {
    struct event_base *base = event_base_new();
    sl_ledger_t *l = sl_ledger_new(base, st, 1000);
    add(l, T0, "alice", "gpt", 10, 100, 0);
    add(l, T0 + 60, "alice", "gpt", 10, 100, 1);
    add(l, T0 + HOUR, "alice", "claude", 5, 50, 0);
    add(l, T0 + HOUR, "bob", "gpt", 7, 70, 0);
    add(l, T0 + DAY, "bob", "gpt", 1, 10, 0);
    sl_ledger_free(l); /* flushes */
    event_base_free(base);
    assert_int_equal(sl_store_flush(st), 0);
}

static const sl_usage_row_t *
row(const sl_usage_result_t *r, const char *key) {
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->rows[i].key, key) == 0)
            return &r->rows[i];
    fail_msg("no row %s", key);
    return NULL;
}

static void
test_query_by_hour_sums_each_hour_in_order(void **state) {
    (void)state;
    fill();
    sl_usage_query_t q = {.group = SL_GROUP_HOUR};
    sl_usage_result_t r;
    assert_int_equal(sl_ledger_query(st, &q, &r), 0);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.rows[0].key, "2026-11-22T10:00:00Z");
    assert_string_equal(r.rows[1].key, "2026-11-22T11:00:00Z");
    assert_string_equal(r.rows[2].key, "2026-11-23T10:00:00Z");
    assert_int_equal(r.rows[0].v[SL_U_REQUESTS], 2);
    assert_int_equal(r.rows[0].v[SL_U_PROMPT], 20);
    assert_int_equal(r.rows[0].v[SL_U_ERRORS], 1);
    assert_int_equal(r.rows[1].v[SL_U_COST], 120);
    assert_int_equal(r.total[SL_U_REQUESTS], 5);
    assert_int_equal(r.total[SL_U_COST], 330);
    assert_int_equal(r.total[SL_U_CACHED], 5);
    assert_false(r.daily);
    sl_usage_result_free(&r);
}

static void
test_query_by_day_uses_rollups_for_whole_days(void **state) {
    (void)state;
    fill();
    sl_usage_query_t q = {.group = SL_GROUP_DAY};
    sl_usage_result_t r;
    assert_int_equal(sl_ledger_query(st, &q, &r), 0);
    assert_true(r.daily);
    assert_int_equal(r.n, 2);
    assert_int_equal(row(&r, "2026-11-22")->v[SL_U_REQUESTS], 4);
    assert_int_equal(row(&r, "2026-11-23")->v[SL_U_COST], 10);
    sl_usage_result_free(&r);
}

static void
test_query_filters_by_consumer_model_and_time_range(void **state) {
    (void)state;
    fill();
    sl_usage_result_t r;
    /* From 11:00 on the first day, to the end of that day. */
    sl_usage_query_t q = {.group = SL_GROUP_CONSUMER,
                          .from = T0 - 15 * 60 + HOUR,
                          .to = T0 - 10 * HOUR - 15 * 60 + DAY};
    assert_int_equal(sl_ledger_query(st, &q, &r), 0);
    assert_false(r.daily);
    assert_int_equal(r.n, 2);
    assert_int_equal(row(&r, "alice")->v[SL_U_COST], 50);
    assert_int_equal(row(&r, "bob")->v[SL_U_COST], 70);
    sl_usage_result_free(&r);

    sl_usage_query_t m = {.group = SL_GROUP_MODEL, .consumer = "alice"};
    assert_int_equal(sl_ledger_query(st, &m, &r), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(row(&r, "gpt")->v[SL_U_REQUESTS], 2);
    assert_int_equal(row(&r, "claude")->v[SL_U_REQUESTS], 1);
    sl_usage_result_free(&r);

    sl_usage_query_t g = {.group = SL_GROUP_CONSUMER, .model = "gpt"};
    assert_int_equal(sl_ledger_query(st, &g, &r), 0);
    assert_int_equal(row(&r, "bob")->v[SL_U_REQUESTS], 2);
    assert_int_equal(r.total[SL_U_REQUESTS], 4);
    sl_usage_result_free(&r);
}

static void
test_ledger_sums_in_memory_until_flushed(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
    sl_ledger_t *l = sl_ledger_new(base, st, 1000);
    for (int i = 0; i < 1000; i++)
        add(l, T0, "carol", "gpt", 1, 1, 0);
    assert_int_equal(sl_store_flush(st), 0);
    sl_usage_query_t q = {.group = SL_GROUP_CONSUMER};
    sl_usage_result_t r;
    assert_int_equal(sl_ledger_query(st, &q, &r), 0);
    assert_int_equal(r.n, 0); /* nothing written per request */
    sl_usage_result_free(&r);
    sl_ledger_flush(l);
    assert_int_equal(sl_store_flush(st), 0);
    assert_int_equal(sl_ledger_query(st, &q, &r), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.rows[0].v[SL_U_REQUESTS], 1000);
    sl_usage_result_free(&r);
    sl_ledger_free(l);
    event_base_free(base);
}

static void
test_ledger_flushes_when_its_table_fills(void **state) {
    (void)state;
    struct event_base *base = event_base_new();
    sl_ledger_t *l = sl_ledger_new(base, st, 1000);
    char name[32];
    for (int i = 0; i < 600; i++) {
        snprintf(name, sizeof(name), "c%03d", i);
        add(l, T0, name, "gpt", 1, 1, 0);
    }
    sl_ledger_free(l);
    event_base_free(base);
    assert_int_equal(sl_store_flush(st), 0);
    sl_usage_query_t q = {.group = SL_GROUP_CONSUMER};
    sl_usage_result_t r;
    assert_int_equal(sl_ledger_query(st, &q, &r), 0);
    assert_int_equal(r.n, 600);
    assert_int_equal(r.total[SL_U_REQUESTS], 600);
    sl_usage_result_free(&r);
}

static void
test_times_parse_as_utc_and_bad_ones_are_refused(void **state) {
    (void)state;
    int64_t t;
    assert_int_equal(sl_usage_parse_time("2026-11-22", &t), 0);
    assert_int_equal(t, T0 - 10 * HOUR - 15 * 60);
    assert_int_equal(sl_usage_parse_time("2026-11-22T10:15Z", &t), 0);
    assert_int_equal(t, T0);
    assert_int_equal(sl_usage_parse_time("2026-11-22T10:15:00", &t), 0);
    assert_int_equal(t, T0);
    assert_int_equal(sl_usage_parse_time("2026-11-22T10", &t), 0);
    assert_int_equal(t, T0 - 15 * 60);
    assert_int_equal(sl_usage_parse_time("1795342500", &t), 0);
    assert_int_equal(t, T0);
    assert_int_equal(sl_usage_parse_time("2026-13-01", &t), SL_EINVAL);
    assert_int_equal(sl_usage_parse_time("yesterday", &t), SL_EINVAL);
    assert_int_equal(sl_usage_parse_time("2026-11-22T10:15+02", &t), SL_EINVAL);
    sl_usage_group_t g;
    assert_int_equal(sl_usage_parse_group("model", &g), 0);
    assert_int_equal(g, SL_GROUP_MODEL);
    assert_int_equal(sl_usage_parse_group("week", &g), SL_EINVAL);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_query_by_hour_sums_each_hour_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_query_by_day_uses_rollups_for_whole_days, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_query_filters_by_consumer_model_and_time_range, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_ledger_sums_in_memory_until_flushed, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_ledger_flushes_when_its_table_fills, setup, teardown),
        cmocka_unit_test(test_times_parse_as_utc_and_bad_ones_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
