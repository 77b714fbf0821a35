/* The Gemini endpoints: POST /v1beta/models/MODEL:generateContent and
 * POST /v1beta/models/MODEL:streamGenerateContent?alt=sse, plain, streamed
 * and with a functionCall part. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mock.h"

#define PREFIX "/v1beta/models/"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

enum { P_BODY, P_END };

/* A stream with Gemini's one extra fact; mock_stream_free frees it (the
 * shared part comes first). */
typedef struct {
    mock_stream_t s;
    const char *finish; /* of a text answer: STOP or MAX_TOKENS */
} gemini_stream_t;

/* Google's canonical status names, as its error bodies carry them. */
static const char *
status_name(int status) {
    switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 409: return "ABORTED";
    case 429: return "RESOURCE_EXHAUSTED";
    case 499: return "CANCELLED";
    case 500: return "INTERNAL";
    case 501: return "UNIMPLEMENTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "UNKNOWN" : "FAILED_PRECONDITION";
    }
}

static void
error_gemini(mock_plan_t *p, int status, const char *msg) {
    p->body.len = 0;
    mock_stream_free(p->stream);
    p->stream = NULL;
    p->status = status;
    p->content_type = "application/json";
    mock_buf_printf(&p->body, "{\"error\":{\"code\":%d,\"message\":", status);
    mock_buf_json_str(&p->body, msg, strlen(msg));
    mock_buf_printf(&p->body, ",\"status\":\"%s\"}}", status_name(status));
}

/* The usageMetadata: only the prompt until the answer's last event. */
static void
add_usage(mock_buf_t *b, const mock_stream_t *s, bool final) {
    if (final)
        mock_buf_printf(b,
                        "\"usageMetadata\":{\"promptTokenCount\":%ld,"
                        "\"candidatesTokenCount\":%ld,"
                        "\"totalTokenCount\":%ld}",
                        s->prompt_tokens, s->completion_tokens,
                        s->prompt_tokens + s->completion_tokens);
    else
        mock_buf_printf(b,
                        "\"usageMetadata\":{\"promptTokenCount\":%ld,"
                        "\"totalTokenCount\":%ld}",
                        s->prompt_tokens, s->prompt_tokens);
}

/* One candidate holding `part` (JSON text), with its finishReason when
 * finish is not NULL; s->pre closes the response. */
static void
add_response(mock_buf_t *b, const mock_stream_t *s, const char *part,
             size_t part_len, const char *finish) {
    mock_buf_adds(b, "{\"candidates\":[{\"content\":{\"parts\":[");
    mock_buf_add(b, part, part_len);
    mock_buf_adds(b, "],\"role\":\"model\"}");
    if (finish != NULL)
        mock_buf_printf(b, ",\"finishReason\":\"%s\"", finish);
    mock_buf_adds(b, ",\"index\":0}],");
    add_usage(b, s, finish != NULL);
    mock_buf_add(b, s->pre.p, s->pre.len);
}

static void
text_part(mock_buf_t *b, const char *text, size_t n) {
    mock_buf_adds(b, "{\"text\":");
    mock_buf_json_str(b, text, n);
    mock_buf_adds(b, "}");
}

static void
call_part(mock_buf_t *b, const mock_stream_t *s) {
    mock_buf_adds(b, "{\"functionCall\":{\"name\":");
    mock_buf_json_str(b, s->tool, strlen(s->tool));
    mock_buf_adds(b, ",\"args\":");
    mock_buf_add(b, s->args, s->args_len);
    mock_buf_adds(b, "}}");
}

/* One event per word; the last one carries finishReason and the full
 * usage. Gemini sends no [DONE]: the stream ends when the body does. A
 * function call arrives whole, in one event. */
static int
gemini_next(mock_stream_t *s, mock_buf_t *out) {
    if (s->phase != P_BODY)
        return 0;
    mock_buf_t part = {0};
    const char *finish = s->tool ? "STOP" : NULL;
    if (s->tool) {
        call_part(&part, s);
        s->phase = P_END;
    } else {
        size_t n = mock_word_span(s->reply, s->reply_len, s->pos);
        text_part(&part, s->reply + s->pos, n);
        s->pos += n;
        if (s->pos >= s->reply_len) {
            finish = ((gemini_stream_t *)s)->finish;
            s->phase = P_END;
        }
    }
    mock_buf_adds(out, "data: ");
    add_response(out, s, part.p, part.len, finish);
    mock_buf_adds(out, "\r\n\r\n");
    mock_buf_free(&part);
    return 1;
}

/* The text parts of a Content, concatenated. */
static void
content_text(const cJSON *content, mock_buf_t *out) {
    const cJSON *part;
    cJSON_ArrayForEach(part,
                       cJSON_GetObjectItemCaseSensitive(content, "parts")) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(t))
            mock_buf_adds(out, t->valuestring);
    }
}

static bool
has_text_part(const cJSON *content) {
    const cJSON *part;
    cJSON_ArrayForEach(part,
                       cJSON_GetObjectItemCaseSensitive(content, "parts")) {
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(part, "text")))
            return true;
    }
    return false;
}

static bool
has_functions(const cJSON *root) {
    const cJSON *tool;
    cJSON_ArrayForEach(tool, cJSON_GetObjectItemCaseSensitive(root, "tools")) {
        const cJSON *d =
            cJSON_GetObjectItemCaseSensitive(tool, "functionDeclarations");
        if (cJSON_IsArray(d) && cJSON_GetArraySize(d) > 0)
            return true;
    }
    return false;
}

/* generationConfig.maxOutputTokens cuts the reply to that many words. */
static void
apply_max_tokens(const cJSON *root, gemini_stream_t *g) {
    mock_stream_t *s = &g->s;
    const cJSON *gc =
        cJSON_GetObjectItemCaseSensitive(root, "generationConfig");
    const cJSON *max = cJSON_GetObjectItemCaseSensitive(gc, "maxOutputTokens");
    g->finish = "STOP";
    if (!cJSON_IsNumber(max) || max->valuedouble < 0 ||
        (long)max->valuedouble >= s->completion_tokens)
        return;
    size_t pos = 0;
    for (long i = 0; i < (long)max->valuedouble; i++)
        pos += mock_word_span(s->reply, s->reply_len, pos);
    while (pos > 0 && (s->reply[pos - 1] == ' ' || s->reply[pos - 1] == '\n' ||
                       s->reply[pos - 1] == '\t'))
        pos--;
    s->reply_len = pos;
    s->reply[pos] = '\0';
    s->completion_tokens = (long)max->valuedouble;
    g->finish = "MAX_TOKENS";
}

static void
gemini_answer(mock_plan_t *p, const cJSON *root, const mock_directives_t *d,
              const mock_buf_t *text, long prompt_tokens, const char *model,
              bool stream) {
    gemini_stream_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        abort();
    mock_stream_t *s = &g->s;
    g->finish = "STOP";
    if (d->words >= 0)
        s->reply = mock_words_reply(d->words, &s->reply_len);
    else
        s->reply = mock_strip_directives(text->p ? text->p : "", text->len,
                                         &s->reply_len);
    s->model = strdup(model);
    snprintf(s->id, sizeof(s->id), "mock-%lu", mock_next_id());
    s->prompt_tokens = prompt_tokens;
    s->completion_tokens = (long)mock_count_words(s->reply, s->reply_len);
    if (d->tool[0] && has_functions(root)) {
        s->tool = strdup(d->tool);
        mock_buf_t args = {0};
        mock_buf_adds(&args, "{\"text\":");
        mock_buf_json_str(&args, s->reply, s->reply_len);
        mock_buf_adds(&args, "}");
        s->args = args.p;
        s->args_len = args.len;
        if (s->completion_tokens == 0)
            s->completion_tokens = 1;
    } else {
        apply_max_tokens(root, g);
    }
    /* What closes every response: the model and the response id. */
    mock_buf_adds(&s->pre, ",\"modelVersion\":");
    mock_buf_json_str(&s->pre, s->model, strlen(s->model));
    mock_buf_printf(&s->pre, ",\"responseId\":\"%s\"}", s->id);

    if (stream) {
        s->next = gemini_next;
        p->stream = s;
        p->content_type = "text/event-stream";
        return;
    }
    mock_buf_t part = {0};
    if (s->tool)
        call_part(&part, s);
    else
        text_part(&part, s->reply, s->reply_len);
    add_response(&p->body, s, part.p, part.len, g->finish);
    mock_buf_free(&part);
    mock_stream_free(s);
}

/* The model and the method from PREFIX MODEL ":" METHOD; false when the
 * path is not of that form. */
static bool
parse_path(const mock_req_t *r, char *model, size_t cap, const char **method,
           size_t *method_len) {
    const char *start = r->target + PREFIX_LEN;
    const char *end = r->target + r->path_len;
    const char *colon = NULL;
    for (const char *c = start; c < end; c++)
        if (*c == ':')
            colon = c;
    if (colon == NULL || colon == start || (size_t)(colon - start) >= cap)
        return false;
    memcpy(model, start, (size_t)(colon - start));
    model[colon - start] = '\0';
    *method = colon + 1;
    *method_len = (size_t)(end - colon - 1);
    return true;
}

static bool
method_is(const char *m, size_t n, const char *want) {
    return strlen(want) == n && strncmp(m, want, n) == 0;
}

void
mock_handle_gemini(const mock_req_t *r, mock_plan_t *p) {
    char model[128];
    const char *method;
    size_t mlen;
    if (!parse_path(r, model, sizeof(model), &method, &mlen) ||
        !(method_is(method, mlen, "generateContent") ||
          method_is(method, mlen, "streamGenerateContent"))) {
        error_gemini(p, 404, "no such Gemini method on this mock");
        return;
    }
    bool stream = method_is(method, mlen, "streamGenerateContent");
    const char *query = r->target + r->path_len;
    if (stream && strstr(query, "alt=sse") == NULL) {
        error_gemini(p, 400, "sluice-mock streams only with alt=sse");
        return;
    }
    mock_directives_t d;
    mock_directives_init(&d);
    mock_directives_from_headers(&d, r);
    cJSON *root = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *contents = cJSON_GetObjectItemCaseSensitive(root, "contents");
    if (!cJSON_IsObject(root)) {
        error_gemini(p, 400, "Invalid JSON payload received.");
        goto out;
    }
    if (!cJSON_IsArray(contents) || cJSON_GetArraySize(contents) == 0) {
        error_gemini(p, 400,
                     "* GenerateContentRequest.contents: contents is "
                     "not specified");
        goto out;
    }

    /* The prompt counts the system instruction too, as Gemini does. */
    mock_buf_t text = {0};
    content_text(cJSON_GetObjectItemCaseSensitive(root, "systemInstruction"),
                 &text);
    long prompt_tokens = (long)mock_count_words(text.p, text.len);
    const cJSON *c, *last_user = NULL;
    cJSON_ArrayForEach(c, contents) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(c, "role");
        text.len = 0;
        content_text(c, &text);
        prompt_tokens += (long)mock_count_words(text.p, text.len);
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0 &&
            has_text_part(c))
            last_user = c;
    }
    text.len = 0;
    if (last_user)
        content_text(last_user, &text);
    mock_directives_from_text(&d, text.p, text.len);
    if (mock_plan_early(p, &d, false)) {
        if (p->status >= 400) {
            char msg[64];
            snprintf(msg, sizeof(msg), "mock error: status %d", p->status);
            error_gemini(p, p->status, msg);
        }
    } else {
        gemini_answer(p, root, &d, &text, prompt_tokens, model, stream);
    }
    mock_plan_late(p, &d);
    mock_buf_free(&text);
out:
    cJSON_Delete(root);
}
