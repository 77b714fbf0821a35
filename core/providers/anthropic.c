/* Anthropic's Messages API behind the OpenAI chat API: requests, answers,
 * errors and streams translated both ways, and the adapter that carries a
 * call to POST /v1/messages. */
#include "anthropic.h"
#include "../clock.h"
#include "../error.h"
#include "../requestlog.h"
#include "../snapshot.h"
#include "../worker.h"
#include "provider.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SL_SSE_MAX_EVENT (4u << 20)
#define MAX_BLOCKS 4096 /* content blocks in one streamed message */

#define GET(o, key) cJSON_GetObjectItemCaseSensitive((o), (key))

/* ---- small helpers ---- */

/* Adds item to an object under key, or to an array when key is NULL;
 * deletes it when that fails. 0 or SL_ENOMEM. */
static int
put(cJSON *to, const char *key, cJSON *item) {
    if (item == NULL)
        return SL_ENOMEM;
    cJSON_bool ok = key != NULL ? cJSON_AddItemToObject(to, key, item)
                                : cJSON_AddItemToArray(to, item);
    if (!ok) {
        cJSON_Delete(item);
        return SL_ENOMEM;
    }
    return 0;
}

static int
put_str(cJSON *to, const char *key, const char *s) {
    return put(to, key, cJSON_CreateString(s));
}

static int
is_null(const cJSON *v) {
    return v == NULL || cJSON_IsNull(v);
}

static int
str_is(const cJSON *v, const char *s) {
    return cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

static long
num(const cJSON *o, const char *key) {
    const cJSON *v = GET(o, key);
    return cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
}

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf_t;

static void
buf_add(buf_t *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* OpenAI counts cached prompt tokens inside prompt_tokens and reports them
 * again as prompt_tokens_details.cached_tokens; Anthropic's input_tokens
 * EXCLUDES the tokens read from or written to its cache. So the prompt is
 * the sum of the three, and only cache reads are "cached". */
static cJSON *
usage_json(long input, long cache_read, long cache_write, long output) {
    long prompt = input + cache_read + cache_write;
    cJSON *u = cJSON_CreateObject(), *d = cJSON_CreateObject();
    if (u == NULL || d == NULL ||
        put(u, "prompt_tokens", cJSON_CreateNumber((double)prompt)) != 0 ||
        put(u, "completion_tokens", cJSON_CreateNumber((double)output)) != 0 ||
        put(u, "total_tokens", cJSON_CreateNumber((double)(prompt + output))) !=
            0 ||
        put(d, "cached_tokens", cJSON_CreateNumber((double)cache_read)) != 0) {
        cJSON_Delete(u);
        cJSON_Delete(d);
        return NULL;
    }
    if (put(u, "prompt_tokens_details", d) != 0) {
        cJSON_Delete(u);
        return NULL;
    }
    return u;
}

static const char *
finish_reason_for(const cJSON *stop_reason) {
    if (str_is(stop_reason, "tool_use"))
        return "tool_calls";
    if (str_is(stop_reason, "max_tokens"))
        return "length";
    return "stop"; /* end_turn, stop_sequence, and what OpenAI cannot say */
}

/* ---- requests ---- */

typedef struct {
    cJSON *msgs;      /* the Anthropic messages being built */
    cJSON *last;      /* the last of them */
    const char *role; /* ...and its role */
    buf_t system;     /* every system and developer message */
    int nsystem;
    char *err;
    size_t errcap;
} req_t;

static int req_fail(req_t *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
req_fail(req_t *q, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (q->errcap > 0)
        vsnprintf(q->err, q->errcap, fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

/* Appends blocks as a turn of `role` (static), merged into the previous
 * turn when it has the same role: Anthropic wants user and assistant turns
 * to alternate, OpenAI does not care. Takes blocks. */
static int
add_turn(req_t *q, const char *role, cJSON *blocks) {
    if (cJSON_GetArraySize(blocks) == 0) {
        cJSON_Delete(blocks);
        return 0;
    }
    if (q->last != NULL && strcmp(q->role, role) == 0) {
        cJSON *content = GET(q->last, "content");
        cJSON *b;
        while ((b = blocks->child) != NULL)
            cJSON_AddItemToArray(content,
                                 cJSON_DetachItemViaPointer(blocks, b));
        cJSON_Delete(blocks);
        return 0;
    }
    cJSON *m = cJSON_CreateObject();
    if (m == NULL || put_str(m, "role", role) != 0 ||
        put(m, "content", blocks) != 0) {
        cJSON_Delete(m);
        return SL_ENOMEM;
    }
    if (put(q->msgs, NULL, m) != 0)
        return SL_ENOMEM;
    q->last = m;
    q->role = role;
    return 0;
}

static int
text_block(cJSON *blocks, const char *text, const cJSON *cache_control) {
    cJSON *b = cJSON_CreateObject();
    if (b == NULL || put_str(b, "type", "text") != 0 ||
        put_str(b, "text", text) != 0 ||
        (cache_control != NULL &&
         put(b, "cache_control", cJSON_Duplicate(cache_control, 1)) != 0)) {
        cJSON_Delete(b);
        return SL_ENOMEM;
    }
    return put(blocks, NULL, b);
}

/* image_url parts: data: URLs become base64 sources, http(s) URLs url
 * sources (Anthropic fetches those itself). */
static int
image_block(req_t *q, int i, int j, const cJSON *part, cJSON *blocks) {
    const cJSON *iu = GET(part, "image_url");
    const cJSON *u = cJSON_IsString(iu) ? iu : GET(iu, "url");
    if (!cJSON_IsString(u))
        return req_fail(q,
                        "messages[%d].content[%d].image_url.url must be a "
                        "string",
                        i, j);
    const char *url = u->valuestring;
    cJSON *src = cJSON_CreateObject();
    if (src == NULL)
        return SL_ENOMEM;
    int rc = 0;
    if (strncmp(url, "data:", 5) == 0) {
        const char *comma = strchr(url, ',');
        size_t mt = strcspn(url + 5, ";,");
        char media[128];
        if (comma == NULL || comma - url < 12 ||
            memcmp(comma - 7, ";base64", 7) != 0 || mt == 0 ||
            mt >= sizeof(media)) {
            cJSON_Delete(src);
            return req_fail(q,
                            "messages[%d].content[%d].image_url: a data: "
                            "URL must be data:MEDIA_TYPE;base64,DATA",
                            i, j);
        }
        memcpy(media, url + 5, mt);
        media[mt] = '\0';
        rc = put_str(src, "type", "base64");
        rc = rc ? rc : put_str(src, "media_type", media);
        rc = rc ? rc : put_str(src, "data", comma + 1);
    } else if (strncmp(url, "https://", 8) == 0 ||
               strncmp(url, "http://", 7) == 0) {
        rc = put_str(src, "type", "url");
        rc = rc ? rc : put_str(src, "url", url);
    } else {
        cJSON_Delete(src);
        return req_fail(q,
                        "messages[%d].content[%d].image_url.url must be "
                        "an http(s) URL or a base64 data: URL",
                        i, j);
    }
    cJSON *b = cJSON_CreateObject();
    if (rc != 0 || b == NULL || put_str(b, "type", "image") != 0) {
        cJSON_Delete(src);
        cJSON_Delete(b);
        return SL_ENOMEM;
    }
    if (put(b, "source", src) != 0) {
        cJSON_Delete(b);
        return SL_ENOMEM;
    }
    return put(blocks, NULL, b);
}

/* A user's (or a tool result's) content: a string or text and image
 * parts. */
static int
user_blocks(req_t *q, int i, const cJSON *content, cJSON *blocks) {
    if (cJSON_IsString(content))
        return text_block(blocks, content->valuestring, NULL);
    if (!cJSON_IsArray(content))
        return req_fail(q,
                        "messages[%d].content must be a string or an "
                        "array of content parts",
                        i);
    int j = 0, rc = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = GET(part, "type");
        const cJSON *text = GET(part, "text");
        if (!cJSON_IsString(type))
            return req_fail(q,
                            "messages[%d].content[%d] must be an object "
                            "with a string 'type'",
                            i, j);
        if (strcmp(type->valuestring, "text") == 0) {
            if (!cJSON_IsString(text))
                return req_fail(q,
                                "messages[%d].content[%d].text must be a "
                                "string",
                                i, j);
            rc = text_block(blocks, text->valuestring,
                            GET(part, "cache_control"));
        } else if (strcmp(type->valuestring, "image_url") == 0) {
            rc = image_block(q, i, j, part, blocks);
        } else {
            return req_fail(q,
                            "messages[%d].content[%d]: content parts of "
                            "type '%.40s' are not supported by anthropic "
                            "providers",
                            i, j, type->valuestring);
        }
        if (rc != 0)
            return rc;
        j++;
    }
    return 0;
}

/* Text-only content (system, developer, assistant): a string or text
 * parts, each passed to fn. */
static int
each_text(req_t *q, int i, const cJSON *content,
          int (*fn)(req_t *q, const char *text, void *arg), void *arg) {
    if (is_null(content))
        return 0;
    if (cJSON_IsString(content))
        return fn(q, content->valuestring, arg);
    if (!cJSON_IsArray(content))
        return req_fail(q,
                        "messages[%d].content must be a string or an "
                        "array of text parts",
                        i);
    int j = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *text = GET(part, "text");
        if (!str_is(GET(part, "type"), "text") || !cJSON_IsString(text))
            return req_fail(q,
                            "messages[%d].content[%d] must be a text "
                            "part ({\"type\":\"text\",\"text\":...})",
                            i, j);
        int rc = fn(q, text->valuestring, arg);
        if (rc != 0)
            return rc;
        j++;
    }
    return 0;
}

static int
add_system_text(req_t *q, const char *text, void *arg) {
    int *first = arg;
    /* Separate messages stay separate paragraphs; the parts of one message
     * are one text, as OpenAI reads them. */
    if (*first && q->system.len > 0)
        buf_add(&q->system, "\n\n", 2);
    *first = 0;
    buf_add(&q->system, text, strlen(text));
    return q->system.oom ? SL_ENOMEM : 0;
}

static int
add_assistant_text(req_t *q, const char *text, void *arg) {
    (void)q;
    /* Anthropic refuses empty text blocks; SDKs send "" beside tool
     * calls. */
    return text[0] != '\0' ? text_block(arg, text, NULL) : 0;
}

/* An OpenAI tool call's arguments (a string of JSON) as the object
 * Anthropic's tool_use.input must be. */
static int
tool_input(req_t *q, int i, int j, const cJSON *args, cJSON **out) {
    *out = NULL;
    if (cJSON_IsObject(args)) {
        *out = cJSON_Duplicate(args, 1);
        return *out != NULL ? 0 : SL_ENOMEM;
    }
    const char *s = cJSON_IsString(args) ? args->valuestring : NULL;
    if (is_null(args) || (s != NULL && s[strspn(s, " \t\r\n")] == '\0')) {
        *out = cJSON_CreateObject(); /* a call without arguments */
        return *out != NULL ? 0 : SL_ENOMEM;
    }
    if (s == NULL)
        return req_fail(q,
                        "messages[%d].tool_calls[%d].function.arguments "
                        "must be a string of JSON",
                        i, j);
    cJSON *v = cJSON_ParseWithOpts(s, NULL, 1);
    if (!cJSON_IsObject(v)) {
        int bad_json = v == NULL;
        cJSON_Delete(v);
        return req_fail(
            q, "messages[%d].tool_calls[%d].function.arguments %s", i, j,
            bad_json ? "is not valid JSON" : "must be a JSON object");
    }
    *out = v;
    return 0;
}

static int
tool_use_blocks(req_t *q, int i, const cJSON *calls, cJSON *blocks) {
    if (is_null(calls))
        return 0;
    if (!cJSON_IsArray(calls))
        return req_fail(q, "messages[%d].tool_calls must be an array", i);
    int j = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call, calls) {
        const cJSON *type = GET(call, "type");
        const cJSON *id = GET(call, "id");
        const cJSON *fn = GET(call, "function");
        const cJSON *name = GET(fn, "name");
        if (type != NULL && !str_is(type, "function"))
            return req_fail(q,
                            "messages[%d].tool_calls[%d]: only tool calls "
                            "of type 'function' are supported",
                            i, j);
        if (!cJSON_IsString(id))
            return req_fail(q,
                            "messages[%d].tool_calls[%d].id must be a "
                            "string",
                            i, j);
        if (!cJSON_IsString(name))
            return req_fail(q,
                            "messages[%d].tool_calls[%d].function.name "
                            "must be a string",
                            i, j);
        cJSON *input;
        int rc = tool_input(q, i, j, GET(fn, "arguments"), &input);
        if (rc != 0)
            return rc;
        cJSON *b = cJSON_CreateObject();
        if (b == NULL || put_str(b, "type", "tool_use") != 0 ||
            put_str(b, "id", id->valuestring) != 0 ||
            put_str(b, "name", name->valuestring) != 0) {
            cJSON_Delete(b);
            cJSON_Delete(input);
            return SL_ENOMEM;
        }
        if (put(b, "input", input) != 0 || put(blocks, NULL, b) != 0) {
            cJSON_Delete(b);
            return SL_ENOMEM;
        }
        j++;
    }
    return 0;
}

/* A role "tool" message: a tool_result block in a user turn, so that
 * results of parallel calls land in one turn as Anthropic requires. */
static int
tool_result(req_t *q, int i, const cJSON *m, cJSON *blocks) {
    const cJSON *id = GET(m, "tool_call_id");
    const cJSON *content = GET(m, "content");
    if (!cJSON_IsString(id))
        return req_fail(q, "messages[%d].tool_call_id must be a string", i);
    cJSON *b = cJSON_CreateObject();
    cJSON *c = cJSON_IsArray(content) ? cJSON_CreateArray()
               : cJSON_IsString(content)
                   ? cJSON_CreateString(content->valuestring)
                   : NULL;
    if (c == NULL && !is_null(content)) {
        cJSON_Delete(b);
        return req_fail(q,
                        "messages[%d].content must be a string or an "
                        "array of content parts",
                        i);
    }
    if (c == NULL)
        c = cJSON_CreateString("");
    int rc = b == NULL || c == NULL ? SL_ENOMEM : 0;
    if (rc == 0 && cJSON_IsArray(c))
        rc = user_blocks(q, i, content, c);
    if (rc == 0 && (put_str(b, "type", "tool_result") != 0 ||
                    put_str(b, "tool_use_id", id->valuestring) != 0))
        rc = SL_ENOMEM;
    if (rc != 0) {
        cJSON_Delete(b);
        cJSON_Delete(c);
        return rc;
    }
    if (put(b, "content", c) != 0 || put(blocks, NULL, b) != 0) {
        cJSON_Delete(b);
        return SL_ENOMEM;
    }
    return 0;
}

static int
add_message(req_t *q, int i, const cJSON *m) {
    const cJSON *role = GET(m, "role");
    const cJSON *content = GET(m, "content");
    if (!cJSON_IsObject(m) || !cJSON_IsString(role))
        return req_fail(q,
                        "messages[%d] must be an object with a string "
                        "'role'",
                        i);
    const char *r = role->valuestring;
    if (strcmp(r, "system") == 0 || strcmp(r, "developer") == 0) {
        /* Anthropic has one system prompt, before the turns: every system
         * message goes there, wherever it stood. */
        int first = 1;
        return each_text(q, i, content, add_system_text, &first);
    }
    const char *turn;
    cJSON *blocks = cJSON_CreateArray();
    int rc;
    if (blocks == NULL)
        return SL_ENOMEM;
    if (strcmp(r, "user") == 0) {
        turn = "user";
        rc = user_blocks(q, i, content, blocks);
    } else if (strcmp(r, "assistant") == 0) {
        turn = "assistant";
        rc = each_text(q, i, content, add_assistant_text, blocks);
        if (rc == 0)
            rc = tool_use_blocks(q, i, GET(m, "tool_calls"), blocks);
        if (rc == 0 && !is_null(GET(m, "function_call")))
            rc = req_fail(q,
                          "messages[%d].function_call is not supported; "
                          "use tool_calls",
                          i);
    } else if (strcmp(r, "tool") == 0) {
        turn = "user";
        rc = tool_result(q, i, m, blocks);
    } else {
        turn = NULL;
        rc = req_fail(q,
                      "messages[%d]: role '%.40s' is not supported by "
                      "anthropic providers",
                      i, r);
    }
    if (rc != 0) {
        cJSON_Delete(blocks);
        return rc;
    }
    /* An empty assistant turn (no text, no calls) is dropped: Anthropic
     * refuses empty content. */
    return add_turn(q, turn, blocks);
}

/* A turn of one plain text block reads better, and logs shorter, as a
 * string; Anthropic takes both. */
static void
collapse_turns(cJSON *msgs) {
    cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        cJSON *content = GET(m, "content");
        cJSON *b = content->child;
        if (b == NULL || b->next != NULL || cJSON_GetArraySize(b) != 2 ||
            !str_is(GET(b, "type"), "text"))
            continue;
        cJSON *text = cJSON_DetachItemFromObjectCaseSensitive(b, "text");
        cJSON_ReplaceItemInObjectCaseSensitive(m, "content", text);
    }
}

/* tools: OpenAI functions to Anthropic tools. */
static int
add_tools(req_t *q, const cJSON *tools, cJSON *out) {
    if (!cJSON_IsArray(tools))
        return req_fail(q, "'tools' must be an array");
    cJSON *arr = cJSON_CreateArray();
    if (arr == NULL)
        return SL_ENOMEM;
    int j = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *fn = GET(t, "function");
        const cJSON *name = GET(fn, "name");
        const cJSON *desc = GET(fn, "description");
        const cJSON *params = GET(fn, "parameters");
        if (!str_is(GET(t, "type"), "function")) {
            cJSON_Delete(arr);
            return req_fail(q,
                            "tools[%d]: only tools of type 'function' "
                            "are supported by anthropic providers",
                            j);
        }
        if (!cJSON_IsString(name) ||
            (!is_null(desc) && !cJSON_IsString(desc)) ||
            (!is_null(params) && !cJSON_IsObject(params))) {
            cJSON_Delete(arr);
            return req_fail(q,
                            "tools[%d].function needs a string 'name', and "
                            "'description' a string, 'parameters' an "
                            "object when present",
                            j);
        }
        cJSON *o = cJSON_CreateObject();
        int rc = put(arr, NULL, o);
        rc = rc ? rc : put_str(o, "name", name->valuestring);
        if (rc == 0 && cJSON_IsString(desc))
            rc = put_str(o, "description", desc->valuestring);
        /* Anthropic requires a schema; OpenAI lets a function omit it. */
        if (rc == 0)
            rc =
                put(o, "input_schema",
                    cJSON_IsObject(params) ? cJSON_Duplicate(params, 1)
                                           : cJSON_Parse("{\"type\":\"object\","
                                                         "\"properties\":{}}"));
        if (rc != 0) {
            cJSON_Delete(arr);
            return rc;
        }
        j++;
    }
    return put(out, "tools", arr);
}

static int
add_tool_choice(req_t *q, const cJSON *chat, cJSON *out) {
    const cJSON *tc = GET(chat, "tool_choice");
    const cJSON *ptc = GET(chat, "parallel_tool_calls");
    const char *type = NULL, *name = NULL;
    if (!is_null(ptc) && !cJSON_IsBool(ptc))
        return req_fail(q, "'parallel_tool_calls' must be a boolean");
    if (str_is(tc, "auto"))
        type = "auto";
    else if (str_is(tc, "none"))
        type = "none";
    else if (str_is(tc, "required"))
        type = "any";
    else if (cJSON_IsObject(tc) && str_is(GET(tc, "type"), "function") &&
             cJSON_IsString(GET(GET(tc, "function"), "name"))) {
        type = "tool";
        name = GET(GET(tc, "function"), "name")->valuestring;
    } else if (!is_null(tc)) {
        return req_fail(q, "'tool_choice' must be \"auto\", \"none\", "
                           "\"required\" or {\"type\":\"function\","
                           "\"function\":{\"name\":...}}");
    }
    /* Anthropic says "one call per turn" inside tool_choice, which "none"
     * has no room for. */
    int serial =
        cJSON_IsFalse(ptc) && (type == NULL || strcmp(type, "none") != 0);
    if (type == NULL && !serial)
        return 0;
    cJSON *o = cJSON_CreateObject();
    int rc = put(out, "tool_choice", o);
    rc = rc ? rc : put_str(o, "type", type ? type : "auto");
    if (rc == 0 && name != NULL)
        rc = put_str(o, "name", name);
    if (rc == 0 && serial)
        rc = put(o, "disable_parallel_tool_use", cJSON_CreateTrue());
    return rc;
}

/* What an Anthropic model cannot do, refused rather than silently
 * ignored: the client would get something other than it asked for. */
static int
check_unsupported(req_t *q, const cJSON *chat) {
    const cJSON *v;
    if (cJSON_IsNumber(v = GET(chat, "n")) && v->valuedouble != 1)
        return req_fail(q, "'n' other than 1 is not supported by anthropic "
                           "providers");
    if (cJSON_IsTrue(GET(chat, "logprobs")) ||
        !is_null(GET(chat, "top_logprobs")))
        return req_fail(q, "'logprobs' is not supported by anthropic "
                           "providers");
    v = GET(chat, "response_format");
    if (!is_null(v) && !str_is(GET(v, "type"), "text"))
        return req_fail(q, "'response_format' other than {\"type\":\"text\"} "
                           "is not supported by anthropic providers");
    if (!is_null(GET(chat, "audio")))
        return req_fail(q, "'audio' is not supported by anthropic providers");
    const cJSON *mod;
    cJSON_ArrayForEach(mod, GET(chat, "modalities")) {
        if (!str_is(mod, "text"))
            return req_fail(q, "only the \"text\" modality is supported by "
                               "anthropic providers");
    }
    if (!is_null(GET(chat, "functions")) ||
        !is_null(GET(chat, "function_call")))
        return req_fail(q, "'functions' and 'function_call' are not "
                           "supported; use 'tools' and 'tool_choice'");
    return 0;
}

static int
add_number(req_t *q, const cJSON *chat, const char *key, cJSON *out) {
    const cJSON *v = GET(chat, key);
    if (is_null(v))
        return 0;
    if (!cJSON_IsNumber(v))
        return req_fail(q, "'%s' must be a number", key);
    return put(out, key, cJSON_CreateNumber(v->valuedouble));
}

static int
add_params(req_t *q, const cJSON *chat, long default_max_tokens, cJSON *out) {
    const char *key = "max_completion_tokens";
    const cJSON *v = GET(chat, key);
    int rc;
    if (is_null(v))
        v = GET(chat, key = "max_tokens");
    double max = (double)default_max_tokens;
    if (!is_null(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 1e9 ||
            v->valuedouble != (double)(long)v->valuedouble)
            return req_fail(q, "'%s' must be a positive integer", key);
        max = v->valuedouble;
    }
    if ((rc = put(out, "max_tokens", cJSON_CreateNumber(max))) != 0)
        return rc;

    v = GET(chat, "stop");
    if (cJSON_IsString(v) || (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0)) {
        cJSON *seqs = cJSON_Duplicate(v, 1);
        if (seqs != NULL && cJSON_IsString(v)) {
            cJSON *one = cJSON_CreateArray();
            if (put(one, NULL, seqs) != 0) { /* put freed seqs */
                cJSON_Delete(one);
                one = NULL;
            }
            seqs = one;
        }
        const cJSON *s;
        cJSON_ArrayForEach(s, seqs) {
            if (!cJSON_IsString(s)) {
                cJSON_Delete(seqs);
                return req_fail(q, "'stop' must be a string or an array of "
                                   "strings");
            }
        }
        if ((rc = put(out, "stop_sequences", seqs)) != 0)
            return rc;
    } else if (!is_null(v) && !cJSON_IsArray(v)) {
        return req_fail(q, "'stop' must be a string or an array of strings");
    }

    if ((rc = add_number(q, chat, "temperature", out)) != 0 ||
        (rc = add_number(q, chat, "top_p", out)) != 0 ||
        (rc = add_number(q, chat, "top_k", out)) != 0)
        return rc;
    if (cJSON_IsTrue(GET(chat, "stream")) &&
        (rc = put(out, "stream", cJSON_CreateTrue())) != 0)
        return rc;

    v = GET(chat, "user");
    if (cJSON_IsString(v)) {
        cJSON *meta = cJSON_CreateObject();
        if ((rc = put(out, "metadata", meta)) != 0 ||
            (rc = put_str(meta, "user_id", v->valuestring)) != 0)
            return rc;
    } else if (!is_null(v)) {
        return req_fail(q, "'user' must be a string");
    }

    v = GET(chat, "tools");
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0)
        return 0; /* no tools: a tool_choice would only be refused */
    if (!is_null(v)) {
        if ((rc = add_tools(q, v, out)) != 0)
            return rc;
        return add_tool_choice(q, chat, out);
    }
    if (!is_null(GET(chat, "tool_choice")))
        return add_tool_choice(q, chat, out);
    return 0;
}

int
sl_anthropic_request(const cJSON *chat, const char *model,
                     long default_max_tokens, cJSON **out, char *err,
                     size_t errcap) {
    req_t q = {.err = err, .errcap = errcap};
    const cJSON *msgs = GET(chat, "messages");
    int rc, i = 0;
    const cJSON *m;
    *out = NULL;
    if (errcap > 0)
        err[0] = '\0';
    if (!cJSON_IsObject(chat))
        return req_fail(&q, "the request must be a JSON object");
    if (!cJSON_IsArray(msgs))
        return req_fail(&q, "'messages' must be an array");
    if ((rc = check_unsupported(&q, chat)) != 0)
        return rc;
    cJSON *o = cJSON_CreateObject();
    q.msgs = cJSON_CreateArray();
    if (o == NULL || q.msgs == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(q.msgs);
        return SL_ENOMEM;
    }
    cJSON_ArrayForEach(m, msgs) {
        if ((rc = add_message(&q, i++, m)) != 0)
            goto fail;
    }
    if (cJSON_GetArraySize(q.msgs) == 0) {
        rc = req_fail(&q, "'messages' must hold a user or assistant message "
                          "with content, not only system messages");
        goto fail;
    }
    collapse_turns(q.msgs);
    if ((rc = put_str(o, "model", model)) != 0 ||
        (rc = add_params(&q, chat, default_max_tokens, o)) != 0)
        goto fail;
    if (q.system.len > 0 && (rc = put_str(o, "system", q.system.p)) != 0)
        goto fail;
    rc = put(o, "messages", q.msgs);
    q.msgs = NULL;
    if (rc != 0)
        goto fail;
    free(q.system.p);
    *out = o;
    return 0;
fail:
    cJSON_Delete(q.msgs);
    cJSON_Delete(o);
    free(q.system.p);
    return rc;
}

/* ---- responses ---- */

/* A tool_use block as an OpenAI tool call (the arguments a JSON string). */
static cJSON *
tool_call_json(const cJSON *block) {
    const cJSON *id = GET(block, "id");
    const cJSON *name = GET(block, "name");
    const cJSON *input = GET(block, "input");
    char *args = cJSON_IsObject(input) ? cJSON_PrintUnformatted(input) : NULL;
    cJSON *c = cJSON_CreateObject(), *fn = NULL;
    int rc =
        c == NULL || (cJSON_IsObject(input) && args == NULL) ? SL_ENOMEM : 0;
    rc = rc ? rc : put_str(c, "id", cJSON_IsString(id) ? id->valuestring : "");
    rc = rc ? rc : put_str(c, "type", "function");
    rc = rc ? rc : put(c, "function", fn = cJSON_CreateObject());
    rc =
        rc ? rc
           : put_str(fn, "name", cJSON_IsString(name) ? name->valuestring : "");
    rc = rc ? rc : put_str(fn, "arguments", args ? args : "{}");
    free(args);
    if (rc != 0) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

int
sl_anthropic_response(const cJSON *msg, long created, cJSON **out) {
    const cJSON *content = GET(msg, "content");
    const cJSON *id = GET(msg, "id");
    const cJSON *model = GET(msg, "model");
    const cJSON *usage = GET(msg, "usage");
    const cJSON *b;
    buf_t text = {0};
    int ntext = 0;
    *out = NULL;
    if (!cJSON_IsObject(msg) || !cJSON_IsArray(content))
        return SL_EINVAL;
    cJSON *calls = cJSON_CreateArray();
    int rc = calls == NULL ? SL_ENOMEM : 0;
    cJSON_ArrayForEach(b, content) {
        const cJSON *type = GET(b, "type");
        const cJSON *t = GET(b, "text");
        if (str_is(type, "text") && cJSON_IsString(t)) {
            buf_add(&text, t->valuestring, strlen(t->valuestring));
            ntext++;
        } else if (str_is(type, "tool_use") && rc == 0) {
            rc = put(calls, NULL, tool_call_json(b));
        }
        /* thinking and server tool blocks have no OpenAI place */
    }
    if (text.oom)
        rc = SL_ENOMEM;
    int ncalls = cJSON_GetArraySize(calls);
    cJSON *o = cJSON_CreateObject(), *choices = NULL, *choice = NULL, *m = NULL;
    rc = rc ? rc : o == NULL ? SL_ENOMEM : 0;
    rc = rc ? rc : put_str(o, "id", cJSON_IsString(id) ? id->valuestring : "");
    rc = rc ? rc : put_str(o, "object", "chat.completion");
    rc = rc ? rc : put(o, "created", cJSON_CreateNumber((double)created));
    rc = rc ? rc
            : put_str(o, "model",
                      cJSON_IsString(model) ? model->valuestring : "");
    rc = rc ? rc : put(o, "choices", choices = cJSON_CreateArray());
    rc = rc ? rc : put(choices, NULL, choice = cJSON_CreateObject());
    rc = rc ? rc : put(choice, "index", cJSON_CreateNumber(0));
    rc = rc ? rc : put(choice, "message", m = cJSON_CreateObject());
    rc = rc ? rc : put_str(m, "role", "assistant");
    /* null when the answer is only tool calls, as OpenAI does. */
    rc = rc ? rc
            : put(m, "content",
                  ntext > 0    ? cJSON_CreateString(text.p)
                  : ncalls > 0 ? cJSON_CreateNull()
                               : cJSON_CreateString(""));
    if (rc == 0 && ncalls > 0) {
        rc = put(m, "tool_calls", calls);
        calls = NULL;
    }
    rc = rc ? rc : put(choice, "logprobs", cJSON_CreateNull());
    rc = rc ? rc
            : put_str(choice, "finish_reason",
                      finish_reason_for(GET(msg, "stop_reason")));
    rc = rc ? rc
            : put(o, "usage",
                  usage_json(num(usage, "input_tokens"),
                             num(usage, "cache_read_input_tokens"),
                             num(usage, "cache_creation_input_tokens"),
                             num(usage, "output_tokens")));
    free(text.p);
    cJSON_Delete(calls);
    if (rc != 0) {
        cJSON_Delete(o);
        return rc;
    }
    *out = o;
    return 0;
}

/* ---- errors ---- */

/* Anthropic's errors and what the client sees. A provider's refusal of the
 * gateway's own key, or its own failure, is never passed off as the
 * client's fault: 502. Overload is the gateway's 503 with its own code. */
static const struct {
    const char *type;
    int upstream_status;
    sl_anthropic_error_map_t map;
} error_table[] = {
    {"invalid_request_error", 400, {400, "upstream_error", 1}},
    {"authentication_error", 401, {502, "upstream_error", 0}},
    {"billing_error", 402, {502, "upstream_error", 0}},
    {"permission_error", 403, {502, "upstream_error", 0}},
    {"not_found_error", 404, {404, "upstream_error", 1}},
    {"request_too_large", 413, {413, "upstream_error", 1}},
    {"rate_limit_error", 429, {429, "upstream_rate_limited", 1}},
    {"api_error", 500, {502, "upstream_error", 0}},
    {"timeout_error", 504, {504, "upstream_timeout", 0}},
    {"overloaded_error", 529, {503, "overloaded", 0}},
};

sl_anthropic_error_map_t
sl_anthropic_error_map(const char *type, int upstream_status) {
    size_t n = sizeof(error_table) / sizeof(error_table[0]);
    for (size_t i = 0; type != NULL && i < n; i++)
        if (strcmp(error_table[i].type, type) == 0)
            return error_table[i].map;
    for (size_t i = 0; i < n; i++)
        if (error_table[i].upstream_status == upstream_status)
            return error_table[i].map;
    if (upstream_status >= 400 && upstream_status < 500)
        return (sl_anthropic_error_map_t){upstream_status, "upstream_error", 1};
    return (sl_anthropic_error_map_t){502, "upstream_error", 0};
}

cJSON *
sl_anthropic_error_json(const char *type, const char *message,
                        int upstream_status, const char *provider, int *status,
                        const char **code) {
    sl_anthropic_error_map_t m = sl_anthropic_error_map(type, upstream_status);
    char text[700];
    *status = m.status;
    *code = m.code;
    if (m.client_fault && message != NULL)
        snprintf(text, sizeof(text), "%.600s", message);
    else if (upstream_status > 0)
        snprintf(text, sizeof(text),
                 "provider '%.60s' answered with status %d%s%.40s%s%.500s",
                 provider, upstream_status, type ? " " : "", type ? type : "",
                 message ? ": " : "", message ? message : "");
    else
        snprintf(text, sizeof(text),
                 "provider '%.60s' sent an error event in its stream: "
                 "%.40s: %.500s",
                 provider, type ? type : "error",
                 message ? message : "no message");
    cJSON *o = cJSON_CreateObject(), *e = cJSON_CreateObject();
    if (o == NULL || e == NULL || put_str(e, "message", text) != 0 ||
        put_str(e, "type", sl_error_type_for_status(m.status)) != 0 ||
        put_str(e, "code", m.code) != 0) {
        cJSON_Delete(o);
        cJSON_Delete(e);
        return NULL;
    }
    if (put(o, "error", e) != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

cJSON *
sl_anthropic_error_body(int upstream_status, const char *body, size_t len,
                        const char *provider, int *status, const char **code) {
    cJSON *j = len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = GET(j, "error");
    const cJSON *type = GET(e, "type");
    const cJSON *msg = GET(e, "message");
    cJSON *out =
        sl_anthropic_error_json(cJSON_IsString(type) ? type->valuestring : NULL,
                                cJSON_IsString(msg) ? msg->valuestring : NULL,
                                upstream_status, provider, status, code);
    cJSON_Delete(j);
    return out;
}

/* ---- streams ---- */

struct sl_anthropic_stream {
    sl_anthropic_chunk_fn cb;
    void *ud;
    long created;
    char *id, *model;
    long input, cache_read, cache_write, output;
    int *tool_of; /* content block index -> tool call index, or -1 */
    size_t nblocks;
    int ntools;
    int state; /* 0 running, 1 complete, or the SL_E* it failed with */
    char *error, *error_type;
};

sl_anthropic_stream_t *
sl_anthropic_stream_new(const char *model, long created,
                        sl_anthropic_chunk_fn cb, void *ud) {
    sl_anthropic_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cb = cb;
    s->ud = ud;
    s->created = created;
    s->id = strdup("");
    s->model = strdup(model ? model : "");
    if (s->id == NULL || s->model == NULL) {
        sl_anthropic_stream_free(s);
        return NULL;
    }
    return s;
}

void
sl_anthropic_stream_free(sl_anthropic_stream_t *s) {
    if (s == NULL)
        return;
    free(s->id);
    free(s->model);
    free(s->tool_of);
    free(s->error);
    free(s->error_type);
    free(s);
}

int
sl_anthropic_stream_done(const sl_anthropic_stream_t *s) {
    return s->state == 1;
}

const char *
sl_anthropic_stream_error(const sl_anthropic_stream_t *s, const char **type) {
    if (type != NULL)
        *type = s->error_type;
    return s->state < 0 ? s->error : NULL;
}

static int
stream_fail(sl_anthropic_stream_t *s, int code, const char *type,
            const char *msg) {
    free(s->error);
    free(s->error_type);
    s->error = strdup(msg);
    s->error_type = type ? strdup(type) : NULL;
    s->state = code;
    return code;
}

static int
bad_event(sl_anthropic_stream_t *s, const char *name, size_t name_len) {
    char msg[160];
    snprintf(msg, sizeof(msg), "the provider sent a malformed '%.*s' event",
             (int)(name_len > 40 ? 40 : name_len), name);
    return stream_fail(s, SL_EINVAL, NULL, msg);
}

static int
replace_str(char **dst, const cJSON *v) {
    if (!cJSON_IsString(v))
        return 0;
    char *s = strdup(v->valuestring);
    if (s == NULL)
        return SL_ENOMEM;
    free(*dst);
    *dst = s;
    return 0;
}

/* A chunk with one choice whose delta the caller fills (or, when usage is
 * not NULL, the usage chunk with no choice). */
static cJSON *
chunk_new(sl_anthropic_stream_t *s, cJSON **delta, const char *finish,
          cJSON *usage) {
    cJSON *c = cJSON_CreateObject(), *choices = cJSON_CreateArray();
    int rc = c == NULL || choices == NULL;
    rc = rc ? rc : put_str(c, "id", s->id);
    rc = rc ? rc : put_str(c, "object", "chat.completion.chunk");
    rc = rc ? rc : put(c, "created", cJSON_CreateNumber((double)s->created));
    rc = rc ? rc : put_str(c, "model", s->model);
    if (rc == 0) {
        rc = put(c, "choices", choices);
        choices = NULL;
    }
    if (rc == 0 && usage != NULL) {
        rc = put(c, "usage", usage);
        usage = NULL;
    } else if (rc == 0) {
        cJSON *ch = cJSON_CreateObject();
        rc = put(GET(c, "choices"), NULL, ch);
        rc = rc ? rc : put(ch, "index", cJSON_CreateNumber(0));
        rc = rc ? rc : put(ch, "delta", *delta = cJSON_CreateObject());
        rc = rc ? rc : put(ch, "logprobs", cJSON_CreateNull());
        rc = rc ? rc
                : put(ch, "finish_reason",
                      finish ? cJSON_CreateString(finish) : cJSON_CreateNull());
    }
    cJSON_Delete(choices);
    cJSON_Delete(usage);
    if (rc != 0) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

/* Hands a chunk to the callback and deletes it. */
static int
emit(sl_anthropic_stream_t *s, cJSON *chunk) {
    if (chunk == NULL)
        return stream_fail(s, SL_ENOMEM, NULL, "out of memory");
    char *json = cJSON_PrintUnformatted(chunk);
    int rc = json ? s->cb(s->ud, chunk, json, strlen(json)) : SL_ENOMEM;
    free(json);
    cJSON_Delete(chunk);
    if (rc != 0)
        return stream_fail(s, rc, NULL,
                           rc == SL_ENOMEM ? "out of memory"
                                           : "the stream was stopped");
    return 0;
}

static int
emit_text(sl_anthropic_stream_t *s, const char *text) {
    cJSON *delta = NULL, *c = chunk_new(s, &delta, NULL, NULL);
    if (c != NULL && put_str(delta, "content", text) != 0) {
        cJSON_Delete(c);
        c = NULL;
    }
    return emit(s, c);
}

/* A tool_calls delta for tool call `index`: its start (id and name from
 * the tool_use block) or a fragment of its arguments. */
static int
emit_tool(sl_anthropic_stream_t *s, int index, const cJSON *start,
          const char *args) {
    cJSON *delta = NULL, *c = chunk_new(s, &delta, NULL, NULL);
    cJSON *calls = NULL, *call = NULL, *fn = NULL;
    const cJSON *id = GET(start, "id");
    const cJSON *name = GET(start, "name");
    int rc = c == NULL ? SL_ENOMEM : 0;
    rc = rc ? rc : put(delta, "tool_calls", calls = cJSON_CreateArray());
    rc = rc ? rc : put(calls, NULL, call = cJSON_CreateObject());
    rc = rc ? rc : put(call, "index", cJSON_CreateNumber(index));
    if (start != NULL) {
        rc =
            rc ? rc
               : put_str(call, "id", cJSON_IsString(id) ? id->valuestring : "");
        rc = rc ? rc : put_str(call, "type", "function");
    }
    rc = rc ? rc : put(call, "function", fn = cJSON_CreateObject());
    if (start != NULL)
        rc = rc ? rc
                : put_str(fn, "name",
                          cJSON_IsString(name) ? name->valuestring : "");
    /* A call's input arrives in input_json_delta events after its start. */
    rc = rc ? rc : put_str(fn, "arguments", start != NULL ? "" : args);
    if (rc != 0) {
        cJSON_Delete(c);
        c = NULL;
    }
    return emit(s, c);
}

static int
on_message_start(sl_anthropic_stream_t *s, const cJSON *j) {
    const cJSON *msg = GET(j, "message");
    const cJSON *usage = GET(msg, "usage");
    if (!cJSON_IsObject(msg))
        return SL_EINVAL;
    if (replace_str(&s->id, GET(msg, "id")) != 0 ||
        replace_str(&s->model, GET(msg, "model")) != 0)
        return stream_fail(s, SL_ENOMEM, NULL, "out of memory");
    s->input = num(usage, "input_tokens");
    s->cache_read = num(usage, "cache_read_input_tokens");
    s->cache_write = num(usage, "cache_creation_input_tokens");
    s->output = num(usage, "output_tokens");
    cJSON *delta = NULL, *c = chunk_new(s, &delta, NULL, NULL);
    if (c != NULL && (put_str(delta, "role", "assistant") != 0 ||
                      put_str(delta, "content", "") != 0)) {
        cJSON_Delete(c);
        c = NULL;
    }
    return emit(s, c);
}

static int
on_block_start(sl_anthropic_stream_t *s, const cJSON *j) {
    const cJSON *index = GET(j, "index");
    const cJSON *block = GET(j, "content_block");
    if (!cJSON_IsNumber(index) || index->valuedouble < 0 ||
        index->valuedouble >= MAX_BLOCKS || !cJSON_IsObject(block))
        return SL_EINVAL;
    size_t i = (size_t)index->valuedouble;
    if (i >= s->nblocks) {
        int *t = realloc(s->tool_of, (i + 1) * sizeof(*t));
        if (t == NULL)
            return stream_fail(s, SL_ENOMEM, NULL, "out of memory");
        for (size_t n = s->nblocks; n <= i; n++)
            t[n] = -1;
        s->tool_of = t;
        s->nblocks = i + 1;
    }
    const cJSON *type = GET(block, "type");
    if (str_is(type, "tool_use")) {
        s->tool_of[i] = s->ntools++;
        return emit_tool(s, s->tool_of[i], block, NULL);
    }
    const cJSON *text = GET(block, "text");
    if (str_is(type, "text") && cJSON_IsString(text) && text->valuestring[0])
        return emit_text(s, text->valuestring);
    return 0;
}

static int
on_block_delta(sl_anthropic_stream_t *s, const cJSON *j) {
    const cJSON *index = GET(j, "index");
    const cJSON *delta = GET(j, "delta");
    const cJSON *type = GET(delta, "type");
    if (!cJSON_IsNumber(index) || !cJSON_IsObject(delta))
        return SL_EINVAL;
    if (str_is(type, "text_delta")) {
        const cJSON *text = GET(delta, "text");
        if (!cJSON_IsString(text))
            return SL_EINVAL;
        return text->valuestring[0] ? emit_text(s, text->valuestring) : 0;
    }
    if (str_is(type, "input_json_delta")) {
        const cJSON *part = GET(delta, "partial_json");
        double i = index->valuedouble;
        if (!cJSON_IsString(part) || i < 0 || i >= (double)s->nblocks ||
            s->tool_of[(size_t)i] < 0)
            return SL_EINVAL;
        return part->valuestring[0] ? emit_tool(s, s->tool_of[(size_t)i], NULL,
                                                part->valuestring)
                                    : 0;
    }
    return 0; /* thinking, signatures, citations: nothing to say in OpenAI */
}

static int
on_message_delta(sl_anthropic_stream_t *s, const cJSON *j) {
    const cJSON *delta = GET(j, "delta");
    const cJSON *usage = GET(j, "usage");
    const cJSON *reason = GET(delta, "stop_reason");
    /* Usage here is cumulative: what it names replaces what we had. */
    if (cJSON_IsNumber(GET(usage, "output_tokens")))
        s->output = num(usage, "output_tokens");
    if (cJSON_IsNumber(GET(usage, "input_tokens")))
        s->input = num(usage, "input_tokens");
    if (cJSON_IsNumber(GET(usage, "cache_read_input_tokens")))
        s->cache_read = num(usage, "cache_read_input_tokens");
    if (cJSON_IsNumber(GET(usage, "cache_creation_input_tokens")))
        s->cache_write = num(usage, "cache_creation_input_tokens");
    if (!cJSON_IsString(reason))
        return 0;
    cJSON *d = NULL;
    return emit(s, chunk_new(s, &d, finish_reason_for(reason), NULL));
}

static int
on_message_stop(sl_anthropic_stream_t *s) {
    cJSON *u = usage_json(s->input, s->cache_read, s->cache_write, s->output);
    if (u == NULL)
        return stream_fail(s, SL_ENOMEM, NULL, "out of memory");
    int rc = emit(s, chunk_new(s, NULL, NULL, u));
    if (rc != 0)
        return rc;
    s->state = 1;
    return 1;
}

static int
on_error(sl_anthropic_stream_t *s, const cJSON *j) {
    const cJSON *e = GET(j, "error");
    const cJSON *type = GET(e, "type");
    const cJSON *msg = GET(e, "message");
    return stream_fail(
        s, SL_EUPSTREAM, cJSON_IsString(type) ? type->valuestring : "error",
        cJSON_IsString(msg) ? msg->valuestring : "the provider sent an error");
}

static int
name_is(const char *name, size_t len, const char *s) {
    return strlen(s) == len && memcmp(name, s, len) == 0;
}

int
sl_anthropic_stream_event(sl_anthropic_stream_t *s, const char *event,
                          size_t event_len, const char *data, size_t len) {
    if (s->state == 1)
        return 0; /* nothing follows message_stop */
    if (s->state < 0)
        return s->state;
    cJSON *j = cJSON_ParseWithLength(data, len);
    const cJSON *type = GET(j, "type");
    const char *name = event;
    if (name == NULL && cJSON_IsString(type)) {
        name = type->valuestring;
        event_len = strlen(name);
    }
    if (!cJSON_IsObject(j) || name == NULL) {
        int rc = bad_event(s, name ? name : "unnamed", name ? event_len : 7);
        cJSON_Delete(j);
        return rc;
    }
    int rc = 0;
    if (name_is(name, event_len, "message_start"))
        rc = on_message_start(s, j);
    else if (name_is(name, event_len, "content_block_start"))
        rc = on_block_start(s, j);
    else if (name_is(name, event_len, "content_block_delta"))
        rc = on_block_delta(s, j);
    else if (name_is(name, event_len, "message_delta"))
        rc = on_message_delta(s, j);
    else if (name_is(name, event_len, "message_stop"))
        rc = on_message_stop(s);
    else if (name_is(name, event_len, "error"))
        rc = on_error(s, j);
    /* content_block_stop, ping and event types yet to come: nothing. */
    if (rc == SL_EINVAL && s->state == 0)
        rc = bad_event(s, name, event_len);
    cJSON_Delete(j);
    return rc;
}

/* ---- the adapter ---- */

/* One attempt's state; arena memory. */
typedef struct {
    sl_call_t *k;
    sl_anthropic_stream_t *tr; /* stream attempts only */
    int failed; /* the stream said error or was malformed: an SL_E* */
} anth_call_t;

static void
free_str(void *p) {
    free(p);
}

static void
free_evbuffer(void *p) {
    evbuffer_free(p);
}

static void
free_sse(void *p) {
    sl_sse_free(p);
}

static void
free_stream(void *p) {
    sl_anthropic_stream_free(p);
}

static int
on_chunk(void *ud, const cJSON *chunk, const char *json, size_t len) {
    anth_call_t *a = ud;
    sl_call_t *k = a->k;
    const cJSON *usage = GET(chunk, "usage");
    if (cJSON_IsObject(usage)) {
        sl_call_take_usage(k, usage);
        if (!k->client_usage)
            return 0; /* counted, not asked for */
    }
    k->want_pause |= sl_call_forward(k, json, len);
    return 0;
}

static int
on_event(void *ud, const char *event, size_t event_len, const char *data,
         size_t len) {
    anth_call_t *a = ud;
    sl_call_t *k = a->k;
    int rc = sl_anthropic_stream_event(a->tr, event, event_len, data, len);
    if (rc == 1) {
        k->done_seen = 1;
        k->want_pause |= sl_call_forward(k, "[DONE]", 6);
        return 0;
    }
    if (rc < 0) {
        a->failed = rc;
        return 1; /* stop: on_done says why */
    }
    return 0;
}

static int
on_data(void *ud, int status, const char *data, size_t len) {
    anth_call_t *a = ud;
    sl_call_t *k = a->k;
    sl_request_t *r = k->r;
    if (a->failed)
        return 1;
    if (k->stream && status == 200 && !k->sse_on) {
        const char *ct = sl_upcall_content_type(k->up);
        k->sse_on = ct != NULL && strncmp(ct, "text/event-stream", 17) == 0;
    }
    if (k->sse_on) {
        /* The same cap as for whole answers bounds a stream's size. */
        k->stream_bytes += len;
        if (k->stream_bytes > r->cfg->limits.max_response_bytes)
            return 1;
        int rc = sl_sse_feed(&k->sse, data, len, on_event, a);
        if (r->responded)
            k->want_pause |= sl_response_flush(r);
        if (rc == 0 && k->want_pause) {
            /* The client reads slower than the upstream writes: hold the
             * upstream instead of buffering without bound. */
            k->want_pause = 0;
            r->paused = 1;
            sl_upcall_pause(k->up, 1);
        }
        return rc;
    }
    if (evbuffer_get_length(k->body) + len > r->cfg->limits.max_response_bytes)
        return 1;
    return evbuffer_add(k->body, data, len) == 0 ? 0 : 1;
}

/* Sends an OpenAI error object; ends the request. */
static void
send_error_json(sl_request_t *r, int status, const char *code, cJSON *e,
                const char *extra) {
    char *s = e != NULL ? cJSON_PrintUnformatted(e) : NULL;
    cJSON_Delete(e);
    if (s == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    if (r->error_code == NULL)
        r->error_code = code;
    sl_response_send(r, status, "application/json", extra, s, strlen(s));
    free(s);
}

static void
answer_upstream_error(sl_call_t *k, int status, const char *retry) {
    sl_request_t *r = k->r;
    size_t n = evbuffer_get_length(k->body);
    const char *body = n ? (const char *)evbuffer_pullup(k->body, -1) : "";
    int out;
    const char *code;
    cJSON *e = sl_anthropic_error_body(status, body, n,
                                       k->target->provider->name, &out, &code);
    char *extra = retry != NULL
                      ? sl_arena_printf(r->arena, "Retry-After: %s\r\n", retry)
                      : NULL;
    send_error_json(r, out, code, e, extra);
}

/* The stream carried an error event or could not be read. */
static void
answer_stream_failure(anth_call_t *a) {
    sl_call_t *k = a->k;
    sl_request_t *r = k->r;
    const char *type;
    const char *what = sl_anthropic_stream_error(a->tr, &type);
    if (what == NULL)
        what = "the upstream stream could not be read";
    if (a->failed != SL_EUPSTREAM) {
        if (r->streaming) {
            sl_call_release(k, 0);
            sl_call_stream_fail(k, what, "upstream_bad_response");
            return;
        }
        sl_response_error(r, 502, what, "upstream_bad_response");
        return;
    }
    int status;
    const char *code;
    cJSON *e = sl_anthropic_error_json(type, what, 0, k->target->provider->name,
                                       &status, &code);
    if (r->streaming) {
        const cJSON *m = GET(GET(e, "error"), "message");
        sl_call_release(k, 0);
        sl_call_stream_fail(k, cJSON_IsString(m) ? m->valuestring : what, code);
        cJSON_Delete(e);
        return;
    }
    /* Nothing reached the client yet: another target may still answer. */
    if (sl_call_retry(k, 0, status, NULL)) {
        cJSON_Delete(e);
        return;
    }
    send_error_json(r, status, code, e, NULL);
}

static void
answer_message(sl_call_t *k) {
    sl_request_t *r = k->r;
    size_t n = evbuffer_get_length(k->body);
    cJSON *j =
        n ? cJSON_ParseWithLength((const char *)evbuffer_pullup(k->body, -1), n)
          : NULL;
    cJSON *o = NULL;
    int rc = cJSON_IsObject(j) ? sl_anthropic_response(j, (long)time(NULL), &o)
                               : SL_EINVAL;
    cJSON_Delete(j);
    char *s = rc == 0 ? cJSON_PrintUnformatted(o) : NULL;
    if (rc == 0)
        sl_call_take_usage(k, GET(o, "usage"));
    cJSON_Delete(o);
    if (rc == SL_EINVAL) {
        sl_response_error(r, 502,
                          "the upstream sent a body that is not an Anthropic "
                          "message",
                          "upstream_bad_response");
        return;
    }
    if (s == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_response_send(r, 200, "application/json", sl_call_success_headers(k), s,
                     strlen(s));
    free(s);
}

static void
on_done(void *ud, int result, int status, const char *why) {
    anth_call_t *a = ud;
    sl_call_t *k = a->k;
    sl_request_t *r = k->r;
    /* The upcall goes back to its pool now and may serve a retry: take
     * what we need from it first. */
    const char *ra = sl_upcall_retry_after(k->up);
    const char *retry = ra ? sl_arena_strndup(r->arena, ra, strlen(ra)) : NULL;
    if (why != NULL)
        why = sl_arena_strndup(r->arena, why, strlen(why));
    k->up = NULL;
    r->upstream_us += sl_now_us() - r->t_upstream;
    r->cancel = NULL;
    r->resume = NULL;
    if (a->failed != 0) {
        answer_stream_failure(a);
        return;
    }
    if (r->streaming) {
        if (k->done_seen) { /* what follows message_stop cannot matter */
            sl_response_stream_end(r, 1);
            return;
        }
        sl_call_stream_cut(k, result, why,
                           "upstream stream ended before message_stop");
        return;
    }
    if (result == 0 && status >= 200 && status <= 299 && k->sse_on) {
        /* A stream that ended before its first token: as good as failed. */
        result = SL_EUPSTREAM;
        why = "the upstream stream ended before any content";
    }
    if (sl_call_transport_failed(k, result, why))
        return;
    if (status < 200 || status > 299) {
        if (sl_call_retry(k, 0, status, retry))
            return;
        answer_upstream_error(k, status, retry);
        return;
    }
    if (k->stream) {
        sl_call_release(k, 0);
        sl_response_error(r, 502,
                          "the upstream answered a stream request without "
                          "an event stream",
                          "upstream_bad_response");
        return;
    }
    answer_message(k);
}

static const sl_upcall_ops_t anthropic_ops = {on_data, on_done};

static void
cancel(sl_request_t *r) {
    anth_call_t *a = r->op;
    sl_call_t *k = a->k;
    if (k->up != NULL) {
        r->upstream_us += sl_now_us() - r->t_upstream;
        sl_upcall_cancel(k->up);
        k->up = NULL;
    }
}

static void
resume(sl_request_t *r) {
    anth_call_t *a = r->op;
    if (a->k->up != NULL)
        sl_upcall_pause(a->k->up, 0);
}

/* The translated body, printed into memory the arena frees; NULL when the
 * request has been answered. */
static char *
encode(sl_call_t *k) {
    sl_request_t *r = k->r;
    const sl_provider_t *p = k->target->provider;
    char err[300];
    cJSON *o = NULL;
    if (k->kind != SL_CALL_CHAT) {
        char *msg = sl_arena_printf(r->arena,
                                    "provider '%s' is of type anthropic, "
                                    "which serves chat completions only",
                                    p->name);
        sl_response_error(r, 400, msg ? msg : "not served by this provider",
                          "invalid_request");
        return NULL;
    }
    int rc = sl_anthropic_request(k->json, k->target->model,
                                  p->default_max_tokens, &o, err, sizeof(err));
    if (rc == SL_EINVAL) {
        sl_response_error(r, 400, err, "invalid_request");
        return NULL;
    }
    char *body = rc == 0 ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (body == NULL || sl_arena_cleanup_add(r->arena, free_str, body) != 0) {
        free(body);
        sl_response_error(r, 503, "out of memory", "server_busy");
        return NULL;
    }
    return body;
}

/* Per-attempt buffers and parsers: a retry starts clean. Returns 0, or -1
 * when the request has been answered. */
static int
prepare(sl_call_t *k, anth_call_t *a) {
    sl_request_t *r = k->r;
    k->sse_on = k->done_seen = k->want_pause = 0;
    k->stream_bytes = 0;
    if (k->body != NULL) {
        evbuffer_drain(k->body, evbuffer_get_length(k->body));
    } else {
        k->body = evbuffer_new();
        if (k->body == NULL ||
            sl_arena_cleanup_add(r->arena, free_evbuffer, k->body) != 0) {
            if (k->body)
                evbuffer_free(k->body);
            k->body = NULL;
            goto oom;
        }
    }
    if (!k->stream)
        return 0;
    if (k->sse_ready)
        sl_sse_free(&k->sse);
    sl_sse_init(&k->sse, SL_SSE_MAX_EVENT);
    if (!k->sse_ready &&
        sl_arena_cleanup_add(r->arena, free_sse, &k->sse) != 0) {
        sl_sse_free(&k->sse);
        goto oom;
    }
    k->sse_ready = 1;
    a->tr = sl_anthropic_stream_new(k->target->model, (long)time(NULL),
                                    on_chunk, a);
    if (a->tr == NULL ||
        sl_arena_cleanup_add(r->arena, free_stream, a->tr) != 0) {
        sl_anthropic_stream_free(a->tr);
        goto oom;
    }
    return 0;
oom:
    sl_response_error(r, 503, "out of memory", "server_busy");
    return -1;
}

void
sl_anthropic_start(sl_call_t *k) {
    sl_request_t *r = k->r;
    const sl_provider_t *p = k->target->provider;
    const sl_snapshot_t *snap = r->snap;
    size_t idx = (size_t)(p - r->cfg->providers);
    const char *url = sl_call_url(k);
    char *body = encode(k);
    if (body == NULL)
        return;
    anth_call_t *a = sl_arena_calloc(r->arena, sizeof(*a));
    if (url == NULL)
        url = p->messages_url;
    if (a == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    a->k = k;
    if (prepare(k, a) != 0)
        return;
    sl_upcall_params_t params = {
        .url = url,
        .headers = sl_reqlog_upstream(
            r,
            k->stream ? snap->provider_stream_headers[idx]
                      : snap->provider_headers[idx],
            body, strlen(body)),
        .body = body,
        .body_len = strlen(body),
        .connect_timeout_ms = p->connect_timeout_ms,
        .first_byte_timeout_ms = p->first_byte_timeout_ms,
        .timeout_ms = p->timeout_ms,
    };
    r->t_upstream = sl_now_us();
    k->up = sl_upcall_start(r->w->upstream, &params, &anthropic_ops, a);
    if (k->up == NULL) {
        sl_response_error(r, 503, "cannot start the upstream request",
                          "server_busy");
        return;
    }
    r->op = a;
    r->cancel = cancel;
    r->resume = resume;
}
