/* Unit tests for prices, budgets and cost arithmetic (core/pricing.c) and
 * the budget meters (core/budget.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "budget.h"
#include "config.h"
#include "error.h"
#include "pricing.h"

/* A config of `json` (an object's members) plus a listener. */
static sl_config_t *
load(const char *json, sl_config_errors_t *errs) {
    char buf[2048];
    sl_config_t *cfg = NULL;
    snprintf(buf, sizeof(buf), "{\"listen\":[{\"addr\":\"127.0.0.1:1\"}],%s",
             json + 1);
    sl_config_load_string(buf, strlen(buf), &cfg, errs);
    return cfg;
}

static int
has_error(const sl_config_errors_t *e, const char *path, const char *msg) {
    for (size_t i = 0; i < e->count; i++)
        if (strcmp(e->items[i].path, path) == 0 &&
            strstr(e->items[i].message, msg) != NULL)
            return 1;
    return 0;
}

static void
test_cost_prices_uncached_prompt_cached_and_completion(void **state) {
    (void)state;
    /* $2.50 in, $10 out, $1.25 cached per 1M tokens. */
    sl_price_t p = {
        .input = 2500000, .output = 10000000, .cached_input = 1250000};
    /* 1000 prompt of which 400 cached, 200 out:
     * 600*2.5 + 400*1.25 + 200*10 = 1500 + 500 + 2000 = 4000 micro-$. */
    assert_int_equal(sl_cost_micros(&p, 1000, 200, 400), 4000);
    /* cached counted once: the same prompt uncached costs more. */
    assert_int_equal(sl_cost_micros(&p, 1000, 200, 0), 4500);
    assert_int_equal(sl_cost_micros(&p, 1000, 200, -1), 4500);
}

static void
test_cost_rounds_half_up_to_micro_dollars(void **state) {
    (void)state;
    sl_price_t p = {.input = 150000, .output = 600000, .cached_input = 150000};
    /* 3 tokens at $0.15/1M = 0.45 micro-$ -> 0; 4 -> 0.6 -> 1. */
    assert_int_equal(sl_cost_micros(&p, 3, 0, 0), 0);
    assert_int_equal(sl_cost_micros(&p, 4, 0, 0), 1);
    /* 5 at $0.60/1M = 3.0 exactly. */
    assert_int_equal(sl_cost_micros(&p, 0, 5, 0), 3);
}

static void
test_cost_treats_unknown_counts_as_zero_and_clamps_cached(void **state) {
    (void)state;
    sl_price_t p = {.input = 1000000, .output = 2000000, .cached_input = 0};
    assert_int_equal(sl_cost_micros(&p, -1, -1, -1), 0);
    /* More cached than prompt: the prompt is all cached, nothing else. */
    assert_int_equal(sl_cost_micros(&p, 10, 0, 50), 0);
    assert_int_equal(sl_cost_micros(NULL, 10, 10, 0), 0);
}

static void
test_cost_of_huge_counts_does_not_overflow(void **state) {
    (void)state;
    sl_price_t p = {
        .input = 10000000000LL, .output = 10000000000LL, .cached_input = 0};
    /* 2e9 tokens at $10000/1M = $20M = 2e13 micro-$ each side. */
    assert_int_equal(sl_cost_micros(&p, 2000000000L, 2000000000L, 0),
                     40000000000000LL);
}

static void
test_pricing_config_converts_dollars_per_million(void **state) {
    (void)state;
    sl_config_errors_t e = {0};
    sl_config_t *cfg = load("{\"pricing\":{\"gpt-4o\":{\"input\":2.5,"
                            "\"output\":10,\"cached_input\":1.25},"
                            "\"cheap\":{\"input\":0.15,\"output\":0.6}}}",
                            &e);
    assert_non_null(cfg);
    const sl_price_t *p = sl_pricing_find(cfg->usage, NULL, "gpt-4o", NULL);
    assert_non_null(p);
    assert_int_equal(p->input, 2500000);
    assert_int_equal(p->output, 10000000);
    assert_int_equal(p->cached_input, 1250000);
    p = sl_pricing_find(cfg->usage, NULL, "cheap", NULL);
    assert_non_null(p);
    /* Without cached_input a cached token is priced as input. */
    assert_int_equal(p->cached_input, 150000);
    sl_config_free(cfg);
    sl_config_errors_free(&e);
}

static void
test_pricing_prefers_provider_model_then_model_then_alias(void **state) {
    (void)state;
    sl_config_errors_t e = {0};
    sl_config_t *cfg =
        load("{\"pricing\":{\"smart\":{\"input\":1,\"output\":1},"
             "\"gpt-4o\":{\"input\":2,\"output\":2},"
             "\"azure/gpt-4o\":{\"input\":3,\"output\":3}}}",
             &e);
    assert_non_null(cfg);
    assert_int_equal(
        sl_pricing_find(cfg->usage, "azure", "gpt-4o", "smart")->input,
        3000000);
    assert_int_equal(
        sl_pricing_find(cfg->usage, "openai", "gpt-4o", "smart")->input,
        2000000);
    assert_int_equal(
        sl_pricing_find(cfg->usage, "openai", "other", "smart")->input,
        1000000);
    assert_null(sl_pricing_find(cfg->usage, "openai", "other", "dumb"));
    sl_config_free(cfg);
    sl_config_errors_free(&e);
}

static void
test_pricing_and_budget_errors_name_their_json_paths(void **state) {
    (void)state;
    sl_config_errors_t e = {0};
    sl_config_t *cfg =
        load("{\"pricing\":{\"m\":{\"input\":-1,\"output\":\"x\",\"cache\":1},"
             "\"n\":{\"output\":1},\"o\":3},"
             "\"budgets\":{\"alice\":{},\"bob\":{\"daily_usd\":true,"
             "\"total_tokens\":1.5},\"carol\":{\"weekly\":1}}}",
             &e);
    assert_null(cfg);
    assert_true(has_error(&e, "$.pricing.m.input", "between 0 and"));
    assert_true(has_error(&e, "$.pricing.m.output", "between 0 and"));
    assert_true(has_error(&e, "$.pricing.m.cache", "unknown key"));
    assert_true(has_error(&e, "$.pricing.n.input", "required"));
    assert_true(has_error(&e, "$.pricing.o", "must be an object"));
    assert_true(has_error(&e, "$.budgets.alice", "at least one"));
    assert_true(has_error(&e, "$.budgets.bob.daily_usd", "between 0"));
    assert_true(has_error(&e, "$.budgets.bob.total_tokens", "integer"));
    assert_true(has_error(&e, "$.budgets.carol.weekly", "unknown key"));
    sl_config_errors_free(&e);
}

static void
test_budgets_config_keeps_absent_limits_unlimited(void **state) {
    (void)state;
    sl_config_errors_t e = {0};
    sl_config_t *cfg = load("{\"budgets\":{\"alice\":{\"daily_usd\":1.5,"
                            "\"total_tokens\":1000},"
                            "\"bob\":{\"monthly_usd\":0}}}",
                            &e);
    assert_non_null(cfg);
    const sl_budget_conf_t *a = sl_budget_conf_find(cfg->usage, "alice");
    assert_non_null(a);
    assert_int_equal(a->daily_micros, 1500000);
    assert_int_equal(a->monthly_micros, -1);
    assert_int_equal(a->total_tokens, 1000);
    const sl_budget_conf_t *b = sl_budget_conf_find(cfg->usage, "bob");
    assert_int_equal(b->monthly_micros, 0); /* 0 is a limit: refuse all */
    assert_null(sl_budget_conf_find(cfg->usage, "carol"));
    sl_config_free(cfg);
    sl_config_errors_free(&e);
}

static void
test_ledger_switch_defaults_on_and_must_be_a_boolean(void **state) {
    (void)state;
    sl_config_errors_t e = {0};
    sl_config_t *cfg = load("{\"workers\":1}", &e);
    assert_non_null(cfg);
    assert_true(cfg->usage->ledger);
    sl_config_free(cfg);
    cfg = load("{\"ledger\":false}", &e);
    assert_non_null(cfg);
    assert_false(cfg->usage->ledger);
    sl_config_free(cfg);
    cfg = load("{\"ledger\":\"no\"}", &e);
    assert_null(cfg);
    assert_true(has_error(&e, "$.ledger", "true or false"));
    sl_config_errors_free(&e);
}

static void
test_meter_refuses_what_does_not_fit_and_settles_actuals(void **state) {
    (void)state;
    sl_meter_t m = {0};
    assert_int_equal(sl_meter_reserve(&m, 5, 60, 100), 0);
    assert_int_equal(sl_meter_reserve(&m, 5, 50, 100), -1); /* 110 > 100 */
    sl_meter_settle(&m, 5, 5, 60, 30); /* it cost less than reserved */
    assert_int_equal(m.used, 30);
    assert_int_equal(m.spent, 30);
    assert_int_equal(sl_meter_reserve(&m, 5, 50, 100), 0);
    sl_meter_settle(&m, 5, 5, 50, 0); /* aborted: all given back */
    assert_int_equal(m.used, 30);
    /* At the limit even a free request is refused; a new window resets. */
    sl_meter_settle(&m, 5, 5, 0, 70);
    assert_int_equal(sl_meter_reserve(&m, 5, 0, 100), -1);
    assert_int_equal(sl_meter_reserve(&m, 6, 0, 100), 0);
    assert_int_equal(m.used, 0);
    assert_int_equal(sl_meter_reserve(&m, 6, 1, -1), 0); /* no limit */
}

static void
test_meter_settles_a_reservation_from_an_ended_window(void **state) {
    (void)state;
    sl_meter_t m = {0};
    assert_int_equal(sl_meter_reserve(&m, 1, 40, 100), 0);
    sl_meter_settle(&m, 2, 1, 40, 25);
    /* Day 2 owes only what was spent, not minus day 1's reservation. */
    assert_int_equal(m.used, 25);
    assert_int_equal(m.spent, 25);
}

static sl_meter_t shared;
static atomic_int admitted;

static void *
hammer(void *arg) {
    (void)arg;
    for (int i = 0; i < 20000; i++)
        if (sl_meter_reserve(&shared, 1, 7, 70000) == 0) {
            atomic_fetch_add(&admitted, 1);
            if (i % 2)
                sl_meter_settle(&shared, 1, 1, 7, 7);
        }
    return NULL;
}

static void
test_meter_is_exact_under_concurrent_reservations(void **state) {
    (void)state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    /* 80000 attempts of 7 against 70000: exactly 10000 fit. */
    assert_int_equal(atomic_load(&admitted), 10000);
    assert_int_equal(shared.used, 70000);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_cost_prices_uncached_prompt_cached_and_completion),
        cmocka_unit_test(test_cost_rounds_half_up_to_micro_dollars),
        cmocka_unit_test(
            test_cost_treats_unknown_counts_as_zero_and_clamps_cached),
        cmocka_unit_test(test_cost_of_huge_counts_does_not_overflow),
        cmocka_unit_test(test_pricing_config_converts_dollars_per_million),
        cmocka_unit_test(
            test_pricing_prefers_provider_model_then_model_then_alias),
        cmocka_unit_test(test_pricing_and_budget_errors_name_their_json_paths),
        cmocka_unit_test(test_budgets_config_keeps_absent_limits_unlimited),
        cmocka_unit_test(test_ledger_switch_defaults_on_and_must_be_a_boolean),
        cmocka_unit_test(
            test_meter_refuses_what_does_not_fit_and_settles_actuals),
        cmocka_unit_test(test_meter_settles_a_reservation_from_an_ended_window),
        cmocka_unit_test(test_meter_is_exact_under_concurrent_reservations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
