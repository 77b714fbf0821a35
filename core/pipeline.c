/* Runs a route's plugin hooks: on_request in route order before the
 * upstream call, on_response / on_chunk in reverse order on the way out,
 * on_log in reverse order when the request ends. A RESPOND answers at once
 * and skips the later hooks of that phase and the later phases; an ERROR
 * fails the request closed (500) unless the instance fails open. What a
 * hook changed (messages, the answer, an event) is re-encoded once, after
 * the last hook of the phase. */
#include "pipeline.h"
#include "error.h"
#include "providers/provider.h"
#include "snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const phase_names[] = {"create", "on_request", "on_response",
                                          "on_chunk", "on_log"};

const char *
sl_pipeline_phase_name(sluice_phase_t phase) {
    return (unsigned)phase < sizeof(phase_names) / sizeof(phase_names[0])
               ? phase_names[phase]
               : "?";
}

/* Notes which hook stopped the request (the request log shows it). */
static void
note_verdict(sl_pipe_t *p, const sl_plugin_inst_t *in, sluice_phase_t phase,
             const char *what) {
    p->verdict_plugin = in->name;
    p->verdict = what;
    p->verdict_phase = phase;
}

static const sl_plugin_chain_t *
chain_of(const sl_request_t *r) {
    if (r->snap == NULL || r->route == NULL || r->cfg == NULL)
        return NULL;
    return sl_plugins_route(r->snap->plugins,
                            (size_t)(r->route - r->cfg->routes));
}

/* Calls hook of the plugin at chain position pos. */
static sluice_verdict_t
call(sl_pipe_t *p, size_t pos, sluice_phase_t phase, sluice_hook_fn hook) {
    const sl_plugin_inst_t *in = p->chain->items[pos];
    struct sluice_req req = {.pipe = p, .inst = in, .pos = pos, .phase = phase};
    /* A RESPOND answers with what this hook set, never an earlier one's. */
    p->answer = NULL;
    p->answer_stream = 0;
    p->answer_replay = 0;
    sluice_verdict_t v = hook(in->instance, &req);
    if (v != SLUICE_CONTINUE && v != SLUICE_RESPOND)
        v = SLUICE_ERROR; /* anything else is a plugin bug: count it so */
    return v;
}

static void
log_failure(const sl_plugin_inst_t *in, sluice_phase_t phase, const char *why) {
    fprintf(stderr, "sluice: plugin %s: %s %s (%s)\n", in->name,
            phase_names[phase], why,
            in->fail_open ? "failing open: the request goes on"
                          : "failing closed");
}

/* The OpenAI-shaped error a fail-closed hook leaves the client; arena. */
static const char *
failure_json(sl_request_t *r, const sl_plugin_inst_t *in, sluice_phase_t phase,
             size_t *len) {
    char msg[200], *body;
    snprintf(msg, sizeof(msg), "plugin '%s' failed in %s", in->name,
             phase_names[phase]);
    size_t n = sl_error_json(NULL, 0, msg, "server_error", "plugin_error");
    body = sl_arena_alloc(r->arena, n + 1);
    if (body == NULL)
        return NULL;
    sl_error_json(body, n + 1, msg, "server_error", "plugin_error");
    *len = n;
    return body;
}

/* What a verdict other than CONTINUE means: 1 when the phase must stop
 * (an answer is ready in p->answer*), 0 when the request goes on. */
static int
verdict(sl_pipe_t *p, size_t pos, sluice_phase_t phase, sluice_verdict_t v) {
    const sl_plugin_inst_t *in = p->chain->items[pos];
    if (v == SLUICE_RESPOND && p->answer != NULL &&
        (phase != SLUICE_PHASE_CHUNK || !p->answer_stream)) {
        note_verdict(p, in, phase, "respond");
        return 1;
    }
    log_failure(in, phase,
                v == SLUICE_RESPOND ? "returned RESPOND without respond()"
                                    : "returned ERROR");
    if (in->fail_open)
        return 0;
    note_verdict(p, in, phase, "error");
    p->r->error_code = "plugin_error";
    p->answer_status = 500;
    p->answer = (char *)failure_json(p->r, in, phase, &p->answer_len);
    if (p->answer == NULL) {
        p->answer = "{}";
        p->answer_len = 2;
    }
    return 1;
}

static void
run_log(void *arg) {
    sl_pipe_t *p = arg;
    p->stage = SL_PIPE_DONE;
    if (p->chain->hooks & SL_HOOK_LOG) {
        for (size_t i = p->chain->n; i-- > 0;) {
            const sl_plugin_inst_t *in = p->chain->items[i];
            if (in->desc.on_log != NULL &&
                call(p, i, SLUICE_PHASE_LOG, in->desc.on_log) == SLUICE_ERROR)
                fprintf(stderr, "sluice: plugin %s: on_log returned ERROR\n",
                        in->name);
        }
    }
    cJSON_Delete(p->resp_json);
    cJSON_Delete(p->chunk_json);
    free(p->chunk_out);
}

/* Re-encodes the body the upstream gets after a message was rewritten:
 * adapters that send the client's bytes as they are send these. */
static int
reencode(sl_pipe_t *p) {
    char *s = cJSON_PrintUnformatted(p->k->json);
    if (s == NULL)
        return SL_ENOMEM;
    size_t n = strlen(s);
    char *body = sl_arena_strndup(p->r->arena, s, n);
    free(s);
    if (body == NULL)
        return SL_ENOMEM;
    p->r->body = body;
    p->r->body_len = n;
    return 0;
}

/* Sends a respond_stream() answer: its events, as an upstream stream goes
 * out, through the on_chunk hooks of the plugins before the one that
 * answered. */
static void
send_stream(sl_request_t *r, sl_pipe_t *p) {
    sl_response_stream_start(r, p->answer_status, NULL);
    p->stage = SL_PIPE_UPSTREAM;
    const char *s = p->answer, *end = p->answer + p->answer_len;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *eol = nl != NULL ? nl : end;
        size_t n = (size_t)(eol - s);
        if (n >= 5 && memcmp(s, "data:", 5) == 0) {
            const char *d = s + 5;
            if (d < eol && *d == ' ')
                d++;
            size_t dl = (size_t)(eol - d);
            if (sl_pipeline_chunk(r, &d, &dl) == 0)
                sl_response_stream_event(r, NULL, 0, d, dl);
        }
        s = eol + 1;
    }
    p->stage = SL_PIPE_DONE;
    sl_response_stream_end(r, !p->stream_failed);
}

int
sl_pipeline_request(sl_request_t *r, sl_call_t *k) {
    const sl_plugin_chain_t *ch = chain_of(r);
    if (ch == NULL)
        return 0;
    sl_pipe_t *p = sl_arena_calloc(r->arena, sizeof(*p));
    void **state = sl_arena_calloc(r->arena, ch->n * sizeof(void *));
    if (p == NULL || state == NULL ||
        sl_arena_cleanup_add(r->arena, run_log, p) != 0) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return 1;
    }
    p->r = r;
    p->k = k;
    p->chain = ch;
    p->state = state;
    p->upto = ch->n;
    p->stage = SL_PIPE_REQUEST;
    r->pipe = p;
    for (size_t i = 0; (ch->hooks & SL_HOOK_REQUEST) && i < ch->n; i++) {
        const sl_plugin_inst_t *in = ch->items[i];
        if (in->desc.on_request == NULL)
            continue;
        sluice_verdict_t v =
            call(p, i, SLUICE_PHASE_REQUEST, in->desc.on_request);
        if (v != SLUICE_CONTINUE && verdict(p, i, SLUICE_PHASE_REQUEST, v)) {
            p->stage = SL_PIPE_DONE;
            p->upto = i; /* a replayed answer: the plugins before i */
            if (p->answer_stream)
                send_stream(r, p);
            else if (p->answer_replay) {
                p->stage = SL_PIPE_UPSTREAM;
                sl_response_send(r, p->answer_status, "application/json",
                                 NULL, p->answer, p->answer_len);
            } else
                sl_response_send(r, p->answer_status, "application/json",
                                 NULL, p->answer, p->answer_len);
            return 1;
        }
    }
    if (p->msgs_dirty && reencode(p) != 0) {
        p->stage = SL_PIPE_DONE;
        sl_response_error(r, 503, "out of memory", "server_busy");
        return 1;
    }
    p->stage = SL_PIPE_UPSTREAM;
    return 0;
}

void
sl_pipeline_response(sl_request_t *r, int *status, const char **content_type,
                     const char **body, size_t *len) {
    sl_pipe_t *p = r->pipe;
    if (p->stage != SL_PIPE_UPSTREAM || (p->k != NULL && p->k->stream))
        return;
    p->stage = SL_PIPE_RESPONSE;
    if (!(p->chain->hooks & SL_HOOK_RESPONSE))
        return;
    p->resp_status = *status;
    p->resp_body = *body;
    p->resp_len = *len;
    for (size_t i = p->upto; i-- > 0;) {
        const sl_plugin_inst_t *in = p->chain->items[i];
        if (in->desc.on_response == NULL)
            continue;
        sluice_verdict_t v =
            call(p, i, SLUICE_PHASE_RESPONSE, in->desc.on_response);
        if (v != SLUICE_CONTINUE && verdict(p, i, SLUICE_PHASE_RESPONSE, v)) {
            *status = p->answer_status;
            *content_type = "application/json";
            *body = p->answer;
            *len = p->answer_len;
            return;
        }
    }
    if (p->resp_dirty) {
        char *s = cJSON_PrintUnformatted(p->resp_json);
        char *copy = s ? sl_arena_strndup(r->arena, s, strlen(s)) : NULL;
        free(s);
        if (copy != NULL) {
            *body = copy;
            *len = strlen(copy);
        }
    }
}

int
sl_pipeline_response_buffer(sl_request_t *r, int status,
                            const char *content_type, const char *extra,
                            struct evbuffer *body) {
    sl_pipe_t *p = r->pipe;
    if (p->stage != SL_PIPE_UPSTREAM || (p->k != NULL && p->k->stream) ||
        !(p->chain->hooks & SL_HOOK_RESPONSE))
        return 0;
    size_t n = evbuffer_get_length(body);
    const char *b = n > 0 ? (const char *)evbuffer_pullup(body, -1) : "";
    sl_response_send(r, status, content_type, extra, b ? b : "", b ? n : 0);
    return 1;
}

int
sl_pipeline_chunk(sl_request_t *r, const char **data, size_t *len) {
    sl_pipe_t *p = r->pipe;
    if (p->stream_failed)
        return 1;
    if (!(p->chain->hooks & SL_HOOK_CHUNK) || p->stage != SL_PIPE_UPSTREAM ||
        (*len == 6 && memcmp(*data, "[DONE]", 6) == 0))
        return 0;
    p->chunk = *data;
    p->chunk_len = *len;
    p->chunk_parsed = p->chunk_dirty = 0;
    for (size_t i = p->upto; i-- > 0;) {
        const sl_plugin_inst_t *in = p->chain->items[i];
        if (in->desc.on_chunk == NULL)
            continue;
        sluice_verdict_t v = call(p, i, SLUICE_PHASE_CHUNK, in->desc.on_chunk);
        if (v != SLUICE_CONTINUE && verdict(p, i, SLUICE_PHASE_CHUNK, v)) {
            /* A stream cannot change its status now: this event becomes
             * the error, and nothing after it (no [DONE]) is sent. */
            p->stream_failed = 1;
            *data = p->answer;
            *len = p->answer_len;
            p->chunk_dirty = 0;
            break;
        }
    }
    if (p->chunk_dirty) {
        char *s = cJSON_PrintUnformatted(p->chunk_json);
        if (s != NULL) {
            free(p->chunk_out);
            p->chunk_out = s;
            *data = s;
            *len = strlen(s);
        }
    }
    cJSON_Delete(p->chunk_json);
    p->chunk_json = NULL;
    p->chunk_parsed = 0;
    return 0;
}
