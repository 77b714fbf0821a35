/* Google's Gemini generateContent API for OpenAI chat clients: the request
 * and answer translations (pure, tested on their own), the stream
 * translator, and the adapter that carries a call over the network. */
#include "gemini.h"
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

#define GET cJSON_GetObjectItemCaseSensitive
#define SL_SSE_MAX_EVENT (4u << 20)

/* ---- small cJSON helpers: each takes ownership of `item` ---- */

static int
put(cJSON *to, const char *key, cJSON *item) {
    if (item == NULL)
        return SL_ENOMEM;
    if (!cJSON_AddItemToObject(to, key, item)) {
        cJSON_Delete(item);
        return SL_ENOMEM;
    }
    return 0;
}

static int
push(cJSON *arr, cJSON *item) {
    if (item == NULL)
        return SL_ENOMEM;
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return SL_ENOMEM;
    }
    return 0;
}

static int
put_str(cJSON *to, const char *key, const char *s) {
    return put(to, key, cJSON_CreateString(s));
}

/* {key: item}, or NULL (item deleted) on out of memory. */
static cJSON *
wrap(const char *key, cJSON *item) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) {
        cJSON_Delete(item);
        return NULL;
    }
    if (put(o, key, item) != 0) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static int
str_is(const cJSON *v, const char *s) {
    return cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

static int
absent(const cJSON *v) {
    return v == NULL || cJSON_IsNull(v);
}

static long
num(const cJSON *o, const char *key) {
    const cJSON *v = GET(o, key);
    return cJSON_IsNumber(v) && v->valuedouble > 0 ? (long)v->valuedouble : 0;
}

/* ---- request: OpenAI chat -> generateContent ---- */

typedef struct {
    const cJSON *msgs;
    cJSON *contents;
    cJSON *system; /* systemInstruction parts */
    char *err;
    size_t errcap;
} req_t;

static int req_fail(req_t *q, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
req_fail(req_t *q, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q->err, q->errcap, fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

static cJSON *
text_part(const char *text) {
    return wrap("text", cJSON_CreateString(text));
}

/* {"inlineData":{"mimeType","data"}} from a base64 data: URL. */
static int
inline_part(req_t *q, int i, int j, const char *url, cJSON *parts) {
    if (strncmp(url, "data:", 5) != 0)
        return req_fail(q,
                        "messages[%d].content[%d]: gemini takes images and "
                        "files only as data: URLs (data:TYPE;base64,...)",
                        i, j);
    const char *mime = url + 5, *comma = strchr(mime, ',');
    if (comma == NULL || comma - mime < 7 ||
        memcmp(comma - 7, ";base64", 7) != 0)
        return req_fail(q, "messages[%d].content[%d]: not a base64 data: URL",
                        i, j);
    size_t n = strcspn(mime, ";,");
    if (n == 0)
        return req_fail(q,
                        "messages[%d].content[%d]: the data: URL names no "
                        "media type",
                        i, j);
    char type[128];
    if (n >= sizeof(type))
        return req_fail(q, "messages[%d].content[%d]: media type too long", i,
                        j);
    memcpy(type, mime, n);
    type[n] = '\0';
    cJSON *d = cJSON_CreateObject();
    if (d == NULL || put_str(d, "mimeType", type) != 0 ||
        put_str(d, "data", comma + 1) != 0) {
        cJSON_Delete(d);
        return SL_ENOMEM;
    }
    return push(parts, wrap("inlineData", d));
}

static int
audio_part(req_t *q, int i, int j, const cJSON *audio, cJSON *parts) {
    const cJSON *data = GET(audio, "data"), *fmt = GET(audio, "format");
    if (!cJSON_IsString(data) || !cJSON_IsString(fmt) ||
        strlen(fmt->valuestring) > 32)
        return req_fail(q,
                        "messages[%d].content[%d].input_audio needs "
                        "'data' and 'format' strings",
                        i, j);
    char type[48];
    snprintf(type, sizeof(type), "audio/%s", fmt->valuestring);
    cJSON *d = cJSON_CreateObject();
    if (d == NULL || put_str(d, "mimeType", type) != 0 ||
        put_str(d, "data", data->valuestring) != 0) {
        cJSON_Delete(d);
        return SL_ENOMEM;
    }
    return push(parts, wrap("inlineData", d));
}

/* A user message's content: text, images, audio and files. */
static int
user_parts(req_t *q, int i, const cJSON *content, cJSON *parts) {
    if (cJSON_IsString(content))
        return push(parts, text_part(content->valuestring));
    if (!cJSON_IsArray(content))
        return req_fail(q,
                        "messages[%d].content must be a string or an "
                        "array of parts",
                        i);
    int j = 0, rc = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = GET(part, "type");
        if (str_is(type, "text") && cJSON_IsString(GET(part, "text"))) {
            rc = push(parts, text_part(GET(part, "text")->valuestring));
        } else if (str_is(type, "image_url")) {
            const cJSON *u = GET(part, "image_url");
            if (cJSON_IsObject(u))
                u = GET(u, "url");
            rc = cJSON_IsString(u)
                     ? inline_part(q, i, j, u->valuestring, parts)
                     : req_fail(q,
                                "messages[%d].content[%d].image_url "
                                "needs a 'url'",
                                i, j);
        } else if (str_is(type, "input_audio")) {
            rc = audio_part(q, i, j, GET(part, "input_audio"), parts);
        } else if (str_is(type, "file") &&
                   cJSON_IsString(GET(GET(part, "file"), "file_data"))) {
            rc = inline_part(q, i, j,
                             GET(GET(part, "file"), "file_data")->valuestring,
                             parts);
        } else {
            rc = req_fail(q,
                          "messages[%d].content[%d]: a part gemini cannot "
                          "take (use text, image_url, input_audio or file "
                          "with file_data)",
                          i, j);
        }
        if (rc != 0)
            return rc;
        j++;
    }
    return 0;
}

/* Only the text of a system, assistant or tool message; each text part
 * becomes a part unless `joined` is given, which receives them joined
 * (malloc'd, the caller frees). */
static int
text_parts(req_t *q, int i, const cJSON *content, cJSON *parts, char **joined) {
    size_t total = 0;
    const cJSON *part;
    if (joined != NULL)
        *joined = NULL;
    if (absent(content))
        return 0;
    if (cJSON_IsString(content)) {
        if (joined != NULL)
            return (*joined = strdup(content->valuestring)) ? 0 : SL_ENOMEM;
        return content->valuestring[0]
                   ? push(parts, text_part(content->valuestring))
                   : 0;
    }
    if (!cJSON_IsArray(content))
        return req_fail(q,
                        "messages[%d].content must be a string or an "
                        "array of parts",
                        i);
    cJSON_ArrayForEach(part, content) {
        const cJSON *type = GET(part, "type"), *t = GET(part, "text");
        if (str_is(type, "refusal"))
            continue;
        if (!str_is(type, "text") || !cJSON_IsString(t))
            return req_fail(q,
                            "messages[%d].content: only text parts are "
                            "allowed in this role",
                            i);
        total += strlen(t->valuestring);
        if (joined == NULL && t->valuestring[0] != '\0' &&
            push(parts, text_part(t->valuestring)) != 0)
            return SL_ENOMEM;
    }
    if (joined == NULL)
        return 0;
    char *out = malloc(total + 1), *p = out;
    if (out == NULL)
        return SL_ENOMEM;
    cJSON_ArrayForEach(part, content) {
        const cJSON *t = GET(part, "text");
        if (str_is(GET(part, "type"), "text")) {
            size_t n = strlen(t->valuestring);
            memcpy(p, t->valuestring, n);
            p += n;
        }
    }
    *p = '\0';
    *joined = out;
    return 0;
}

/* An assistant's tool calls -> functionCall parts. */
static int
call_parts(req_t *q, int i, const cJSON *calls, cJSON *parts) {
    if (absent(calls))
        return 0;
    if (!cJSON_IsArray(calls))
        return req_fail(q, "messages[%d].tool_calls must be an array", i);
    int j = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, calls) {
        const cJSON *f = GET(c, "function");
        const cJSON *name = GET(f, "name"), *args = GET(f, "arguments");
        if (!cJSON_IsString(name) || name->valuestring[0] == '\0')
            return req_fail(q,
                            "messages[%d].tool_calls[%d].function.name "
                            "must be a non-empty string",
                            i, j);
        cJSON *a = NULL;
        if (absent(args) ||
            (cJSON_IsString(args) &&
             args->valuestring[strspn(args->valuestring, " \t\r\n")] == 0))
            a = cJSON_CreateObject();
        else if (cJSON_IsObject(args))
            a = cJSON_Duplicate(args, 1);
        else if (cJSON_IsString(args))
            a = cJSON_Parse(args->valuestring);
        if (a != NULL && !cJSON_IsObject(a)) {
            cJSON_Delete(a);
            a = NULL;
        }
        if (a == NULL)
            return req_fail(q,
                            "messages[%d].tool_calls[%d].function."
                            "arguments must be a JSON object",
                            i, j);
        cJSON *fc = cJSON_CreateObject();
        if (fc == NULL || put_str(fc, "name", name->valuestring) != 0) {
            cJSON_Delete(fc);
            cJSON_Delete(a);
            return SL_ENOMEM;
        }
        if (put(fc, "args", a) != 0) {
            cJSON_Delete(fc);
            return SL_ENOMEM;
        }
        if (push(parts, wrap("functionCall", fc)) != 0)
            return SL_ENOMEM;
        j++;
    }
    return 0;
}

/* The function a tool result answers: its name is what Gemini pairs on,
 * and OpenAI only gives the call's id. The latest earlier call wins, since
 * ids like call_0 come back in every turn. */
static const char *
tool_name_for(const cJSON *msgs, int upto, const char *id) {
    const char *found = NULL;
    const cJSON *m, *c;
    int i = 0;
    cJSON_ArrayForEach(m, msgs) {
        if (i++ >= upto)
            break;
        if (!str_is(GET(m, "role"), "assistant"))
            continue;
        cJSON_ArrayForEach(c, GET(m, "tool_calls")) {
            const cJSON *name = GET(GET(c, "function"), "name");
            if (str_is(GET(c, "id"), id) && cJSON_IsString(name))
                found = name->valuestring;
        }
    }
    return found;
}

/* A tool (or legacy function) message -> a functionResponse part. */
static int
response_part(req_t *q, int i, const cJSON *m, cJSON *parts) {
    const cJSON *id = GET(m, "tool_call_id"), *nm = GET(m, "name");
    const char *name = NULL;
    if (cJSON_IsString(id))
        name = tool_name_for(q->msgs, i, id->valuestring);
    if (name == NULL && cJSON_IsString(nm) && nm->valuestring[0])
        name = nm->valuestring;
    if (name == NULL)
        return req_fail(q,
                        "messages[%d]: no earlier assistant tool call has "
                        "this tool_call_id, so gemini cannot be told which "
                        "function answered",
                        i);
    char *text;
    int rc = text_parts(q, i, GET(m, "content"), NULL, &text);
    if (rc != 0)
        return rc;
    cJSON *fr = cJSON_CreateObject();
    if (fr == NULL || put_str(fr, "name", name) != 0 ||
        put(fr, "response",
            wrap("content", cJSON_CreateString(text ? text : ""))) != 0) {
        cJSON_Delete(fr);
        free(text);
        return SL_ENOMEM;
    }
    free(text);
    return push(parts, wrap("functionResponse", fr));
}

/* Appends a turn; consecutive turns of one role become one (Gemini pairs
 * all of a turn's function calls with the next turn's responses). */
static int
add_turn(req_t *q, const char *role, cJSON *parts) {
    if (cJSON_GetArraySize(parts) == 0) {
        cJSON_Delete(parts);
        return 0;
    }
    cJSON *last =
        cJSON_GetArrayItem(q->contents, cJSON_GetArraySize(q->contents) - 1);
    if (last != NULL && str_is(GET(last, "role"), role)) {
        cJSON *to = GET(last, "parts");
        while (parts->child != NULL)
            cJSON_AddItemToArray(
                to, cJSON_DetachItemViaPointer(parts, parts->child));
        cJSON_Delete(parts);
        return 0;
    }
    cJSON *turn = cJSON_CreateObject();
    if (turn == NULL || put_str(turn, "role", role) != 0) {
        cJSON_Delete(turn);
        cJSON_Delete(parts);
        return SL_ENOMEM;
    }
    if (put(turn, "parts", parts) != 0) {
        cJSON_Delete(turn);
        return SL_ENOMEM;
    }
    return push(q->contents, turn);
}

static int
add_message(req_t *q, int i, const cJSON *m) {
    const char *role = GET(m, "role")->valuestring;
    const cJSON *content = GET(m, "content");
    if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
        return text_parts(q, i, content, q->system, NULL);
    cJSON *parts = cJSON_CreateArray();
    if (parts == NULL)
        return SL_ENOMEM;
    int rc;
    const char *as = "user";
    if (strcmp(role, "user") == 0) {
        rc = user_parts(q, i, content, parts);
    } else if (strcmp(role, "assistant") == 0) {
        as = "model";
        rc = text_parts(q, i, content, parts, NULL);
        if (rc == 0)
            rc = call_parts(q, i, GET(m, "tool_calls"), parts);
    } else if (strcmp(role, "tool") == 0 || strcmp(role, "function") == 0) {
        rc = response_part(q, i, m, parts);
    } else {
        rc = req_fail(q,
                      "messages[%d].role '%.40s' is not one gemini can "
                      "take",
                      i, role);
    }
    if (rc != 0) {
        cJSON_Delete(parts);
        return rc;
    }
    return add_turn(q, as, parts);
}

/* Keywords of Gemini's Schema (an OpenAPI 3.0 subset): it refuses a
 * parameters object with any other, and JSON Schema from tools like
 * pydantic carries many (additionalProperties, $schema, title...). */
static const char *const schema_keys[] = {"type",
                                          "format",
                                          "description",
                                          "nullable",
                                          "enum",
                                          "maxItems",
                                          "minItems",
                                          "required",
                                          "minLength",
                                          "maxLength",
                                          "pattern",
                                          "minimum",
                                          "maximum",
                                          "default",
                                          "minProperties",
                                          "maxProperties",
                                          "propertyOrdering",
                                          "example",
                                          "title",
                                          NULL};

static cJSON *schema_clean(const cJSON *s);

static cJSON *
schema_list(const cJSON *arr) {
    cJSON *out = cJSON_CreateArray();
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        if (out != NULL && push(out, schema_clean(x)) != 0) {
            cJSON_Delete(out);
            return NULL;
        }
    }
    return out;
}

static cJSON *
schema_clean(const cJSON *s) {
    cJSON *out = cJSON_CreateObject();
    const cJSON *v;
    if (out == NULL || !cJSON_IsObject(s))
        return out;
    for (size_t i = 0; schema_keys[i] != NULL; i++) {
        v = GET(s, schema_keys[i]);
        if (v == NULL)
            continue;
        if (cJSON_IsArray(v) && strcmp(schema_keys[i], "type") == 0) {
            /* ["string","null"] -> type string, nullable */
            const cJSON *t, *one = NULL;
            int nullable = 0;
            cJSON_ArrayForEach(t, v) {
                if (str_is(t, "null"))
                    nullable = 1;
                else if (one == NULL)
                    one = t;
            }
            if ((one != NULL &&
                 put(out, "type", cJSON_Duplicate(one, 1)) != 0) ||
                (nullable && put(out, "nullable", cJSON_CreateTrue()) != 0))
                goto fail;
            continue;
        }
        if (put(out, schema_keys[i], cJSON_Duplicate(v, 1)) != 0)
            goto fail;
    }
    if ((v = GET(s, "const")) != NULL && GET(s, "enum") == NULL) {
        cJSON *e = cJSON_CreateArray();
        if (e == NULL || put(out, "enum", e) != 0 ||
            push(e, cJSON_Duplicate(v, 1)) != 0)
            goto fail;
    }
    if (cJSON_IsObject(v = GET(s, "properties"))) {
        cJSON *props = cJSON_CreateObject();
        const cJSON *p;
        if (put(out, "properties", props) != 0)
            goto fail;
        cJSON_ArrayForEach(p, v) {
            if (put(props, p->string, schema_clean(p)) != 0)
                goto fail;
        }
    }
    if (cJSON_IsObject(v = GET(s, "items")) &&
        put(out, "items", schema_clean(v)) != 0)
        goto fail;
    if (!cJSON_IsArray(v = GET(s, "anyOf")))
        v = GET(s, "oneOf");
    if (cJSON_IsArray(v) && put(out, "anyOf", schema_list(v)) != 0)
        goto fail;
    return out;
fail:
    cJSON_Delete(out);
    return NULL;
}

static int
add_tools(req_t *q, const cJSON *tools, cJSON *out) {
    if (absent(tools))
        return 0;
    if (!cJSON_IsArray(tools))
        return req_fail(q, "'tools' must be an array");
    if (cJSON_GetArraySize(tools) == 0)
        return 0;
    cJSON *list = cJSON_CreateArray(), *decls, *t;
    if (put(out, "tools", list) != 0 ||
        push(list, wrap("functionDeclarations", decls = cJSON_CreateArray())) !=
            0)
        return SL_ENOMEM;
    int j = 0;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *f = GET(t, "function");
        const cJSON *name = GET(f, "name"), *desc = GET(f, "description");
        const cJSON *params = GET(f, "parameters");
        if (!str_is(GET(t, "type"), "function") || !cJSON_IsString(name) ||
            name->valuestring[0] == '\0')
            return req_fail(q,
                            "tools[%d] must be {\"type\":\"function\","
                            "\"function\":{\"name\":...}}",
                            j);
        cJSON *d = cJSON_CreateObject();
        if (push(decls, d) != 0 || put_str(d, "name", name->valuestring) != 0)
            return SL_ENOMEM;
        if (cJSON_IsString(desc) &&
            put_str(d, "description", desc->valuestring) != 0)
            return SL_ENOMEM;
        /* A function without parameters has none, not an empty object. */
        if (cJSON_IsObject(params) && cJSON_GetArraySize(params) > 0 &&
            put(d, "parameters", schema_clean(params)) != 0)
            return SL_ENOMEM;
        j++;
    }
    return 0;
}

static int
add_tool_choice(req_t *q, const cJSON *choice, cJSON *out) {
    const char *mode = NULL;
    const cJSON *name = NULL;
    if (absent(choice))
        return 0;
    if (str_is(choice, "auto"))
        mode = "AUTO";
    else if (str_is(choice, "none"))
        mode = "NONE";
    else if (str_is(choice, "required"))
        mode = "ANY";
    else if (cJSON_IsObject(choice) &&
             cJSON_IsString(name = GET(GET(choice, "function"), "name"))) {
        mode = "ANY";
    } else {
        return req_fail(q, "'tool_choice' must be \"auto\", \"none\", "
                           "\"required\" or {\"type\":\"function\","
                           "\"function\":{\"name\":...}}");
    }
    cJSON *fcc = cJSON_CreateObject();
    if (put(out, "toolConfig", wrap("functionCallingConfig", fcc)) != 0 ||
        put_str(fcc, "mode", mode) != 0)
        return SL_ENOMEM;
    if (name != NULL) {
        cJSON *names = cJSON_CreateArray();
        if (put(fcc, "allowedFunctionNames", names) != 0 ||
            push(names, cJSON_CreateString(name->valuestring)) != 0)
            return SL_ENOMEM;
    }
    return 0;
}

/* A number parameter, copied under Gemini's name. */
static int
add_number(req_t *q, const cJSON *chat, const char *key, const char *gkey,
           cJSON *gc) {
    const cJSON *v = GET(chat, key);
    if (absent(v))
        return 0;
    if (!cJSON_IsNumber(v))
        return req_fail(q, "'%s' must be a number", key);
    cJSON_DeleteItemFromObjectCaseSensitive(gc, gkey);
    return put(gc, gkey, cJSON_CreateNumber(v->valuedouble));
}

static int
add_stop(req_t *q, const cJSON *stop, cJSON *gc) {
    const cJSON *s;
    if (absent(stop))
        return 0;
    cJSON *list = cJSON_CreateArray();
    if (put(gc, "stopSequences", list) != 0)
        return SL_ENOMEM;
    if (cJSON_IsString(stop))
        return push(list, cJSON_CreateString(stop->valuestring));
    if (!cJSON_IsArray(stop))
        return req_fail(q, "'stop' must be a string or an array of strings");
    cJSON_ArrayForEach(s, stop) {
        if (!cJSON_IsString(s))
            return req_fail(q, "'stop' must be a string or an array of "
                               "strings");
        if (push(list, cJSON_CreateString(s->valuestring)) != 0)
            return SL_ENOMEM;
    }
    return 0;
}

static int
add_format(req_t *q, const cJSON *fmt, cJSON *gc) {
    const cJSON *type = GET(fmt, "type");
    if (absent(fmt) || str_is(type, "text"))
        return 0;
    if (str_is(type, "json_object"))
        return put_str(gc, "responseMimeType", "application/json");
    if (str_is(type, "json_schema") &&
        cJSON_IsObject(GET(GET(fmt, "json_schema"), "schema")))
        return put_str(gc, "responseMimeType", "application/json") != 0 ||
                       put(gc, "responseSchema",
                           schema_clean(
                               GET(GET(fmt, "json_schema"), "schema"))) != 0
                   ? SL_ENOMEM
                   : 0;
    return req_fail(q, "'response_format' must be text, json_object or "
                       "json_schema with a 'schema'");
}

static int
add_config(req_t *q, const cJSON *chat, cJSON *out) {
    static const char *const numbers[][2] = {
        {"temperature", "temperature"},
        {"top_p", "topP"},
        {"presence_penalty", "presencePenalty"},
        {"frequency_penalty", "frequencyPenalty"},
        {"seed", "seed"},
        {"max_tokens", "maxOutputTokens"},
        /* the newer name wins: it comes last and replaces */
        {"max_completion_tokens", "maxOutputTokens"},
    };
    cJSON *gc = cJSON_CreateObject();
    if (gc == NULL)
        return SL_ENOMEM;
    const cJSON *n = GET(chat, "n");
    int rc = 0;
    if (!absent(n) && (!cJSON_IsNumber(n) || n->valuedouble != 1))
        rc = req_fail(q, "gemini answers with one choice: 'n' must be 1");
    else if (!absent(n))
        rc = put(gc, "candidateCount", cJSON_CreateNumber(1));
    for (size_t i = 0; rc == 0 && i < sizeof(numbers) / sizeof(numbers[0]); i++)
        rc = add_number(q, chat, numbers[i][0], numbers[i][1], gc);
    if (rc == 0)
        rc = add_stop(q, GET(chat, "stop"), gc);
    if (rc == 0)
        rc = add_format(q, GET(chat, "response_format"), gc);
    if (rc != 0 || cJSON_GetArraySize(gc) == 0) {
        cJSON_Delete(gc);
        return rc;
    }
    return put(out, "generationConfig", gc);
}

int
sl_gemini_request(const cJSON *chat, cJSON **out, char *err, size_t errcap) {
    req_t q = {.msgs = GET(chat, "messages"), .err = err, .errcap = errcap};
    cJSON *o = cJSON_CreateObject();
    int rc = SL_ENOMEM, i = 0;
    const cJSON *m;
    *out = NULL;
    if (errcap > 0)
        err[0] = '\0';
    q.contents = cJSON_CreateArray();
    q.system = cJSON_CreateArray();
    if (o == NULL || q.contents == NULL || q.system == NULL)
        goto fail;
    if (!cJSON_IsArray(q.msgs)) {
        rc = req_fail(&q, "'messages' must be an array");
        goto fail;
    }
    cJSON_ArrayForEach(m, q.msgs) {
        if (!cJSON_IsString(GET(m, "role"))) {
            rc = req_fail(&q, "messages[%d] must have a string 'role'", i);
            goto fail;
        }
        if ((rc = add_message(&q, i, m)) != 0)
            goto fail;
        i++;
    }
    if (cJSON_GetArraySize(q.contents) == 0) {
        rc = req_fail(&q, "gemini needs at least one user or assistant "
                          "message with content");
        goto fail;
    }
    cJSON *contents = q.contents;
    q.contents = NULL;
    if ((rc = put(o, "contents", contents)) != 0)
        goto fail;
    if (cJSON_GetArraySize(q.system) > 0) {
        cJSON *system = q.system;
        q.system = NULL;
        if ((rc = put(o, "systemInstruction", wrap("parts", system))) != 0)
            goto fail;
    }
    if ((rc = add_config(&q, chat, o)) != 0 ||
        (rc = add_tools(&q, GET(chat, "tools"), o)) != 0 ||
        (rc = add_tool_choice(&q, GET(chat, "tool_choice"), o)) != 0)
        goto fail;
    cJSON_Delete(q.system);
    *out = o;
    return 0;
fail:
    if (rc == SL_ENOMEM && errcap > 0)
        snprintf(err, errcap, "out of memory");
    cJSON_Delete(q.contents);
    cJSON_Delete(q.system);
    cJSON_Delete(o);
    return rc;
}

/* ---- responses ---- */

const char *
sl_gemini_finish_reason(const char *reason, int tool_calls) {
    static const char *const filtered[] = {
        "SAFETY", "RECITATION",   "BLOCKLIST", "PROHIBITED_CONTENT",
        "SPII",   "IMAGE_SAFETY", NULL};
    if (reason != NULL) {
        if (strcmp(reason, "MAX_TOKENS") == 0)
            return "length";
        for (size_t i = 0; filtered[i] != NULL; i++)
            if (strcmp(reason, filtered[i]) == 0)
                return "content_filter";
    }
    return tool_calls ? "tool_calls" : "stop";
}

cJSON *
sl_gemini_usage(const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return NULL;
    /* Tool-use prompt tokens are input too: prompt + completion = total. */
    long prompt =
        num(meta, "promptTokenCount") + num(meta, "toolUsePromptTokenCount");
    long thoughts = num(meta, "thoughtsTokenCount");
    long completion = num(meta, "candidatesTokenCount") + thoughts;
    const cJSON *t = GET(meta, "totalTokenCount");
    long total = cJSON_IsNumber(t) ? (long)t->valuedouble : prompt + completion;
    cJSON *u = cJSON_CreateObject();
    if (u == NULL ||
        put(u, "prompt_tokens", cJSON_CreateNumber((double)prompt)) != 0 ||
        put(u, "completion_tokens", cJSON_CreateNumber((double)completion)) ||
        put(u, "total_tokens", cJSON_CreateNumber((double)total)) != 0 ||
        put(u, "prompt_tokens_details",
            wrap("cached_tokens", cJSON_CreateNumber((double)num(
                                      meta, "cachedContentTokenCount")))) !=
            0 ||
        put(u, "completion_tokens_details",
            wrap("reasoning_tokens", cJSON_CreateNumber((double)thoughts))) !=
            0) {
        cJSON_Delete(u);
        return NULL;
    }
    return u;
}

/* {"index","id","type":"function","function":{"name","arguments"}}, the
 * arguments printed as a JSON string as OpenAI sends them. */
static cJSON *
tool_call_json(const cJSON *fc, int index, int with_index) {
    const cJSON *name = GET(fc, "name"), *args = GET(fc, "args");
    char id[32];
    snprintf(id, sizeof(id), "call_%d", index);
    char *a = cJSON_IsObject(args) ? cJSON_PrintUnformatted(args) : NULL;
    cJSON *c = cJSON_CreateObject(), *f = cJSON_CreateObject();
    int rc = c == NULL || f == NULL ||
             (with_index && put(c, "index", cJSON_CreateNumber(index)) != 0) ||
             put_str(c, "id", id) != 0 || put_str(c, "type", "function") ||
             put_str(f, "name",
                     cJSON_IsString(name) ? name->valuestring : "") != 0 ||
             put_str(f, "arguments", a != NULL ? a : "{}") != 0;
    free(a);
    if (rc != 0 || (cJSON_IsObject(args) && a == NULL)) {
        cJSON_Delete(c);
        cJSON_Delete(f);
        return NULL;
    }
    if (put(c, "function", f) != 0) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

static const cJSON *
first_candidate(const cJSON *resp) {
    const cJSON *c = cJSON_GetArrayItem(GET(resp, "candidates"), 0);
    return cJSON_IsObject(c) ? c : NULL;
}

/* Thought summaries are the model's scratchpad, not its answer. */
static int
is_thought(const cJSON *part) {
    return cJSON_IsTrue(GET(part, "thought"));
}

int
sl_gemini_response(const cJSON *resp, const char *model, const char *id,
                   long created, cJSON **out) {
    *out = NULL;
    if (!cJSON_IsObject(resp))
        return SL_EINVAL;
    const cJSON *cand = first_candidate(resp);
    const cJSON *blocked = GET(GET(resp, "promptFeedback"), "blockReason");
    if (cand == NULL && !cJSON_IsString(blocked))
        return SL_EINVAL;
    const cJSON *parts = GET(GET(cand, "content"), "parts"), *p;
    size_t len = 0;
    int ncalls = 0, ntext = 0;
    cJSON_ArrayForEach(p, parts) {
        if (is_thought(p))
            continue;
        if (cJSON_IsString(GET(p, "text"))) {
            len += strlen(GET(p, "text")->valuestring);
            ntext++;
        } else if (cJSON_IsObject(GET(p, "functionCall"))) {
            ncalls++;
        }
    }
    char *text = malloc(len + 1), *t = text;
    cJSON *o = cJSON_CreateObject(), *msg = cJSON_CreateObject();
    cJSON *choice = cJSON_CreateObject(), *choices = cJSON_CreateArray();
    cJSON *calls = ncalls ? cJSON_CreateArray() : NULL;
    int rc = SL_ENOMEM;
    if (text == NULL || o == NULL || msg == NULL || choice == NULL ||
        choices == NULL || (ncalls && calls == NULL))
        goto fail;
    int index = 0;
    cJSON_ArrayForEach(p, parts) {
        if (is_thought(p))
            continue;
        const cJSON *s = GET(p, "text");
        if (cJSON_IsString(s)) {
            size_t n = strlen(s->valuestring);
            memcpy(t, s->valuestring, n);
            t += n;
        } else if (cJSON_IsObject(GET(p, "functionCall")) &&
                   push(calls, tool_call_json(GET(p, "functionCall"), index++,
                                              0)) != 0) {
            goto fail;
        }
    }
    *t = '\0';
    const cJSON *reason = GET(cand, "finishReason");
    const char *finish =
        cand == NULL ? "content_filter"
                     : sl_gemini_finish_reason(
                           cJSON_IsString(reason) ? reason->valuestring : NULL,
                           ncalls > 0);
    const cJSON *rid = GET(resp, "responseId"), *mv = GET(resp, "modelVersion");
    char *full_id = NULL;
    if (cJSON_IsString(rid)) {
        size_t n = strlen(rid->valuestring) + 10;
        if ((full_id = malloc(n)) == NULL)
            goto fail;
        snprintf(full_id, n, "chatcmpl-%s", rid->valuestring);
    }
    rc = put_str(o, "id", full_id ? full_id : id);
    free(full_id);
    if (rc != 0 || put_str(o, "object", "chat.completion") != 0 ||
        put(o, "created", cJSON_CreateNumber((double)created)) != 0 ||
        put_str(o, "model", cJSON_IsString(mv) ? mv->valuestring : model))
        goto fail;
    /* Content is null only beside tool calls, as OpenAI sends it. */
    if (put_str(msg, "role", "assistant") != 0 ||
        put(msg, "content",
            ncalls && ntext == 0 ? cJSON_CreateNull()
                                 : cJSON_CreateString(text)) != 0)
        goto fail;
    if (calls != NULL) {
        cJSON *c = calls;
        calls = NULL;
        if (put(msg, "tool_calls", c) != 0)
            goto fail;
    }
    if (put(choice, "index", cJSON_CreateNumber(0)) != 0)
        goto fail;
    cJSON *m2 = msg;
    msg = NULL;
    if (put(choice, "message", m2) != 0 ||
        put(choice, "logprobs", cJSON_CreateNull()) != 0 ||
        put_str(choice, "finish_reason", finish) != 0)
        goto fail;
    cJSON *c2 = choice;
    choice = NULL;
    if (push(choices, c2) != 0)
        goto fail;
    cJSON *cs = choices;
    choices = NULL;
    if (put(o, "choices", cs) != 0)
        goto fail;
    const cJSON *meta = GET(resp, "usageMetadata");
    if (cJSON_IsObject(meta) && put(o, "usage", sl_gemini_usage(meta)) != 0)
        goto fail;
    free(text);
    *out = o;
    return 0;
fail:
    free(text);
    cJSON_Delete(o);
    cJSON_Delete(msg);
    cJSON_Delete(choice);
    cJSON_Delete(choices);
    cJSON_Delete(calls);
    return SL_ENOMEM;
}

/* ---- errors ---- */

cJSON *
sl_gemini_error_json(int upstream_status, const char *gstatus,
                     const char *message, const char *provider, int *status,
                     const char **code) {
    char text[700];
    int s = upstream_status;
    /* The gateway's own key was refused, or the provider failed: neither
     * is the client's doing. */
    int client_fault = s >= 400 && s < 500 && s != 401 && s != 403;
    *status = client_fault ? s : 502;
    *code = s == 429 ? "upstream_rate_limited" : "upstream_error";
    if (client_fault && message != NULL)
        snprintf(text, sizeof(text), "%.600s", message);
    else
        snprintf(text, sizeof(text),
                 "provider '%.60s' answered with status %d%s%.40s%s%.500s",
                 provider, s, gstatus ? " " : "", gstatus ? gstatus : "",
                 message ? ": " : "", message ? message : "");
    cJSON *e = cJSON_CreateObject();
    if (e == NULL || put_str(e, "message", text) != 0 ||
        put_str(e, "type", sl_error_type_for_status(*status)) != 0 ||
        put_str(e, "code", *code) != 0) {
        cJSON_Delete(e);
        return NULL;
    }
    return wrap("error", e);
}

cJSON *
sl_gemini_error_body(int upstream_status, const char *body, size_t len,
                     const char *provider, int *status, const char **code) {
    cJSON *j = len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
    /* streamGenerateContent without alt=sse wraps it in an array. */
    const cJSON *e =
        GET(cJSON_IsArray(j) ? cJSON_GetArrayItem(j, 0) : j, "error");
    const cJSON *msg = GET(e, "message"), *gs = GET(e, "status");
    cJSON *out = sl_gemini_error_json(
        upstream_status, cJSON_IsString(gs) ? gs->valuestring : NULL,
        cJSON_IsString(msg) ? msg->valuestring : NULL, provider, status, code);
    cJSON_Delete(j);
    return out;
}

/* ---- streams ---- */

struct sl_gemini_stream {
    sl_gemini_chunk_fn cb;
    void *ud;
    long created;
    char *id, *model;
    cJSON *usage; /* translated from the last usageMetadata */
    int started;  /* the role chunk went out */
    int ntools;
    int finished;
    int state; /* 0, or the SL_E* the stream failed with */
    char *error;
    int error_status;
    char *error_gstatus;
};

sl_gemini_stream_t *
sl_gemini_stream_new(const char *model, const char *id, long created,
                     sl_gemini_chunk_fn cb, void *ud) {
    sl_gemini_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cb = cb;
    s->ud = ud;
    s->created = created;
    s->id = strdup(id);
    s->model = strdup(model);
    if (s->id == NULL || s->model == NULL) {
        sl_gemini_stream_free(s);
        return NULL;
    }
    return s;
}

void
sl_gemini_stream_free(sl_gemini_stream_t *s) {
    if (s == NULL)
        return;
    free(s->id);
    free(s->model);
    free(s->error);
    free(s->error_gstatus);
    cJSON_Delete(s->usage);
    free(s);
}

int
sl_gemini_stream_finished(const sl_gemini_stream_t *s) {
    return s->finished;
}

const char *
sl_gemini_stream_error(const sl_gemini_stream_t *s, int *upstream_status,
                       const char **gstatus) {
    *upstream_status = s->error_status;
    *gstatus = s->error_gstatus;
    return s->state == SL_EUPSTREAM || s->state == SL_EINVAL ? s->error : NULL;
}

static int
stream_fail(sl_gemini_stream_t *s, int code, const char *message,
            int upstream_status, const char *gstatus) {
    s->state = code;
    free(s->error);
    s->error = strdup(message);
    s->error_status = upstream_status;
    s->error_gstatus = gstatus ? strdup(gstatus) : NULL;
    return code;
}

static int
replace_str(char **dst, const cJSON *v, const char *prefix) {
    if (!cJSON_IsString(v))
        return 0;
    size_t n = strlen(prefix) + strlen(v->valuestring) + 1;
    char *s = malloc(n);
    if (s == NULL)
        return SL_ENOMEM;
    snprintf(s, n, "%s%s", prefix, v->valuestring);
    free(*dst);
    *dst = s;
    return 0;
}

/* id, object, created, model: what every chunk starts with. */
static cJSON *
chunk_head(const sl_gemini_stream_t *s) {
    cJSON *c = cJSON_CreateObject();
    if (c == NULL || put_str(c, "id", s->id) != 0 ||
        put_str(c, "object", "chat.completion.chunk") != 0 ||
        put(c, "created", cJSON_CreateNumber((double)s->created)) != 0 ||
        put_str(c, "model", s->model) != 0) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

/* A chunk with one choice whose delta the caller fills; NULL on out of
 * memory. */
static cJSON *
chunk_new(const sl_gemini_stream_t *s, cJSON **delta, const char *finish) {
    cJSON *c = chunk_head(s), *choices, *ch;
    if (c == NULL)
        return NULL;
    if (put(c, "choices", choices = cJSON_CreateArray()) != 0 ||
        push(choices, ch = cJSON_CreateObject()) != 0 ||
        put(ch, "index", cJSON_CreateNumber(0)) != 0 ||
        put(ch, "delta", *delta = cJSON_CreateObject()) != 0 ||
        put(ch, "logprobs", cJSON_CreateNull()) != 0 ||
        put(ch, "finish_reason",
            finish ? cJSON_CreateString(finish) : cJSON_CreateNull()) != 0) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

/* Prints, hands over and deletes a chunk. */
static int
emit(sl_gemini_stream_t *s, cJSON *chunk) {
    char *json = chunk != NULL ? cJSON_PrintUnformatted(chunk) : NULL;
    if (json == NULL) {
        cJSON_Delete(chunk);
        return SL_ENOMEM;
    }
    int rc = s->cb(s->ud, chunk, json, strlen(json));
    free(json);
    cJSON_Delete(chunk);
    return rc;
}

static int
emit_delta(sl_gemini_stream_t *s, const char *key, cJSON *value,
           const char *finish) {
    cJSON *delta;
    cJSON *c = chunk_new(s, &delta, finish);
    if (c == NULL) {
        cJSON_Delete(value);
        return SL_ENOMEM;
    }
    if (key != NULL && put(delta, key, value) != 0) {
        cJSON_Delete(c);
        return SL_ENOMEM;
    }
    return emit(s, c);
}

static int
emit_role(sl_gemini_stream_t *s) {
    cJSON *delta;
    cJSON *c = chunk_new(s, &delta, NULL);
    if (c == NULL || put_str(delta, "role", "assistant") != 0 ||
        put_str(delta, "content", "") != 0) {
        cJSON_Delete(c);
        return SL_ENOMEM;
    }
    return emit(s, c);
}

static int
emit_tool(sl_gemini_stream_t *s, const cJSON *fc) {
    cJSON *list = cJSON_CreateArray();
    if (list == NULL || push(list, tool_call_json(fc, s->ntools, 1)) != 0) {
        cJSON_Delete(list);
        return SL_ENOMEM;
    }
    s->ntools++;
    return emit_delta(s, "tool_calls", list, NULL);
}

static int
on_parts(sl_gemini_stream_t *s, const cJSON *parts) {
    const cJSON *p;
    int rc = 0;
    cJSON_ArrayForEach(p, parts) {
        const cJSON *text = GET(p, "text"), *fc = GET(p, "functionCall");
        if (is_thought(p))
            continue;
        if (cJSON_IsString(text) && text->valuestring[0] != '\0')
            rc = emit_delta(s, "content", cJSON_CreateString(text->valuestring),
                            NULL);
        else if (cJSON_IsObject(fc))
            rc = emit_tool(s, fc);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int
sl_gemini_stream_event(sl_gemini_stream_t *s, const char *data, size_t len) {
    if (s->state != 0)
        return s->state;
    cJSON *j = cJSON_ParseWithLength(data, len);
    int rc = 0;
    const cJSON *e = GET(j, "error");
    if (!cJSON_IsObject(j)) {
        rc = stream_fail(s, SL_EINVAL,
                         "the upstream sent a stream event that is not a "
                         "JSON object",
                         0, NULL);
        goto out;
    }
    if (cJSON_IsObject(e)) {
        const cJSON *m = GET(e, "message"), *gs = GET(e, "status");
        rc = stream_fail(
            s, SL_EUPSTREAM, cJSON_IsString(m) ? m->valuestring : "error event",
            (int)num(e, "code"), cJSON_IsString(gs) ? gs->valuestring : NULL);
        goto out;
    }
    const cJSON *cand = first_candidate(j);
    const cJSON *blocked = GET(GET(j, "promptFeedback"), "blockReason");
    const cJSON *meta = GET(j, "usageMetadata");
    if (cand == NULL && !cJSON_IsString(blocked) && !cJSON_IsObject(meta)) {
        rc = stream_fail(s, SL_EINVAL,
                         "the upstream sent a stream event without "
                         "candidates",
                         0, NULL);
        goto out;
    }
    if (!s->started) {
        /* The first event names the answer for all chunks. */
        if ((rc = replace_str(&s->id, GET(j, "responseId"), "chatcmpl-")) ||
            (rc = replace_str(&s->model, GET(j, "modelVersion"), "")) ||
            (rc = emit_role(s)) != 0)
            goto out;
        s->started = 1;
    }
    if (cJSON_IsObject(meta)) {
        cJSON *u = sl_gemini_usage(meta);
        if (u == NULL) {
            rc = SL_ENOMEM;
            goto out;
        }
        cJSON_Delete(s->usage);
        s->usage = u;
    }
    if ((rc = on_parts(s, GET(GET(cand, "content"), "parts"))) != 0)
        goto out;
    const cJSON *reason = GET(cand, "finishReason");
    if (!s->finished && (cJSON_IsString(reason) || cJSON_IsString(blocked))) {
        s->finished = 1;
        rc = emit_delta(
            s, NULL, NULL,
            cJSON_IsString(reason)
                ? sl_gemini_finish_reason(reason->valuestring, s->ntools > 0)
                : "content_filter");
    }
out:
    cJSON_Delete(j);
    if (rc != 0 && s->state == 0)
        s->state = rc;
    return rc;
}

int
sl_gemini_stream_end(sl_gemini_stream_t *s) {
    if (s->state != 0)
        return s->state;
    if (!s->finished)
        return 0;
    if (s->usage != NULL) {
        cJSON *c = chunk_head(s), *u = s->usage;
        s->usage = NULL;
        if (c == NULL || put(c, "choices", cJSON_CreateArray()) != 0) {
            cJSON_Delete(c);
            cJSON_Delete(u);
            return s->state = SL_ENOMEM;
        }
        if (put(c, "usage", u) != 0) {
            cJSON_Delete(c);
            return s->state = SL_ENOMEM;
        }
        int rc = emit(s, c);
        if (rc != 0)
            return s->state = rc;
    }
    return 1;
}

/* ---- the adapter ---- */

/* One attempt's state; arena memory. */
typedef struct {
    sl_call_t *k;
    sl_gemini_stream_t *tr; /* stream attempts only */
    int failed; /* the stream said error or was malformed: an SL_E* */
} gem_call_t;

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
    sl_gemini_stream_free(p);
}

static int
on_chunk(void *ud, const cJSON *chunk, const char *json, size_t len) {
    gem_call_t *g = ud;
    sl_call_t *k = g->k;
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
    gem_call_t *g = ud;
    (void)event;
    (void)event_len;
    int rc = sl_gemini_stream_event(g->tr, data, len);
    if (rc < 0) {
        g->failed = rc;
        return 1; /* stop: on_done says why */
    }
    return 0;
}

static int
on_data(void *ud, int status, const char *data, size_t len) {
    gem_call_t *g = ud;
    sl_call_t *k = g->k;
    sl_request_t *r = k->r;
    if (g->failed)
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
        int rc = sl_sse_feed(&k->sse, data, len, on_event, g);
        if (r->responded)
            k->want_pause |= sl_response_flush(r);
        if (rc == 0 && k->want_pause) {
            /* The client reads slower than the upstream writes: hold the
             * upstream instead of buffering without bound. */
            k->want_pause = 0;
            r->paused = 1;
            sl_upcall_pause(k->up, 1);
        }
        return rc; /* SL_ETOOBIG aborts */
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
    cJSON *e = sl_gemini_error_body(status, body, n, k->target->provider->name,
                                    &out, &code);
    char *extra = retry != NULL
                      ? sl_arena_printf(r->arena, "Retry-After: %s\r\n", retry)
                      : NULL;
    send_error_json(r, out, code, e, extra);
}

/* The stream carried an error event or could not be read. */
static void
answer_stream_failure(gem_call_t *g) {
    sl_call_t *k = g->k;
    sl_request_t *r = k->r;
    int upstream;
    const char *gstatus;
    const char *what = sl_gemini_stream_error(g->tr, &upstream, &gstatus);
    if (g->failed != SL_EUPSTREAM) {
        if (what == NULL)
            what = g->failed == SL_ENOMEM ? "out of memory"
                                          : "the upstream stream could not "
                                            "be read";
        sl_call_release(k, 0);
        if (r->streaming)
            sl_call_stream_fail(k, what, "upstream_bad_response");
        else
            sl_response_error(r, 502, what, "upstream_bad_response");
        return;
    }
    int status;
    const char *code;
    /* An error event without a code is the provider's failure. */
    if (upstream <= 0)
        upstream = 500;
    cJSON *e = sl_gemini_error_json(upstream, gstatus, what,
                                    k->target->provider->name, &status, &code);
    if (r->streaming) {
        const cJSON *m = GET(GET(e, "error"), "message");
        sl_call_release(k, 0);
        sl_call_stream_fail(k, cJSON_IsString(m) ? m->valuestring : what, code);
        cJSON_Delete(e);
        return;
    }
    /* Nothing reached the client yet: another target may still answer. */
    if (sl_call_retry(k, 0, upstream, NULL)) {
        cJSON_Delete(e);
        return;
    }
    send_error_json(r, status, code, e, NULL);
}

/* The upstream closed a stream that finished: the usage chunk, [DONE]. */
static void
answer_stream_end(gem_call_t *g) {
    sl_call_t *k = g->k;
    sl_request_t *r = k->r;
    int rc = sl_gemini_stream_end(g->tr);
    if (rc < 0) {
        g->failed = rc;
        answer_stream_failure(g);
        return;
    }
    k->done_seen = 1;
    sl_call_forward(k, "[DONE]", 6);
    sl_response_stream_end(r, 1);
}

static void
answer_message(sl_call_t *k) {
    sl_request_t *r = k->r;
    size_t n = evbuffer_get_length(k->body);
    cJSON *j =
        n ? cJSON_ParseWithLength((const char *)evbuffer_pullup(k->body, -1), n)
          : NULL;
    cJSON *o = NULL;
    const char *id =
        sl_arena_printf(r->arena, "chatcmpl-%08x%08x", sl_worker_random(r->w),
                        sl_worker_random(r->w));
    int rc = id == NULL ? SL_ENOMEM
                        : sl_gemini_response(j, k->target->model, id,
                                             (long)time(NULL), &o);
    cJSON_Delete(j);
    char *s = rc == 0 ? cJSON_PrintUnformatted(o) : NULL;
    if (rc == 0)
        sl_call_take_usage(k, GET(o, "usage"));
    cJSON_Delete(o);
    if (rc == SL_EINVAL) {
        sl_response_error(r, 502,
                          "the upstream sent a body that is not a Gemini "
                          "response",
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
    gem_call_t *g = ud;
    sl_call_t *k = g->k;
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
    if (g->failed != 0) {
        answer_stream_failure(g);
        return;
    }
    /* Gemini ends a stream by closing it: once the finish came, what the
     * close looked like cannot matter. */
    if (k->sse_on && sl_gemini_stream_finished(g->tr)) {
        answer_stream_end(g);
        return;
    }
    if (r->streaming) {
        sl_call_stream_cut(k, result, why,
                           "upstream stream ended before its finishReason");
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

static const sl_upcall_ops_t gemini_ops = {on_data, on_done};

static void
cancel(sl_request_t *r) {
    gem_call_t *g = r->op;
    sl_call_t *k = g->k;
    if (k->up != NULL) {
        r->upstream_us += sl_now_us() - r->t_upstream;
        sl_upcall_cancel(k->up);
        k->up = NULL;
    }
}

static void
resume(sl_request_t *r) {
    gem_call_t *g = r->op;
    if (g->k->up != NULL)
        sl_upcall_pause(g->k->up, 0);
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
                                    "provider '%s' is of type gemini, which "
                                    "serves chat completions only here",
                                    p->name);
        sl_response_error(r, 400, msg ? msg : "not served by this provider",
                          "invalid_request");
        return NULL;
    }
    int rc = sl_gemini_request(k->json, &o, err, sizeof(err));
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
prepare(sl_call_t *k, gem_call_t *g) {
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
    const char *id =
        sl_arena_printf(r->arena, "chatcmpl-%08x%08x", sl_worker_random(r->w),
                        sl_worker_random(r->w));
    g->tr = id ? sl_gemini_stream_new(k->target->model, id, (long)time(NULL),
                                      on_chunk, g)
               : NULL;
    if (g->tr == NULL ||
        sl_arena_cleanup_add(r->arena, free_stream, g->tr) != 0) {
        sl_gemini_stream_free(g->tr);
        goto oom;
    }
    return 0;
oom:
    sl_response_error(r, 503, "out of memory", "server_busy");
    return -1;
}

void
sl_gemini_start(sl_call_t *k) {
    sl_request_t *r = k->r;
    const sl_provider_t *p = k->target->provider;
    const sl_snapshot_t *snap = r->snap;
    size_t idx = (size_t)(p - r->cfg->providers);
    const char *url = sl_call_url(k);
    if (url == NULL) {
        sl_response_error(r, 400,
                          "the model name may hold only letters, digits, "
                          "'.', '-', '_' and ':' for this provider",
                          "invalid_model");
        return;
    }
    char *body = encode(k);
    if (body == NULL)
        return;
    gem_call_t *g = sl_arena_calloc(r->arena, sizeof(*g));
    if (g == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    g->k = k;
    if (prepare(k, g) != 0)
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
    k->up = sl_upcall_start(r->w->upstream, &params, &gemini_ops, g);
    if (k->up == NULL) {
        sl_response_error(r, 503, "cannot start the upstream request",
                          "server_busy");
        return;
    }
    r->op = g;
    r->cancel = cancel;
    r->resume = resume;
}
