/* The bundled auth plugin: API keys (managed by `sluice keys` and the admin
 * API, read from the gateway's KEYS database) and JWTs (HS256, RS256,
 * ES256). It names the consumer for the plugins after it and the access
 * log, and answers 401/403 in OpenAI's error shape. No credential is ever
 * logged. README.md has the config schema.
 *
 * Verified keys are kept in memory (a small table per instance, shared by
 * the workers without a lock), each with the KEYS database's version it
 * was read at: a request whose key is there, read at the version the
 * database still has, is let through without hashing the key or reading
 * the store. Any change to the database (a key made or revoked, here or
 * by `sluice keys` in another process) changes its version, and the next
 * request of every key reads its record again. */
#include "apikey.h"
#include "jwt.h"

#include <sluice/plugin.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define AUTH_CACHE_SLOTS 256 /* a power of two */
#define AUTH_CACHE_KEY_MAX 128

/* A verified key: written under a sequence lock (odd while a writer
 * fills it), read by copying and checking the sequence did not move. */
typedef struct {
    _Atomic uint64_t seq;
    uint64_t version; /* of the KEYS database when the record was read */
    size_t klen;
    char key[AUTH_CACHE_KEY_MAX];
    auth_key_info_t info;
} auth_cached_t;

typedef struct {
    const sluice_host_t *host;
    int api_keys;
    int client_certificates; /* mTLS: the gateway's consumer suffices */
    auth_jwt_t *jwt;         /* NULL: JWTs are not accepted */
    EVP_MD *sha256;       /* fetched once: OpenSSL 3 looks it up on each use */
    auth_cached_t *cache; /* NULL: every request reads its key's record */
} auth_t;

static const sluice_config_field_t schema[] = {
    {"api_keys", SLUICE_CFG_BOOL, "true", 0,
     "accept API keys made by `sluice keys create` or POST /admin/keys"},
    {"jwt_algorithms", SLUICE_CFG_STRING_LIST,
     "[\"HS256\",\"RS256\",\"ES256\"]", 0,
     "the JWT algorithms accepted (of HS256, RS256, ES256)"},
    {"jwt_secret_env", SLUICE_CFG_STRING, NULL, 0,
     "environment variable holding the HS256 secret (32 bytes or more)"},
    {"jwt_public_keys", SLUICE_CFG_STRING_LIST, "[]", 0,
     "PEM public key files (RSA for RS256, EC P-256 for ES256)"},
    {"jwks_file", SLUICE_CFG_STRING, NULL, 0,
     "a JWKS file (RSA, EC P-256 and oct keys, chosen by kid)"},
    {"jwt_issuer", SLUICE_CFG_STRING, NULL, 0,
     "when set, the iss claim must equal it"},
    {"jwt_audience", SLUICE_CFG_STRING_LIST, "[]", 0,
     "when not empty, the aud claim must hold one of these"},
    {"jwt_leeway_s", SLUICE_CFG_INT, "30", 0,
     "seconds of clock skew tolerated for exp and nbf"},
    {"consumer_claim", SLUICE_CFG_STRING, "sub", 0,
     "the JWT claim that names the consumer"},
    {"client_certificates", SLUICE_CFG_BOOL, "false", 0,
     "accept a request with no key or token when a verified TLS client "
     "certificate (mTLS) already named its consumer"},
    {NULL, 0, NULL, 0, NULL},
};

/* ---- create ---- */

static char *
read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap >= (1u << 20))
            break;
        char *b = realloc(buf, cap * 2);
        if (b == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    fclose(f);
    if (buf != NULL && n >= cap) {
        free(buf); /* over 1 MiB: not a key file */
        return NULL;
    }
    *len = n;
    return buf;
}

static int
setup_jwt(const sluice_host_t *h, const sluice_config_t *cfg, auth_t *a,
          char *err, size_t errlen) {
    size_t n = 0;
    unsigned algs = 0;
    const char *s;
    h->config_list_count(cfg, "jwt_algorithms", &n);
    for (size_t i = 0; i < n; i++) {
        h->config_list_item(cfg, "jwt_algorithms", i, &s);
        if (strcmp(s, "HS256") == 0)
            algs |= AUTH_ALG_HS256;
        else if (strcmp(s, "RS256") == 0)
            algs |= AUTH_ALG_RS256;
        else if (strcmp(s, "ES256") == 0)
            algs |= AUTH_ALG_ES256;
        else {
            snprintf(err, errlen,
                     "jwt_algorithms: '%.32s' is not one of HS256, RS256, "
                     "ES256",
                     s);
            return SLUICE_EINVAL;
        }
    }
    int64_t leeway = 30;
    const char *claim = "sub";
    h->config_int(cfg, "jwt_leeway_s", &leeway);
    h->config_string(cfg, "consumer_claim", &claim);
    if (leeway < 0 || leeway > 86400) {
        snprintf(err, errlen, "jwt_leeway_s must be 0..86400");
        return SLUICE_EINVAL;
    }
    a->jwt = auth_jwt_new(algs, leeway, claim);
    if (a->jwt == NULL)
        return SLUICE_ENOMEM;
    char why[200] = "";
    if (h->config_string(cfg, "jwt_secret_env", &s) == SLUICE_OK) {
        const char *secret = getenv(s);
        if (secret == NULL || secret[0] == '\0') {
            snprintf(err, errlen, "jwt_secret_env: $%.64s is not set", s);
            return SLUICE_EINVAL;
        }
        if (auth_jwt_add_secret(a->jwt, NULL, secret, strlen(secret), why,
                                sizeof(why)) != 0) {
            snprintf(err, errlen, "jwt_secret_env: %s", why);
            return SLUICE_EINVAL;
        }
    }
    n = 0;
    h->config_list_count(cfg, "jwt_public_keys", &n);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        h->config_list_item(cfg, "jwt_public_keys", i, &s);
        char *pem = read_file(s, &len);
        int rc = pem != NULL ? auth_jwt_add_pem(a->jwt, NULL, pem, len, why,
                                                sizeof(why))
                             : -1;
        free(pem);
        if (rc != 0) {
            snprintf(err, errlen, "jwt_public_keys: %.200s: %s", s,
                     pem != NULL ? why : "cannot read the file");
            return SLUICE_EINVAL;
        }
    }
    if (h->config_string(cfg, "jwks_file", &s) == SLUICE_OK) {
        size_t len = 0;
        char *doc = read_file(s, &len);
        int rc = doc != NULL
                     ? auth_jwt_add_jwks(a->jwt, doc, len, why, sizeof(why))
                     : -1;
        free(doc);
        if (rc != 0) {
            snprintf(err, errlen, "jwks_file: %.200s: %s", s,
                     doc != NULL ? why : "cannot read the file");
            return SLUICE_EINVAL;
        }
    }
    if (h->config_string(cfg, "jwt_issuer", &s) == SLUICE_OK &&
        auth_jwt_set_issuer(a->jwt, s) != 0)
        return SLUICE_ENOMEM;
    n = 0;
    h->config_list_count(cfg, "jwt_audience", &n);
    for (size_t i = 0; i < n; i++) {
        h->config_list_item(cfg, "jwt_audience", i, &s);
        if (auth_jwt_add_audience(a->jwt, s) != 0)
            return SLUICE_ENOMEM;
    }
    if (auth_jwt_key_count(a->jwt) == 0) {
        auth_jwt_free(a->jwt); /* no JWT keys configured: keys only */
        a->jwt = NULL;
    }
    return SLUICE_OK;
}

static int
create(const sluice_host_t *h, sluice_req_t *ctx, const sluice_config_t *cfg,
       void **instance, char *err, size_t errlen) {
    (void)ctx;
    auth_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return SLUICE_ENOMEM;
    a->host = h;
    h->config_bool(cfg, "api_keys", &a->api_keys);
    h->config_bool(cfg, "client_certificates", &a->client_certificates);
    if (a->api_keys && !SLUICE_HOST_HAS(h, keys_get)) {
        snprintf(err, errlen,
                 "api_keys needs a gateway with plugin ABI 1.1 "
                 "(keys_get)");
        free(a);
        return SLUICE_EINVAL;
    }
    if (a->api_keys) {
        a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (a->sha256 == NULL) {
            snprintf(err, errlen, "libcrypto has no SHA256");
            free(a);
            return SLUICE_EINVAL;
        }
        /* Without a way to tell a revocation, never cache. */
        if (SLUICE_HOST_HAS(h, keys_version))
            a->cache = calloc(AUTH_CACHE_SLOTS, sizeof(*a->cache));
    }
    int rc = setup_jwt(h, cfg, a, err, errlen);
    if (rc == SLUICE_OK && !a->api_keys && a->jwt == NULL) {
        snprintf(err, errlen,
                 "nothing to accept: api_keys is false and no "
                 "JWT key is configured");
        rc = SLUICE_EINVAL;
    }
    if (rc != SLUICE_OK) {
        if (err[0] == '\0')
            snprintf(err, errlen, "out of memory");
        auth_jwt_free(a->jwt);
        EVP_MD_free(a->sha256);
        free(a->cache);
        free(a);
        return rc;
    }
    *instance = a;
    return SLUICE_OK;
}

static void
destroy(void *instance) {
    auth_t *a = instance;
    if (a != NULL) {
        auth_jwt_free(a->jwt);
        EVP_MD_free(a->sha256);
        free(a->cache);
    }
    free(a);
}

/* ---- requests ---- */

static sluice_verdict_t
refuse(const auth_t *a, sluice_req_t *req, int status, const char *type,
       const char *code, const char *message) {
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"message\":\"%s\",\"type\":\"%s\","
                     "\"code\":\"%s\"}}",
                     message, type, code);
    char labels[96];
    snprintf(labels, sizeof(labels), "code=\"%s\"", code);
    a->host->metric_add(req, "auth_rejected_total", labels, 1);
    if (status == 401)
        a->host->response_header_set(req, "WWW-Authenticate", "Bearer");
    if (n < 0 || a->host->respond(req, status, body, (size_t)n) != SLUICE_OK)
        return SLUICE_ERROR;
    return SLUICE_RESPOND;
}

/* The credential: "Authorization: Bearer X" first, else "x-api-key: X".
 * 0 when there is none. */
static int
credential(const auth_t *a, sluice_req_t *req, const char **tok, size_t *len) {
    const char *v;
    size_t n;
    if (a->host->request_header(req, "authorization", &v, &n) == SLUICE_OK &&
        n > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
        v += 7;
        n -= 7;
    } else if (a->host->request_header(req, "x-api-key", &v, &n) != SLUICE_OK)
        return 0;
    while (n > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    *tok = v;
    *len = n;
    return n > 0;
}

/* ---- verified keys in memory ---- */

/* The slot of a key. Not a secret hash: only verified keys are kept, and
 * a slot's key is compared in full, in constant time. */
static auth_cached_t *
cache_slot(const auth_t *a, const char *key, size_t len) {
    uint64_t h = len, w;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
    }
    for (; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ULL;
    h ^= h >> 32;
    return &a->cache[h & (AUTH_CACHE_SLOTS - 1)];
}

/* 1 when a[0..n) equals b[0..n); the time depends on n only. */
static int
same_key(const char *a, const char *b, size_t n) {
    uint64_t d = 0, x, y;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        d |= x ^ y;
    }
    for (; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* Copies the record of key into *info when the slot holds it at
 * `version`; 0 when it does not (then read the store). */
static int
cache_get(const auth_t *a, const char *key, size_t len, uint64_t version,
          auth_key_info_t *info) {
    auth_cached_t *e = cache_slot(a, key, len);
    uint64_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
    if ((seq & 1) || seq == 0 || e->version != version || e->klen != len ||
        !same_key(e->key, key, len))
        return 0;
    memcpy(info, &e->info, sizeof(*info));
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&e->seq, memory_order_relaxed) == seq;
}

/* Keeps a verified record; a slot another thread is filling is left. */
static void
cache_put(const auth_t *a, const char *key, size_t len, uint64_t version,
          const auth_key_info_t *info) {
    auth_cached_t *e = cache_slot(a, key, len);
    uint64_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    if ((seq & 1) ||
        !atomic_compare_exchange_strong_explicit(
            &e->seq, &seq, seq + 1, memory_order_acquire, memory_order_relaxed))
        return;
    atomic_thread_fence(memory_order_release);
    e->version = version;
    e->klen = len;
    memcpy(e->key, key, len);
    memcpy(&e->info, info, sizeof(*info));
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
}

/* ---- API keys ---- */

static void
set_limit(const sluice_host_t *h, sluice_req_t *req, const char *name,
          long long v) {
    char buf[24], *p = buf + sizeof(buf);
    *--p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    h->attr_set(req, name, p);
}

/* Lets a verified key through: its consumer, and its own limits for a
 * rate-limit plugin later on the route (plugins/ratelimit reads these
 * attributes). */
static sluice_verdict_t
admit(const auth_t *a, sluice_req_t *req, const auth_key_info_t *info) {
    const sluice_host_t *h = a->host;
    if (h->consumer_set(req, info->name) != SLUICE_OK)
        return SLUICE_ERROR;
    if (SLUICE_HOST_HAS(h, attr_set)) {
        if (info->rpm >= 0)
            set_limit(h, req, "ratelimit.rpm", info->rpm);
        if (info->tpm >= 0)
            set_limit(h, req, "ratelimit.tpm", info->tpm);
        h->attr_set(req, "auth.key_id", info->id);
    }
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
model_denied(const auth_t *a, sluice_req_t *req, const auth_key_info_t *info) {
    a->host->consumer_set(req, info->name); /* the log says who tried */
    return refuse(a, req, 403, "permission_error", "model_not_allowed",
                  "This API key is not allowed to use this model.");
}

static sluice_verdict_t
with_api_key(const auth_t *a, sluice_req_t *req, const char *tok, size_t len) {
    const sluice_host_t *h = a->host;
    const char *model = NULL;
    if (h->model(req, &model) != SLUICE_OK)
        model = NULL;
    auth_key_info_t info;
    /* The version is read before the record: a change between the two
     * makes the entry stale at once rather than wrong. */
    uint64_t version = 0;
    int cacheable = a->cache != NULL && len <= AUTH_CACHE_KEY_MAX &&
                    h->keys_version(req, &version) == SLUICE_OK && version != 0;
    if (cacheable && cache_get(a, tok, len, version, &info))
        return auth_key_allows(&info, model) ? admit(a, req, &info)
                                             : model_denied(a, req, &info);

    unsigned char hash[32];
    char small[1024], *rec = small;
    size_t rlen = 0;
    /* Looked up by hash: timing can only tell about the hash, never the
     * key, and no key is ever compared byte by byte. */
    auth_key_hash(a->sha256, tok, len, hash);
    int rc = h->keys_get(req, AUTH_KEY_NS, hash, sizeof(hash), small,
                         sizeof(small), &rlen);
    if (rc == SLUICE_ETOOBIG) {
        rec = h->alloc(req, rlen);
        rc = rec != NULL ? h->keys_get(req, AUTH_KEY_NS, hash, sizeof(hash),
                                       rec, rlen, &rlen)
                         : SLUICE_ENOMEM;
    }
    if (rc == SLUICE_ENOTFOUND)
        return refuse(a, req, 401, "invalid_request_error", "invalid_api_key",
                      "Invalid or revoked API key.");
    if (rc != SLUICE_OK) {
        h->log(req, SLUICE_LOG_ERROR, "cannot read the key store (%d)", rc);
        return refuse(a, req, 503, "server_error", "store_unavailable",
                      "The key store is unavailable; try again.");
    }
    auth_key_status_t st = auth_key_check(rec, rlen, model, &info);
    if ((st == AUTH_KEY_OK || st == AUTH_KEY_MODEL_DENIED) && cacheable &&
        info.models_fit)
        cache_put(a, tok, len, version, &info);
    switch (st) {
    case AUTH_KEY_OK: return admit(a, req, &info);
    case AUTH_KEY_REVOKED:
        return refuse(a, req, 401, "invalid_request_error", "invalid_api_key",
                      "Invalid or revoked API key.");
    case AUTH_KEY_MODEL_DENIED: return model_denied(a, req, &info);
    default:
        h->log(req, SLUICE_LOG_ERROR, "an unreadable key record");
        return SLUICE_ERROR;
    }
}

static int
looks_like_jwt(const char *tok, size_t len) {
    size_t dots = 0;
    for (size_t i = 0; i < len; i++)
        dots += tok[i] == '.';
    return dots == 2 && len > 4 && tok[0] == 'e' && tok[1] == 'y';
}

static sluice_verdict_t
with_jwt(const auth_t *a, sluice_req_t *req, const char *tok, size_t len) {
    char consumer[257];
    auth_jwt_status_t st = auth_jwt_verify(
        a->jwt, tok, len, (long long)time(NULL), consumer, sizeof(consumer));
    if (st != AUTH_JWT_OK) {
        char msg[128];
        /* The reason is ours (jwt.c's fixed texts), never the token's. */
        snprintf(msg, sizeof(msg), "Invalid token: %s.",
                 auth_jwt_status_text(st));
        return refuse(a, req, 401, "invalid_request_error", "invalid_token",
                      msg);
    }
    if (a->host->consumer_set(req, consumer) != SLUICE_OK)
        return refuse(a, req, 401, "invalid_request_error", "invalid_token",
                      "Invalid token: the token names no usable consumer.");
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    const auth_t *a = instance;
    const char *tok;
    size_t len;
    const char *cert_consumer = NULL;
    int have = credential(a, req, &tok, &len);
    if (!have && a->client_certificates &&
        a->host->consumer(req, &cert_consumer) == SLUICE_OK &&
        cert_consumer != NULL && cert_consumer[0] != '\0')
        return SLUICE_CONTINUE; /* named by a verified client certificate */
    if (!have)
        return refuse(a, req, 401, "invalid_request_error", "missing_api_key",
                      "Missing credentials: send 'Authorization: Bearer "
                      "KEY' or 'x-api-key: KEY'.");
    if (a->api_keys && len > sizeof(AUTH_KEY_PREFIX) - 1 &&
        memcmp(tok, AUTH_KEY_PREFIX, sizeof(AUTH_KEY_PREFIX) - 1) == 0)
        return with_api_key(a, req, tok, len);
    if (a->jwt != NULL && looks_like_jwt(tok, len))
        return with_jwt(a, req, tok, len);
    return refuse(a, req, 401, "invalid_request_error",
                  a->api_keys ? "invalid_api_key" : "invalid_token",
                  a->api_keys ? "Invalid or revoked API key."
                              : "Invalid token: the token is malformed.");
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "auth",
    .version = "1.0.0",
    .description = "API keys and JWTs: names the consumer, refuses the rest",
    .config_schema = schema,
    .fail_open = 0,
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
};
