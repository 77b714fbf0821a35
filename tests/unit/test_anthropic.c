/* Unit tests for core/providers/anthropic.c: the OpenAI <-> Anthropic
 * translations of requests, answers, errors and streams. Whole documents
 * are compared with golden files under tests/unit/golden/anthropic/ (as
 * parsed JSON); variants and refusals are written inline, with ' for ". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "providers/anthropic.h"
#include "sse.h"

#ifndef SL_SRCDIR
#error "SL_SRCDIR must name the source directory"
#endif

#define GOLDEN SL_SRCDIR "/tests/unit/golden/anthropic/"
#define CREATED 1700000000L
#define MODEL "claude-test"
#define DEFAULT_MAX 1024

static char *
read_file(const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof(path), "%s%s", GOLDEN, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    if (len != NULL)
        *len = (size_t)n;
    return s;
}

static cJSON *
golden(const char *name) {
    char *s = read_file(name, NULL);
    cJSON *j = cJSON_Parse(s);
    if (j == NULL)
        fail_msg("%s is not JSON", name);
    free(s);
    return j;
}

/* JSON written with ' for ". */
static cJSON *
q(const char *text) {
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    cJSON *j = cJSON_Parse(s);
    if (j == NULL)
        fail_msg("test JSON does not parse: %s", s);
    free(s);
    return j;
}

/* Asserts that got equals want (as JSON); deletes both. */
static void
assert_json(cJSON *got, cJSON *want, const char *what) {
    if (!cJSON_Compare(got, want, 1)) {
        char *g = cJSON_Print(got), *w = cJSON_Print(want);
        print_error("%s:\n--- got\n%s\n--- want\n%s\n", what, g, w);
        free(g);
        free(w);
        cJSON_Delete(got);
        cJSON_Delete(want);
        fail();
    }
    cJSON_Delete(got);
    cJSON_Delete(want);
}

/* ---- requests ---- */

static cJSON *
translate_ok(cJSON *chat) {
    char err[300];
    cJSON *out = NULL;
    int rc =
        sl_anthropic_request(chat, MODEL, DEFAULT_MAX, &out, err, sizeof(err));
    if (rc != 0)
        fail_msg("translation failed (%d): %s", rc, err);
    cJSON_Delete(chat);
    return out;
}

static void
request_golden(const char *name) {
    char in[128], out[128];
    snprintf(in, sizeof(in), "request_%s.in.json", name);
    snprintf(out, sizeof(out), "request_%s.out.json", name);
    assert_json(translate_ok(golden(in)), golden(out), in);
}

/* The refusal's message, which must hold `needle`. */
static void
assert_refused(const char *chat_q, const char *needle) {
    char err[300] = "untouched";
    cJSON *chat = q(chat_q), *out = (cJSON *)1;
    int rc =
        sl_anthropic_request(chat, MODEL, DEFAULT_MAX, &out, err, sizeof(err));
    cJSON_Delete(chat);
    if (rc != SL_EINVAL)
        fail_msg("expected a refusal mentioning '%s', got %d", needle, rc);
    assert_null(out);
    if (strstr(err, needle) == NULL)
        fail_msg("message '%s' does not mention '%s'", err, needle);
}

static void
test_request_copies_sampling_and_stream_and_drops_unknowns(void **state) {
    (void)state;
    request_golden("basic");
}

static void
test_request_hoists_every_system_and_developer_message(void **state) {
    (void)state;
    request_golden("system");
}

static void
test_request_merges_consecutive_same_role_messages(void **state) {
    (void)state;
    request_golden("merge");
}

static void
test_request_prefers_max_completion_tokens_and_maps_stop_and_user(
    void **state) {
    (void)state;
    request_golden("stop_user");
}

static void
test_request_turns_image_urls_into_base64_and_url_sources(void **state) {
    (void)state;
    request_golden("images");
}

static void
test_request_maps_tools_required_choice_and_serial_calls(void **state) {
    (void)state;
    request_golden("tools");
}

static void
test_request_turns_tool_calls_and_results_into_blocks(void **state) {
    (void)state;
    request_golden("tool_roundtrip");
}

static void
test_request_uses_default_max_tokens_or_max_tokens(void **state) {
    (void)state;
    cJSON *out = translate_ok(
        q("{'model':'m','messages':[{'role':'user','content':'x'}]}"));
    assert_int_equal(
        cJSON_GetObjectItemCaseSensitive(out, "max_tokens")->valuedouble,
        DEFAULT_MAX);
    cJSON_Delete(out);
    out = translate_ok(q("{'model':'m','max_tokens':77,'max_completion_tokens':"
                         "null,'messages':[{'role':'user','content':'x'}]}"));
    assert_int_equal(
        cJSON_GetObjectItemCaseSensitive(out, "max_tokens")->valuedouble, 77);
    cJSON_Delete(out);
}

static void
test_request_stop_array_becomes_stop_sequences(void **state) {
    (void)state;
    cJSON *out = translate_ok(q("{'model':'m','stop':['a','b'],"
                                "'messages':[{'role':'user','content':'x'}]}"));
    assert_json(cJSON_Duplicate(
                    cJSON_GetObjectItemCaseSensitive(out, "stop_sequences"), 1),
                q("['a','b']"), "stop_sequences");
    cJSON_Delete(out);
}

/* The tool_choice forms, each as the Anthropic object it becomes (or
 * absent). */
static void
test_request_maps_each_tool_choice(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"'auto'", "{'type':'auto'}"},
        {"'none'", "{'type':'none'}"},
        {"'required'", "{'type':'any'}"},
        {"{'type':'function','function':{'name':'f'}}",
         "{'type':'tool','name':'f'}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char chat[400];
        snprintf(chat, sizeof(chat),
                 "{'model':'m','messages':[{'role':'user','content':'x'}],"
                 "'tools':[{'type':'function','function':{'name':'f'}}],"
                 "'tool_choice':%s}",
                 cases[i][0]);
        cJSON *out = translate_ok(q(chat));
        assert_json(
            cJSON_Duplicate(
                cJSON_GetObjectItemCaseSensitive(out, "tool_choice"), 1),
            q(cases[i][1]), cases[i][0]);
        cJSON_Delete(out);
    }
    /* parallel_tool_calls false alone asks for auto, one call at a time;
     * with "none" there are no calls to serialise. */
    cJSON *out = translate_ok(
        q("{'model':'m','messages':[{'role':'user','content':'x'}],"
          "'tools':[{'type':'function','function':{'name':'f'}}],"
          "'parallel_tool_calls':false}"));
    assert_json(cJSON_Duplicate(
                    cJSON_GetObjectItemCaseSensitive(out, "tool_choice"), 1),
                q("{'type':'auto','disable_parallel_tool_use':true}"),
                "serial");
    cJSON_Delete(out);
    out = translate_ok(
        q("{'model':'m','messages':[{'role':'user','content':'x'}],"
          "'tools':[{'type':'function','function':{'name':'f'}}],"
          "'tool_choice':'none','parallel_tool_calls':false}"));
    assert_json(cJSON_Duplicate(
                    cJSON_GetObjectItemCaseSensitive(out, "tool_choice"), 1),
                q("{'type':'none'}"), "none, serial");
    cJSON_Delete(out);
    /* No tools at all: neither tools nor a choice reach Anthropic. */
    out = translate_ok(q("{'model':'m','messages':[{'role':'user','content':"
                         "'x'}],'tools':[],'tool_choice':'auto'}"));
    assert_null(cJSON_GetObjectItemCaseSensitive(out, "tools"));
    assert_null(cJSON_GetObjectItemCaseSensitive(out, "tool_choice"));
    cJSON_Delete(out);
}

static void
test_request_drops_empty_assistant_text_beside_tool_calls(void **state) {
    (void)state;
    cJSON *out = translate_ok(
        q("{'model':'m','messages':[{'role':'user','content':'x'},"
          "{'role':'assistant','content':'','tool_calls':[{'id':'c1',"
          "'type':'function','function':{'name':'f','arguments':"
          "'{\\'a\\':1}'}}]},{'role':'tool','tool_call_id':'c1',"
          "'content':'ok'}]}"));
    assert_json(
        cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(out, "messages"), 1),
        q("[{'role':'user','content':'x'},{'role':'assistant','content':[{"
          "'type':'tool_use','id':'c1','name':'f','input':{'a':1}}]},"
          "{'role':'user','content':[{'type':'tool_result','tool_use_id':"
          "'c1','content':'ok'}]}]"),
        "messages");
    cJSON_Delete(out);
}

static void
test_request_refuses_invalid_tool_call_arguments(void **state) {
    (void)state;
    assert_refused(
        "{'model':'m','messages':[{'role':'user','content':'x'},"
        "{'role':'assistant','tool_calls':[{'id':'c','type':"
        "'function','function':{'name':'f','arguments':'{oops'}}]}]}",
        "messages[1].tool_calls[0].function.arguments is not valid "
        "JSON");
    assert_refused("{'model':'m','messages':[{'role':'user','content':'x'},"
                   "{'role':'assistant','tool_calls':[{'id':'c','type':"
                   "'function','function':{'name':'f','arguments':'[1]'}}]}]}",
                   "must be a JSON object");
    assert_refused("{'model':'m','messages':[{'role':'user','content':'x'},"
                   "{'role':'assistant','tool_calls':[{'type':'function',"
                   "'function':{'name':'f','arguments':'{}'}}]}]}",
                   "tool_calls[0].id must be a string");
    assert_refused("{'model':'m','messages':[{'role':'tool','content':'x'}]}",
                   "messages[0].tool_call_id must be a string");
}

static void
test_request_refuses_shapes_anthropic_cannot_take(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"{'model':'m','n':2,'messages':[{'role':'user','content':'x'}]}",
         "'n'"},
        {"{'model':'m','logprobs':true,'messages':[{'role':'user','content':"
         "'x'}]}",
         "logprobs"},
        {"{'model':'m','response_format':{'type':'json_object'},'messages':"
         "[{'role':'user','content':'x'}]}",
         "response_format"},
        {"{'model':'m','messages':[{'role':'function','name':'f','content':"
         "'x'}]}",
         "role 'function'"},
        {"{'model':'m','messages':[{'role':'user','content':[{'type':"
         "'input_audio','input_audio':{}}]}]}",
         "content parts of type 'input_audio'"},
        {"{'model':'m','messages':[{'role':'user','content':[{'type':"
         "'image_url','image_url':{'url':'ftp://x/y.png'}}]}]}",
         "http(s) URL"},
        {"{'model':'m','messages':[{'role':'user','content':[{'type':"
         "'image_url','image_url':{'url':'data:image/png,abc'}}]}]}",
         "data:MEDIA_TYPE;base64,DATA"},
        {"{'model':'m','stop':5,'messages':[{'role':'user','content':'x'}]}",
         "'stop'"},
        {"{'model':'m','stop':['a',1],'messages':[{'role':'user','content':"
         "'x'}]}",
         "'stop'"},
        {"{'model':'m','max_tokens':0,'messages':[{'role':'user','content':"
         "'x'}]}",
         "'max_tokens' must be a positive integer"},
        {"{'model':'m','max_completion_tokens':1.5,'messages':[{'role':"
         "'user','content':'x'}]}",
         "'max_completion_tokens' must be a positive integer"},
        {"{'model':'m','temperature':'hot','messages':[{'role':'user',"
         "'content':'x'}]}",
         "'temperature' must be a number"},
        {"{'model':'m','user':7,'messages':[{'role':'user','content':'x'}]}",
         "'user' must be a string"},
        {"{'model':'m','messages':[{'role':'system','content':'x'}]}",
         "not only system messages"},
        {"{'model':'m','messages':[{'role':'user','content':'x'}],'tools':"
         "[{'type':'web_search'}]}",
         "tools[0]: only tools of type 'function'"},
        {"{'model':'m','messages':[{'role':'user','content':'x'}],'tools':"
         "[{'type':'function','function':{'name':'f'}}],'tool_choice':"
         "'sometimes'}",
         "'tool_choice' must be"},
        {"{'model':'m','messages':[{'role':'user','content':'x'}],"
         "'functions':[{'name':'f'}]}",
         "use 'tools'"},
        {"{'model':'m','messages':[{'role':'user','content':7}]}",
         "messages[0].content must be"},
        {"{'model':'m','messages':[{'role':'oracle','content':'x'}]}",
         "role 'oracle'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_refused(cases[i][0], cases[i][1]);
}

/* ---- responses ---- */

static void
response_golden(const char *name) {
    char in[128], out[128];
    snprintf(in, sizeof(in), "response_%s.in.json", name);
    snprintf(out, sizeof(out), "response_%s.out.json", name);
    cJSON *msg = golden(in), *got = NULL;
    assert_int_equal(sl_anthropic_response(msg, CREATED, &got), 0);
    cJSON_Delete(msg);
    assert_json(got, golden(out), in);
}

static void
test_response_text_blocks_concatenate(void **state) {
    (void)state;
    response_golden("text");
}

static void
test_response_tool_use_only_has_null_content_and_tool_calls(void **state) {
    (void)state;
    response_golden("tool_use");
}

static void
test_response_mixed_text_and_tools_skips_thinking(void **state) {
    (void)state;
    response_golden("mixed");
}

static void
test_response_usage_counts_cache_tokens_in_the_prompt(void **state) {
    (void)state;
    response_golden("cache_usage");
}

static void
test_response_maps_each_stop_reason(void **state) {
    (void)state;
    static const char *const cases[][2] = {
        {"'end_turn'", "stop"},
        {"'stop_sequence'", "stop"},
        {"'tool_use'", "tool_calls"},
        {"'max_tokens'", "length"},
        {"'pause_turn'", "stop"},
        {"'refusal'", "stop"},
        {"null", "stop"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char m[300];
        snprintf(m, sizeof(m),
                 "{'id':'msg','type':'message','model':'c','content':[{'type':"
                 "'text','text':'t'}],'stop_reason':%s,'usage':{}}",
                 cases[i][0]);
        cJSON *msg = q(m), *got = NULL;
        assert_int_equal(sl_anthropic_response(msg, CREATED, &got), 0);
        const cJSON *choice = cJSON_GetArrayItem(
            cJSON_GetObjectItemCaseSensitive(got, "choices"), 0);
        assert_string_equal(
            cJSON_GetObjectItemCaseSensitive(choice, "finish_reason")
                ->valuestring,
            cases[i][1]);
        cJSON_Delete(msg);
        cJSON_Delete(got);
    }
}

static void
test_response_empty_content_is_empty_string(void **state) {
    (void)state;
    cJSON *msg = q("{'id':'m','content':[],'stop_reason':'end_turn','usage':"
                   "{'input_tokens':3,'output_tokens':0}}"),
          *got = NULL;
    assert_int_equal(sl_anthropic_response(msg, CREATED, &got), 0);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(got, "choices"), 0),
        "message");
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(m, "content")->valuestring, "");
    assert_null(cJSON_GetObjectItemCaseSensitive(m, "tool_calls"));
    cJSON_Delete(msg);
    cJSON_Delete(got);
}

static void
test_response_refuses_what_is_not_a_message(void **state) {
    (void)state;
    static const char *const cases[] = {"[]", "{'id':'x'}",
                                        "{'content':'text'}"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *msg = q(cases[i]), *got = (cJSON *)1;
        assert_int_equal(sl_anthropic_response(msg, CREATED, &got), SL_EINVAL);
        assert_null(got);
        cJSON_Delete(msg);
    }
}

/* ---- errors ---- */

typedef struct {
    const char *type;
    int upstream;
    int status;
    const char *code;
    const char *openai_type;
    int passes_message; /* else the message names the provider */
} error_case_t;

static void
check_error(const error_case_t *c, cJSON *e, int status, const char *code,
            const char *message) {
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
    assert_non_null(e);
    assert_int_equal(status, c->status);
    assert_string_equal(code, c->code);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(err, "code")->valuestring, c->code);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(err, "type")->valuestring,
        c->openai_type);
    assert_true(cJSON_IsString(m));
    if (c->passes_message) {
        assert_string_equal(m->valuestring, message);
    } else {
        assert_non_null(strstr(m->valuestring, "provider 'claude'"));
        assert_non_null(strstr(m->valuestring, message));
        if (c->upstream > 0) {
            char st[16];
            snprintf(st, sizeof(st), "%d", c->upstream);
            assert_non_null(strstr(m->valuestring, st));
        }
    }
}

static void
test_error_table_maps_every_anthropic_error(void **state) {
    (void)state;
    static const error_case_t cases[] = {
        {"invalid_request_error", 400, 400, "upstream_error",
         "invalid_request_error", 1},
        {"authentication_error", 401, 502, "upstream_error", "upstream_error",
         0},
        {"billing_error", 402, 502, "upstream_error", "upstream_error", 0},
        {"permission_error", 403, 502, "upstream_error", "upstream_error", 0},
        {"not_found_error", 404, 404, "upstream_error", "invalid_request_error",
         1},
        {"request_too_large", 413, 413, "upstream_error",
         "invalid_request_error", 1},
        {"rate_limit_error", 429, 429, "upstream_rate_limited",
         "rate_limit_error", 1},
        {"api_error", 500, 502, "upstream_error", "upstream_error", 0},
        {"timeout_error", 504, 504, "upstream_timeout", "upstream_error", 0},
        {"overloaded_error", 529, 503, "overloaded", "service_unavailable", 0},
        /* A type we do not know yet falls back on its status. */
        {"brand_new_error", 409, 409, "upstream_error", "conflict_error", 1},
        {"brand_new_error", 503, 502, "upstream_error", "upstream_error", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const error_case_t *c = &cases[i];
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
                 "\"message\":\"something about %s\"}}",
                 c->type, c->type);
        char message[128];
        snprintf(message, sizeof(message), "something about %s", c->type);
        int status = 0;
        const char *code = NULL;
        cJSON *e = sl_anthropic_error_body(c->upstream, body, strlen(body),
                                           "claude", &status, &code);
        check_error(c, e, status, code, message);
        cJSON_Delete(e);
        /* The same type arriving as a stream's error event (no status). */
        if (strcmp(c->type, "brand_new_error") != 0) {
            error_case_t ev = *c;
            ev.upstream = 0;
            e = sl_anthropic_error_json(c->type, message, 0, "claude", &status,
                                        &code);
            check_error(&ev, e, status, code, message);
            cJSON_Delete(e);
        }
    }
}

static void
test_error_body_that_is_not_anthropic_shaped_uses_the_status(void **state) {
    (void)state;
    const char *html = "<html>bad gateway</html>";
    int status;
    const char *code;
    cJSON *e = sl_anthropic_error_body(502, html, strlen(html), "claude",
                                       &status, &code);
    assert_int_equal(status, 502);
    const char *m = cJSON_GetObjectItemCaseSensitive(
                        cJSON_GetObjectItemCaseSensitive(e, "error"), "message")
                        ->valuestring;
    assert_string_equal(m, "provider 'claude' answered with status 502");
    cJSON_Delete(e);
    /* A 4xx without a message still says who refused what. */
    e = sl_anthropic_error_body(422, "", 0, "claude", &status, &code);
    assert_int_equal(status, 422);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(e, "error"), "message")
            ->valuestring,
        "provider 'claude' answered with status 422");
    cJSON_Delete(e);
}

/* ---- streams ---- */

typedef struct {
    cJSON *chunks; /* every chunk, in order */
    int fail_with; /* the callback's answer once `fail_after` chunks came */
    int fail_after;
    sl_anthropic_stream_t *s;
    int rc; /* the first non-zero sl_anthropic_stream_event result */
} sink_t;

static int
collect(void *ud, const cJSON *chunk, const char *json, size_t len) {
    sink_t *k = ud;
    /* The printed form and the object say the same thing. */
    cJSON *parsed = cJSON_ParseWithLength(json, len);
    assert_true(cJSON_Compare(parsed, chunk, 1));
    cJSON_Delete(parsed);
    if (k->fail_with != 0 && cJSON_GetArraySize(k->chunks) >= k->fail_after)
        return k->fail_with;
    cJSON_AddItemToArray(k->chunks, cJSON_Duplicate(chunk, 1));
    return 0;
}

static int
feed_event(void *ud, const char *event, size_t event_len, const char *data,
           size_t len) {
    sink_t *k = ud;
    int rc = sl_anthropic_stream_event(k->s, event, event_len, data, len);
    if (rc != 0 && k->rc == 0)
        k->rc = rc;
    return 0; /* keep feeding: later events must be refused or ignored */
}

static void
sink_init(sink_t *k) {
    memset(k, 0, sizeof(*k));
    k->chunks = cJSON_CreateArray();
    k->s = sl_anthropic_stream_new(MODEL, CREATED, collect, k);
    assert_non_null(k->s);
}

static void
sink_free(sink_t *k) {
    cJSON_Delete(k->chunks);
    sl_anthropic_stream_free(k->s);
}

/* Feeds SSE text through the real event-stream parser, in small uneven
 * pieces as a network would. */
static void
feed_sse(sink_t *k, const char *text, size_t len) {
    sl_sse_t p;
    sl_sse_init(&p, 1 << 20);
    for (size_t i = 0, step = 1; i < len; i += step, step = step % 13 + 1) {
        size_t n = i + step > len ? len - i : step;
        assert_int_equal(sl_sse_feed(&p, text + i, n, feed_event, k), 0);
    }
    sl_sse_free(&p);
}

static void
feed_golden(sink_t *k, const char *name) {
    size_t len;
    char *text = read_file(name, &len);
    feed_sse(k, text, len);
    free(text);
}

static void
test_stream_text_becomes_role_content_finish_and_usage_chunks(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    feed_golden(&k, "stream_text.sse");
    assert_int_equal(k.rc, 1); /* message_stop: complete */
    assert_true(sl_anthropic_stream_done(k.s));
    assert_null(sl_anthropic_stream_error(k.s, NULL));
    assert_json(k.chunks, golden("stream_text.out.json"), "stream_text");
    k.chunks = NULL;
    sink_free(&k);
}

static void
test_stream_tool_calls_arrive_in_fragments_that_concatenate(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    feed_golden(&k, "stream_tools.sse");
    assert_int_equal(k.rc, 1);
    /* Each tool call's argument fragments, by OpenAI index. */
    char args[2][256] = {"", ""};
    const char *names[2] = {NULL, NULL};
    int fragments = 0;
    const cJSON *chunk;
    cJSON_ArrayForEach(chunk, k.chunks) {
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(
                cJSON_GetObjectItemCaseSensitive(chunk, "choices"), 0),
            "delta");
        const cJSON *call;
        cJSON_ArrayForEach(
            call, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls")) {
            int i = (int)cJSON_GetObjectItemCaseSensitive(call, "index")
                        ->valuedouble;
            assert_in_range(i, 0, 1);
            const cJSON *fn =
                cJSON_GetObjectItemCaseSensitive(call, "function");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
            if (cJSON_IsString(name))
                names[i] = name->valuestring;
            strcat(
                args[i],
                cJSON_GetObjectItemCaseSensitive(fn, "arguments")->valuestring);
            fragments += i == 0;
        }
    }
    assert_string_equal(names[0], "get_weather");
    assert_string_equal(names[1], "now");
    assert_true(fragments >= 5); /* the start and many pieces */
    assert_json(cJSON_Parse(args[0]), q("{'city':'Paris','units':['c','f']}"),
                "arguments 0");
    assert_json(cJSON_Parse(args[1]), q("{}"), "arguments 1");
    assert_json(k.chunks, golden("stream_tools.out.json"), "stream_tools");
    k.chunks = NULL;
    sink_free(&k);
}

#define EV(name, data) "event: " name "\ndata: " data "\n\n"

static const char stream_head[] =
    EV("message_start",
       "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_e\",\"model\":"
       "\"claude-test\",\"content\":[],\"usage\":{\"input_tokens\":7,"
       "\"output_tokens\":1}}}")
        EV("content_block_start", "{\"type\":\"content_block_start\",\"index\":"
                                  "0,\"content_block\":{\"type\":\"text\","
                                  "\"text\":\"\"}}")
            EV("content_block_delta",
               "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
               "\"type\":\"text_delta\",\"text\":\"Hi\"}}");

static void
test_stream_error_event_reports_type_and_message_and_stops(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    char text[2048];
    snprintf(text, sizeof(text), "%s%s%s", stream_head,
             EV("error", "{\"type\":\"error\",\"error\":{\"type\":"
                         "\"overloaded_error\",\"message\":\"Overloaded\"}}"),
             EV("message_stop", "{\"type\":\"message_stop\"}"));
    feed_sse(&k, text, strlen(text));
    assert_int_equal(k.rc, SL_EUPSTREAM);
    const char *type = NULL;
    const char *msg = sl_anthropic_stream_error(k.s, &type);
    assert_string_equal(msg, "Overloaded");
    assert_string_equal(type, "overloaded_error");
    assert_false(sl_anthropic_stream_done(k.s));
    /* Role and "Hi" only: no finish, no usage after the error. */
    assert_int_equal(cJSON_GetArraySize(k.chunks), 2);
    assert_int_equal(sl_anthropic_stream_event(k.s, "message_stop", 12,
                                               "{\"type\":\"message_stop\"}",
                                               23),
                     SL_EUPSTREAM);
    sink_free(&k);
}

static void
test_stream_cut_before_message_stop_is_not_done(void **state) {
    (void)state;
    size_t len;
    char *text = read_file("stream_text.sse", &len);
    const char *stop = strstr(text, "event: message_stop");
    assert_non_null(stop);
    sink_t k;
    sink_init(&k);
    feed_sse(&k, text, (size_t)(stop - text));
    free(text);
    assert_int_equal(k.rc, 0);
    assert_false(sl_anthropic_stream_done(k.s));
    assert_null(sl_anthropic_stream_error(k.s, NULL));
    /* Everything up to the finish chunk, and no usage chunk yet. */
    assert_int_equal(cJSON_GetArraySize(k.chunks), 4);
    const cJSON *last = cJSON_GetArrayItem(k.chunks, 3);
    assert_null(cJSON_GetObjectItemCaseSensitive(last, "usage"));
    sink_free(&k);
}

static void
test_stream_malformed_json_is_an_error_naming_the_event(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    char text[2048];
    snprintf(text, sizeof(text), "%s%s", stream_head,
             EV("content_block_delta", "{\"type\":\"content_block_delta\","));
    feed_sse(&k, text, strlen(text));
    assert_int_equal(k.rc, SL_EINVAL);
    const char *type = "unset";
    const char *msg = sl_anthropic_stream_error(k.s, &type);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "content_block_delta"));
    assert_null(type);
    sink_free(&k);
}

static void
test_stream_refuses_json_delta_for_a_block_that_is_not_a_tool(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    char text[2048];
    snprintf(text, sizeof(text), "%s%s", stream_head,
             EV("content_block_delta",
                "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{"
                "\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}"));
    feed_sse(&k, text, strlen(text));
    assert_int_equal(k.rc, SL_EINVAL);
    sink_free(&k);
}

static void
test_stream_ignores_ping_unknown_events_and_thinking(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    char text[4096];
    snprintf(text, sizeof(text), "%s%s%s%s%s%s", stream_head,
             EV("ping", "{\"type\":\"ping\"}"),
             EV("future_event", "{\"type\":\"future_event\",\"x\":1}"),
             EV("content_block_start",
                "{\"type\":\"content_block_start\",\"index\":1,"
                "\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}"),
             EV("content_block_delta",
                "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{"
                "\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}"),
             /* no event: line; the data's type names it */
             "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
             "{\"type\":\"text_delta\",\"text\":\"!\"}}\n\n");
    feed_sse(&k, text, strlen(text));
    assert_int_equal(k.rc, 0);
    assert_int_equal(cJSON_GetArraySize(k.chunks), 3); /* role, Hi, ! */
    const cJSON *last = cJSON_GetArrayItem(k.chunks, 2);
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(
                    cJSON_GetObjectItemCaseSensitive(last, "choices"), 0),
                "delta"),
            "content")
            ->valuestring,
        "!");
    sink_free(&k);
}

static void
test_stream_callback_error_stops_the_stream(void **state) {
    (void)state;
    sink_t k;
    sink_init(&k);
    k.fail_with = SL_ENOMEM;
    k.fail_after = 1;
    feed_sse(&k, stream_head, strlen(stream_head));
    assert_int_equal(k.rc, SL_ENOMEM);
    assert_non_null(sl_anthropic_stream_error(k.s, NULL));
    sink_free(&k);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_request_copies_sampling_and_stream_and_drops_unknowns),
        cmocka_unit_test(
            test_request_hoists_every_system_and_developer_message),
        cmocka_unit_test(test_request_merges_consecutive_same_role_messages),
        cmocka_unit_test(
            test_request_prefers_max_completion_tokens_and_maps_stop_and_user),
        cmocka_unit_test(
            test_request_turns_image_urls_into_base64_and_url_sources),
        cmocka_unit_test(
            test_request_maps_tools_required_choice_and_serial_calls),
        cmocka_unit_test(test_request_turns_tool_calls_and_results_into_blocks),
        cmocka_unit_test(test_request_uses_default_max_tokens_or_max_tokens),
        cmocka_unit_test(test_request_stop_array_becomes_stop_sequences),
        cmocka_unit_test(test_request_maps_each_tool_choice),
        cmocka_unit_test(
            test_request_drops_empty_assistant_text_beside_tool_calls),
        cmocka_unit_test(test_request_refuses_invalid_tool_call_arguments),
        cmocka_unit_test(test_request_refuses_shapes_anthropic_cannot_take),
        cmocka_unit_test(test_response_text_blocks_concatenate),
        cmocka_unit_test(
            test_response_tool_use_only_has_null_content_and_tool_calls),
        cmocka_unit_test(test_response_mixed_text_and_tools_skips_thinking),
        cmocka_unit_test(test_response_usage_counts_cache_tokens_in_the_prompt),
        cmocka_unit_test(test_response_maps_each_stop_reason),
        cmocka_unit_test(test_response_empty_content_is_empty_string),
        cmocka_unit_test(test_response_refuses_what_is_not_a_message),
        cmocka_unit_test(test_error_table_maps_every_anthropic_error),
        cmocka_unit_test(
            test_error_body_that_is_not_anthropic_shaped_uses_the_status),
        cmocka_unit_test(
            test_stream_text_becomes_role_content_finish_and_usage_chunks),
        cmocka_unit_test(
            test_stream_tool_calls_arrive_in_fragments_that_concatenate),
        cmocka_unit_test(
            test_stream_error_event_reports_type_and_message_and_stops),
        cmocka_unit_test(test_stream_cut_before_message_stop_is_not_done),
        cmocka_unit_test(
            test_stream_malformed_json_is_an_error_naming_the_event),
        cmocka_unit_test(
            test_stream_refuses_json_delta_for_a_block_that_is_not_a_tool),
        cmocka_unit_test(test_stream_ignores_ping_unknown_events_and_thinking),
        cmocka_unit_test(test_stream_callback_error_stops_the_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
