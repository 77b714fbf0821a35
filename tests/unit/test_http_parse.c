/* Tests for core/http_parse.c: what the gateway accepts and refuses at the
 * framing layer, byte for byte, and that the chunked decoder gives the same
 * result wherever its input is split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "http_parse.h"

#define MAX_HEAD 8192

/* A printable form of s for failure messages. */
static const char *
show(const char *s, size_t len)
{
    static char buf[512];
    size_t o = 0;
    for (size_t i = 0; i < len && o + 5 < sizeof(buf); i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\\x%02x", c);
    }
    buf[o] = '\0';
    return buf;
}

static int
parse_n(const char *s, size_t len, size_t max_head, sl_http_request_t *req,
        int *status, const char **why)
{
    return sl_http_parse_request(s, len, max_head, req, status, why);
}

/* Parses a complete request that must be accepted; returns its head. */
static sl_http_request_t *
accept_req_n(const char *s, size_t len)
{
    static sl_http_request_t req;
    int status = -1;
    const char *why = "unset";
    int rc = parse_n(s, len, MAX_HEAD, &req, &status, &why);
    if (rc != (int)len)
        fail_msg("expected %zu for \"%s\", got %d (%d %s)", len, show(s, len),
                 rc, status, why ? why : "");
    assert_int_equal(status, 0);
    assert_null(why);
    return &req;
}

static sl_http_request_t *
accept_req(const char *s)
{
    return accept_req_n(s, strlen(s));
}

static void
reject_n(const char *s, size_t len, int want_status)
{
    sl_http_request_t req;
    int status = 0;
    const char *why = NULL;
    int rc = parse_n(s, len, MAX_HEAD, &req, &status, &why);
    if (rc >= 0 || rc == SL_EAGAIN || status != want_status || why == NULL ||
        why[0] == '\0')
        fail_msg("expected %d for \"%s\", got rc %d status %d (%s)",
                 want_status, show(s, len), rc, status, why ? why : "null");
    assert_int_equal(rc, want_status == 431 ? SL_ETOOBIG : SL_EINVAL);
}

static void
reject(const char *s, int want_status)
{
    reject_n(s, strlen(s), want_status);
}

/* Like reject(), and the reason names what was wrong. */
static void
reject_why(const char *s, int want_status, const char *why_part)
{
    sl_http_request_t req;
    int status = 0;
    const char *why = NULL;
    reject(s, want_status);
    parse_n(s, strlen(s), MAX_HEAD, &req, &status, &why);
    if (strstr(why, why_part) == NULL)
        fail_msg("\"%s\": reason \"%s\" lacks \"%s\"", show(s, strlen(s)), why,
                 why_part);
}

/* A request with the given field lines (each ending in CRLF) and Host. */
static const char *
with_fields(const char *fields)
{
    static char buf[MAX_HEAD];
    snprintf(buf, sizeof(buf), "POST /v1/chat HTTP/1.1\r\nHost: a\r\n%s\r\n",
             fields);
    return buf;
}

/* ---- request line ---- */

static void
test_parses_simple_get(void **state)
{
    (void)state;
    const char *s = "GET /v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n";
    sl_http_request_t *r = accept_req(s);
    assert_int_equal(r->method, SL_METHOD_GET);
    assert_int_equal(r->method_len, 3);
    assert_ptr_equal(r->method_str, s);
    assert_int_equal(r->target_len, strlen("/v1/models"));
    assert_memory_equal(r->target, "/v1/models", r->target_len);
    assert_int_equal(r->path_len, r->target_len);
    assert_int_equal(r->version_minor, 1);
    assert_int_equal(r->nheaders, 1);
    assert_int_equal(r->headers[0].name_len, 4);
    assert_memory_equal(r->headers[0].name, "Host", 4);
    assert_int_equal(r->headers[0].value_len, strlen("example.com"));
    assert_memory_equal(r->headers[0].value, "example.com", 11);
    assert_int_equal(r->content_length, -1);
    assert_int_equal(r->chunked, 0);
    assert_int_equal(r->keep_alive, 1);
    assert_int_equal(r->expect_continue, 0);
}

static void
test_splits_path_from_query(void **state)
{
    (void)state;
    sl_http_request_t *r =
        accept_req("GET /search?q=a%20b&x=?y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(r->target_len, strlen("/search?q=a%20b&x=?y"));
    assert_int_equal(r->path_len, strlen("/search"));
    assert_memory_equal(r->path, "/search", r->path_len);
}

static void
test_fills_method_enum_for_common_methods(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        sl_method_t m;
    } cases[] = {
        {"GET", SL_METHOD_GET},        {"HEAD", SL_METHOD_HEAD},
        {"POST", SL_METHOD_POST},      {"PUT", SL_METHOD_PUT},
        {"DELETE", SL_METHOD_DELETE},  {"OPTIONS", SL_METHOD_OPTIONS},
        {"PATCH", SL_METHOD_PATCH},    {"BREW", SL_METHOD_OTHER},
        {"get", SL_METHOD_OTHER},      {"GETS", SL_METHOD_OTHER},
        {"M-SEARCH", SL_METHOD_OTHER},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "%s / HTTP/1.1\r\nHost: h\r\n\r\n",
                 cases[i].name);
        sl_http_request_t *r = accept_req(buf);
        assert_int_equal(r->method, cases[i].m);
        assert_int_equal(r->method_len, strlen(cases[i].name));
    }
}

static void
test_rejects_method_that_is_not_a_token(void **state)
{
    (void)state;
    reject("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GE\"T / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject(" / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("\tGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject_n("G\0T / HTTP/1.1\r\nHost: h\r\n\r\n", 26, 400);
}

static void
test_rejects_request_line_with_extra_spaces(void **state)
{
    (void)state;
    reject("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400);
    reject("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET /\tHTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET / extra HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void
test_rejects_target_that_is_not_origin_form(void **state)
{
    (void)state;
    reject("GET http://evil/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET v1/models HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET ?x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void
test_accepts_asterisk_target_only_for_options(void **state)
{
    (void)state;
    sl_http_request_t *r = accept_req("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(r->method, SL_METHOD_OPTIONS);
    assert_int_equal(r->target_len, 1);
    assert_int_equal(r->target[0], '*');
    reject("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("OPTIONS */ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("POST * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    accept_req("OPTIONS /v1 HTTP/1.1\r\nHost: h\r\n\r\n");
}

static void
test_rejects_control_bytes_and_non_ascii_in_target(void **state)
{
    (void)state;
    static const char bad[] = {0x00, 0x01, 0x08,       0x09,       0x0b,
                               0x1f, 0x7f, (char)0x80, (char)0xc3, (char)0xff};
    for (size_t i = 0; i < sizeof(bad); i++) {
        char buf[64];
        int n =
            snprintf(buf, sizeof(buf), "GET /a_b HTTP/1.1\r\nHost: h\r\n\r\n");
        buf[6] = bad[i];
        reject_n(buf, (size_t)n, 400);
    }
    reject("GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    /* at every offset of a long target, so the word-at-a-time scan sees it */
    for (size_t i = 0; i < sizeof(bad); i++)
        for (size_t at = 5; at < 5 + 40; at++) {
            char buf[128];
            int n = snprintf(buf, sizeof(buf),
                             "GET /%s HTTP/1.1\r\nHost: h\r\n\r\n",
                             "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
            buf[at] = bad[i];
            reject_n(buf, (size_t)n, 400);
        }
}

static void
test_accepts_every_visible_ascii_byte_in_target(void **state)
{
    (void)state;
    char buf[256];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "GET /");
    for (int c = 0x21; c < 0x7f; c++)
        buf[o++] = (char)c;
    o += (size_t)snprintf(buf + o, sizeof(buf) - o,
                          " HTTP/1.1\r\nHost: h\r\n\r\n");
    sl_http_request_t *r = accept_req_n(buf, o);
    assert_int_equal(r->target_len, 1 + 0x7f - 0x21);
}

static void
test_answers_505_for_other_http_versions(void **state)
{
    (void)state;
    reject("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
    reject("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505);
    reject("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
    reject("GET / HTTP/3.1\r\nHost: h\r\n\r\n", 505);
}

static void
test_rejects_malformed_http_version(void **state)
{
    (void)state;
    reject("GET / http/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/11.1\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1,1\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTPS/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET /\r\nHost: h\r\n\r\n", 400);
    reject("GET / \r\nHost: h\r\n\r\n", 400);
    reject("GET\r\n\r\n", 400);
}

static void
test_accepts_http_1_0_without_host(void **state)
{
    (void)state;
    sl_http_request_t *r = accept_req("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(r->version_minor, 0);
    assert_int_equal(r->nheaders, 0);
}

/* ---- line endings ---- */

static void
test_rejects_bare_lf_line_endings(void **state)
{
    (void)state;
    reject_why("GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "bare LF");
    reject_why("GET / HTTP/1.1\r\nHost: h\n\r\n", 400, "bare LF");
    reject("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\nX: y\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\nX\n: y\r\n\r\n", 400);
    reject("GET /\n HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET\n/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1.1\n\n", 400);
}

static void
test_rejects_bare_lf_even_when_head_is_incomplete(void **state)
{
    (void)state;
    reject("GET / HTTP/1.1\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\n", 400);
    reject_why("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\nX-B", 400, "bare LF");
    reject("\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
}

static void
test_rejects_bare_cr(void **state)
{
    (void)state;
    reject("GET / HTTP/1.1\rHost: h\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\n\rX", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", 400);
    reject("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

/* ---- field lines ---- */

static void
test_rejects_obs_fold(void **state)
{
    (void)state;
    reject_why(with_fields("X-A: 1\r\n continued\r\n"), 400, "folding");
    reject_why(with_fields("X-A: 1\r\n\tcontinued\r\n"), 400, "folding");
    reject("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);
    /* and as soon as the folded line starts */
    reject("GET / HTTP/1.1\r\nHost: h\r\n ", 400);
}

static void
test_rejects_whitespace_between_header_name_and_colon(void **state)
{
    (void)state;
    reject_why(with_fields("Content-Length : 5\r\n"), 400, "before colon");
    reject(with_fields("Content-Length\t: 5\r\n"), 400);
    reject(with_fields("X-A : b\r\n"), 400);
    reject("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
}

static void
test_rejects_header_name_that_is_not_a_token(void **state)
{
    (void)state;
    reject(with_fields(": empty-name\r\n"), 400);
    reject(with_fields("X(A): b\r\n"), 400);
    reject(with_fields("X\"A: b\r\n"), 400);
    reject(with_fields("X/A: b\r\n"), 400);
    reject(with_fields("X-\x80: b\r\n"), 400);
    reject_n("GET / HTTP/1.1\r\nHost: h\r\nX\0A: b\r\n\r\n", 34, 400);
    reject(with_fields("no-colon-here\r\n"), 400);
}

static void
test_accepts_token_header_names(void **state)
{
    (void)state;
    sl_http_request_t *r =
        accept_req(with_fields("!#$%&'*+-.^_`|~09azAZ: v\r\n"));
    assert_int_equal(r->nheaders, 2);
    assert_int_equal(r->headers[1].name_len, strlen("!#$%&'*+-.^_`|~09azAZ"));
}

static void
test_trims_ows_around_header_values(void **state)
{
    (void)state;
    sl_http_request_t *r = accept_req(
        with_fields("X-A: \t  a b\tc \t \r\nX-B:v\r\nX-C:   \r\nX-D:\r\n"));
    assert_int_equal(r->nheaders, 5);
    assert_int_equal(r->headers[1].value_len, strlen("a b\tc"));
    assert_memory_equal(r->headers[1].value, "a b\tc", 5);
    assert_int_equal(r->headers[2].value_len, 1);
    assert_memory_equal(r->headers[2].value, "v", 1);
    assert_int_equal(r->headers[3].value_len, 0);
    assert_int_equal(r->headers[4].value_len, 0);
}

static void
test_rejects_control_bytes_in_header_values(void **state)
{
    (void)state;
    for (int c = 0; c < 0x80; c++) {
        if (!(c < 0x20 || c == 0x7f) || c == '\t')
            continue;
        char buf[128];
        int n = snprintf(buf, sizeof(buf),
                         "GET / HTTP/1.1\r\nHost: h\r\nX-A: a_b\r\n\r\n");
        buf[31] = (char)c; /* the '_' */
        assert_int_equal(buf[30], 'a');
        reject_n(buf, (size_t)n, 400);
    }
}

static void
test_accepts_obs_text_and_htab_in_header_values(void **state)
{
    (void)state;
    sl_http_request_t *r =
        accept_req(with_fields("X-A: caf\xc3\xa9\t\x80\xff!\r\n"));
    assert_int_equal(r->headers[1].value_len, 9);
}

static void
test_accepts_long_printable_header_value(void **state)
{
    (void)state;
    /* long enough to cross the word-at-a-time scan with a tab and obs-text in
     * odd places */
    char field[1200];
    size_t o = (size_t)snprintf(field, sizeof(field), "X-Long: ");
    for (int i = 0; i < 1000; i++)
        field[o++] = i % 97 == 13  ? '\t'
                     : i % 89 == 7 ? '\xe9'
                                   : (char)(0x21 + i % 94);
    field[o++] = 'z';
    memcpy(field + o, "\r\n", 3);
    sl_http_request_t *r = accept_req(with_fields(field));
    assert_int_equal(r->headers[1].value_len, 1001);
    field[8 + 900] = '\x7f';
    reject(with_fields(field), 400);
    field[8 + 900] = '\x1b';
    reject(with_fields(field), 400);
}

/* ---- Content-Length ---- */

static void
test_parses_content_length(void **state)
{
    (void)state;
    assert_int_equal(
        accept_req(with_fields("Content-Length: 42\r\n"))->content_length, 42);
    assert_int_equal(
        accept_req(with_fields("content-length:0\r\n"))->content_length, 0);
    assert_int_equal(
        accept_req(with_fields("CONTENT-LENGTH:  7 \t\r\n"))->content_length,
        7);
    assert_int_equal(
        accept_req(with_fields("Content-Length: 0005\r\n"))->content_length, 5);
}

static void
test_accepts_content_length_up_to_int64_max(void **state)
{
    (void)state;
    sl_http_request_t *r =
        accept_req(with_fields("Content-Length: 9223372036854775807\r\n"));
    assert_true(r->content_length == INT64_MAX);
    r = accept_req(with_fields(
        "Content-Length: 000000000000000000000000009223372036854775807\r\n"));
    assert_true(r->content_length == INT64_MAX);
}

static void
test_rejects_content_length_overflow(void **state)
{
    (void)state;
    reject(with_fields("Content-Length: 9223372036854775808\r\n"), 400);
    reject(with_fields("Content-Length: 18446744073709551616\r\n"), 400);
    reject(with_fields("Content-Length: 99999999999999999999999999999\r\n"),
           400);
    char field[2100];
    size_t o = (size_t)snprintf(field, sizeof(field), "Content-Length: ");
    for (int i = 0; i < 2000; i++)
        field[o++] = '9';
    memcpy(field + o, "\r\n", 3);
    reject(with_fields(field), 400);
}

static void
test_rejects_content_length_that_is_not_digits(void **state)
{
    (void)state;
    reject(with_fields("Content-Length: +5\r\n"), 400);
    reject(with_fields("Content-Length: -5\r\n"), 400);
    reject(with_fields("Content-Length: 5 5\r\n"), 400);
    reject(with_fields("Content-Length: 0x5\r\n"), 400);
    reject(with_fields("Content-Length: 5a\r\n"), 400);
    reject(with_fields("Content-Length: 5.0\r\n"), 400);
    reject(with_fields("Content-Length: \"5\"\r\n"), 400);
    reject(with_fields("Content-Length: \xd9\xa5\r\n"), 400);
}

static void
test_rejects_empty_content_length(void **state)
{
    (void)state;
    reject(with_fields("Content-Length:\r\n"), 400);
    reject(with_fields("Content-Length:   \r\n"), 400);
}

static void
test_rejects_content_length_list(void **state)
{
    (void)state;
    reject(with_fields("Content-Length: 5, 5\r\n"), 400);
    reject(with_fields("Content-Length: 5,5\r\n"), 400);
    reject(with_fields("Content-Length: 5,\r\n"), 400);
    reject(with_fields("Content-Length: 5, 6\r\n"), 400);
}

static void
test_rejects_duplicate_content_length_even_when_equal(void **state)
{
    (void)state;
    reject(with_fields("Content-Length: 5\r\nContent-Length: 5\r\n"), 400);
    reject(with_fields("Content-Length: 5\r\ncontent-length: 6\r\n"), 400);
    reject(with_fields("Content-Length: 0\r\nX: y\r\nContent-Length: 0\r\n"),
           400);
}

/* ---- Transfer-Encoding ---- */

static void
test_parses_chunked_transfer_encoding_case_insensitively(void **state)
{
    (void)state;
    const char *v[] = {"chunked", "Chunked", "CHUNKED", "  chunked\t "};
    for (size_t i = 0; i < 4; i++) {
        char f[64];
        snprintf(f, sizeof(f), "Transfer-Encoding:%s\r\n", v[i]);
        sl_http_request_t *r = accept_req(with_fields(f));
        assert_int_equal(r->chunked, 1);
        assert_int_equal(r->content_length, -1);
    }
    sl_http_request_t *r =
        accept_req(with_fields("transfer-encoding: chunked\r\n"));
    assert_int_equal(r->chunked, 1);
}

static void
test_rejects_both_transfer_encoding_and_content_length(void **state)
{
    (void)state;
    reject(with_fields("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
           400);
    reject(with_fields("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
           400);
    reject(with_fields("Content-Length: 0\r\nTransfer-Encoding: gzip\r\n"),
           400);
}

static void
test_answers_501_for_unknown_transfer_coding(void **state)
{
    (void)state;
    reject(with_fields("Transfer-Encoding: gzip\r\n"), 501);
    reject(with_fields("Transfer-Encoding: identity\r\n"), 501);
    reject(with_fields("Transfer-Encoding: chunkedx\r\n"), 501);
    reject(with_fields("Transfer-Encoding: xchunked\r\n"), 501);
}

static void
test_rejects_transfer_encoding_lists(void **state)
{
    (void)state;
    reject_why(with_fields("Transfer-Encoding: chunked, chunked\r\n"), 400,
               "chunked alone");
    reject_why(with_fields("Transfer-Encoding: gzip, chunked\r\n"), 400,
               "chunked alone");
    reject(with_fields("Transfer-Encoding: chunked,\r\n"), 400);
    reject(with_fields("Transfer-Encoding: ,chunked\r\n"), 400);
}

static void
test_rejects_malformed_or_empty_transfer_encoding(void **state)
{
    (void)state;
    reject(with_fields("Transfer-Encoding:\r\n"), 400);
    reject(with_fields("Transfer-Encoding:  \t\r\n"), 400);
    reject(with_fields("Transfer-Encoding: chunked;q=1\r\n"), 400);
    reject(with_fields("Transfer-Encoding: \"chunked\"\r\n"), 400);
    reject(with_fields("Transfer-Encoding: chun ked\r\n"), 400);
    reject(with_fields("Transfer-Encoding: chunked\xff\r\n"), 400);
}

static void
test_rejects_duplicate_transfer_encoding(void **state)
{
    (void)state;
    reject(with_fields("Transfer-Encoding: chunked\r\n"
                       "Transfer-Encoding: chunked\r\n"),
           400);
    reject(with_fields("Transfer-Encoding: gzip\r\n"
                       "Transfer-Encoding: chunked\r\n"),
           501);
    reject(with_fields("Transfer-Encoding: chunked\r\n"
                       "transfer-encoding: gzip\r\n"),
           400);
}

static void
test_rejects_transfer_encoding_in_http_1_0(void **state)
{
    (void)state;
    reject("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    reject("POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
           400);
}

/* ---- Host ---- */

static void
test_rejects_http_1_1_without_host(void **state)
{
    (void)state;
    reject("GET / HTTP/1.1\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nX-Host: h\r\n\r\n", 400);
}

static void
test_rejects_more_than_one_host(void **state)
{
    (void)state;
    reject("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400);
    reject("GET / HTTP/1.0\r\nHost: a\r\nHOST: b\r\n\r\n", 400);
}

static void
test_validates_host_value(void **state)
{
    (void)state;
    accept_req("GET / HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n");
    accept_req("GET / HTTP/1.1\r\nHost: [::1]:443\r\n\r\n");
    accept_req("GET / HTTP/1.1\r\nHost:\r\n\r\n");
    reject("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400);
    reject("GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n", 400);
}

/* ---- limits ---- */

static void
test_answers_431_when_head_exceeds_max_head(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nX-A: 0123456789\r\n\r\n";
    size_t len = strlen(s);
    sl_http_request_t req;
    int status;
    const char *why;

    assert_int_equal(parse_n(s, len, len, &req, &status, &why), (int)len);
    assert_int_equal(parse_n(s, len, len - 1, &req, &status, &why), SL_ETOOBIG);
    assert_int_equal(status, 431);
    assert_non_null(why);
    /* incomplete, but already at the limit */
    assert_int_equal(parse_n(s, 20, 20, &req, &status, &why), SL_ETOOBIG);
    assert_int_equal(status, 431);
    assert_int_equal(parse_n(s, 20, 21, &req, &status, &why), SL_EAGAIN);
    /* more bytes than the limit, head not done within it */
    assert_int_equal(parse_n(s, len, 30, &req, &status, &why), SL_ETOOBIG);
    assert_int_equal(status, 431);
}

static void
test_completes_head_within_max_head_when_more_bytes_follow(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\n\r\nbody bytes after";
    size_t head = strlen("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    sl_http_request_t req;
    int status;
    const char *why;
    assert_int_equal(parse_n(s, strlen(s), head, &req, &status, &why),
                     (int)head);
}

static void
test_answers_431_for_more_than_max_headers(void **state)
{
    (void)state;
    char buf[MAX_HEAD];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "Host: h\r\n");
    for (int i = 1; i < SL_HTTP_MAX_HEADERS; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "X-%d: v\r\n", i);
    size_t fields_end = o;
    o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\r\n");
    sl_http_request_t *r = accept_req_n(buf, o);
    assert_int_equal(r->nheaders, SL_HTTP_MAX_HEADERS);

    o = fields_end + (size_t)snprintf(buf + fields_end,
                                      sizeof(buf) - fields_end,
                                      "X-Extra: v\r\n\r\n");
    reject_n(buf, o, 431);
    /* as soon as the extra field starts */
    reject_n(buf, fields_end + 1, 431);
}

/* ---- connection handling ---- */

static int
keep_alive_of(const char *s)
{
    return accept_req(s)->keep_alive;
}

static void
test_keeps_http_1_1_alive_unless_connection_close(void **state)
{
    (void)state;
    assert_true(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert_false(keep_alive_of(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"));
    assert_false(keep_alive_of(
        "GET / HTTP/1.1\r\nHost: h\r\nconnection: CLOSE\r\n\r\n"));
    assert_false(
        keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\n"
                      "Connection: keep-alive, Upgrade ,close \r\n\r\n"));
    assert_false(keep_alive_of("GET / HTTP/1.1\r\nHost: h\r\n"
                               "Connection: te\r\nConnection: close\r\n\r\n"));
    assert_true(keep_alive_of(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"));
    assert_true(keep_alive_of(
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"));
    assert_true(keep_alive_of(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Connection: close\r\n\r\n"));
}

static void
test_closes_http_1_0_unless_connection_keep_alive(void **state)
{
    (void)state;
    assert_false(keep_alive_of("GET / HTTP/1.0\r\n\r\n"));
    assert_true(
        keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert_true(
        keep_alive_of("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    assert_true(
        keep_alive_of("GET / HTTP/1.0\r\nConnection: foo,keep-alive\r\n\r\n"));
    assert_false(keep_alive_of(
        "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    assert_false(
        keep_alive_of("GET / HTTP/1.0\r\nConnection: keep-alives\r\n\r\n"));
}

static void
test_sets_expect_continue_for_100_continue(void **state)
{
    (void)state;
    assert_true(
        accept_req(with_fields("Expect: 100-continue\r\n"))->expect_continue);
    assert_true(
        accept_req(with_fields("expect:  100-Continue \r\n"))->expect_continue);
    assert_false(
        accept_req(with_fields("Expect: 100-continued\r\n"))->expect_continue);
    assert_false(
        accept_req(with_fields("X-Expect: 100-continue\r\n"))->expect_continue);
    /* RFC 9110 10.1.1: ignored in an HTTP/1.0 request */
    assert_false(accept_req("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
                     ->expect_continue);
}

/* ---- leading empty lines, prefixes, pipelining ---- */

static void
test_skips_leading_crlfs_and_counts_them(void **state)
{
    (void)state;
    const char *s = "\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n";
    sl_http_request_t *r = accept_req(s);
    assert_ptr_equal(r->method_str, s + 4);
    assert_int_equal(r->method, SL_METHOD_GET);

    sl_http_request_t req;
    int status;
    const char *why;
    assert_int_equal(parse_n("\r\n\r\n", 4, MAX_HEAD, &req, &status, &why),
                     SL_EAGAIN);
    assert_int_equal(parse_n("\r\n\r", 3, MAX_HEAD, &req, &status, &why),
                     SL_EAGAIN);
    /* they count against the head limit */
    assert_int_equal(parse_n("\r\n\r\n\r\n", 6, 6, &req, &status, &why),
                     SL_ETOOBIG);
    reject("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void
test_needs_more_input_for_every_prefix_of_a_valid_request(void **state)
{
    (void)state;
    static const char *reqs[] = {
        "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        "\r\nPOST /v1/chat/completions?stream=true HTTP/1.1\r\n"
        "Host: api.example.com:8080\r\nContent-Type: application/json\r\n"
        "Content-Length: 123\r\nConnection: keep-alive\r\n"
        "Expect: 100-continue\r\nX-Empty:\r\nX-Tab:\ta\tb\t\r\n\r\n",
        "PUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        "OPTIONS * HTTP/1.0\r\n\r\n",
        "DELETE /a HTTP/1.0\r\nConnection: keep-alive\r\nX: \x80\xff\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
        size_t len = strlen(reqs[k]);
        for (size_t n = 0; n < len; n++) {
            sl_http_request_t req;
            int status = -1;
            const char *why = "unset";
            int rc = parse_n(reqs[k], n, MAX_HEAD, &req, &status, &why);
            if (rc != SL_EAGAIN)
                fail_msg("prefix %zu of \"%s\": %d (%s)", n, show(reqs[k], len),
                         rc, why ? why : "");
            assert_int_equal(status, 0);
            assert_null(why);
        }
        accept_req(reqs[k]);
    }
}

static void
test_reports_invalid_prefix_before_head_is_complete(void **state)
{
    (void)state;
    reject("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
           "Content-Length: 5\r\n",
           400);
    reject("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
           "Transfer-Encoding: chunked\r\nX-More",
           400);
    reject("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01", 400);
    reject("GET / HTTP/1.1\r\nHost: h\r\nX-A : ", 400);
    reject("GET / HTTP/9.9", 505);
    reject("GET x", 400);
    reject("G@", 400);
}

static void
test_parses_pipelined_requests_one_at_a_time(void **state)
{
    (void)state;
    const char *buf = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"
                      "abc"
                      "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
                      "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    size_t len = strlen(buf), off = 0;
    sl_http_request_t req;
    int status;
    const char *why;

    int n = parse_n(buf, len, MAX_HEAD, &req, &status, &why);
    assert_true(n > 0);
    assert_int_equal(req.method, SL_METHOD_POST);
    assert_memory_equal(req.target, "/a", 2);
    assert_int_equal(req.content_length, 3);
    assert_memory_equal(buf + n, "abc", 3);
    off = (size_t)n + 3;

    n = parse_n(buf + off, len - off, MAX_HEAD, &req, &status, &why);
    assert_true(n > 0);
    assert_int_equal(req.method, SL_METHOD_GET);
    assert_memory_equal(req.target, "/b", 2);
    assert_int_equal(req.keep_alive, 1);
    off += (size_t)n;

    n = parse_n(buf + off, len - off, MAX_HEAD, &req, &status, &why);
    assert_int_equal((size_t)n, len - off);
    assert_memory_equal(req.target, "/c", 2);
    assert_int_equal(req.keep_alive, 0);
}

static void
test_header_lookup_is_case_insensitive(void **state)
{
    (void)state;
    sl_http_request_t *r = accept_req(
        with_fields("Content-Type: application/json\r\nX-Api-KEY: k1\r\n"));
    const sl_http_header_t *h = sl_http_header_find(r, "content-type");
    assert_non_null(h);
    assert_memory_equal(h->value, "application/json", h->value_len);
    h = sl_http_header_find(r, "x-api-key");
    assert_non_null(h);
    assert_memory_equal(h->value, "k1", 2);
    assert_ptr_equal(sl_http_header_find(r, "X-API-KEY"), h);
    assert_ptr_equal(sl_http_header_find(r, "HOST"), &r->headers[0]);
    assert_null(sl_http_header_find(r, "x-api-ke"));
    assert_null(sl_http_header_find(r, "x-api-keys"));
    assert_null(sl_http_header_find(r, "authorization"));
}

/* ---- chunked decoder ---- */

typedef struct {
    ssize_t rc;      /* last return: the error, or total consumed */
    size_t consumed; /* bytes consumed before stopping */
    char out[16384];
    size_t out_len;
    const char *why;
    int done;
} decoded_t;

/* Feeds in[0..len) in pieces cut at the sorted positions cuts[0..ncuts). */
static void
decode_cuts(const char *in, size_t len, const size_t *cuts, size_t ncuts,
            uint64_t max_body, decoded_t *d)
{
    sl_chunked_t c;
    size_t start = 0;
    char *piece = malloc(len + 1);

    sl_chunked_init(&c);
    memset(d, 0, sizeof(*d));
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        size_t n = end - start, out_n = 0;
        /* a copy so that reading past the piece is caught by ASan */
        memcpy(piece, in + start, n);
        ssize_t rc = sl_chunked_decode(&c, piece, n, d->out + d->out_len,
                                       &out_n, max_body, &d->why);
        d->out_len += out_n;
        if (rc < 0) {
            d->rc = rc;
            break;
        }
        assert_true((size_t)rc <= n);
        d->consumed += (size_t)rc;
        if ((size_t)rc < n) {
            assert_true(c.done);
            break;
        }
        start = end;
    }
    if (d->rc == 0)
        d->rc = (ssize_t)d->consumed;
    d->done = c.done;
    free(piece);
}

static void
decode_whole(const char *in, size_t len, uint64_t max_body, decoded_t *d)
{
    decode_cuts(in, len, NULL, 0, max_body, d);
}

static void
assert_same_decoding(const decoded_t *a, const decoded_t *b)
{
    /* rc is the total consumed on success */
    assert_int_equal(a->rc, b->rc);
    assert_int_equal(a->out_len, b->out_len);
    assert_memory_equal(a->out, b->out, a->out_len);
    assert_int_equal(a->done, b->done);
    if (a->why != NULL || b->why != NULL)
        assert_string_equal(a->why, b->why);
}

static void
expect_decoded(const char *in, const char *want)
{
    static decoded_t d;
    size_t len = strlen(in);
    decode_whole(in, len, UINT64_MAX, &d);
    if (d.rc != (ssize_t)len || !d.done)
        fail_msg("\"%s\": rc %zd done %d (%s)", show(in, len), d.rc, d.done,
                 d.why ? d.why : "");
    assert_int_equal(d.out_len, strlen(want));
    assert_memory_equal(d.out, want, d.out_len);
}

static void
expect_decode_error(const char *in, size_t len, uint64_t max_body, int err)
{
    static decoded_t d;
    decode_whole(in, len, max_body, &d);
    if (d.rc != err || d.why == NULL)
        fail_msg("\"%s\": expected %d, got %zd", show(in, len), err, d.rc);
}

static void
test_decodes_chunked_body(void **state)
{
    (void)state;
    expect_decoded("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
    expect_decoded("0\r\n\r\n", "");
    expect_decoded("a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n",
                   "0123456789abcdefghij");
    expect_decoded("000003\r\nabc\r\n00\r\n\r\n", "abc");
    expect_decoded("3\r\n\r\n\r\r\n0\r\n\r\n", "\r\n\r");
}

static void
test_skips_chunk_extensions(void **state)
{
    (void)state;
    expect_decoded("3;name=value\r\nabc\r\n0;last\r\n\r\n", "abc");
    expect_decoded("3 ;a=\"q \\\" \t\"\r\nabc\r\n0\t; x\r\n\r\n", "abc");
    expect_decoded("3;\xc3\xa9\r\nabc\r\n0\r\n\r\n", "abc");
}

static void
test_drops_trailer_fields(void **state)
{
    (void)state;
    expect_decoded("3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-B:\r\n\r\n", "abc");
    expect_decoded("0\r\nExpires: never \t\x80\r\n\r\n", "");
}

static void
test_stops_at_end_of_chunked_body_leaving_pipelined_bytes(void **state)
{
    (void)state;
    const char *in = "3\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    size_t body = strlen("3\r\nabc\r\n0\r\nT: v\r\n\r\n");
    sl_chunked_t c;
    char out[128];
    size_t out_len = 99;
    const char *why;

    sl_chunked_init(&c);
    ssize_t rc =
        sl_chunked_decode(&c, in, strlen(in), out, &out_len, UINT64_MAX, &why);
    assert_int_equal(rc, (ssize_t)body);
    assert_int_equal(c.done, 1);
    assert_int_equal(out_len, 3);
    assert_true(c.total == 3);
    /* once done it consumes nothing */
    rc = sl_chunked_decode(&c, in + body, strlen(in) - body, out, &out_len,
                           UINT64_MAX, &why);
    assert_int_equal(rc, 0);
    assert_int_equal(out_len, 0);
}

static void
test_decodes_identically_at_every_split_point(void **state)
{
    (void)state;
    static const char *bodies[] = {
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
        ("1a;ext=\"v\"\r\nabcdefghijklmnopqrstuvwxyz\r\n1\r\n\n\r\n"
         "0\r\nTrailer-A: x\r\nB: y\r\n\r\n"),
        "3\r\nabc\r\n3\r\nab\r\n",           /* missing CRLF after data */
        "4\r\nabcd\r\n0\r\nBad : x\r\n\r\n", /* invalid trailer */
        "10\r\n0123456789abcdef\r\n20\r\n",  /* body over max_body */
        "2\r\nab\r\n0\r\n\r",                /* incomplete */
    };
    static decoded_t whole, split;
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        const char *in = bodies[b];
        size_t len = strlen(in);
        decode_whole(in, len, 40, &whole);
        /* one cut anywhere */
        for (size_t i = 0; i <= len; i++) {
            decode_cuts(in, len, &i, 1, 40, &split);
            assert_same_decoding(&whole, &split);
        }
        /* two cuts anywhere */
        for (size_t i = 0; i <= len; i++)
            for (size_t j = i; j <= len; j++) {
                size_t cuts[2] = {i, j};
                decode_cuts(in, len, cuts, 2, 40, &split);
                assert_same_decoding(&whole, &split);
            }
        /* a byte at a time */
        size_t *cuts = malloc(len * sizeof(*cuts));
        for (size_t i = 0; i < len; i++)
            cuts[i] = i;
        decode_cuts(in, len, cuts, len, 40, &split);
        assert_same_decoding(&whole, &split);
        free(cuts);
    }
    /* and the cases above decode to what they should */
    decode_whole(bodies[0], strlen(bodies[0]), 40, &whole);
    assert_int_equal(whole.rc, (ssize_t)strlen(bodies[0]) - 4);
    assert_memory_equal(whole.out, "hello world", 11);
    decode_whole(bodies[1], strlen(bodies[1]), 40, &whole);
    assert_true(whole.done);
    assert_int_equal(whole.out_len, 27);
    decode_whole(bodies[2], strlen(bodies[2]), 40, &whole);
    assert_int_equal(whole.rc, SL_EINVAL);
    decode_whole(bodies[3], strlen(bodies[3]), 40, &whole);
    assert_int_equal(whole.rc, SL_EINVAL);
    decode_whole(bodies[4], strlen(bodies[4]), 40, &whole);
    assert_int_equal(whole.rc, SL_ETOOBIG);
    decode_whole(bodies[5], strlen(bodies[5]), 40, &whole);
    assert_false(whole.done);
    assert_int_equal(whole.rc, (ssize_t)strlen(bodies[5]));
}

static void
test_rejects_bare_lf_in_chunked_framing(void **state)
{
    (void)state;
    expect_decode_error("3\nabc\r\n0\r\n\r\n", 12, UINT64_MAX, SL_EINVAL);
    expect_decode_error("3;x\nabc\r\n0\r\n\r\n", 14, UINT64_MAX, SL_EINVAL);
    expect_decode_error("3\r\nabc\n0\r\n\r\n", 12, UINT64_MAX, SL_EINVAL);
    expect_decode_error("0\r\nT: v\n\r\n", 10, UINT64_MAX, SL_EINVAL);
    expect_decode_error("0\r\n\n", 4, UINT64_MAX, SL_EINVAL);
    expect_decode_error("\n", 1, UINT64_MAX, SL_EINVAL);
}

static void
test_rejects_bare_cr_in_chunked_framing(void **state)
{
    (void)state;
    expect_decode_error("3\rabc\r\n0\r\n\r\n", 12, UINT64_MAX, SL_EINVAL);
    expect_decode_error("3\r\nabc\rx", 8, UINT64_MAX, SL_EINVAL);
    expect_decode_error("0\r\nT: v\rx", 9, UINT64_MAX, SL_EINVAL);
    expect_decode_error("0\r\n\rx", 5, UINT64_MAX, SL_EINVAL);
}

static void
test_rejects_chunk_data_not_followed_by_crlf(void **state)
{
    (void)state;
    expect_decode_error("3\r\nabcd\r\n0\r\n\r\n", 14, UINT64_MAX, SL_EINVAL);
    expect_decode_error("3\r\nabc0\r\n\r\n", 11, UINT64_MAX, SL_EINVAL);
    expect_decode_error("3\r\nabc \r\n0\r\n\r\n", 14, UINT64_MAX, SL_EINVAL);
}

static void
test_rejects_invalid_chunk_size(void **state)
{
    (void)state;
    static const char *bad[] = {
        "g\r\n",  "0x3\r\n", "-1\r\n",  "+1\r\n",  " 3\r\n", "\r\n",
        ";x\r\n", "3 \r\n",  "3\t\r\n", "3 x\r\n", "3,\r\n", "\xff\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_decode_error(bad[i], strlen(bad[i]), UINT64_MAX, SL_EINVAL);
}

static void
test_caps_chunk_size_at_16_hex_digits(void **state)
{
    (void)state;
    expect_decoded("0000000000000003\r\nabc\r\n0\r\n\r\n", "abc");
    expect_decode_error("00000000000000003\r\nabc\r\n0\r\n\r\n", 29, UINT64_MAX,
                        SL_EINVAL);
    expect_decode_error("10000000000000000\r\n", 19, UINT64_MAX, SL_EINVAL);
    /* the largest size does not wrap the running total */
    expect_decode_error("1\r\na\r\nffffffffffffffff\r\n", 24, UINT64_MAX,
                        SL_ETOOBIG);
}

static void
test_answers_too_big_when_body_exceeds_max_body(void **state)
{
    (void)state;
    static decoded_t d;
    const char *in = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    decode_whole(in, strlen(in), 11, &d);
    assert_int_equal(d.rc, (ssize_t)strlen(in));
    assert_int_equal(d.out_len, 11);
    decode_whole(in, strlen(in), 10, &d);
    assert_int_equal(d.rc, SL_ETOOBIG);
    assert_non_null(d.why);
    /* refused as soon as the size is read, before the data arrives */
    expect_decode_error("fffff\r\n", 7, 1000, SL_ETOOBIG);
    expect_decode_error("1\r\n", 3, 0, SL_ETOOBIG);
}

static void
test_rejects_control_bytes_in_chunk_extension(void **state)
{
    (void)state;
    expect_decode_error("3;a\x01\r\nabc\r\n0\r\n\r\n", 17, UINT64_MAX,
                        SL_EINVAL);
    expect_decode_error("3;a\x7f\r\nabc\r\n0\r\n\r\n", 17, UINT64_MAX,
                        SL_EINVAL);
    expect_decode_error("3;a\0\r\nabc\r\n0\r\n\r\n", 17, UINT64_MAX, SL_EINVAL);
    expect_decoded("3;a\tb\r\nabc\r\n0\r\n\r\n", "abc");
}

/* A chunk line with an extension padding it to line bytes (before CRLF). */
static size_t
long_size_line(char *buf, size_t line)
{
    size_t o = 0;
    buf[o++] = '1';
    buf[o++] = ';';
    while (o < line)
        buf[o++] = 'x';
    memcpy(buf + o, "\r\nz\r\n0\r\n\r\n", 10);
    return o + 10;
}

static void
test_limits_chunk_size_line_to_4096_bytes(void **state)
{
    (void)state;
    static char buf[8192];
    size_t n = long_size_line(buf, 4096);
    buf[n] = '\0';
    expect_decoded(buf, "z");
    n = long_size_line(buf, 4097);
    expect_decode_error(buf, n, UINT64_MAX, SL_EINVAL);
    /* whitespace before the ';' counts too */
    memset(buf, ' ', 5000);
    buf[0] = '1';
    expect_decode_error(buf, 5000, UINT64_MAX, SL_EINVAL);
}

static void
test_limits_trailer_line_to_4096_bytes(void **state)
{
    (void)state;
    static char buf[8192];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "0\r\nX: ");
    while (o < 3 + 4096)
        buf[o++] = 'v';
    memcpy(buf + o, "\r\n\r\n", 5);
    expect_decoded(buf, "");
    buf[o] = 'v';
    memcpy(buf + o + 1, "\r\n\r\n", 5);
    expect_decode_error(buf, o + 5, UINT64_MAX, SL_EINVAL);
    /* a long name counts as much as a long value */
    o = (size_t)snprintf(buf, sizeof(buf), "0\r\n");
    while (o < 3 + 4097)
        buf[o++] = 'n';
    memcpy(buf + o, ":\r\n\r\n", 6);
    expect_decode_error(buf, o + 5, UINT64_MAX, SL_EINVAL);
}

static void
test_rejects_invalid_trailer_fields(void **state)
{
    (void)state;
    static const char *bad[] = {
        "0\r\nX : v\r\n\r\n",       "0\r\n: v\r\n\r\n",
        "0\r\nnocolon\r\n\r\n",     "0\r\n v\r\n\r\n",
        "0\r\nX: v\r\n\tw\r\n\r\n", "0\r\nX: a\x01\r\n\r\n",
        "0\r\nX(: v\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_decode_error(bad[i], strlen(bad[i]), UINT64_MAX, SL_EINVAL);
    expect_decode_error("0\r\nX: \0\r\n\r\n", 11, UINT64_MAX, SL_EINVAL);
}

static void
test_limits_number_of_trailer_fields(void **state)
{
    (void)state;
    static char buf[4096];
    size_t o = (size_t)snprintf(buf, sizeof(buf), "0\r\n");
    for (int i = 0; i < SL_HTTP_MAX_HEADERS; i++)
        o += (size_t)snprintf(buf + o, sizeof(buf) - o, "T%d: v\r\n", i);
    size_t fields_end = o;
    snprintf(buf + o, sizeof(buf) - o, "\r\n");
    expect_decoded(buf, "");
    snprintf(buf + fields_end, sizeof(buf) - fields_end, "T: v\r\n\r\n");
    expect_decode_error(buf, strlen(buf), UINT64_MAX, SL_EINVAL);
}

static void
test_fails_every_call_after_a_chunked_error(void **state)
{
    (void)state;
    sl_chunked_t c;
    char out[32];
    size_t out_len;
    const char *why;
    sl_chunked_init(&c);
    assert_int_equal(
        sl_chunked_decode(&c, "2\r\nabX", 6, out, &out_len, UINT64_MAX, &why),
        SL_EINVAL);
    assert_int_equal(out_len, 2);
    assert_non_null(why);
    assert_int_equal(sl_chunked_decode(&c, "\r\n0\r\n\r\n", 7, out, &out_len,
                                       UINT64_MAX, &why),
                     SL_EINVAL);
    assert_int_equal(out_len, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parses_simple_get),
        cmocka_unit_test(test_splits_path_from_query),
        cmocka_unit_test(test_fills_method_enum_for_common_methods),
        cmocka_unit_test(test_rejects_method_that_is_not_a_token),
        cmocka_unit_test(test_rejects_request_line_with_extra_spaces),
        cmocka_unit_test(test_rejects_target_that_is_not_origin_form),
        cmocka_unit_test(test_accepts_asterisk_target_only_for_options),
        cmocka_unit_test(test_rejects_control_bytes_and_non_ascii_in_target),
        cmocka_unit_test(test_accepts_every_visible_ascii_byte_in_target),
        cmocka_unit_test(test_answers_505_for_other_http_versions),
        cmocka_unit_test(test_rejects_malformed_http_version),
        cmocka_unit_test(test_accepts_http_1_0_without_host),
        cmocka_unit_test(test_rejects_bare_lf_line_endings),
        cmocka_unit_test(test_rejects_bare_lf_even_when_head_is_incomplete),
        cmocka_unit_test(test_rejects_bare_cr),
        cmocka_unit_test(test_rejects_obs_fold),
        cmocka_unit_test(test_rejects_whitespace_between_header_name_and_colon),
        cmocka_unit_test(test_rejects_header_name_that_is_not_a_token),
        cmocka_unit_test(test_accepts_token_header_names),
        cmocka_unit_test(test_trims_ows_around_header_values),
        cmocka_unit_test(test_rejects_control_bytes_in_header_values),
        cmocka_unit_test(test_accepts_obs_text_and_htab_in_header_values),
        cmocka_unit_test(test_accepts_long_printable_header_value),
        cmocka_unit_test(test_parses_content_length),
        cmocka_unit_test(test_accepts_content_length_up_to_int64_max),
        cmocka_unit_test(test_rejects_content_length_overflow),
        cmocka_unit_test(test_rejects_content_length_that_is_not_digits),
        cmocka_unit_test(test_rejects_empty_content_length),
        cmocka_unit_test(test_rejects_content_length_list),
        cmocka_unit_test(test_rejects_duplicate_content_length_even_when_equal),
        cmocka_unit_test(
            test_parses_chunked_transfer_encoding_case_insensitively),
        cmocka_unit_test(
            test_rejects_both_transfer_encoding_and_content_length),
        cmocka_unit_test(test_answers_501_for_unknown_transfer_coding),
        cmocka_unit_test(test_rejects_transfer_encoding_lists),
        cmocka_unit_test(test_rejects_malformed_or_empty_transfer_encoding),
        cmocka_unit_test(test_rejects_duplicate_transfer_encoding),
        cmocka_unit_test(test_rejects_transfer_encoding_in_http_1_0),
        cmocka_unit_test(test_rejects_http_1_1_without_host),
        cmocka_unit_test(test_rejects_more_than_one_host),
        cmocka_unit_test(test_validates_host_value),
        cmocka_unit_test(test_answers_431_when_head_exceeds_max_head),
        cmocka_unit_test(
            test_completes_head_within_max_head_when_more_bytes_follow),
        cmocka_unit_test(test_answers_431_for_more_than_max_headers),
        cmocka_unit_test(test_keeps_http_1_1_alive_unless_connection_close),
        cmocka_unit_test(test_closes_http_1_0_unless_connection_keep_alive),
        cmocka_unit_test(test_sets_expect_continue_for_100_continue),
        cmocka_unit_test(test_skips_leading_crlfs_and_counts_them),
        cmocka_unit_test(
            test_needs_more_input_for_every_prefix_of_a_valid_request),
        cmocka_unit_test(test_reports_invalid_prefix_before_head_is_complete),
        cmocka_unit_test(test_parses_pipelined_requests_one_at_a_time),
        cmocka_unit_test(test_header_lookup_is_case_insensitive),
        cmocka_unit_test(test_decodes_chunked_body),
        cmocka_unit_test(test_skips_chunk_extensions),
        cmocka_unit_test(test_drops_trailer_fields),
        cmocka_unit_test(
            test_stops_at_end_of_chunked_body_leaving_pipelined_bytes),
        cmocka_unit_test(test_decodes_identically_at_every_split_point),
        cmocka_unit_test(test_rejects_bare_lf_in_chunked_framing),
        cmocka_unit_test(test_rejects_bare_cr_in_chunked_framing),
        cmocka_unit_test(test_rejects_chunk_data_not_followed_by_crlf),
        cmocka_unit_test(test_rejects_invalid_chunk_size),
        cmocka_unit_test(test_caps_chunk_size_at_16_hex_digits),
        cmocka_unit_test(test_answers_too_big_when_body_exceeds_max_body),
        cmocka_unit_test(test_rejects_control_bytes_in_chunk_extension),
        cmocka_unit_test(test_limits_chunk_size_line_to_4096_bytes),
        cmocka_unit_test(test_limits_trailer_line_to_4096_bytes),
        cmocka_unit_test(test_rejects_invalid_trailer_fields),
        cmocka_unit_test(test_limits_number_of_trailer_fields),
        cmocka_unit_test(test_fails_every_call_after_a_chunked_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
