/* Model endpoints. The body is decoded once (cJSON), validated, and the
 * target chosen; everything provider-specific lives in providers/. */
#include "proxy.h"
#include "budget.h"
#include "../lua/host.h"
#include "error.h"
#include "pipeline.h"
#include "pricing.h"
#include "snapshot.h"
#include "providers/provider.h"
#include "router.h"
#include "worker.h"
#include "clock.h"

#include <stdlib.h>

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
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(usage,
                                                      "prompt_tokens_details");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(d, "cached_tokens");
    if (cJSON_IsNumber(n))
        r->cached_tokens = (long)n->valuedouble;
    d = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens_details");
    n = cJSON_GetObjectItemCaseSensitive(d, "reasoning_tokens");
    if (cJSON_IsNumber(n))
        r->reasoning_tokens = (long)n->valuedouble;
}

int
sl_call_take_answer(sl_call_t *k, const char *text, size_t len,
                    int *choices_empty)
{
    sl_usage_facts_t u;
    if (sl_usage_scan(text, len, &u) != 0) {
        cJSON *j = cJSON_ParseWithLength(text, len);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            return -1;
        }
        sl_usage_of(j, &u);
        cJSON_Delete(j);
    }
    if (choices_empty != NULL)
        *choices_empty = u.choices_empty;
    if (!u.usage)
        return 0;
    sl_request_t *r = k->r;
    if (u.has & SL_USAGE_PROMPT)
        r->prompt_tokens = u.prompt;
    if (u.has & SL_USAGE_COMPLETION)
        r->completion_tokens = u.completion;
    if (u.has & SL_USAGE_TOTAL)
        r->total_tokens = u.total;
    if (u.has & SL_USAGE_CACHED)
        r->cached_tokens = u.cached;
    if (u.has & SL_USAGE_REASONING)
        r->reasoning_tokens = u.reasoning;
    return 0;
}

/* Appends s to p; returns the end. */
static char *
put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

const char *
sl_call_success_headers(sl_call_t *k)
{
    static const char h1[] = "x-sluice-provider: ", h2[] =
        "\r\nx-sluice-model: ", h3[] = "\r\nx-sluice-attempts: ";
    const char *prov = k->target->provider->name, *model = k->target->model;
    size_t np = strlen(prov), nm = strlen(model);
    char num[16], *d = num + sizeof(num);
    unsigned a = k->attempts > 0 ? (unsigned)k->attempts : 0;
    do
        *--d = (char)('0' + a % 10);
    while ((a /= 10) != 0);
    size_t nn = (size_t)(num + sizeof(num) - d);
    char *out = sl_arena_alloc(k->r->arena, sizeof(h1) + sizeof(h2) +
                                                sizeof(h3) + np + nm + nn);
    if (out == NULL)
        return NULL;
    char *p = put(out, h1, sizeof(h1) - 1);
    p = put(p, prov, np);
    p = put(p, h2, sizeof(h2) - 1);
    p = put(p, model, nm);
    p = put(p, h3, sizeof(h3) - 1);
    p = put(p, d, nn);
    p = put(p, "\r\n", 2);
    *p = '\0';
    return out;
}

/* Skips JSON white space. */
static const char *
skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A chunk that carries no answer yet: the role-only first chunk, or an
 * empty content delta. Anything with content, a tool call, a finish reason
 * or an error commits the stream. */
static int
is_preamble(const char *data, size_t len)
{
    const char *end = data + len, *p;
    if (sl_json_find(data, len, "\"tool_calls\"", 12) != NULL ||
        sl_json_find(data, len, "\"error\"", 7) != NULL)
        return 0;
    for (p = data; (p = sl_json_find(p, (size_t)(end - p),
                                     "\"finish_reason\"", 15)) != NULL;) {
        p = skip_ws(p + 15, end);
        if (p < end && *p == ':')
            p = skip_ws(p + 1, end);
        if (p < end && *p != 'n') /* not null */
            return 0;
    }
    for (p = data;
         (p = sl_json_find(p, (size_t)(end - p), "\"content\"", 9)) != NULL;) {
        p = skip_ws(p + 9, end);
        if (p < end && *p == ':')
            p = skip_ws(p + 1, end);
        if (p + 1 < end && *p == '"' && p[1] != '"')
            return 0; /* a non-empty string */
    }
    return 1;
}

int
sl_call_forward(sl_call_t *k, const char *data, size_t len)
{
    sl_request_t *r = k->r;
    if (r->lua != NULL && sl_lua_chunk(r, &data, &len) != 0)
        return 0;
    if (r->pipe != NULL && sl_pipeline_chunk(r, &data, &len) != 0)
        return 0;
    if (!r->responded) {
        /* Hold the preamble until the first token: a failure before it can
         * still fall back to another target without the client seeing two
         * starts. */
        if (is_preamble(data, len) &&
            !(len == 6 && memcmp(data, "[DONE]", 6) == 0)) {
            if (k->held == NULL) {
                k->held = evbuffer_new();
                if (k->held == NULL ||
                    sl_arena_cleanup_add(r->arena,
                                         (sl_cleanup_fn)evbuffer_free,
                                         k->held) != 0)
                    return 0;
            }
            uint32_t n = (uint32_t)len;
            evbuffer_add(k->held, &n, sizeof(n));
            evbuffer_add(k->held, data, len);
            return 0;
        }
        sl_response_stream_start(r, 200, sl_call_success_headers(k));
        while (k->held != NULL && evbuffer_get_length(k->held) > 0) {
            uint32_t n;
            evbuffer_remove(k->held, &n, sizeof(n));
            char *ev = (char *)evbuffer_pullup(k->held, n);
            k->forwarded++;
            sl_response_stream_event(r, NULL, 0, ev, n);
            evbuffer_drain(k->held, n);
        }
    }
    k->forwarded++;
    return sl_response_stream_event(r, NULL, 0, data, len);
}

void
sl_call_stream_cut(sl_call_t *k, int result, const char *why,
                   const char *ended)
{
    sl_request_t *r = k->r;
    /* After the commit point there is no silent switch: the client learns
     * that the answer is cut. */
    sl_call_release(k, 0);
    const char *msg =
        result == SL_ETIMEDOUT ? "the upstream timed out mid-stream"
        : result == SL_EINVAL  ? "the upstream stream is larger than "
                                 "limits.max_response_bytes"
        : result != 0 && why != NULL
            ? sl_arena_printf(r->arena, "upstream stream failed: %s", why)
            : ended;
    sl_call_stream_fail(k, msg ? msg : "upstream stream failed",
                        result == SL_ETIMEDOUT ? "upstream_timeout"
                        : result == SL_EINVAL  ? "upstream_response_too_large"
                                               : "upstream_stream_cut");
}

int
sl_call_transport_failed(sl_call_t *k, int result, const char *why)
{
    sl_request_t *r = k->r;
    if (result == 0)
        return 0;
    if (result != SL_EINVAL && sl_call_retry(k, result, 0, NULL))
        return 1;
    if (result == SL_ETIMEDOUT) {
        sl_response_error(r, 504, why ? why : "the upstream timed out",
                          "upstream_timeout");
    } else if (result == SL_EINVAL) {
        sl_call_release(k, 1);
        sl_response_error(r, 502, "the upstream response is too large",
                          "upstream_response_too_large");
    } else {
        char *msg = sl_arena_printf(r->arena, "upstream request failed: %s",
                                    why ? why : "unknown error");
        sl_response_error(r, 502, msg ? msg : "upstream request failed",
                          "upstream_error");
    }
    return 1;
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
    /* Its callers (the mock, plugins) run with the tree decoded. */
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

int
sl_call_reroute(sl_call_t *k)
{
    sl_request_t *r = k->r;
    size_t len = strlen(r->model);
    k->model = NULL;
    k->nchain = k->ichain = 0;
    k->deadline = 0;
    if (sl_route_model(r->cfg, r->model, len, &k->model, &k->direct) == 0) {
        if (k->model != NULL) {
            k->nchain = sl_balancer_chain(k->model, sl_worker_random(r->w),
                                          k->chain, SL_CHAIN_MAX);
            if (k->model->deadline_ms > 0)
                k->deadline = r->t_start + (uint64_t)k->model->deadline_ms *
                                               1000u;
        } else {
            k->chain[0] = &k->direct;
            k->nchain = 1;
        }
    }
    if (k->nchain == 0) {
        char *msg = sl_arena_printf(
            r->arena,
            "The model '%.200s' does not exist or is not served here",
            r->model);
        sl_response_error(r, 404, msg ? msg : "unknown model",
                          "model_not_found");
        return -1;
    }
    return 0;
}

cJSON *
sl_call_tree(sl_call_t *k)
{
    if (k->json != NULL)
        return k->json;
    sl_request_t *r = k->r;
    /* The scanner took this body, so cJSON takes it too: NULL is OOM. */
    cJSON *json = cJSON_ParseWithLength(r->body, r->body_len);
    if (json == NULL || sl_arena_cleanup_add(r->arena, free_json, json) != 0) {
        cJSON_Delete(json);
        return NULL;
    }
    k->json = json;
    return json;
}

cJSON *
sl_call_json(sl_call_t *k)
{
    cJSON *json = sl_call_tree(k);
    if (json == NULL)
        sl_response_error(k->r, 503, "out of memory", "server_busy");
    return json;
}

/* Reads the body: in place when the scanner takes it and no tree is
 * wanted anyway, else through cJSON (whose verdict on what is valid then
 * stands). Answers and returns -1 when it is not a JSON object. */
static int
read_body(sl_request_t *r, int tree, sl_chat_facts_t *f, cJSON **json)
{
    *json = NULL;
    if (!tree && sl_chat_scan(r->body, r->body_len, f) == 0) {
        if (f->model_escaped) { /* decoded as cJSON decodes it */
            cJSON *s = cJSON_ParseWithLength(f->model_at, f->model_at_len);
            if (s == NULL ||
                sl_arena_cleanup_add(r->arena, free_json, s) != 0) {
                cJSON_Delete(s);
                sl_response_error(r, 503, "out of memory", "server_busy");
                return -1;
            }
            f->model_str = s->valuestring;
            f->model_len = strlen(s->valuestring);
        }
        return 0;
    }
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    if (j == NULL) {
        sl_response_error(r, 400, "the request body is not valid JSON",
                          "invalid_json");
        return -1;
    }
    if (sl_arena_cleanup_add(r->arena, free_json, j) != 0) {
        cJSON_Delete(j);
        sl_response_error(r, 503, "out of memory", "server_busy");
        return -1;
    }
    if (!cJSON_IsObject(j)) {
        sl_response_error(r, 400, "the request body must be a JSON object",
                          "invalid_request");
        return -1;
    }
    sl_chat_facts_of(j, f);
    *json = j;
    return 0;
}

static int
check_messages(sl_request_t *r, const sl_chat_facts_t *f)
{
    if (f->messages != SL_JSON_ARRAY || f->nmessages == 0) {
        sl_response_error(r, 400,
                          "'messages' must be a non-empty array of messages",
                          "invalid_messages");
        return -1;
    }
    if (f->bad_message >= 0) {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "messages[%ld] must be an object with a string 'role'",
                 f->bad_message);
        sl_response_error(r, 400, msg, "invalid_messages");
        return -1;
    }
    return 0;
}

/* Budgets read the request as a tree: it is decoded before they run when
 * the config has any. Plugins (plugin_host.c) and Lua scripts decode it
 * themselves when a hook needs one. */
static int
call_wants_tree(const sl_request_t *r)
{
    return r->cfg->usage != NULL && r->cfg->usage->nbudgets > 0;
}

/* Decodes and checks what every model endpoint needs; answers the client
 * itself and returns NULL when the request is not acceptable. */
static void call_end(void *arg);

static sl_call_t *
call_new(sl_request_t *r, sl_call_kind_t kind, int tree)
{
    if (r->body_len == 0) {
        sl_response_error(r, 400, "the request body is empty; send JSON",
                          "invalid_json");
        return NULL;
    }
    sl_chat_facts_t f;
    cJSON *json;
    if (read_body(r, tree, &f, &json) != 0)
        return NULL;
    if (f.model != SL_JSON_STRING || f.model_len == 0 ||
        f.model_str[0] == '\0') {
        sl_response_error(r, 400, "you must provide a 'model' string",
                          "missing_model");
        return NULL;
    }
    /* A copy: adapters may replace the JSON item (and free its string). */
    r->model = sl_arena_strndup(r->arena, f.model_str, f.model_len);
    sl_call_t *k = sl_arena_calloc(r->arena, sizeof(*k));
    if (k == NULL || r->model == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return NULL;
    }
    k->r = r;
    k->kind = kind;
    k->json = json;
    k->facts = f;
    k->scanned = f.close != NULL ? r->body : NULL;
    if (kind == SL_CALL_CHAT) {
        if (check_messages(r, &f) != 0)
            return NULL;
        if (f.stream != SL_JSON_NONE && f.stream != SL_JSON_TRUE &&
            f.stream != SL_JSON_FALSE && f.stream != SL_JSON_NULL) {
            sl_response_error(r, 400, "'stream' must be a boolean",
                              "invalid_request");
            return NULL;
        }
        k->stream = f.stream == SL_JSON_TRUE;
        k->client_usage = f.include_usage;
    } else if (f.input != SL_JSON_STRING &&
               !(f.input == SL_JSON_ARRAY && f.ninput > 0)) {
        sl_response_error(r, 400,
                          "'input' must be a string or a non-empty array",
                          "invalid_input");
        return NULL;
    }
    if (sl_call_reroute(k) != 0)
        return NULL;
    if (sl_arena_cleanup_add(r->arena, call_end, k) != 0) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return NULL;
    }
    return k;
}

static int64_t
now_ms(void)
{
    return (int64_t)(sl_now_us() / 1000u);
}

const char *
sl_call_url(sl_call_t *k)
{
    const sl_target_t *t = k->target;
    const sl_provider_t *p = t->provider;
    int stream = k->stream && k->kind == SL_CALL_CHAT;
    char *chat = t->chat_url, *sse = t->stream_url, *emb = t->embeddings_url;
    if (chat == NULL && (p->type == SL_PROVIDER_AZURE ||
                         p->type == SL_PROVIDER_GEMINI)) {
        /* A direct provider/model target: its URL is built now. */
        if (sl_target_urls(p, t->model, &chat, &sse, &emb) != 0)
            return NULL;
        sl_arena_cleanup_add(k->r->arena, free, chat);
        sl_arena_cleanup_add(k->r->arena, free, sse);
        sl_arena_cleanup_add(k->r->arena, free, emb);
    }
    if (k->kind == SL_CALL_EMBEDDINGS)
        return emb != NULL ? emb : p->embeddings_url;
    if (stream && sse != NULL)
        return sse;
    if (chat != NULL)
        return chat;
    return p->type == SL_PROVIDER_ANTHROPIC ? p->messages_url : p->chat_url;
}

void
sl_call_release(sl_call_t *k, int success)
{
    if (!k->slot)
        return;
    k->slot = 0;
    if (k->model != NULL)
        sl_balancer_release(k->model, k->target, success, k->probe, now_ms());
}

/* The request is over: a slot still held was not a failure. */
static void
call_end(void *arg)
{
    sl_call_t *k = arg;
    sl_call_release(k, 1);
    if (k->retry_timer != NULL)
        event_free(k->retry_timer);
}

/* Starts an attempt on the first available target from k->ichain on. */
static void
attempt(sl_call_t *k)
{
    sl_request_t *r = k->r;
    int64_t now = now_ms();
    for (; k->ichain < k->nchain; k->ichain++, k->tries_on_target = 0) {
        const sl_target_t *t = k->chain[k->ichain];
        if (k->model != NULL &&
            sl_balancer_acquire(k->model, t, now, &k->probe) != 0)
            continue; /* breaker open or at its concurrency cap */
        k->slot = 1;
        k->target = t;
        k->attempts++;
        r->provider = t->provider->name;
        r->target_model = t->model;
        r->attempts = k->attempts;
        if (k->held != NULL)
            evbuffer_drain(k->held, evbuffer_get_length(k->held));
        /* Adapters other than OpenAI's encode the request from the tree. */
        if (t->provider->type != SL_PROVIDER_OPENAI &&
            t->provider->type != SL_PROVIDER_AZURE && sl_call_json(k) == NULL)
            return;
        switch (t->provider->type) {
        case SL_PROVIDER_MOCK:
            sl_mock_start(k);
            break;
        case SL_PROVIDER_GEMINI:
            sl_gemini_start(k);
            break;
        case SL_PROVIDER_ANTHROPIC:
            sl_anthropic_start(k);
            break;
        case SL_PROVIDER_OPENAI:
        case SL_PROVIDER_AZURE:
        default:
            sl_openai_start(k);
            break;
        }
        return;
    }
    sl_response_error_with(
        r, 503,
        "no target of this model is available now (circuit breakers open "
        "or concurrency limits reached)",
        "no_target_available", "Retry-After: 1\r\n");
}

static void
on_retry_timer(evutil_socket_t fd, short what, void *arg)
{
    sl_call_t *k = arg;
    k->r->cancel = NULL;
    attempt(k);
}

static void
cancel_retry(sl_request_t *r)
{
    sl_call_t *k = r->op;
    if (k->retry_timer != NULL)
        evtimer_del(k->retry_timer);
}

/* Retry-After in seconds (the HTTP-date form is not used by providers). */
static long
retry_after_ms(const char *v)
{
    if (v == NULL || *v < '0' || *v > '9')
        return -1;
    char *end;
    double secs = strtod(v, &end);
    return secs > 3600 ? 3600000 : (long)(secs * 1000);
}

int
sl_call_retry(sl_call_t *k, int result, int status, const char *retry_after)
{
    sl_request_t *r = k->r;
    int retryable = result != 0 || status == 429 || status >= 500;
    if (!retryable) {
        sl_call_release(k, 1); /* the provider is fine; the call was not */
        return 0;
    }
    sl_call_release(k, 0);
    if (r->responded || r->client_gone)
        return 0;
    uint64_t now = sl_now_us();
    long wait = -1;
    if (k->model != NULL && k->tries_on_target < k->model->retries) {
        long base = k->model->retry_base_ms << k->tries_on_target;
        if (base > k->model->retry_max_ms || base <= 0)
            base = k->model->retry_max_ms;
        /* Full jitter over the upper half: spreads a herd of retries. */
        wait = base / 2 + (long)(sl_worker_random(r->w) % (uint32_t)(base / 2 + 1));
        long ra = retry_after_ms(retry_after);
        if (ra > wait)
            wait = ra;
        if (k->deadline != 0 && now + (uint64_t)wait * 1000u > k->deadline)
            wait = -1; /* no time left to wait here: try the next target */
    }
    if (wait >= 0) {
        k->tries_on_target++;
        k->r->error_code = NULL;
        if (k->retry_timer == NULL)
            k->retry_timer = evtimer_new(r->w->base, on_retry_timer, k);
        if (k->retry_timer == NULL)
            return 0;
        struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
        evtimer_add(k->retry_timer, &tv);
        r->op = k;
        r->cancel = cancel_retry;
        r->resume = NULL;
        return 1;
    }
    if (k->ichain + 1 >= k->nchain)
        return 0;
    if (k->deadline != 0 && now >= k->deadline)
        return 0;
    k->ichain++;
    k->tries_on_target = 0;
    attempt(k);
    return 1;
}

void
sl_call_attempt(sl_call_t *k)
{
    attempt(k);
}

void
sl_proxy_chat(sl_request_t *r)
{
    sl_call_t *k = call_new(r, SL_CALL_CHAT, call_wants_tree(r));
    if (k != NULL && sl_pipeline_request(r, k) == 0 &&
        sl_budget_admit(r, k) == 0 && sl_lua_request(r, k) == 0)
        attempt(k);
}

void
sl_proxy_subcall(sl_request_t *r)
{
    sl_call_t *k = call_new(r, SL_CALL_CHAT, call_wants_tree(r));
    if (k != NULL && sl_budget_admit(r, k) == 0)
        attempt(k);
}

void
sl_proxy_embeddings(sl_request_t *r)
{
    sl_call_t *k = call_new(r, SL_CALL_EMBEDDINGS, call_wants_tree(r));
    if (k != NULL && sl_pipeline_request(r, k) == 0 &&
        sl_budget_admit(r, k) == 0)
        attempt(k);
}
