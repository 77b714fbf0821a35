/* sluice.kv: a key-value store in LMDB, one namespace per route.
 *
 * Reads are direct (a short read transaction, never held across a
 * yield). Writes go through the store's writer thread and the script
 * waits until they are committed, so a read after a write sees it; the
 * writer's completion comes back through an eventfd owned jointly by the
 * writer's side and the worker's side (the last one to let go closes it),
 * since the request may be gone by the time the writer answers.
 *
 * Values are stored as JSON text. A counter (sluice.kv.incr) is the
 * store's 8-byte integer; JSON text of exactly 8 bytes gets a trailing
 * space, so the two never look alike. */
#include "error.h"
#include "lua_int.h"
#include "store.h"
#include "worker.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define SL_LUA_KV_MAX (1u << 20)

/* Shared by the worker (event, Lua) and the writer thread (done). */
typedef struct {
    atomic_int refs;
    int fd;
    int rc;
    int64_t value;
} kv_done_t;

typedef struct {
    sl_lua_op_t op;
    sl_lua_inv_t *inv;
    kv_done_t *d;
    struct event *ev;
    int kind; /* 's' set, 'd' delete, 'i' incr */
} kv_op_t;

static void
done_drop(kv_done_t *d) {
    if (atomic_fetch_sub(&d->refs, 1) == 1) {
        close(d->fd);
        free(d);
    }
}

/* On the writer thread. */
static void
on_store_done(void *ud, int rc, int64_t value) {
    kv_done_t *d = ud;
    uint64_t one = 1;
    d->rc = rc;
    d->value = value;
    ssize_t n = write(d->fd, &one, sizeof(one));
    (void)n;
    done_drop(d);
}

static void
kv_release(kv_op_t *o) {
    if (o->ev != NULL)
        event_free(o->ev);
    o->ev = NULL;
    if (o->d != NULL)
        done_drop(o->d);
    o->d = NULL;
}

static void
kv_cleanup(void *arg) {
    kv_release(arg);
}

static void
kv_cancel(sl_lua_op_t *op) {
    kv_release((kv_op_t *)op);
}

static void
on_ready(evutil_socket_t fd, short what, void *arg) {
    kv_op_t *o = arg;
    sl_lua_inv_t *inv = o->inv;
    lua_State *co = inv->co;
    int rc = o->d->rc;
    int64_t value = o->d->value;
    kv_release(o);
    sl_lua_op_over(inv);
    if (rc == 0) {
        if (o->kind == 'i')
            lua_pushnumber(co, (lua_Number)value);
        else
            lua_pushboolean(co, 1);
        lua_pushnil(co);
    } else if (rc == SL_ENOTFOUND && o->kind == 'd') {
        lua_pushboolean(co, 0); /* nothing was there */
        lua_pushnil(co);
    } else {
        lua_pushnil(co);
        lua_pushstring(co, rc == SL_EINVAL && o->kind == 'i'
                               ? "the value is not a counter (or would "
                                 "overflow)"
                               : sl_strerror(rc));
    }
    sl_lua_inv_resume(inv, 2);
}

static sl_store_t *
store_of(lua_State *L, sl_lua_inv_t *inv, const char *fname) {
    sl_store_t *st = inv->lr->r->w->srv ? inv->lr->r->w->srv->store : NULL;
    (void)L;
    (void)fname;
    return st;
}

static const char *
check_key(lua_State *L, const char *fname, size_t *len) {
    const char *k = luaL_checklstring(L, 1, len);
    if (*len == 0 || *len > 400)
        luaL_error(L, "%s: a key is 1 to 400 bytes", fname);
    return k;
}

static int64_t
ttl_ms(lua_State *L, int idx, const char *fname) {
    if (lua_isnoneornil(L, idx))
        return 0;
    double s = luaL_checknumber(L, idx);
    if (!(s >= 0) || s > 1e9)
        luaL_error(L,
                   "%s: ttl must be 0 (none) or a positive number of "
                   "seconds",
                   fname);
    return (int64_t)ceil(s * 1000.0);
}

/* Queues a write and waits for it, or returns nil, err at once. */
static int
start_write(lua_State *L, sl_lua_inv_t *inv, int kind, const char *fname,
            const char *key, size_t klen, const char *val, size_t vlen,
            int64_t delta, int64_t ttl) {
    sl_request_t *r = inv->lr->r;
    sl_store_t *st = store_of(L, inv, fname);
    if (st == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "the store is not open");
        return 2;
    }
    kv_op_t *o = sl_arena_calloc(r->arena, sizeof(*o));
    if (o == NULL || sl_arena_cleanup_add(r->arena, kv_cleanup, o) != 0)
        return luaL_error(L, "%s: out of memory", fname);
    o->op.cancel = kv_cancel;
    o->op.what = fname;
    o->inv = inv;
    o->kind = kind;
    o->d = calloc(1, sizeof(*o->d));
    if (o->d == NULL)
        return luaL_error(L, "%s: out of memory", fname);
    o->d->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    atomic_init(&o->d->refs, 1);
    if (o->d->fd < 0) {
        free(o->d);
        o->d = NULL;
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    o->ev = event_new(r->w->base, o->d->fd, EV_READ, on_ready, o);
    if (o->ev == NULL || event_add(o->ev, NULL) != 0)
        return luaL_error(L, "%s: out of memory", fname);
    atomic_fetch_add(&o->d->refs, 1); /* the writer's */
    const char *ns = inv->script->kv_ns;
    int rc;
    if (kind == 's')
        rc = sl_store_put_async(st, SL_STORE_KV, ns, key, klen, val, vlen, ttl,
                                on_store_done, o->d);
    else if (kind == 'd')
        rc = sl_store_del_async(st, SL_STORE_KV, ns, key, klen, on_store_done,
                                o->d);
    else
        rc = sl_store_incr_async(st, SL_STORE_KV, ns, key, klen, delta, ttl,
                                 on_store_done, o->d);
    if (rc != 0) {
        done_drop(o->d); /* the writer will not run it */
        kv_release(o);
        lua_pushnil(L);
        lua_pushstring(L, sl_strerror(rc));
        return 2;
    }
    return sl_lua_wait(L, inv, &o->op);
}

/* sluice.kv.get(key) -> value | nil (absent) | nil, err */
static int
l_get(lua_State *L) {
    size_t klen;
    sl_lua_inv_t *inv = sl_lua_running(L, "sluice.kv.get", 1);
    const char *key = check_key(L, "sluice.kv.get", &klen);
    sl_store_t *st = store_of(L, inv, "sluice.kv.get");
    if (st == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "the store is not open");
        return 2;
    }
    char small[512];
    size_t len = 0;
    const char *ns = inv->script->kv_ns;
    int rc = sl_store_get(st, SL_STORE_KV, ns, key, klen, small, sizeof(small),
                          &len, NULL);
    char *buf = small;
    if (rc == SL_ETOOBIG) {
        buf = malloc(len);
        rc = buf ? sl_store_get(st, SL_STORE_KV, ns, key, klen, buf, len, &len,
                                NULL)
                 : SL_ENOMEM;
    }
    if (rc == SL_ENOTFOUND) {
        if (buf != small)
            free(buf);
        lua_pushnil(L);
        return 1;
    }
    if (rc != 0) {
        if (buf != small)
            free(buf);
        lua_pushnil(L);
        lua_pushstring(L, sl_strerror(rc));
        return 2;
    }
    if (len == 8) { /* a counter */
        int64_t v;
        memcpy(&v, buf, 8);
        if (buf != small)
            free(buf);
        lua_pushnumber(L, (lua_Number)v);
        return 1;
    }
    char err[120];
    int bad = sl_lua_json_decode(L, buf, len, err, sizeof(err));
    if (buf != small)
        free(buf);
    if (bad) {
        lua_pushnil(L);
        lua_pushliteral(L, "the stored value is not JSON");
        return 2;
    }
    return 1;
}

/* sluice.kv.set(key, value [, ttl_seconds]) -> true | nil, err */
static int
l_set(lua_State *L) {
    size_t klen;
    char err[200];
    sl_lua_inv_t *inv = sl_lua_yieldable(L, "sluice.kv.set");
    const char *key = check_key(L, "sluice.kv.set", &klen);
    luaL_checkany(L, 2);
    int64_t ttl = ttl_ms(L, 3, "sluice.kv.set");
    if (lua_isnil(L, 2))
        return luaL_error(L, "sluice.kv.set: the value is nil (use "
                             "sluice.kv.delete)");
    size_t n;
    char *s = sl_lua_json_encode(L, 2, &n, err, sizeof(err));
    if (s == NULL)
        return luaL_error(L, "sluice.kv.set: %s", err);
    char *val = sl_arena_alloc(inv->lr->r->arena, n + 2);
    if (val != NULL) {
        memcpy(val, s, n);
        if (n == 8)
            val[n++] = ' '; /* never mistaken for a counter */
        val[n] = '\0';
    }
    free(s);
    if (val == NULL)
        return luaL_error(L, "sluice.kv.set: out of memory");
    if (n > SL_LUA_KV_MAX)
        return luaL_error(L, "sluice.kv.set: the value is over %u bytes",
                          SL_LUA_KV_MAX);
    return start_write(L, inv, 's', "sluice.kv.set", key, klen, val, n, 0, ttl);
}

/* sluice.kv.delete(key) -> true (deleted) | false (absent) | nil, err */
static int
l_delete(lua_State *L) {
    size_t klen;
    sl_lua_inv_t *inv = sl_lua_yieldable(L, "sluice.kv.delete");
    const char *key = check_key(L, "sluice.kv.delete", &klen);
    return start_write(L, inv, 'd', "sluice.kv.delete", key, klen, NULL, 0, 0,
                       0);
}

/* sluice.kv.incr(key [, delta [, ttl_seconds]]) -> new value | nil, err */
static int
l_incr(lua_State *L) {
    size_t klen;
    sl_lua_inv_t *inv = sl_lua_yieldable(L, "sluice.kv.incr");
    const char *key = check_key(L, "sluice.kv.incr", &klen);
    double d = luaL_optnumber(L, 2, 1);
    if (d != floor(d) || fabs(d) > 9e15)
        return luaL_error(L, "sluice.kv.incr: delta must be an integer");
    int64_t ttl = ttl_ms(L, 3, "sluice.kv.incr");
    return start_write(L, inv, 'i', "sluice.kv.incr", key, klen, NULL, 0,
                       (int64_t)d, ttl);
}

void
sl_lua_api_kv(lua_State *L) {
    static const luaL_Reg fns[] = {{"get", l_get},
                                   {"set", l_set},
                                   {"delete", l_delete},
                                   {"incr", l_incr},
                                   {NULL, NULL}};
    lua_createtable(L, 0, 4);
    luaL_register(L, NULL, fns);
    sl_lua_freeze(L);
    lua_setfield(L, -2, "kv");
}
