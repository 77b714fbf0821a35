#include "snapshot.h"
#include "request.h"
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>

/* A provider's request header lines, as one block built at load: a
 * request copies it into its head with one memcpy. */
static sl_headers_t *
headers_for(const sl_provider_t *p, int stream)
{
    char version[160] = "";
    if (p->type == SL_PROVIDER_ANTHROPIC)
        snprintf(version, sizeof(version), "anthropic-version: %s\r\n",
                 p->anthropic_version);
    const char *auth = p->auth_header != NULL ? p->auth_header : "";
    int n = snprintf(NULL, 0, "Content-Type: application/json\r\n"
                              "Accept: %s\r\n%s%s%s",
                     stream ? "text/event-stream" : "application/json",
                     version, auth, *auth ? "\r\n" : "");
    sl_headers_t *h = malloc(sizeof(*h) + (size_t)n + 1);
    if (h == NULL)
        return NULL;
    char *d = (char *)(h + 1);
    snprintf(d, (size_t)n + 1, "Content-Type: application/json\r\n"
                               "Accept: %s\r\n%s%s%s",
             stream ? "text/event-stream" : "application/json", version, auth,
             *auth ? "\r\n" : "");
    h->data = d;
    h->len = (size_t)n;
    h->next = NULL;
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
        sl_headers_free(s->provider_headers[i]);
        sl_headers_free(s->provider_stream_headers[i]);
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
