/* The one error builder, the status -> type mapping, and the strictness
 * applied to upstream response heads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <string.h>

#include "error.h"
#include "upstream.h"

static void
test_error_json_is_openai_shaped_and_escaped(void **state)
{
    char buf[512];
    size_t n = sl_error_json(buf, sizeof(buf), "bad \"thing\"\n\x01",
                             "invalid_request_error", "bad_request");
    assert_true(n < sizeof(buf));
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    cJSON *e = cJSON_GetObjectItem(j, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "message")->valuestring,
                        "bad \"thing\"\n\x01");
    assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring,
                        "invalid_request_error");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring,
                        "bad_request");
    cJSON_Delete(j);
}

static void
test_error_json_null_code(void **state)
{
    char buf[256];
    sl_error_json(buf, sizeof(buf), "m", "server_error", NULL);
    assert_string_equal(
        buf, "{\"error\":{\"message\":\"m\",\"type\":\"server_error\","
             "\"code\":null}}");
}

static void
test_error_json_reports_needed_size_when_truncated(void **state)
{
    char small[16];
    size_t n = sl_error_json(small, sizeof(small), "a long message here",
                             "server_error", "x");
    assert_true(n >= sizeof(small));
    assert_int_equal(strlen(small), sizeof(small) - 1);
    char big[256];
    assert_int_equal(sl_error_json(big, sizeof(big), "a long message here",
                                   "server_error", "x"),
                     n);
}

static void
test_status_maps_to_openai_error_types(void **state)
{
    assert_string_equal(sl_error_type_for_status(400),
                        "invalid_request_error");
    assert_string_equal(sl_error_type_for_status(404),
                        "invalid_request_error");
    assert_string_equal(sl_error_type_for_status(401), "authentication_error");
    assert_string_equal(sl_error_type_for_status(403), "permission_error");
    assert_string_equal(sl_error_type_for_status(429), "rate_limit_error");
    assert_string_equal(sl_error_type_for_status(502), "upstream_error");
    assert_string_equal(sl_error_type_for_status(504), "upstream_error");
    assert_string_equal(sl_error_type_for_status(500), "server_error");
}

static int
check_lines(const char *const *lines, size_t n, const char **why)
{
    sl_resp_check_t st = {0};
    for (size_t i = 0; i < n; i++) {
        int rc = sl_upstream_check_header(&st, lines[i], strlen(lines[i]),
                                          why);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static void
test_upstream_head_accepts_ordinary_headers(void **state)
{
    const char *why = NULL;
    const char *ok[] = {"Content-Type: application/json\r\n",
                        "Content-Length: 12\r\n", "X-Odd:\tv \r\n", "\r\n"};
    assert_int_equal(check_lines(ok, 4, &why), 0);
    const char *chunked[] = {"Transfer-Encoding: Chunked\r\n", "\r\n"};
    assert_int_equal(check_lines(chunked, 2, &why), 0);
}

static void
test_upstream_head_rejects_smuggling_shapes(void **state)
{
    const char *why = NULL;
    const char *cl_te[] = {"Content-Length: 5\r\n",
                           "Transfer-Encoding: chunked\r\n", "\r\n"};
    assert_int_not_equal(check_lines(cl_te, 3, &why), 0);
    const char *dup_cl[] = {"Content-Length: 5\r\n", "Content-Length: 6\r\n"};
    assert_int_not_equal(check_lines(dup_cl, 2, &why), 0);
    const char *list_cl[] = {"Content-Length: 5, 5\r\n"};
    assert_int_not_equal(check_lines(list_cl, 1, &why), 0);
    const char *sign_cl[] = {"Content-Length: +5\r\n"};
    assert_int_not_equal(check_lines(sign_cl, 1, &why), 0);
    const char *gzip[] = {"Transfer-Encoding: gzip, chunked\r\n"};
    assert_int_not_equal(check_lines(gzip, 1, &why), 0);
    const char *fold[] = {"X-A: 1\r\n", " continued\r\n"};
    assert_int_not_equal(check_lines(fold, 2, &why), 0);
    const char *bare_lf[] = {"X-A: 1\n"};
    assert_int_not_equal(check_lines(bare_lf, 1, &why), 0);
    const char *space_name[] = {"Content-Length : 5\r\n"};
    assert_int_not_equal(check_lines(space_name, 1, &why), 0);
    const char *ctl[] = {"X-A: a\x01" "b\r\n"};
    assert_int_not_equal(check_lines(ctl, 1, &why), 0);
    assert_non_null(why);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_json_is_openai_shaped_and_escaped),
        cmocka_unit_test(test_error_json_null_code),
        cmocka_unit_test(test_error_json_reports_needed_size_when_truncated),
        cmocka_unit_test(test_status_maps_to_openai_error_types),
        cmocka_unit_test(test_upstream_head_accepts_ordinary_headers),
        cmocka_unit_test(test_upstream_head_rejects_smuggling_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
