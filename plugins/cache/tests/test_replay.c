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

/* The canonical form as the cache computed it with a cJSON tree: parse,
 * drop transport-only fields, replace the model, sort keys at every
 * level, print. replay.c computes it without a tree; keys written before
 * stay valid only while the two agree. */
static int
cmp_items(const void *a, const void *b)
{
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    return strcmp(x->string, y->string);
}

static void
sort_keys(cJSON *node)
{
    cJSON *it, *v[64];
    size_t n = 0;
    for (it = node->child; it != NULL; it = it->next) {
        if (cJSON_IsObject(it) || cJSON_IsArray(it))
            sort_keys(it);
        n++;
    }
    if (!cJSON_IsObject(node) || n < 2)
        return;
    assert_true(n <= 64);
    n = 0;
    for (it = node->child; it != NULL; it = it->next)
        v[n++] = it;
    qsort(v, n, sizeof(*v), cmp_items);
    for (size_t i = 0; i < n; i++) {
        v[i]->prev = i > 0 ? v[i - 1] : v[n - 1];
        v[i]->next = i + 1 < n ? v[i + 1] : NULL;
    }
    node->child = v[0];
}

static char *
tree_canonical(const char *json, const char *model)
{
    static const char *const transport[] = {"stream", "stream_options",
                                            "user", "metadata", "store",
                                            "service_tier", NULL};
    cJSON *root = cJSON_Parse(json);
    assert_non_null(root);
    for (size_t i = 0; transport[i] != NULL; i++)
        cJSON_DeleteItemFromObjectCaseSensitive(root, transport[i]);
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model");
    cJSON_AddStringToObject(root, "model", model);
    sort_keys(root);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void
test_the_canonical_form_is_what_a_sorted_cjson_tree_prints(void **state)
{
    (void)state;
    const char *const requests[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"hello from the benchmark\"}]}",
        "{\"zeta\":1,\"alpha\":{\"z\":[{\"b\":1,\"a\":2},[3,{\"y\":null,"
        "\"x\":true}]],\"a\":\"s\"},\"model\":\"other\",\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u\","
        "\"metadata\":{\"k\":\"v\"},\"store\":false,\"service_tier\":"
        "\"auto\"}",
        "{\"messages\":[{\"content\":[{\"type\":\"text\",\"text\":\"a "
        "\\\"quoted\\\" \\\\ back\\nslash \\u0001\"},{\"type\":\"image_url\","
        "\"image_url\":{\"url\":\"data:x\",\"detail\":\"low\"}}],\"role\":"
        "\"user\",\"name\":\"n\"}],\"temperature\":0.7,\"top_p\":1e-5,"
        "\"max_tokens\":1234567890123,\"n\":-2.5,\"stop\":[\"}\",\"]\","
        "\",\",\":\"]}",
        "{}",
        "{\"ab\":1,\"a\":2,\"abc\":3,\"b\":{},\"c\":[],\"d\":\"\","
        "\"\\u00e9t\\u00e9\":\"caf\\u00e9 \\u2603\",\"B\":0}",
        "{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"parameters\":{\"type\":\"object\",\"properties\":{\"q\":{"
        "\"type\":\"string\"},\"a\":{\"type\":\"integer\"}},\"required\":"
        "[\"q\"]}}}],\"tool_choice\":\"auto\",\"model\":\"m\",\"messages\":"
        "[]}",
        "{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,"
        "\"k7\":7,\"k8\":8,\"k9\":9,\"ka\":10,\"kb\":11,\"kc\":12,\"kd\":13,"
        "\"ke\":14,\"kf\":15,\"kg\":{\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,"
        "\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,\"ka\":10,"
        "\"kb\":11,\"kc\":12,\"kd\":13,\"ke\":14,\"kf\":15,\"kg\":16}}",
    };
    const char *const models[] = {"m", "gpt-4o", "we\"ird\\name\n",
                                  "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        /* What request_json hands the plugin: cJSON's own print. */
        cJSON *t = cJSON_Parse(requests[i]);
        assert_non_null(t);
        char *printed = cJSON_PrintUnformatted(t);
        cJSON_Delete(t);
        for (size_t j = 0; j < sizeof(models) / sizeof(models[0]); j++) {
            char *want = tree_canonical(printed, models[j]);
            cr_request_t r;
            assert_int_equal(
                cr_request_parse(printed, strlen(printed), models[j], &r), 0);
            assert_string_equal(r.canonical, want);
            assert_int_equal(r.len, strlen(want));
            cr_request_free(&r);
            free(want);
        }
        free(printed);
    }
}

static void
test_text_that_is_not_one_json_object_has_no_canonical_form(void **state)
{
    (void)state;
    const char *const bad[] = {"", "[1]", "\"s\"", "{", "{\"a\":1",
                               "{\"a\":1}}", "{\"a\":1,}", "{\"a\" 1}",
                               "{\"a\":[1,2}", "{\"a\":\"x}", "{\"a\":1} x",
                               "{1:2}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_request_t r;
        assert_int_equal(cr_request_parse(bad[i], strlen(bad[i]), "m", &r),
                         -1);
        assert_null(r.canonical);
    }
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

/* Text that must be escaped, long runs of spaces, tool calls and two
 * choices come back from a replay as they were stored. */
static void
test_replay_keeps_escapes_tool_calls_and_choices(void **state)
{
    const char *done =
        "{\"id\":\"c8\",\"model\":\"m\\\"q\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"a \\\"q\\\" b\\\\"
        "\\nc\\t\\u0001 caf\\u00e9                                         "
        "                                                   end\"},"
        "\"finish_reason\":\"stop\"},{\"index\":1,\"message\":{\"role\":"
        "\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t\","
        "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{\\\"x\\\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}";
    size_t n, len;
    char *sse = cr_sse_from_completion(done, strlen(done), 0, &n);
    assert_non_null(sse);
    cr_asm_t *a = cr_asm_new(1 << 20);
    for (char *s = sse; (s = strstr(s, "data: ")) != NULL;) {
        s += 6;
        char *end = strstr(s, "\n\n");
        if (strncmp(s, "[DONE]", 6) != 0)
            assert_int_equal(cr_asm_event(a, s, (size_t)(end - s)), 0);
        s = end;
    }
    char *back = cr_asm_finish(a, &len);
    assert_non_null(back);
    cJSON *want = cJSON_Parse(done), *got = cJSON_Parse(back);
    assert_non_null(got);
    for (int i = 0; i < 2; i++) {
        cJSON *w = cJSON_GetArrayItem(cJSON_GetObjectItem(want, "choices"), i);
        cJSON *g = cJSON_GetArrayItem(cJSON_GetObjectItem(got, "choices"), i);
        cJSON *wm = cJSON_GetObjectItem(w, "message");
        cJSON *gm = cJSON_GetObjectItem(g, "message");
        if (i == 0)
            assert_string_equal(
                cJSON_GetObjectItem(gm, "content")->valuestring,
                cJSON_GetObjectItem(wm, "content")->valuestring);
        else
            assert_true(cJSON_Compare(cJSON_GetObjectItem(gm, "tool_calls"),
                                      cJSON_GetObjectItem(wm, "tool_calls"),
                                      1));
        assert_string_equal(
            cJSON_GetObjectItem(g, "finish_reason")->valuestring,
            cJSON_GetObjectItem(w, "finish_reason")->valuestring);
    }
    assert_string_equal(cJSON_GetObjectItem(got, "model")->valuestring,
                        "m\"q");
    cJSON_Delete(want);
    cJSON_Delete(got);
    free(back);
    cr_asm_free(a);
    free(sse);
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
        cmocka_unit_test(
            test_the_canonical_form_is_what_a_sorted_cjson_tree_prints),
        cmocka_unit_test(
            test_text_that_is_not_one_json_object_has_no_canonical_form),
        cmocka_unit_test(test_only_finished_completions_are_worth_storing),
        cmocka_unit_test(test_a_stream_assembles_into_a_whole_completion),
        cmocka_unit_test(test_a_cut_or_failed_stream_is_never_assembled),
        cmocka_unit_test(test_replay_is_a_proper_event_stream_that_round_trips),
        cmocka_unit_test(test_replay_keeps_escapes_tool_calls_and_choices),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
