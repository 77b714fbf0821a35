/* A config snapshot: the validated config and everything derived from it
 * at load (header lists, the models list, plugin instances). Immutable once
 * published. A reload publishes a new one; requests finish on the one they
 * started with, and a snapshot is freed when its last request ends.
 *
 * Counting costs the request path no shared write: each worker counts its
 * own requests on a snapshot (refs[worker], touched by that worker only);
 * `holders` (atomic) counts the workers that still use it, and drops when a
 * worker has switched to a newer snapshot and its last request on the old
 * one has ended. */
#ifndef SL_SNAPSHOT_H
#define SL_SNAPSHOT_H

#include "config.h"

#include "upstream.h"
#include <stdatomic.h>
#include <stdint.h>

typedef struct sl_snapshot {
    sl_config_t *cfg;
    uint64_t generation;
    char *models_json; /* the GET /v1/models answer */
    /* Per provider, parallel to cfg->providers. */
    sl_headers_t **provider_headers; /* one block of lines each */
    sl_headers_t **provider_stream_headers;
    void *plugins; /* the plugin instances of this config (plugin.h) */
    struct ssl_ctx_st **tls; /* per listen entry; NULL where plain */
    void (*plugins_free)(void *plugins);
    /* The snapshot published after this one (set once, before the workers
     * are told): a worker that missed one on its way to the newest still
     * retires it, or its hold would keep it, and its plugins, forever. */
    _Atomic(struct sl_snapshot *) next;
    /* The routes' Lua scripts and the workers' Lua states (lua/host.h);
     * NULL when the config has no script. */
    void *lua;
    void (*lua_free)(void *lua);

    atomic_int holders; /* threads holding it, +1 while it is current */
    int nslots;
    long *refs;             /* per worker slot: requests in flight */
    unsigned char *retired; /* per worker slot: switched to a newer one */
} sl_snapshot_t;

/* Builds a snapshot that owns cfg (freed with it, also on failure).
 * nslots is the number of threads that serve requests on it. NULL on OOM. */
sl_snapshot_t *sl_snapshot_new(sl_config_t *cfg, int nslots,
                               uint64_t generation);

/* A request on worker `slot` starts / ends on s. */
static inline void
sl_snapshot_hold(sl_snapshot_t *s, int slot)
{
    s->refs[slot]++;
}
void sl_snapshot_release(sl_snapshot_t *s, int slot);

/* Worker `slot` has moved to a newer snapshot; s goes once its requests
 * there have ended. */
void sl_snapshot_retire(sl_snapshot_t *s, int slot);

/* Gives up one holder; the last one frees the snapshot. */
void sl_snapshot_drop(sl_snapshot_t *s);

#endif
