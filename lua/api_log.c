/* sluice.log.info/warn/error and sluice.respond. */
#include "lua_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
sl_lua_log(const sl_lua_script_t *s, const char *level, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line: a message with a newline would forge the next one. */
    for (char *p = msg; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "sluice: lua route %s: %s: %s\n",
            s && s->route ? s->route->path : "?", level, msg);
}

/* sluice.log.LEVEL(...): the values as print() shows them, with the
 * calling script's file:line. */
static int
log_at(lua_State *L, const char *level) {
    sl_lua_inv_t *inv = sl_lua_vm_of(L)->current;
    char where[200];
    luaL_Buffer b;
    int n = lua_gettop(L);
    sl_lua_where(L, where, sizeof(where));
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        lua_getglobal(L, "tostring");
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        if (!lua_isstring(L, -1))
            return luaL_error(L,
                              "sluice.log.%s: tostring must return a "
                              "string",
                              level);
        if (i > 1)
            luaL_addchar(&b, ' ');
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    sl_lua_log(inv ? inv->script : NULL, level, "%s: %s", where,
               lua_tostring(L, -1));
    return 0;
}

static int
l_info(lua_State *L) {
    return log_at(L, "info");
}

static int
l_warn(lua_State *L) {
    return log_at(L, "warn");
}

static int
l_error(lua_State *L) {
    return log_at(L, "error");
}

void
sl_lua_api_log(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"info", l_info}, {"warn", l_warn}, {"error", l_error}, {NULL, NULL}};
    lua_createtable(L, 0, 3);
    luaL_register(L, NULL, fns);
    sl_lua_freeze(L);
    lua_setfield(L, -2, "log");
}

/* Header lines from a table of name -> value; NULL with *err when a name
 * or value could split a header. */
static char *
header_lines(lua_State *L, int idx, sl_arena_t *a, const char **err) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t nl, vl;
        const char *name =
            lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL;
        const char *val =
            lua_isstring(L, -1) ? lua_tolstring(L, -1, &vl) : NULL;
        if (name == NULL || val == NULL || nl == 0 ||
            strcspn(name, "\r\n: \t") != nl || strcspn(val, "\r\n") != vl) {
            *err = "headers must map names (no ':', spaces or line breaks) "
                   "to string values (no line breaks)";
            lua_pop(L, 2);
            return NULL;
        }
        luaL_addlstring(&b, name, nl);
        luaL_addlstring(&b, ": ", 2);
        luaL_addlstring(&b, val, vl);
        luaL_addlstring(&b, "\r\n", 2);
        lua_pop(L, 1);
    }
    luaL_pushresult(&b);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    char *out = n ? sl_arena_strndup(a, s, n) : NULL;
    lua_pop(L, 1);
    if (n && out == NULL)
        *err = "out of memory";
    return out;
}

/* sluice.respond(status, body [, headers]): answers the client now, and
 * ends the phase. A table body is sent as JSON. */
static int
l_respond(lua_State *L) {
    sl_lua_inv_t *inv = sl_lua_running(L, "sluice.respond", 1);
    if (inv->phase == SL_LUA_PHASE_CHUNK)
        return luaL_error(L, "sluice.respond: cannot be called in on_chunk "
                             "(the answer has started; return false to "
                             "drop an event)");
    inv = sl_lua_yieldable(L, "sluice.respond");
    sl_lua_req_t *lr = inv->lr;
    sl_arena_t *a = lr->r->arena;
    int status = (int)luaL_checkinteger(L, 1);
    if (status < 200 || status > 599)
        return luaL_error(L, "sluice.respond: status %d is not 200..599",
                          status);
    const char *type = "application/json";
    char *body = NULL;
    size_t len = 0;
    if (lua_istable(L, 2)) {
        char err[200];
        char *s = sl_lua_json_encode(L, 2, &len, err, sizeof(err));
        if (s == NULL)
            return luaL_error(L, "sluice.respond: body: %s", err);
        body = sl_arena_strndup(a, s, len);
        free(s);
        if (body == NULL)
            return luaL_error(L, "sluice.respond: out of memory");
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, 2, &len);
        body = sl_arena_alloc(a, len + 1);
        if (body == NULL)
            return luaL_error(L, "sluice.respond: out of memory");
        memcpy(body, s, len);
        body[len] = '\0';
        if (len == 0 || (s[0] != '{' && s[0] != '['))
            type = "text/plain; charset=utf-8";
    } else if (!lua_isnoneornil(L, 2)) {
        return luaL_error(L,
                          "sluice.respond: body must be a string or a "
                          "table, not a %s",
                          luaL_typename(L, 2));
    } else {
        body = "";
    }
    char *headers = NULL;
    if (lua_istable(L, 3)) {
        const char *err = NULL;
        headers = header_lines(L, 3, a, &err);
        if (err != NULL)
            return luaL_error(L, "sluice.respond: %s", err);
        if (headers != NULL && strcasestr(headers, "content-type:") != NULL)
            type = NULL; /* theirs, not ours */
    } else if (!lua_isnoneornil(L, 3)) {
        return luaL_error(L, "sluice.respond: headers must be a table");
    }
    lr->resp_status = status;
    lr->resp_body = body;
    lr->resp_len = len;
    lr->resp_type = type;
    lr->resp_headers = headers;
    inv->responded = 1;
    return lua_yield(L, 0);
}

void
sl_lua_api_respond(lua_State *L) {
    lua_pushcfunction(L, l_respond);
    lua_setfield(L, -2, "respond");
}
