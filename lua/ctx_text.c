/* ctx.prompt and ctx.answer: the text of the last user message and of the
 * answer's first choice, read and written without turning the whole
 * request or answer into Lua tables and back -- the common edit at a
 * fraction of the cost. The prompt is read from and written into the
 * decoded request (the cJSON tree the proxy holds), the answer is found
 * and replaced in the answer's text. Once a script has made ctx.request
 * or ctx.response (a table), these work on that table instead, so the two
 * views never disagree. */
#include "lua_int.h"
#include "providers/provider.h"

#include <stdlib.h>
#include <string.h>

/* ---- the request (cJSON) ---- */

static int
is_text_part(const cJSON *part) {
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
    return cJSON_IsString(type) && strcmp(type->valuestring, "text") == 0 &&
           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(part, "text"));
}

static cJSON *
last_user(cJSON *json) {
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(json, "messages");
    cJSON *last = NULL, *m;
    cJSON_ArrayForEach(m, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (cJSON_IsString(role) && strcmp(role->valuestring, "user") == 0)
            last = m;
    }
    return last;
}

/* ---- tables (ctx.request / ctx.response made) ---- */

/* Pushes the text of a content value at idx: a string, or the text parts
 * of an array joined by "\n"; nil otherwise. */
static void
push_content(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TSTRING) {
        lua_pushvalue(L, idx);
        return;
    }
    if (!lua_istable(L, idx)) {
        lua_pushnil(L);
        return;
    }
    luaL_Buffer b;
    int n = (int)lua_objlen(L, idx), parts = 0;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "type");
            lua_getfield(L, -2, "text");
            int text = lua_type(L, -2) == LUA_TSTRING &&
                       strcmp(lua_tostring(L, -2), "text") == 0 &&
                       lua_type(L, -1) == LUA_TSTRING;
            if (text) {
                lua_replace(L, -3);
                lua_pop(L, 1);
                if (parts++ > 0)
                    luaL_addchar(&b, '\n');
                luaL_addvalue(&b);
                continue;
            }
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
    }
    luaL_pushresult(&b);
    if (parts == 0) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
}

/* Pushes the last user message of the request table at idx, or nil. */
static void
table_last_user(lua_State *L, int idx) {
    lua_getfield(L, idx, "messages");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return;
    }
    for (int i = (int)lua_objlen(L, -1); i >= 1; i--) {
        lua_rawgeti(L, -1, i);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "role");
            int user = lua_type(L, -1) == LUA_TSTRING &&
                       strcmp(lua_tostring(L, -1), "user") == 0;
            lua_pop(L, 1);
            if (user) {
                lua_remove(L, -2);
                return;
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

/* Pushes response.choices[1].message of the table at idx, or nil. */
static void
table_message(lua_State *L, int idx) {
    lua_getfield(L, idx, "choices");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        if (lua_istable(L, -1)) {
            lua_getfield(L, -1, "message");
            if (lua_istable(L, -1)) {
                lua_replace(L, -3);
                lua_pop(L, 1);
                return;
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushnil(L);
}

/* Pushes ctx's raw field (a made table) or nothing: 1 when pushed. */
static int
made(lua_State *L, int ctx, const char *field) {
    lua_pushstring(L, field);
    lua_rawget(L, ctx);
    if (lua_istable(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

/* ---- the answer's text ---- */

static const char *
ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The end of the JSON value at p, or NULL. */
static const char *
skip(const char *p, const char *end, int depth) {
    p = ws(p, end);
    if (p >= end || depth > 64)
        return NULL;
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip(p, end, depth + 1); /* the key */
                p = p ? ws(p, end) : NULL;
                if (p == NULL || p >= end || *p != ':')
                    return NULL;
                p++;
            }
            p = skip(p, end, depth + 1);
            p = p ? ws(p, end) : NULL;
            if (p == NULL || p >= end)
                return NULL;
            if (*p == close)
                return p + 1;
            if (*p != ',')
                return NULL;
            p++;
        }
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
           *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p;
}

/* The value of key in the object at p ('{'), or NULL. */
static const char *
member(const char *p, const char *end, const char *key) {
    size_t kl = strlen(key);
    p = ws(p, end);
    if (p >= end || *p != '{')
        return NULL;
    p = ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *k = p + 1, *kend = skip(p, end, 0);
        if (kend == NULL)
            return NULL;
        p = ws(kend, end);
        if (p >= end || *p != ':')
            return NULL;
        p = ws(p + 1, end);
        if ((size_t)(kend - 1 - k) == kl && memcmp(k, key, kl) == 0)
            return p;
        p = skip(p, end, 0);
        p = p ? ws(p, end) : NULL;
        if (p == NULL || p >= end || *p != ',')
            return NULL;
        p = ws(p + 1, end);
    }
    return NULL;
}

/* The span of choices[0].message.content in the answer's text. */
static int
answer_span(const char *s, size_t len, const char **start, const char **stop) {
    const char *end = s + len;
    const char *c = member(s, end, "choices");
    if (c == NULL || *c != '[')
        return -1;
    c = ws(c + 1, end);
    const char *m = c < end && *c == '{' ? member(c, end, "message") : NULL;
    const char *v = m ? member(m, end, "content") : NULL;
    const char *e = v ? skip(v, end, 0) : NULL;
    if (e == NULL)
        return -1;
    *start = v;
    *stop = e;
    return 0;
}

/* ---- ctx fields ---- */

int
sl_lua_prompt_get(lua_State *L, sl_lua_req_t *lr) {
    if (made(L, 1, "request")) {
        table_last_user(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return 1;
        lua_getfield(L, -1, "content");
        push_content(L, lua_gettop(L));
        return 1;
    }
    cJSON *m = last_user(lr->k->json);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(c)) {
        lua_pushstring(L, c->valuestring);
        return 1;
    }
    luaL_Buffer b;
    int parts = 0;
    const cJSON *part;
    luaL_buffinit(L, &b);
    cJSON_ArrayForEach(part, c) {
        if (!is_text_part(part))
            continue;
        if (parts++ > 0)
            luaL_addchar(&b, '\n');
        luaL_addstring(
            &b, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    }
    luaL_pushresult(&b);
    if (parts == 0) {
        lua_pop(L, 1);
        lua_pushnil(L);
    }
    return 1;
}

int
sl_lua_prompt_set(lua_State *L, sl_lua_req_t *lr, int idx) {
    if (lua_type(L, idx) != LUA_TSTRING)
        return luaL_error(L, "ctx.prompt: must be a string");
    if (made(L, 1, "request")) {
        table_last_user(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return luaL_error(L, "ctx.prompt: the request has no user "
                                 "message");
        lua_pushvalue(L, idx);
        lua_setfield(L, -2, "content");
        return 0;
    }
    cJSON *m = last_user(lr->k->json);
    if (m == NULL)
        return luaL_error(L, "ctx.prompt: the request has no user message");
    cJSON *s = cJSON_CreateString(lua_tostring(L, idx));
    if (s == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(m, "content", s)) {
        cJSON_Delete(s);
        return luaL_error(L, "ctx.prompt: out of memory");
    }
    lr->prompt_dirty = 1;
    return 0;
}

int
sl_lua_answer_get(lua_State *L, sl_lua_req_t *lr) {
    if (lr->stage != SL_LUA_STAGE_RESPONSE)
        return 0;
    if (made(L, 1, "response")) {
        table_message(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return 1;
        lua_getfield(L, -1, "content");
        push_content(L, lua_gettop(L));
        return 1;
    }
    const char *v, *e;
    char err[120];
    if (answer_span(lr->ans_body, lr->ans_len, &v, &e) != 0 || *v != '"' ||
        sl_lua_json_decode(L, v, (size_t)(e - v), err, sizeof(err)) != 0)
        lua_pushnil(L);
    return 1;
}

int
sl_lua_answer_set(lua_State *L, sl_lua_req_t *lr, int idx) {
    if (lr->stage != SL_LUA_STAGE_RESPONSE)
        return luaL_error(L, "ctx.answer: can be set in on_response only");
    if (lua_type(L, idx) != LUA_TSTRING)
        return luaL_error(L, "ctx.answer: must be a string");
    if (made(L, 1, "response")) {
        table_message(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return luaL_error(L, "ctx.answer: the answer has no message");
        lua_pushvalue(L, idx);
        lua_setfield(L, -2, "content");
        return 0;
    }
    const char *v, *e;
    if (answer_span(lr->ans_body, lr->ans_len, &v, &e) != 0)
        return luaL_error(L, "ctx.answer: the answer has no message "
                             "content");
    /* The new text, JSON-encoded, in place of the old value. */
    char err[120];
    size_t n;
    char *enc = sl_lua_json_encode(L, idx, &n, err, sizeof(err));
    if (enc == NULL)
        return luaL_error(L, "ctx.answer: %s", err);
    size_t pre = (size_t)(v - lr->ans_body);
    size_t post = lr->ans_len - (size_t)(e - lr->ans_body);
    char *body = sl_arena_alloc(lr->r->arena, pre + n + post + 1);
    if (body != NULL) {
        memcpy(body, lr->ans_body, pre);
        memcpy(body + pre, enc, n);
        memcpy(body + pre + n, e, post);
        body[pre + n + post] = '\0';
        lr->ans_body = body;
        lr->ans_len = pre + n + post;
    }
    free(enc);
    if (body == NULL)
        return luaL_error(L, "ctx.answer: out of memory");
    return 0;
}
