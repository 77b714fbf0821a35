/* OpenAI-compatible providers (OpenAI, Ollama, vLLM, Groq, Mistral...):
 * the body goes through almost as the client sent it; a stream is relayed
 * event by event as it arrives. */
#include "../clock.h"
#include "../error.h"
#include "../requestlog.h"
#include "../worker.h"
#include "provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_SSE_MAX_EVENT (4u << 20)

static void
free_str(void *p)
{
    free(p);
}

static void
free_evbuffer(void *p)
{
    evbuffer_free(p);
}

static void
free_sse(void *p)
{
    sl_sse_free(p);
}

/* Rewrites what the provider must see differently from the client in the
 * tree: the model name, and a request for usage in streams so accounting
 * is exact. Returns 1 when the JSON changed, 0 when not, -2 when the
 * client has been answered (out of memory). */
static int
rewrite_tree(sl_call_t *k)
{
    int changed = 0;
    cJSON *json = sl_call_json(k);
    if (json == NULL)
        return -2;
    cJSON *model = cJSON_GetObjectItemCaseSensitive(json, "model");
    if (strcmp(model->valuestring, k->target->model) != 0) {
        cJSON_ReplaceItemInObjectCaseSensitive(
            json, "model", cJSON_CreateString(k->target->model));
        changed = 1;
    }
    if (k->stream && !k->client_usage) {
        cJSON *so = cJSON_GetObjectItemCaseSensitive(json, "stream_options");
        if (!cJSON_IsObject(so)) {
            cJSON_DeleteItemFromObjectCaseSensitive(json, "stream_options");
            so = cJSON_AddObjectToObject(json, "stream_options");
        }
        cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
        cJSON_AddTrueToObject(so, "include_usage");
        changed = 1;
    }
    return changed;
}

static const char usage_member[] =
    ",\"stream_options\":{\"include_usage\":true}";

/* The same rewrite made in the client's bytes, which stay as they are
 * around it: the model's text replaced, the stream_options member added
 * last (where cJSON adds it). Sets *body and *len; returns 0, 1 when the
 * tree must do it (the client sent stream_options of its own, or a
 * script or plugin replaced the body), -1 when out of memory. */
static int
rewrite_bytes(sl_call_t *k, const char **body, size_t *len)
{
    sl_request_t *r = k->r;
    const sl_chat_facts_t *f = &k->facts;
    if (k->scanned == NULL || k->scanned != r->body)
        return 1;
    int model = strcmp(r->model, k->target->model) != 0;
    int usage = k->stream && !k->client_usage;
    if (usage && f->stream_options != SL_JSON_NONE)
        return 1;
    if (!model && !usage)
        return 0;
    const char *tm = k->target->model;
    size_t tl = strlen(tm);
    size_t esc = model ? sl_json_escape(NULL, 0, 0, tm, tl) : 0;
    size_t cap = r->body_len + esc + 2 + sizeof(usage_member);
    char *out = sl_arena_alloc(r->arena, cap), *p = out;
    if (out == NULL)
        return -1;
    const char *b = r->body, *mid = b, *close = f->close;
    if (model) {
        size_t head = (size_t)(f->model_at - b);
        memcpy(p, b, head);
        p += head;
        *p++ = '"';
        sl_json_escape(p, esc + 1, 0, tm, tl);
        p += esc;
        *p++ = '"';
        mid = f->model_at + f->model_at_len;
    }
    memcpy(p, mid, (size_t)(close - mid));
    p += close - mid;
    if (usage) {
        memcpy(p, usage_member, sizeof(usage_member) - 1);
        p += sizeof(usage_member) - 1;
    }
    size_t tail = (size_t)(b + r->body_len - close);
    memcpy(p, close, tail);
    p += tail;
    *p = '\0';
    *body = out;
    *len = (size_t)(p - out);
    return 0;
}

/* What the provider gets: the client's bytes when nothing changes. 0, -1
 * when out of memory, -2 when the client has been answered. */
static int
upstream_body(sl_call_t *k, const char **body, size_t *len)
{
    sl_request_t *r = k->r;
    *body = r->body;
    *len = r->body_len;
    int rc = rewrite_bytes(k, body, len);
    if (rc <= 0)
        return rc;
    rc = rewrite_tree(k);
    if (rc <= 0)
        return rc;
    char *printed = cJSON_PrintUnformatted(k->json);
    if (printed == NULL ||
        sl_arena_cleanup_add(r->arena, free_str, printed) != 0) {
        free(printed);
        return -1;
    }
    *body = printed;
    *len = strlen(printed);
    return 0;
}

/* Finds a non-null "usage" object without reading the whole event: most
 * stream events carry none. */
static int
has_usage_object(const char *data, size_t len)
{
    const char *end = data + len, *p = data;
    while ((p = sl_json_find(p, (size_t)(end - p), "\"usage\"", 7)) !=
           NULL) {
        p += 7;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p < end && *p == ':') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' ||
                               *p == '\r'))
                p++;
            if (p < end && *p == '{')
                return 1;
        }
    }
    return 0;
}

static int
on_event(void *ud, const char *event, size_t event_len, const char *data,
         size_t len)
{
    sl_call_t *k = ud;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        k->done_seen = 1;
        k->want_pause |= sl_call_forward(k, data, len);
        return 0;
    }
    int usage_only = 0;
    if (has_usage_object(data, len) &&
        sl_call_take_answer(k, data, len, &usage_only) == 0 && usage_only &&
        !k->client_usage)
        return 0; /* we asked for it; a client that did not never sees it */
    k->want_pause |= sl_call_forward(k, data, len);
    return 0;
}

static int
on_data(void *ud, int status, const char *data, size_t len)
{
    sl_call_t *k = ud;
    sl_request_t *r = k->r;
    if (k->stream && status == 200 && !k->sse_on) {
        const char *ct = sl_upcall_content_type(k->up);
        k->sse_on = ct != NULL && strncmp(ct, "text/event-stream", 17) == 0;
    }
    if (k->sse_on) {
        /* The same cap as for whole answers bounds a stream's size. */
        k->stream_bytes += len;
        if (k->stream_bytes > r->cfg->limits.max_response_bytes)
            return 1;
        int rc = sl_sse_feed(&k->sse, data, len, on_event, k);
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

/* Upstream errors keep their meaning, but a provider's fault or its
 * refusal of the gateway's own credentials is never passed off as the
 * client's: those become 502. */
static int
client_status_for(int upstream)
{
    if (upstream == 401 || upstream == 403)
        return 502;
    if (upstream >= 400 && upstream < 500)
        return upstream;
    return 502;
}

/* The upstream's own error message, when it sent an OpenAI-shaped one. */
static const char *
upstream_message(sl_call_t *k, int *shaped)
{
    size_t n = evbuffer_get_length(k->body);
    *shaped = 0;
    if (n == 0)
        return NULL;
    cJSON *j = cJSON_ParseWithLength(
        (const char *)evbuffer_pullup(k->body, -1), n);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    const char *out = NULL;
    *shaped = cJSON_IsObject(e);
    if (cJSON_IsString(m))
        out = sl_arena_strndup(k->r->arena, m->valuestring,
                               strlen(m->valuestring));
    cJSON_Delete(j);
    return out;
}

static void
answer_upstream_error(sl_call_t *k, int status, const char *retry)
{
    sl_request_t *r = k->r;
    int out = client_status_for(status);
    char *extra = retry != NULL
                      ? sl_arena_printf(r->arena, "Retry-After: %s\r\n", retry)
                      : NULL;
    int shaped;
    const char *upmsg = upstream_message(k, &shaped);
    if (status < 500 && out == status && shaped) {
        /* A client error the provider explained: pass it on as it is. */
        r->error_code = "upstream_error";
        sl_response_send_buffer(r, out, "application/json", extra, k->body);
        return;
    }
    char *msg = sl_arena_printf(r->arena,
                                "provider '%s' answered with status %d%s%.300s",
                                k->target->provider->name, status,
                                upmsg ? ": " : "", upmsg ? upmsg : "");
    sl_response_error_with(r, out, msg ? msg : "upstream error",
                           status == 429 ? "upstream_rate_limited"
                                         : "upstream_error",
                           extra);
}

static void
on_done(void *ud, int result, int status, const char *why)
{
    sl_call_t *k = ud;
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
    if (r->streaming) {
        if (k->done_seen) { /* what follows [DONE] cannot matter */
            sl_response_stream_end(r, 1);
            return;
        }
        sl_call_stream_cut(k, result, why,
                           "upstream stream ended before it was complete");
        return;
    }
    if (result == 0 && status >= 200 && status <= 299 && k->sse_on) {
        /* A stream that ended before its first token: as good as failed. */
        result = SL_EUPSTREAM;
        why = k->done_seen ? "the upstream stream was empty"
                           : "the upstream stream ended before any content";
    }
    if (sl_call_transport_failed(k, result, why))
        return;
    if (status < 200 || status > 299) {
        if (sl_call_retry(k, 0, status, retry))
            return;
        answer_upstream_error(k, status, retry);
        return;
    }
    size_t n = evbuffer_get_length(k->body);
    if (n == 0 ||
        sl_call_take_answer(k, (const char *)evbuffer_pullup(k->body, -1), n,
                            NULL) != 0) {
        sl_response_error(r, 502,
                          "the upstream sent a body that is not JSON",
                          "upstream_bad_response");
        return;
    }
    sl_response_send_buffer(r, 200, "application/json",
                            sl_call_success_headers(k), k->body);
}

static const sl_upcall_ops_t openai_ops = {on_data, on_done};

static void
cancel(sl_request_t *r)
{
    sl_call_t *k = r->op;
    if (k->up != NULL) {
        r->upstream_us += sl_now_us() - r->t_upstream;
        sl_upcall_cancel(k->up);
        k->up = NULL;
    }
}

static void
resume(sl_request_t *r)
{
    sl_call_t *k = r->op;
    if (k->up != NULL)
        sl_upcall_pause(k->up, 0);
}

void
sl_openai_start(sl_call_t *k)
{
    sl_request_t *r = k->r;
    const sl_provider_t *p = k->target->provider;
    const sl_snapshot_t *snap = r->snap;
    size_t idx = (size_t)(p - r->cfg->providers);
    const char *body;
    size_t len;
    int rc = upstream_body(k, &body, &len);
    if (rc != 0) {
        if (rc == -1)
            sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    /* Per-attempt state: a retry starts clean. */
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
            sl_response_error(r, 503, "out of memory", "server_busy");
            return;
        }
    }
    if (k->stream) {
        if (k->sse_ready)
            sl_sse_free(&k->sse);
        sl_sse_init(&k->sse, SL_SSE_MAX_EVENT);
        if (!k->sse_ready &&
            sl_arena_cleanup_add(r->arena, free_sse, &k->sse) != 0) {
            sl_sse_free(&k->sse);
            sl_response_error(r, 503, "out of memory", "server_busy");
            return;
        }
        k->sse_ready = 1;
    }
    const char *url = sl_call_url(k);
    if (url == NULL) {
        sl_response_error(r, 400,
                          "the model name may hold only letters, digits, "
                          "'.', '-', '_' and ':' for this provider",
                          "invalid_model");
        return;
    }
    sl_upcall_params_t params = {
        .url = url,
        .headers = sl_reqlog_upstream(
            r,
            k->stream ? snap->provider_stream_headers[idx]
                      : snap->provider_headers[idx],
            body, len),
        .body = body,
        .body_len = len,
        .connect_timeout_ms = p->connect_timeout_ms,
        .first_byte_timeout_ms = p->first_byte_timeout_ms,
        .timeout_ms = p->timeout_ms,
    };
    r->t_upstream = sl_now_us();
    k->up = sl_upcall_start(r->w->upstream, &params, &openai_ops, k);
    if (k->up == NULL) {
        sl_response_error(r, 503, "cannot start the upstream request",
                          "server_busy");
        return;
    }
    r->op = k;
    r->cancel = cancel;
    r->resume = resume;
}
