/* Anthropic Messages requests said as OpenAI chat requests (the request
 * half of the /v1/messages front door; see messages.h). */
#include "../error.h"
#include "messages.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (cap > 0)
        vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return SL_EINVAL;
}

static const char *
type_of(const cJSON *block) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(block, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static const char *
string_of(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The text of a string or of an array of text blocks, joined by '\n'
 * (malloc'd). SL_EINVAL names `where` when a block is not text. */
static int
joined_text(const cJSON *content, const char *where, char **out, char *err,
            size_t errcap) {
    *out = NULL;
    if (content == NULL || cJSON_IsNull(content))
        return (*out = strdup("")) ? 0 : SL_ENOMEM;
    if (cJSON_IsString(content))
        return (*out = strdup(content->valuestring)) ? 0 : SL_ENOMEM;
    if (!cJSON_IsArray(content))
        return fail(err, errcap,
                    "%s: must be a string or an array of text "
                    "blocks",
                    where);
    size_t total = 1, i = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, content) {
        const char *t = type_of(b), *text = string_of(b, "text");
        if (t == NULL || strcmp(t, "text") != 0 || text == NULL)
            return fail(err, errcap,
                        "%s.%zu: only text blocks ({\"type\":\"text\","
                        "\"text\":...}) are supported here",
                        where, i);
        total += strlen(text) + 1;
        i++;
    }
    char *s = malloc(total), *p = s;
    if (s == NULL)
        return SL_ENOMEM;
    cJSON_ArrayForEach(b, content) {
        const char *text = string_of(b, "text");
        size_t n = strlen(text);
        if (p != s)
            *p++ = '\n';
        memcpy(p, text, n);
        p += n;
    }
    *p = '\0';
    *out = s;
    return 0;
}

/* An image block -> an image_url part. */
static int
image_part(const cJSON *block, const char *where, cJSON *parts, char *err,
           size_t errcap) {
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(block, "source");
    const char *st = type_of(src);
    char *url = NULL;
    if (st != NULL && strcmp(st, "base64") == 0) {
        const char *mt = string_of(src, "media_type");
        const char *data = string_of(src, "data");
        if (mt == NULL || data == NULL)
            return fail(err, errcap,
                        "%s.source: base64 images need "
                        "\"media_type\" and \"data\" strings",
                        where);
        size_t n = strlen(mt) + strlen(data) + 16;
        url = malloc(n);
        if (url == NULL)
            return SL_ENOMEM;
        snprintf(url, n, "data:%s;base64,%s", mt, data);
    } else if (st != NULL && strcmp(st, "url") == 0 &&
               string_of(src, "url") != NULL) {
        url = strdup(string_of(src, "url"));
        if (url == NULL)
            return SL_ENOMEM;
    } else {
        return fail(err, errcap,
                    "%s.source: must be {\"type\":\"base64\","
                    "\"media_type\",\"data\"} or {\"type\":\"url\",\"url\"}",
                    where);
    }
    cJSON *part = cJSON_CreateObject();
    cJSON_AddStringToObject(part, "type", "image_url");
    cJSON *iu = cJSON_AddObjectToObject(part, "image_url");
    cJSON *u = cJSON_AddStringToObject(iu, "url", url);
    free(url);
    if (u == NULL || !cJSON_AddItemToArray(parts, part)) {
        cJSON_Delete(part);
        return SL_ENOMEM;
    }
    return 0;
}

/* A user turn: tool_result blocks become "tool" messages, which OpenAI
 * wants right after the assistant's tool calls, so they go before the rest
 * of the turn. */
static int
user_turn(cJSON *out, const cJSON *content, int i, char *err, size_t errcap) {
    cJSON *parts = cJSON_CreateArray();
    if (parts == NULL)
        return SL_ENOMEM;
    int rc = 0, j = 0;
    const cJSON *b;
    char where[96];
    cJSON_ArrayForEach(b, content) {
        snprintf(where, sizeof(where), "messages.%d.content.%d", i, j++);
        const char *t = type_of(b);
        if (t == NULL) {
            rc = fail(err, errcap, "%s.type: required", where);
            break;
        }
        if (strcmp(t, "text") == 0) {
            const char *text = string_of(b, "text");
            if (text == NULL) {
                rc = fail(err, errcap, "%s.text: must be a string", where);
                break;
            }
            cJSON *p = cJSON_CreateObject();
            if (!cJSON_AddStringToObject(p, "type", "text") ||
                !cJSON_AddStringToObject(p, "text", text) ||
                !cJSON_AddItemToArray(parts, p)) {
                cJSON_Delete(p);
                rc = SL_ENOMEM;
                break;
            }
        } else if (strcmp(t, "image") == 0) {
            if ((rc = image_part(b, where, parts, err, errcap)) != 0)
                break;
        } else if (strcmp(t, "tool_result") == 0) {
            const char *id = string_of(b, "tool_use_id");
            if (id == NULL) {
                rc = fail(err, errcap, "%s.tool_use_id: must be a string",
                          where);
                break;
            }
            char *text;
            char cw[128];
            snprintf(cw, sizeof(cw), "%s.content", where);
            rc = joined_text(cJSON_GetObjectItemCaseSensitive(b, "content"), cw,
                             &text, err, errcap);
            if (rc != 0)
                break;
            cJSON *m = cJSON_CreateObject();
            int ok = cJSON_AddStringToObject(m, "role", "tool") &&
                     cJSON_AddStringToObject(m, "tool_call_id", id) &&
                     cJSON_AddStringToObject(m, "content", text) &&
                     cJSON_AddItemToArray(out, m);
            free(text);
            if (!ok) {
                cJSON_Delete(m);
                rc = SL_ENOMEM;
                break;
            }
        } else {
            rc = fail(err, errcap,
                      "%s.type: '%s' is not supported in a user turn "
                      "(text, image and tool_result are)",
                      where, t);
            break;
        }
    }
    if (rc != 0 || cJSON_GetArraySize(parts) == 0) {
        cJSON_Delete(parts);
        return rc;
    }
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", "user");
    cJSON *first = cJSON_GetArrayItem(parts, 0);
    if (cJSON_GetArraySize(parts) == 1 && strcmp(type_of(first), "text") == 0) {
        /* Plain text: the form every OpenAI-compatible server accepts. */
        cJSON_AddStringToObject(m, "content", string_of(first, "text"));
        cJSON_Delete(parts);
    } else {
        cJSON_AddItemToObject(m, "content", parts);
    }
    return cJSON_AddItemToArray(out, m) ? 0 : SL_ENOMEM;
}

static int
assistant_turn(cJSON *out, const cJSON *content, int i, char *err,
               size_t errcap) {
    cJSON *calls = cJSON_CreateArray();
    size_t cap = 64, len = 0;
    char *text = malloc(cap);
    int rc = 0, j = 0;
    const cJSON *b;
    char where[96];
    if (calls == NULL || text == NULL) {
        cJSON_Delete(calls);
        free(text);
        return SL_ENOMEM;
    }
    text[0] = '\0';
    cJSON_ArrayForEach(b, content) {
        snprintf(where, sizeof(where), "messages.%d.content.%d", i, j++);
        const char *t = type_of(b);
        if (t == NULL) {
            rc = fail(err, errcap, "%s.type: required", where);
            break;
        }
        if (strcmp(t, "text") == 0) {
            const char *s = string_of(b, "text");
            if (s == NULL) {
                rc = fail(err, errcap, "%s.text: must be a string", where);
                break;
            }
            size_t n = strlen(s);
            if (len + n + 1 > cap) {
                cap = (len + n + 1) * 2;
                char *nt = realloc(text, cap);
                if (nt == NULL) {
                    rc = SL_ENOMEM;
                    break;
                }
                text = nt;
            }
            memcpy(text + len, s, n + 1);
            len += n;
        } else if (strcmp(t, "tool_use") == 0) {
            const char *id = string_of(b, "id"), *name = string_of(b, "name");
            const cJSON *input = cJSON_GetObjectItemCaseSensitive(b, "input");
            if (id == NULL || name == NULL ||
                (input != NULL && !cJSON_IsObject(input))) {
                rc = fail(err, errcap,
                          "%s: tool_use needs \"id\" and "
                          "\"name\" strings and an \"input\" object",
                          where);
                break;
            }
            char *args = input ? cJSON_PrintUnformatted(input) : NULL;
            cJSON *c = cJSON_CreateObject();
            cJSON *f = cJSON_CreateObject();
            int ok = args != NULL || input == NULL;
            ok = ok && cJSON_AddStringToObject(c, "id", id) &&
                 cJSON_AddStringToObject(c, "type", "function") &&
                 cJSON_AddStringToObject(f, "name", name) &&
                 cJSON_AddStringToObject(f, "arguments", args ? args : "{}");
            cJSON_free(args);
            if (!ok || !cJSON_AddItemToObject(c, "function", f)) {
                cJSON_Delete(c);
                cJSON_Delete(f);
                rc = SL_ENOMEM;
                break;
            }
            cJSON_AddItemToArray(calls, c);
        } else if (strcmp(t, "thinking") == 0 ||
                   strcmp(t, "redacted_thinking") == 0) {
            /* Only the model that wrote it can read it back. */
        } else {
            rc = fail(err, errcap,
                      "%s.type: '%s' is not supported in an assistant turn "
                      "(text and tool_use are)",
                      where, t);
            break;
        }
    }
    if (rc == 0) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        if (len == 0 && cJSON_GetArraySize(calls) > 0)
            cJSON_AddNullToObject(m, "content");
        else
            cJSON_AddStringToObject(m, "content", text);
        if (cJSON_GetArraySize(calls) > 0) {
            cJSON_AddItemToObject(m, "tool_calls", calls);
            calls = NULL;
        }
        if (!cJSON_AddItemToArray(out, m)) {
            cJSON_Delete(m);
            rc = SL_ENOMEM;
        }
    }
    cJSON_Delete(calls);
    free(text);
    return rc;
}

/* The system prompt, then each turn. */
static int
add_messages(cJSON *chat, const cJSON *system, const cJSON *msgs, char *err,
             size_t errcap) {
    cJSON *out = cJSON_AddArrayToObject(chat, "messages");
    if (out == NULL)
        return SL_ENOMEM;
    int i = 0, rc = 0;
    if (system != NULL && !cJSON_IsNull(system)) {
        char *text;
        if ((rc = joined_text(system, "system", &text, err, errcap)) != 0)
            return rc;
        cJSON *m = cJSON_CreateObject();
        int ok = cJSON_AddStringToObject(m, "role", "system") &&
                 cJSON_AddStringToObject(m, "content", text) &&
                 cJSON_AddItemToArray(out, m);
        free(text);
        if (!ok) {
            cJSON_Delete(m);
            return SL_ENOMEM;
        }
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        const char *role = string_of(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || role == NULL ||
            (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
            return fail(err, errcap,
                        "messages.%d.role: must be \"user\" or "
                        "\"assistant\"",
                        i);
        if (cJSON_IsString(content)) {
            cJSON *o = cJSON_CreateObject();
            if (!cJSON_AddStringToObject(o, "role", role) ||
                !cJSON_AddStringToObject(o, "content", content->valuestring) ||
                !cJSON_AddItemToArray(out, o)) {
                cJSON_Delete(o);
                return SL_ENOMEM;
            }
        } else if (!cJSON_IsArray(content)) {
            return fail(err, errcap,
                        "messages.%d.content: must be a string "
                        "or an array of content blocks",
                        i);
        } else if (role[0] == 'u') {
            rc = user_turn(out, content, i, err, errcap);
        } else {
            rc = assistant_turn(out, content, i, err, errcap);
        }
        if (rc != 0)
            return rc;
        i++;
    }
    return 0;
}

static int
add_tools(cJSON *chat, const cJSON *msg, char *err, size_t errcap) {
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(msg, "tools");
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(msg, "tool_choice");
    if (tools != NULL && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return fail(err, errcap, "tools: must be an array");
    int i = 0;
    const cJSON *t;
    cJSON *out = NULL;
    cJSON_ArrayForEach(t, tools) {
        const char *type = type_of(t), *name = string_of(t, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(t, "description");
        const cJSON *schema =
            cJSON_GetObjectItemCaseSensitive(t, "input_schema");
        if (type != NULL && strcmp(type, "custom") != 0)
            return fail(err, errcap,
                        "tools.%d.type: '%s' is a server tool; "
                        "only client tools can be used through this gateway",
                        i, type);
        if (name == NULL || !cJSON_IsObject(schema) ||
            (desc != NULL && !cJSON_IsString(desc)))
            return fail(err, errcap,
                        "tools.%d: needs a \"name\" string and "
                        "an \"input_schema\" object (\"description\" is a "
                        "string)",
                        i);
        if (out == NULL &&
            (out = cJSON_AddArrayToObject(chat, "tools")) == NULL)
            return SL_ENOMEM;
        cJSON *o = cJSON_CreateObject();
        cJSON *f = cJSON_AddObjectToObject(o, "function");
        cJSON_AddStringToObject(o, "type", "function");
        cJSON_AddStringToObject(f, "name", name);
        if (desc != NULL)
            cJSON_AddStringToObject(f, "description", desc->valuestring);
        cJSON_AddItemToObject(f, "parameters", cJSON_Duplicate(schema, 1));
        if (!cJSON_AddItemToArray(out, o)) {
            cJSON_Delete(o);
            return SL_ENOMEM;
        }
        i++;
    }
    if (choice == NULL || cJSON_IsNull(choice))
        return 0;
    const char *ct = type_of(choice);
    if (ct == NULL)
        return fail(err, errcap,
                    "tool_choice: must be an object with a "
                    "\"type\" of auto, any, tool or none");
    if (out == NULL)
        return 0; /* OpenAI refuses a tool_choice without tools */
    cJSON *c = NULL;
    if (strcmp(ct, "auto") == 0)
        c = cJSON_CreateString("auto");
    else if (strcmp(ct, "any") == 0)
        c = cJSON_CreateString("required");
    else if (strcmp(ct, "none") == 0)
        c = cJSON_CreateString("none");
    else if (strcmp(ct, "tool") == 0) {
        const char *name = string_of(choice, "name");
        if (name == NULL)
            return fail(err, errcap,
                        "tool_choice.name: required for type "
                        "\"tool\"");
        c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "type", "function");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(c, "function"), "name",
                                name);
    } else
        return fail(err, errcap,
                    "tool_choice.type: '%s' is not one of "
                    "auto, any, tool, none",
                    ct);
    if (c == NULL || !cJSON_AddItemToObject(chat, "tool_choice", c)) {
        cJSON_Delete(c);
        return SL_ENOMEM;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
            choice, "disable_parallel_tool_use")))
        cJSON_AddFalseToObject(chat, "parallel_tool_calls");
    return 0;
}

/* The sampling fields, stop sequences, stream and user. */
static int
add_options(cJSON *chat, const cJSON *msg, char *err, size_t errcap) {
    static const char *const numbers[] = {"temperature", "top_p"};
    for (size_t n = 0; n < 2; n++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(msg, numbers[n]);
        if (v == NULL || cJSON_IsNull(v))
            continue;
        if (!cJSON_IsNumber(v))
            return fail(err, errcap, "%s: must be a number", numbers[n]);
        cJSON_AddNumberToObject(chat, numbers[n], v->valuedouble);
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(msg, "stop_sequences");
    if (stop != NULL && !cJSON_IsNull(stop)) {
        const cJSON *s;
        if (!cJSON_IsArray(stop))
            return fail(err, errcap,
                        "stop_sequences: must be an array of "
                        "strings");
        cJSON_ArrayForEach(s, stop) {
            if (!cJSON_IsString(s))
                return fail(err, errcap,
                            "stop_sequences: must be an array "
                            "of strings");
        }
        if (cJSON_GetArraySize(stop) > 0)
            cJSON_AddItemToObject(chat, "stop", cJSON_Duplicate(stop, 1));
    }
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(msg, "stream");
    if (stream != NULL && !cJSON_IsNull(stream) && !cJSON_IsBool(stream))
        return fail(err, errcap, "stream: must be a boolean");
    if (cJSON_IsTrue(stream)) {
        cJSON_AddTrueToObject(chat, "stream");
        /* Anthropic's message_delta carries usage: always ask for it. */
        cJSON_AddTrueToObject(cJSON_AddObjectToObject(chat, "stream_options"),
                              "include_usage");
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(msg, "metadata");
    if (meta != NULL && !cJSON_IsNull(meta) && !cJSON_IsObject(meta))
        return fail(err, errcap, "metadata: must be an object");
    const char *user = string_of(meta, "user_id");
    if (user != NULL)
        cJSON_AddStringToObject(chat, "user", user);
    return 0;
}

int
sl_messages_request(const cJSON *msg, cJSON **out, char *err, size_t errcap) {
    *out = NULL;
    if (!cJSON_IsObject(msg))
        return fail(err, errcap, "the request body must be a JSON object");
    const char *model = string_of(msg, "model");
    if (model == NULL || model[0] == '\0')
        return fail(err, errcap, "model: a non-empty string is required");
    const cJSON *max = cJSON_GetObjectItemCaseSensitive(msg, "max_tokens");
    if (!cJSON_IsNumber(max) || max->valuedouble < 1 ||
        max->valuedouble > 1e12 ||
        max->valuedouble != (double)(long long)max->valuedouble)
        return fail(err, errcap,
                    "max_tokens: required, an integer of at "
                    "least 1");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(msg, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return fail(err, errcap, "messages: must be a non-empty array");
    const cJSON *system = cJSON_GetObjectItemCaseSensitive(msg, "system");

    cJSON *chat = cJSON_CreateObject();
    if (chat == NULL || !cJSON_AddStringToObject(chat, "model", model)) {
        cJSON_Delete(chat);
        return SL_ENOMEM;
    }
    int rc = add_messages(chat, system, msgs, err, errcap);
    if (rc == 0 &&
        !cJSON_AddNumberToObject(chat, "max_tokens", max->valuedouble))
        rc = SL_ENOMEM;
    if (rc == 0)
        rc = add_options(chat, msg, err, errcap);
    if (rc == 0)
        rc = add_tools(chat, msg, err, errcap);
    if (rc != 0) {
        cJSON_Delete(chat);
        return rc;
    }
    *out = chat;
    return 0;
}
