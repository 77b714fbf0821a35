/* Which handler answers a request, the error bodies of both provider shapes,
 * the directives every endpoint shares, and the small /mock and /v1/models
 * endpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mock.h"

void
mock_plan_init(mock_plan_t *p)
{
    memset(p, 0, sizeof(*p));
    p->status = 200;
    p->content_type = "application/json";
    p->retry_after = -1;
    p->close_after = -1;
}

void
mock_plan_free(mock_plan_t *p)
{
    mock_buf_free(&p->body);
    mock_stream_free(p->stream);
    p->stream = NULL;
}

const char *
mock_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return status < 400 ? "OK" : "Error";
    }
}

static const char *
openai_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *
openai_code(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "invalid_api_key";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 429: return "rate_limit_exceeded";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "mock_error";
    }
}

static const char *
anthropic_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static void
reset_body(mock_plan_t *p, int status)
{
    p->body.len = 0;
    mock_stream_free(p->stream);
    p->stream = NULL;
    p->status = status;
    p->content_type = "application/json";
}

void
mock_error_openai(mock_plan_t *p, int status, const char *msg)
{
    reset_body(p, status);
    mock_buf_adds(&p->body, "{\"error\":{\"message\":");
    mock_buf_json_str(&p->body, msg, strlen(msg));
    mock_buf_printf(&p->body,
                    ",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}",
                    openai_type(status), openai_code(status));
}

void
mock_error_anthropic(mock_plan_t *p, int status, const char *msg)
{
    reset_body(p, status);
    mock_buf_printf(&p->body,
                    "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
                    "\"message\":",
                    anthropic_type(status));
    mock_buf_json_str(&p->body, msg, strlen(msg));
    mock_buf_adds(&p->body, "}}");
}

bool
mock_plan_early(mock_plan_t *p, const mock_directives_t *d, bool anthropic)
{
    p->retry_after = d->retry_after;
    if (d->hang) {
        p->hang = true;
        return true;
    }
    if (d->status && d->status != 200) {
        char msg[64];
        snprintf(msg, sizeof(msg), "mock error: status %d", d->status);
        if (anthropic)
            mock_error_anthropic(p, d->status, msg);
        else
            mock_error_openai(p, d->status, msg);
        return true;
    }
    if (d->garbage) {
        reset_body(p, 200);
        mock_buf_adds(&p->body, "<<mock garbage: this is not JSON>> {\"");
        return true;
    }
    return false;
}

void
mock_plan_late(mock_plan_t *p, const mock_directives_t *d)
{
    if (p->hang)
        return;
    p->wait_ms = d->first_byte_ms;
    if (p->stream)
        p->gap_ms = d->gap_ms;
    else
        p->wait_ms += d->delay_ms;
    p->close_after = d->close_after;
    p->frame = d->frame;
}

static void
handle_models(const mock_req_t *r, mock_plan_t *p)
{
    mock_directives_t d;
    mock_directives_init(&d);
    mock_directives_from_headers(&d, r);
    if (!mock_plan_early(p, &d, false))
        mock_buf_adds(&p->body,
                      "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\","
                      "\"object\":\"model\",\"created\":1700000000,"
                      "\"owned_by\":\"sluice-mock\"}]}");
    mock_plan_late(p, &d);
}

static void
handle_stats(mock_plan_t *p)
{
    mock_buf_printf(&p->body,
                    "{\"connections_accepted\":%lu,\"requests\":%lu,"
                    "\"streams_started\":%lu,\"streams_completed\":%lu,"
                    "\"streams_aborted\":%lu,\"streams_cut\":%lu,"
                    "\"open_connections\":%ld}",
                    atomic_load(&mock_stats.connections_accepted),
                    atomic_load(&mock_stats.requests),
                    atomic_load(&mock_stats.streams_started),
                    atomic_load(&mock_stats.streams_completed),
                    atomic_load(&mock_stats.streams_aborted),
                    atomic_load(&mock_stats.streams_cut),
                    atomic_load(&mock_stats.open_connections));
}

static bool
method_is(const mock_req_t *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

/* Azure OpenAI: /openai/deployments/NAME/(chat/completions|embeddings)
 * with an api-version query; answered like the OpenAI endpoints. Returns
 * the suffix after the deployment name, or NULL. */
static const char *
azure_suffix(const mock_req_t *r)
{
    static const char pre[] = "/openai/deployments/";
    size_t n = sizeof(pre) - 1;
    if (r->path_len <= n || strncmp(r->target, pre, n) != 0 ||
        strstr(r->target + r->path_len, "api-version=") == NULL)
        return NULL;
    const char *slash = memchr(r->target + n, '/', r->path_len - n);
    return slash;
}

static bool
azure_is(const mock_req_t *r, const char *suffix)
{
    const char *s = azure_suffix(r);
    size_t n = strlen(suffix);
    return s != NULL && s + n == r->target + r->path_len &&
           strncmp(s, suffix, n) == 0;
}

void
mock_route(const mock_req_t *r, mock_plan_t *p)
{
    bool is_mock = r->path_len >= 6 && strncmp(r->target, "/mock/", 6) == 0;
    if (!is_mock)
        atomic_fetch_add_explicit(&mock_stats.requests, 1,
                                  memory_order_relaxed);
    bool gemini = r->path_len > 15 &&
                  strncmp(r->target, "/v1beta/models/", 15) == 0;
    if ((r->path_len >= 4 && strncmp(r->target, "/v1/", 4) == 0) ||
        azure_suffix(r) != NULL || gemini)
        mock_journal_record(r);

    if ((mock_req_path_is(r, "/v1/chat/completions") ||
         azure_is(r, "/chat/completions")) &&
        method_is(r, "POST"))
        mock_handle_chat(r, p);
    else if (azure_is(r, "/embeddings") && method_is(r, "POST"))
        mock_handle_embeddings(r, p);
    else if (mock_req_path_is(r, "/v1/messages") && method_is(r, "POST"))
        mock_handle_messages(r, p);
    else if (gemini && method_is(r, "POST"))
        mock_handle_gemini(r, p);
    else if (mock_req_path_is(r, "/v1/embeddings") && method_is(r, "POST"))
        mock_handle_embeddings(r, p);
    else if (mock_req_path_is(r, "/v1/models") && method_is(r, "GET"))
        handle_models(r, p);
    else if (mock_req_path_is(r, "/mock/stats") && method_is(r, "GET"))
        handle_stats(p);
    else if (mock_req_path_is(r, "/mock/requests") && method_is(r, "GET")) {
        char *json = mock_journal_json();
        mock_buf_adds(&p->body, json);
        free(json);
    } else if (mock_req_path_is(r, "/mock/requests") &&
               method_is(r, "DELETE")) {
        mock_journal_clear();
        mock_buf_adds(&p->body, "{\"ok\":true}");
    } else {
        char msg[160];
        snprintf(msg, sizeof(msg), "no mock endpoint for %s %.*s", r->method,
                 (int)(r->path_len > 100 ? 100 : r->path_len), r->target);
        mock_error_openai(p, 404, msg);
    }
}
