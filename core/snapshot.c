#include "snapshot.h"
#include "request.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>

static struct curl_slist *
headers_for(const sl_provider_t *p, int stream)
{
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, stream ? "Accept: text/event-stream"
                                    : "Accept: application/json");
    /* No "Expect: 100-continue" round trip before the body. */
    h = curl_slist_append(h, "Expect:");
    if (p->type == SL_PROVIDER_ANTHROPIC) {
        char v[160];
        snprintf(v, sizeof(v), "anthropic-version: %s", p->anthropic_version);
        h = curl_slist_append(h, v);
    }
    if (p->auth_header != NULL)
        h = curl_slist_append(h, p->auth_header);
    return h;
}

static void
snapshot_free(sl_snapshot_t *s)
{
    if (s->lua != NULL && s->lua_free != NULL)
        s->lua_free(s->lua);
    if (s->plugins != NULL && s->plugins_free != NULL)
        s->plugins_free(s->plugins);
    sl_tls_free(s->tls, s->cfg->nlisten);
    for (size_t i = 0; s->provider_headers && i < s->cfg->nproviders; i++) {
        curl_slist_free_all(s->provider_headers[i]);
        curl_slist_free_all(s->provider_stream_headers[i]);
    }
    free(s->provider_headers);
    free(s->provider_stream_headers);
    free(s->models_json);
    free(s->refs);
    free(s->retired);
    sl_config_free(s->cfg);
    free(s);
}

sl_snapshot_t *
sl_snapshot_new(sl_config_t *cfg, int nslots, uint64_t generation)
{
    sl_snapshot_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        sl_config_free(cfg);
        return NULL;
    }
    s->cfg = cfg;
    s->generation = generation;
    s->nslots = nslots;
    s->refs = calloc((size_t)nslots, sizeof(long));
    s->retired = calloc((size_t)nslots, 1);
    s->provider_headers = calloc(cfg->nproviders + 1, sizeof(void *));
    s->provider_stream_headers = calloc(cfg->nproviders + 1, sizeof(void *));
    s->models_json = sl_models_json_build(cfg);
    if (s->refs == NULL || s->retired == NULL || s->provider_headers == NULL ||
        s->provider_stream_headers == NULL || s->models_json == NULL)
        goto fail;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        s->provider_headers[i] = headers_for(&cfg->providers[i], 0);
        s->provider_stream_headers[i] = headers_for(&cfg->providers[i], 1);
        if (s->provider_headers[i] == NULL ||
            s->provider_stream_headers[i] == NULL)
            goto fail;
    }
    /* Every worker slot holds it until it retires it, plus the server. */
    atomic_init(&s->holders, nslots + 1);
    return s;
fail:
    snapshot_free(s);
    return NULL;
}

void
sl_snapshot_drop(sl_snapshot_t *s)
{
    if (atomic_fetch_sub(&s->holders, 1) == 1)
        snapshot_free(s);
}

void
sl_snapshot_release(sl_snapshot_t *s, int slot)
{
    if (--s->refs[slot] == 0 && s->retired[slot])
        sl_snapshot_drop(s);
}

void
sl_snapshot_retire(sl_snapshot_t *s, int slot)
{
    s->retired[slot] = 1;
    if (s->refs[slot] == 0)
        sl_snapshot_drop(s);
}
