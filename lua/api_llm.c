/* sluice.llm.chat and sluice.llm.parallel: model calls through the
 * gateway's own routing (core/subcall.c), waited on without blocking the
 * worker. parallel starts every call at once and resumes when the last
 * one is back. */
#include "error.h"
#include "lua_int.h"
#include "subcall.h"

#include <stdio.h>
#include <string.h>

#define SL_LUA_LLM_MAX 32

struct llm_op;

typedef struct {
    struct llm_op *op;
    sl_subcall_t *call; /* NULL once it ended */
    int status;
    cJSON *json; /* freed with the request */
    char *body;
    const char *provider, *model;
    int over;
} llm_slot_t;

typedef struct llm_op {
    sl_lua_op_t op;
    sl_lua_inv_t *inv;
    int n, left;
    int parallel;
    llm_slot_t *slots;
} llm_op_t;

/* The request to send, from the argument table at idx: any OpenAI chat
 * field, plus the shortcuts prompt (a user message) and system. Raises on
 * misuse. */
static cJSON *
build_request(lua_State *L, int idx, const char *fname) {
    char err[200];
    if (!lua_istable(L, idx))
        luaL_error(L,
                   "%s: expects a table {model=..., messages=...}, got "
                   "a %s",
                   fname, luaL_typename(L, idx));
    cJSON *j = sl_lua_to_json(L, idx, err, sizeof(err));
    if (j == NULL)
        luaL_error(L, "%s: %s", fname, err);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        luaL_error(L, "%s: expects a table with named fields", fname);
    }
    const char *why = NULL;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    cJSON *prompt = cJSON_DetachItemFromObjectCaseSensitive(j, "prompt");
    cJSON *system = cJSON_DetachItemFromObjectCaseSensitive(j, "system");
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
        why = "'model' must be a non-empty string";
    else if ((prompt != NULL && !cJSON_IsString(prompt)) ||
             (system != NULL && !cJSON_IsString(system)))
        why = "'prompt' and 'system' must be strings";
    else if (prompt != NULL && msgs != NULL)
        why = "give 'messages' or 'prompt', not both";
    else if (prompt == NULL &&
             (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0))
        why = "'messages' must be a non-empty array (or give 'prompt')";
    if (why == NULL && (prompt != NULL || system != NULL)) {
        if (msgs == NULL)
            msgs = cJSON_AddArrayToObject(j, "messages");
        if (system != NULL) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "system");
            cJSON_AddStringToObject(m, "content", system->valuestring);
            cJSON_InsertItemInArray(msgs, 0, m);
        }
        if (prompt != NULL) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "role", "user");
            cJSON_AddStringToObject(m, "content", prompt->valuestring);
            cJSON_AddItemToArray(msgs, m);
        }
    }
    cJSON_Delete(prompt);
    cJSON_Delete(system);
    if (why != NULL) {
        cJSON_Delete(j);
        luaL_error(L, "%s: %s", fname, why);
    }
    return j;
}

/* Pushes one answer: a table, or nil and an error string. */
static void
push_answer(lua_State *co, const llm_slot_t *s) {
    const cJSON *j = s->json;
    if (s->status >= 200 && s->status <= 299 && cJSON_IsObject(j)) {
        lua_createtable(co, 0, 6);
        const cJSON *ch = cJSON_GetArrayItem(
            cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(msg, "content");
        const cJSON *fin =
            cJSON_GetObjectItemCaseSensitive(ch, "finish_reason");
        if (cJSON_IsString(text)) {
            lua_pushstring(co, text->valuestring);
            lua_setfield(co, -2, "text");
        }
        if (cJSON_IsString(fin)) {
            lua_pushstring(co, fin->valuestring);
            lua_setfield(co, -2, "finish_reason");
        }
        sl_lua_push_json(co, j);
        lua_setfield(co, -2, "response");
        const cJSON *usage = cJSON_GetObjectItemCaseSensitive(j, "usage");
        if (cJSON_IsObject(usage)) {
            sl_lua_push_json(co, usage);
            lua_setfield(co, -2, "usage");
        }
        lua_pushinteger(co, s->status);
        lua_setfield(co, -2, "status");
        if (s->provider != NULL) {
            lua_pushstring(co, s->provider);
            lua_setfield(co, -2, "provider");
        }
        if (s->model != NULL) {
            lua_pushstring(co, s->model);
            lua_setfield(co, -2, "model");
        }
        lua_pushnil(co);
        return;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    lua_pushnil(co);
    if (cJSON_IsString(m))
        lua_pushfstring(co, "model call failed (%d): %s", s->status,
                        m->valuestring);
    else
        lua_pushfstring(co, "model call failed (%d): %s", s->status,
                        s->status >= 200 && s->status <= 299
                            ? "the answer is not JSON"
                            : "no error message");
}

static void
finish(llm_op_t *o) {
    sl_lua_inv_t *inv = o->inv;
    lua_State *co = inv->co;
    sl_lua_op_over(inv);
    if (!o->parallel) {
        push_answer(co, &o->slots[0]);
        sl_lua_inv_resume(inv, 2);
        return;
    }
    lua_createtable(co, o->n, 0); /* answers */
    lua_createtable(co, o->n, 0); /* errors */
    for (int i = 0; i < o->n; i++) {
        push_answer(co, &o->slots[i]);
        if (lua_isnil(co, -2)) {
            lua_pushboolean(co, 0);
            lua_replace(co, -3);
        } else {
            lua_pushboolean(co, 0);
            lua_replace(co, -2);
        }
        lua_rawseti(co, -3, i + 1);
        lua_rawseti(co, -3, i + 1);
    }
    sl_lua_inv_resume(inv, 2);
}

static void
on_answer(void *ud, sl_subcall_result_t *res) {
    llm_slot_t *s = ud;
    llm_op_t *o = s->op;
    sl_arena_t *a = o->inv->lr->r->arena;
    s->over = 1;
    s->status = res->status;
    s->json = res->json;
    if (s->json != NULL &&
        sl_arena_cleanup_add(a, (sl_cleanup_fn)cJSON_Delete, s->json) != 0) {
        cJSON_Delete(s->json);
        s->json = NULL;
        s->status = 503;
    }
    s->provider = res->provider ? sl_arena_strndup(a, res->provider,
                                                   strlen(res->provider))
                                : NULL;
    s->model =
        res->model ? sl_arena_strndup(a, res->model, strlen(res->model)) : NULL;
    if (--o->left == 0)
        finish(o);
}

static void
cancel(sl_lua_op_t *op) {
    llm_op_t *o = (llm_op_t *)op;
    for (int i = 0; i < o->n; i++)
        if (o->slots[i].call != NULL)
            sl_subcall_cancel(o->slots[i].call);
}

/* Starts calls for the n request tables from index first of L. */
static int
start(lua_State *L, int first, int n, int parallel, const char *fname) {
    sl_lua_inv_t *inv = sl_lua_yieldable(L, fname);
    sl_request_t *r = inv->lr->r;
    if (n > SL_LUA_LLM_MAX)
        return luaL_error(L, "%s: at most %d calls at once", fname,
                          SL_LUA_LLM_MAX);
    llm_op_t *o = sl_arena_calloc(r->arena, sizeof(*o));
    llm_slot_t *slots =
        sl_arena_calloc(r->arena, (size_t)(n > 0 ? n : 1) * sizeof(*slots));
    if (o == NULL || slots == NULL)
        return luaL_error(L, "%s: out of memory", fname);
    o->op.cancel = cancel;
    o->op.what = fname;
    o->inv = inv;
    o->n = n;
    o->parallel = parallel;
    o->slots = slots;
    /* Every request is built (and may raise) before any call starts. */
    cJSON **reqs =
        sl_arena_calloc(r->arena, (size_t)(n > 0 ? n : 1) * sizeof(*reqs));
    if (reqs == NULL)
        return luaL_error(L, "%s: out of memory", fname);
    for (int i = 0; i < n; i++) {
        if (parallel)
            lua_rawgeti(L, first, i + 1);
        reqs[i] = build_request(L, parallel ? lua_gettop(L) : first, fname);
        if (sl_arena_cleanup_add(r->arena, (sl_cleanup_fn)cJSON_Delete,
                                 reqs[i]) != 0) {
            cJSON_Delete(reqs[i]);
            return luaL_error(L, "%s: out of memory", fname);
        }
        if (parallel)
            lua_pop(L, 1);
    }
    for (int i = 0; i < n; i++) {
        slots[i].op = o;
        if (sl_subcall_start(r, reqs[i], on_answer, &slots[i],
                             &slots[i].call) != 0) {
            cancel(&o->op);
            lua_pushnil(L);
            lua_pushfstring(L, "%s: cannot start the call (out of memory)",
                            fname);
            return 2;
        }
        o->left++;
    }
    if (n == 0) { /* nothing to wait for */
        lua_newtable(L);
        lua_newtable(L);
        return 2;
    }
    return sl_lua_wait(L, inv, &o->op);
}

/* sluice.llm.chat{model=..., messages=... | prompt=..., ...}
 *   -> answer | nil, err */
static int
l_chat(lua_State *L) {
    return start(L, 1, 1, 0, "sluice.llm.chat");
}

/* sluice.llm.parallel{ {...}, {...} } -> answers, errors (arrays; each
 * entry is an answer or false, an error string or false) */
static int
l_parallel(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    return start(L, 1, (int)lua_objlen(L, 1), 1, "sluice.llm.parallel");
}

void
sl_lua_api_llm(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"chat", l_chat}, {"parallel", l_parallel}, {NULL, NULL}};
    lua_createtable(L, 0, 2);
    luaL_register(L, NULL, fns);
    sl_lua_freeze(L);
    lua_setfield(L, -2, "llm");
}
