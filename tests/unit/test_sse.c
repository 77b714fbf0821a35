/* Unit tests for core/sse.c: every WHATWG event-stream rule we rely on, the
 * memory bound, and real OpenAI / Anthropic streams cut at every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "sse.h"

#define MAX_EVENTS 64

typedef struct {
    char *event; /* NULL when the callback got NULL */
    size_t event_len;
    char *data;
    size_t data_len;
} ev_t;

typedef struct {
    ev_t ev[MAX_EVENTS];
    size_t n;
    size_t stop_after; /* return 99 from the callback after this many */
} events_t;

static char *
dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    assert_non_null(d);
    if (n > 0)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int
collect(void *ud, const char *event, size_t event_len, const char *data,
        size_t data_len) {
    events_t *e = ud;

    assert_true(e->n < MAX_EVENTS);
    assert_non_null(data);
    if (event == NULL)
        assert_int_equal(event_len, 0);
    e->ev[e->n].event = event ? dup_n(event, event_len) : NULL;
    e->ev[e->n].event_len = event_len;
    e->ev[e->n].data = dup_n(data, data_len);
    e->ev[e->n].data_len = data_len;
    e->n++;
    if (e->stop_after > 0 && e->n >= e->stop_after)
        return 99;
    return 0;
}

static void
events_clear(events_t *e) {
    for (size_t i = 0; i < e->n; i++) {
        free(e->ev[i].event);
        free(e->ev[i].data);
    }
    memset(e, 0, sizeof(*e));
}

/* Feeds the given pieces in order into a fresh parser; returns the last
 * feed's result and whether anything is pending. */
static int
feed_pieces(events_t *e, size_t max_event, int *pending, int npieces, ...) {
    sl_sse_t p;
    va_list ap;
    int rc = 0;

    sl_sse_init(&p, max_event);
    va_start(ap, npieces);
    for (int i = 0; i < npieces; i++) {
        const char *s = va_arg(ap, const char *);
        rc = sl_sse_feed(&p, s, strlen(s), collect, e);
        if (rc != 0)
            break;
    }
    va_end(ap);
    if (pending != NULL)
        *pending = sl_sse_pending(&p);
    sl_sse_free(&p);
    return rc;
}

static int
feed_one(events_t *e, const char *s) {
    return feed_pieces(e, 1 << 20, NULL, 1, s);
}

static void
assert_event(const events_t *e, size_t i, const char *event, const char *data) {
    assert_true(i < e->n);
    if (event == NULL) {
        assert_null(e->ev[i].event);
    } else {
        assert_non_null(e->ev[i].event);
        assert_int_equal(e->ev[i].event_len, strlen(event));
        assert_string_equal(e->ev[i].event, event);
    }
    assert_int_equal(e->ev[i].data_len, strlen(data));
    assert_string_equal(e->ev[i].data, data);
}

static void
test_blank_line_dispatches_data(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data: hello\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "hello");
    events_clear(&e);
}

static void
test_data_lines_join_with_newline_none_trailing(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data: a\ndata: b\ndata:\ndata: d\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "a\nb\n\nd");
    events_clear(&e);
}

static void
test_only_one_leading_space_is_removed(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data:x\n\ndata:  two\n\ndata:\t t\n\n"), 0);
    assert_int_equal(e.n, 3);
    assert_event(&e, 0, NULL, "x");
    assert_event(&e, 1, NULL, " two");
    assert_event(&e, 2, NULL, "\t t");
    events_clear(&e);
}

static void
test_value_keeps_colons_after_the_first(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data: {\"a\":\"b:c\"}\ndata: :x\n\n"), 0);
    assert_event(&e, 0, NULL, "{\"a\":\"b:c\"}\n:x");
    events_clear(&e);
}

static void
test_event_field_sets_type_for_one_event_only(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(
        feed_one(&e, "event: first\nevent: second\ndata: 1\n\ndata: 2\n\n"), 0);
    assert_int_equal(e.n, 2);
    assert_event(&e, 0, "second", "1");
    assert_event(&e, 1, NULL, "2");
    events_clear(&e);
}

static void
test_event_after_data_still_names_the_event(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data: a\nevent: late\ndata: b\n\n"), 0);
    assert_event(&e, 0, "late", "a\nb");
    events_clear(&e);
}

static void
test_empty_event_field_means_no_type(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "event: x\nevent:\ndata: d\n\n"), 0);
    assert_event(&e, 0, NULL, "d");
    events_clear(&e);
}

static void
test_comment_lines_are_ignored(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(
        feed_one(&e, ": keep-alive\n:\ndata: a\n: data: not this\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "a");
    events_clear(&e);
}

static void
test_unknown_fields_id_and_retry_are_ignored(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "id: 7\nretry: 10\nfoo: bar\nDATA: up\n"
                                  "Event: up\ndata : sp\ndata: kept\n\n"),
                     0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "kept");
    events_clear(&e);
}

static void
test_field_name_without_colon_has_empty_value(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data\ndata\n\nevent\ndata: x\n\n"), 0);
    assert_int_equal(e.n, 2);
    assert_event(&e, 0, NULL, "\n");
    assert_event(&e, 1, NULL, "x");
    events_clear(&e);
}

static void
test_empty_data_line_dispatches_empty_string(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "data:\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "");
    events_clear(&e);
}

static void
test_event_without_data_is_not_dispatched(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "event: lonely\n\nid: 3\n\n\n\n"), 0);
    assert_int_equal(e.n, 0);
    /* and the dropped type does not leak into the next event */
    assert_int_equal(feed_one(&e, "event: lonely\n\ndata: x\n\n"), 0);
    assert_event(&e, 0, NULL, "x");
    events_clear(&e);
}

static void
test_crlf_lf_and_cr_line_endings_are_equivalent(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "event: a\r\ndata: 1\r\ndata: 2\r\n\r\n"
                                  "event: b\rdata: 3\r\r"
                                  "data: 4\ndata: 5\r\n\n"
                                  "data: 6\r\r\n"),
                     0);
    assert_int_equal(e.n, 4);
    assert_event(&e, 0, "a", "1\n2");
    assert_event(&e, 1, "b", "3");
    assert_event(&e, 2, NULL, "4\n5");
    assert_event(&e, 3, NULL, "6");
    events_clear(&e);
}

static void
test_cr_ending_one_feed_and_lf_starting_next_is_one_line_end(void **state) {
    events_t e = {0};
    int pending;
    (void)state;

    /* Read as two line ends, the LF would be a blank line dispatching "a". */
    assert_int_equal(
        feed_pieces(&e, 1 << 20, &pending, 2, "data: a\r", "\ndata: b\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "a\nb");
    assert_false(pending);
    events_clear(&e);
}

static void
test_cr_ending_one_feed_and_cr_starting_next_dispatches(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(
        feed_pieces(&e, 1 << 20, NULL, 3, "data: a\r", "\r", "data: b\r\n\n"),
        0);
    assert_int_equal(e.n, 2);
    assert_event(&e, 0, NULL, "a");
    assert_event(&e, 1, NULL, "b");
    events_clear(&e);
}

static void
test_cr_lf_split_survives_an_empty_feed(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(
        feed_pieces(&e, 1 << 20, NULL, 3, "data: a\r", "", "\ndata: b\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "a\nb");
    events_clear(&e);
}

static void
test_leading_bom_is_skipped(void **state) {
    events_t e = {0};
    (void)state;

    assert_int_equal(feed_one(&e, "\xEF\xBB\xBF"
                                  "data: x\n\n"),
                     0);
    assert_event(&e, 0, NULL, "x");
    events_clear(&e);
}

static void
test_bom_split_across_feeds_is_skipped(void **state) {
    events_t e = {0};
    int pending;
    (void)state;

    assert_int_equal(feed_pieces(&e, 1 << 20, &pending, 4, "\xEF", "\xBB",
                                 "\xBF", "data: x\n\n"),
                     0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "x");
    assert_false(pending);
    events_clear(&e);
}

static void
test_bom_is_skipped_once_only(void **state) {
    events_t e = {0};
    (void)state;

    /* The second BOM belongs to the field name, so the line is unknown. */
    assert_int_equal(feed_one(&e, "\xEF\xBB\xBF\xEF\xBB\xBF"
                                  "data: x\n\ndata: y\n\n"),
                     0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "y");
    events_clear(&e);
}

static void
test_partial_bom_bytes_are_line_content(void **state) {
    events_t e = {0};
    int pending;
    (void)state;

    /* "\xEF\xBB" then 'd' is no BOM: the line's field is "\xEF\xBBdata". */
    assert_int_equal(feed_pieces(&e, 1 << 20, &pending, 2, "\xEF\xBB",
                                 "data: x\n\ndata: y\n\n"),
                     0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, NULL, "y");
    assert_false(pending);
    events_clear(&e);

    assert_int_equal(feed_pieces(&e, 1 << 20, &pending, 1, "\xEF"), 0);
    assert_true(pending);
}

static void
test_nul_and_high_bytes_pass_through(void **state) {
    static const char in[] = "event: \xFF\ndata: a\0b\n\n";
    events_t e = {0};
    sl_sse_t p;
    (void)state;

    sl_sse_init(&p, 1024);
    assert_int_equal(sl_sse_feed(&p, in, sizeof(in) - 1, collect, &e), 0);
    sl_sse_free(&p);
    assert_int_equal(e.n, 1);
    assert_string_equal(e.ev[0].event, "\xFF");
    assert_int_equal(e.ev[0].data_len, 3);
    assert_memory_equal(e.ev[0].data, "a\0b", 3);
    events_clear(&e);
}

static void
test_pending_reports_a_cut_stream(void **state) {
    events_t e = {0};
    int pending;
    (void)state;

    feed_pieces(&e, 1 << 20, &pending, 1, "data: a\n\n");
    assert_false(pending);
    feed_pieces(&e, 1 << 20, &pending, 1, "data: a\n\ndata: b");
    assert_true(pending); /* a cut line */
    feed_pieces(&e, 1 << 20, &pending, 1, "data: a\n");
    assert_true(pending); /* data waiting for its blank line */
    feed_pieces(&e, 1 << 20, &pending, 1, "data:\n");
    assert_true(pending); /* empty data is still data */
    feed_pieces(&e, 1 << 20, &pending, 1, "event: x\n");
    assert_true(pending); /* an event begun */
    feed_pieces(&e, 1 << 20, &pending, 2, ": comment\n", "id: 1\n");
    assert_false(pending); /* nothing of an event */
    feed_pieces(&e, 1 << 20, &pending, 1, "data: a\r");
    assert_true(pending);
    feed_pieces(&e, 1 << 20, &pending, 1, "data: a\r\r");
    assert_false(pending);
    events_clear(&e);
}

static void
test_event_past_max_event_is_too_big_and_sticky(void **state) {
    events_t e = {0};
    sl_sse_t p;
    (void)state;

    /* "data: 0123456789" is 16 bytes: fits in 16, not in 15. */
    assert_int_equal(feed_pieces(&e, 16, NULL, 1, "data: 0123456789\n\n"), 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(
        feed_pieces(&e, 15, NULL, 1, "data: ok\n\ndata: 0123456789\n\n"),
        SL_ETOOBIG);
    assert_int_equal(e.n, 2); /* the event before the big one got out */

    sl_sse_init(&p, 15);
    assert_int_equal(sl_sse_feed(&p, "data: 01234", 11, collect, &e), 0);
    assert_int_equal(sl_sse_feed(&p, "56789", 5, collect, &e), SL_ETOOBIG);
    assert_int_equal(sl_sse_feed(&p, "\n\ndata: x\n\n", 11, collect, &e),
                     SL_ETOOBIG);
    assert_true(sl_sse_pending(&p));
    assert_true(p.cap <= 15);
    sl_sse_free(&p);
    assert_int_equal(e.n, 2);

    /* a cut line that ends, too long, in the next feed */
    sl_sse_init(&p, 15);
    assert_int_equal(sl_sse_feed(&p, "data: 01234", 11, collect, &e), 0);
    assert_int_equal(sl_sse_feed(&p, "56789\n\n", 7, collect, &e),
                     SL_ETOOBIG);
    sl_sse_free(&p);
    assert_int_equal(e.n, 2);
    events_clear(&e);
}

static void
test_max_event_counts_type_data_and_line_together(void **state) {
    events_t e = {0};
    (void)state;

    /* type "ab" (2) + data "x\ny" (3) + line "data: zz" (8) = 13 */
    assert_int_equal(feed_pieces(&e, 13, NULL, 1,
                                 "event: ab\ndata: x\ndata: y\ndata: zz\n\n"),
                     0);
    assert_int_equal(e.n, 1);
    assert_event(&e, 0, "ab", "x\ny\nzz");
    events_clear(&e);
    assert_int_equal(feed_pieces(&e, 12, NULL, 1,
                                 "event: ab\ndata: x\ndata: y\ndata: zz\n\n"),
                     SL_ETOOBIG);
    assert_int_equal(e.n, 0);
    /* comments are bounded too: a cut one would sit in memory */
    assert_int_equal(feed_pieces(&e, 8, NULL, 1, ": 123456789\n"), SL_ETOOBIG);
    events_clear(&e);
}

static void
test_long_line_fed_byte_by_byte_grows_buffer_within_limit(void **state) {
    enum { N = 100000 };
    events_t e = {0};
    sl_sse_t p;
    char *line = malloc(N);
    (void)state;

    assert_non_null(line);
    memcpy(line, "data: ", 6);
    for (size_t i = 6; i < N; i++)
        line[i] = (char)('a' + i % 26);
    sl_sse_init(&p, N);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(sl_sse_feed(&p, line + i, 1, collect, &e), 0);
    assert_true(sl_sse_pending(&p));
    assert_true(p.cap <= N);
    assert_int_equal(sl_sse_feed(&p, "\n\n", 2, collect, &e), 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.ev[0].data_len, N - 6);
    assert_memory_equal(e.ev[0].data, line + 6, N - 6);
    sl_sse_free(&p);
    free(line);
    events_clear(&e);
}

static void
test_nonzero_callback_return_stops_the_feed(void **state) {
    events_t e = {0};
    sl_sse_t p;
    static const char in[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    (void)state;

    e.stop_after = 1;
    sl_sse_init(&p, 1024);
    assert_int_equal(sl_sse_feed(&p, in, strlen(in), collect, &e), 99);
    assert_int_equal(e.n, 1);
    assert_false(sl_sse_pending(&p));
    /* the parser stays usable */
    e.stop_after = 0;
    assert_int_equal(sl_sse_feed(&p, "data: 4\n\n", 9, collect, &e), 0);
    assert_event(&e, 1, NULL, "4");
    sl_sse_free(&p);
    events_clear(&e);
}

/* ---- whole streams, cut at every byte position ---- */

static const char openai_stream[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"Hel\"}}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
    "\"lo\"},\"finish_reason\":\"stop\"}]}\n\n"
    "data: [DONE]\n\n";

static const char anthropic_stream[] =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\"}}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
    "{\"type\":\"text_delta\",\"text\":\"Hi\"}}\r\n\r\n"
    "event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n"
    "event: message_stop\r\n"
    "data: {\"type\":\"message_stop\"}\r\n\r\n";

static const char mixed_stream[] = "\xEF\xBB\xBF: hi\r"
                                   "event: e1\rdata: a\rdata: b\r\r"
                                   "data\r\n\n"
                                   "data: c\n\r"
                                   "id: 1\r\nevent: e2\ndata: \r\n\r";

static const char reordered_stream[] =
    "data: first\nevent: late\ndata: second\n\n"
    "data: x\ndata: y\nevent: longer-name\nevent: z\ndata: w\n\n";

static void
check_reordered(const events_t *e)
{
    assert_int_equal(e->n, 2);
    assert_event(e, 0, "late", "first\nsecond");
    assert_event(e, 1, "z", "x\ny\nw");
}

static void
check_openai(const events_t *e) {
    assert_int_equal(e->n, 4);
    assert_event(e, 0, NULL,
                 "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\","
                 "\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                 "\"assistant\",\"content\":\"\"}}]}");
    assert_event(e, 1, NULL,
                 "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
                 "{\"content\":\"Hel\"}}]}");
    assert_event(e, 2, NULL,
                 "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":"
                 "{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}");
    assert_event(e, 3, NULL, "[DONE]");
}

static void
check_anthropic(const events_t *e) {
    assert_int_equal(e->n, 4);
    assert_event(e, 0, "message_start",
                 "{\"type\":\"message_start\",\"message\":{\"id\":"
                 "\"msg_1\"}}");
    assert_event(e, 1, "content_block_delta",
                 "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                 "{\"type\":\"text_delta\",\"text\":\"Hi\"}}");
    assert_event(e, 2, "ping", "{\"type\": \"ping\"}");
    assert_event(e, 3, "message_stop", "{\"type\":\"message_stop\"}");
}

static void
check_mixed(const events_t *e) {
    assert_int_equal(e->n, 4);
    assert_event(e, 0, "e1", "a\nb");
    assert_event(e, 1, NULL, "");
    assert_event(e, 2, NULL, "c");
    assert_event(e, 3, "e2", "");
}

/* Feeds s cut at i and at j (i <= j): three feeds, some of them empty. */
static void
check_every_split(const char *s, size_t len, void (*check)(const events_t *)) {
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j += (j < i + 4 ? 1 : 61)) {
            events_t e = {0};
            sl_sse_t p;

            sl_sse_init(&p, 4096);
            assert_int_equal(sl_sse_feed(&p, s, i, collect, &e), 0);
            assert_int_equal(sl_sse_feed(&p, s + i, j - i, collect, &e), 0);
            assert_int_equal(sl_sse_feed(&p, s + j, len - j, collect, &e), 0);
            assert_false(sl_sse_pending(&p));
            check(&e);
            sl_sse_free(&p);
            events_clear(&e);
        }
    }
}

static void
test_openai_stream_parses_the_same_at_every_split(void **state) {
    (void)state;
    check_every_split(openai_stream, sizeof(openai_stream) - 1, check_openai);
}

static void
test_anthropic_stream_parses_the_same_at_every_split(void **state) {
    (void)state;
    check_every_split(anthropic_stream, sizeof(anthropic_stream) - 1,
                      check_anthropic);
}

static void
test_mixed_endings_bom_stream_parses_the_same_at_every_split(void **state) {
    (void)state;
    check_every_split(mixed_stream, sizeof(mixed_stream) - 1, check_mixed);
}

static void
test_event_lines_after_data_parse_the_same_at_every_split(void **state)
{
    (void)state;
    check_every_split(reordered_stream, sizeof(reordered_stream) - 1,
                      check_reordered);
}

static void
test_openai_stream_byte_by_byte(void **state) {
    events_t e = {0};
    sl_sse_t p;
    (void)state;

    sl_sse_init(&p, 4096);
    for (size_t i = 0; i < sizeof(openai_stream) - 1; i++)
        assert_int_equal(sl_sse_feed(&p, openai_stream + i, 1, collect, &e), 0);
    assert_false(sl_sse_pending(&p));
    check_openai(&e);
    sl_sse_free(&p);
    events_clear(&e);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blank_line_dispatches_data),
        cmocka_unit_test(test_data_lines_join_with_newline_none_trailing),
        cmocka_unit_test(test_only_one_leading_space_is_removed),
        cmocka_unit_test(test_value_keeps_colons_after_the_first),
        cmocka_unit_test(test_event_field_sets_type_for_one_event_only),
        cmocka_unit_test(test_event_after_data_still_names_the_event),
        cmocka_unit_test(test_empty_event_field_means_no_type),
        cmocka_unit_test(test_comment_lines_are_ignored),
        cmocka_unit_test(test_unknown_fields_id_and_retry_are_ignored),
        cmocka_unit_test(test_field_name_without_colon_has_empty_value),
        cmocka_unit_test(test_empty_data_line_dispatches_empty_string),
        cmocka_unit_test(test_event_without_data_is_not_dispatched),
        cmocka_unit_test(test_crlf_lf_and_cr_line_endings_are_equivalent),
        cmocka_unit_test(
            test_cr_ending_one_feed_and_lf_starting_next_is_one_line_end),
        cmocka_unit_test(
            test_cr_ending_one_feed_and_cr_starting_next_dispatches),
        cmocka_unit_test(test_cr_lf_split_survives_an_empty_feed),
        cmocka_unit_test(test_leading_bom_is_skipped),
        cmocka_unit_test(test_bom_split_across_feeds_is_skipped),
        cmocka_unit_test(test_bom_is_skipped_once_only),
        cmocka_unit_test(test_partial_bom_bytes_are_line_content),
        cmocka_unit_test(test_nul_and_high_bytes_pass_through),
        cmocka_unit_test(test_pending_reports_a_cut_stream),
        cmocka_unit_test(test_event_past_max_event_is_too_big_and_sticky),
        cmocka_unit_test(test_max_event_counts_type_data_and_line_together),
        cmocka_unit_test(
            test_long_line_fed_byte_by_byte_grows_buffer_within_limit),
        cmocka_unit_test(test_nonzero_callback_return_stops_the_feed),
        cmocka_unit_test(test_openai_stream_parses_the_same_at_every_split),
        cmocka_unit_test(test_anthropic_stream_parses_the_same_at_every_split),
        cmocka_unit_test(
            test_mixed_endings_bom_stream_parses_the_same_at_every_split),
        cmocka_unit_test(
            test_event_lines_after_data_parse_the_same_at_every_split),
        cmocka_unit_test(test_openai_stream_byte_by_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
