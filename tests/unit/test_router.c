/* Unit tests for core/router.c (exact route matching, direct
 * "provider/model" names) and the balancer's weighted first choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "error.h"
#include "balancer.h"
#include "router.h"

/* The target a call tries first: the alias's weighted choice, or the
 * direct target; NULL when the name resolves to nothing. */
static const sl_target_t *
resolve(const sl_config_t *cfg, const char *name, size_t len, uint32_t rnd,
        sl_target_t *direct) {
    const sl_model_t *m = NULL;
    sl_target_t scratch;
    const sl_target_t *chain[SL_CHAIN_MAX];

    if (sl_route_model(cfg, name, len, &m, direct ? direct : &scratch) != 0)
        return NULL;
    if (m == NULL)
        return direct ? direct : NULL;
    return sl_balancer_chain(m, rnd, chain, SL_CHAIN_MAX) > 0 ? chain[0]
                                                              : NULL;
}

static const char conf[] =
    "{\"listen\":[\"127.0.0.1:8080\"],"
    " \"providers\":{\"openai\":{\"type\":\"openai\","
    "                            \"base_url\":\"https://api.openai.com/v1\"},"
    "                \"mock\":{\"type\":\"mock\"}},"
    " \"models\":{"
    "   \"smart\":{\"targets\":[{\"provider\":\"openai\",\"model\":\"gpt-4o\","
    "                            \"weight\":3},"
    "                           {\"provider\":\"mock\",\"model\":\"echo\"}]},"
    "   \"three\":{\"targets\":[{\"provider\":\"mock\",\"model\":\"a\"},"
    "                           {\"provider\":\"mock\",\"model\":\"b\","
    "                            \"weight\":2},"
    "                           {\"provider\":\"mock\",\"model\":\"c\"}]},"
    "   \"one\":{\"targets\":[{\"provider\":\"mock\",\"model\":\"solo\"}]},"
    "   \"mock/aliased\":{\"targets\":[{\"provider\":\"openai\","
    "                                  \"model\":\"real\"}]}},"
    " \"routes\":[{\"path\":\"/v1/chat/completions\"},"
    "             {\"path\":\"/v1/models\"},"
    "             {\"path\":\"/v1/chat\",\"kind\":\"chat\"}]}";

static int
setup(void **state) {
    sl_config_t *cfg = NULL;
    sl_config_errors_t errs = {0};
    int rc = sl_config_load_string(conf, strlen(conf), &cfg, &errs);

    sl_config_errors_free(&errs);
    if (rc != 0)
        return -1;
    *state = cfg;
    return 0;
}

static int
teardown(void **state) {
    sl_config_free(*state);
    return 0;
}

static void
test_route_match_is_exact(void **state) {
    const sl_config_t *cfg = *state;
    const sl_route_t *r;

    r = sl_route_match(cfg, "/v1/chat/completions", 20);
    assert_ptr_equal(r, &cfg->routes[0]);
    assert_int_equal(r->kind, SL_ROUTE_CHAT);
    r = sl_route_match(cfg, "/v1/models", 10);
    assert_ptr_equal(r, &cfg->routes[1]);
    assert_int_equal(r->kind, SL_ROUTE_MODELS);
    /* a prefix of a longer route is a route of its own, not a match */
    assert_ptr_equal(sl_route_match(cfg, "/v1/chat", 8), &cfg->routes[2]);
    /* the length bounds the path: no NUL needed after it */
    assert_ptr_equal(sl_route_match(cfg, "/v1/modelsXYZ", 10), &cfg->routes[1]);
    assert_null(sl_route_match(cfg, "/v1/chat/completions/", 21));
    assert_null(sl_route_match(cfg, "/v1/chat/complet", 16));
    assert_null(sl_route_match(cfg, "/V1/models", 10));
    assert_null(sl_route_match(cfg, "/healthz", 8)); /* not configured */
    assert_null(sl_route_match(cfg, "", 0));
}

/* rnd values spread evenly over the 32-bit range. */
static void
count_choices(const sl_config_t *cfg, const char *model, const char **names,
              size_t *counts, size_t nnames, uint32_t samples) {
    for (uint32_t i = 0; i < samples; i++) {
        uint32_t rnd = (uint32_t)(((uint64_t)i << 32) / samples);
        const sl_target_t *t =
            resolve(cfg, model, strlen(model), rnd, NULL);
        size_t k;

        assert_non_null(t);
        for (k = 0; k < nnames; k++)
            if (strcmp(t->model, names[k]) == 0)
                break;
        assert_true(k < nnames);
        counts[k]++;
    }
}

static void
test_weights_three_to_one_split_the_range_three_to_one(void **state) {
    const sl_config_t *cfg = *state;
    const char *names[] = {"gpt-4o", "echo"};
    size_t counts[2] = {0, 0};

    count_choices(cfg, "smart", names, counts, 2, 4096);
    assert_int_equal(counts[0], 3072);
    assert_int_equal(counts[1], 1024);
}

static void
test_weights_pick_by_position_in_the_range(void **state) {
    const sl_config_t *cfg = *state;
    const char *names[] = {"a", "b", "c"};
    size_t counts[3] = {0, 0, 0};
    const sl_target_t *t;

    /* weights 1:2:1 -> quarters of the range: a, b, b, c */
    t = resolve(cfg, "three", 5, 0, NULL);
    assert_string_equal(t->model, "a");
    t = resolve(cfg, "three", 5, 0x3fffffffu, NULL);
    assert_string_equal(t->model, "a");
    t = resolve(cfg, "three", 5, 0x40000000u, NULL);
    assert_string_equal(t->model, "b");
    t = resolve(cfg, "three", 5, 0xbfffffffu, NULL);
    assert_string_equal(t->model, "b");
    t = resolve(cfg, "three", 5, 0xc0000000u, NULL);
    assert_string_equal(t->model, "c");
    t = resolve(cfg, "three", 5, 0xffffffffu, NULL);
    assert_string_equal(t->model, "c");
    count_choices(cfg, "three", names, counts, 3, 1000);
    assert_int_equal(counts[0], 250);
    assert_int_equal(counts[1], 500);
    assert_int_equal(counts[2], 250);
}

static void
test_single_target_is_always_chosen(void **state) {
    const sl_config_t *cfg = *state;
    const sl_target_t *t;

    t = resolve(cfg, "one", 3, 0xffffffffu, NULL);
    assert_ptr_equal(t, &sl_config_model(cfg, "one", 3)->targets[0]);
    assert_string_equal(t->model, "solo");
    assert_string_equal(t->provider->name, "mock");
}

static void
test_unknown_model_is_null(void **state) {
    const sl_config_t *cfg = *state;
    sl_target_t direct;

    assert_null(resolve(cfg, "gpt-5", 5, 0, &direct));
    assert_null(resolve(cfg, "smar", 4, 0, &direct));
    assert_null(resolve(cfg, "smartest", 8, 0, &direct));
    assert_null(resolve(cfg, "", 0, 0, &direct));
}

static void
test_direct_provider_model_points_into_the_input(void **state) {
    const sl_config_t *cfg = *state;
    const char *in = "openai/gpt-4o-mini";
    sl_target_t direct;
    const sl_target_t *t;

    memset(&direct, 0xAB, sizeof(direct));
    t = resolve(cfg, in, strlen(in), 12345, &direct);
    assert_ptr_equal(t, &direct);
    assert_ptr_equal(t->provider, sl_config_provider(cfg, "openai", 6));
    assert_ptr_equal(t->model, in + 7);
    assert_string_equal(t->model, "gpt-4o-mini");
    assert_int_equal(t->weight, 1);

    /* a model name may itself hold a '/': only the first one splits */
    in = "mock/org/model";
    t = resolve(cfg, in, strlen(in), 0, &direct);
    assert_ptr_equal(t, &direct);
    assert_string_equal(t->provider->name, "mock");
    assert_string_equal(t->model, "org/model");
}

static void
test_alias_wins_over_direct_form(void **state) {
    const sl_config_t *cfg = *state;
    sl_target_t direct;
    const sl_target_t *t;

    t = resolve(cfg, "mock/aliased", 12, 0, &direct);
    assert_non_null(t);
    assert_ptr_not_equal(t, &direct);
    assert_string_equal(t->model, "real");
    assert_string_equal(t->provider->name, "openai");
}

static void
test_direct_form_with_unknown_or_empty_parts_is_null(void **state) {
    const sl_config_t *cfg = *state;
    sl_target_t direct;

    assert_null(resolve(cfg, "nope/gpt-4o", 11, 0, &direct));
    assert_null(resolve(cfg, "OpenAI/gpt-4o", 13, 0, &direct));
    assert_null(resolve(cfg, "openai/", 7, 0, &direct));
    assert_null(resolve(cfg, "/gpt-4o", 7, 0, &direct));
    assert_null(resolve(cfg, "openai", 6, 0, &direct));
    /* the length bounds the string: "openai/x" cut before the model */
    assert_null(resolve(cfg, "openai/x", 7, 0, &direct));
}

static void
test_direct_form_refused_when_disabled(void **state) {
    static const char off[] = "{\"listen\":[\"127.0.0.1:1\"],"
                              " \"providers\":{\"mock\":{\"type\":\"mock\"}},"
                              " \"allow_direct_models\":false}";
    sl_config_t *cfg = NULL;
    sl_target_t direct;
    (void)state;

    assert_int_equal(sl_config_load_string(off, strlen(off), &cfg, NULL), 0);
    assert_null(resolve(cfg, "mock/echo", 9, 0, &direct));
    sl_config_free(cfg);
}

int
main(void) {
#define T(f) cmocka_unit_test(f)
    const struct CMUnitTest tests[] = {
        T(test_route_match_is_exact),
        T(test_weights_three_to_one_split_the_range_three_to_one),
        T(test_weights_pick_by_position_in_the_range),
        T(test_single_target_is_always_chosen),
        T(test_unknown_model_is_null),
        T(test_direct_provider_model_points_into_the_input),
        T(test_alias_wins_over_direct_form),
        T(test_direct_form_with_unknown_or_empty_parts_is_null),
        T(test_direct_form_refused_when_disabled),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
