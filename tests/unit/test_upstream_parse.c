/* The upstream response parser: framing (length, chunked, to EOF, none),
 * keep-alive, interim heads, pauses, and every framing error -- and the
 * same result however the bytes are cut into reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upstream_parse.h"

typedef struct {
    char body[4096];
    size_t body_len;
    char lines[4096];
    size_t lines_len;
    int pause_every; /* on_body asks for a pause after each piece */
    int abort_at;    /* on_body aborts on this piece (1-based) */
    int pieces;
} sink_t;

static void
on_line(void *ud, const char *line, size_t len)
{
    sink_t *s = ud;
    assert_true(s->lines_len + len + 1 < sizeof(s->lines));
    memcpy(s->lines + s->lines_len, line, len);
    s->lines_len += len;
    s->lines[s->lines_len++] = '|';
}

static int
on_body(void *ud, const char *data, size_t len)
{
    sink_t *s = ud;
    s->pieces++;
    if (s->abort_at && s->pieces == s->abort_at)
        return -1;
    assert_true(s->body_len + len < sizeof(s->body));
    memcpy(s->body + s->body_len, data, len);
    s->body_len += len;
    return s->pause_every ? 1 : 0;
}

static const sl_resp_sink_t sink = {on_line, on_body};

/* Feeds `in` cut at `cut` (0: whole), the way the client does: unconsumed
 * bytes stay and more are appended. Returns the parser's last result:
 * 0 done, 1 needs more, -1 error. */
static int
run(sl_resp_parser_t *p, sink_t *s, const char *in, size_t len, size_t cut,
    int head_only, int eof)
{
    char buf[8192];
    size_t have = 0, given = 0;
    sl_resp_init(p, head_only);
    s->body_len = s->lines_len = 0;
    s->pieces = 0;
    for (;;) {
        size_t step = cut ? cut : len;
        size_t n = len - given < step ? len - given : step;
        assert_true(have + n <= sizeof(buf));
        memcpy(buf + have, in + given, n);
        have += n;
        given += n;
        for (;;) {
            ssize_t used = sl_resp_feed(p, buf, have, &sink, s);
            if (used < 0)
                return -1;
            memmove(buf, buf + used, have - (size_t)used);
            have -= (size_t)used;
            if (p->state == SL_RESP_DONE)
                return 0;
            if (!p->paused)
                break;
            p->paused = 0; /* resumed at once */
        }
        if (given == len)
            break;
    }
    if (eof)
        return sl_resp_eof(p) == 0 ? 0 : -1;
    return 1;
}

#define OK_CL "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
#define OK_CHUNKED                                                           \
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"                  \
    "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n"

static void
test_content_length_body_at_every_cut(void **state)
{
    (void)state;
    for (size_t cut = 0; cut <= strlen(OK_CL); cut++) {
        sl_resp_parser_t p;
        sink_t s = {0};
        assert_int_equal(run(&p, &s, OK_CL, strlen(OK_CL), cut, 0, 0), 0);
        assert_int_equal(p.status, 200);
        assert_true(p.keep_alive);
        assert_int_equal(s.body_len, 5);
        assert_memory_equal(s.body, "hello", 5);
        assert_memory_equal(s.lines, "HTTP/1.1 200 OK|Content-Length: 5|",
                            s.lines_len);
    }
}

static void
test_chunked_body_at_every_cut_and_with_pauses(void **state)
{
    (void)state;
    const char *want = "hello 0123456789";
    for (int pause = 0; pause < 2; pause++)
        for (size_t cut = 0; cut <= strlen(OK_CHUNKED); cut++) {
            sl_resp_parser_t p;
            sink_t s = {0};
            s.pause_every = pause;
            assert_int_equal(
                run(&p, &s, OK_CHUNKED, strlen(OK_CHUNKED), cut, 0, 0), 0);
            assert_int_equal(s.body_len, strlen(want));
            assert_memory_equal(s.body, want, s.body_len);
            assert_true(p.keep_alive);
        }
}

static void
test_interim_heads_are_skipped(void **state)
{
    (void)state;
    const char *in = "HTTP/1.1 100 Continue\r\n\r\n"
                     "HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" OK_CL;
    sl_resp_parser_t p;
    sink_t s = {0};
    assert_int_equal(run(&p, &s, in, strlen(in), 0, 0, 0), 0);
    assert_int_equal(p.status, 200);
    assert_memory_equal(s.body, "hello", 5);
}

static void
test_bodiless_answers(void **state)
{
    (void)state;
    sl_resp_parser_t p;
    sink_t s = {0};
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
    assert_int_equal(run(&p, &s, head, strlen(head), 0, 1, 0), 0);
    assert_int_equal(s.body_len, 0);
    const char *nc = "HTTP/1.1 204 No Content\r\n\r\n";
    assert_int_equal(run(&p, &s, nc, strlen(nc), 0, 0, 0), 0);
    assert_int_equal(p.status, 204);
    const char *zero = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(run(&p, &s, zero, strlen(zero), 0, 0, 0), 0);
}

static void
test_keep_alive_follows_version_and_connection(void **state)
{
    (void)state;
    sl_resp_parser_t p;
    sink_t s = {0};
    const char *close = "HTTP/1.1 200 OK\r\nConnection: Close\r\n"
                        "Content-Length: 0\r\n\r\n";
    assert_int_equal(run(&p, &s, close, strlen(close), 0, 0, 0), 0);
    assert_false(p.keep_alive);
    const char *old = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(run(&p, &s, old, strlen(old), 0, 0, 0), 0);
    assert_false(p.keep_alive);
    const char *old_ka = "HTTP/1.0 200 OK\r\nConnection: x, keep-alive\r\n"
                         "Content-Length: 0\r\n\r\n";
    assert_int_equal(run(&p, &s, old_ka, strlen(old_ka), 0, 0, 0), 0);
    assert_true(p.keep_alive);
}

static void
test_a_body_without_length_runs_to_eof(void **state)
{
    (void)state;
    sl_resp_parser_t p;
    sink_t s = {0};
    const char *in = "HTTP/1.1 200 OK\r\n\r\nall of it";
    assert_int_equal(run(&p, &s, in, strlen(in), 3, 0, 0), 1);
    assert_int_equal(sl_resp_eof(&p), 0);
    assert_false(p.keep_alive);
    assert_memory_equal(s.body, "all of it", 9);
}

static void
test_eof_before_the_end_is_an_error(void **state)
{
    (void)state;
    sl_resp_parser_t p;
    sink_t s = {0};
    const char *cut_cl = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhalf";
    assert_int_equal(run(&p, &s, cut_cl, strlen(cut_cl), 0, 0, 1), -1);
    assert_non_null(strstr(p.why, "mid-response"));
    const char *cut_ch = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         "\r\n5\r\nhel";
    assert_int_equal(run(&p, &s, cut_ch, strlen(cut_ch), 0, 0, 1), -1);
    assert_int_equal(run(&p, &s, "", 0, 0, 0, 1), -1);
    assert_non_null(strstr(p.why, "before answering"));
}

static void
test_framing_errors_are_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/1.1 101 Switching\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
        "chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1\r\nab\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1\nx\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1234567890abcdef0\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1;a\x01\r\nx\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t cut = 0; cut <= strlen(bad[i]); cut++) {
            sl_resp_parser_t p;
            sink_t s = {0};
            int rc = run(&p, &s, bad[i], strlen(bad[i]), cut, 0, 0);
            if (rc != -1)
                fail_msg("accepted #%zu cut %zu: %s", i, cut, bad[i]);
            assert_non_null(p.why);
        }
    }
}

static void
test_oversized_head_is_refused(void **state)
{
    (void)state;
    size_t n = SL_RESP_HEAD_MAX + 100;
    char *in = malloc(n);
    assert_non_null(in);
    memcpy(in, "HTTP/1.1 200 OK\r\n", 17);
    for (size_t i = 17; i < n; i += 10)
        memcpy(in + i, "X-Pad: 1\r\n", n - i < 10 ? n - i : 10);
    sl_resp_parser_t p;
    sl_resp_init(&p, 0);
    sink_t s = {0};
    assert_int_equal(sl_resp_feed(&p, in, n, &sink, &s), -1);
    assert_non_null(strstr(p.why, "too large"));
    free(in);
}

static void
test_an_aborting_consumer_stops_the_parse(void **state)
{
    (void)state;
    sl_resp_parser_t p;
    sink_t s = {0};
    s.abort_at = 1;
    assert_int_equal(run(&p, &s, OK_CL, strlen(OK_CL), 0, 0, 0), -1);
    assert_null(p.why);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length_body_at_every_cut),
        cmocka_unit_test(test_chunked_body_at_every_cut_and_with_pauses),
        cmocka_unit_test(test_interim_heads_are_skipped),
        cmocka_unit_test(test_bodiless_answers),
        cmocka_unit_test(test_keep_alive_follows_version_and_connection),
        cmocka_unit_test(test_a_body_without_length_runs_to_eof),
        cmocka_unit_test(test_eof_before_the_end_is_an_error),
        cmocka_unit_test(test_framing_errors_are_refused),
        cmocka_unit_test(test_oversized_head_is_refused),
        cmocka_unit_test(test_an_aborting_consumer_stops_the_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
