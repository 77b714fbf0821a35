/* The built-in mock provider: answers in-process, deterministically, by
 * echoing the last user message, so a quickstart and tests can see exactly
 * what reached the provider. Streams word by word, paced by a timer. */
#include "../clock.h"
#include "../error.h"
#include "../worker.h"
#include "provider.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *text;
    size_t len, pos;
    long prompt_tokens, completion_tokens;
    long created;
} sl_mock_t;

static long
count_words(const char *s)
{
    long n = 0;
    int in = 0;
    for (; s != NULL && *s; s++) {
        int space = *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r';
        if (!space && !in)
            n++;
        in = !space;
    }
    return n;
}

static long
prompt_words(sl_call_t *k)
{
    long n = 0;
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(k->json, "messages");
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (cJSON_IsString(c))
            n += count_words(c->valuestring);
        else if (cJSON_IsArray(c)) {
            const cJSON *part;
            cJSON_ArrayForEach(part, c)
            {
                const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
                if (cJSON_IsString(t))
                    n += count_words(t->valuestring);
            }
        }
    }
    return n;
}

/* JSON-escapes s into the arena. */
static char *
escaped(sl_arena_t *a, const char *s, size_t len)
{
    size_t need = sl_json_escape(NULL, 0, 0, s, len);
    char *out = sl_arena_alloc(a, need + 1);
    if (out != NULL)
        sl_json_escape(out, need + 1, 0, s, len);
    return out;
}

static void
finish_usage(sl_call_t *k, sl_mock_t *m)
{
    sl_request_t *r = k->r;
    r->prompt_tokens = m->prompt_tokens;
    r->completion_tokens = m->completion_tokens;
    r->total_tokens = m->prompt_tokens + m->completion_tokens;
    r->upstream_us = sl_now_us() - r->t_upstream;
}

static void
chat_answer(sl_call_t *k, sl_mock_t *m)
{
    sl_request_t *r = k->r;
    char *model = escaped(r->arena, r->model, strlen(r->model));
    char *text = escaped(r->arena, m->text, m->len);
    char *body = sl_arena_printf(
        r->arena,
        "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\","
        "\"created\":%ld,\"model\":\"%s\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":%ld,"
        "\"completion_tokens\":%ld,\"total_tokens\":%ld}}",
        m->created, model ? model : "", text ? text : "", m->prompt_tokens,
        m->completion_tokens, m->prompt_tokens + m->completion_tokens);
    finish_usage(k, m);
    if (body == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_response_send(r, 200, "application/json", sl_call_success_headers(k),
                     body, strlen(body));
}

/* encoding_format "base64": little-endian float32s, base64 encoded, as
 * OpenAI answers (the openai SDKs ask for it by default). */
static cJSON *
base64_floats(const double *v, int n)
{
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char raw[64];
    char out[96];
    size_t len = 0, o = 0;
    for (int i = 0; i < n && len + 4 <= sizeof(raw); i++) {
        float f = (float)v[i];
        uint32_t u;
        memcpy(&u, &f, 4);
        for (int b = 0; b < 4; b++)
            raw[len++] = (unsigned char)(u >> (8 * b));
    }
    for (size_t i = 0; i < len; i += 3) {
        uint32_t w = (uint32_t)raw[i] << 16;
        if (i + 1 < len)
            w |= (uint32_t)raw[i + 1] << 8;
        if (i + 2 < len)
            w |= raw[i + 2];
        out[o++] = tbl[(w >> 18) & 63];
        out[o++] = tbl[(w >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(w >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[w & 63] : '=';
    }
    out[o] = '\0';
    return cJSON_CreateString(out);
}

static void
embeddings_answer(sl_call_t *k, sl_mock_t *m)
{
    sl_request_t *r = k->r;
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(k->json, "input");
    const cJSON *fmt =
        cJSON_GetObjectItemCaseSensitive(k->json, "encoding_format");
    int base64 =
        cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    long tokens = 0;
    int n = cJSON_IsArray(input) ? cJSON_GetArraySize(input) : 1;
    for (int i = 0; i < n; i++) {
        const cJSON *in = cJSON_IsArray(input) ? cJSON_GetArrayItem(input, i)
                                               : input;
        const char *s = cJSON_IsString(in) ? in->valuestring : "";
        tokens += cJSON_IsString(in) ? count_words(s)
                                     : cJSON_GetArraySize(in);
        uint64_t h = 1469598103934665603ULL; /* FNV-1a: same text, same vector */
        for (const char *p = s; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        double v[8];
        for (int d = 0; d < 8; d++) {
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
            v[d] = (double)(h >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "object", "embedding");
        cJSON_AddNumberToObject(e, "index", i);
        cJSON_AddItemToObject(e, "embedding",
                              base64 ? base64_floats(v, 8)
                                     : cJSON_CreateDoubleArray(v, 8));
        cJSON_AddItemToArray(data, e);
    }
    cJSON_AddStringToObject(root, "model", r->model);
    cJSON *usage = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", (double)tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", (double)tokens);
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    m->prompt_tokens = tokens;
    m->completion_tokens = 0;
    finish_usage(k, m);
    if (out == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    char *body = sl_arena_strndup(r->arena, out, strlen(out));
    cJSON_free(out);
    sl_response_send(r, 200, "application/json", sl_call_success_headers(k),
                     body, strlen(body));
}

/* One stream step per timer tick: role, each word, finish, usage, DONE. */
static void
stream_step(evutil_socket_t fd, short what, void *arg)
{
    sl_call_t *k = arg;
    sl_mock_t *m = k->mock;
    sl_request_t *r = k->r;
    char *model = escaped(r->arena, r->model, strlen(r->model));
    char head[512];
    snprintf(head, sizeof(head),
             "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\","
             "\"created\":%ld,\"model\":\"%s\",",
             m->created, model ? model : "");
    const char *usage_null = k->client_usage ? ",\"usage\":null" : "";
    char *ev = NULL;
    int last = 0;
    if (k->mock_step == 0) {
        ev = sl_arena_printf(r->arena,
                             "%s\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                             "\"assistant\",\"content\":\"\"},"
                             "\"finish_reason\":null}]%s}",
                             head, usage_null);
        k->mock_step = 1;
    } else if (k->mock_step == 1 && m->pos < m->len) {
        size_t start = m->pos, i = start;
        while (i < m->len && strchr(" \t\r\n", m->text[i]) != NULL)
            i++;
        while (i < m->len && strchr(" \t\r\n", m->text[i]) == NULL)
            i++;
        while (i < m->len && strchr(" \t\r\n", m->text[i]) != NULL)
            i++;
        m->pos = i;
        char *word = escaped(r->arena, m->text + start, i - start);
        ev = sl_arena_printf(r->arena,
                             "%s\"choices\":[{\"index\":0,\"delta\":{"
                             "\"content\":\"%s\"},\"finish_reason\":null}]%s}",
                             head, word ? word : "", usage_null);
    } else if (k->mock_step == 1) {
        ev = sl_arena_printf(r->arena,
                             "%s\"choices\":[{\"index\":0,\"delta\":{},"
                             "\"finish_reason\":\"stop\"}]%s}",
                             head, usage_null);
        k->mock_step = k->client_usage ? 2 : 3;
    } else if (k->mock_step == 2) {
        ev = sl_arena_printf(r->arena,
                             "%s\"choices\":[],\"usage\":{\"prompt_tokens\":"
                             "%ld,\"completion_tokens\":%ld,"
                             "\"total_tokens\":%ld}}",
                             head, m->prompt_tokens, m->completion_tokens,
                             m->prompt_tokens + m->completion_tokens);
        k->mock_step = 3;
    } else {
        last = 1;
    }
    if (last) {
        sl_call_forward(k, "[DONE]", 6);
        finish_usage(k, m);
        r->cancel = NULL;
        r->resume = NULL;
        event_free(k->timer);
        k->timer = NULL;
        sl_response_stream_end(r, 1);
        return;
    }
    if (ev == NULL) {
        r->cancel = NULL;
        event_free(k->timer);
        k->timer = NULL;
        if (r->responded)
            sl_call_stream_fail(k, "out of memory", "server_busy");
        else
            sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    int full = sl_call_forward(k, ev, strlen(ev));
    if (r->responded)
        full |= sl_response_flush(r);
    if (full) {
        r->paused = 1; /* resume re-arms the timer */
        return;
    }
    long ms = k->target->provider->mock_delay_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(k->timer, &tv);
}

static void
cancel(sl_request_t *r)
{
    sl_call_t *k = r->op;
    if (k->timer != NULL) {
        event_free(k->timer);
        k->timer = NULL;
    }
}

static void
resume(sl_request_t *r)
{
    sl_call_t *k = r->op;
    if (k->timer != NULL)
        event_active(k->timer, EV_TIMEOUT, 0);
}

void
sl_mock_start(sl_call_t *k)
{
    sl_request_t *r = k->r;
    sl_mock_t *m = sl_arena_calloc(r->arena, sizeof(*m));
    if (m == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    k->mock = m;
    m->created = (long)time(NULL);
    r->t_upstream = sl_now_us();
    if (k->kind == SL_CALL_EMBEDDINGS) {
        embeddings_answer(k, m);
        return;
    }
    m->text = sl_call_last_user_text(k);
    if (m->text == NULL)
        m->text = "";
    m->len = strlen(m->text);
    m->prompt_tokens = prompt_words(k);
    m->completion_tokens = count_words(m->text);
    if (!k->stream) {
        chat_answer(k, m);
        return;
    }
    k->timer = evtimer_new(r->w->base, stream_step, k);
    if (k->timer == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    r->op = k;
    r->cancel = cancel;
    r->resume = resume;
    struct timeval tv = {0, 0};
    evtimer_add(k->timer, &tv);
}
