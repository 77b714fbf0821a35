/* ctx.prompt and ctx.answer: the text of the last user message and of the
 * answer's first choice, read and written without turning the whole
 * request or answer into Lua tables and back -- the common edit at a
 * fraction of the cost. Both are found in the JSON text (jtext.c) and
 * spliced there: the request's body is what the upstream is sent, so an
 * edit costs no re-print of the request; the tree the proxy decoded, when
 * there is one, gets the same edit so the two never disagree. A request
 * the byte walk cannot be sure of (a key written with escapes, a content
 * of parts) is read and edited in the tree. Once a script has made
 * ctx.request or ctx.response (a table), these work on that table
 * instead, so the two views never disagree. */
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

/* Sets the content of message m to s: in place when it is a string. */
static int
set_tree_content(cJSON *m, const char *s) {
    cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (cJSON_IsString(c) && !(c->type & cJSON_IsReference))
        return cJSON_SetValuestring(c, s) != NULL ? 0 : -1;
    cJSON *n = cJSON_CreateString(s);
    if (n == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(m, "content", n)) {
        cJSON_Delete(n);
        return -1;
    }
    return 0;
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
made(lua_State *L, const sl_lua_req_t *lr, int ctx, const char *field,
     int bit) {
    if (!(lr->touched & bit))
        return 0; /* never made: no lookup */
    lua_pushstring(L, field);
    lua_rawget(L, ctx);
    if (lua_istable(L, -1))
        return 1;
    lua_pop(L, 1);
    return 0;
}

/* ---- the texts ---- */

/* Pushes the JSON string [v, e) (quotes included) as a Lua string: as it
 * is when it holds no escape, the common case. -1 when it is no string. */
static int
push_jstring(lua_State *L, const char *v, const char *e) {
    char err[120];
    if (e - v < 2 || *v != '"')
        return -1;
    size_t n = (size_t)(e - v) - 2;
    if (sl_lua_json_plain(v + 1, n) == n) {
        lua_pushlstring(L, v + 1, n);
        return 0;
    }
    return sl_lua_json_decode(L, v, (size_t)(e - v), err, sizeof(err));
}

/* sl_lua_jtext_prompt, once per request body: a read and a write of ctx.prompt
 * share it. */
static int
prompt_span(sl_lua_req_t *lr, const char **v, const char **e) {
    const sl_request_t *r = lr->r;
    if (lr->pr_body != r->body || lr->pr_len != r->body_len) {
        const char *pv, *pe;
        lr->pr_body = r->body;
        lr->pr_len = r->body_len;
        lr->pr_span = sl_lua_jtext_prompt(r->body, r->body_len, &pv, &pe) == 0;
        if (lr->pr_span) {
            lr->pr_v = (size_t)(pv - r->body);
            lr->pr_e = (size_t)(pe - r->body);
        }
    }
    if (!lr->pr_span)
        return -1;
    *v = r->body + lr->pr_v;
    *e = r->body + lr->pr_e;
    return 0;
}

/* The span of choices[0].message.content in the answer's text, found
 * once per answer: a read and a write of ctx.answer share it. */
static int
answer_span(sl_lua_req_t *lr, const char **start, const char **stop) {
    if (lr->ans_span == 0) {
        const char *v, *e;
        lr->ans_span =
            sl_lua_jtext_answer(lr->ans_body, lr->ans_len, &v, &e) == 0 ? 1
                                                                        : -1;
        if (lr->ans_span > 0) {
            lr->ans_v = (size_t)(v - lr->ans_body);
            lr->ans_e = (size_t)(e - lr->ans_body);
        }
    }
    if (lr->ans_span < 0)
        return -1;
    *start = lr->ans_body + lr->ans_v;
    *stop = lr->ans_body + lr->ans_e;
    return 0;
}

/* A copy of text with [v, e) replaced by the string at idx, quoted, in the
 * request's arena; *out_len its length. */
static char *
splice(lua_State *L, sl_lua_req_t *lr, const char *text, size_t len,
       const char *v, const char *e, int idx, size_t *out_len) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    size_t q = sl_lua_json_quoted_len(s, n);
    size_t pre = (size_t)(v - text), post = len - (size_t)(e - text);
    char *body = sl_arena_alloc(lr->r->arena, pre + q + post + 1);
    if (body == NULL)
        return NULL;
    memcpy(body, text, pre);
    if (q == n + 2) { /* nothing to escape */
        body[pre] = '"';
        memcpy(body + pre + 1, s, n);
        body[pre + 1 + n] = '"';
    } else {
        sl_lua_json_quote(body + pre, s, n);
    }
    memcpy(body + pre + q, e, post);
    body[pre + q + post] = '\0';
    *out_len = pre + q + post;
    return body;
}

/* ---- ctx fields ---- */

int
sl_lua_prompt_get(lua_State *L, sl_lua_req_t *lr) {
    if (made(L, lr, 1, "request", SL_LUA_TOUCHED_REQUEST)) {
        table_last_user(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return 1;
        lua_getfield(L, -1, "content");
        push_content(L, lua_gettop(L));
        return 1;
    }
    const char *v, *e;
    if (prompt_span(lr, &v, &e) == 0 && push_jstring(L, v, e) == 0)
        return 1;
    cJSON *tree = sl_lua_request_tree(lr);
    if (tree == NULL)
        return luaL_error(L, "ctx.prompt: out of memory");
    cJSON *m = last_user(tree);
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

/* The proxy read the body in place (the model's place, its closing
 * brace): it reads the edited one again, so the upstream still gets the
 * client's bytes with only the model replaced, not a printed tree. */
static void
rescan(sl_call_t *k, const char *old) {
    sl_chat_facts_t f;
    if (k->scanned != old)
        return;
    if (sl_chat_scan(k->r->body, k->r->body_len, &f) == 0) {
        k->facts = f;
        k->scanned = k->r->body;
    } else {
        k->scanned = NULL; /* the tree decides */
    }
}

int
sl_lua_prompt_set(lua_State *L, sl_lua_req_t *lr, int idx) {
    if (lua_type(L, idx) != LUA_TSTRING)
        return luaL_error(L, "ctx.prompt: must be a string");
    if (made(L, lr, 1, "request", SL_LUA_TOUCHED_REQUEST)) {
        table_last_user(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return luaL_error(L, "ctx.prompt: the request has no user "
                                 "message");
        lua_pushvalue(L, idx);
        lua_setfield(L, -2, "content");
        return 0;
    }
    sl_request_t *r = lr->r;
    const char *v, *e;
    int in_text = prompt_span(lr, &v, &e) == 0;
    /* The text is edited in place; a tree gets the same edit when someone
     * decoded it already, and is decoded only when the text cannot be. */
    cJSON *tree = in_text ? lr->k->json : sl_lua_request_tree(lr);
    if (tree == NULL && !in_text)
        return luaL_error(L, "ctx.prompt: out of memory");
    cJSON *m = last_user(tree);
    if (m == NULL && !in_text)
        return luaL_error(L, "ctx.prompt: the request has no user message");
    if (m != NULL && set_tree_content(m, lua_tostring(L, idx)) != 0)
        return luaL_error(L, "ctx.prompt: out of memory");
    if (!in_text) {
        lr->prompt_dirty = 1; /* the body is printed from the tree */
        return 0;
    }
    size_t len;
    char *body = splice(L, lr, r->body, r->body_len, v, e, idx, &len);
    if (body == NULL)
        return luaL_error(L, "ctx.prompt: out of memory");
    const char *old = r->body;
    lr->pr_e = lr->pr_e + len - r->body_len;
    lr->pr_body = body;
    r->body = body;
    r->body_len = lr->pr_len = len;
    rescan(lr->k, old);
    return 0;
}

int
sl_lua_answer_get(lua_State *L, sl_lua_req_t *lr) {
    if (lr->stage != SL_LUA_STAGE_RESPONSE)
        return 0;
    if (made(L, lr, 1, "response", SL_LUA_TOUCHED_RESPONSE)) {
        table_message(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return 1;
        lua_getfield(L, -1, "content");
        push_content(L, lua_gettop(L));
        return 1;
    }
    const char *v, *e;
    if (answer_span(lr, &v, &e) != 0 || push_jstring(L, v, e) != 0)
        lua_pushnil(L);
    return 1;
}

int
sl_lua_answer_set(lua_State *L, sl_lua_req_t *lr, int idx) {
    if (lr->stage != SL_LUA_STAGE_RESPONSE)
        return luaL_error(L, "ctx.answer: can be set in on_response only");
    if (lua_type(L, idx) != LUA_TSTRING)
        return luaL_error(L, "ctx.answer: must be a string");
    if (made(L, lr, 1, "response", SL_LUA_TOUCHED_RESPONSE)) {
        table_message(L, lua_gettop(L));
        if (!lua_istable(L, -1))
            return luaL_error(L, "ctx.answer: the answer has no message");
        lua_pushvalue(L, idx);
        lua_setfield(L, -2, "content");
        return 0;
    }
    const char *v, *e;
    if (answer_span(lr, &v, &e) != 0)
        return luaL_error(L, "ctx.answer: the answer has no message "
                             "content");
    size_t len;
    char *body = splice(L, lr, lr->ans_body, lr->ans_len, v, e, idx, &len);
    if (body == NULL)
        return luaL_error(L, "ctx.answer: out of memory");
    lr->ans_e = lr->ans_e + len - lr->ans_len;
    lr->ans_body = body;
    lr->ans_owned = 1;
    lr->ans_len = len;
    return 0;
}
