/* Model endpoints. The body is decoded once (cJSON), validated, and the
 * target chosen; everything provider-specific lives in providers/. */
#include "proxy.h"
#include "error.h"
#include "providers/provider.h"
#include "router.h"
#include "worker.h"

#include <stdio.h>
#include <string.h>

static void
free_json(void *p)
{
    cJSON_Delete(p);
}

void
sl_call_take_usage(sl_call_t *k, const cJSON *usage)
{
    if (!cJSON_IsObject(usage))
        return;
    sl_request_t *r = k->r;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
    const cJSON *c =
        cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(usage, "total_tokens");
    if (cJSON_IsNumber(p))
        r->prompt_tokens = (long)p->valuedouble;
    if (cJSON_IsNumber(c))
        r->completion_tokens = (long)c->valuedouble;
    if (cJSON_IsNumber(t))
        r->total_tokens = (long)t->valuedouble;
}

const char *
sl_call_success_headers(sl_call_t *k)
{
    return sl_arena_printf(k->r->arena,
                           "x-sluice-provider: %s\r\n"
                           "x-sluice-model: %s\r\n",
                           k->target->provider->name, k->target->model);
}

int
sl_call_forward(sl_call_t *k, const char *data, size_t len)
{
    sl_request_t *r = k->r;
    if (!r->responded)
        sl_response_stream_start(r, 200, sl_call_success_headers(k));
    k->forwarded++;
    return sl_response_stream_event(r, NULL, 0, data, len);
}

void
sl_call_stream_fail(sl_call_t *k, const char *message, const char *code)
{
    char body[1024];
    size_t n = sl_error_json(body, sizeof(body), message, "upstream_error",
                             code);
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    k->r->error_code = code;
    sl_response_stream_event(k->r, NULL, 0, body, n);
    sl_response_stream_end(k->r, 0);
}

static const char *
text_of(sl_arena_t *a, const cJSON *content)
{
    if (cJSON_IsString(content))
        return content->valuestring;
    if (!cJSON_IsArray(content))
        return NULL;
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (cJSON_IsString(t))
            total += strlen(t->valuestring) + 1;
    }
    char *out = sl_arena_alloc(a, total + 1), *p = out;
    if (out == NULL)
        return NULL;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(t))
            continue;
        if (p != out)
            *p++ = ' ';
        size_t n = strlen(t->valuestring);
        memcpy(p, t->valuestring, n);
        p += n;
    }
    *p = '\0';
    return out;
}

const char *
sl_call_last_user_text(sl_call_t *k)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(k->json, "messages");
    const cJSON *last = NULL, *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0)
            last = m;
    }
    if (last == NULL)
        return NULL;
    return text_of(k->r->arena,
                   cJSON_GetObjectItemCaseSensitive(last, "content"));
}

static int
validate_messages(sl_request_t *r, const cJSON *msgs)
{
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        sl_response_error(r, 400,
                          "'messages' must be a non-empty array of messages",
                          "invalid_messages");
        return -1;
    }
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            char msg[128];
            snprintf(msg, sizeof(msg),
                     "messages[%d] must be an object with a string 'role'",
                     i);
            sl_response_error(r, 400, msg, "invalid_messages");
            return -1;
        }
        i++;
    }
    return 0;
}

/* Decodes and checks what every model endpoint needs; answers the client
 * itself and returns NULL when the request is not acceptable. */
static sl_call_t *
call_new(sl_request_t *r, sl_call_kind_t kind)
{
    if (r->body_len == 0) {
        sl_response_error(r, 400, "the request body is empty; send JSON",
                          "invalid_json");
        return NULL;
    }
    cJSON *json = cJSON_ParseWithLength(r->body, r->body_len);
    if (json == NULL) {
        sl_response_error(r, 400, "the request body is not valid JSON",
                          "invalid_json");
        return NULL;
    }
    if (sl_arena_cleanup_add(r->arena, free_json, json) != 0) {
        cJSON_Delete(json);
        sl_response_error(r, 503, "out of memory", "server_busy");
        return NULL;
    }
    if (!cJSON_IsObject(json)) {
        sl_response_error(r, 400, "the request body must be a JSON object",
                          "invalid_request");
        return NULL;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(json, "model");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0') {
        sl_response_error(r, 400, "you must provide a 'model' string",
                          "missing_model");
        return NULL;
    }
    /* A copy: adapters may replace the JSON item (and free its string). */
    r->model = sl_arena_strndup(r->arena, model->valuestring,
                                strlen(model->valuestring));
    sl_call_t *k = sl_arena_calloc(r->arena, sizeof(*k));
    if (k == NULL || r->model == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return NULL;
    }
    k->r = r;
    k->kind = kind;
    k->json = json;
    if (kind == SL_CALL_CHAT) {
        if (validate_messages(
                r, cJSON_GetObjectItemCaseSensitive(json, "messages")) != 0)
            return NULL;
        const cJSON *stream = cJSON_GetObjectItemCaseSensitive(json, "stream");
        if (stream != NULL && !cJSON_IsBool(stream) && !cJSON_IsNull(stream)) {
            sl_response_error(r, 400, "'stream' must be a boolean",
                              "invalid_request");
            return NULL;
        }
        k->stream = cJSON_IsTrue(stream);
        const cJSON *so =
            cJSON_GetObjectItemCaseSensitive(json, "stream_options");
        k->client_usage = cJSON_IsTrue(
            cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    } else {
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(json, "input");
        if (!cJSON_IsString(input) &&
            !(cJSON_IsArray(input) && cJSON_GetArraySize(input) > 0)) {
            sl_response_error(r, 400,
                              "'input' must be a string or a non-empty array",
                              "invalid_input");
            return NULL;
        }
    }
    size_t len = strlen(r->model);
    k->target = sl_route_model(r->cfg, r->model, len,
                               sl_worker_random(r->w), &k->direct);
    if (k->target == NULL) {
        char *msg = sl_arena_printf(
            r->arena,
            "The model '%.200s' does not exist or is not served here",
            r->model);
        sl_response_error(r, 404, msg ? msg : "unknown model",
                          "model_not_found");
        return NULL;
    }
    r->provider = k->target->provider->name;
    r->target_model = k->target->model;
    return k;
}

static void
start(sl_call_t *k)
{
    switch (k->target->provider->type) {
    case SL_PROVIDER_MOCK:
        sl_mock_start(k);
        break;
    case SL_PROVIDER_OPENAI:
    default:
        sl_openai_start(k);
        break;
    }
}

void
sl_proxy_chat(sl_request_t *r)
{
    sl_call_t *k = call_new(r, SL_CALL_CHAT);
    if (k != NULL)
        start(k);
}

void
sl_proxy_embeddings(sl_request_t *r)
{
    sl_call_t *k = call_new(r, SL_CALL_EMBEDDINGS);
    if (k != NULL)
        start(k);
}
