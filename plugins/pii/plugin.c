/* The pii plugin's face to the gateway: the descriptor and config schema,
 * create() (which reads the config and compiles every pattern once), and
 * the hooks: mask every message on the way in, restore placeholders (and
 * optionally mask what the model produced) on the way out. */
#include "pii.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/plugin.h>

static const sluice_config_field_t schema[] = {
    {"mode", SLUICE_CFG_STRING, "tokenize", 0,
     "default mode of every detector: redact, mask or tokenize"},
    {"detectors", SLUICE_CFG_OBJECT, "{}", 0,
     "per detector (email, phone, card, iban, ssn, ipv4, ipv6, secret): "
     "false to turn off, a mode, or {\"enabled\":bool,\"mode\":MODE}"},
    {"custom", SLUICE_CFG_OBJECT, "{}", 0,
     "NAME: PCRE2 pattern, or {\"pattern\",\"mode\",\"label\"}"},
    {"restore", SLUICE_CFG_BOOL, "true", 0,
     "put the values back for tokenized placeholders in the answer"},
    {"scan_response", SLUICE_CFG_BOOL, "false", 0,
     "also mask PII the model produced in its answer"},
    {"response_mode", SLUICE_CFG_STRING, "redact", 0,
     "mode for PII found in answers: redact or mask"},
    {"conversation_header", SLUICE_CFG_STRING, "", 0,
     "request header naming the conversation; keeps its placeholder map "
     "in kv so later turns restore earlier placeholders (\"\": off)"},
    {"conversation_ttl_s", SLUICE_CFG_INT, "86400", 0,
     "how long a conversation's placeholder map is kept, in seconds"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct {
    const sluice_host_t *host;
    pii_detectors_t dets;
    int restore, scan_response, any_tokenize;
    pii_mode_t response_mode;
    const char *conv_header;
    int64_t conv_ttl_ms;
} pii_inst_t;

typedef struct {
    pii_map_t map;
    pii_stream_t st;
    size_t loaded; /* entries that came from the conversation */
} pii_req_t;

/* The allocator for one hook: the request arena. */
typedef struct {
    sluice_req_t *req;
    const sluice_host_t *host;
    pii_alloc_t a;
} hook_mem_t;

static void *
host_alloc(void *ud, size_t n) {
    hook_mem_t *m = ud;
    return m->host->alloc(m->req, n);
}

static void
hook_mem(hook_mem_t *m, const pii_inst_t *in, sluice_req_t *req) {
    m->req = req;
    m->host = in->host;
    m->a.fn = host_alloc;
    m->a.ud = m;
}

/* ---- config ---- */

static int
parse_mode(const char *s, pii_mode_t *mode) {
    static const char *const names[] = {"redact", "mask", "tokenize"};
    for (int i = 0; i < 3; i++)
        if (s != NULL && strcmp(s, names[i]) == 0) {
            *mode = (pii_mode_t)i;
            return 0;
        }
    return -1;
}

/* Appends a detector slot; NULL on OOM. */
static pii_detector_t *
slot(pii_detectors_t *ds) {
    pii_detector_t *d = realloc(ds->d, (ds->n + 1) * sizeof(*d));
    if (d == NULL)
        return NULL;
    ds->d = d;
    memset(&d[ds->n], 0, sizeof(*d));
    return &d[ds->n++];
}

static int
is_builtin(const char *name) {
    for (size_t i = 0; pii_builtin_names[i] != NULL; i++)
        if (strcmp(pii_builtin_names[i], name) == 0)
            return 1;
    return 0;
}

/* Custom patterns, before the built-ins: what the operator names wins an
 * overlap of equal length. */
static int
load_custom(pii_inst_t *in, const cJSON *custom, pii_mode_t dflt,
            const char *path, char *err, size_t errlen) {
    const cJSON *c;
    if (!cJSON_IsObject(custom)) {
        snprintf(err, errlen, "%s.custom: must be an object", path);
        return SLUICE_EINVAL;
    }
    cJSON_ArrayForEach(c, custom) {
        const char *name = c->string, *pattern = NULL, *label = NULL;
        pii_mode_t mode = dflt;
        const char *field = "";
        if (cJSON_IsString(c)) {
            pattern = c->valuestring;
        } else if (cJSON_IsObject(c)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, c) {
                if (strcmp(it->string, "pattern") == 0 && cJSON_IsString(it))
                    pattern = it->valuestring;
                else if (strcmp(it->string, "label") == 0 && cJSON_IsString(it))
                    label = it->valuestring;
                else if (strcmp(it->string, "mode") == 0 &&
                         cJSON_IsString(it)) {
                    if (parse_mode(it->valuestring, &mode) != 0) {
                        snprintf(err, errlen,
                                 "%s.custom.%s.mode: '%s' is not redact, "
                                 "mask or tokenize",
                                 path, name, it->valuestring);
                        return SLUICE_EINVAL;
                    }
                } else {
                    snprintf(err, errlen,
                             "%s.custom.%s.%s: unknown key or wrong type "
                             "(pattern, label, mode: strings)",
                             path, name, it->string);
                    return SLUICE_EINVAL;
                }
            }
            field = ".pattern";
        }
        if (pattern == NULL) {
            snprintf(err, errlen,
                     "%s.custom.%s: needs a pattern (a string, or an object "
                     "with \"pattern\")",
                     path, name);
            return SLUICE_EINVAL;
        }
        char lab[64];
        size_t k = 0;
        for (const char *p = label ? label : name; *p && k < sizeof(lab) - 1;
             p++)
            lab[k++] = isalnum((unsigned char)*p) ? (char)toupper(*p) : '_';
        lab[k] = '\0';
        if (k == 0 || strlen(name) >= 60) {
            snprintf(err, errlen, "%s.custom.%s: bad name or label", path,
                     name);
            return SLUICE_EINVAL;
        }
        pii_detector_t *d = slot(&in->dets);
        if (d == NULL) {
            snprintf(err, errlen, "out of memory");
            return SLUICE_ENOMEM;
        }
        char msg[160];
        size_t off = 0;
        if (pii_detector_custom(d, name, lab, pattern, mode, &off, msg,
                                sizeof(msg)) != 0) {
            in->dets.n--;
            snprintf(err, errlen,
                     "%s.custom.%s%s: invalid regex at offset %zu: %s", path,
                     name, field, off, msg);
            return SLUICE_EINVAL;
        }
        in->any_tokenize |= mode == PII_MODE_TOKENIZE;
    }
    return SLUICE_OK;
}

static int
load_builtins(pii_inst_t *in, const cJSON *dets, pii_mode_t dflt,
              const char *path, char *err, size_t errlen) {
    const cJSON *c;
    if (!cJSON_IsObject(dets)) {
        snprintf(err, errlen, "%s.detectors: must be an object", path);
        return SLUICE_EINVAL;
    }
    cJSON_ArrayForEach(c, dets) {
        if (!is_builtin(c->string)) {
            snprintf(err, errlen,
                     "%s.detectors.%s: unknown detector (known: email, "
                     "phone, card, iban, ssn, ipv4, ipv6, secret)",
                     path, c->string);
            return SLUICE_EINVAL;
        }
    }
    for (size_t i = 0; pii_builtin_names[i] != NULL; i++) {
        const char *name = pii_builtin_names[i];
        c = cJSON_GetObjectItemCaseSensitive(dets, name);
        int on = 1;
        pii_mode_t mode = dflt;
        const cJSON *m = NULL;
        if (cJSON_IsBool(c)) {
            on = cJSON_IsTrue(c);
        } else if (cJSON_IsString(c)) {
            m = c;
        } else if (cJSON_IsObject(c)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, c) {
                if (strcmp(it->string, "enabled") == 0 && cJSON_IsBool(it))
                    on = cJSON_IsTrue(it);
                else if (strcmp(it->string, "mode") == 0 && cJSON_IsString(it))
                    m = it;
                else {
                    snprintf(err, errlen,
                             "%s.detectors.%s.%s: unknown key or wrong type "
                             "(enabled: bool, mode: string)",
                             path, name, it->string);
                    return SLUICE_EINVAL;
                }
            }
        } else if (c != NULL) {
            snprintf(err, errlen,
                     "%s.detectors.%s: expected a bool, a mode or an object",
                     path, name);
            return SLUICE_EINVAL;
        }
        if (m != NULL && parse_mode(m->valuestring, &mode) != 0) {
            snprintf(err, errlen,
                     "%s.detectors.%s%s: '%s' is not redact, mask or "
                     "tokenize",
                     path, name, m == c ? "" : ".mode", m->valuestring);
            return SLUICE_EINVAL;
        }
        if (!on)
            continue;
        char msg[160];
        if (pii_detectors_add_builtin(&in->dets, name, mode, msg,
                                      sizeof(msg)) != 0) {
            snprintf(err, errlen, "detector %s: %s", name, msg);
            return SLUICE_EINVAL;
        }
        in->any_tokenize |= mode == PII_MODE_TOKENIZE;
    }
    return SLUICE_OK;
}

static const char *
cfg_str(const sluice_host_t *h, const sluice_config_t *c, const char *k) {
    const char *v = NULL;
    return h->config_string(c, k, &v) == SLUICE_OK ? v : NULL;
}

static void destroy(void *instance);

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    if (host->abi_major != SLUICE_ABI_MAJOR ||
        !SLUICE_HOST_HAS(host, instance_name)) {
        snprintf(err, errlen, "needs Sluice plugin ABI 1.0 or later 1.x");
        return SLUICE_EINVAL;
    }
    char path[160];
    snprintf(path, sizeof(path), "$.plugins.%s.config",
             host->instance_name(ctx));
    pii_inst_t *in = calloc(1, sizeof(*in));
    if (in == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    in->host = host;
    int rc = SLUICE_EINVAL;
    pii_mode_t dflt;
    const char *s = cfg_str(host, config, "mode");
    if (parse_mode(s, &dflt) != 0) {
        snprintf(err, errlen, "%s.mode: '%s' is not redact, mask or tokenize",
                 path, s ? s : "");
        goto fail;
    }
    s = cfg_str(host, config, "response_mode");
    if (parse_mode(s, &in->response_mode) != 0 ||
        in->response_mode == PII_MODE_TOKENIZE) {
        snprintf(err, errlen, "%s.response_mode: '%s' is not redact or mask",
                 path, s ? s : "");
        goto fail;
    }
    host->config_bool(config, "restore", &in->restore);
    host->config_bool(config, "scan_response", &in->scan_response);
    in->conv_header = cfg_str(host, config, "conversation_header");
    if (in->conv_header != NULL && in->conv_header[0] == '\0')
        in->conv_header = NULL;
    int64_t ttl = 86400;
    host->config_int(config, "conversation_ttl_s", &ttl);
    if (ttl < 0 || ttl > INT64_MAX / 1000) {
        snprintf(err, errlen, "%s.conversation_ttl_s: must be >= 0", path);
        goto fail;
    }
    in->conv_ttl_ms = ttl * 1000;

    const char *json = NULL;
    cJSON *custom = NULL, *dets = NULL;
    if (host->config_json(config, "custom", &json) == SLUICE_OK)
        custom = cJSON_Parse(json);
    if (host->config_json(config, "detectors", &json) == SLUICE_OK)
        dets = cJSON_Parse(json);
    rc = load_custom(in, custom, dflt, path, err, errlen);
    if (rc == SLUICE_OK)
        rc = load_builtins(in, dets, dflt, path, err, errlen);
    cJSON_Delete(custom);
    cJSON_Delete(dets);
    if (rc != SLUICE_OK)
        goto fail;
    host->log(ctx, SLUICE_LOG_INFO, "%zu detectors compiled", in->dets.n);
    *instance = in;
    return SLUICE_OK;
fail:
    destroy(in);
    return rc;
}

static void
destroy(void *instance) {
    pii_inst_t *in = instance;
    if (in == NULL)
        return;
    pii_detectors_free(&in->dets);
    free(in);
}

/* ---- the conversation's map in kv ---- */

/* "conv\n<consumer>\n<id>": a conversation id is only good for the
 * consumer that made it. 0, or -1 when there is no (usable) id. */
static int
conv_key(const pii_inst_t *in, sluice_req_t *req, char *key, size_t cap,
         size_t *klen) {
    const char *id, *who = "";
    size_t idlen;
    if (in->conv_header == NULL ||
        in->host->request_header(req, in->conv_header, &id, &idlen) !=
            SLUICE_OK ||
        idlen == 0)
        return -1;
    in->host->consumer(req, &who);
    int n = snprintf(key, cap, "conv\n%s\n%.*s", who, (int)idlen, id);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    *klen = (size_t)n;
    return 0;
}

static void
conv_load(const pii_inst_t *in, sluice_req_t *req, pii_req_t *st,
          const pii_alloc_t *a) {
    char key[400];
    size_t klen, len = 0;
    if (conv_key(in, req, key, sizeof(key), &klen) != 0)
        return;
    int rc = in->host->kv_get(req, key, klen, NULL, 0, &len);
    if (rc != SLUICE_ETOOBIG || len == 0)
        return; /* none yet (or no store: the map lives one request) */
    char *buf = pii_alloc(a, len);
    if (buf == NULL ||
        in->host->kv_get(req, key, klen, buf, len, &len) != SLUICE_OK ||
        pii_map_decode(&st->map, buf, len, a) != 0)
        in->host->log(req, SLUICE_LOG_WARN, "conversation map unreadable");
    st->loaded = st->map.n;
}

static void
conv_save(const pii_inst_t *in, sluice_req_t *req, pii_req_t *st,
          const pii_alloc_t *a) {
    char key[400];
    size_t klen;
    pii_buf_t b = {0};
    if (st->map.n == st->loaded ||
        conv_key(in, req, key, sizeof(key), &klen) != 0)
        return;
    int rc = pii_map_encode(&st->map, &b, a) != 0
                 ? SLUICE_ENOMEM
                 : in->host->kv_set(req, key, klen, b.p, b.n, in->conv_ttl_ms);
    /* Without a store the map lives one request, as documented: not a
     * warning on every request. */
    if (rc != SLUICE_OK && rc != SLUICE_EUNAVAIL)
        in->host->log(req, SLUICE_LOG_WARN, "conversation map not saved (%d)",
                      rc);
}

/* ---- hooks ---- */

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    pii_inst_t *in = instance;
    const sluice_host_t *h = in->host;
    hook_mem_t mem;
    hook_mem(&mem, in, req);
    pii_req_t *st = pii_alloc(&mem.a, sizeof(*st));
    if (st == NULL)
        return SLUICE_ERROR;
    memset(st, 0, sizeof(*st));
    h->state_set(req, st);
    if (in->any_tokenize)
        conv_load(in, req, st, &mem.a);
    size_t count = 0, found = 0;
    if (h->message_count(req, &count) != SLUICE_OK)
        return SLUICE_CONTINUE; /* no messages: embeddings and the like */
    for (size_t i = 0; i < count; i++) {
        const char *text;
        size_t len, changed = 0;
        int rc = h->message_text(req, i, &text, &len);
        if (rc == SLUICE_ENOTFOUND)
            continue;
        pii_buf_t out = {0};
        /* Unreadable or unwritable means unmasked: refuse to send it. */
        if (rc != SLUICE_OK ||
            pii_rewrite(&in->dets, &st->map, -1, text, len, &out, &changed,
                        &mem.a) != 0 ||
            (changed > 0 &&
             h->message_set_text(req, i, out.p, out.n) != SLUICE_OK))
            return SLUICE_ERROR;
        found += changed;
    }
    if (found > 0)
        h->metric_add(req, "pii_values_masked_total", NULL, (double)found);
    if (in->any_tokenize)
        conv_save(in, req, st, &mem.a);
    return SLUICE_CONTINUE;
}

/* What a hook may restore: nothing when restoring is off. */
static const pii_map_t *
restore_map(const pii_inst_t *in, const pii_req_t *st) {
    static const pii_map_t empty = {0};
    return in->restore && st != NULL ? &st->map : &empty;
}

static sluice_verdict_t
on_response(void *instance, sluice_req_t *req) {
    pii_inst_t *in = instance;
    const sluice_host_t *h = in->host;
    const pii_map_t *map = restore_map(in, h->state_get(req));
    if (map->n == 0 && !in->scan_response)
        return SLUICE_CONTINUE;
    hook_mem_t mem;
    hook_mem(&mem, in, req);
    for (size_t c = 0;; c++) {
        const char *text, *orig;
        size_t len, olen, changed = 0;
        int rc = h->response_text(req, c, &text, &len);
        orig = text;
        olen = len;
        if (rc == SLUICE_ENOTFOUND)
            break;
        if (rc != SLUICE_OK)
            return SLUICE_ERROR;
        pii_buf_t scanned = {0}, out = {0};
        if (in->scan_response) {
            if (pii_rewrite(&in->dets, NULL, (int)in->response_mode, text, len,
                            &scanned, &changed, &mem.a) != 0)
                return SLUICE_ERROR;
            text = scanned.p;
            len = scanned.n;
        }
        if (pii_restore(map, text, len, &out, &mem.a) != 0)
            return SLUICE_ERROR;
        if (out.n == olen && memcmp(out.p, orig, olen) == 0)
            continue; /* nothing restored or masked */
        if (h->response_set_text(req, c, out.p, out.n) != SLUICE_OK)
            return SLUICE_ERROR;
    }
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
on_chunk(void *instance, sluice_req_t *req) {
    pii_inst_t *in = instance;
    const sluice_host_t *h = in->host;
    pii_req_t *st = h->state_get(req);
    const pii_map_t *map = restore_map(in, st);
    if (map->n == 0 && !in->scan_response)
        return SLUICE_CONTINUE; /* nothing to restore, nothing to check */
    if (st == NULL)
        return SLUICE_ERROR;
    hook_mem_t mem;
    hook_mem(&mem, in, req);
    const char *text;
    size_t len;
    pii_buf_t out = {0};
    int rc = h->delta_text(req, &text, &len);
    if (rc == SLUICE_ENOTFOUND) {
        /* No text here (the role or the finish event): the place to send
         * what was held back. An event that cannot carry it is one we do
         * not understand: fail closed rather than drop or leak. */
        if (st->st.pending.n == 0)
            return SLUICE_CONTINUE;
        if (pii_stream_feed(&st->st, map, in->scan_response ? &in->dets : NULL,
                            (int)in->response_mode, "", 0, 1, &out,
                            &mem.a) != 0 ||
            h->delta_set_text(req, out.p ? out.p : "", out.n) != SLUICE_OK) {
            h->log(req, SLUICE_LOG_WARN,
                   "stream event without a delta while text is held back: "
                   "ending the stream");
            return SLUICE_ERROR;
        }
        return SLUICE_CONTINUE;
    }
    if (rc != SLUICE_OK) {
        h->log(req, SLUICE_LOG_WARN, "unreadable stream event (%d)", rc);
        return SLUICE_ERROR;
    }
    /* Most events hold no '<' and nothing waits: they go as they are,
     * without a copy (request memory lives as long as the stream). */
    if (!in->scan_response && st->st.pending.n == 0 &&
        memchr(text, '<', len) == NULL)
        return SLUICE_CONTINUE;
    if (pii_stream_feed(&st->st, map, in->scan_response ? &in->dets : NULL,
                        (int)in->response_mode, text, len, 0, &out,
                        &mem.a) != 0)
        return SLUICE_ERROR;
    if (out.n == len && (len == 0 || memcmp(out.p, text, len) == 0))
        return SLUICE_CONTINUE;
    return h->delta_set_text(req, out.p ? out.p : "", out.n) == SLUICE_OK
               ? SLUICE_CONTINUE
               : SLUICE_ERROR;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "pii",
    .version = "1.0.0",
    .description = "masks personal data and secrets before the provider "
                   "sees them; restores tokenized values in the answer",
    .config_schema = schema,
    .fail_open = 0,
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
    .on_response = on_response,
    .on_chunk = on_chunk,
};
