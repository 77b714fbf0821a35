/* The cache's request canonicalisation, answer checks, stream assembly
 * and SSE replay (plugins/cache/replay.c). */
#include "../replay.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

static char *
canon(const char *json, const char *model)
{
    cr_request_t r;
    assert_int_equal(cr_request_parse(json, strlen(json), model, &r), 0);
    return r.canonical;
}

static void
test_key_order_and_transport_fields_do_not_change_the_canonical_form(
    void **state)
{
    char *a = canon("{\"model\":\"m\",\"stream\":true,\"temperature\":0,"
                    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                    "\"stream_options\":{\"include_usage\":true},"
                    "\"user\":\"u1\"}",
                    "m");
    char *b = canon("{\"messages\":[{\"content\":\"hi\",\"role\":\"user\"}],"
                    "\"temperature\":0,\"model\":\"m\"}",
                    "m");
    assert_string_equal(a, b);
    assert_string_equal(a, "{\"messages\":[{\"content\":\"hi\",\"role\":"
                           "\"user\"}],\"model\":\"m\",\"temperature\":0}");
    free(a);
    free(b);
}

static void
test_parameters_that_change_the_answer_change_the_canonical_form(
    void **state)
{
    const char *base = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hi\"}]%s}";
    const char *extras[] = {"", ",\"max_tokens\":5", ",\"seed\":1",
                            ",\"tools\":[]", ",\"top_p\":0.5"};
    char *seen[5];
    for (int i = 0; i < 5; i++) {
        char json[256];
        snprintf(json, sizeof(json), base, extras[i]);
        seen[i] = canon(json, "m");
        for (int j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
    char *other = canon("{\"model\":\"m\",\"messages\":[]}", "alias-b");
    assert_non_null(strstr(other, "\"model\":\"alias-b\""));
    free(other);
    for (int i = 0; i < 5; i++)
        free(seen[i]);
}

static void
test_temperature_and_usage_flags(void **state)
{
    cr_request_t r;
    const char *hot = "{\"temperature\":0.7,\"stream_options\":"
                      "{\"include_usage\":true}}";
    assert_int_equal(cr_request_parse(hot, strlen(hot), "m", &r), 0);
    assert_true(r.temperature_set);
    assert_true(r.include_usage);
    cr_request_free(&r);
    const char *cold = "{\"temperature\":0}";
    assert_int_equal(cr_request_parse(cold, strlen(cold), "m", &r), 0);
    assert_false(r.temperature_set);
    assert_false(r.include_usage);
    cr_request_free(&r);
    assert_int_equal(cr_request_parse("[1]", 3, "m", &r), -1);
}

static void
test_only_finished_completions_are_worth_storing(void **state)
{
    const char *ok = "{\"choices\":[{\"message\":{\"content\":\"x\"},"
                     "\"finish_reason\":\"stop\"}]}";
    const char *err = "{\"error\":{\"message\":\"x\"}}";
    const char *cut = "{\"choices\":[{\"message\":{\"content\":\"x\"},"
                      "\"finish_reason\":null}]}";
    assert_true(cr_answer_ok(ok, strlen(ok)));
    assert_false(cr_answer_ok(err, strlen(err)));
    assert_false(cr_answer_ok(cut, strlen(cut)));
    assert_false(cr_answer_ok("{\"choices\":[]}", 14));
}

static const char *const events[] = {
    "{\"id\":\"c1\",\"created\":7,\"model\":\"mm\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}]}",
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"Hello \"}}]}",
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"w\\u00f6rld\"}}]}",
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
    "\"index\":0,\"id\":\"t1\",\"function\":{\"name\":\"f\",\"arguments\":"
    "\"{\\\"a\\\"\"}}]}}]}",
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
    "\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}",
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},"
    "\"finish_reason\":\"stop\"}]}",
    "{\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,"
    "\"completion_tokens\":2,\"total_tokens\":5}}",
};

static void
test_a_stream_assembles_into_a_whole_completion(void **state)
{
    cr_asm_t *a = cr_asm_new(1 << 20);
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++)
        assert_int_equal(cr_asm_event(a, events[i], strlen(events[i])), 0);
    size_t len;
    char *out = cr_asm_finish(a, &len);
    assert_non_null(out);
    cJSON *j = cJSON_Parse(out);
    cJSON *m = cJSON_GetObjectItem(
        cJSON_GetArrayItem(cJSON_GetObjectItem(j, "choices"), 0), "message");
    assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring,
                        "Hello w\xc3\xb6rld");
    cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "tool_calls"), 0);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "arguments")
            ->valuestring,
        "{\"a\":1}");
    assert_string_equal(cJSON_GetObjectItem(j, "object")->valuestring,
                        "chat.completion");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"),
                                         "total_tokens")
                         ->valueint,
                     5);
    assert_true(cr_answer_ok(out, len));
    cJSON_Delete(j);
    free(out);
    cr_asm_free(a);
}

static void
test_a_cut_or_failed_stream_is_never_assembled(void **state)
{
    size_t len;
    cr_asm_t *a = cr_asm_new(1 << 20);
    cr_asm_event(a, events[0], strlen(events[0]));
    cr_asm_event(a, events[1], strlen(events[1]));
    assert_null(cr_asm_finish(a, &len)); /* no finish_reason */
    cr_asm_free(a);
    a = cr_asm_new(1 << 20);
    cr_asm_event(a, events[1], strlen(events[1]));
    const char *err = "{\"error\":{\"message\":\"upstream died\"}}";
    assert_int_equal(cr_asm_event(a, err, strlen(err)), -1);
    cr_asm_event(a, events[5], strlen(events[5]));
    assert_null(cr_asm_finish(a, &len));
    cr_asm_free(a);
    a = cr_asm_new(40); /* too big to keep */
    cr_asm_event(a, events[0], strlen(events[0]));
    assert_null(cr_asm_finish(a, &len));
    cr_asm_free(a);
}

static void
test_replay_is_a_proper_event_stream_that_round_trips(void **state)
{
    const char *done = "{\"id\":\"c9\",\"created\":1,\"model\":\"mm\","
                       "\"object\":\"chat.completion\",\"choices\":[{"
                       "\"index\":0,\"message\":{\"role\":\"assistant\","
                       "\"content\":\"one two three\"},\"finish_reason\":"
                       "\"stop\"}],\"usage\":{\"prompt_tokens\":1,"
                       "\"completion_tokens\":3,\"total_tokens\":4}}";
    size_t n;
    char *sse = cr_sse_from_completion(done, strlen(done), 1, &n);
    assert_non_null(sse);
    assert_int_equal(strlen(sse), n);
    assert_true(n > 14 && strcmp(sse + n - 14, "data: [DONE]\n\n") == 0);
    /* Feed it back through the assembler: the same answer comes out. */
    cr_asm_t *a = cr_asm_new(1 << 20);
    int count = 0, usage = 0;
    for (char *s = sse; (s = strstr(s, "data: ")) != NULL;) {
        s += 6;
        char *end = strstr(s, "\n\n");
        if (strncmp(s, "[DONE]", 6) != 0) {
            assert_int_equal(cr_asm_event(a, s, (size_t)(end - s)), 0);
            assert_non_null(strstr(s, "chat.completion.chunk"));
            usage += memmem(s, (size_t)(end - s), "\"usage\"", 7) != NULL;
            count++;
        }
        s = end;
    }
    assert_true(count >= 5); /* role, three words, finish, usage */
    assert_int_equal(usage, 1);
    size_t len;
    char *back = cr_asm_finish(a, &len);
    assert_non_null(strstr(back, "\"content\":\"one two three\""));
    assert_non_null(strstr(back, "\"total_tokens\":4"));
    free(back);
    cr_asm_free(a);
    free(sse);
    sse = cr_sse_from_completion(done, strlen(done), 0, &n);
    assert_null(strstr(sse, "\"usage\"")); /* not asked for */
    free(sse);
    assert_null(cr_sse_from_completion("nope", 4, 0, &n));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_key_order_and_transport_fields_do_not_change_the_canonical_form),
        cmocka_unit_test(
            test_parameters_that_change_the_answer_change_the_canonical_form),
        cmocka_unit_test(test_temperature_and_usage_flags),
        cmocka_unit_test(test_only_finished_completions_are_worth_storing),
        cmocka_unit_test(test_a_stream_assembles_into_a_whole_completion),
        cmocka_unit_test(test_a_cut_or_failed_stream_is_never_assembled),
        cmocka_unit_test(test_replay_is_a_proper_event_stream_that_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
