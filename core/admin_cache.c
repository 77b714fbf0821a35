/* DELETE /admin/cache: the cache plugin (plugins/cache) keeps its entries
 * in its kv namespace under "e:" MODEL "\0" HASH, and its eviction ring
 * under "ring:"; purging all deletes the lot, purging a model deletes the
 * keys with that model's prefix, purging a key the entry with that
 * HASH. Deletes are queued to the store writer: they are visible within
 * milliseconds of the answer. */
#include "admin_cache.h"
#include "error.h"
#include "plugin.h"
#include "snapshot.h"
#include "store.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *prefix;
    size_t plen;
    const char *hash; /* ?key=: only the entry whose key ends with it */
    char **keys;
    size_t *lens;
    size_t n, cap;
    int oom;
} purge_t;

static int
collect(void *ud, const void *key, size_t klen, const void *val, size_t vlen,
        int64_t expires_at)
{
    purge_t *p = ud;
    if (klen < p->plen || memcmp(key, p->prefix, p->plen) != 0)
        return p->plen > 0 ? 1 : 0; /* past the model's keys: stop */
    if (p->hash != NULL &&
        (klen < 64 || memcmp((const char *)key + klen - 64, p->hash, 64) != 0))
        return 0;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        char **k = realloc(p->keys, cap * sizeof(*k));
        if (k != NULL)
            p->keys = k;
        size_t *l = realloc(p->lens, cap * sizeof(*l));
        if (l != NULL)
            p->lens = l;
        if (k == NULL || l == NULL) {
            p->oom = 1;
            return 1;
        }
        p->cap = cap;
    }
    if ((p->keys[p->n] = malloc(klen)) == NULL) {
        p->oom = 1;
        return 1;
    }
    memcpy(p->keys[p->n], key, klen);
    p->lens[p->n++] = klen;
    return 0;
}

/* The decoded value of `name` in the query string, or NULL; arena. */
static char *
query_param(sl_request_t *r, const char *name)
{
    const char *q = memchr(r->http.target, '?', r->http.target_len);
    if (q == NULL)
        return NULL;
    const char *end = r->http.target + r->http.target_len;
    size_t nl = strlen(name);
    for (const char *s = q + 1; s < end;) {
        const char *amp = memchr(s, '&', (size_t)(end - s));
        const char *e = amp ? amp : end;
        if ((size_t)(e - s) > nl && memcmp(s, name, nl) == 0 && s[nl] == '=') {
            char *out = sl_arena_alloc(r->arena, (size_t)(e - s));
            size_t o = 0;
            if (out == NULL)
                return NULL;
            for (const char *c = s + nl + 1; c < e; c++) {
                unsigned v;
                if (*c == '%' && e - c > 2 && sscanf(c + 1, "%2x", &v) == 1) {
                    out[o++] = (char)v;
                    c += 2;
                } else {
                    out[o++] = *c == '+' ? ' ' : *c;
                }
            }
            out[o] = '\0';
            return out;
        }
        s = e + 1;
    }
    return NULL;
}

int
sl_admin_cache(sl_request_t *r)
{
    if (r->http.path_len != 12 || memcmp(r->http.path, "/admin/cache", 12) != 0)
        return 0;
    if (r->http.method != SL_METHOD_DELETE) {
        sl_response_error_with(r, 405, "use DELETE to purge the cache",
                               "method_not_allowed", "Allow: DELETE\r\n");
        return 1;
    }
    sl_store_t *st = r->w->srv->store;
    const sl_plugins_t *ps = r->snap != NULL ? r->snap->plugins : NULL;
    if (st == NULL) {
        sl_response_error(r, 503, "this gateway runs without a store",
                          "store_unavailable");
        return 1;
    }
    const char *model = query_param(r, "model");
    const char *hash = query_param(r, "key");
    if (hash != NULL && strlen(hash) != 64) {
        sl_response_error(r, 400, "key: the 64 hex digits of a cache key "
                                  "(the access log's cache_key)",
                          "invalid_key");
        return 1;
    }
    char prefix[300];
    size_t plen = 0;
    if (model != NULL) {
        size_t ml = strlen(model);
        if (ml == 0 || ml + 3 > sizeof(prefix)) {
            sl_response_error(r, 400, "model: 1..296 bytes", "invalid_model");
            return 1;
        }
        memcpy(prefix, "e:", 2);
        memcpy(prefix + 2, model, ml + 1);
        plen = ml + 3; /* with the NUL that ends the model */
    }
    long purged = 0;
    int failed = 0;
    size_t instances = 0;
    for (size_t i = 0; ps != NULL && i < ps->ninsts; i++) {
        const sl_plugin_inst_t *in = &ps->insts[i];
        if (in->desc.name == NULL || strcmp(in->desc.name, "cache") != 0)
            continue;
        instances++;
        purge_t p = {.prefix = prefix, .plen = plen, .hash = hash};
        if (sl_store_scan(st, SL_STORE_KV, in->kv_ns, prefix, plen, collect,
                          &p) != 0 ||
            p.oom)
            failed = 1;
        for (size_t k = 0; k < p.n; k++) {
            if (sl_store_del_async(st, SL_STORE_KV, in->kv_ns, p.keys[k],
                                   p.lens[k], NULL, NULL) == 0 &&
                (p.lens[k] < 5 || memcmp(p.keys[k], "ring:", 5) != 0))
                purged++;
            free(p.keys[k]);
        }
        free(p.keys);
        free(p.lens);
    }
    if (failed) {
        sl_response_error(r, 500, "could not read the whole cache",
                          "store_error");
        return 1;
    }
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"purged\":%ld,\"instances\":%zu,\"model\":", purged,
                     instances);
    if (model == NULL)
        n += snprintf(body + n, sizeof(body) - (size_t)n, "null}");
    else {
        body[n++] = '"';
        size_t e = sl_json_escape(body, sizeof(body) - 3, (size_t)n, model,
                                  strlen(model));
        n = (int)(e < sizeof(body) - 3 ? e : sizeof(body) - 3);
        n += snprintf(body + n, sizeof(body) - (size_t)n, "\"}");
    }
    char *out = sl_arena_strndup(r->arena, body, (size_t)n);
    if (out == NULL)
        sl_response_error(r, 503, "out of memory", "server_busy");
    else
        sl_response_send(r, 200, "application/json", NULL, out, (size_t)n);
    return 1;
}
