/* What a script can reach. The state's globals hold only safe libraries:
 * no io, no os beyond clocks and dates, no debug, no package/require, no
 * ffi or jit, no loading of bytecode or files, no getfenv/setfenv (they
 * would reach other scripts' environments). Library tables are read-only
 * proxies, so one route's script cannot change what another one calls;
 * each script writes its globals into its own environment. */
#include "lua_int.h"

#include <lualib.h>
#include <string.h>

static int
frozen_newindex(lua_State *L) {
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    return luaL_error(L, "cannot set '%s': this table is read-only", k);
}

void
sl_lua_freeze(lua_State *L) {
    lua_newtable(L); /* the proxy */
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "__sluice_frozen");
    lua_setmetatable(L, -2);
    lua_replace(L, -2);
}

/* rawset would write into a frozen proxy past its __newindex. */
static int
l_rawset(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (lua_getmetatable(L, 1)) {
        lua_getfield(L, -1, "__sluice_frozen");
        int frozen = lua_toboolean(L, -1);
        lua_pop(L, 2);
        if (frozen)
            return luaL_error(L, "rawset: this table is read-only");
    }
    lua_settop(L, 3);
    lua_rawset(L, 1);
    lua_settop(L, 1);
    return 1;
}

/* load(text [, chunkname [, mode [, env]]]): text chunks only, in the
 * caller's environment unless env is given. */
static int
l_load(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *name = luaL_optstring(L, 2, "=(load)");
    if (luaL_loadbufferx(L, s, n, name, "t") != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (lua_istable(L, 4)) {
        lua_pushvalue(L, 4);
    } else {
        lua_Debug ar;
        if (!lua_getstack(L, 1, &ar) || !lua_getinfo(L, "f", &ar))
            return luaL_error(L, "load: no caller");
        lua_getfenv(L, -1);
        lua_remove(L, -2);
    }
    lua_setfenv(L, -2);
    return 1;
}

static int
l_collectgarbage(lua_State *L) {
    const char *opt = luaL_optstring(L, 1, "count");
    if (strcmp(opt, "count") != 0)
        return luaL_error(L, "collectgarbage: only \"count\" is allowed "
                             "(the state is shared with other requests)");
    lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT, 0) +
                          (lua_Number)lua_gc(L, LUA_GCCOUNTB, 0) / 1024.0);
    return 1;
}

/* print goes to the log, at info level. */
static int
l_print(lua_State *L) {
    luaL_Buffer b;
    int n = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_getglobal(L, "sluice");
    lua_getfield(L, -1, "log");
    lua_getfield(L, -1, "info");
    lua_pushvalue(L, -4);
    lua_call(L, 1, 0);
    return 0;
}

static void
open_lib(lua_State *L, const char *name, lua_CFunction fn) {
    lua_pushcfunction(L, fn);
    lua_pushstring(L, name);
    lua_call(L, 1, 0);
}

static void
set_nil(lua_State *L, int t, const char *const *names) {
    for (; *names != NULL; names++) {
        lua_pushnil(L);
        lua_setfield(L, t, *names);
    }
}

/* Replaces global `name` with a frozen proxy of it. */
static void
freeze_global(lua_State *L, const char *name) {
    lua_getglobal(L, name);
    sl_lua_freeze(L);
    lua_setglobal(L, name);
}

void
sl_lua_sandbox_open(lua_State *L) {
    static const char *const base_out[] = {
        "dofile", "loadfile", "load",   "loadstring", "getfenv", "setfenv",
        "gcinfo", "newproxy", "module", "require",    NULL};
    static const char *const keep_os[] = {"time", "clock", "date", "difftime",
                                          NULL};
    open_lib(L, "", luaopen_base); /* also coroutine */
    open_lib(L, LUA_TABLIBNAME, luaopen_table);
    open_lib(L, LUA_STRLIBNAME, luaopen_string);
    open_lib(L, LUA_MATHLIBNAME, luaopen_math);
    open_lib(L, LUA_BITLIBNAME, luaopen_bit);
    open_lib(L, LUA_OSLIBNAME, luaopen_os);
    set_nil(L, LUA_GLOBALSINDEX, base_out);
    lua_register(L, "rawset", l_rawset);
    lua_register(L, "load", l_load);
    lua_register(L, "loadstring", l_load);
    lua_register(L, "collectgarbage", l_collectgarbage);
    lua_register(L, "print", l_print);
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    /* os: the clock and dates only. */
    lua_getglobal(L, "os");
    lua_createtable(L, 0, 4);
    for (const char *const *k = keep_os; *k != NULL; k++) {
        lua_getfield(L, -2, *k);
        lua_setfield(L, -2, *k);
    }
    lua_setglobal(L, "os");
    lua_pop(L, 1);
    /* The string metatable would hand out the real string table. */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    freeze_global(L, "string");
    freeze_global(L, "table");
    freeze_global(L, "math");
    freeze_global(L, "bit");
    freeze_global(L, "os");
    freeze_global(L, "coroutine");
}

void
sl_lua_env_new(lua_State *L) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}
