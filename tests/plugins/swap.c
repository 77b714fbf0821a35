/* A plugin built twice, with SWAP_VERSION 1 and 2, for the binary-swap
 * reload test: each build says which it is in an "x-swap" header, and
 * marks the stream deltas it handles (v1 lower-cases them, v2
 * upper-cases them), so a test sees which code served every event of a
 * stream that was in flight when the library was swapped. Its config's
 * "tag" comes back in "x-swap-tag": a config-only change shows at once.
 * It also sets the request attributes its config lists ("name=value"),
 * as an auth plugin hands a key's limits to the rate limit. */
#include <sluice/plugin.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SWAP_VERSION
#error "build with -DSWAP_VERSION=1 or 2"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

static const sluice_config_field_t schema[] = {
    {"tag", SLUICE_CFG_STRING, "", 0, "echoed in the x-swap-tag header"},
    {"attrs", SLUICE_CFG_STRING_LIST, "[]", 0,
     "request attributes to set, each \"name=value\""},
    {"api_key", SLUICE_CFG_STRING, "", 0,
     "unused; a secret for the admin listing to redact"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct {
    const sluice_host_t *host;
    char tag[128];
    const sluice_config_t *config;
    size_t nattrs;
} swap_t;

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    (void)ctx;
    swap_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    const char *tag = "";
    host->config_string(config, "tag", &tag);
    snprintf(s->tag, sizeof(s->tag), "%s", tag);
    s->host = host;
    s->config = config;
    host->config_list_count(config, "attrs", &s->nattrs);
    *instance = s;
    return SLUICE_OK;
}

static void
destroy(void *instance) {
    free(instance);
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    swap_t *s = instance;
    s->host->response_header_set(req, "x-swap", "v" STR(SWAP_VERSION));
    s->host->response_header_set(req, "x-swap-tag", s->tag);
    for (size_t i = 0; i < s->nattrs; i++) {
        const char *a = NULL, *eq;
        char name[65];
        if (s->host->config_list_item(s->config, "attrs", i, &a) != SLUICE_OK ||
            (eq = strchr(a, '=')) == NULL || eq - a >= (long)sizeof(name))
            return SLUICE_ERROR;
        memcpy(name, a, (size_t)(eq - a));
        name[eq - a] = '\0';
        if (s->host->attr_set(req, name, eq + 1) != SLUICE_OK)
            return SLUICE_ERROR;
    }
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
on_chunk(void *instance, sluice_req_t *req) {
    swap_t *s = instance;
    const char *t;
    size_t len;
    if (s->host->delta_text(req, &t, &len) != SLUICE_OK)
        return SLUICE_CONTINUE;
    char *out = s->host->alloc(req, len + 1);
    if (out == NULL)
        return SLUICE_ERROR;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)(SWAP_VERSION == 1 ? tolower((unsigned char)t[i])
                                          : toupper((unsigned char)t[i]));
    return s->host->delta_set_text(req, out, len) == SLUICE_OK ? SLUICE_CONTINUE
                                                               : SLUICE_ERROR;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "swap",
    .version = STR(SWAP_VERSION) ".0.0",
    .description = "marks answers with the build that served them",
    .config_schema = schema,
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
    .on_chunk = on_chunk,
};
