#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "chat_scan.h"

static int
scan(const char *s, sl_chat_facts_t *f)
{
    return sl_chat_scan(s, strlen(s), f);
}

static void
test_chat_request_facts_are_read_in_place(void **state)
{
    const char *b = "{\"model\" : \"gpt-4o\", \"stream\":true,"
                    "\"stream_options\":{\"x\":1,\"include_usage\":true},"
                    "\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                    "{\"content\":[{\"type\":\"text\"}],\"role\":\"user\"}]}";
    sl_chat_facts_t f;
    assert_int_equal(scan(b, &f), 0);
    assert_int_equal(f.model, SL_JSON_STRING);
    assert_int_equal(f.model_len, 6);
    assert_memory_equal(f.model_str, "gpt-4o", 6);
    assert_ptr_equal(f.model_at, strstr(b, "\"gpt-4o\""));
    assert_int_equal(f.model_at_len, 8);
    assert_int_equal(f.messages, SL_JSON_ARRAY);
    assert_int_equal(f.nmessages, 2);
    assert_int_equal(f.bad_message, -1);
    assert_int_equal(f.stream, SL_JSON_TRUE);
    assert_int_equal(f.stream_options, SL_JSON_OBJECT);
    assert_true(f.include_usage);
    assert_int_equal(f.input, SL_JSON_NONE);
    assert_ptr_equal(f.close, b + strlen(b) - 1);
}

static void
test_first_bad_message_and_first_repeated_key_count(void **state)
{
    sl_chat_facts_t f;
    assert_int_equal(scan("{\"messages\":[{\"role\":\"u\"},{\"role\":2},3],"
                          "\"model\":\"a\\u0062\",\"model\":\"c\","
                          "\"messages\":[]}",
                          &f),
                     0);
    assert_int_equal(f.nmessages, 3);
    assert_int_equal(f.bad_message, 1);
    assert_true(f.model_escaped);
    assert_null(f.model_str); /* decoded by cJSON, not here */
    assert_int_equal(f.model_at_len, 9);
}

static void
test_embeddings_input_is_counted(void **state)
{
    sl_chat_facts_t f;
    assert_int_equal(scan("{\"input\":[\"a\",[1,2],{}],\"model\":\"e\"}", &f),
                     0);
    assert_int_equal(f.input, SL_JSON_ARRAY);
    assert_int_equal(f.ninput, 3);
    assert_int_equal(scan("{\"input\":[ ]}", &f), 0);
    assert_int_equal(f.ninput, 0);
}

static void
test_what_cjson_might_read_differently_is_refused(void **state)
{
    static const char *const refused[] = {
        "{\"model\":\"m\"} x",             /* trailing bytes */
        "\xef\xbb\xbf{\"model\":\"m\"}",   /* a BOM */
        "{\"model\":\"\\ud800\"}",         /* a lone surrogate */
        "{\"model\":\"\\udc00\\ud800\"}",  /* pair in the wrong order */
        "{\"mod\\u0065l\":\"m\"}",         /* a key with an escape */
        "{\"model\":\"a\tb\"}",            /* a raw control character */
        "{\"a\":1.}",
        "{\"a\":01}",
        "{\"a\":+1}",
        "{\"a\":-}",
        "{\"a\":.5}",
        "{\"a\":1e}",
        "{\"a\":[1,]}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{\"a\":tru}",
        "{\x0c\"a\":1}", /* form feed: white space to cJSON only */
        "[1]",           /* not an object: the caller says so */
        "",
        "{",
    };
    sl_chat_facts_t f;
    sl_usage_facts_t u;
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
        if (scan(refused[i], &f) != -1 ||
            sl_usage_scan(refused[i], strlen(refused[i]), &u) != -1)
            fail_msg("accepted: %s", refused[i]);
    }
}

static void
test_numbers_longer_than_cjson_reads_and_deep_nesting_are_refused(void **state)
{
    char b[4096];
    sl_chat_facts_t f;
    snprintf(b, sizeof(b), "{\"a\":1%062d}", 0); /* 63 digits: fine */
    assert_int_equal(scan(b, &f), 0);
    snprintf(b, sizeof(b), "{\"a\":1%063d}", 0); /* 64 */
    assert_int_equal(scan(b, &f), -1);
    size_t n = 0;
    n += (size_t)sprintf(b, "{\"a\":");
    for (int i = 0; i < SL_JSON_MAX_DEPTH; i++)
        b[n++] = '[';
    for (int i = 0; i < SL_JSON_MAX_DEPTH; i++)
        b[n++] = ']';
    b[n++] = '}';
    b[n] = '\0';
    assert_int_equal(scan(b, &f), -1);
    /* one level less fits, with the object around it */
    memmove(b + 5, b + 6, n - 6);
    memmove(b + 5 + SL_JSON_MAX_DEPTH - 1, b + 5 + SL_JSON_MAX_DEPTH,
            n - 6 - SL_JSON_MAX_DEPTH);
    b[n - 2] = '\0';
    assert_int_equal(scan(b, &f), 0);
}

static void
test_strict_strings_and_numbers_are_taken(void **state)
{
    sl_chat_facts_t f;
    assert_int_equal(
        scan("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\xc3\xa9\","
             "\"n\":[-0,0.5,1e5,-1.25E-3,1E+2],\"o\":{\"\":{}},"
             "\"l\":[true,false,null]}",
             &f),
        0);
}

static void
test_usage_counters_are_read_with_their_details(void **state)
{
    const char *a = "{\"id\":\"x\",\"choices\":[{\"index\":0}],"
                    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":"
                    "3.9e1,\"total_tokens\":\"51\",\"prompt_tokens\":99,"
                    "\"prompt_tokens_details\":{\"cached_tokens\":2},"
                    "\"completion_tokens_details\":{\"reasoning_tokens\":7}},"
                    "\"usage\":null}";
    sl_usage_facts_t u;
    assert_int_equal(sl_usage_scan(a, strlen(a), &u), 0);
    assert_true(u.usage);
    assert_int_equal(u.prompt, 12); /* the first of a repeated key */
    assert_int_equal(u.completion, 39);
    assert_int_equal(u.total, -1); /* not a number */
    assert_int_equal(u.cached, 2);
    assert_int_equal(u.reasoning, 7);
    assert_int_equal(u.has, SL_USAGE_PROMPT | SL_USAGE_COMPLETION |
                                SL_USAGE_CACHED | SL_USAGE_REASONING);
    assert_false(u.choices_empty);
}

static void
test_usage_only_event_has_empty_choices(void **state)
{
    const char *e = "{\"choices\": [ ],\"usage\":{\"total_tokens\":8}}";
    sl_usage_facts_t u;
    assert_int_equal(sl_usage_scan(e, strlen(e), &u), 0);
    assert_true(u.choices_empty);
    assert_int_equal(u.total, 8);
    e = "{\"choices\":[],\"usage\":null}";
    assert_int_equal(sl_usage_scan(e, strlen(e), &u), 0);
    assert_false(u.usage);
    assert_int_equal(u.has, 0);
}

static void
test_long_of_a_number_matches_a_double_cast(void **state)
{
    sl_jval_t v = {.type = SL_JSON_NUMBER};
    long out;
    v.start = "-123456789012345";
    v.len = strlen(v.start);
    assert_int_equal(sl_json_long(&v, &out), 0);
    assert_int_equal(out, -123456789012345L);
    v.start = "2.99";
    v.len = 4;
    assert_int_equal(sl_json_long(&v, &out), 0);
    assert_int_equal(out, 2);
    v.start = "1e300";
    v.len = 5;
    assert_int_equal(sl_json_long(&v, &out), 0);
    assert_true(out == LONG_MAX);
}

static void
test_long_strings_stop_at_every_offset(void **state)
{
    /* A string of 200 bytes with one special byte at each offset: the
     * 64- and 16-byte steps must stop exactly there. */
    char b[300];
    sl_chat_facts_t f;
    for (int k = 0; k < 200; k++) {
        for (int kind = 0; kind < 3; kind++) {
            memset(b, 0, sizeof(b));
            memcpy(b, "{\"model\":\"", 10);
            memset(b + 10, 'a', 200);
            size_t n = 210;
            if (kind == 0) { /* an escape */
                if (k == 199)
                    continue;
                b[10 + k] = '\\';
                b[11 + k] = 'n';
            } else if (kind == 1) { /* a raw control character */
                b[10 + k] = '\x1f';
            } else { /* the string ends early */
                n = 10 + (size_t)k;
            }
            memcpy(b + n, "\"}", 2);
            int rc = sl_chat_scan(b, n + 2, &f);
            if (kind == 1) {
                assert_int_equal(rc, -1);
                continue;
            }
            assert_int_equal(rc, 0);
            if (kind == 2) {
                assert_false(f.model_escaped);
                assert_int_equal(f.model_len, k);
                continue;
            }
            assert_true(f.model_escaped);
            assert_int_equal(f.model_at_len, 202);
        }
    }
    /* and without a stop, a long plain string is read whole */
    memcpy(b, "{\"model\":\"", 10);
    memset(b + 10, 'b', 250);
    memcpy(b + 260, "\"}", 2);
    assert_int_equal(sl_chat_scan(b, 262, &f), 0);
    assert_int_equal(f.model_len, 250);
}

static void
test_find_matches_memmem(void **state)
{
    static const char *const needles[] = {"\"usage\"", "\"content\"",
                                          "ab", "\"\"", "aab"};
    unsigned seed = 7;
    char hay[100];
    for (int round = 0; round < 20000; round++) {
        size_t len = (seed = seed * 1103515245u + 12345u) % sizeof(hay);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            hay[i] = "\"usagecontb"[(seed >> 16) % 11];
        }
        const char *n = needles[(seed >> 8) % 5];
        size_t nl = strlen(n);
        if ((seed >> 4) % 3 == 0 && len > nl) /* plant one */
            memcpy(hay + (seed >> 12) % (len - nl + 1), n, nl);
        assert_ptr_equal(sl_json_find(hay, len, n, nl),
                         memmem(hay, len, n, nl));
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_request_facts_are_read_in_place),
        cmocka_unit_test(test_first_bad_message_and_first_repeated_key_count),
        cmocka_unit_test(test_embeddings_input_is_counted),
        cmocka_unit_test(test_what_cjson_might_read_differently_is_refused),
        cmocka_unit_test(
            test_numbers_longer_than_cjson_reads_and_deep_nesting_are_refused),
        cmocka_unit_test(test_strict_strings_and_numbers_are_taken),
        cmocka_unit_test(test_usage_counters_are_read_with_their_details),
        cmocka_unit_test(test_usage_only_event_has_empty_choices),
        cmocka_unit_test(test_long_of_a_number_matches_a_double_cast),
        cmocka_unit_test(test_find_matches_memmem),
        cmocka_unit_test(test_long_strings_stop_at_every_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
