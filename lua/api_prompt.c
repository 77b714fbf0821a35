/* sluice.prompt.render(name, vars [, version]): a stored template with
 * vars filled in. The config's $.prompts first (compiled with the
 * snapshot); else the store's prompts database, key "NAME@VERSION" (or
 * "NAME" for no version), compiled when rendered. */
#include "error.h"
#include "lua_int.h"
#include "store.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pushes vars[a][b]... for the dotted name; nil when a part is absent. */
static void
push_var(lua_State *L, int vars, const char *name, size_t len) {
    const char *p = name, *end = name + len;
    lua_pushvalue(L, vars);
    while (p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *e = dot ? dot : end;
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        lua_pushlstring(L, p, (size_t)(e - p));
        lua_gettable(L, -2);
        lua_remove(L, -2);
        p = dot ? dot + 1 : end;
    }
}

/* Renders t with the table at vars; pushes the text, or nil and an error. */
static int
render(lua_State *L, const sl_template_t *t, int vars, const char *pname) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < t->nsegs; i++) {
        const sl_template_seg_t *s = &t->segs[i];
        if (!s->var) {
            luaL_addlstring(&b, s->text, s->len);
            continue;
        }
        push_var(L, vars, s->text, s->len);
        int type = lua_type(L, -1);
        if (type == LUA_TBOOLEAN) {
            lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
            lua_remove(L, -2);
        } else if (type != LUA_TSTRING && type != LUA_TNUMBER) {
            char msg[300];
            lua_pop(L, 1);
            luaL_pushresult(&b);
            lua_pop(L, 1);
            snprintf(msg, sizeof(msg), "prompt '%s': variable '%.*s' is %s",
                     pname, (int)(s->len > 100 ? 100 : s->len), s->text,
                     type == LUA_TNIL ? "missing" : "not a string or number");
            lua_pushnil(L);
            lua_pushstring(L, msg);
            return 2;
        }
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

static int
l_render(lua_State *L) {
    sl_lua_inv_t *inv = sl_lua_running(L, "sluice.prompt.render", 0);
    const char *name = luaL_checkstring(L, 1);
    if (lua_isnoneornil(L, 2)) {
        lua_settop(L, 3);
        lua_newtable(L);
        lua_replace(L, 2);
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    const char *version = luaL_optstring(L, 3, NULL);
    const sl_lua_set_t *set = inv->vm->set;
    int known = 0;
    const sl_template_t *t =
        set ? sl_prompts_find(set->prompts, name, version, &known) : NULL;
    if (t != NULL)
        return render(L, t, 2, name);
    if (known) {
        lua_pushnil(L);
        lua_pushfstring(L, "prompt '%s' has no version '%s'", name,
                        version ? version : "(default)");
        return 2;
    }
    /* The store's prompts: only while serving a request. */
    sl_store_t *st =
        inv->lr && inv->lr->r->w->srv ? inv->lr->r->w->srv->store : NULL;
    if (st == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "no prompt '%s'", name);
        return 2;
    }
    lua_pushstring(L, name);
    if (version != NULL)
        lua_pushfstring(L, "@%s", version);
    else
        lua_pushliteral(L, "");
    lua_concat(L, 2);
    size_t klen, len = 0;
    const char *key = lua_tolstring(L, -1, &klen);
    int rc = klen > 0 && klen <= 400
                 ? sl_store_get(st, SL_STORE_PROMPTS, "prompt", key, klen, NULL,
                                0, &len, NULL)
                 : SL_ENOTFOUND;
    char *text = NULL;
    if (rc == SL_ETOOBIG || (rc == 0 && len == 0)) {
        text = malloc(len + 1);
        rc = text ? sl_store_get(st, SL_STORE_PROMPTS, "prompt", key, klen,
                                 text, len, &len, NULL)
                  : SL_ENOMEM;
    }
    if (rc != 0) {
        free(text);
        lua_pushnil(L);
        if (rc == SL_ENOTFOUND && version != NULL)
            lua_pushfstring(L, "no prompt '%s' version '%s'", name, version);
        else if (rc == SL_ENOTFOUND)
            lua_pushfstring(L, "no prompt '%s'", name);
        else
            lua_pushfstring(L, "prompt '%s': %s", name, sl_strerror(rc));
        return 2;
    }
    char err[200];
    sl_template_t *tpl = sl_template_compile(text, len, err, sizeof(err));
    free(text);
    if (tpl == NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "prompt '%s': %s", name, err);
        return 2;
    }
    /* render() raises only on memory: the template is freed either way
     * through a cleanup of the request. */
    if (sl_arena_cleanup_add(inv->lr->r->arena, (sl_cleanup_fn)sl_template_free,
                             tpl) != 0) {
        sl_template_free(tpl);
        return luaL_error(L, "sluice.prompt.render: out of memory");
    }
    return render(L, tpl, 2, name);
}

void
sl_lua_api_prompt(lua_State *L) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_render);
    lua_setfield(L, -2, "render");
    sl_lua_freeze(L);
    lua_setfield(L, -2, "prompt");
}
