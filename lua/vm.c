/* The Lua state of one worker for one config snapshot, and the phase calls
 * that run in it: each a coroutine, bounded three ways.
 *
 * - Instructions: a count hook every SL_LUA_HOOK_STEP VM instructions. The
 *   JIT compiler is off in these states: compiled loops never call hooks,
 *   so a compiled `while true do end` could not be stopped at all.
 * - Wall clock: checked by the same hook while the script runs, and by a
 *   timer while it waits on the event loop.
 * - Memory: the allocator counts the state's bytes; while a call runs it
 *   refuses growth past what the call may still add.
 *
 * Past a limit the call is "killed": the hook then fires at every
 * instruction and raises each time, so no pcall, xpcall or coroutine can
 * catch the error and go on. */
#include "clock.h"
#include "error.h"
#include "lua_int.h"
#include "worker.h"

#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *
sl_lua_phase_name(sl_lua_phase_t p) {
    static const char *const names[] = {"load", "on_request", "on_response",
                                        "on_chunk"};
    return (unsigned)p < 4 ? names[p] : "?";
}

static void hook(lua_State *L, lua_Debug *ar);

static void *
l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sl_lua_vm_t *vm = ud;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        vm->mem -= osize;
        return NULL;
    }
    sl_lua_inv_t *inv = vm->current;
    if (nsize > osize && vm->mem + (nsize - osize) > vm->mem_limit) {
        if (inv != NULL && !inv->killed)
            inv->killed = SL_LUA_KILL_MEMORY;
        return NULL;
    }
    if (inv != NULL && !inv->gc_soon && nsize > osize &&
        vm->mem + (nsize - osize) > inv->gc_mark + inv->mem_cap / 2) {
        /* Past half the cap: have the hook run at the next instruction,
         * to collect before the cap is hit -- LuaJIT does not collect
         * before it reports an allocation failure. */
        inv->gc_soon = 1;
        lua_sethook(vm->L, hook, LUA_MASKCOUNT, 1);
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL)
        return nsize <= osize ? ptr : NULL; /* a shrink cannot fail */
    vm->mem = vm->mem - osize + nsize;
    return p;
}

void
sl_lua_where(lua_State *L, char *buf, size_t cap) {
    lua_Debug ar;
    for (int level = 0; level < 4; level++) {
        if (lua_getstack(L, level, &ar) && lua_getinfo(L, "Sl", &ar) &&
            ar.currentline > 0) {
            snprintf(buf, cap, "%s:%d", ar.short_src, ar.currentline);
            return;
        }
    }
    snprintf(buf, cap, "?");
}

/* Raises the error of a killed call at the running line. */
static void
raise_killed(lua_State *L, sl_lua_inv_t *inv) {
    char where[200];
    const sl_route_t *rt = inv->script->route;
    sl_lua_where(L, where, sizeof(where));
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    char msg[300];
    switch (inv->killed) {
    case SL_LUA_KILL_INSTRUCTIONS:
        snprintf(msg, sizeof(msg), "%s: instruction limit (%ld) exceeded",
                 where, rt->lua_instructions);
        break;
    case SL_LUA_KILL_TIME:
        snprintf(msg, sizeof(msg), "%s: time limit (%ld ms) exceeded", where,
                 rt->lua_timeout_ms);
        break;
    default:
        snprintf(msg, sizeof(msg), "%s: memory limit (%ld MB) exceeded", where,
                 rt->lua_memory_mb);
    }
    lua_pushstring(L, msg);
    lua_error(L);
}

static void
hook(lua_State *L, lua_Debug *ar) {
    sl_lua_vm_t *vm = sl_lua_vm_of(L);
    sl_lua_inv_t *inv = vm->current;
    (void)ar;
    if (inv == NULL)
        return;
    if (!inv->killed) {
        if (inv->gc_soon) {
            inv->gc_soon = 0;
            lua_sethook(L, hook, LUA_MASKCOUNT, SL_LUA_HOOK_STEP);
        }
        inv->instructions += SL_LUA_HOOK_STEP;
        if (inv->instructions > inv->max_instructions)
            inv->killed = SL_LUA_KILL_INSTRUCTIONS;
        else if (sl_now_us() > inv->deadline)
            inv->killed = SL_LUA_KILL_TIME;
        else if (vm->mem > inv->gc_mark + inv->mem_cap / 2) {
            /* Near the cap: remember where, for the error that an
             * allocation failure raises without a line, and collect: what
             * is garbage must not count. */
            sl_lua_where(L, inv->where, sizeof(inv->where));
            lua_gc(L, LUA_GCCOLLECT, 0);
            inv->gc_mark = vm->mem;
        }
    }
    if (inv->killed)
        raise_killed(L, inv);
}

/* ---- building a VM ---- */

static void
push_route_table(lua_State *L, const sl_lua_script_t *s) {
    static const char *const kinds[] = {"",       "chat",   "embeddings",
                                        "models", "health", "messages"};
    const sl_route_t *rt = s->route;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, rt->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, (unsigned)rt->kind < 6 ? kinds[rt->kind] : "");
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, rt->lua);
    lua_setfield(L, -2, "script");
    cJSON *conf = rt->lua_config ? cJSON_Parse(rt->lua_config) : NULL;
    if (conf != NULL)
        sl_lua_push_json(L, conf);
    else
        lua_newtable(L);
    cJSON_Delete(conf);
    lua_setfield(L, -2, "config");
}

/* Checks the module's table (at the top of co) and refs its phases. */
static int
take_module(lua_State *L, lua_State *co, const sl_lua_script_t *s,
            sl_lua_mod_t *mod) {
    static const char *const phases[] = {"on_request", "on_response",
                                         "on_chunk"};
    int *refs[] = {&mod->on_request, &mod->on_response, &mod->on_chunk};
    if (lua_gettop(co) != 1 || !lua_istable(co, 1)) {
        snprintf(mod->error, sizeof(mod->error),
                 "%s: the script must return a table of phase functions "
                 "(on_request, on_response, on_chunk)",
                 s->route->lua);
        return -1;
    }
    lua_pushnil(co);
    while (lua_next(co, 1) != 0) {
        const char *k =
            lua_type(co, -2) == LUA_TSTRING ? lua_tostring(co, -2) : NULL;
        lua_pop(co, 1);
        if (k == NULL || strncmp(k, "on_", 3) != 0)
            continue;
        int known = 0;
        for (int i = 0; i < 3; i++)
            known |= strcmp(k, phases[i]) == 0;
        if (!known) {
            snprintf(mod->error, sizeof(mod->error),
                     "%s: unknown phase '%.60s' (on_request, on_response, "
                     "on_chunk)",
                     s->route->lua, k);
            lua_pop(co, 1);
            return -1;
        }
    }
    for (int i = 0; i < 3; i++) {
        lua_getfield(co, 1, phases[i]);
        if (lua_isfunction(co, -1)) {
            lua_xmove(co, L, 1);
            *refs[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        } else if (!lua_isnil(co, -1)) {
            snprintf(mod->error, sizeof(mod->error),
                     "%s: '%s' must be a function", s->route->lua, phases[i]);
            lua_pop(co, 1);
            return -1;
        } else {
            lua_pop(co, 1);
        }
    }
    push_route_table(L, s);
    mod->route = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int
sl_lua_vm_load(sl_lua_vm_t *vm, const sl_lua_script_t *s, sl_lua_mod_t *mod) {
    sl_lua_inv_t inv;
    mod->loaded = -1;
    mod->on_request = mod->on_response = mod->on_chunk = LUA_NOREF;
    mod->route = LUA_NOREF;
    lua_State *co = sl_lua_inv_begin(&inv, vm, NULL, SL_LUA_PHASE_LOAD, s);
    if (co == NULL) {
        snprintf(mod->error, sizeof(mod->error), "out of memory");
        return -1;
    }
    /* Text only: precompiled bytecode can break the VM's invariants. */
    if (luaL_loadbufferx(co, s->source, s->len, s->chunkname, "t") != 0) {
        snprintf(mod->error, sizeof(mod->error), "%s",
                 lua_isstring(co, -1) ? lua_tostring(co, -1)
                                      : "cannot load the script");
        sl_lua_inv_end(&inv);
        return -1;
    }
    sl_lua_env_new(co);
    lua_setfenv(co, -2);
    sl_lua_result_t res = sl_lua_inv_run(&inv, 0);
    int rc = -1;
    if (res == SL_LUA_OK)
        rc = take_module(vm->L, co, s, mod);
    else if (res == SL_LUA_ERROR)
        snprintf(mod->error, sizeof(mod->error), "%s", inv.error);
    else
        snprintf(mod->error, sizeof(mod->error),
                 "%s: the script's top level must not wait or respond",
                 s->route->lua);
    if (res != SL_LUA_WAIT)
        sl_lua_inv_end(&inv);
    else
        sl_lua_inv_cancel(&inv);
    if (rc == 0)
        mod->loaded = 1;
    return rc;
}

/* The state's libraries and the frozen `sluice` table; run protected, so
 * an allocation failure is an error and not a panic. */
static int
vm_init(lua_State *L) {
    sl_lua_vm_t *vm = lua_touserdata(L, 1);
    sl_lua_sandbox_open(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_createtable(L, 0, 16);
    sl_lua_api_json(L); /* first: it makes the array metatable */
    sl_lua_api_llm(L);
    sl_lua_api_http(L);
    sl_lua_api_kv(L);
    sl_lua_api_log(L);
    sl_lua_api_prompt(L);
    sl_lua_api_respond(L);
    sl_lua_freeze(L);
    lua_setglobal(L, "sluice");
    sl_lua_ctx_init(L, vm);
    return 0;
}

sl_lua_vm_t *
sl_lua_vm_new(const sl_lua_set_t *set) {
    sl_lua_vm_t *vm = calloc(1, sizeof(*vm));
    if (vm == NULL)
        return NULL;
    vm->set = set;
    vm->mem_limit = SIZE_MAX;
    vm->ctx_mt = vm->array_mt = LUA_NOREF;
    vm->L = lua_newstate(l_alloc, vm);
    if (vm->L == NULL || lua_cpcall(vm->L, vm_init, vm) != 0) {
        sl_lua_vm_free(vm);
        return NULL;
    }
    lua_sethook(vm->L, hook, LUA_MASKCOUNT, SL_LUA_HOOK_STEP);
    size_t n = set != NULL ? set->nroutes : 0;
    vm->mods = calloc(n + 1, sizeof(*vm->mods));
    if (vm->mods == NULL) {
        sl_lua_vm_free(vm);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const sl_lua_script_t *s = &set->scripts[i];
        if (s->route != NULL && sl_lua_vm_load(vm, s, &vm->mods[i]) != 0)
            sl_lua_log(s, "error", "the script does not load: %s",
                       vm->mods[i].error);
    }
    return vm;
}

void
sl_lua_vm_free(sl_lua_vm_t *vm) {
    if (vm == NULL)
        return;
    if (vm->L != NULL)
        lua_close(vm->L);
    free(vm->mods);
    free(vm);
}

/* ---- phase calls ---- */

lua_State *
sl_lua_inv_begin(sl_lua_inv_t *inv, sl_lua_vm_t *vm, sl_lua_req_t *lr,
                 sl_lua_phase_t phase, const sl_lua_script_t *s) {
    lua_State *L = vm->L;
    const sl_route_t *rt = s->route;
    /* Field by field: the message buffers need no zeroing. */
    inv->vm = vm;
    inv->lr = lr;
    inv->phase = phase;
    inv->script = s;
    inv->co = NULL;
    inv->co_ref = LUA_NOREF;
    inv->instructions = 0;
    inv->max_instructions = rt->lua_instructions;
    inv->mem_used = inv->mem_base = inv->gc_mark = 0;
    inv->mem_cap = (size_t)rt->lua_memory_mb << 20;
    inv->gc_soon = 0;
    inv->timeout_ms = rt->lua_timeout_ms;
    inv->deadline = sl_now_us() + (uint64_t)rt->lua_timeout_ms * 1000u;
    inv->timer = NULL;
    inv->killed = SL_LUA_KILL_NONE;
    inv->op = NULL;
    inv->responded = 0;
    inv->done = NULL;
    inv->where[0] = inv->error[0] = '\0';
    if (vm->npool > 0) {
        vm->npool--;
        inv->co = vm->pool[vm->npool];
        inv->co_ref = vm->pool_ref[vm->npool];
        return inv->co;
    }
    inv->co = lua_newthread(L);
    inv->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return inv->co;
}

/* Runs the coroutine until it returns, fails or waits. */
static sl_lua_result_t
slice(sl_lua_inv_t *inv, int nargs) {
    sl_lua_vm_t *vm = inv->vm;
    lua_State *co = inv->co;
    size_t left =
        inv->mem_cap > inv->mem_used ? inv->mem_cap - inv->mem_used : 0;
    vm->current = inv;
    inv->mem_base = inv->gc_mark = vm->mem;
    vm->mem_limit = vm->mem + left;
    int rc = lua_resume(co, nargs);
    vm->current = NULL;
    vm->mem_limit = SIZE_MAX;
    if (inv->killed || inv->gc_soon)
        lua_sethook(vm->L, hook, LUA_MASKCOUNT, SL_LUA_HOOK_STEP);
    inv->gc_soon = 0;
    /* Net growth: what an earlier slice left as garbage and this one
     * collected counts for this call again. */
    if (vm->mem >= inv->mem_base)
        inv->mem_used += vm->mem - inv->mem_base;
    else
        inv->mem_used -= inv->mem_used < inv->mem_base - vm->mem
                             ? inv->mem_used
                             : inv->mem_base - vm->mem;
    if (rc == LUA_YIELD && !inv->killed) {
        if (inv->responded)
            return SL_LUA_RESPOND;
        if (inv->op != NULL)
            return SL_LUA_WAIT;
        snprintf(inv->error, sizeof(inv->error),
                 "%s: %s yielded outside sluice's calls (coroutine.yield "
                 "works only inside coroutines the script creates)",
                 inv->script->route->lua, sl_lua_phase_name(inv->phase));
        return SL_LUA_ERROR;
    }
    if (rc == 0)
        return SL_LUA_OK;
    const char *msg =
        lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : NULL;
    if (inv->killed == SL_LUA_KILL_MEMORY &&
        (msg == NULL || strstr(msg, "memory limit") == NULL)) {
        char where[200];
        sl_lua_where(co, where, sizeof(where));
        if (strcmp(where, "?") == 0 && inv->where[0] != '\0')
            snprintf(where, sizeof(where), "%s", inv->where);
        snprintf(inv->error, sizeof(inv->error),
                 "%s: memory limit (%ld MB) exceeded", where,
                 inv->script->route->lua_memory_mb);
    } else if (msg != NULL) {
        snprintf(inv->error, sizeof(inv->error), "%s", msg);
    } else {
        char where[200];
        sl_lua_where(co, where, sizeof(where));
        snprintf(inv->error, sizeof(inv->error),
                 "%s: error object is a %s value", where,
                 luaL_typename(co, -1));
    }
    return SL_LUA_ERROR;
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg) {
    sl_lua_inv_t *inv = arg;
    const char *what_op = inv->op != NULL ? inv->op->what : "a call";
    char where[200];
    sl_lua_where(inv->co, where, sizeof(where));
    snprintf(inv->error, sizeof(inv->error),
             "%s: time limit (%ld ms) exceeded while waiting on %s", where,
             inv->timeout_ms, what_op);
    inv->killed = SL_LUA_KILL_TIME;
    sl_lua_inv_cancel(inv);
    inv->done(inv, SL_LUA_ERROR);
}

/* A call that waits: its deadline is a timer on the request's loop. */
static sl_lua_result_t
arm_deadline(sl_lua_inv_t *inv) {
    if (inv->timer != NULL)
        return SL_LUA_WAIT;
    uint64_t now = sl_now_us();
    uint64_t left = inv->deadline > now ? inv->deadline - now : 0;
    inv->timer = evtimer_new(inv->lr->r->w->base, on_deadline, inv);
    struct timeval tv = {(time_t)(left / 1000000u),
                         (suseconds_t)(left % 1000000u)};
    if (inv->timer == NULL || evtimer_add(inv->timer, &tv) != 0) {
        snprintf(inv->error, sizeof(inv->error), "out of memory");
        sl_lua_inv_cancel(inv);
        return SL_LUA_ERROR;
    }
    return SL_LUA_WAIT;
}

sl_lua_result_t
sl_lua_inv_run(sl_lua_inv_t *inv, int nargs) {
    sl_lua_result_t res = slice(inv, nargs);
    return res == SL_LUA_WAIT ? arm_deadline(inv) : res;
}

void
sl_lua_inv_resume(sl_lua_inv_t *inv, int nres) {
    sl_lua_result_t res = sl_lua_inv_run(inv, nres);
    if (res != SL_LUA_WAIT)
        inv->done(inv, res);
}

void
sl_lua_inv_end(sl_lua_inv_t *inv) {
    sl_lua_vm_t *vm = inv->vm;
    lua_State *L = vm->L;
    if (inv->timer != NULL) {
        event_free(inv->timer);
        inv->timer = NULL;
    }
    if (inv->co == NULL)
        return;
    /* A coroutine that returned can run the next call; one that failed or
     * still waits is left to the collector. */
    if (lua_status(inv->co) == 0 && vm->npool < SL_LUA_POOL_MAX) {
        lua_settop(inv->co, 0);
        vm->pool[vm->npool] = inv->co;
        vm->pool_ref[vm->npool++] = inv->co_ref;
    } else {
        luaL_unref(L, LUA_REGISTRYINDEX, inv->co_ref);
    }
    inv->co_ref = LUA_NOREF;
    inv->co = NULL;
}

void
sl_lua_inv_cancel(sl_lua_inv_t *inv) {
    sl_lua_op_t *op = inv->op;
    inv->op = NULL;
    if (op != NULL)
        op->cancel(op);
    if (inv->co != NULL) {
        luaL_unref(inv->vm->L, LUA_REGISTRYINDEX, inv->co_ref);
        inv->co_ref = LUA_NOREF;
        inv->co = NULL;
    }
    if (inv->timer != NULL) {
        event_free(inv->timer);
        inv->timer = NULL;
    }
}

/* ---- for the API functions ---- */

sl_lua_inv_t *
sl_lua_running(lua_State *L, const char *fname, int need_request) {
    sl_lua_inv_t *inv = sl_lua_vm_of(L)->current;
    if (inv == NULL || (need_request && inv->lr == NULL))
        luaL_error(L,
                   "%s: cannot be called while the script loads (only "
                   "inside a phase function)",
                   fname);
    return inv;
}

sl_lua_inv_t *
sl_lua_yieldable(lua_State *L, const char *fname) {
    sl_lua_inv_t *inv = sl_lua_running(L, fname, 1);
    if (inv->phase == SL_LUA_PHASE_CHUNK)
        luaL_error(L,
                   "%s: cannot be called in on_chunk (it waits, and a "
                   "stream's events do not wait)",
                   fname);
    if (L != inv->co)
        luaL_error(L,
                   "%s: cannot be called inside a coroutine the script "
                   "created (in %s)",
                   fname, sl_lua_phase_name(inv->phase));
    return inv;
}

int
sl_lua_wait(lua_State *L, sl_lua_inv_t *inv, sl_lua_op_t *op) {
    inv->op = op;
    return lua_yield(L, 0);
}

void
sl_lua_op_over(sl_lua_inv_t *inv) {
    inv->op = NULL;
}
