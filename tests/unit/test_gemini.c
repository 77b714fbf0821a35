/* Unit tests for core/providers/gemini.c: the OpenAI <-> Gemini
 * translations of requests, answers, errors and streams. Whole documents
 * are compared with golden files under tests/unit/golden/gemini/ as parsed
 * JSON, without the generated id and created; variants and refusals are
 * written inline, with ' for ". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "providers/gemini.h"
#include "sse.h"

#ifndef SL_SRCDIR
#error "SL_SRCDIR must name the source directory"
#endif

#define GOLDEN SL_SRCDIR "/tests/unit/golden/gemini/"
#define CREATED 1700000000L
#define MODEL "gemini-test"
#define ID "chatcmpl-generated"

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

/* Drops what is generated per answer: id and created, in an object or in
 * each object of an array. */
static void
drop_generated(cJSON *j) {
    cJSON *x;
    if (cJSON_IsArray(j)) {
        cJSON_ArrayForEach(x, j) drop_generated(x);
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j, "id");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "created");
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
    int rc = sl_gemini_request(chat, &out, err, sizeof(err));
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
    char err[300];
    cJSON *chat = q(chat_q), *out = NULL;
    int rc = sl_gemini_request(chat, &out, err, sizeof(err));
    cJSON_Delete(chat);
    if (rc != SL_EINVAL) {
        cJSON_Delete(out);
        fail_msg("expected a refusal for %s, got %d", chat_q, rc);
    }
    assert_null(out);
    if (strstr(err, needle) == NULL)
        fail_msg("refusal '%s' does not mention '%s'", err, needle);
}

static void
test_request_maps_roles_system_and_generation_config(void **state) {
    (void)state;
    request_golden("basic");
}

static void
test_request_joins_system_and_developer_and_merges_same_role_turns(
    void **state) {
    (void)state;
    request_golden("system");
}

static void
test_request_sends_data_urls_as_inline_data(void **state) {
    (void)state;
    request_golden("images");
}

static void
test_request_declares_tools_with_a_schema_gemini_accepts(void **state) {
    (void)state;
    request_golden("tools");
}

static void
test_request_pairs_tool_results_with_the_latest_call_of_that_id(void **state) {
    (void)state;
    request_golden("tool_roundtrip");
}

static void
test_request_without_options_has_no_generation_config(void **state) {
    (void)state;
    assert_json(translate_ok(q("{'model':'m','messages':[{'role':'user',"
                               "'content':'hi'}],'stream':false}")),
                q("{'contents':[{'role':'user','parts':[{'text':'hi'}]}]}"),
                "minimal");
}

static void
test_request_maps_tool_choice_modes(void **state) {
    (void)state;
    static const char *const modes[][2] = {
        {"auto", "AUTO"}, {"none", "NONE"}, {"required", "ANY"}};
    for (size_t i = 0; i < 3; i++) {
        char chat[300], want[300];
        snprintf(chat, sizeof(chat),
                 "{'messages':[{'role':'user','content':'x'}],"
                 "'tool_choice':'%s'}",
                 modes[i][0]);
        snprintf(want, sizeof(want),
                 "{'contents':[{'role':'user','parts':[{'text':'x'}]}],"
                 "'toolConfig':{'functionCallingConfig':{'mode':'%s'}}}",
                 modes[i][1]);
        assert_json(translate_ok(q(chat)), q(want), modes[i][0]);
    }
}

static void
test_request_maps_json_schema_response_format(void **state) {
    (void)state;
    assert_json(
        translate_ok(q("{'messages':[{'role':'user','content':'x'}],"
                       "'response_format':{'type':'json_schema',"
                       "'json_schema':{'name':'r','strict':true,'schema':{"
                       "'type':'object','additionalProperties':false,"
                       "'properties':{'a':{'type':'integer'}}}}}}")),
        q("{'contents':[{'role':'user','parts':[{'text':'x'}]}],"
          "'generationConfig':{'responseMimeType':'application/json',"
          "'responseSchema':{'type':'object','properties':{'a':{"
          "'type':'integer'}}}}}"),
        "json_schema");
}

static void
test_request_refuses_what_gemini_cannot_take(void **state) {
    (void)state;
    assert_refused("{'messages':[{'role':'user','content':'x'}],'n':2}",
                   "'n' must be 1");
    assert_refused("{'messages':[{'role':'user','content':[{'type':"
                   "'image_url','image_url':{'url':'https://x/a.png'}}]}]}",
                   "data: URLs");
    assert_refused("{'messages':[{'role':'user','content':[{'type':"
                   "'image_url','image_url':{'url':'data:image/png,abc'}}]}]}",
                   "not a base64 data: URL");
    assert_refused("{'messages':[{'role':'user','content':[{'type':"
                   "'image_url','image_url':{'url':'data:;base64,abc'}}]}]}",
                   "no media type");
    assert_refused("{'messages':[{'role':'user','content':[{'type':"
                   "'video','video':{}}]}]}",
                   "messages[0].content[0]");
    assert_refused("{'messages':[{'role':'critic','content':'x'}]}",
                   "'critic'");
    assert_refused("{'messages':[{'role':'user','content':'x'},"
                   "{'role':'tool','tool_call_id':'nope','content':'r'}]}",
                   "messages[1]: no earlier assistant tool call");
    assert_refused("{'messages':[{'role':'assistant','tool_calls':[{'id':"
                   "'c','type':'function','function':{'name':'f',"
                   "'arguments':'[1,2]'}}]}]}",
                   "arguments must be a JSON object");
    assert_refused("{'messages':[{'role':'assistant','tool_calls':[{'id':"
                   "'c','type':'function','function':{'name':'f',"
                   "'arguments':'{bad'}}]}]}",
                   "arguments must be a JSON object");
    assert_refused("{'messages':[{'role':'user','content':'x'}],'stop':3}",
                   "'stop'");
    assert_refused(
        "{'messages':[{'role':'user','content':'x'}],'temperature':'hot'}",
        "'temperature' must be a number");
    assert_refused("{'messages':[{'role':'user','content':'x'}],"
                   "'tools':{'a':1}}",
                   "'tools' must be an array");
    assert_refused("{'messages':[{'role':'user','content':'x'}],"
                   "'tools':[{'type':'code_interpreter'}]}",
                   "tools[0]");
    assert_refused("{'messages':[{'role':'user','content':'x'}],"
                   "'tool_choice':'sometimes'}",
                   "'tool_choice'");
    assert_refused("{'messages':[{'role':'system','content':'only rules'}]}",
                   "at least one user or assistant message");
    assert_refused("{'messages':[{'role':'system','content':[{'type':"
                   "'image_url','image_url':{'url':'data:a/b;base64,x'}}]},"
                   "{'role':'user','content':'x'}]}",
                   "only text parts");
}

static void
test_request_takes_a_legacy_function_message_by_its_name(void **state) {
    (void)state;
    assert_json(
        translate_ok(q("{'messages':[{'role':'user','content':'x'},"
                       "{'role':'function','name':'f','content':'42'}]}")),
        q("{'contents':[{'role':'user','parts':[{'text':'x'},"
          "{'functionResponse':{'name':'f','response':{'content':'42'}}}]}]}"),
        "function role");
}

/* ---- responses ---- */

static cJSON *
response_ok(cJSON *resp) {
    cJSON *out = NULL;
    int rc = sl_gemini_response(resp, MODEL, ID, CREATED, &out);
    if (rc != 0)
        fail_msg("response translation failed (%d)", rc);
    cJSON_Delete(resp);
    return out;
}

static void
response_golden(const char *name) {
    char in[128], out[128];
    snprintf(in, sizeof(in), "response_%s.in.json", name);
    snprintf(out, sizeof(out), "response_%s.out.json", name);
    cJSON *got = response_ok(golden(in)), *want = golden(out);
    drop_generated(got);
    drop_generated(want);
    assert_json(got, want, in);
}

static void
test_response_joins_text_parts_skips_thoughts_and_maps_usage(void **state) {
    (void)state;
    response_golden("text");
}

static void
test_response_turns_function_calls_into_tool_calls(void **state) {
    (void)state;
    response_golden("tool_calls");
}

static void
test_response_to_a_blocked_prompt_is_content_filter(void **state) {
    (void)state;
    response_golden("blocked");
}

static void
test_response_id_comes_from_response_id_or_the_one_given(void **state) {
    (void)state;
    cJSON *o = response_ok(q("{'candidates':[{'content':{'parts':[{'text':"
                             "'a'}]},'finishReason':'STOP'}],"
                             "'responseId':'xyz'}"));
    assert_string_equal(cJSON_GetObjectItem(o, "id")->valuestring,
                        "chatcmpl-xyz");
    assert_int_equal(cJSON_GetObjectItem(o, "created")->valuedouble, CREATED);
    assert_string_equal(cJSON_GetObjectItem(o, "model")->valuestring, MODEL);
    assert_null(cJSON_GetObjectItem(o, "usage"));
    cJSON_Delete(o);
    o = response_ok(q("{'candidates':[{'content':{'parts':[{'text':'a'}]}}]}"));
    assert_string_equal(cJSON_GetObjectItem(o, "id")->valuestring, ID);
    cJSON_Delete(o);
}

static void
test_response_with_only_a_function_call_has_null_content(void **state) {
    (void)state;
    cJSON *o = response_ok(q("{'candidates':[{'content':{'parts':[{"
                             "'functionCall':{'name':'f','args':{}}}]},"
                             "'finishReason':'STOP'}]}"));
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    cJSON *msg = cJSON_GetObjectItem(ch, "message");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(msg, "content")));
    assert_string_equal(cJSON_GetObjectItem(ch, "finish_reason")->valuestring,
                        "tool_calls");
    cJSON_Delete(o);
}

static void
test_finish_reasons_map_to_openai_ones(void **state) {
    (void)state;
    assert_string_equal(sl_gemini_finish_reason("STOP", 0), "stop");
    assert_string_equal(sl_gemini_finish_reason("STOP", 1), "tool_calls");
    assert_string_equal(sl_gemini_finish_reason("MAX_TOKENS", 0), "length");
    assert_string_equal(sl_gemini_finish_reason("MAX_TOKENS", 1), "length");
    static const char *const filtered[] = {"SAFETY", "RECITATION", "BLOCKLIST",
                                           "PROHIBITED_CONTENT", "SPII"};
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(sl_gemini_finish_reason(filtered[i], 0),
                            "content_filter");
    assert_string_equal(sl_gemini_finish_reason("OTHER", 0), "stop");
    assert_string_equal(sl_gemini_finish_reason(NULL, 0), "stop");
}

static void
test_usage_counts_cached_in_prompt_and_thoughts_in_completion(void **state) {
    (void)state;
    cJSON *in = q("{'promptTokenCount':10,'cachedContentTokenCount':4,"
                  "'candidatesTokenCount':5,'thoughtsTokenCount':2,"
                  "'toolUsePromptTokenCount':3}");
    assert_json(sl_gemini_usage(in),
                q("{'prompt_tokens':13,'completion_tokens':7,"
                  "'total_tokens':20,'prompt_tokens_details':{"
                  "'cached_tokens':4},'completion_tokens_details':{"
                  "'reasoning_tokens':2}}"),
                "usage without total");
    cJSON_Delete(in);
    assert_null(sl_gemini_usage(NULL));
}

static void
test_response_that_is_not_gemini_is_refused(void **state) {
    (void)state;
    static const char *const bad[] = {"[]", "{}", "{'candidates':[]}",
                                      "{'error':{'code':500}}", "3"};
    for (size_t i = 0; i < 5; i++) {
        cJSON *in = q(bad[i]), *out = NULL;
        assert_int_equal(sl_gemini_response(in, MODEL, ID, CREATED, &out),
                         SL_EINVAL);
        assert_null(out);
        cJSON_Delete(in);
    }
    cJSON *out = NULL;
    assert_int_equal(sl_gemini_response(NULL, MODEL, ID, CREATED, &out),
                     SL_EINVAL);
}

/* ---- errors ---- */

static void
assert_error(int upstream, const char *body, int want_status,
             const char *want_code, const char *want_message) {
    int status = 0;
    const char *code = NULL;
    cJSON *e = sl_gemini_error_body(upstream, body, strlen(body), "gem",
                                    &status, &code);
    assert_non_null(e);
    assert_int_equal(status, want_status);
    assert_string_equal(code, want_code);
    cJSON *err = cJSON_GetObjectItem(e, "error");
    assert_string_equal(cJSON_GetObjectItem(err, "code")->valuestring,
                        want_code);
    assert_string_equal(cJSON_GetObjectItem(err, "message")->valuestring,
                        want_message);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(err, "type")));
    cJSON_Delete(e);
}

static void
test_errors_keep_client_faults_and_hide_provider_faults(void **state) {
    (void)state;
    assert_error(429,
                 "{\"error\":{\"code\":429,\"message\":\"Quota exceeded\","
                 "\"status\":\"RESOURCE_EXHAUSTED\"}}",
                 429, "upstream_rate_limited", "Quota exceeded");
    assert_error(400,
                 "{\"error\":{\"code\":400,\"message\":\"Bad schema\","
                 "\"status\":\"INVALID_ARGUMENT\"}}",
                 400, "upstream_error", "Bad schema");
    assert_error(404, "[{\"error\":{\"code\":404,\"message\":\"no model\"}}]",
                 404, "upstream_error", "no model");
    assert_error(403,
                 "{\"error\":{\"code\":403,\"message\":\"key invalid\","
                 "\"status\":\"PERMISSION_DENIED\"}}",
                 502, "upstream_error",
                 "provider 'gem' answered with status 403 PERMISSION_DENIED: "
                 "key invalid");
    assert_error(401, "{}", 502, "upstream_error",
                 "provider 'gem' answered with status 401");
    assert_error(503,
                 "{\"error\":{\"code\":503,\"message\":\"overloaded\","
                 "\"status\":\"UNAVAILABLE\"}}",
                 502, "upstream_error",
                 "provider 'gem' answered with status 503 UNAVAILABLE: "
                 "overloaded");
    assert_error(500, "<html>oops</html>", 502, "upstream_error",
                 "provider 'gem' answered with status 500");
    int status;
    const char *code;
    cJSON *e = sl_gemini_error_body(400, "", 0, "gem", &status, &code);
    assert_int_equal(status, 400);
    cJSON_Delete(e);
}

/* ---- streams ---- */

typedef struct {
    cJSON *chunks;
    int fail_after; /* return SL_ENOMEM from this chunk on; -1 never */
} sink_t;

static int
on_chunk(void *ud, const cJSON *chunk, const char *json, size_t len) {
    sink_t *s = ud;
    cJSON *again = cJSON_ParseWithLength(json, len);
    assert_non_null(again);
    assert_true(cJSON_Compare(again, chunk, 1));
    cJSON_Delete(again);
    if (s->fail_after >= 0 && cJSON_GetArraySize(s->chunks) >= s->fail_after)
        return SL_ENOMEM;
    cJSON_AddItemToArray(s->chunks, cJSON_Duplicate(chunk, 1));
    return 0;
}

typedef struct {
    sl_gemini_stream_t *tr;
    int rc;
} feed_t;

static int
on_event(void *ud, const char *event, size_t event_len, const char *data,
         size_t len) {
    feed_t *f = ud;
    (void)event;
    (void)event_len;
    f->rc = sl_gemini_stream_event(f->tr, data, len);
    return f->rc < 0 ? 1 : 0;
}

/* Feeds an SSE body through the real parser, in pieces of `step` bytes;
 * returns the last event's result. */
static int
feed(sl_gemini_stream_t *tr, const char *body, size_t len, size_t step) {
    sl_sse_t p;
    feed_t f = {tr, 0};
    sl_sse_init(&p, 1 << 20);
    for (size_t i = 0; i < len; i += step) {
        size_t n = len - i < step ? len - i : step;
        if (sl_sse_feed(&p, body + i, n, on_event, &f) != 0)
            break;
    }
    sl_sse_free(&p);
    return f.rc;
}

static void
stream_golden(const char *name, size_t step) {
    char in[128], out[128];
    size_t len;
    snprintf(in, sizeof(in), "stream_%s.sse", name);
    snprintf(out, sizeof(out), "stream_%s.out.json", name);
    char *body = read_file(in, &len);
    sink_t sink = {cJSON_CreateArray(), -1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    assert_non_null(tr);
    assert_int_equal(feed(tr, body, len, step), 0);
    assert_true(sl_gemini_stream_finished(tr));
    assert_int_equal(sl_gemini_stream_end(tr), 1);
    sl_gemini_stream_free(tr);
    free(body);
    cJSON *want = golden(out);
    drop_generated(sink.chunks);
    drop_generated(want);
    assert_json(sink.chunks, want, in);
}

static void
test_stream_of_text_parts_gives_role_deltas_finish_then_usage(void **state) {
    (void)state;
    stream_golden("text", 1 << 20);
    stream_golden("text", 1); /* byte by byte: same chunks */
    stream_golden("text", 7);
}

static void
test_stream_of_function_calls_gives_indexed_tool_call_deltas(void **state) {
    (void)state;
    stream_golden("tools", 1 << 20);
}

static void
test_stream_chunks_carry_the_response_id_and_model_version(void **state) {
    (void)state;
    size_t len;
    char *body = read_file("stream_text.sse", &len);
    sink_t sink = {cJSON_CreateArray(), -1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    assert_int_equal(feed(tr, body, len, 64), 0);
    assert_int_equal(sl_gemini_stream_end(tr), 1);
    cJSON *c;
    cJSON_ArrayForEach(c, sink.chunks) {
        assert_string_equal(cJSON_GetObjectItem(c, "id")->valuestring,
                            "chatcmpl-r1");
        assert_string_equal(cJSON_GetObjectItem(c, "model")->valuestring,
                            "gemini-2.0-flash");
        assert_int_equal(cJSON_GetObjectItem(c, "created")->valuedouble,
                         CREATED);
    }
    sl_gemini_stream_free(tr);
    cJSON_Delete(sink.chunks);
    free(body);
}

static void
test_stream_cut_before_finish_is_not_complete(void **state) {
    (void)state;
    const char *body =
        "data: {'candidates':[{'content':{'parts':[{'text':'a '}]}}],"
        "'usageMetadata':{'promptTokenCount':3,'totalTokenCount':3}}\n\n"
        "data: {'candidates':[{'content':{'parts':[{'text':'b'}]}}]}\n\n"
        "data: {'candidates':[{'content':{'par";
    char *s = strdup(body);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    sink_t sink = {cJSON_CreateArray(), -1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    assert_int_equal(feed(tr, s, strlen(s), 5), 0);
    assert_false(sl_gemini_stream_finished(tr));
    assert_int_equal(sl_gemini_stream_end(tr), 0);
    /* role, 'a ', 'b': no finish, no usage */
    assert_int_equal(cJSON_GetArraySize(sink.chunks), 3);
    cJSON *c;
    cJSON_ArrayForEach(c, sink.chunks) {
        assert_null(cJSON_GetObjectItem(c, "usage"));
        cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "choices"), 0);
        assert_true(cJSON_IsNull(cJSON_GetObjectItem(ch, "finish_reason")));
    }
    sl_gemini_stream_free(tr);
    cJSON_Delete(sink.chunks);
    free(s);
}

static void
test_stream_error_event_stops_the_stream(void **state) {
    (void)state;
    sink_t sink = {cJSON_CreateArray(), -1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    const char *ok = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
                     "\"x\"}]}}]}";
    const char *err = "{\"error\":{\"code\":503,\"message\":\"overloaded\","
                      "\"status\":\"UNAVAILABLE\"}}";
    assert_int_equal(sl_gemini_stream_event(tr, ok, strlen(ok)), 0);
    assert_int_equal(sl_gemini_stream_event(tr, err, strlen(err)),
                     SL_EUPSTREAM);
    int upstream;
    const char *gstatus;
    assert_string_equal(sl_gemini_stream_error(tr, &upstream, &gstatus),
                        "overloaded");
    assert_int_equal(upstream, 503);
    assert_string_equal(gstatus, "UNAVAILABLE");
    /* Sticky: later events and the end say the same. */
    assert_int_equal(sl_gemini_stream_event(tr, ok, strlen(ok)), SL_EUPSTREAM);
    assert_int_equal(sl_gemini_stream_end(tr), SL_EUPSTREAM);
    assert_int_equal(cJSON_GetArraySize(sink.chunks), 2);
    sl_gemini_stream_free(tr);
    cJSON_Delete(sink.chunks);
}

static void
test_stream_event_that_is_not_gemini_is_malformed(void **state) {
    (void)state;
    static const char *const bad[] = {"not json", "[1]", "{\"x\":1}"};
    for (size_t i = 0; i < 3; i++) {
        sink_t sink = {cJSON_CreateArray(), -1};
        sl_gemini_stream_t *tr =
            sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
        assert_int_equal(sl_gemini_stream_event(tr, bad[i], strlen(bad[i])),
                         SL_EINVAL);
        int upstream;
        const char *gstatus;
        assert_non_null(sl_gemini_stream_error(tr, &upstream, &gstatus));
        assert_int_equal(upstream, 0);
        assert_int_equal(cJSON_GetArraySize(sink.chunks), 0);
        sl_gemini_stream_free(tr);
        cJSON_Delete(sink.chunks);
    }
}

static void
test_stream_of_a_blocked_prompt_finishes_with_content_filter(void **state) {
    (void)state;
    sink_t sink = {cJSON_CreateArray(), -1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    const char *ev = "{\"promptFeedback\":{\"blockReason\":\"SAFETY\"},"
                     "\"usageMetadata\":{\"promptTokenCount\":4,"
                     "\"totalTokenCount\":4}}";
    assert_int_equal(sl_gemini_stream_event(tr, ev, strlen(ev)), 0);
    assert_int_equal(sl_gemini_stream_end(tr), 1);
    assert_int_equal(cJSON_GetArraySize(sink.chunks), 3);
    cJSON *fin = cJSON_GetArrayItem(sink.chunks, 1);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(fin, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(ch, "finish_reason")->valuestring,
                        "content_filter");
    cJSON *usage =
        cJSON_GetObjectItem(cJSON_GetArrayItem(sink.chunks, 2), "usage");
    assert_int_equal(cJSON_GetObjectItem(usage, "prompt_tokens")->valuedouble,
                     4);
    sl_gemini_stream_free(tr);
    cJSON_Delete(sink.chunks);
}

static void
test_stream_callback_error_stops_the_stream(void **state) {
    (void)state;
    sink_t sink = {cJSON_CreateArray(), 1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    const char *ev = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
                     "\"x\"}]},\"finishReason\":\"STOP\"}]}";
    assert_int_equal(sl_gemini_stream_event(tr, ev, strlen(ev)), SL_ENOMEM);
    assert_int_equal(sl_gemini_stream_event(tr, ev, strlen(ev)), SL_ENOMEM);
    assert_int_equal(cJSON_GetArraySize(sink.chunks), 1);
    sl_gemini_stream_free(tr);
    cJSON_Delete(sink.chunks);
}

static void
test_stream_without_usage_metadata_ends_without_usage_chunk(void **state) {
    (void)state;
    sink_t sink = {cJSON_CreateArray(), -1};
    sl_gemini_stream_t *tr =
        sl_gemini_stream_new(MODEL, ID, CREATED, on_chunk, &sink);
    const char *ev = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":"
                     "\"x\"}]},\"finishReason\":\"MAX_TOKENS\"}]}";
    assert_int_equal(sl_gemini_stream_event(tr, ev, strlen(ev)), 0);
    assert_int_equal(sl_gemini_stream_end(tr), 1);
    assert_int_equal(cJSON_GetArraySize(sink.chunks), 3); /* role, x, fin */
    cJSON *ch = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(sink.chunks, 2), "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(ch, "finish_reason")->valuestring,
                        "length");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(sink.chunks, 0), "id")
            ->valuestring,
        ID);
    sl_gemini_stream_free(tr);
    cJSON_Delete(sink.chunks);
}

/* ---- out of memory ---- */

static long alloc_budget = -1; /* allocations left; -1 unlimited */

static void *
budget_malloc(size_t n) {
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static int
noop_chunk(void *ud, const cJSON *chunk, const char *json, size_t len) {
    (void)ud;
    (void)chunk;
    (void)json;
    (void)len;
    return 0;
}

/* Every translation, with cJSON allocations failing at each step in turn:
 * an error comes back and nothing leaks or crashes (run under ASan). */
static void
test_translations_survive_out_of_memory_at_every_step(void **state) {
    (void)state;
    cJSON *req = golden("request_tool_roundtrip.in.json");
    cJSON *tools = golden("request_tools.in.json");
    cJSON *resp = golden("response_tool_calls.in.json");
    cJSON *text = golden("response_text.in.json");
    size_t len;
    char *sse = read_file("stream_text.sse", &len);
    cJSON_Hooks hooks = {budget_malloc, free};
    cJSON_InitHooks(&hooks);
    int complete = 0;
    for (long n = 0; n < 2000 && !complete; n++) {
        char err[300];
        cJSON *out = NULL;
        int rcs[5];
        alloc_budget = n;
        rcs[0] = sl_gemini_request(req, &out, err, sizeof(err));
        cJSON_Delete(out);
        alloc_budget = n;
        rcs[1] = sl_gemini_request(tools, &out, err, sizeof(err));
        cJSON_Delete(out);
        alloc_budget = n;
        rcs[2] = sl_gemini_response(resp, MODEL, ID, CREATED, &out);
        cJSON_Delete(out);
        alloc_budget = n;
        rcs[3] = sl_gemini_response(text, MODEL, ID, CREATED, &out);
        cJSON_Delete(out);
        alloc_budget = n;
        sl_gemini_stream_t *tr =
            sl_gemini_stream_new(MODEL, ID, CREATED, noop_chunk, NULL);
        rcs[4] = feed(tr, sse, len, 1 << 20);
        if (rcs[4] == 0)
            rcs[4] = sl_gemini_stream_end(tr) == 1 ? 0 : SL_ENOMEM;
        sl_gemini_stream_free(tr);
        complete = 1;
        for (int i = 0; i < 5; i++) {
            if (rcs[i] != 0 && rcs[i] != SL_ENOMEM && rcs[i] != SL_EINVAL)
                fail_msg("translation %d with %ld allocations: %d", i, n,
                         rcs[i]);
            complete &= rcs[i] == 0;
        }
    }
    alloc_budget = -1;
    cJSON_InitHooks(NULL);
    assert_true(complete);
    cJSON_Delete(req);
    cJSON_Delete(tools);
    cJSON_Delete(resp);
    cJSON_Delete(text);
    free(sse);
}

int
main(void) {
#define T(f) cmocka_unit_test(f)
    const struct CMUnitTest tests[] = {
        T(test_request_maps_roles_system_and_generation_config),
        T(test_request_joins_system_and_developer_and_merges_same_role_turns),
        T(test_request_sends_data_urls_as_inline_data),
        T(test_request_declares_tools_with_a_schema_gemini_accepts),
        T(test_request_pairs_tool_results_with_the_latest_call_of_that_id),
        T(test_request_without_options_has_no_generation_config),
        T(test_request_maps_tool_choice_modes),
        T(test_request_maps_json_schema_response_format),
        T(test_request_refuses_what_gemini_cannot_take),
        T(test_request_takes_a_legacy_function_message_by_its_name),
        T(test_response_joins_text_parts_skips_thoughts_and_maps_usage),
        T(test_response_turns_function_calls_into_tool_calls),
        T(test_response_to_a_blocked_prompt_is_content_filter),
        T(test_response_id_comes_from_response_id_or_the_one_given),
        T(test_response_with_only_a_function_call_has_null_content),
        T(test_finish_reasons_map_to_openai_ones),
        T(test_usage_counts_cached_in_prompt_and_thoughts_in_completion),
        T(test_response_that_is_not_gemini_is_refused),
        T(test_errors_keep_client_faults_and_hide_provider_faults),
        T(test_stream_of_text_parts_gives_role_deltas_finish_then_usage),
        T(test_stream_of_function_calls_gives_indexed_tool_call_deltas),
        T(test_stream_chunks_carry_the_response_id_and_model_version),
        T(test_stream_cut_before_finish_is_not_complete),
        T(test_stream_error_event_stops_the_stream),
        T(test_stream_event_that_is_not_gemini_is_malformed),
        T(test_stream_of_a_blocked_prompt_finishes_with_content_filter),
        T(test_stream_callback_error_stops_the_stream),
        T(test_stream_without_usage_metadata_ends_without_usage_chunk),
        T(test_translations_survive_out_of_memory_at_every_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
