/* The Anthropic Messages endpoint: POST /v1/messages, plain, streamed
 * (named SSE events) and with a tool_use block. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mock.h"

enum {
    P_MSG_START,
    P_BLOCK_START,
    P_PING,
    P_BODY,
    P_BLOCK_STOP,
    P_MSG_DELTA,
    P_MSG_STOP,
    P_END,
};

static int
messages_next(mock_stream_t *s, mock_buf_t *out)
{
    const char *p;
    size_t n;
    for (;;) {
        switch (s->phase) {
        case P_MSG_START:
            /* pre holds the message object without its usage. */
            mock_buf_adds(out, "event: message_start\ndata: {\"type\":"
                               "\"message_start\",\"message\":");
            mock_buf_add(out, s->pre.p, s->pre.len);
            mock_buf_printf(out,
                            ",\"content\":[],\"stop_reason\":null,"
                            "\"stop_sequence\":null,\"usage\":{"
                            "\"input_tokens\":%ld,\"output_tokens\":1}}}\n\n",
                            s->prompt_tokens);
            s->phase = P_BLOCK_START;
            return 1;
        case P_BLOCK_START:
            mock_buf_adds(out, "event: content_block_start\ndata: {\"type\":"
                               "\"content_block_start\",\"index\":0,"
                               "\"content_block\":");
            if (s->tool) {
                mock_buf_adds(out, "{\"type\":\"tool_use\",\"id\":"
                                   "\"toolu_mock_1\",\"name\":");
                mock_buf_json_str(out, s->tool, strlen(s->tool));
                mock_buf_adds(out, ",\"input\":{}}}\n\n");
            } else {
                mock_buf_adds(out, "{\"type\":\"text\",\"text\":\"\"}}\n\n");
            }
            s->phase = P_PING;
            return 1;
        case P_PING:
            mock_buf_adds(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
            s->phase = P_BODY;
            return 1;
        case P_BODY:
            if (s->tool) {
                if (!mock_stream_args_fragment(s, &p, &n)) {
                    s->phase = P_BLOCK_STOP;
                    continue;
                }
                mock_buf_adds(out, "event: content_block_delta\ndata: {"
                                   "\"type\":\"content_block_delta\","
                                   "\"index\":0,\"delta\":{\"type\":"
                                   "\"input_json_delta\",\"partial_json\":");
            } else {
                n = mock_word_span(s->reply, s->reply_len, s->pos);
                if (n == 0) {
                    s->phase = P_BLOCK_STOP;
                    continue;
                }
                p = s->reply + s->pos;
                s->pos += n;
                mock_buf_adds(out, "event: content_block_delta\ndata: {"
                                   "\"type\":\"content_block_delta\","
                                   "\"index\":0,\"delta\":{\"type\":"
                                   "\"text_delta\",\"text\":");
            }
            mock_buf_json_str(out, p, n);
            mock_buf_adds(out, "}}\n\n");
            return 1;
        case P_BLOCK_STOP:
            mock_buf_adds(out, "event: content_block_stop\ndata: {\"type\":"
                               "\"content_block_stop\",\"index\":0}\n\n");
            s->phase = P_MSG_DELTA;
            return 1;
        case P_MSG_DELTA:
            mock_buf_printf(out,
                            "event: message_delta\ndata: {\"type\":"
                            "\"message_delta\",\"delta\":{\"stop_reason\":"
                            "\"%s\",\"stop_sequence\":null},\"usage\":{"
                            "\"output_tokens\":%ld}}\n\n",
                            s->tool ? "tool_use" : "end_turn",
                            s->completion_tokens);
            s->phase = P_MSG_STOP;
            return 1;
        case P_MSG_STOP:
            mock_buf_adds(out, "event: message_stop\ndata: {\"type\":"
                               "\"message_stop\"}\n\n");
            s->phase = P_END;
            return 1;
        default: return 0;
        }
    }
}

static void
messages_answer(mock_plan_t *p, const cJSON *root, const mock_directives_t *d,
                const mock_buf_t *text, long prompt_tokens)
{
    mock_stream_t *s = mock_stream_new();
    if (d->words >= 0)
        s->reply = mock_words_reply(d->words, &s->reply_len);
    else
        s->reply = mock_strip_directives(text->p ? text->p : "", text->len,
                                         &s->reply_len);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    s->model =
        strdup(cJSON_IsString(model) ? model->valuestring : "mock-model");
    snprintf(s->id, sizeof(s->id), "msg_mock_%lu", mock_next_id());
    s->created = (long long)time(NULL);
    s->prompt_tokens = prompt_tokens;
    s->completion_tokens = (long)mock_count_words(s->reply, s->reply_len);
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    if (d->tool[0] && cJSON_IsArray(tools) && cJSON_GetArraySize(tools) > 0) {
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

    /* The message object up to its content, shared by both shapes. */
    mock_buf_t *pre = &s->pre;
    mock_buf_printf(pre,
                    "{\"id\":\"%s\",\"type\":\"message\",\"role\":"
                    "\"assistant\",\"model\":",
                    s->id);
    mock_buf_json_str(pre, s->model, strlen(s->model));

    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"))) {
        s->next = messages_next;
        p->stream = s;
        p->content_type = "text/event-stream";
        return;
    }

    mock_buf_t *b = &p->body;
    mock_buf_add(b, pre->p, pre->len);
    if (s->tool) {
        mock_buf_adds(b, ",\"content\":[{\"type\":\"tool_use\",\"id\":"
                         "\"toolu_mock_1\",\"name\":");
        mock_buf_json_str(b, s->tool, strlen(s->tool));
        mock_buf_adds(b, ",\"input\":");
        mock_buf_add(b, s->args, s->args_len);
        mock_buf_adds(b, "}]");
    } else {
        mock_buf_adds(b, ",\"content\":[{\"type\":\"text\",\"text\":");
        mock_buf_json_str(b, s->reply, s->reply_len);
        mock_buf_adds(b, "}]");
    }
    mock_buf_printf(b,
                    ",\"stop_reason\":\"%s\",\"stop_sequence\":null,"
                    "\"usage\":{\"input_tokens\":%ld,\"output_tokens\":%ld}}",
                    s->tool ? "tool_use" : "end_turn", s->prompt_tokens,
                    s->completion_tokens);
    mock_stream_free(s);
}

void
mock_handle_messages(const mock_req_t *r, mock_plan_t *p)
{
    mock_directives_t d;
    mock_directives_init(&d);
    mock_directives_from_headers(&d, r);
    cJSON *root = cJSON_ParseWithLength(r->body, r->body_len);
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsObject(root)) {
        mock_error_anthropic(p, 400, "request body is not valid JSON");
        goto out;
    }
    if (!cJSON_IsArray(messages)) {
        mock_error_anthropic(p, 400, "messages: Field required");
        goto out;
    }

    /* input_tokens counts the system prompt too, as Anthropic does. */
    mock_buf_t text = {0};
    mock_content_text(cJSON_GetObjectItemCaseSensitive(root, "system"), &text);
    long prompt_tokens = (long)mock_count_words(text.p, text.len);
    const cJSON *m, *last_user = NULL;
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
    if (!mock_plan_early(p, &d, true))
        messages_answer(p, root, &d, &text, prompt_tokens);
    mock_plan_late(p, &d);
    mock_buf_free(&text);
out:
    cJSON_Delete(root);
}
