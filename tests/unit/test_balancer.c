/* The balancer: try order, least-outstanding choice, concurrency caps and
 * the breaker's closed -> open -> half-open -> closed cycle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "balancer.h"
#include "error.h"

static sl_provider_t prov = {.name = "p"};

static sl_model_t *
model(size_t ntargets, size_t nfallback)
{
    sl_model_t *m = calloc(1, sizeof(*m));
    m->targets = calloc(ntargets, sizeof(sl_target_t));
    m->fallback = calloc(nfallback ? nfallback : 1, sizeof(sl_target_t));
    m->ntargets = ntargets;
    m->nfallback = nfallback;
    static char *names[] = {"t0", "t1", "t2", "t3"};
    for (size_t i = 0; i < ntargets; i++) {
        m->targets[i].provider = &prov;
        m->targets[i].model = names[i];
        m->targets[i].weight = 1;
        m->targets[i].state = sl_target_state_new();
        m->total_weight++;
    }
    for (size_t i = 0; i < nfallback; i++) {
        m->fallback[i].provider = &prov;
        m->fallback[i].model = "fb";
        m->fallback[i].weight = 1;
        m->fallback[i].state = sl_target_state_new();
    }
    m->breaker_window_ms = 1000;
    m->breaker_open_ms = 500;
    return m;
}

static void
model_free(sl_model_t *m)
{
    for (size_t i = 0; i < m->ntargets; i++)
        free(m->targets[i].state);
    for (size_t i = 0; i < m->nfallback; i++)
        free(m->fallback[i].state);
    free(m->targets);
    free(m->fallback);
    free(m);
}

static void
test_chain_is_choice_then_other_targets_then_fallback(void **state)
{
    sl_model_t *m = model(3, 1);
    const sl_target_t *chain[SL_CHAIN_MAX];
    /* weights 1:1:1; a value in the middle third picks t1 */
    size_t n = sl_balancer_chain(m, 0x60000000u, chain, SL_CHAIN_MAX);
    assert_int_equal(n, 4);
    assert_string_equal(chain[0]->model, "t1");
    assert_string_equal(chain[1]->model, "t0");
    assert_string_equal(chain[2]->model, "t2");
    assert_string_equal(chain[3]->model, "fb");
    assert_int_equal(sl_balancer_chain(m, 0, chain, 2), 2);
    model_free(m);
}

static void
test_least_outstanding_picks_the_idle_target(void **state)
{
    sl_model_t *m = model(2, 0);
    const sl_target_t *chain[SL_CHAIN_MAX];
    int probe;
    m->balance = SL_BALANCE_LEAST_OUTSTANDING;
    assert_int_equal(sl_balancer_acquire(m, &m->targets[0], 0, &probe), 0);
    assert_int_equal(sl_balancer_acquire(m, &m->targets[0], 0, &probe), 0);
    assert_int_equal(sl_balancer_acquire(m, &m->targets[1], 0, &probe), 0);
    for (uint32_t r = 0; r < 50; r++) {
        sl_balancer_chain(m, r * 0x05000000u, chain, SL_CHAIN_MAX);
        assert_string_equal(chain[0]->model, "t1");
    }
    model_free(m);
}

static void
test_concurrency_cap_refuses_then_frees_a_slot(void **state)
{
    sl_model_t *m = model(1, 0);
    int probe;
    m->targets[0].max_concurrency = 2;
    assert_int_equal(sl_balancer_acquire(m, &m->targets[0], 0, &probe), 0);
    assert_int_equal(sl_balancer_acquire(m, &m->targets[0], 0, &probe), 0);
    assert_int_equal(sl_balancer_acquire(m, &m->targets[0], 0, &probe),
                     SL_EAGAIN);
    sl_balancer_release(m, &m->targets[0], 1, 0, 0);
    assert_int_equal(sl_balancer_acquire(m, &m->targets[0], 0, &probe), 0);
    model_free(m);
}

static void
test_breaker_cycle(void **state)
{
    sl_model_t *m = model(1, 0);
    const sl_target_t *t = &m->targets[0];
    int probe;
    m->breaker_failures = 3;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sl_balancer_acquire(m, t, 100, &probe), 0);
        sl_balancer_release(m, t, 0, probe, 100);
    }
    assert_int_equal(sl_balancer_state(m, t, 100), SL_BREAKER_CLOSED);
    assert_int_equal(sl_balancer_acquire(m, t, 100, &probe), 0);
    sl_balancer_release(m, t, 0, probe, 100);
    assert_int_equal(sl_balancer_state(m, t, 100), SL_BREAKER_OPEN);
    assert_int_equal(sl_balancer_acquire(m, t, 300, &probe), SL_EAGAIN);
    /* open_ms later: one probe at a time */
    assert_int_equal(sl_balancer_state(m, t, 700), SL_BREAKER_HALF_OPEN);
    assert_int_equal(sl_balancer_acquire(m, t, 700, &probe), 0);
    assert_true(probe);
    int probe2;
    assert_int_equal(sl_balancer_acquire(m, t, 700, &probe2), SL_EAGAIN);
    sl_balancer_release(m, t, 1, probe, 710);
    assert_int_equal(sl_balancer_state(m, t, 710), SL_BREAKER_CLOSED);
    assert_int_equal(sl_balancer_acquire(m, t, 710, &probe), 0);
    assert_false(probe);
    model_free(m);
}

static void
test_failures_outside_the_window_do_not_add_up(void **state)
{
    sl_model_t *m = model(1, 0);
    const sl_target_t *t = &m->targets[0];
    int probe;
    m->breaker_failures = 2;
    sl_balancer_acquire(m, t, 0, &probe);
    sl_balancer_release(m, t, 0, probe, 0);
    sl_balancer_acquire(m, t, 5000, &probe);
    sl_balancer_release(m, t, 0, probe, 5000);
    assert_int_equal(sl_balancer_state(m, t, 5000), SL_BREAKER_CLOSED);
    model_free(m);
}

static void
test_no_breaker_when_not_configured(void **state)
{
    sl_model_t *m = model(1, 0);
    const sl_target_t *t = &m->targets[0];
    int probe;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(sl_balancer_acquire(m, t, 0, &probe), 0);
        sl_balancer_release(m, t, 0, probe, 0);
    }
    assert_int_equal(sl_balancer_state(m, t, 0), SL_BREAKER_CLOSED);
    model_free(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_is_choice_then_other_targets_then_fallback),
        cmocka_unit_test(test_least_outstanding_picks_the_idle_target),
        cmocka_unit_test(test_concurrency_cap_refuses_then_frees_a_slot),
        cmocka_unit_test(test_breaker_cycle),
        cmocka_unit_test(test_failures_outside_the_window_do_not_add_up),
        cmocka_unit_test(test_no_breaker_when_not_configured),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
