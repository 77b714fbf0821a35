/* ctx: what a phase function knows about its request.
 *
 * A plain table with a shared metatable. Fields that cost something are
 * made on first read and then stored in the table itself (request,
 * response, headers, route, vars), so later reads are plain table reads; at the
 * end of a phase the host reads back what the script left there. vars is
 * the script's own scratch table, kept for the whole request and copied
 * into the log line. The table holds no pointer: the requests a VM serves
 * know their ctx (by address, while they hold it), so a ctx kept past its
 * request matches none and raises an error instead of reading freed
 * memory. The host notes which fields a script made (touched), so that
 * reading them back costs nothing when it made none. */
#include "error.h"
#include "lua_int.h"
#include "providers/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The request whose ctx is at index 1, or NULL when it has ended. */
static sl_lua_req_t *
find_req(lua_State *L) {
    sl_lua_vm_t *vm = sl_lua_vm_of(L);
    const void *ctx = lua_topointer(L, 1);
    sl_lua_inv_t *inv = vm->current;
    if (inv != NULL && inv->lr != NULL && inv->lr->ctx_ptr == ctx)
        return inv->lr; /* the common case: the call's own ctx */
    for (sl_lua_req_t *lr = vm->live; lr != NULL; lr = lr->live_next)
        if (lr->ctx_ptr == ctx)
            return lr;
    return NULL;
}

static sl_lua_req_t *
req_of(lua_State *L, const char *field) {
    sl_lua_req_t *lr = find_req(L);
    if (lr == NULL)
        luaL_error(L,
                   "ctx.%s: this ctx belongs to a request that has "
                   "ended",
                   field);
    return lr;
}

static void
push_headers(lua_State *L, const sl_request_t *r) {
    lua_createtable(L, 0, (int)r->http.nheaders);
    for (size_t i = 0; i < r->http.nheaders; i++) {
        const sl_http_header_t *h = &r->http.headers[i];
        char name[128];
        size_t n = h->name_len < sizeof(name) ? h->name_len : sizeof(name);
        for (size_t k = 0; k < n; k++) {
            char c = h->name[k];
            name[k] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        lua_pushlstring(L, name, n);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isstring(L, -1)) { /* a repeated header: join as HTTP does */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
}

/* Pushes the answer on_response sees: the JSON as a table, or the body as
 * a string when it is not JSON. */
static void
push_response(lua_State *L, sl_lua_req_t *lr) {
    char err[120];
    if (sl_lua_json_decode(L, lr->ans_body, lr->ans_len, err, sizeof(err)) != 0)
        lua_pushlstring(L, lr->ans_body, lr->ans_len);
}

enum {
    F_NONE = 0,
    F_REQUEST,
    F_RESPONSE,
    F_HEADERS,
    F_ROUTE,
    F_CONSUMER,
    F_STATUS,
    F_PHASE,
    F_PROMPT,
    F_ANSWER,
    F_MODEL,
    F_VARS,
};

/* The field named k (n bytes). */
static int
field_of(const char *k, size_t n) {
#define F(name, id)                                                            \
    { name, sizeof(name) - 1, id }
    static const struct {
        const char *name;
        size_t len;
        int id;
    } fields[] = {
        F("prompt", F_PROMPT),     F("answer", F_ANSWER),
        F("request", F_REQUEST),   F("response", F_RESPONSE),
        F("headers", F_HEADERS),   F("route", F_ROUTE),
        F("consumer", F_CONSUMER), F("status", F_STATUS),
        F("phase", F_PHASE),       F("model", F_MODEL),
        F("vars", F_VARS),
    };
#undef F
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        if (fields[i].len == n && fields[i].name[0] == k[0] &&
            memcmp(fields[i].name, k, n) == 0)
            return fields[i].id;
    return F_NONE;
}

static int
ctx_index(lua_State *L) {
    size_t n;
    const char *k = luaL_checklstring(L, 2, &n);
    int f = field_of(k, n);
    if (f == F_VARS) { /* made on first use, even past the request */
        sl_lua_req_t *lr = find_req(L);
        if (lr != NULL)
            lr->touched |= SL_LUA_TOUCHED_VARS;
        lua_newtable(L);
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        lua_rawset(L, 1);
        return 1;
    }
    sl_lua_req_t *lr = req_of(L, k);
    sl_request_t *r = lr->r;
    switch (f) {
    case F_REQUEST: {
        cJSON *tree = sl_lua_request_tree(lr);
        if (tree == NULL)
            return luaL_error(L, "ctx.request: out of memory");
        sl_lua_push_json(L, tree);
        lr->touched |= SL_LUA_TOUCHED_REQUEST;
        break;
    }
    case F_RESPONSE:
        if (lr->stage != SL_LUA_STAGE_RESPONSE)
            return 0; /* nil before there is an answer */
        push_response(L, lr);
        lr->touched |= SL_LUA_TOUCHED_RESPONSE;
        break;
    case F_HEADERS: push_headers(L, r); break;
    case F_ROUTE: lua_rawgeti(L, LUA_REGISTRYINDEX, lr->mod->route); break;
    case F_CONSUMER:
        if (r->consumer == NULL)
            return 0;
        lua_pushstring(L, r->consumer);
        return 1;
    case F_STATUS:
        if (lr->stage != SL_LUA_STAGE_RESPONSE)
            return 0;
        lua_pushinteger(L, lr->ans_status);
        return 1;
    case F_PHASE: {
        sl_lua_inv_t *inv = sl_lua_vm_of(L)->current;
        lua_pushstring(L, inv ? sl_lua_phase_name(inv->phase) : "none");
        return 1;
    }
    case F_PROMPT: return sl_lua_prompt_get(L, lr);
    case F_ANSWER: return sl_lua_answer_get(L, lr);
    case F_MODEL: lua_pushstring(L, r->model); return 1;
    default: return 0;
    }
    /* Kept in the table: later reads are plain table reads. */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

static int
ctx_newindex(lua_State *L) {
    size_t kn;
    const char *k = luaL_checklstring(L, 2, &kn);
    sl_lua_req_t *lr = req_of(L, k);
    sl_request_t *r = lr->r;
    int f = field_of(k, kn);
    switch (f) {
    case F_CONSUMER: {
        if (lua_isnil(L, 3)) {
            r->consumer = NULL;
            return 0;
        }
        size_t n;
        const char *s = lua_tolstring(L, 3, &n);
        if (lua_type(L, 3) != LUA_TSTRING || n == 0 || n > 256)
            return luaL_error(L, "ctx.consumer: must be a string of 1 to "
                                 "256 bytes or nil");
        r->consumer = sl_arena_strndup(r->arena, s, n);
        return 0;
    }
    case F_PROMPT:
        if (lr->stage != SL_LUA_STAGE_REQUEST)
            return luaL_error(L, "ctx.prompt: can be set in on_request only");
        return sl_lua_prompt_set(L, lr, 3);
    case F_ANSWER: return sl_lua_answer_set(L, lr, 3);
    case F_STATUS: {
        int st = (int)luaL_checkinteger(L, 3);
        if (lr->stage != SL_LUA_STAGE_RESPONSE)
            return luaL_error(L, "ctx.status: can be set in on_response "
                                 "only");
        if (st < 200 || st > 599)
            return luaL_error(L,
                              "ctx.status: %d is not a status a client "
                              "can be sent (200..599)",
                              st);
        lr->ans_status = st;
        return 0;
    }
    case F_REQUEST:
    case F_RESPONSE:
    case F_VARS:
        if (!lua_istable(L, 3) && !(f == F_RESPONSE && lua_isstring(L, 3)))
            return luaL_error(L, "ctx.%s: must be a table", k);
        lr->touched |= f == F_REQUEST    ? SL_LUA_TOUCHED_REQUEST
                       : f == F_RESPONSE ? SL_LUA_TOUCHED_RESPONSE
                                         : SL_LUA_TOUCHED_VARS;
        lua_rawset(L, 1);
        return 0;
    default:
        return luaL_error(L,
                          "ctx.%s: no such field to set (keep your own data "
                          "in ctx.vars)",
                          k);
    }
}

cJSON *
sl_lua_request_tree(sl_lua_req_t *lr) {
    sl_call_t *k = lr->k;
    sl_request_t *r = lr->r;
    if (k->json != NULL)
        return k->json;
    /* Not through the proxy's decoder: that one answers the client when
     * out of memory, which a phase call must not do from inside ctx. */
    cJSON *j = cJSON_ParseWithLength(r->body, r->body_len);
    if (j == NULL ||
        sl_arena_cleanup_add(r->arena, (sl_cleanup_fn)cJSON_Delete, j) != 0) {
        cJSON_Delete(j);
        return NULL;
    }
    k->json = j;
    return j;
}

void
sl_lua_ctx_init(lua_State *L, sl_lua_vm_t *vm) {
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, ctx_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ctx_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    vm->ctx_mt = luaL_ref(L, LUA_REGISTRYINDEX);
}

int
sl_lua_ctx_new(sl_lua_req_t *lr) {
    /* Not through lua_cpcall, which costs more than the table: outside a
     * phase call the allocator refuses nothing, and an allocation that
     * fails anyway is a process out of memory. */
    sl_lua_vm_t *vm = lr->vm;
    lua_State *L = vm->L;
    lua_createtable(L, 0, 0); /* most scripts keep nothing in it */
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ctx_mt);
    lua_setmetatable(L, -2);
    lr->ctx_ptr = lua_topointer(L, -1);
    lr->ctx = luaL_ref(L, LUA_REGISTRYINDEX);
    lr->live_prev = NULL;
    lr->live_next = vm->live;
    if (vm->live != NULL)
        vm->live->live_prev = lr;
    vm->live = lr;
    return 0;
}

void
sl_lua_ctx_push(sl_lua_req_t *lr, lua_State *co) {
    lua_rawgeti(co, LUA_REGISTRYINDEX, lr->ctx);
}

char *
sl_lua_ctx_take(sl_lua_req_t *lr, const char *field, size_t *len, int *is_text,
                char *err, size_t errcap, int *failed, cJSON **tree) {
    lua_State *L = lr->vm->L;
    char *out = NULL;
    *failed = *is_text = 0;
    int bit = strcmp(field, "request") == 0 ? SL_LUA_TOUCHED_REQUEST
                                            : SL_LUA_TOUCHED_RESPONSE;
    if (!(lr->touched & bit))
        return NULL; /* never read nor set */
    lua_rawgeti(L, LUA_REGISTRYINDEX, lr->ctx);
    lua_pushstring(L, field);
    lua_rawget(L, -2); /* raw: __index would make it */
    if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, -1, len);
        out = malloc(*len + 1);
        if (out != NULL)
            memcpy(out, s, *len + 1);
        *is_text = 1;
        *failed = out == NULL;
        if (out == NULL)
            snprintf(err, errcap, "out of memory");
    } else if (lua_istable(L, -1)) {
        out = sl_lua_json_encode(L, -1, len, err, errcap);
        *failed = out == NULL;
        /* The same table as a tree, for who wants one: cheaper than
         * parsing the text again. */
        if (out != NULL && tree != NULL &&
            (*tree = sl_lua_to_json(L, -1, err, errcap)) == NULL) {
            free(out);
            out = NULL;
            *failed = 1;
        }
    }
    lua_pop(L, 2);
    return out;
}

void
sl_lua_ctx_save_vars(sl_lua_req_t *lr) {
    lua_State *L = lr->vm->L;
    char err[120];
    if (!(lr->touched & SL_LUA_TOUCHED_VARS))
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lr->ctx);
    lua_pushliteral(L, "vars");
    lua_rawget(L, -2);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 2);
        return;
    }
    lua_pushnil(L);
    if (lua_next(L, -2) == 0) { /* empty: nothing to log */
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 2);
    size_t len;
    char *s = sl_lua_json_encode(L, -1, &len, err, sizeof(err));
    lua_pop(L, 2);
    if (s == NULL) {
        sl_lua_log(lr->script, "warn", "ctx.vars is not logged: %s", err);
        return;
    }
    if (s[0] == '{')
        lr->r->vars = sl_arena_strndup(lr->r->arena, s, len);
    free(s);
}

void
sl_lua_ctx_release(sl_lua_req_t *lr) {
    sl_lua_vm_t *vm = lr->vm;
    if (lr->ctx == LUA_NOREF)
        return;
    if (lr->live_prev != NULL)
        lr->live_prev->live_next = lr->live_next;
    else
        vm->live = lr->live_next;
    if (lr->live_next != NULL)
        lr->live_next->live_prev = lr->live_prev;
    luaL_unref(vm->L, LUA_REGISTRYINDEX, lr->ctx);
    lr->ctx = LUA_NOREF;
    lr->ctx_ptr = NULL;
}
