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

/* The escaper as it was, byte by byte: the fast one must match it for
 * every input and every buffer size, truncation included. */
static size_t
escape_ref(char *buf, size_t cap, size_t used, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = used;
#define PUT(c)                                                                 \
    do {                                                                       \
        if (n + 1 < cap)                                                       \
            buf[n] = (c);                                                      \
        n++;                                                                   \
    } while (0)
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            PUT('\\');
            PUT(c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        } else if (c < 0x20 || c == 0x7f) {
            PUT('\\');
            PUT('u');
            PUT('0');
            PUT('0');
            PUT(hex[c >> 4]);
            PUT(hex[c & 15]);
        } else {
            PUT((char)c);
        }
    }
#undef PUT
    if (cap > 0)
        buf[n < cap ? n : cap - 1] = '\0';
    return n;
}

static void
test_json_escape_matches_the_byte_by_byte_reference(void **state)
{
    static const char alphabet[] = "ab\"\\\n\r\t\x01\x1f\x7f\xc3\xa9 /";
    unsigned seed = 12345;
    char in[80], a[200], b[200];
    for (int round = 0; round < 20000; round++) {
        size_t len = (seed = seed * 1103515245u + 12345u) % sizeof(in);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            /* long plain runs too, for the 16-byte steps */
            in[i] = (seed >> 16) % 4 ? 'x'
                                     : alphabet[(seed >> 8) %
                                                (sizeof(alphabet) - 1)];
        }
        size_t cap = (seed >> 4) % 200, used = (seed >> 12) % 4;
        memset(a, '#', sizeof(a));
        memset(b, '#', sizeof(b));
        size_t na = sl_json_escape(a, cap, used, in, len);
        size_t nb = escape_ref(b, cap, used, in, len);
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(a));
    }
    assert_int_equal(sl_json_escape(NULL, 0, 0, "a\"b", 3), 4);
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
        cmocka_unit_test(test_json_escape_matches_the_byte_by_byte_reference),
        cmocka_unit_test(test_upstream_head_accepts_ordinary_headers),
        cmocka_unit_test(test_upstream_head_rejects_smuggling_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
