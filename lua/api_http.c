/* sluice.http.request and sluice.sleep: both wait on the worker's event
 * loop (the upstream client for HTTP, a timer for sleep). */
#include "clock.h"
#include "error.h"
#include "lua_int.h"
#include "upstream.h"
#include "worker.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LUA_HTTP_TIMEOUT_MS 10000

typedef struct {
    sl_lua_op_t op;
    sl_lua_inv_t *inv;
    sl_upcall_t *up;
    sl_headers_t *headers;
    struct evbuffer *body;
    struct evbuffer *head; /* "name\0value\0" pairs of the last head */
    size_t cap;
    int too_big;
} http_op_t;

static void
http_cleanup(void *arg) {
    http_op_t *o = arg;
    if (o->up != NULL)
        sl_upcall_cancel(o->up); /* before the headers it points to go */
    o->up = NULL;
    sl_headers_free(o->headers);
    o->headers = NULL;
    if (o->body != NULL)
        evbuffer_free(o->body);
    if (o->head != NULL)
        evbuffer_free(o->head);
    o->body = o->head = NULL;
}

static void
http_cancel(sl_lua_op_t *op) {
    http_op_t *o = (http_op_t *)op;
    if (o->up != NULL)
        sl_upcall_cancel(o->up);
    o->up = NULL;
}

static int
on_data(void *ud, int status, const char *data, size_t len) {
    http_op_t *o = ud;
    if (evbuffer_get_length(o->body) + len > o->cap) {
        o->too_big = 1;
        return 1;
    }
    return evbuffer_add(o->body, data, len) != 0;
}

static void
on_header(void *ud, const char *line, size_t len) {
    http_op_t *o = ud;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        evbuffer_drain(o->head, evbuffer_get_length(o->head));
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (colon == NULL)
        return;
    char name[256];
    size_t n = (size_t)(colon - line);
    if (n >= sizeof(name))
        return;
    for (size_t i = 0; i < n; i++)
        name[i] = (char)tolower((unsigned char)line[i]);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    evbuffer_add(o->head, name, n);
    evbuffer_add(o->head, "", 1);
    evbuffer_add(o->head, v, (size_t)(end - v));
    evbuffer_add(o->head, "", 1);
}

static void
push_headers(lua_State *co, struct evbuffer *head) {
    size_t n = evbuffer_get_length(head);
    const char *p = n ? (const char *)evbuffer_pullup(head, -1) : "";
    const char *end = p + n;
    lua_newtable(co);
    while (p < end) {
        const char *name = p;
        const char *val = name + strlen(name) + 1;
        if (val >= end)
            break;
        lua_pushstring(co, name);
        lua_pushvalue(co, -1);
        lua_rawget(co, -3);
        if (lua_isstring(co, -1)) {
            lua_pushliteral(co, ", ");
            lua_pushstring(co, val);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushstring(co, val);
        }
        lua_rawset(co, -3);
        p = val + strlen(val) + 1;
    }
}

static void
on_done(void *ud, int result, int status, const char *why) {
    http_op_t *o = ud;
    sl_lua_inv_t *inv = o->inv;
    lua_State *co = inv->co;
    o->up = NULL;
    sl_lua_op_over(inv);
    if (result != 0) {
        lua_pushnil(co);
        if (o->too_big)
            lua_pushfstring(co, "the response is larger than %d bytes",
                            (int)o->cap);
        else if (result == SL_ETIMEDOUT)
            lua_pushliteral(co, "timed out");
        else
            lua_pushstring(co, why ? why : "request failed");
    } else {
        size_t n = evbuffer_get_length(o->body);
        lua_createtable(co, 0, 3);
        lua_pushinteger(co, status);
        lua_setfield(co, -2, "status");
        lua_pushlstring(co, n ? (const char *)evbuffer_pullup(o->body, -1) : "",
                        n);
        lua_setfield(co, -2, "body");
        push_headers(co, o->head);
        lua_setfield(co, -2, "headers");
        lua_pushnil(co);
    }
    sl_lua_inv_resume(inv, 2);
}

static const sl_upcall_ops_t http_ops = {on_data, on_done};

static const char *
opt_string(lua_State *L, const char *key, const char *def) {
    lua_getfield(L, 1, key);
    const char *s = lua_isnil(L, -1) ? def : lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "sluice.http.request: '%s' must be a string", key);
    lua_pop(L, 1); /* the string stays alive in the argument table */
    return s;
}

/* sluice.http.request{url=, method="GET", headers={}, body=, timeout=}
 *   -> {status=, headers={}, body=} | nil, err */
static int
l_request(lua_State *L) {
    static const char *const methods[] = {"GET",    "POST", "PUT", "PATCH",
                                          "DELETE", "HEAD", NULL};
    sl_lua_inv_t *inv = sl_lua_yieldable(L, "sluice.http.request");
    sl_request_t *r = inv->lr->r;
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *url = opt_string(L, "url", NULL);
    if (url == NULL ||
        (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0))
        return luaL_error(L, "sluice.http.request: 'url' must be an http:// "
                             "or https:// URL");
    char method[16];
    const char *m = opt_string(L, "method", "GET");
    size_t i;
    for (i = 0; m[i] != '\0' && i + 1 < sizeof(method); i++)
        method[i] = (char)toupper((unsigned char)m[i]);
    method[i] = '\0';
    int known = 0;
    for (const char *const *k = methods; *k != NULL; k++)
        known |= strcmp(*k, method) == 0;
    if (!known)
        return luaL_error(L, "sluice.http.request: unknown method '%s'", m);
    lua_getfield(L, 1, "timeout");
    double secs = lua_isnil(L, -1) ? SL_LUA_HTTP_TIMEOUT_MS / 1000.0
                                   : lua_tonumber(L, -1);
    if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || !(secs > 0)))
        return luaL_error(L, "sluice.http.request: 'timeout' must be a "
                             "positive number of seconds");
    lua_pop(L, 1);
    long timeout_ms = secs > 3600 ? 3600000 : (long)ceil(secs * 1000.0);

    http_op_t *o = sl_arena_calloc(r->arena, sizeof(*o));
    if (o == NULL || sl_arena_cleanup_add(r->arena, http_cleanup, o) != 0)
        return luaL_error(L, "sluice.http.request: out of memory");
    o->op.cancel = http_cancel;
    o->op.what = "sluice.http.request";
    o->inv = inv;
    o->cap = r->cfg->limits.max_response_bytes;
    o->body = evbuffer_new();
    o->head = evbuffer_new();
    if (o->body == NULL || o->head == NULL)
        return luaL_error(L, "sluice.http.request: out of memory");

    /* The body: a string as it is, a table as JSON. */
    const char *body = NULL;
    size_t blen = 0;
    int json_body = 0;
    lua_getfield(L, 1, "body");
    if (lua_istable(L, -1)) {
        char err[200];
        char *s = sl_lua_json_encode(L, -1, &blen, err, sizeof(err));
        if (s == NULL)
            return luaL_error(L, "sluice.http.request: body: %s", err);
        body = sl_arena_strndup(r->arena, s, blen);
        free(s);
        json_body = 1;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, -1, &blen);
        char *copy = sl_arena_alloc(r->arena, blen + 1);
        if (copy != NULL) {
            memcpy(copy, s, blen);
            copy[blen] = '\0';
        }
        body = copy;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "sluice.http.request: 'body' must be a string "
                             "or a table");
    }
    lua_pop(L, 1);
    if (blen > 0 && body == NULL)
        return luaL_error(L, "sluice.http.request: out of memory");

    int have_type = 0;
    lua_getfield(L, 1, "headers");
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            size_t nl, vl;
            const char *name = lua_type(L, -2) == LUA_TSTRING
                                   ? lua_tolstring(L, -2, &nl)
                                   : NULL;
            const char *val =
                lua_isstring(L, -1) ? lua_tolstring(L, -1, &vl) : NULL;
            if (name == NULL || val == NULL || nl == 0 ||
                strcspn(name, "\r\n: \t") != nl || strcspn(val, "\r\n") != vl)
                return luaL_error(L, "sluice.http.request: headers must map "
                                     "names to string values (no line "
                                     "breaks)");
            /* The client frames the request itself. */
            if (strcasecmp(name, "host") == 0 ||
                strcasecmp(name, "content-length") == 0 ||
                strcasecmp(name, "transfer-encoding") == 0) {
                lua_pop(L, 1);
                continue;
            }
            char *line = sl_arena_printf(r->arena, "%s: %s", name, val);
            sl_headers_t *h =
                line ? sl_headers_append(o->headers, line) : NULL;
            if (h == NULL)
                return luaL_error(L, "sluice.http.request: out of memory");
            o->headers = h;
            have_type |= strcasecmp(name, "content-type") == 0;
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "sluice.http.request: 'headers' must be a "
                             "table");
    }
    lua_pop(L, 1);
    if (json_body && !have_type) {
        sl_headers_t *h =
            sl_headers_append(o->headers, "Content-Type: application/json");
        if (h == NULL)
            return luaL_error(L, "sluice.http.request: out of memory");
        o->headers = h;
    }

    sl_upcall_params_t p = {
        .url = url,
        .headers = o->headers,
        .body = body,
        .body_len = blen,
        .connect_timeout_ms = timeout_ms,
        .first_byte_timeout_ms = 0,
        .timeout_ms = timeout_ms,
        .method = method,
        .on_header = on_header,
    };
    o->up = sl_upcall_start(r->w->upstream, &p, &http_ops, o);
    if (o->up == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "cannot start the request");
        return 2;
    }
    return sl_lua_wait(L, inv, &o->op);
}

/* ---- sleep ---- */

typedef struct {
    sl_lua_op_t op;
    sl_lua_inv_t *inv;
    struct event *ev;
} sleep_op_t;

static void
sleep_cleanup(void *arg) {
    sleep_op_t *o = arg;
    if (o->ev != NULL)
        event_free(o->ev);
    o->ev = NULL;
}

static void
sleep_cancel(sl_lua_op_t *op) {
    sleep_cleanup(op);
}

static void
on_wake(evutil_socket_t fd, short what, void *arg) {
    sleep_op_t *o = arg;
    sl_lua_inv_t *inv = o->inv;
    sleep_cleanup(o);
    sl_lua_op_over(inv);
    sl_lua_inv_resume(inv, 0);
}

/* sluice.sleep(seconds) */
static int
l_sleep(lua_State *L) {
    sl_lua_inv_t *inv = sl_lua_yieldable(L, "sluice.sleep");
    double secs = luaL_checknumber(L, 1);
    if (!(secs >= 0) || secs > 86400)
        return luaL_error(L, "sluice.sleep: seconds must be 0..86400");
    sl_request_t *r = inv->lr->r;
    sleep_op_t *o = sl_arena_calloc(r->arena, sizeof(*o));
    if (o == NULL || sl_arena_cleanup_add(r->arena, sleep_cleanup, o) != 0)
        return luaL_error(L, "sluice.sleep: out of memory");
    o->op.cancel = sleep_cancel;
    o->op.what = "sluice.sleep";
    o->inv = inv;
    o->ev = evtimer_new(r->w->base, on_wake, o);
    long long us = (long long)(secs * 1e6);
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    if (o->ev == NULL || evtimer_add(o->ev, &tv) != 0)
        return luaL_error(L, "sluice.sleep: out of memory");
    return sl_lua_wait(L, inv, &o->op);
}

void
sl_lua_api_http(lua_State *L) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_request);
    lua_setfield(L, -2, "request");
    sl_lua_freeze(L);
    lua_setfield(L, -2, "http");
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
}
