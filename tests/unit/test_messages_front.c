/* Unit tests for core/frontends/messages.c: Anthropic Messages requests to
 * OpenAI chat, chat completions and errors back to Anthropic's shape, and
 * OpenAI stream chunks to Anthropic events. Golden pairs live in
 * tests/unit/golden/messages_front/; JSON is compared parsed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "frontends/messages.h"

#ifndef SL_SRCDIR
#error "SL_SRCDIR must name the source directory"
#endif

#define GOLDEN SL_SRCDIR "/tests/unit/golden/messages_front/"
#define MODEL "claude-client-name"

static char *
read_file(const char *name) {
    char path[512];
    snprintf(path, sizeof(path), GOLDEN "%s", name);
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
    return s;
}

static cJSON *
read_json(const char *name) {
    char *s = read_file(name);
    cJSON *j = cJSON_Parse(s);
    if (j == NULL)
        fail_msg("%s is not JSON", name);
    free(s);
    return j;
}

static void
assert_json_equal(const cJSON *got, const cJSON *want, const char *what) {
    if (!cJSON_Compare(got, want, 1)) {
        char *g = cJSON_Print(got), *w = cJSON_Print(want);
        print_error("%s differs.\n--- got:\n%s\n--- want:\n%s\n", what, g, w);
        free(g);
        free(w);
        fail();
    }
}

static cJSON *
parse(const char *s) {
    cJSON *j = cJSON_Parse(s);
    if (j == NULL)
        fail_msg("test input is not JSON: %s", s);
    return j;
}

/* ---- requests ---------------------------------------------------------- */

static void
golden_request(const char *stem) {
    char in[128], out[128];
    snprintf(in, sizeof(in), "%s.in.json", stem);
    snprintf(out, sizeof(out), "%s.out.json", stem);
    cJSON *msg = read_json(in), *want = read_json(out), *got = NULL;
    char err[256] = "";
    int rc = sl_messages_request(msg, &got, err, sizeof(err));
    if (rc != 0)
        fail_msg("%s: rc %d: %s", stem, rc, err);
    assert_json_equal(got, want, stem);
    cJSON_Delete(msg);
    cJSON_Delete(want);
    cJSON_Delete(got);
}

static void
test_request_text_system_and_sampling_fields_map_to_chat(void **state) {
    (void)state;
    golden_request("request_basic");
}

static void
test_request_blocks_images_and_system_blocks_map_to_parts(void **state) {
    (void)state;
    golden_request("request_blocks");
}

static void
test_request_tool_use_and_tool_results_map_to_tool_calls(void **state) {
    (void)state;
    golden_request("request_tools");
}

/* The error message for `json`, which must be refused. */
static void
assert_refused(const char *json, const char *needle) {
    cJSON *msg = parse(json), *out = NULL;
    char err[256] = "";
    int rc = sl_messages_request(msg, &out, err, sizeof(err));
    if (rc != SL_EINVAL)
        fail_msg("accepted (rc %d): %s", rc, json);
    assert_null(out);
    if (strstr(err, needle) == NULL)
        fail_msg("error for %s is \"%s\", want \"%s\" in it", json, err,
                 needle);
    cJSON_Delete(msg);
}

#define M "\"model\":\"m\","
#define MT "\"max_tokens\":5,"
#define HI "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

static void
test_request_invalid_shapes_are_refused_with_their_path(void **state) {
    (void)state;
    assert_refused("[]", "JSON object");
    assert_refused("{" MT HI "}", "model");
    assert_refused("{\"model\":\"\"," MT HI "}", "model");
    assert_refused("{" M HI "}", "max_tokens: required");
    assert_refused("{" M "\"max_tokens\":0," HI "}", "max_tokens");
    assert_refused("{" M "\"max_tokens\":1.5," HI "}", "max_tokens");
    assert_refused("{" M "\"max_tokens\":\"9\"," HI "}", "max_tokens");
    assert_refused("{" M MT "\"messages\":[]}", "messages: must be");
    assert_refused("{" M MT "\"messages\":{}}", "messages: must be");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"system\","
                   "\"content\":\"x\"}]}",
                   "messages.0.role");
    assert_refused("{" M MT "\"messages\":[\"hi\"]}", "messages.0.role");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\","
                   "\"content\":\"a\"},{\"role\":\"user\",\"content\":3}]}",
                   "messages.1.content");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"image\",\"source\":{\"type\":\"file\"}}]}]}",
                   "messages.0.content.0.source");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"image\",\"source\":{\"type\":\"base64\","
                   "\"data\":\"AA==\"}}]}]}",
                   "media_type");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"text\",\"text\":\"a\"},{\"type\":"
                   "\"document\"}]}]}",
                   "messages.0.content.1.type: 'document'");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"text\":\"a\"}]}]}",
                   "messages.0.content.0.type: required");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"text\",\"text\":7}]}]}",
                   "messages.0.content.0.text");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"tool_result\",\"content\":\"x\"}]}]}",
                   "tool_use_id");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"tool_result\",\"tool_use_id\":\"t\","
                   "\"content\":[{\"type\":\"image\"}]}]}]}",
                   "messages.0.content.0.content.0: only text blocks");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"user\",\"content\":"
                   "[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"n\","
                   "\"input\":{}}]}]}",
                   "'tool_use' is not supported in a user turn");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"assistant\","
                   "\"content\":[{\"type\":\"tool_use\",\"name\":\"n\","
                   "\"input\":{}}]}]}",
                   "messages.0.content.0: tool_use needs");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"assistant\","
                   "\"content\":[{\"type\":\"tool_use\",\"id\":\"t\","
                   "\"name\":\"n\",\"input\":[1]}]}]}",
                   "tool_use needs");
    assert_refused("{" M MT "\"messages\":[{\"role\":\"assistant\","
                   "\"content\":[{\"type\":\"image\",\"source\":{}}]}]}",
                   "not supported in an assistant turn");
    assert_refused("{" M MT "\"system\":5," HI "}", "system: must be");
    assert_refused("{" M MT "\"system\":[{\"type\":\"image\"}]," HI "}",
                   "system.0: only text blocks");
    assert_refused("{" M MT "\"tools\":{}," HI "}", "tools: must be an array");
    assert_refused("{" M MT "\"tools\":[{\"name\":\"a\"}]," HI "}",
                   "tools.0: needs");
    assert_refused("{" M MT "\"tools\":[{\"name\":\"a\",\"input_schema\":{},"
                   "\"description\":3}]," HI "}",
                   "tools.0: needs");
    assert_refused("{" M MT "\"tools\":[{\"type\":\"web_search_20250305\","
                   "\"name\":\"web_search\"}]," HI "}",
                   "tools.0.type: 'web_search_20250305' is a server tool");
    assert_refused("{" M MT "\"tools\":[{\"name\":\"a\",\"input_schema\":{}}],"
                   "\"tool_choice\":{\"type\":\"bogus\"}," HI "}",
                   "tool_choice.type: 'bogus'");
    assert_refused("{" M MT "\"tools\":[{\"name\":\"a\",\"input_schema\":{}}],"
                   "\"tool_choice\":{\"type\":\"tool\"}," HI "}",
                   "tool_choice.name");
    assert_refused("{" M MT "\"tool_choice\":\"auto\"," HI "}",
                   "tool_choice: must be an object");
    assert_refused("{" M MT "\"stream\":\"yes\"," HI "}", "stream: must be");
    assert_refused("{" M MT "\"temperature\":\"hot\"," HI "}",
                   "temperature: must be a number");
    assert_refused("{" M MT "\"top_p\":[]," HI "}", "top_p: must be");
    assert_refused("{" M MT "\"stop_sequences\":\"END\"," HI "}",
                   "stop_sequences");
    assert_refused("{" M MT "\"stop_sequences\":[1]," HI "}", "stop_sequences");
    assert_refused("{" M MT "\"metadata\":\"u\"," HI "}", "metadata");
}

/* The chat request for a valid Messages request. */
static cJSON *
translated(const char *json) {
    cJSON *msg = parse(json), *out = NULL;
    char err[256] = "";
    int rc = sl_messages_request(msg, &out, err, sizeof(err));
    if (rc != 0)
        fail_msg("refused (%d: %s): %s", rc, err, json);
    cJSON_Delete(msg);
    return out;
}

static void
assert_tool_choice(const char *choice, const char *want) {
    char json[512];
    snprintf(json, sizeof(json),
             "{" M MT "\"tools\":[{\"name\":\"a\",\"input_schema\":{}}],"
             "\"tool_choice\":%s," HI "}",
             choice);
    cJSON *chat = translated(json), *w = parse(want);
    assert_json_equal(cJSON_GetObjectItem(chat, "tool_choice"), w, choice);
    assert_null(cJSON_GetObjectItem(chat, "parallel_tool_calls"));
    cJSON_Delete(chat);
    cJSON_Delete(w);
}

static void
test_request_tool_choice_maps_each_type(void **state) {
    (void)state;
    assert_tool_choice("{\"type\":\"auto\"}", "\"auto\"");
    assert_tool_choice("{\"type\":\"any\"}", "\"required\"");
    assert_tool_choice("{\"type\":\"none\"}", "\"none\"");
    assert_tool_choice("{\"type\":\"tool\",\"name\":\"a\"}",
                       "{\"type\":\"function\",\"function\":{\"name\":\"a\"}}");
}

static void
test_request_without_tools_drops_tool_choice_and_stream_usage(void **state) {
    (void)state;
    cJSON *chat = translated("{" M MT "\"tool_choice\":{\"type\":\"auto\"},"
                             "\"tools\":[],\"stream\":false," HI "}");
    assert_null(cJSON_GetObjectItem(chat, "tool_choice"));
    assert_null(cJSON_GetObjectItem(chat, "tools"));
    assert_null(cJSON_GetObjectItem(chat, "stream"));
    assert_null(cJSON_GetObjectItem(chat, "stream_options"));
    assert_null(cJSON_GetObjectItem(chat, "top_k"));
    cJSON_Delete(chat);
}

static void
test_request_turn_of_only_tool_results_adds_no_user_message(void **state) {
    (void)state;
    cJSON *chat = translated(
        "{" M MT "\"messages\":[{\"role\":\"user\",\"content\":\"go\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\","
        "\"id\":\"t1\",\"name\":\"f\",\"input\":{\"a\":1}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\","
        "\"tool_use_id\":\"t1\",\"content\":\"ok\"}]}]}");
    const cJSON *msgs = cJSON_GetObjectItem(chat, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 3);
    const cJSON *last = cJSON_GetArrayItem(msgs, 2);
    assert_string_equal(cJSON_GetObjectItem(last, "role")->valuestring, "tool");
    assert_string_equal(cJSON_GetObjectItem(last, "tool_call_id")->valuestring,
                        "t1");
    cJSON_Delete(chat);
}

/* ---- responses and errors ---------------------------------------------- */

static void
golden_response(const char *stem) {
    char in[128], out[128];
    snprintf(in, sizeof(in), "%s.in.json", stem);
    snprintf(out, sizeof(out), "%s.out.json", stem);
    cJSON *chat = read_json(in), *want = read_json(out), *got = NULL;
    assert_int_equal(sl_messages_response(chat, MODEL, &got), 0);
    assert_json_equal(got, want, stem);
    cJSON_Delete(chat);
    cJSON_Delete(want);
    cJSON_Delete(got);
}

static void
test_response_text_counts_cache_reads_apart_from_input(void **state) {
    (void)state;
    golden_response("response_text");
}

static void
test_response_tool_calls_become_tool_use_blocks(void **state) {
    (void)state;
    golden_response("response_tools");
}

/* stop_reason and content of a completion whose message is `message`. */
static cJSON *
response_for(const char *message, const char *finish) {
    char json[1024];
    snprintf(json, sizeof(json),
             "{\"id\":\"c\",\"object\":\"chat.completion\",\"choices\":"
             "[{\"index\":0,\"message\":%s,\"finish_reason\":%s}]}",
             message, finish);
    cJSON *chat = parse(json), *out = NULL;
    assert_int_equal(sl_messages_response(chat, MODEL, &out), 0);
    cJSON_Delete(chat);
    return out;
}

static const char *
stop_of(const cJSON *msg) {
    return cJSON_GetObjectItem(msg, "stop_reason")->valuestring;
}

static void
test_response_stop_reasons_map_from_finish_reasons(void **state) {
    (void)state;
    static const struct {
        const char *finish, *want;
    } cases[] = {
        {"\"stop\"", "end_turn"},          {"\"length\"", "max_tokens"},
        {"\"tool_calls\"", "tool_use"},    {"\"content_filter\"", "refusal"},
        {"\"something_new\"", "end_turn"}, {"null", "end_turn"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cJSON *m = response_for("{\"role\":\"assistant\",\"content\":\"x\"}",
                                cases[i].finish);
        if (strcmp(stop_of(m), cases[i].want) != 0)
            fail_msg("finish %s gave %s, want %s", cases[i].finish, stop_of(m),
                     cases[i].want);
        cJSON_Delete(m);
    }
}

static void
test_response_tool_calls_with_finish_stop_still_mean_tool_use(void **state) {
    (void)state;
    cJSON *m = response_for(
        "{\"role\":\"assistant\",\"content\":\"Sure.\",\"tool_calls\":[{"
        "\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"{}\"}}]}",
        "\"stop\"");
    assert_string_equal(stop_of(m), "tool_use");
    const cJSON *content = cJSON_GetObjectItem(m, "content");
    assert_int_equal(cJSON_GetArraySize(content), 2);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(content, 0), "type")
            ->valuestring,
        "text");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(content, 1), "type")
            ->valuestring,
        "tool_use");
    cJSON_Delete(m);
}

static void
test_response_empty_content_and_parts_and_refusal(void **state) {
    (void)state;
    cJSON *m =
        response_for("{\"role\":\"assistant\",\"content\":\"\"}", "\"stop\"");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(m, "content")), 0);
    /* No usage from the provider: zeros, still the shape the SDK reads. */
    const cJSON *u = cJSON_GetObjectItem(m, "usage");
    assert_int_equal(cJSON_GetObjectItem(u, "input_tokens")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItem(u, "output_tokens")->valueint, 0);
    cJSON_Delete(m);

    m = response_for("{\"role\":\"assistant\",\"content\":[{\"type\":\"text\","
                     "\"text\":\"ab\"},{\"type\":\"text\",\"text\":\"cd\"}]}",
                     "\"stop\"");
    const cJSON *b = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(b, "text")->valuestring, "abcd");
    cJSON_Delete(m);

    m = response_for("{\"role\":\"assistant\",\"content\":null,"
                     "\"refusal\":\"I cannot help with that.\"}",
                     "\"content_filter\"");
    b = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "content"), 0);
    assert_string_equal(cJSON_GetObjectItem(b, "text")->valuestring,
                        "I cannot help with that.");
    assert_string_equal(stop_of(m), "refusal");
    cJSON_Delete(m);
}

static void
test_response_that_is_not_a_completion_is_refused(void **state) {
    (void)state;
    static const char *const bad[] = {
        "{\"object\":\"list\",\"data\":[]}",
        "{\"choices\":[]}",
        "{\"choices\":[{\"index\":0}]}",
        "[1]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *j = parse(bad[i]), *out = NULL;
        if (sl_messages_response(j, MODEL, &out) != SL_EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_null(out);
        cJSON_Delete(j);
    }
}

static void
test_error_types_follow_the_status(void **state) {
    (void)state;
    static const struct {
        int status;
        const char *type;
    } cases[] = {
        {400, "invalid_request_error"},
        {404, "not_found_error"},
        {405, "invalid_request_error"},
        {413, "request_too_large"},
        {422, "invalid_request_error"},
        {401, "authentication_error"},
        {403, "permission_error"},
        {429, "rate_limit_error"},
        {500, "api_error"},
        {502, "api_error"},
        {504, "api_error"},
        {503, "overloaded_error"},
        {529, "overloaded_error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (strcmp(sl_messages_error_type(cases[i].status), cases[i].type))
            fail_msg("%d gave %s, want %s", cases[i].status,
                     sl_messages_error_type(cases[i].status), cases[i].type);
}

static void
assert_error_body(int status, const char *body, const char *want) {
    cJSON *got = sl_messages_error_body(status, body, body ? strlen(body) : 0);
    cJSON *w = parse(want);
    assert_json_equal(got, w, body ? body : "(no body)");
    cJSON_Delete(got);
    cJSON_Delete(w);
}

static void
test_error_bodies_keep_the_message_in_anthropic_shape(void **state) {
    (void)state;
    assert_error_body(
        404,
        "{\"error\":{\"message\":\"The model 'x' does not exist\","
        "\"type\":\"invalid_request_error\",\"code\":\"model_not_found\"}}",
        "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\","
        "\"message\":\"The model 'x' does not exist\"}}");
    assert_error_body(
        429,
        "{\"error\":{\"message\":\"slow down\",\"type\":\"requests\","
        "\"param\":null,\"code\":\"rate_limit_exceeded\"}}",
        "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
        "\"message\":\"slow down\"}}");
    assert_error_body(502, "<html>bad gateway</html>",
                      "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                      "\"message\":\"<html>bad gateway</html>\"}}");
    assert_error_body(503, NULL,
                      "{\"type\":\"error\",\"error\":{\"type\":"
                      "\"overloaded_error\",\"message\":\"the request failed "
                      "with HTTP status 503\"}}");
}

/* ---- streams ----------------------------------------------------------- */

typedef struct {
    cJSON *events; /* [{"event":..., "data":...}] */
    int ret;       /* what the callback returns */
} sink_t;

static int
sink(void *ud, const char *event, const char *json, size_t len) {
    sink_t *s = ud;
    cJSON *data = cJSON_ParseWithLength(json, len);
    if (data == NULL)
        fail_msg("event %s data is not JSON: %.*s", event, (int)len, json);
    /* Anthropic's events name their type twice; they must agree. */
    assert_string_equal(cJSON_GetObjectItem(data, "type")->valuestring, event);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "event", event);
    cJSON_AddItemToObject(e, "data", data);
    cJSON_AddItemToArray(s->events, e);
    return s->ret;
}

static sl_messages_stream_t *
stream_new(sink_t *s) {
    s->events = cJSON_CreateArray();
    s->ret = 0;
    sl_messages_stream_t *st = sl_messages_stream_new(MODEL, sink, s);
    assert_non_null(st);
    return st;
}

static void
feed(sl_messages_stream_t *st, const char *data) {
    sl_messages_stream_feed(st, data, strlen(data));
}

static void
golden_stream(const char *stem) {
    char in[128], out[128];
    snprintf(in, sizeof(in), "%s.in.txt", stem);
    snprintf(out, sizeof(out), "%s.out.json", stem);
    char *text = read_file(in), *line, *save = NULL;
    cJSON *want = read_json(out);
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save))
        feed(st, line);
    assert_true(sl_messages_stream_done(st));
    assert_json_equal(s.events, want, stem);
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
    cJSON_Delete(want);
    free(text);
}

static void
test_stream_text_gives_one_text_block_and_usage_at_the_end(void **state) {
    (void)state;
    golden_stream("stream_text");
}

static void
test_stream_text_then_two_tool_calls_give_three_blocks(void **state) {
    (void)state;
    golden_stream("stream_tools");
}

static void
test_stream_error_chunk_becomes_an_error_event_and_ends(void **state) {
    (void)state;
    golden_stream("stream_error");
}

static const char *
event_name(const cJSON *e) {
    return cJSON_GetObjectItem(e, "event")->valuestring;
}

static const cJSON *
event_data(const cJSON *e) {
    return cJSON_GetObjectItem(e, "data");
}

#define CHUNK(body)                                                            \
    "{\"id\":\"chatcmpl-f\",\"object\":\"chat.completion.chunk\","             \
    "\"created\":1,\"model\":\"x\"," body "}"

static void
test_stream_tool_arguments_in_many_fragments_arrive_whole(void **state) {
    (void)state;
    /* Arguments with escapes, multi-byte UTF-8 and nesting, cut in
     * fragments of 1 to 7 bytes: each fragment is one partial_json, in
     * order, on the tool's block. */
    const char *args = "{\"city\":\"S\\u00e3o Paulo \xc3\xa9t\xc3\xa9\","
                       "\"days\":[1,2,3],\"opts\":{\"unit\":\"\\\"C\\\"\","
                       "\"detail\":true}}";
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                   "\"assistant\",\"content\":null},\"finish_reason\":null}]"));
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{"
                   "\"index\":0,\"id\":\"call_1\",\"type\":\"function\","
                   "\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]},"
                   "\"finish_reason\":null}]"));
    size_t n = strlen(args), at = 0, cut = 1, fragments = 0;
    while (at < n) {
        size_t len = cut < n - at ? cut : n - at;
        cJSON *frag = cJSON_CreateObject();
        cJSON_AddItemToObject(frag, "arguments", cJSON_CreateString(""));
        char *piece = strndup(args + at, len);
        cJSON_ReplaceItemInObject(frag, "arguments", cJSON_CreateString(piece));
        char *fj = cJSON_PrintUnformatted(frag);
        char *chunk;
        assert_true(asprintf(&chunk,
                             CHUNK("\"choices\":[{\"index\":0,\"delta\":{"
                                   "\"tool_calls\":[{\"index\":0,"
                                   "\"function\":%s}]},"
                                   "\"finish_reason\":null}]"),
                             fj) > 0);
        feed(st, chunk);
        free(chunk);
        free(fj);
        free(piece);
        cJSON_Delete(frag);
        at += len;
        cut = cut % 7 + 1;
        fragments++;
    }
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{},"
                   "\"finish_reason\":\"tool_calls\"}]"));
    feed(st, CHUNK("\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
                   "\"completion_tokens\":20,\"total_tokens\":29}"));
    feed(st, "[DONE]");

    char joined[512] = "";
    size_t deltas = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, s.events) {
        if (strcmp(event_name(e), "content_block_delta") != 0)
            continue;
        const cJSON *d = event_data(e);
        assert_int_equal(cJSON_GetObjectItem(d, "index")->valueint, 0);
        const cJSON *delta = cJSON_GetObjectItem(d, "delta");
        assert_string_equal(cJSON_GetObjectItem(delta, "type")->valuestring,
                            "input_json_delta");
        strcat(joined, cJSON_GetObjectItem(delta, "partial_json")->valuestring);
        deltas++;
    }
    assert_int_equal(deltas, fragments);
    assert_string_equal(joined, args);
    cJSON *input = cJSON_Parse(joined);
    assert_non_null(input);
    assert_string_equal(cJSON_GetObjectItem(input, "city")->valuestring,
                        "S\xc3\xa3o Paulo \xc3\xa9t\xc3\xa9");
    cJSON_Delete(input);

    /* message_start, block start, the deltas, block stop, message_delta,
     * message_stop: no text block for the null content. */
    int nev = cJSON_GetArraySize(s.events);
    assert_int_equal((size_t)nev, fragments + 5);
    const cJSON *start = cJSON_GetArrayItem(s.events, 1);
    assert_string_equal(event_name(start), "content_block_start");
    const cJSON *block =
        cJSON_GetObjectItem(event_data(start), "content_block");
    assert_string_equal(cJSON_GetObjectItem(block, "type")->valuestring,
                        "tool_use");
    assert_string_equal(cJSON_GetObjectItem(block, "id")->valuestring,
                        "call_1");
    assert_string_equal(cJSON_GetObjectItem(block, "name")->valuestring,
                        "weather");
    const cJSON *md = cJSON_GetArrayItem(s.events, nev - 2);
    assert_string_equal(event_name(md), "message_delta");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(event_data(md), "delta"),
                            "stop_reason")
            ->valuestring,
        "tool_use");
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(event_data(md), "usage"),
                            "output_tokens")
            ->valueint,
        20);
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
}

/* The names of the events, space-separated. */
static void
assert_event_names(const sink_t *s, const char *want) {
    char got[1024] = "";
    const cJSON *e;
    cJSON_ArrayForEach(e, s->events) {
        if (got[0] != '\0')
            strcat(got, " ");
        strcat(got, event_name(e));
    }
    assert_string_equal(got, want);
}

static void
test_stream_without_usage_sends_message_delta_at_done(void **state) {
    (void)state;
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},"
                   "\"finish_reason\":null}]"));
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{},"
                   "\"finish_reason\":\"length\"}]"));
    assert_event_names(&s, "message_start content_block_start "
                           "content_block_delta content_block_stop");
    feed(st, "[DONE]");
    assert_event_names(&s, "message_start content_block_start "
                           "content_block_delta content_block_stop "
                           "message_delta message_stop");
    const cJSON *md = event_data(cJSON_GetArrayItem(s.events, 4));
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(md, "delta"), "stop_reason")
            ->valuestring,
        "max_tokens");
    const cJSON *usage = cJSON_GetObjectItem(md, "usage");
    assert_int_equal(cJSON_GetObjectItem(usage, "output_tokens")->valueint, 0);
    assert_null(cJSON_GetObjectItem(usage, "input_tokens"));
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
}

static void
test_stream_usage_in_the_finish_chunk_sends_message_delta_at_once(
    void **state) {
    (void)state;
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},"
                   "\"finish_reason\":\"stop\"}],\"usage\":{"
                   "\"prompt_tokens\":3,\"completion_tokens\":1}"));
    assert_event_names(&s, "message_start content_block_start "
                           "content_block_delta content_block_stop "
                           "message_delta");
    /* The usage was known before message_start went out. */
    const cJSON *ms = event_data(cJSON_GetArrayItem(s.events, 0));
    assert_int_equal(
        cJSON_GetObjectItem(
            cJSON_GetObjectItem(cJSON_GetObjectItem(ms, "message"), "usage"),
            "input_tokens")
            ->valueint,
        3);
    feed(st, "[DONE]");
    assert_event_names(&s, "message_start content_block_start "
                           "content_block_delta content_block_stop "
                           "message_delta message_stop");
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
}

static void
test_stream_done_alone_still_makes_a_whole_message(void **state) {
    (void)state;
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    feed(st, "[DONE]");
    assert_event_names(&s, "message_start message_delta message_stop");
    assert_true(sl_messages_stream_done(st));
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
}

static void
test_stream_ignores_garbage_and_everything_after_the_end(void **state) {
    (void)state;
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    feed(st, "not json");
    feed(st, "[1,2]");
    assert_int_equal(cJSON_GetArraySize(s.events), 0);
    feed(st, "[DONE]");
    feed(st, CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},"
                   "\"finish_reason\":null}]"));
    feed(st, "{\"error\":{\"message\":\"late\"}}");
    feed(st, "[DONE]");
    assert_event_names(&s, "message_start message_delta message_stop");
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
}

static void
test_stream_error_types_follow_the_openai_type(void **state) {
    (void)state;
    static const struct {
        const char *type, *want;
    } cases[] = {
        {"\"rate_limit_error\"", "rate_limit_error"},
        {"\"service_unavailable\"", "overloaded_error"},
        {"\"upstream_error\"", "api_error"},
        {"null", "api_error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sink_t s;
        sl_messages_stream_t *st = stream_new(&s);
        char chunk[256];
        snprintf(chunk, sizeof(chunk),
                 "{\"error\":{\"message\":\"m\",\"type\":%s}}", cases[i].type);
        feed(st, chunk);
        assert_true(sl_messages_stream_done(st));
        assert_event_names(&s, "error");
        const cJSON *err = cJSON_GetObjectItem(
            event_data(cJSON_GetArrayItem(s.events, 0)), "error");
        assert_string_equal(cJSON_GetObjectItem(err, "type")->valuestring,
                            cases[i].want);
        sl_messages_stream_free(st);
        cJSON_Delete(s.events);
    }
}

static void
test_stream_feed_returns_the_callbacks_pause_request(void **state) {
    (void)state;
    sink_t s;
    sl_messages_stream_t *st = stream_new(&s);
    const char *c = CHUNK("\"choices\":[{\"index\":0,\"delta\":{\"content\":"
                          "\"a\"},\"finish_reason\":null}]");
    assert_int_equal(sl_messages_stream_feed(st, c, strlen(c)), 0);
    s.ret = 1;
    assert_int_not_equal(sl_messages_stream_feed(st, c, strlen(c)), 0);
    sl_messages_stream_free(st);
    cJSON_Delete(s.events);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_request_text_system_and_sampling_fields_map_to_chat),
        cmocka_unit_test(
            test_request_blocks_images_and_system_blocks_map_to_parts),
        cmocka_unit_test(
            test_request_tool_use_and_tool_results_map_to_tool_calls),
        cmocka_unit_test(
            test_request_invalid_shapes_are_refused_with_their_path),
        cmocka_unit_test(test_request_tool_choice_maps_each_type),
        cmocka_unit_test(
            test_request_without_tools_drops_tool_choice_and_stream_usage),
        cmocka_unit_test(
            test_request_turn_of_only_tool_results_adds_no_user_message),
        cmocka_unit_test(
            test_response_text_counts_cache_reads_apart_from_input),
        cmocka_unit_test(test_response_tool_calls_become_tool_use_blocks),
        cmocka_unit_test(test_response_stop_reasons_map_from_finish_reasons),
        cmocka_unit_test(
            test_response_tool_calls_with_finish_stop_still_mean_tool_use),
        cmocka_unit_test(test_response_empty_content_and_parts_and_refusal),
        cmocka_unit_test(test_response_that_is_not_a_completion_is_refused),
        cmocka_unit_test(test_error_types_follow_the_status),
        cmocka_unit_test(test_error_bodies_keep_the_message_in_anthropic_shape),
        cmocka_unit_test(
            test_stream_text_gives_one_text_block_and_usage_at_the_end),
        cmocka_unit_test(
            test_stream_text_then_two_tool_calls_give_three_blocks),
        cmocka_unit_test(
            test_stream_error_chunk_becomes_an_error_event_and_ends),
        cmocka_unit_test(
            test_stream_tool_arguments_in_many_fragments_arrive_whole),
        cmocka_unit_test(test_stream_without_usage_sends_message_delta_at_done),
        cmocka_unit_test(
            test_stream_usage_in_the_finish_chunk_sends_message_delta_at_once),
        cmocka_unit_test(test_stream_done_alone_still_makes_a_whole_message),
        cmocka_unit_test(
            test_stream_ignores_garbage_and_everything_after_the_end),
        cmocka_unit_test(test_stream_error_types_follow_the_openai_type),
        cmocka_unit_test(test_stream_feed_returns_the_callbacks_pause_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
