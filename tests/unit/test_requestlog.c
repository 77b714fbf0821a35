/* Unit tests for core/requestlog.c (traceparent parsing, record keys and
 * JSON, the retention sweep) and the store scans it relies on
 * (sl_store_scan_rev, sl_store_count). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "pipeline.h"
#include "reqlog_record.h"
#include "requestlog.h"
#include "store.h"

#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define SPAN "00f067aa0ba902b7"

static void
traceparent_valid_is_read(void **state) {
    (void)state;
    char t[33], p[17];
    unsigned char f = 0;
    const char *v = "00-" TRACE "-" SPAN "-01";
    assert_int_equal(sl_trace_parse(v, strlen(v), t, p, &f), 0);
    assert_string_equal(t, TRACE);
    assert_string_equal(p, SPAN);
    assert_int_equal(f, 1);
    /* Surrounding blanks are allowed; a later version may add fields. */
    v = "  01-" TRACE "-" SPAN "-03-more ";
    assert_int_equal(sl_trace_parse(v, strlen(v), t, p, &f), 0);
    assert_int_equal(f, 3);
}

static void
traceparent_malformed_is_refused(void **state) {
    (void)state;
    static const char *const bad[] = {
        "",
        "00-" TRACE "-" SPAN "-0",    /* short */
        "00-" TRACE "-" SPAN "-01-x", /* v00 has four fields */
        "01-" TRACE "-" SPAN "-01x",  /* no '-' before more */
        "ff-" TRACE "-" SPAN "-01",   /* version ff */
        "0g-" TRACE "-" SPAN "-01",   /* not hex */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" SPAN "-01", /* upper */
        "00-00000000000000000000000000000000-" SPAN "-01",
        "00-" TRACE "-0000000000000000-01",
        "00_" TRACE "-" SPAN "-01",
        "00-" TRACE "-" SPAN "-zz",
    };
    char t[33] = "keep", p[17] = "keep";
    unsigned char f = 7;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sl_trace_parse(bad[i], strlen(bad[i]), t, p, &f),
                         SL_EINVAL);
    /* A refused value leaves the outputs as they were. */
    assert_string_equal(t, "keep");
    assert_int_equal(f, 7);
}

static void
keys_sort_by_time_then_worker_and_sequence(void **state) {
    (void)state;
    unsigned char a[SL_REQLOG_KEY_LEN], b[SL_REQLOG_KEY_LEN],
        c[SL_REQLOG_KEY_LEN];
    sl_reqlog_key(a, 1700000000000000LL, 3, 0xffffffffu);
    sl_reqlog_key(b, 1700000000000001LL, 0, 0);
    sl_reqlog_key(c, 1700000000000001LL, 0, 1);
    assert_true(memcmp(a, b, sizeof(a)) < 0);
    assert_true(memcmp(b, c, sizeof(b)) < 0);
    assert_int_equal(sl_reqlog_key_time(b, sizeof(b)), 1700000000000001LL);
}

static void
record_is_valid_json_whatever_the_bytes(void **state) {
    (void)state;
    sl_config_t cfg = {0};
    sl_route_t route = {.path = "/v1/chat/completions", .kind = SL_ROUTE_CHAT};
    sl_request_t r = {0};
    r.cfg = &cfg;
    r.route = &route;
    r.status = 200;
    r.model = "m\"odel\n";
    r.consumer = "bad\xff\xfe utf8 \xc3\xa9";
    r.prompt_tokens = 3;
    r.completion_tokens = r.total_tokens = -1;
    r.attempts = 2;
    strcpy(r.trace_id, TRACE);
    r.log_answer = "caf\xc3\xa9";
    r.log_answer_len = 5;
    size_t len = 0;
    char *s = sl_reqlog_format(&r, 1700000000123456LL, &len);
    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "time")->valuestring,
                        "2023-11-14T22:13:20.123456Z");
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring,
                        "m\"odel\n");
    assert_string_equal(cJSON_GetObjectItem(j, "consumer")->valuestring,
                        "bad\xef\xbf\xbd\xef\xbf\xbd utf8 \xc3\xa9");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "completion_tokens")));
    assert_int_equal(cJSON_GetObjectItem(j, "prompt_tokens")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(j, "attempts")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(j, "trace_id")->valuestring, TRACE);
    assert_string_equal(cJSON_GetObjectItem(j, "response_text")->valuestring,
                        "caf\xc3\xa9");
    assert_null(cJSON_GetObjectItem(j, "request_body"));
    cJSON_Delete(j);
    free(s);
}

static void
record_carries_verdict_attributes_and_plugin_fields(void **state) {
    (void)state;
    sl_config_t cfg = {0};
    sl_request_t r = {0};
    sl_pipe_t p = {0};
    r.cfg = &cfg;
    r.pipe = &p;
    r.status = 400;
    p.verdict_plugin = "guard";
    p.verdict = "respond";
    p.verdict_phase = SLUICE_PHASE_REQUEST;
    p.aname[0] = "auth.key_id";
    p.avalue[0] = "k1";
    p.aname[1] = "ratelimit.rpm";
    p.avalue[1] = "60";
    p.nattrs = 2;
    /* A plugin's field may be called "status": it must not clash. */
    r.plugin_log = ",\"guardrail\":\"watch\",\"status\":\"x\"";
    char *s = sl_reqlog_format(&r, 1700000000000000LL, NULL);
    assert_non_null(s);
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, 400);
    cJSON *v = cJSON_GetObjectItem(j, "verdict");
    assert_string_equal(cJSON_GetObjectItem(v, "plugin")->valuestring, "guard");
    assert_string_equal(cJSON_GetObjectItem(v, "action")->valuestring,
                        "respond");
    assert_string_equal(cJSON_GetObjectItem(v, "phase")->valuestring,
                        "on_request");
    cJSON *a = cJSON_GetObjectItem(j, "attributes");
    assert_string_equal(cJSON_GetObjectItem(a, "ratelimit.rpm")->valuestring,
                        "60");
    cJSON *f = cJSON_GetObjectItem(j, "plugin_fields");
    assert_string_equal(cJSON_GetObjectItem(f, "guardrail")->valuestring,
                        "watch");
    assert_string_equal(cJSON_GetObjectItem(f, "status")->valuestring, "x");
    cJSON_Delete(j);
    free(s);
}

/* The stored value of a one-record batch. */
static const unsigned char *
only_value(const sl_store_batch_t *b, size_t klen, size_t *vlen) {
    size_t at = SL_STORE_ITEM_HDR + klen;
    *vlen = b->len - at;
    return b->buf + at;
}

static int
rstr_eq(sl_rstr_t s, const char *want) {
    return s.p != NULL && s.len == strlen(want) &&
           memcmp(s.p, want, s.len) == 0;
}

static void
stored_record_reads_back_every_field(void **state) {
    (void)state;
    sl_config_t cfg = {0};
    char *plugins[] = {"auth", "guard"};
    sl_route_t route = {.path = "/v1/chat/completions",
                        .kind = SL_ROUTE_CHAT,
                        .plugins = plugins,
                        .nplugins = 2};
    sl_pipe_t p = {0};
    sl_request_t r = {0};
    r.cfg = &cfg;
    r.route = &route;
    r.pipe = &p;
    r.http.method_str = "POST";
    r.http.method_len = 4;
    r.http.path = "/v1/chat/completions?x"; /* only path_len counts */
    r.http.path_len = 20;
    r.status = 429;
    r.streaming = 1;
    r.t_start = 1000;
    r.t_first_byte = 1250;
    r.upstream_us = 700;
    r.model = "gpt";
    r.provider = "openai";
    r.target_model = "gpt-4o";
    r.consumer = "alice";
    r.error_code = "rate_limited";
    r.prompt_tokens = 10;
    r.completion_tokens = 5;
    r.total_tokens = 15;
    r.cached_tokens = -1;
    r.reasoning_tokens = 2;
    r.cost_micros = 1234567;
    r.attempts = 3;
    r.bytes_in = 99;
    r.bytes_out = 1000;
    strcpy(r.trace_id, TRACE);
    strcpy(r.span_id, SPAN);
    p.verdict_plugin = "guard";
    p.verdict = "respond";
    p.verdict_phase = SLUICE_PHASE_REQUEST;
    p.aname[0] = "auth.key_id";
    p.avalue[0] = "k1";
    p.nattrs = 1;
    r.plugin_log = ",\"cache\":\"miss\"";
    sl_store_batch_t b = {0};
    unsigned char key[SL_REQLOG_KEY_LEN];
    sl_reqlog_key(key, 1700000000000001LL, 1, 2);
    assert_int_equal(
        sl_reqlog_encode(&b, key, sizeof(key), &r, 1700000000000001LL, 3000),
        0);
    assert_int_equal(b.n, 1);
    size_t vlen;
    const unsigned char *v = only_value(&b, sizeof(key), &vlen);
    sl_reqlog_rec_t rec;
    assert_int_equal(sl_reqlog_decode(v, vlen, &rec), 0);
    assert_int_equal(rec.ts_us, 1700000000000001LL);
    assert_int_equal(rec.latency_us, 2000);
    assert_int_equal(rec.ttft_us, 250);
    assert_int_equal(rec.upstream_us, 700);
    assert_int_equal(rec.status, 429);
    assert_int_equal(rec.cost_micros, 1234567);
    assert_int_equal(rec.cached, -1);
    assert_true(rstr_eq(rec.path, "/v1/chat/completions"));
    assert_true(rstr_eq(rec.consumer, "alice"));
    assert_true(rstr_eq(rec.model, "gpt"));
    assert_true(rstr_eq(rec.trace_id, TRACE));
    assert_null(rec.parent_id.p);
    assert_null(rec.request_body.p);
    assert_int_equal(rec.nplugins, 2);
    assert_int_equal(rec.nattrs, 1);

    size_t len = 0;
    char *json = sl_reqlog_render(v, vlen, &len);
    assert_non_null(json);
    assert_int_equal(strlen(json), len);
    cJSON *j = cJSON_Parse(json);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "time")->valuestring,
                        "2023-11-14T22:13:20.000001Z");
    assert_string_equal(cJSON_GetObjectItem(j, "path")->valuestring,
                        "/v1/chat/completions");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "parent_span_id")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "cached_tokens")));
    assert_int_equal(cJSON_GetObjectItem(j, "bytes_out")->valueint, 1000);
    assert_string_equal(
        cJSON_GetArrayItem(cJSON_GetObjectItem(j, "plugins"), 1)->valuestring,
        "guard");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "verdict"), "phase")
            ->valuestring,
        "on_request");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "attributes"), "auth.key_id")
            ->valuestring,
        "k1");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "plugin_fields"), "cache")
            ->valuestring,
        "miss");
    cJSON_Delete(j);
    /* Exact micro-dollars and milliseconds, never float noise. */
    assert_non_null(strstr(json, "\"cost\":1.234567,"));
    assert_non_null(strstr(json, "\"latency_ms\":2.000,"));
    assert_non_null(strstr(json, "\"ttft_ms\":0.250,"));
    free(json);

    /* Cut short anywhere, it is refused, never read past its end. */
    for (size_t n = 0; n < vlen; n++) {
        unsigned char *cut = malloc(n + 1);
        memcpy(cut, v, n);
        assert_int_equal(sl_reqlog_decode(cut, n, &rec), SL_EINVAL);
        assert_null(sl_reqlog_render(cut, n, NULL));
        free(cut);
    }
    sl_store_batch_free(&b);
}

static void
record_written_as_json_by_an_older_version_reads_as_it_was(void **state) {
    (void)state;
    const char old[] = "{\"time\":\"x\",\"status\":200}";
    size_t len = 0;
    char *s = sl_reqlog_render(old, sizeof(old) - 1, &len);
    assert_non_null(s);
    assert_string_equal(s, old);
    assert_int_equal(len, sizeof(old) - 1);
    sl_reqlog_rec_t rec;
    assert_int_equal(sl_reqlog_decode(old, sizeof(old) - 1, &rec), SL_EINVAL);
    free(s);
}

/* ---- against a real store ---- */

static char dir[64];

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state) {
    sl_store_options_t o = {.dir = dir, .map_size = (size_t)16 << 20};
    strcpy(dir, "/tmp/sl_reqlog_XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    sl_store_t *st = NULL;
    if (sl_store_open(&o, &st) != 0)
        return -1;
    *state = st;
    return 0;
}

static int
teardown(void **state) {
    sl_store_close(*state);
    return nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void
put(sl_store_t *st, int64_t t_us, uint32_t seq) {
    unsigned char k[SL_REQLOG_KEY_LEN];
    sl_reqlog_key(k, t_us, 0, seq);
    assert_int_equal(sl_store_put_sync(st, SL_STORE_REQUESTLOG, NULL, k,
                                       sizeof(k), "{}", 2, 0),
                     0);
}

struct seen {
    int64_t t[64];
    size_t n, stop_after;
};

static int
collect(void *ud, const void *key, size_t klen, const void *val, size_t vlen,
        int64_t exp) {
    struct seen *s = ud;
    (void)val;
    (void)vlen;
    (void)exp;
    s->t[s->n++] = sl_reqlog_key_time(key, klen);
    return s->stop_after != 0 && s->n >= s->stop_after;
}

static void
scan_rev_goes_newest_first_from_the_end_key(void **state) {
    sl_store_t *st = *state;
    for (int i = 1; i <= 5; i++)
        put(st, i * 1000, 0);
    uint64_t n = 0;
    assert_int_equal(sl_store_count(st, SL_STORE_REQUESTLOG, &n), 0);
    assert_int_equal(n, 5);
    struct seen s = {.stop_after = 0};
    assert_int_equal(
        sl_store_scan_rev(st, SL_STORE_REQUESTLOG, NULL, NULL, 0, collect, &s),
        0);
    assert_int_equal(s.n, 5);
    assert_int_equal(s.t[0], 5000);
    assert_int_equal(s.t[4], 1000);
    /* From an end key that exists (included), and one between keys. */
    unsigned char k[SL_REQLOG_KEY_LEN];
    sl_reqlog_key(k, 3000, 0, 0);
    s = (struct seen){.stop_after = 0};
    sl_store_scan_rev(st, SL_STORE_REQUESTLOG, NULL, k, sizeof(k), collect, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.t[0], 3000);
    sl_reqlog_key(k, 3500, 0, 0);
    s = (struct seen){.stop_after = 2};
    sl_store_scan_rev(st, SL_STORE_REQUESTLOG, NULL, k, sizeof(k), collect, &s);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.t[0], 3000);
    assert_int_equal(s.t[1], 2000);
    /* Past the last key: from the last one. */
    sl_reqlog_key(k, 9000, 0, 0);
    s = (struct seen){.stop_after = 1};
    sl_store_scan_rev(st, SL_STORE_REQUESTLOG, NULL, k, sizeof(k), collect, &s);
    assert_int_equal(s.t[0], 5000);
}

static void
scan_rev_stays_inside_its_namespace(void **state) {
    sl_store_t *st = *state;
    static const char *const ns[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            char key[2] = {(char)('0' + j), 0};
            assert_int_equal(
                sl_store_put_sync(st, SL_STORE_KV, ns[i], key, 1, ns[i], 1, 0),
                0);
        }
    struct seen s = {0};
    assert_int_equal(
        sl_store_scan_rev(st, SL_STORE_KV, "b", NULL, 0, collect, &s), 0);
    assert_int_equal(s.n, 2); /* b's two keys, not a's or c's */
    /* And from an end key inside it. */
    s = (struct seen){0};
    assert_int_equal(
        sl_store_scan_rev(st, SL_STORE_KV, "c", "0", 1, collect, &s), 0);
    assert_int_equal(s.n, 1);
}

static void
sweep_removes_the_oldest_beyond_the_count_and_the_age(void **state) {
    sl_store_t *st = *state;
    int64_t now = 1700000000000000LL;
    for (int i = 0; i < 10; i++)
        put(st, now - (10 - i) * 1000000LL, (uint32_t)i); /* 10 s .. 1 s ago */
    size_t deleted = 0;
    /* The count first: 10 records, keep 7. */
    assert_int_equal(sl_reqlog_sweep(st, now, 3600000, 7, 100, &deleted), 0);
    assert_int_equal(deleted, 3);
    sl_store_flush(st);
    uint64_t n = 0;
    sl_store_count(st, SL_STORE_REQUESTLOG, &n);
    assert_int_equal(n, 7);
    /* The age: older than 4.5 s goes (7 s .. 5 s ago). */
    assert_int_equal(sl_reqlog_sweep(st, now, 4500, 100, 100, &deleted), 0);
    assert_int_equal(deleted, 3);
    sl_store_flush(st);
    struct seen s = {0};
    sl_store_scan(st, SL_STORE_REQUESTLOG, NULL, NULL, 0, collect, &s);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.t[0], now - 4000000LL);
    /* A batch bounds one sweep's work. */
    assert_int_equal(sl_reqlog_sweep(st, now, 1, 100, 2, &deleted), 0);
    assert_int_equal(deleted, 2);
    /* Nothing to do is cheap and does nothing. */
    sl_store_flush(st);
    assert_int_equal(sl_reqlog_sweep(st, now, 3600000, 100, 100, &deleted), 0);
    assert_int_equal(deleted, 0);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(traceparent_valid_is_read),
        cmocka_unit_test(traceparent_malformed_is_refused),
        cmocka_unit_test(keys_sort_by_time_then_worker_and_sequence),
        cmocka_unit_test(record_is_valid_json_whatever_the_bytes),
        cmocka_unit_test(record_carries_verdict_attributes_and_plugin_fields),
        cmocka_unit_test(stored_record_reads_back_every_field),
        cmocka_unit_test(
            record_written_as_json_by_an_older_version_reads_as_it_was),
        cmocka_unit_test_setup_teardown(
            scan_rev_goes_newest_first_from_the_end_key, setup, teardown),
        cmocka_unit_test_setup_teardown(scan_rev_stays_inside_its_namespace,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            sweep_removes_the_oldest_beyond_the_count_and_the_age, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
