/* The OpenAI endpoints: POST /v1/chat/completions (plain, streamed, tool
 * calls) and POST /v1/embeddings. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mock.h"

enum { P_ROLE, P_TOOL_HEAD, P_BODY, P_FINISH, P_USAGE, P_DONE, P_END };

#define CHOICE_TAIL ",\"logprobs\":null,\"finish_reason\":null}"

static void
chunk_end(const mock_stream_t *s, mock_buf_t *out)
{
    mock_buf_adds(out, s->include_usage ? "],\"usage\":null}\n\n" : "]}\n\n");
}

/* One chat.completion.chunk per call: role, [tool head], one per word or
 * argument fragment, finish, [usage], [DONE]. */
static int
chat_next(mock_stream_t *s, mock_buf_t *out)
{
    for (;;) {
        switch (s->phase) {
        case P_ROLE:
            mock_buf_add(out, s->pre.p, s->pre.len);
            mock_buf_adds(out, s->tool ? "{\"index\":0,\"delta\":{\"role\":"
                                         "\"assistant\",\"content\":null}"
                                       : "{\"index\":0,\"delta\":{\"role\":"
                                         "\"assistant\",\"content\":\"\"}");
            mock_buf_adds(out, CHOICE_TAIL);
            chunk_end(s, out);
            s->phase = s->tool ? P_TOOL_HEAD : P_BODY;
            return 1;
        case P_TOOL_HEAD:
            mock_buf_add(out, s->pre.p, s->pre.len);
            mock_buf_adds(out, "{\"index\":0,\"delta\":{\"tool_calls\":[{"
                               "\"index\":0,\"id\":\"call_mock_1\",\"type\":"
                               "\"function\",\"function\":{\"name\":");
            mock_buf_json_str(out, s->tool, strlen(s->tool));
            mock_buf_adds(out, ",\"arguments\":\"\"}}]}" CHOICE_TAIL);
            chunk_end(s, out);
            s->phase = P_BODY;
            return 1;
        case P_BODY: {
            const char *p;
            size_t n;
            if (s->tool) {
                if (!mock_stream_args_fragment(s, &p, &n)) {
                    s->phase = P_FINISH;
                    continue;
                }
                mock_buf_add(out, s->pre.p, s->pre.len);
                mock_buf_adds(out, "{\"index\":0,\"delta\":{\"tool_calls\":[{"
                                   "\"index\":0,\"function\":{"
                                   "\"arguments\":");
                mock_buf_json_str(out, p, n);
                mock_buf_adds(out, "}}]}" CHOICE_TAIL);
            } else {
                n = mock_word_span(s->reply, s->reply_len, s->pos);
                if (n == 0) {
                    s->phase = P_FINISH;
                    continue;
                }
                mock_buf_add(out, s->pre.p, s->pre.len);
                mock_buf_adds(out, "{\"index\":0,\"delta\":{\"content\":");
                mock_buf_json_str(out, s->reply + s->pos, n);
                mock_buf_adds(out, "}" CHOICE_TAIL);
                s->pos += n;
            }
            chunk_end(s, out);
            return 1;
        }
        case P_FINISH:
            mock_buf_add(out, s->pre.p, s->pre.len);
            mock_buf_printf(out,
                            "{\"index\":0,\"delta\":{},\"logprobs\":null,"
                            "\"finish_reason\":\"%s\"}",
                            s->tool ? "tool_calls" : "stop");
            chunk_end(s, out);
            s->phase = s->include_usage ? P_USAGE : P_DONE;
            return 1;
        case P_USAGE:
            mock_buf_add(out, s->pre.p, s->pre.len);
            mock_buf_printf(out,
                            "],\"usage\":{\"prompt_tokens\":%ld,"
                            "\"completion_tokens\":%ld,\"total_tokens\":%ld}}"
                            "\n\n",
                            s->prompt_tokens, s->completion_tokens,
                            s->prompt_tokens + s->completion_tokens);
            s->phase = P_DONE;
            return 1;
        case P_DONE:
            mock_buf_adds(out, "data: [DONE]\n\n");
            s->phase = P_END;
            return 1;
        default: return 0;
        }
    }
}

static const char *
model_of(const cJSON *root)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    return cJSON_IsString(m) ? m->valuestring : "mock-model";
}

static bool
has_tools(const cJSON *root)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tools");
    return cJSON_IsArray(t) && cJSON_GetArraySize(t) > 0;
}

/* The reply the mock gives: the words directive, or the user's text
 * without directives. */
static char *
make_reply(const mock_directives_t *d, const mock_buf_t *text, size_t *len)
{
    if (d->words >= 0)
        return mock_words_reply(d->words, len);
    return mock_strip_directives(text->p ? text->p : "", text->len, len);
}

static void
chat_answer(mock_plan_t *p, const cJSON *root, const mock_directives_t *d,
            const mock_buf_t *text, long prompt_tokens)
{
    mock_stream_t *s = mock_stream_new();
    s->reply = make_reply(d, text, &s->reply_len);
    s->model = strdup(model_of(root));
    snprintf(s->id, sizeof(s->id), "chatcmpl-mock-%lu", mock_next_id());
    s->created = (long long)time(NULL);
    s->prompt_tokens = prompt_tokens;
    s->completion_tokens = (long)mock_count_words(s->reply, s->reply_len);
    if (d->tool[0] && has_tools(root)) {
        s->tool = strdup(d->tool);
        mock_buf_t args = {0};
        mock_buf_adds(&args, "{\"text\":");
        mock_buf_json_str(&args, s->reply, s->reply_len);
        mock_buf_adds(&args, "}");
        s->args = args.p;
        s->args_len = args.len;
        if (s->completion_tokens == 0)
            s->completion_tokens = 1;
    }

    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (cJSON_IsTrue(stream)) {
        const cJSON *opts =
            cJSON_GetObjectItemCaseSensitive(root, "stream_options");
        s->include_usage = cJSON_IsTrue(
            cJSON_GetObjectItemCaseSensitive(opts, "include_usage"));
        mock_buf_adds(&s->pre, "data: {\"id\":");
        mock_buf_json_str(&s->pre, s->id, strlen(s->id));
        mock_buf_printf(&s->pre,
                        ",\"object\":\"chat.completion.chunk\","
                        "\"created\":%lld,\"model\":",
                        s->created);
        mock_buf_json_str(&s->pre, s->model, strlen(s->model));
        mock_buf_adds(&s->pre, ",\"choices\":[");
        s->next = chat_next;
        p->stream = s;
        p->content_type = "text/event-stream";
        return;
    }

    mock_buf_t *b = &p->body;
    mock_buf_printf(b,
                    "{\"id\":\"%s\",\"object\":\"chat.completion\","
                    "\"created\":%lld,\"model\":",
                    s->id, s->created);
    mock_buf_json_str(b, s->model, strlen(s->model));
    mock_buf_adds(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                     "\"assistant\",\"content\":");
    if (s->tool) {
        mock_buf_adds(b, "null,\"tool_calls\":[{\"id\":\"call_mock_1\","
                         "\"type\":\"function\",\"function\":{\"name\":");
        mock_buf_json_str(b, s->tool, strlen(s->tool));
        mock_buf_adds(b, ",\"arguments\":");
        mock_buf_json_str(b, s->args, s->args_len);
        mock_buf_adds(b, "}}]");
    } else {
        mock_buf_json_str(b, s->reply, s->reply_len);
    }
    mock_buf_printf(b,
                    "},\"logprobs\":null,\"finish_reason\":\"%s\"}],"
                    "\"usage\":{\"prompt_tokens\":%ld,"
                    "\"completion_tokens\":%ld,\"total_tokens\":%ld}}",
                    s->tool ? "tool_calls" : "stop", s->prompt_tokens,
                    s->completion_tokens,
                    s->prompt_tokens + s->completion_tokens);
    mock_stream_free(s);
}

void
mock_handle_chat(const mock_req_t *r, mock_plan_t *p)
{
    mock_directives_t d;
    mock_directives_init(&d);
    mock_directives_from_headers(&d, r);
    cJSON *root = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsObject(root)) {
        mock_error_openai(p, 400, "request body is not valid JSON");
        goto out;
    }
    if (!cJSON_IsArray(messages)) {
        mock_error_openai(p, 400, "'messages' must be an array");
        goto out;
    }

    long prompt_tokens = 0;
    const cJSON *m, *last_user = NULL;
    mock_buf_t text = {0};
    cJSON_ArrayForEach(m, messages) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        text.len = 0;
        mock_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"),
                          &text);
        prompt_tokens += (long)mock_count_words(text.p, text.len);
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0)
            last_user = m;
    }
    text.len = 0;
    if (last_user)
        mock_content_text(
            cJSON_GetObjectItemCaseSensitive(last_user, "content"), &text);
    mock_directives_from_text(&d, text.p, text.len);
    if (!mock_plan_early(p, &d, false))
        chat_answer(p, root, &d, &text, prompt_tokens);
    mock_plan_late(p, &d);
    mock_buf_free(&text);
out:
    cJSON_Delete(root);
}

/* Newton's square root, so the mock needs no libm at link time. */
static double
root2(double x)
{
    double r = x > 1 ? x : 1;
    for (int i = 0; i < 60; i++)
        r = 0.5 * (r + x / r);
    return r;
}

/* encoding_format "base64": the floats as little-endian float32, base64
 * encoded, as OpenAI sends them (the openai SDKs ask for this by default). */
static void
add_base64_floats(mock_buf_t *b, const double *v, int n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[64];
    size_t len = 0;
    for (int i = 0; i < n && len + 4 <= sizeof(raw); i++) {
        float f = (float)v[i];
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int k = 0; k < 4; k++)
            raw[len++] = (unsigned char)(u >> (8 * k));
    }
    mock_buf_adds(b, "\"");
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)raw[i] << 16;
        if (i + 1 < len)
            w |= (uint32_t)raw[i + 1] << 8;
        if (i + 2 < len)
            w |= raw[i + 2];
        char out[5] = {tbl[(w >> 18) & 63], tbl[(w >> 12) & 63],
                       i + 1 < len ? tbl[(w >> 6) & 63] : '=',
                       i + 2 < len ? tbl[w & 63] : '=', 0};
        mock_buf_adds(b, out);
    }
    mock_buf_adds(b, "\"");
}

/* A deterministic unit vector from the text: FNV-1a seeds splitmix64. */
static void
add_embedding(mock_buf_t *b, const char *text, size_t n, bool base64)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)text[i];
        h *= 1099511628211ULL;
    }
    double v[8], norm = 0;
    for (int i = 0; i < 8; i++) {
        h += 0x9E3779B97F4A7C15ULL;
        uint64_t z = h;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        v[i] = (double)(z >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
        norm += v[i] * v[i];
    }
    norm = root2(norm);
    if (base64) {
        for (int i = 0; i < 8; i++)
            v[i] = norm > 0 ? v[i] / norm : 0;
        add_base64_floats(b, v, 8);
        return;
    }
    mock_buf_adds(b, "[");
    for (int i = 0; i < 8; i++)
        mock_buf_printf(b, i ? ",%.6f" : "%.6f", norm > 0 ? v[i] / norm : 0);
    mock_buf_adds(b, "]");
}

static bool
is_token_array(const cJSON *a)
{
    const cJSON *x;
    if (!cJSON_IsArray(a))
        return false;
    cJSON_ArrayForEach(x, a) {
        if (!cJSON_IsNumber(x))
            return false;
    }
    return true;
}

void
mock_handle_embeddings(const mock_req_t *r, mock_plan_t *p)
{
    mock_directives_t d;
    mock_directives_init(&d);
    mock_directives_from_headers(&d, r);
    cJSON *root = cJSON_ParseWithLength(r->body, r->body_len);
    cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    cJSON *one = NULL; /* input as a one-element list when it is a single */
    if (!cJSON_IsObject(root)) {
        mock_error_openai(p, 400, "request body is not valid JSON");
        goto out;
    }
    if (cJSON_IsString(input) || is_token_array(input)) {
        one = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(one, input);
        input = one;
    }
    if (!cJSON_IsArray(input) || cJSON_GetArraySize(input) == 0) {
        mock_error_openai(p, 400, "'input' must be a string or an array");
        goto out;
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, input) {
        if (cJSON_IsString(x))
            mock_directives_from_text(&d, x->valuestring,
                                      strlen(x->valuestring));
        else if (!is_token_array(x)) {
            mock_error_openai(p, 400,
                              "each input must be a string or an "
                              "array of tokens");
            goto out;
        }
    }
    if (mock_plan_early(p, &d, false))
        goto late;

    mock_buf_t *b = &p->body;
    long tokens = 0;
    int index = 0;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    bool base64 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    mock_buf_adds(b, "{\"object\":\"list\",\"data\":[");
    cJSON_ArrayForEach(x, input) {
        mock_buf_printf(b,
                        "%s{\"object\":\"embedding\",\"index\":%d,"
                        "\"embedding\":",
                        index ? "," : "", index);
        index++;
        if (cJSON_IsString(x)) {
            size_t n, len = strlen(x->valuestring);
            char *clean = mock_strip_directives(x->valuestring, len, &n);
            add_embedding(b, clean, n, base64);
            free(clean);
            tokens += (long)mock_count_words(x->valuestring, len);
        } else {
            char *json = cJSON_PrintUnformatted(x);
            add_embedding(b, json, strlen(json), base64);
            free(json);
            tokens += cJSON_GetArraySize(x);
        }
        mock_buf_adds(b, "}");
    }
    mock_buf_adds(b, "],\"model\":");
    const char *model = model_of(root);
    mock_buf_json_str(b, model, strlen(model));
    mock_buf_printf(b,
                    ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}",
                    tokens, tokens);
late:
    mock_plan_late(p, &d);
out:
    cJSON_Delete(one);
    cJSON_Delete(root);
}
