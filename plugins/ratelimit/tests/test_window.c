/* The rate limit's arithmetic: windows, takes that stop exactly at the
 * limit (also from many threads at once), settling, estimates and the
 * reset header's format. */
#include "../window.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void
test_window_is_the_minute_and_reset_counts_down_to_its_end(void **state) {
    (void)state;
    assert_int_equal(rl_window(0), 0);
    assert_int_equal(rl_window(59), 0);
    assert_int_equal(rl_window(60), 1);
    assert_int_equal(rl_window(1700000000), (1700000000 / 60) & RL_WINDOW_MASK);
    assert_int_equal(rl_reset_seconds(120), 60);
    assert_int_equal(rl_reset_seconds(179), 1);
    assert_int_equal(rl_reset_seconds(150), 30);
}

static void
test_take_stops_exactly_at_the_limit(void **state) {
    (void)state;
    rl_counter_t c = 0;
    uint64_t n = 99;
    for (int i = 1; i <= 3; i++) {
        assert_true(rl_take(&c, 7, 1, 3, &n));
        assert_int_equal(n, i);
    }
    assert_false(rl_take(&c, 7, 1, 3, &n));
    assert_int_equal(n, 3);
    assert_int_equal(rl_count(&c, 7), 3);
}

static void
test_a_new_window_starts_from_zero(void **state) {
    (void)state;
    rl_counter_t c = 0;
    assert_true(rl_take(&c, 7, 3, 3, NULL));
    assert_false(rl_take(&c, 7, 1, 3, NULL));
    assert_int_equal(rl_count(&c, 8), 0);
    assert_true(rl_take(&c, 8, 1, 3, NULL));
    assert_int_equal(rl_count(&c, 8), 1);
    assert_int_equal(rl_count(&c, 7), 0); /* the old window is gone */
}

static void
test_a_take_larger_than_the_limit_is_refused_and_changes_nothing(void **s) {
    (void)s;
    rl_counter_t c = 0;
    assert_true(rl_take(&c, 1, 40, 100, NULL));
    assert_false(rl_take(&c, 1, 61, 100, NULL));
    assert_false(rl_take(&c, 1, 101, 100, NULL));
    assert_int_equal(rl_count(&c, 1), 40);
    assert_true(rl_take(&c, 1, 60, 100, NULL));
}

static void
test_give_returns_unused_tokens_never_below_zero(void **state) {
    (void)state;
    rl_counter_t c = 0;
    assert_true(rl_take(&c, 5, 1000, 1000, NULL));
    rl_give(&c, 5, 700); /* reserved 1000, used 300 */
    assert_int_equal(rl_count(&c, 5), 300);
    rl_give(&c, 5, 5000);
    assert_int_equal(rl_count(&c, 5), 0);
}

static void
test_settling_touches_only_its_own_window(void **state) {
    (void)state;
    rl_counter_t c = 0;
    assert_true(rl_take(&c, 5, 100, 1000, NULL));
    assert_true(rl_take(&c, 6, 10, 1000, NULL)); /* the next minute */
    rl_give(&c, 5, 100); /* a request of minute 5 ends late */
    rl_add(&c, 5, 50);
    assert_int_equal(rl_count(&c, 6), 10);
}

static void
test_add_goes_over_the_limit_and_saturates(void **state) {
    (void)state;
    rl_counter_t c = 0;
    assert_true(rl_take(&c, 2, 10, 10, NULL));
    rl_add(&c, 2, 5); /* the answer was longer than reserved */
    assert_int_equal(rl_count(&c, 2), 15);
    assert_false(rl_take(&c, 2, 1, 10, NULL));
    rl_add(&c, 2, RL_COUNT_MAX);
    assert_int_equal(rl_count(&c, 2), RL_COUNT_MAX);
}

static void
test_seed_sets_a_window_count(void **state) {
    (void)state;
    rl_counter_t c = 0;
    rl_seed(&c, 9, 4);
    assert_int_equal(rl_count(&c, 9), 4);
    assert_true(rl_take(&c, 9, 1, 5, NULL));
    assert_false(rl_take(&c, 9, 1, 5, NULL));
}

static void
test_window_numbers_wrap_without_confusing_counts(void **state) {
    (void)state;
    rl_counter_t c = 0;
    uint32_t last = RL_WINDOW_MASK;
    assert_true(rl_take(&c, last, 2, 2, NULL));
    assert_int_equal(rl_count(&c, last + 1), 0); /* wraps to window 0 */
    assert_true(rl_take(&c, last + 1, 1, 2, NULL));
}

typedef struct {
    rl_counter_t *c;
    int tries;
    int won;
} racer_t;

static void *
race(void *arg) {
    racer_t *r = arg;
    for (int i = 0; i < r->tries; i++)
        r->won += rl_take(r->c, 3, 1, 1000, NULL);
    return NULL;
}

static void
test_many_threads_get_exactly_the_limit(void **state) {
    (void)state;
    rl_counter_t c = 0;
    pthread_t t[8];
    racer_t r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (racer_t){&c, 500, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    }
    int won = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        won += r[i].won;
    }
    assert_int_equal(won, 1000);
    assert_int_equal(rl_count(&c, 3), 1000);
}

static void
test_estimate_is_a_quarter_of_the_characters_rounded_up(void **state) {
    (void)state;
    assert_int_equal(rl_estimate_tokens(0), 0);
    assert_int_equal(rl_estimate_tokens(1), 1);
    assert_int_equal(rl_estimate_tokens(4), 1);
    assert_int_equal(rl_estimate_tokens(5), 2);
    assert_int_equal(rl_estimate_tokens(4000), 1000);
}

static void
test_reset_is_formatted_like_openai(void **state) {
    (void)state;
    char buf[16];
    assert_string_equal(rl_format_reset(1, buf, sizeof(buf)), "1s");
    assert_string_equal(rl_format_reset(59, buf, sizeof(buf)), "59s");
    assert_string_equal(rl_format_reset(60, buf, sizeof(buf)), "1m0s");
    assert_string_equal(rl_format_reset(0, buf, sizeof(buf)), "0s");
    assert_string_equal(rl_format_reset(10, buf, sizeof(buf)), "10s");
    assert_string_equal(rl_format_reset(601, buf, sizeof(buf)), "10m1s");
    assert_string_equal(rl_format_reset(59, buf, 2), "5"); /* cut, ended */
}

static void
test_numbers_are_formatted_in_decimal(void **state) {
    (void)state;
    char buf[RL_U64_CHARS];
    assert_string_equal(rl_format_u64(0, buf), "0");
    assert_string_equal(rl_format_u64(7, buf), "7");
    assert_string_equal(rl_format_u64(10, buf), "10");
    assert_string_equal(rl_format_u64(99, buf), "99");
    assert_string_equal(rl_format_u64(100, buf), "100");
    assert_string_equal(rl_format_u64(1000000000000ULL, buf), "1000000000000");
    assert_string_equal(rl_format_u64(UINT64_MAX, buf), "18446744073709551615");
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers_are_formatted_in_decimal),
        cmocka_unit_test(
            test_window_is_the_minute_and_reset_counts_down_to_its_end),
        cmocka_unit_test(test_take_stops_exactly_at_the_limit),
        cmocka_unit_test(test_a_new_window_starts_from_zero),
        cmocka_unit_test(
            test_a_take_larger_than_the_limit_is_refused_and_changes_nothing),
        cmocka_unit_test(test_give_returns_unused_tokens_never_below_zero),
        cmocka_unit_test(test_settling_touches_only_its_own_window),
        cmocka_unit_test(test_add_goes_over_the_limit_and_saturates),
        cmocka_unit_test(test_seed_sets_a_window_count),
        cmocka_unit_test(test_window_numbers_wrap_without_confusing_counts),
        cmocka_unit_test(test_many_threads_get_exactly_the_limit),
        cmocka_unit_test(
            test_estimate_is_a_quarter_of_the_characters_rounded_up),
        cmocka_unit_test(test_reset_is_formatted_like_openai),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
