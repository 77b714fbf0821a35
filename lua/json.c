/* JSON <-> Lua values, and sluice.json. JSON null is sluice.json.null (a
 * light userdata), so a null survives a round trip; arrays carry a shared
 * metatable, so an empty array stays an array. A table without it is an
 * array when its keys are exactly 1..n (n > 0), else an object. */
#include "lua_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LUA_JSON_DEPTH 128

static void
push_array_mt(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, sl_lua_vm_of(L)->array_mt);
}

static void
push_json(lua_State *L, const cJSON *j, int depth) {
    if (depth > SL_LUA_JSON_DEPTH) {
        luaL_error(L, "JSON nested too deep");
        return;
    }
    luaL_checkstack(L, 4, "JSON nested too deep");
    if (cJSON_IsString(j)) {
        lua_pushstring(L, j->valuestring);
    } else if (cJSON_IsNumber(j)) {
        lua_pushnumber(L, j->valuedouble);
    } else if (cJSON_IsBool(j)) {
        lua_pushboolean(L, cJSON_IsTrue(j));
    } else if (cJSON_IsArray(j)) {
        int n = cJSON_GetArraySize(j), i = 1;
        lua_createtable(L, n, 0);
        for (const cJSON *it = j->child; it != NULL; it = it->next) {
            push_json(L, it, depth + 1);
            lua_rawseti(L, -2, i++);
        }
        push_array_mt(L);
        lua_setmetatable(L, -2);
    } else if (cJSON_IsObject(j)) {
        lua_createtable(L, 0, cJSON_GetArraySize(j));
        for (const cJSON *it = j->child; it != NULL; it = it->next) {
            lua_pushstring(L, it->string);
            push_json(L, it, depth + 1);
            lua_rawset(L, -3);
        }
    } else {
        lua_pushlightuserdata(L, NULL);
    }
}

void
sl_lua_push_json(lua_State *L, const cJSON *j) {
    push_json(L, j, 0);
}

/* 1 when the table at idx is an array: marked, or keys exactly 1..n. */
static int
is_array(lua_State *L, int idx, int *n) {
    int marked = 0;
    if (lua_getmetatable(L, idx)) {
        push_array_mt(L);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    size_t count = 0;
    double max = 0;
    int ints = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TNUMBER) {
            double d = lua_tonumber(L, -1);
            if (d >= 1 && d == floor(d) && d < 2147483647.0) {
                if (d > max)
                    max = d;
                continue;
            }
        }
        ints = 0;
    }
    *n = (int)max;
    if (marked)
        return 1;
    return count > 0 && ints && (double)count == max;
}

static cJSON *
to_json(lua_State *L, int idx, int depth, char *err, size_t cap) {
    if (idx < 0)
        idx = lua_gettop(L) + idx + 1;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        double d = lua_tonumber(L, idx);
        if (!isfinite(d)) {
            snprintf(err, cap, "cannot encode %g in JSON", d);
            return NULL;
        }
        return cJSON_CreateNumber(d);
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        if (memchr(s, '\0', n) != NULL) {
            /* cJSON strings end at NUL: say so instead of cutting. */
            snprintf(err, cap, "cannot encode a string with a NUL byte");
            return NULL;
        }
        return cJSON_CreateString(s);
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL)
            return cJSON_CreateNull();
        break;
    case LUA_TTABLE: {
        if (depth >= SL_LUA_JSON_DEPTH) {
            snprintf(err, cap, "table nested too deep (or a cycle)");
            return NULL;
        }
        if (!lua_checkstack(L, 4)) {
            snprintf(err, cap, "table nested too deep");
            return NULL;
        }
        int n = 0;
        if (is_array(L, idx, &n)) {
            cJSON *a = cJSON_CreateArray();
            for (int i = 1; a != NULL && i <= n; i++) {
                lua_rawgeti(L, idx, i);
                cJSON *v = to_json(L, -1, depth + 1, err, cap);
                lua_pop(L, 1);
                if (v == NULL) {
                    cJSON_Delete(a);
                    return NULL;
                }
                cJSON_AddItemToArray(a, v);
            }
            return a;
        }
        cJSON *o = cJSON_CreateObject();
        lua_pushnil(L);
        while (o != NULL && lua_next(L, idx) != 0) {
            char num[64];
            const char *key;
            if (lua_type(L, -2) == LUA_TSTRING) {
                key = lua_tostring(L, -2);
            } else if (lua_type(L, -2) == LUA_TNUMBER) {
                snprintf(num, sizeof(num), "%.14g", lua_tonumber(L, -2));
                key = num;
            } else {
                snprintf(err, cap, "cannot encode a table key of type %s",
                         luaL_typename(L, -2));
                lua_pop(L, 2);
                cJSON_Delete(o);
                return NULL;
            }
            cJSON *v = to_json(L, -1, depth + 1, err, cap);
            lua_pop(L, 1);
            if (v == NULL) {
                lua_pop(L, 1);
                cJSON_Delete(o);
                return NULL;
            }
            cJSON_AddItemToObject(o, key, v);
        }
        return o;
    }
    default: break;
    }
    snprintf(err, cap, "cannot encode a %s in JSON", luaL_typename(L, idx));
    return NULL;
}

cJSON *
sl_lua_to_json(lua_State *L, int idx, char *err, size_t errcap) {
    err[0] = '\0';
    cJSON *j = to_json(L, idx, 0, err, errcap);
    if (j == NULL && err[0] == '\0')
        snprintf(err, errcap, "out of memory");
    return j;
}

/* sluice.json.encode(value) -> string | nil, err */
static int
l_encode(lua_State *L) {
    char err[200];
    size_t n;
    luaL_checkany(L, 1);
    char *s = sl_lua_json_encode(L, 1, &n, err, sizeof(err));
    if (s == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, s, n); /* may raise (memory cap): s leaks then */
    free(s);
    return 1;
}

/* sluice.json.decode(string) -> value | nil, err */
static int
l_decode(lua_State *L) {
    char err[200];
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (sl_lua_json_decode(L, s, n, err, sizeof(err)) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

/* sluice.json.array(t) -> t, marked to encode as an array */
static int
l_array(lua_State *L) {
    if (lua_isnoneornil(L, 1))
        lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

void
sl_lua_api_json(lua_State *L) {
    static const luaL_Reg fns[] = {{"encode", l_encode},
                                   {"decode", l_decode},
                                   {"array", l_array},
                                   {NULL, NULL}};
    sl_lua_vm_t *vm = sl_lua_vm_of(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__name");
    vm->array_mt = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_createtable(L, 0, 4);
    luaL_register(L, NULL, fns);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    sl_lua_freeze(L);
    lua_setfield(L, -2, "json");
}
