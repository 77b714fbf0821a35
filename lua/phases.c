/* The script's phases in a request's life: on_request before the upstream
 * (it may wait, answer, or change the request and its model), on_response
 * on a whole answer (it may wait, change it or replace it), on_chunk on
 * each stream event (it may not wait; it changes, drops or adds text).
 * Whatever way a phase ends, the request goes on or is answered exactly
 * once, and nothing here touches the request after answering it: an
 * answer can end the request and free its arena, this state included. */
#include "error.h"
#include "lua_int.h"
#include "providers/provider.h"
#include "snapshot.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sl_lua_vm_t *
vm_for(sl_lua_set_t *set, const sl_worker_t *w) {
    if (w->id < 0 || w->id >= set->nslots)
        return NULL;
    if (set->vms[w->id] == NULL)
        set->vms[w->id] = sl_lua_vm_new(set); /* this worker's own */
    return set->vms[w->id];
}

static const char *
kill_text(sl_lua_kill_t k) {
    switch (k) {
    case SL_LUA_KILL_INSTRUCTIONS: return ": instruction limit exceeded";
    case SL_LUA_KILL_TIME: return ": time limit exceeded";
    case SL_LUA_KILL_MEMORY: return ": memory limit exceeded";
    default: return "";
    }
}

/* The client's 500: it names the route and what went wrong, not the
 * script's insides (the log line has those). */
static void
answer_failure(sl_lua_req_t *lr, const char *phase, sl_lua_kill_t killed,
               const char *why) {
    sl_request_t *r = lr->r;
    sl_lua_log(lr->script, "error", "%s failed: %s", phase, why);
    char *msg =
        sl_arena_printf(r->arena, "the Lua script of route '%s' failed in %s%s",
                        lr->script->route->path, phase, kill_text(killed));
    lr->stage = SL_LUA_STAGE_DONE;
    lr->passing = 1;
    r->error_code = "script_error";
    sl_response_error(r, 500, msg ? msg : "Lua script failed", "script_error");
}

static void
answer_respond(sl_lua_req_t *lr) {
    lr->stage = SL_LUA_STAGE_DONE;
    lr->passing = 1;
    sl_response_send(lr->r, lr->resp_status, lr->resp_type, lr->resp_headers,
                     lr->resp_body, lr->resp_len);
}

static void
lr_cleanup(void *arg) {
    sl_lua_req_t *lr = arg;
    sl_lua_inv_cancel(&lr->inv);
    sl_lua_ctx_release(lr);
    free(lr->chunk_out);
    free(lr->last_chunk);
    if (lr->kill != NULL)
        event_free(lr->kill);
}

/* The client went away while a phase waited. */
static void
lua_cancel(sl_request_t *r) {
    sl_lua_req_t *lr = r->op;
    sl_lua_inv_cancel(&lr->inv);
    lr->stage = SL_LUA_STAGE_DONE;
}

static void
wait_on(sl_lua_req_t *lr, void (*done)(sl_lua_inv_t *, sl_lua_result_t)) {
    sl_request_t *r = lr->r;
    lr->inv.done = done;
    r->op = lr;
    r->cancel = lua_cancel;
    r->resume = NULL;
}

static void
waited(sl_lua_req_t *lr) {
    sl_request_t *r = lr->r;
    r->op = NULL;
    r->cancel = NULL;
}

/* ---- on_request ---- */

static int
bad_request(sl_lua_req_t *lr, const char *why) {
    char *msg = sl_arena_printf(lr->r->arena, "ctx.request: %s", why);
    answer_failure(lr, "on_request", SL_LUA_KILL_NONE, msg ? msg : why);
    return -1;
}

/* Takes what the script left in ctx.request as the request. 0, or -1
 * when it has answered (a request the upstream cannot take, a model that
 * is not served). */
static int
apply_request(sl_lua_req_t *lr) {
    sl_request_t *r = lr->r;
    sl_call_t *k = lr->k;
    char err[200];
    int failed, is_text;
    size_t len;
    cJSON *j = NULL;
    char *text = sl_lua_ctx_take(lr, "request", &len, &is_text, err,
                                 sizeof(err), &failed, &j);
    if (failed)
        return bad_request(lr, err);
    if (text == NULL && lr->prompt_dirty) {
        /* Only ctx.prompt changed: the tree is the request already. */
        char *s = cJSON_PrintUnformatted(k->json);
        r->body_len = s ? strlen(s) : 0;
        r->body = s ? sl_arena_strndup(r->arena, s, r->body_len) : NULL;
        cJSON_free(s);
        return r->body != NULL ? 0 : bad_request(lr, "out of memory");
    }
    if (text == NULL)
        return 0;
    if (is_text || !cJSON_IsObject(j)) {
        free(text);
        cJSON_Delete(j);
        return bad_request(lr, "must be a table");
    }
    if (sl_arena_cleanup_add(r->arena, free, text) != 0) {
        free(text);
        cJSON_Delete(j);
        return bad_request(lr, "out of memory");
    }
    if (sl_arena_cleanup_add(r->arena, (sl_cleanup_fn)cJSON_Delete, j) != 0) {
        cJSON_Delete(j);
        return bad_request(lr, "out of memory");
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(j, "stream");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
        return bad_request(lr, "'model' must be a non-empty string");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return bad_request(lr, "'messages' must be a non-empty array");
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "role")))
            return bad_request(lr, "every message needs a string 'role'");
    }
    if (stream != NULL && !cJSON_IsBool(stream) && !cJSON_IsNull(stream))
        return bad_request(lr, "'stream' must be a boolean");
    r->body = text;
    r->body_len = len;
    k->json = j;
    k->stream = cJSON_IsTrue(stream);
    k->client_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "stream_options"),
        "include_usage"));
    if (strcmp(model->valuestring, r->model) != 0) {
        r->model = sl_arena_strndup(r->arena, model->valuestring,
                                    strlen(model->valuestring));
        if (r->model == NULL)
            return bad_request(lr, "out of memory");
        if (sl_call_reroute(k) != 0)
            return -1;
    }
    return 0;
}

/* 0 when the request goes on to the upstream, 1 when it was answered. */
static int
request_over(sl_lua_req_t *lr, sl_lua_result_t res) {
    sl_lua_inv_t *inv = &lr->inv;
    if (res == SL_LUA_ERROR) {
        sl_lua_inv_end(inv);
        answer_failure(lr, "on_request", inv->killed, inv->error);
        return 1;
    }
    sl_lua_inv_end(inv);
    sl_lua_ctx_save_vars(lr);
    if (res == SL_LUA_RESPOND) {
        answer_respond(lr);
        return 1;
    }
    if (apply_request(lr) != 0)
        return 1;
    lr->stage = SL_LUA_STAGE_UPSTREAM;
    return 0;
}

static void
request_resumed(sl_lua_inv_t *inv, sl_lua_result_t res) {
    sl_lua_req_t *lr = inv->lr;
    sl_call_t *k = lr->k;
    waited(lr);
    if (request_over(lr, res) == 0)
        sl_call_attempt(k);
}

int
sl_lua_request(sl_request_t *r, struct sl_call *k) {
    sl_lua_set_t *set = r->snap != NULL ? r->snap->lua : NULL;
    if (set == NULL || r->route == NULL)
        return 0;
    size_t idx = (size_t)(r->route - r->cfg->routes);
    if (idx >= set->nroutes || set->scripts[idx].route == NULL)
        return 0;
    sl_lua_vm_t *vm = vm_for(set, r->w);
    if (vm == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return 1;
    }
    const sl_lua_mod_t *mod = &vm->mods[idx];
    const sl_lua_script_t *s = &set->scripts[idx];
    if (mod->loaded != 1) {
        char *msg = sl_arena_printf(r->arena,
                                    "the Lua script of route '%s' did not load",
                                    s->route->path);
        r->error_code = "script_error";
        sl_response_error(r, 500, msg ? msg : "Lua script did not load",
                          "script_error");
        return 1;
    }
    if (mod->on_request == LUA_NOREF && mod->on_response == LUA_NOREF &&
        mod->on_chunk == LUA_NOREF)
        return 0;
    sl_lua_req_t *lr = sl_arena_calloc(r->arena, sizeof(*lr));
    if (lr == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return 1;
    }
    lr->r = r;
    lr->k = k;
    lr->vm = vm;
    lr->script = s;
    lr->mod = mod;
    lr->ctx = LUA_NOREF;
    lr->inv.co_ref = LUA_NOREF;
    if (sl_arena_cleanup_add(r->arena, lr_cleanup, lr) != 0 ||
        sl_lua_ctx_new(lr) != 0) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return 1;
    }
    r->lua = lr;
    if (mod->on_request == LUA_NOREF) {
        lr->stage = SL_LUA_STAGE_UPSTREAM;
        return 0;
    }
    lua_State *co = sl_lua_inv_begin(&lr->inv, vm, lr, SL_LUA_PHASE_REQUEST, s);
    lua_rawgeti(co, LUA_REGISTRYINDEX, mod->on_request);
    sl_lua_ctx_push(lr, co);
    sl_lua_result_t res = sl_lua_inv_run(&lr->inv, 1);
    if (res == SL_LUA_WAIT) {
        wait_on(lr, request_resumed);
        return 1;
    }
    return request_over(lr, res);
}

/* ---- on_response ---- */

static void
response_over(sl_lua_req_t *lr, sl_lua_result_t res) {
    sl_lua_inv_t *inv = &lr->inv;
    sl_request_t *r = lr->r;
    if (res == SL_LUA_ERROR) {
        sl_lua_inv_end(inv);
        answer_failure(lr, "on_response", inv->killed, inv->error);
        return;
    }
    sl_lua_inv_end(inv);
    sl_lua_ctx_save_vars(lr);
    if (res == SL_LUA_RESPOND) {
        answer_respond(lr);
        return;
    }
    char err[200];
    int failed, is_text;
    size_t len = lr->ans_len;
    const char *body = lr->ans_body, *type = lr->ans_type;
    char *text = sl_lua_ctx_take(lr, "response", &len, &is_text, err,
                                 sizeof(err), &failed, NULL);
    if (failed) {
        char *msg = sl_arena_printf(r->arena, "ctx.response: %s", err);
        answer_failure(lr, "on_response", SL_LUA_KILL_NONE, msg ? msg : err);
        return;
    }
    if (text != NULL) {
        if (sl_arena_cleanup_add(r->arena, free, text) != 0) {
            free(text);
            answer_failure(lr, "on_response", SL_LUA_KILL_NONE,
                           "out of memory");
            return;
        }
        body = text;
        type = "application/json";
        if (is_text && (len == 0 || (text[0] != '{' && text[0] != '[')))
            type = "text/plain; charset=utf-8";
    } else {
        len = lr->ans_len;
    }
    lr->stage = SL_LUA_STAGE_DONE;
    lr->passing = 1;
    sl_response_send(r, lr->ans_status, type, lr->ans_extra, body, len);
}

static void
response_resumed(sl_lua_inv_t *inv, sl_lua_result_t res) {
    sl_lua_req_t *lr = inv->lr;
    waited(lr);
    response_over(lr, res);
}

/* Copies what sl_lua_response borrowed: the caller's buffers do not
 * outlive its call, and on_response now waits. */
static int
own_answer(sl_lua_req_t *lr) {
    sl_arena_t *a = lr->r->arena;
    if (!lr->ans_owned) {
        char *b = sl_arena_alloc(a, lr->ans_len + 1);
        if (b == NULL)
            return -1;
        memcpy(b, lr->ans_body, lr->ans_len);
        b[lr->ans_len] = '\0';
        lr->ans_body = b;
    }
    if (lr->ans_type != NULL &&
        (lr->ans_type =
             sl_arena_strndup(a, lr->ans_type, strlen(lr->ans_type))) == NULL)
        return -1;
    if (lr->ans_extra != NULL &&
        (lr->ans_extra =
             sl_arena_strndup(a, lr->ans_extra, strlen(lr->ans_extra))) == NULL)
        return -1;
    lr->ans_owned = 1;
    return 0;
}

int
sl_lua_response(sl_request_t *r, int status, const char *content_type,
                const char *extra, const char *body, size_t len) {
    sl_lua_req_t *lr = r->lua;
    if (lr->passing || lr->stage != SL_LUA_STAGE_UPSTREAM ||
        lr->mod->on_response == LUA_NOREF)
        return 0;
    lr->stage = SL_LUA_STAGE_RESPONSE;
    lr->ans_status = status;
    /* Borrowed while on_response runs without waiting (the common case);
     * kept only if it waits (own_answer). */
    lr->ans_type = content_type;
    lr->ans_extra = extra;
    lr->ans_body = body;
    lr->ans_len = len;
    lr->ans_owned = 0;
    lr->ans_span = 0;
    lua_State *co = sl_lua_inv_begin(&lr->inv, lr->vm, lr,
                                     SL_LUA_PHASE_RESPONSE, lr->script);
    lua_rawgeti(co, LUA_REGISTRYINDEX, lr->mod->on_response);
    sl_lua_ctx_push(lr, co);
    sl_lua_result_t res = sl_lua_inv_run(&lr->inv, 1);
    if (res == SL_LUA_WAIT) {
        if (own_answer(lr) != 0) {
            sl_lua_inv_cancel(&lr->inv);
            lr->stage = SL_LUA_STAGE_DONE;
            lr->passing = 1;
            sl_response_error(r, 503, "out of memory", "server_busy");
            return 1;
        }
        wait_on(lr, response_resumed);
    } else {
        response_over(lr, res);
    }
    return 1;
}

/* ---- on_chunk ---- */

/* Ends a stream whose on_chunk failed, from the loop: not from inside the
 * provider's own callback, which would touch the request afterwards. */
static void
on_kill(evutil_socket_t fd, short what, void *arg) {
    sl_lua_req_t *lr = arg;
    sl_request_t *r = lr->r;
    event_free(lr->kill);
    lr->kill = NULL;
    if (r->cancel != NULL) {
        r->cancel(r);
        r->cancel = NULL;
    }
    r->resume = NULL;
    if (r->responded)
        sl_response_stream_end(r, 0);
}

/* Replaces the event with an error event; nothing follows it. */
static int
chunk_failed(sl_lua_req_t *lr, const char *why, sl_lua_kill_t killed,
             const char **data, size_t *len) {
    sl_request_t *r = lr->r;
    char msg[300], body[600];
    sl_lua_log(lr->script, "error", "on_chunk failed: %s", why);
    snprintf(msg, sizeof(msg),
             "the Lua script of route '%s' failed in "
             "on_chunk%s",
             lr->script->route->path, kill_text(killed));
    size_t n =
        sl_error_json(body, sizeof(body), msg, "server_error", "script_error");
    if (n >= sizeof(body))
        n = sizeof(body) - 1;
    lr->stream_failed = 1;
    r->error_code = "script_error";
    free(lr->chunk_out);
    lr->chunk_out = strndup(body, n);
    if (lr->chunk_out == NULL)
        return 1;
    *data = lr->chunk_out;
    *len = n;
    lr->kill = evtimer_new(r->w->base, on_kill, lr);
    if (lr->kill != NULL)
        event_active(lr->kill, EV_TIMEOUT, 1);
    return 0;
}

/* Encodes the Lua value at idx of co as the event to send. */
static int
chunk_out(sl_lua_req_t *lr, lua_State *co, int idx, const char **data,
          size_t *len, char *err, size_t errcap) {
    size_t n;
    char *s = sl_lua_json_encode(co, idx, &n, err, errcap);
    if (s == NULL)
        return -1;
    free(lr->chunk_out);
    lr->chunk_out = s;
    *data = s;
    *len = n;
    return 0;
}

/* Pushes choices[1].delta.content of the table at idx, or nil. */
static void
push_text(lua_State *co, int idx) {
    lua_getfield(co, idx, "choices");
    if (lua_istable(co, -1)) {
        lua_rawgeti(co, -1, 1);
        if (lua_istable(co, -1)) {
            lua_getfield(co, -1, "delta");
            if (lua_istable(co, -1)) {
                lua_getfield(co, -1, "content");
                if (lua_type(co, -1) == LUA_TSTRING) {
                    lua_replace(co, -4);
                    lua_pop(co, 2);
                    return;
                }
                lua_pop(co, 1);
            }
            lua_pop(co, 1);
        }
        lua_pop(co, 1);
    }
    lua_pop(co, 1);
    lua_pushnil(co);
}

enum { CHUNK_RAN, CHUNK_SKIP };

/* Runs on_chunk(ctx, chunk, text) for the event data (NULL: the end of
 * the stream, on_chunk(ctx, nil, nil)). CHUNK_SKIP when the event is not
 * a chunk (not JSON, or an error event): it passes as it is. */
static int
call_on_chunk(sl_lua_req_t *lr, const char *data, size_t len,
              sl_lua_result_t *res) {
    lua_State *co =
        sl_lua_inv_begin(&lr->inv, lr->vm, lr, SL_LUA_PHASE_CHUNK, lr->script);
    lua_rawgeti(co, LUA_REGISTRYINDEX, lr->mod->on_chunk);
    sl_lua_ctx_push(lr, co);
    if (data != NULL) {
        char err[120];
        int skip = sl_lua_json_decode(co, data, len, err, sizeof(err)) != 0 ||
                   !lua_istable(co, -1);
        if (!skip) {
            lua_getfield(co, -1, "error");
            skip = !lua_isnil(co, -1);
            lua_pop(co, 1);
        }
        if (skip) {
            sl_lua_inv_end(&lr->inv);
            return CHUNK_SKIP;
        }
        push_text(co, -1);
        /* The table is kept below the function's values: with no value
         * returned, the event is this table as the function left it. */
        lua_pushvalue(co, -2);
        lua_insert(co, 1);
    } else {
        lua_pushnil(co);
        lua_pushnil(co);
    }
    *res = sl_lua_inv_run(&lr->inv, 3);
    if (*res == SL_LUA_WAIT || *res == SL_LUA_RESPOND) {
        /* Not reachable through the API; be safe all the same. */
        sl_lua_inv_cancel(&lr->inv);
        snprintf(lr->inv.error, sizeof(lr->inv.error),
                 "on_chunk must not wait");
        *res = SL_LUA_ERROR;
    }
    return CHUNK_RAN;
}

/* Sets choices[1].delta.content of the table at idx to the string at sidx. */
static void
set_text(lua_State *co, int idx, int sidx) {
    lua_getfield(co, idx, "choices");
    if (!lua_istable(co, -1)) {
        lua_pop(co, 1);
        return;
    }
    lua_rawgeti(co, -1, 1);
    if (lua_istable(co, -1)) {
        lua_getfield(co, -1, "delta");
        if (!lua_istable(co, -1)) {
            lua_pop(co, 1);
            lua_newtable(co);
            lua_pushvalue(co, -1);
            lua_setfield(co, -3, "delta");
        }
        lua_pushvalue(co, sidx);
        lua_setfield(co, -2, "content");
        lua_pop(co, 1);
    }
    lua_pop(co, 2);
}

/* Replaces the string at index 1 of co with an event shaped like the last
 * one seen, carrying that text. */
static void
text_event(sl_lua_req_t *lr, lua_State *co) {
    char err[120];
    if (lr->last_chunk == NULL ||
        sl_lua_json_decode(co, lr->last_chunk, strlen(lr->last_chunk), err,
                           sizeof(err)) != 0 ||
        !lua_istable(co, -1)) {
        lua_settop(co, 1);
        lua_createtable(co, 0, 2);
        lua_pushliteral(co, "chat.completion.chunk");
        lua_setfield(co, -2, "object");
    }
    lua_pushnil(co);
    lua_setfield(co, -2, "usage");
    lua_createtable(co, 1, 0); /* choices */
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, 0);
    lua_setfield(co, -2, "index");
    lua_createtable(co, 0, 1);
    lua_pushvalue(co, 1);
    lua_setfield(co, -2, "content");
    lua_setfield(co, -2, "delta");
    lua_pushlightuserdata(co, NULL);
    lua_setfield(co, -2, "finish_reason");
    lua_rawseti(co, -2, 1);
    lua_setfield(co, -2, "choices");
    lua_replace(co, 1);
}

/* The end of the stream: on_chunk(ctx, nil, nil) may add a last text. */
static int
chunk_end(sl_lua_req_t *lr, const char **data, size_t *len) {
    sl_lua_result_t res;
    call_on_chunk(lr, NULL, 0, &res);
    lua_State *co = lr->inv.co;
    if (res == SL_LUA_ERROR) {
        sl_lua_inv_end(&lr->inv);
        return chunk_failed(lr, lr->inv.error, lr->inv.killed, data, len);
    }
    char err[200];
    if (lua_gettop(co) >= 1 &&
        (lua_type(co, 1) == LUA_TSTRING || lua_istable(co, 1))) {
        if (lua_type(co, 1) == LUA_TSTRING)
            text_event(lr, co);
        const char *ev;
        size_t evlen;
        if (chunk_out(lr, co, 1, &ev, &evlen, err, sizeof(err)) != 0) {
            sl_lua_inv_end(&lr->inv);
            return chunk_failed(lr, err, SL_LUA_KILL_NONE, data, len);
        }
        lr->forwarding = 1;
        sl_call_forward(lr->k, ev, evlen);
        lr->forwarding = 0;
    }
    sl_lua_inv_end(&lr->inv);
    sl_lua_ctx_save_vars(lr);
    return 0;
}

int
sl_lua_chunk(sl_request_t *r, const char **data, size_t *len) {
    sl_lua_req_t *lr = r->lua;
    if (lr->forwarding)
        return 0;
    if (lr->stream_failed)
        return 1;
    if (lr->mod->on_chunk == LUA_NOREF || lr->stage != SL_LUA_STAGE_UPSTREAM)
        return 0;
    if (*len == 6 && memcmp(*data, "[DONE]", 6) == 0)
        return chunk_end(lr, data, len);
    sl_lua_result_t res;
    if (call_on_chunk(lr, *data, *len, &res) == CHUNK_SKIP)
        return 0;
    free(lr->last_chunk);
    lr->last_chunk = strndup(*data, *len);
    lua_State *co = lr->inv.co;
    if (res == SL_LUA_ERROR) {
        sl_lua_inv_end(&lr->inv);
        return chunk_failed(lr, lr->inv.error, lr->inv.killed, data, len);
    }
    /* co: [chunk table, results...] */
    char err[200];
    int drop = 0, rc;
    int t = lua_gettop(co) >= 2 ? lua_type(co, 2) : LUA_TNIL;
    if (t == LUA_TBOOLEAN && !lua_toboolean(co, 2)) {
        drop = 1;
        rc = 0;
    } else if (t == LUA_TTABLE) {
        rc = chunk_out(lr, co, 2, data, len, err, sizeof(err));
    } else if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        set_text(co, 1, 2);
        rc = chunk_out(lr, co, 1, data, len, err, sizeof(err));
    } else if (t == LUA_TNIL) {
        rc = chunk_out(lr, co, 1, data, len, err, sizeof(err));
    } else {
        snprintf(err, sizeof(err),
                 "on_chunk returned a %s (nil, false, a string or a table)",
                 lua_typename(co, t));
        rc = -1;
    }
    sl_lua_inv_end(&lr->inv);
    if (rc != 0)
        return chunk_failed(lr, err, SL_LUA_KILL_NONE, data, len);
    return drop;
}
