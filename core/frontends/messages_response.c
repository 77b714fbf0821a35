/* OpenAI answers said in Anthropic's Messages format: whole completions,
 * errors and streams (the answer half of the /v1/messages front door; see
 * messages.h). */
#include "../error.h"
#include "messages.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tool call indexes a stream may use: OpenAI numbers them from 0. */
#define SL_MESSAGES_MAX_TOOLS 256

static const char *
string_of(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* OpenAI finish_reason -> Anthropic stop_reason. A provider that calls
 * tools but says "stop" (some do) still means tool_use to the client. */
static const char *
stop_reason(const char *finish, int tools) {
    if (finish != NULL && strcmp(finish, "length") == 0)
        return "max_tokens";
    if (tools || (finish != NULL && (strcmp(finish, "tool_calls") == 0 ||
                                     strcmp(finish, "function_call") == 0)))
        return "tool_use";
    if (finish != NULL && strcmp(finish, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

typedef struct {
    long in, out, cache_read;
} usage_t;

/* Anthropic's input_tokens leaves out cache reads; OpenAI's prompt_tokens
 * counts them. */
static int
read_usage(const cJSON *u, usage_t *out) {
    if (!cJSON_IsObject(u))
        return 0;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(u, "completion_tokens");
    const cJSON *cached = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"),
        "cached_tokens");
    out->cache_read = cJSON_IsNumber(cached) ? (long)cached->valuedouble : 0;
    out->in = cJSON_IsNumber(p) ? (long)p->valuedouble - out->cache_read : 0;
    if (out->in < 0)
        out->in = 0;
    out->out = cJSON_IsNumber(c) ? (long)c->valuedouble : 0;
    return 1;
}

static cJSON *
usage_json(const usage_t *u, int with_input) {
    cJSON *o = cJSON_CreateObject();
    if (with_input)
        cJSON_AddNumberToObject(o, "input_tokens", (double)u->in);
    cJSON_AddNumberToObject(o, "output_tokens", (double)u->out);
    if (with_input)
        cJSON_AddNumberToObject(o, "cache_read_input_tokens",
                                (double)u->cache_read);
    return o;
}

static char *
prefixed_id(const char *prefix, const char *id) {
    size_t n = strlen(prefix) + strlen(id ? id : "sluice") + 1;
    char *s = malloc(n);
    if (s != NULL)
        snprintf(s, n, "%s%s", prefix, id ? id : "sluice");
    return s;
}

static cJSON *
tool_use_block(const char *id, const char *name, const char *args) {
    cJSON *b = cJSON_CreateObject();
    cJSON *input = args ? cJSON_Parse(args) : NULL;
    if (!cJSON_IsObject(input)) {
        /* Arguments that are not a JSON object say nothing usable. */
        cJSON_Delete(input);
        input = cJSON_CreateObject();
    }
    cJSON_AddStringToObject(b, "type", "tool_use");
    cJSON_AddStringToObject(b, "id", id);
    cJSON_AddStringToObject(b, "name", name);
    cJSON_AddItemToObject(b, "input", input);
    return b;
}

/* The assistant's text: a string, or the text of content parts; a
 * refusal when there is no text. malloc'd; NULL when none. */
static char *
message_text(const cJSON *m) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    const char *refusal = string_of(m, "refusal");
    if (cJSON_IsString(c) && c->valuestring[0] != '\0')
        return strdup(c->valuestring);
    const cJSON *parts = cJSON_IsArray(c) ? c : NULL, *p;
    size_t total = 0;
    cJSON_ArrayForEach(p, parts) {
        if (string_of(p, "text") != NULL)
            total += strlen(string_of(p, "text"));
    }
    if (total == 0)
        return refusal != NULL ? strdup(refusal) : NULL;
    char *text = malloc(total + 1), *at = text;
    if (text == NULL)
        return NULL;
    cJSON_ArrayForEach(p, parts) {
        const char *t = string_of(p, "text");
        if (t != NULL) {
            memcpy(at, t, strlen(t));
            at += strlen(t);
        }
    }
    *at = '\0';
    return text;
}

int
sl_messages_response(const cJSON *chat, const char *model, cJSON **out) {
    *out = NULL;
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(chat, "choices");
    const cJSON *choice = cJSON_GetArrayItem(choices, 0);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(choice, "message");
    if (!cJSON_IsObject(chat) || !cJSON_IsObject(m))
        return SL_EINVAL;
    cJSON *msg = cJSON_CreateObject();
    char *id = prefixed_id("msg_", string_of(chat, "id"));
    char *text = message_text(m);
    if (msg == NULL || id == NULL) {
        free(id);
        free(text);
        cJSON_Delete(msg);
        return SL_ENOMEM;
    }
    cJSON_AddStringToObject(msg, "id", id);
    free(id);
    cJSON_AddStringToObject(msg, "type", "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "model", model);
    cJSON *content = cJSON_AddArrayToObject(msg, "content");
    if (text != NULL && text[0] != '\0') {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", text);
        cJSON_AddItemToArray(content, b);
    }
    free(text);
    int ntools = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call,
                       cJSON_GetObjectItemCaseSensitive(m, "tool_calls")) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(call, "function");
        const char *name = string_of(f, "name");
        if (name == NULL)
            continue;
        char fallback[32];
        const char *cid = string_of(call, "id");
        if (cid == NULL) {
            snprintf(fallback, sizeof(fallback), "toolu_%d", ntools);
            cid = fallback;
        }
        cJSON_AddItemToArray(
            content, tool_use_block(cid, name, string_of(f, "arguments")));
        ntools++;
    }
    cJSON_AddStringToObject(
        msg, "stop_reason",
        stop_reason(string_of(choice, "finish_reason"), ntools > 0));
    cJSON_AddNullToObject(msg, "stop_sequence");
    usage_t u = {0, 0, 0};
    read_usage(cJSON_GetObjectItemCaseSensitive(chat, "usage"), &u);
    cJSON_AddItemToObject(msg, "usage", usage_json(&u, 1));
    *out = msg;
    return 0;
}

const char *
sl_messages_error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static cJSON *
error_object(const char *type, const char *message) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "error");
    cJSON *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "type", type);
    if (!cJSON_AddStringToObject(e, "message", message)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *
sl_messages_error_body(int status, const char *body, size_t len) {
    cJSON *j =
        body != NULL && len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
    const char *m =
        string_of(cJSON_GetObjectItemCaseSensitive(j, "error"), "message");
    char buf[320];
    if (m == NULL && body != NULL && len > 0 && j == NULL) {
        /* Not JSON: the bytes themselves are the best explanation. */
        snprintf(buf, sizeof(buf), "%.*s", len > 300 ? 300 : (int)len, body);
        m = buf;
    } else if (m == NULL) {
        snprintf(buf, sizeof(buf), "the request failed with HTTP status %d",
                 status);
        m = buf;
    }
    cJSON *out = error_object(sl_messages_error_type(status), m);
    cJSON_Delete(j);
    return out;
}

/* An error inside a stream has no status: its OpenAI type says what kind
 * it is. */
static const char *
stream_error_type(const char *openai_type) {
    static const char *const same[] = {
        "invalid_request_error", "authentication_error", "permission_error",
        "not_found_error",       "rate_limit_error",     "overloaded_error"};
    if (openai_type == NULL)
        return "api_error";
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
        if (strcmp(openai_type, same[i]) == 0)
            return same[i];
    if (strcmp(openai_type, "service_unavailable") == 0)
        return "overloaded_error";
    return "api_error";
}

struct sl_messages_stream {
    char *model;
    sl_messages_event_fn cb;
    void *ud;
    int started;      /* message_start went out */
    int open;         /* index of the open content block, -1 when none */
    int open_text;    /* ...and it is a text block */
    int nblocks;      /* blocks started */
    int *tool_block;  /* OpenAI tool call index -> block index, -1 unseen */
    const char *stop; /* the stop reason once a finish came, static */
    int tools;        /* a tool call was seen */
    int have_usage;
    usage_t usage;
    int delta_sent; /* message_delta went out */
    int done;
};

sl_messages_stream_t *
sl_messages_stream_new(const char *model, sl_messages_event_fn cb, void *ud) {
    sl_messages_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->model = strdup(model);
    s->tool_block = malloc(SL_MESSAGES_MAX_TOOLS * sizeof(int));
    if (s->model == NULL || s->tool_block == NULL) {
        sl_messages_stream_free(s);
        return NULL;
    }
    for (int i = 0; i < SL_MESSAGES_MAX_TOOLS; i++)
        s->tool_block[i] = -1;
    s->open = -1;
    s->cb = cb;
    s->ud = ud;
    return s;
}

void
sl_messages_stream_free(sl_messages_stream_t *s) {
    if (s == NULL)
        return;
    free(s->model);
    free(s->tool_block);
    free(s);
}

int
sl_messages_stream_done(const sl_messages_stream_t *s) {
    return s->done;
}

/* An event's data object: its "type" is its name, first as Anthropic
 * writes it. */
static cJSON *
event_new(const char *name) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", name);
    return o;
}

/* Emits obj (deleted here) as the event its "type" names. */
static int
emit(sl_messages_stream_t *s, cJSON *obj) {
    const char *name = string_of(obj, "type");
    char *json = name ? cJSON_PrintUnformatted(obj) : NULL;
    int rc = json ? s->cb(s->ud, name, json, strlen(json)) : 0;
    cJSON_free(json);
    cJSON_Delete(obj);
    return rc;
}

static int
message_start(sl_messages_stream_t *s, const char *chunk_id) {
    if (s->started)
        return 0;
    s->started = 1;
    cJSON *o = event_new("message_start");
    cJSON *m = cJSON_AddObjectToObject(o, "message");
    char *id = prefixed_id("msg_", chunk_id);
    cJSON_AddStringToObject(m, "id", id ? id : "msg_sluice");
    free(id);
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "model", s->model);
    cJSON_AddArrayToObject(m, "content");
    cJSON_AddNullToObject(m, "stop_reason");
    cJSON_AddNullToObject(m, "stop_sequence");
    cJSON_AddItemToObject(m, "usage", usage_json(&s->usage, 1));
    return emit(s, o);
}

static int
close_block(sl_messages_stream_t *s) {
    if (s->open < 0)
        return 0;
    cJSON *o = event_new("content_block_stop");
    cJSON_AddNumberToObject(o, "index", s->open);
    s->open = -1;
    s->open_text = 0;
    return emit(s, o);
}

/* Starts a block of content `block` (taken). */
static int
open_block(sl_messages_stream_t *s, cJSON *block, int text) {
    int rc = close_block(s);
    cJSON *o = event_new("content_block_start");
    s->open = s->nblocks++;
    s->open_text = text;
    cJSON_AddNumberToObject(o, "index", s->open);
    cJSON_AddItemToObject(o, "content_block", block);
    return rc | emit(s, o);
}

static int
block_delta(sl_messages_stream_t *s, int index, const char *type,
            const char *key, const char *value) {
    cJSON *o = event_new("content_block_delta");
    cJSON_AddNumberToObject(o, "index", index);
    cJSON *d = cJSON_AddObjectToObject(o, "delta");
    cJSON_AddStringToObject(d, "type", type);
    cJSON_AddStringToObject(d, key, value);
    return emit(s, o);
}

static int
text_delta(sl_messages_stream_t *s, const char *t) {
    int rc = 0;
    if (!s->open_text) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "text");
        cJSON_AddStringToObject(b, "text", "");
        rc = open_block(s, b, 1);
    }
    return rc | block_delta(s, s->open, "text_delta", "text", t);
}

static int
tool_deltas(sl_messages_stream_t *s, const cJSON *calls) {
    int rc = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(c, "index");
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(c, "function");
        int i = cJSON_IsNumber(ix) ? (int)ix->valuedouble : 0;
        if (i < 0 || i >= SL_MESSAGES_MAX_TOOLS)
            continue;
        s->tools = 1;
        if (s->tool_block[i] < 0) {
            const char *id = string_of(c, "id");
            const char *name = string_of(f, "name");
            char fallback[32];
            if (id == NULL) {
                snprintf(fallback, sizeof(fallback), "toolu_%d", i);
                id = fallback;
            }
            rc |= open_block(s, tool_use_block(id, name ? name : "", NULL), 0);
            s->tool_block[i] = s->open;
        }
        const char *args = string_of(f, "arguments");
        if (args != NULL && args[0] != '\0')
            rc |= block_delta(s, s->tool_block[i], "input_json_delta",
                              "partial_json", args);
    }
    return rc;
}

static int
message_delta(sl_messages_stream_t *s) {
    s->delta_sent = 1;
    cJSON *o = event_new("message_delta");
    cJSON *d = cJSON_AddObjectToObject(o, "delta");
    cJSON_AddStringToObject(d, "stop_reason",
                            s->stop ? s->stop : stop_reason(NULL, s->tools));
    cJSON_AddNullToObject(d, "stop_sequence");
    cJSON_AddItemToObject(o, "usage", usage_json(&s->usage, s->have_usage));
    return emit(s, o);
}

static int
message_stop(sl_messages_stream_t *s) {
    int rc = message_start(s, NULL);
    rc |= close_block(s);
    if (!s->delta_sent)
        rc |= message_delta(s);
    s->done = 1;
    return rc | emit(s, event_new("message_stop"));
}

static int
stream_error(sl_messages_stream_t *s, const cJSON *e) {
    const char *m = string_of(e, "message");
    s->done = 1;
    return emit(s, error_object(stream_error_type(string_of(e, "type")),
                                m ? m : "the stream failed"));
}

int
sl_messages_stream_feed(sl_messages_stream_t *s, const char *data, size_t len) {
    if (s->done)
        return 0;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0)
        return message_stop(s);
    cJSON *j = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return 0;
    }
    int rc = 0;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (e != NULL) {
        rc = stream_error(s, e);
        cJSON_Delete(j);
        return rc;
    }
    if (read_usage(cJSON_GetObjectItemCaseSensitive(j, "usage"), &s->usage))
        s->have_usage = 1;
    rc |= message_start(s, string_of(j, "id"));
    const cJSON *choice =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
    const char *content = string_of(delta, "content");
    if (content != NULL && content[0] != '\0')
        rc |= text_delta(s, content);
    rc |= tool_deltas(s, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls"));
    const char *fin = string_of(choice, "finish_reason");
    if (fin != NULL && s->stop == NULL) {
        s->stop = stop_reason(fin, s->tools);
        rc |= close_block(s);
    }
    if (s->stop != NULL && s->have_usage && !s->delta_sent)
        rc |= message_delta(s);
    cJSON_Delete(j);
    return rc;
}
