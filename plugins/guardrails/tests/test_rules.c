/* The guardrails policy: config errors name their JSON path (and a bad
 * regex its PCRE2 offset), rules find whole and partial matches (what a
 * stream must hold back), and redaction replaces every match. */
#include "../rules.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define WHERE "$.plugins.g.config"

static char err[512];

static int
build(gr_policy_t *p, const char *json)
{
    err[0] = '\0';
    return gr_policy_build(p, json, WHERE, err, sizeof(err));
}

static void
test_bad_configs_name_the_json_path_and_regex_offset(void **state)
{
    gr_policy_t p;
    assert_int_equal(build(&p, "{\"deny\":{\"r1\":{\"pattern\":\"a(b\"}}}"),
                     -1);
    assert_non_null(strstr(err, WHERE ".deny.r1.pattern: invalid regex at "
                                      "offset 3"));
    assert_int_equal(
        build(&p, "{\"response_deny\":{\"x\":{\"patterns\":[\"ok\",\"(\"]}}}"),
        -1);
    assert_non_null(strstr(err, WHERE ".response_deny.x.patterns[1]"));
    assert_int_equal(build(&p, "{\"deny\":{\"x\":{\"pattern\":\"a\","
                               "\"action\":\"zap\"}}}"),
                     -1);
    assert_non_null(strstr(err, WHERE ".deny.x.action: unknown action"));
    assert_int_equal(build(&p, "{\"deny\":{\"bad name\":{\"pattern\":\"a\"}}}"),
                     -1);
    assert_int_equal(build(&p, "{\"injection\":{\"threshold\":0}}"), -1);
    assert_non_null(strstr(err, WHERE ".injection.threshold"));
    assert_int_equal(build(&p, "{\"nope\":1}"), -1);
    assert_non_null(strstr(err, WHERE ".nope: unknown key"));
    assert_int_equal(build(&p, "{\"size_action\":\"redact\"}"), -1);
}

static void
test_defaults_turn_the_detector_on_and_nothing_else(void **state)
{
    gr_policy_t p;
    assert_int_equal(build(&p, "{}"), 0);
    assert_non_null(p.det);
    assert_true(p.threshold == 1.0);
    assert_int_equal(p.ndeny, 0);
    assert_int_equal(p.nresp, 0);
    assert_int_equal(p.allow.nre, 0);
    assert_string_equal(p.redaction, "[REDACTED]");
    gr_policy_free(&p);
    assert_int_equal(build(&p, "{\"injection\":{\"enabled\":false}}"), 0);
    assert_null(p.det);
    gr_policy_free(&p);
}

static void
test_partial_match_marks_where_a_stream_must_wait(void **state)
{
    gr_policy_t p;
    assert_int_equal(
        build(&p, "{\"response_deny\":{\"leak\":{\"pattern\":"
                  "\"(?i)top secret\"}}}"),
        0);
    const gr_rule_t *r = &p.resp[0];
    size_t so = 0, eo = 0;
    int partial = 0;
    const char *t = "here is the top sec";
    assert_int_equal(gr_rule_find(r, t, strlen(t), 0, 1, &so, &eo, &partial),
                     1);
    assert_true(partial);
    assert_int_equal(so, 12); /* "top sec" waits; "here is the " goes */
    t = "nothing to see";
    assert_int_equal(gr_rule_find(r, t, strlen(t), 0, 1, &so, &eo, &partial),
                     0);
    t = "it is TOP SECRET now";
    assert_int_equal(gr_rule_find(r, t, strlen(t), 0, 0, &so, &eo, &partial),
                     1);
    assert_false(partial);
    assert_int_equal(so, 6);
    assert_int_equal(eo, 16);
    /* Invalid UTF-8 never errors: it just does not match. */
    t = "\xff\xfe top secret";
    assert_int_equal(gr_rule_find(r, t, strlen(t), 0, 0, &so, &eo, NULL), 1);
    gr_policy_free(&p);
}

static void
test_redaction_replaces_every_match_of_every_pattern(void **state)
{
    gr_policy_t p;
    assert_int_equal(build(&p, "{\"redaction\":\"#\",\"deny\":{\"r\":{"
                               "\"patterns\":[\"\\\\d{3}\",\"cat\"],"
                               "\"action\":\"redact\"}}}"),
                     0);
    size_t n, count;
    char *out = gr_rule_redact(&p.deny[0], "123 cat 4567 dog", 16, "#", &n,
                               &count);
    assert_string_equal(out, "# # #7 dog");
    assert_int_equal(n, strlen(out));
    assert_int_equal(count, 3);
    free(out);
    out = gr_rule_redact(&p.deny[0], "clean", 5, "#", &n, &count);
    assert_string_equal(out, "clean");
    assert_int_equal(count, 0);
    free(out);
    assert_int_equal(p.deny[0].action, GR_REDACT);
    gr_policy_free(&p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_configs_name_the_json_path_and_regex_offset),
        cmocka_unit_test(test_defaults_turn_the_detector_on_and_nothing_else),
        cmocka_unit_test(test_partial_match_marks_where_a_stream_must_wait),
        cmocka_unit_test(test_redaction_replaces_every_match_of_every_pattern),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
