/* Loads the JSON configuration and validates all of it, collecting every
 * error with its JSON path so one `sluice check` run shows them all. Load
 * is not the hot path: one malloc per object or string keeps freeing simple. */
#include "config.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balancer.h"
#include "error.h"
#include "pricing.h"

#define POS_MAX 2147483647L /* upper bound for "positive integer" fields */

typedef struct {
    sl_config_errors_t *errs; /* may be NULL: errors are then only counted */
    sl_config_errors_t local;
    size_t nerr;
    int oom;
} ctx_t;

static void
add_item(ctx_t *c, const char *path, int warning, const char *fmt, va_list ap) {
    sl_config_errors_t *e = c->errs ? c->errs : &c->local;
    sl_config_error_t *it;

    if (e->count == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 8;
        sl_config_error_t *items = realloc(e->items, cap * sizeof(*items));
        if (items == NULL)
            return; /* the count below still fails the load */
        e->items = items;
        e->cap = cap;
    }
    it = &e->items[e->count++];
    memset(it, 0, sizeof(*it));
    snprintf(it->path, sizeof(it->path), "%s", path);
    vsnprintf(it->message, sizeof(it->message), fmt, ap);
    it->warning = warning;
}

static void __attribute__((format(printf, 3, 4)))
cfg_err(ctx_t *c, const char *path, const char *fmt, ...) {
    va_list ap;

    c->nerr++;
    va_start(ap, fmt);
    add_item(c, path, 0, fmt, ap);
    va_end(ap);
}

static void __attribute__((format(printf, 3, 4)))
cfg_warn(ctx_t *c, const char *path, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    add_item(c, path, 1, fmt, ap);
    va_end(ap);
}

static void
cfg_oom(ctx_t *c) {
    if (!c->oom)
        cfg_err(c, "$", "out of memory");
    c->oom = 1;
}

static char *
cfg_strndup(ctx_t *c, const char *s, size_t n) {
    char *d = malloc(n + 1);

    if (d == NULL) {
        cfg_oom(c);
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static char *
cfg_strdup(ctx_t *c, const char *s) {
    return cfg_strndup(c, s, strlen(s));
}

static char *
cfg_concat(ctx_t *c, const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *d = malloc(la + lb + 1);

    if (d == NULL) {
        cfg_oom(c);
        return NULL;
    }
    memcpy(d, a, la);
    memcpy(d + la, b, lb + 1);
    return d;
}

static void *
cfg_calloc(ctx_t *c, size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);

    if (p == NULL)
        cfg_oom(c);
    return p;
}

/* ---- JSON paths ---- */

/* base + ".key", or base + "[\"key\"]" when the key is not a plain name. */
static void
path_key(char *out, size_t cap, const char *base, const char *key) {
    int plain = key[0] != '\0';

    for (const char *k = key; *k != '\0'; k++) {
        char ch = *k;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            plain = 0;
    }
    if (plain)
        snprintf(out, cap, "%s.%s", base, key);
    else
        snprintf(out, cap, "%s[\"%s\"]", base, key);
}

static void
path_idx(char *out, size_t cap, const char *base, size_t i) {
    /* Paths are cut at cap: using the result keeps -Wformat-truncation
     * quiet about a cut we accept. */
    if (snprintf(out, cap, "%s[%zu]", base, i) >= (int)cap)
        out[cap - 1] = '\0';
}

void
sl_config_path_key(char *out, size_t cap, const char *base, const char *key) {
    path_key(out, cap, base, key);
}

void
sl_config_error_add(sl_config_errors_t *errs, int warning, const char *path,
                    const char *fmt, ...) {
    ctx_t c = {.errs = errs};
    va_list ap;

    if (errs == NULL)
        return;
    va_start(ap, fmt);
    add_item(&c, path, warning, fmt, ap);
    va_end(ap);
}

/* ---- typed accessors ---- */

static const cJSON *
member(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* An earlier member of the same object with this key: cJSON keeps both. */
static int
is_duplicate(const cJSON *obj, const cJSON *item) {
    for (const cJSON *o = obj->child; o != NULL && o != item; o = o->next)
        if (strcmp(o->string, item->string) == 0)
            return 1;
    return 0;
}

/* Reports duplicate keys, and keys not in `known` (NULL: any key is fine,
 * as in a map of names). */
static void
check_keys(ctx_t *c, const cJSON *obj, const char *path,
           const char *const *known) {
    char p[256];

    for (const cJSON *it = obj->child; it != NULL; it = it->next) {
        int ok = known == NULL;
        path_key(p, sizeof(p), path, it->string);
        if (is_duplicate(obj, it)) {
            cfg_err(c, p, "duplicate key");
            continue;
        }
        for (size_t i = 0; !ok && known[i] != NULL; i++)
            ok = strcmp(known[i], it->string) == 0;
        if (!ok)
            cfg_err(c, p, "unknown key");
    }
}

static int
want_object(ctx_t *c, const cJSON *v, const char *path) {
    if (cJSON_IsObject(v))
        return 1;
    cfg_err(c, path, "must be an object");
    return 0;
}

/* A string member: 1 and *out set, 0 when absent (an error if required),
 * -1 on a wrong type or an empty string. */
static int
get_string(ctx_t *c, const cJSON *obj, const char *path, const char *key,
           int required, const char **out) {
    const cJSON *v = member(obj, key);
    char p[256];

    path_key(p, sizeof(p), path, key);
    if (v == NULL) {
        if (required)
            cfg_err(c, p, "required");
        return 0;
    }
    if (!cJSON_IsString(v)) {
        cfg_err(c, p, "must be a string");
        return -1;
    }
    if (v->valuestring[0] == '\0') {
        cfg_err(c, p, "must not be empty");
        return -1;
    }
    *out = v->valuestring;
    return 1;
}

static int
dup_string(ctx_t *c, const cJSON *obj, const char *path, const char *key,
           int required, char **out) {
    const char *s;
    int rc = get_string(c, obj, path, key, required, &s);

    if (rc == 1)
        *out = cfg_strdup(c, s);
    return rc;
}

/* An integral number in [min, max]; JSON has no integers, so 1.5, 1e400 and
 * out-of-range values are refused here rather than truncated. */
static int
check_int(ctx_t *c, const cJSON *v, const char *path, long min, long max,
          long *out) {
    double d;

    if (!cJSON_IsNumber(v)) {
        cfg_err(c, path, "must be an integer");
        return -1;
    }
    d = v->valuedouble;
    if (!isfinite(d) || (d > -1e18 && d < 1e18 && (double)(long long)d != d)) {
        cfg_err(c, path, "must be an integer");
        return -1;
    }
    if (d < (double)min || d > (double)max) {
        cfg_err(c, path, "must be between %ld and %ld", min, max);
        return -1;
    }
    *out = (long)d;
    return 1;
}

/* An integer member; *out keeps its default when absent. */
static int
get_int(ctx_t *c, const cJSON *obj, const char *path, const char *key, long min,
        long max, long *out) {
    const cJSON *v = member(obj, key);
    char p[256];

    if (v == NULL)
        return 0;
    path_key(p, sizeof(p), path, key);
    return check_int(c, v, p, min, max, out);
}

/* ---- listen ---- */

static int
parse_port(const char *s, int *port) {
    long n = 0;

    if (*s == '\0' || strlen(s) > 5)
        return -1;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        n = n * 10 + (*s - '0');
    }
    if (n > 65535)
        return -1;
    *port = (int)n;
    return 0;
}

/* "IPv4:port" or "[IPv6]:port", numeric only: a name could resolve to
 * several addresses and we would silently listen on one of them. */
static void
parse_listen_addr(ctx_t *c, const char *path, const char *addr,
                  sl_listen_t *l) {
    char host[64];
    const char *port, *hend;
    unsigned char bin[16];
    size_t hlen;
    int v6 = addr[0] == '[';

    if (v6) {
        hend = strchr(addr, ']');
        port = hend && hend[1] == ':' ? hend + 2 : NULL;
        addr++;
    } else {
        hend = strrchr(addr, ':');
        port = hend ? hend + 1 : NULL;
    }
    hlen = hend ? (size_t)(hend - addr) : 0;
    if (port == NULL || hlen == 0 || hlen >= sizeof(host)) {
        cfg_err(c, path, "must be \"IPv4:port\" or \"[IPv6]:port\"");
        return;
    }
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, bin) != 1) {
        cfg_err(c, path,
                v6 ? "\"%s\" is not an IPv6 address"
                   : "\"%s\" is not an IPv4 address (IPv6 goes in brackets: "
                     "\"[::1]:8080\")",
                host);
        return;
    }
    if (parse_port(port, &l->port) != 0) {
        cfg_err(c, path, "port must be an integer between 0 and 65535");
        return;
    }
    l->addr = cfg_strdup(c, v6 ? addr - 1 : addr);
    l->host = cfg_strdup(c, host);
}

/* A file the gateway must read at start and on reload: checked now so a
 * typo is a config error with its path, not a failed handshake later. */
static void
readable_file(ctx_t *c, const char *path, const char *file) {
    FILE *f = fopen(file, "r");
    if (f == NULL)
        cfg_err(c, path, "cannot read \"%s\": %s", file, strerror(errno));
    else
        fclose(f);
}

static void
load_listen_tls(ctx_t *c, sl_listen_t *l, const cJSON *v, const char *lp) {
    static const char *const keys[] = {"cert", "key", "client_ca",
                                       "require_client_cert", NULL};
    char p[256], fp[256];
    const cJSON *b;

    if (v == NULL)
        return;
    path_key(p, sizeof(p), lp, "tls");
    if (!want_object(c, v, p))
        return;
    check_keys(c, v, p, keys);
    if (dup_string(c, v, p, "cert", 1, &l->tls_cert) == 1) {
        path_key(fp, sizeof(fp), p, "cert");
        readable_file(c, fp, l->tls_cert);
    }
    if (dup_string(c, v, p, "key", 1, &l->tls_key) == 1) {
        path_key(fp, sizeof(fp), p, "key");
        readable_file(c, fp, l->tls_key);
    }
    if (dup_string(c, v, p, "client_ca", 0, &l->tls_client_ca) == 1 &&
        l->tls_client_ca != NULL) {
        path_key(fp, sizeof(fp), p, "client_ca");
        readable_file(c, fp, l->tls_client_ca);
        l->tls_require_client_cert = 1; /* a CA given means mTLS */
    }
    if ((b = member(v, "require_client_cert")) != NULL) {
        path_key(fp, sizeof(fp), p, "require_client_cert");
        if (!cJSON_IsBool(b))
            cfg_err(c, fp, "must be true or false");
        else if (cJSON_IsTrue(b) && l->tls_client_ca == NULL)
            cfg_err(c, fp, "needs \"client_ca\"");
        else
            l->tls_require_client_cert = cJSON_IsTrue(b);
    }
}

static void
load_listen(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    static const char *const keys[] = {"addr", "tls", NULL};
    char p[256], ap[256];
    size_t i = 0;
    const cJSON *el;

    if (v == NULL) {
        cfg_err(c, "$.listen", "required");
        return;
    }
    if (!cJSON_IsArray(v)) {
        cfg_err(c, "$.listen", "must be an array");
        return;
    }
    if (cJSON_GetArraySize(v) == 0) {
        cfg_err(c, "$.listen", "must not be empty");
        return;
    }
    cfg->nlisten = (size_t)cJSON_GetArraySize(v);
    cfg->listen = cfg_calloc(c, cfg->nlisten, sizeof(*cfg->listen));
    if (cfg->listen == NULL) {
        cfg->nlisten = 0;
        return;
    }
    cJSON_ArrayForEach(el, v) {
        const char *addr = NULL;
        sl_listen_t *l = &cfg->listen[i];

        path_idx(p, sizeof(p), "$.listen", i++);
        if (cJSON_IsString(el)) {
            addr = el->valuestring;
            snprintf(ap, sizeof(ap), "%s", p);
        } else if (cJSON_IsObject(el)) {
            check_keys(c, el, p, keys);
            path_key(ap, sizeof(ap), p, "addr");
            if (get_string(c, el, p, "addr", 1, &addr) != 1)
                continue;
            load_listen_tls(c, l, member(el, "tls"), p);
        } else {
            cfg_err(c, p, "must be an object or a \"host:port\" string");
            continue;
        }
        parse_listen_addr(c, ap, addr, l);
        for (sl_listen_t *o = cfg->listen; l->host != NULL && o < l; o++)
            if (o->host != NULL && o->port == l->port && l->port != 0 &&
                strcmp(o->host, l->host) == 0)
                cfg_err(c, ap, "duplicate listen address \"%s\"", addr);
    }
}

/* ---- providers ---- */

int
sl_url_safe(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' ||
              ch == '_' || ch == ':'))
            return 0;
    }
    return n > 0;
}

static int
url_safe(const char *s)
{
    return sl_url_safe(s, strlen(s));
}

static char *
join3(const char *a, const char *b, const char *c, const char *d,
      const char *e)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + strlen(d) + strlen(e);
    char *out = malloc(n + 1);
    if (out != NULL)
        snprintf(out, n + 1, "%s%s%s%s%s", a, b, c, d, e);
    return out;
}

int
sl_target_urls(const sl_provider_t *pr, const char *model, char **chat,
               char **stream, char **embeddings)
{
    *chat = *stream = *embeddings = NULL;
    if (pr->type != SL_PROVIDER_AZURE && pr->type != SL_PROVIDER_GEMINI)
        return 0;
    if (!url_safe(model) || pr->base_url == NULL)
        return SL_EINVAL;
    if (pr->type == SL_PROVIDER_AZURE) {
        const char *v = pr->api_version ? pr->api_version : "2024-10-21";
        *chat = join3(pr->base_url, "/openai/deployments/", model,
                      "/chat/completions?api-version=", v);
        *embeddings = join3(pr->base_url, "/openai/deployments/", model,
                            "/embeddings?api-version=", v);
    } else {
        *chat = join3(pr->base_url, "/v1beta/models/", model,
                      ":generateContent", "");
        *stream = join3(pr->base_url, "/v1beta/models/", model,
                        ":streamGenerateContent", "?alt=sse");
        *embeddings = join3(pr->base_url, "/v1beta/models/", model,
                            ":batchEmbedContents", "");
    }
    return 0;
}

static void
load_base_url(ctx_t *c, sl_provider_t *pr, const cJSON *obj, const char *path) {
    const char *s, *host;
    size_t n;
    char p[256];

    int got = get_string(c, obj, path, "base_url",
                         pr->type == SL_PROVIDER_OPENAI ||
                             pr->type == SL_PROVIDER_AZURE,
                         &s);
    if (got != 1 && member(obj, "base_url") == NULL) {
        if (pr->type == SL_PROVIDER_ANTHROPIC) {
            s = "https://api.anthropic.com";
            got = 1;
        } else if (pr->type == SL_PROVIDER_GEMINI) {
            s = "https://generativelanguage.googleapis.com";
            got = 1;
        }
    }
    if (got != 1)
        return;
    path_key(p, sizeof(p), path, "base_url");
    if (pr->type == SL_PROVIDER_MOCK) {
        cfg_err(c, p, "not for type \"mock\"");
        return;
    }
    if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else {
        cfg_err(c, p, "must start with http:// or https://");
        return;
    }
    if (*host == '\0' || *host == '/') {
        cfg_err(c, p, "must name a host");
        return;
    }
    for (const char *k = s; *k != '\0'; k++) {
        if ((unsigned char)*k <= ' ' || *k == 0x7f) {
            cfg_err(c, p, "must not contain spaces or control characters");
            return;
        }
    }
    n = strlen(s);
    while (n > (size_t)(host - s) && s[n - 1] == '/')
        n--;
    pr->base_url = cfg_strndup(c, s, n);
    if (pr->base_url == NULL)
        return;
    pr->chat_url = cfg_concat(c, pr->base_url, "/chat/completions");
    pr->embeddings_url = cfg_concat(c, pr->base_url, "/embeddings");
    if (pr->type == SL_PROVIDER_ANTHROPIC)
        pr->messages_url = cfg_concat(c, pr->base_url, "/v1/messages");
}

static void
load_api_key(ctx_t *c, sl_provider_t *pr, const cJSON *obj, const char *path) {
    const char *key;
    char p[256];

    if (dup_string(c, obj, path, "api_key_env", 0, &pr->api_key_env) != 1 ||
        pr->api_key_env == NULL)
        return;
    path_key(p, sizeof(p), path, "api_key_env");
    key = getenv(pr->api_key_env);
    if (key == NULL || key[0] == '\0') {
        cfg_warn(c, p,
                 "warning: environment variable %s is not set; requests to "
                 "this provider carry no API key",
                 pr->api_key_env);
        return;
    }
    /* The key ends up in a header line: never let it split one. */
    if (strpbrk(key, "\r\n") != NULL) {
        cfg_err(c, p, "environment variable %s holds a line break",
                pr->api_key_env);
        return;
    }
    pr->api_key = cfg_strdup(c, key);
    pr->auth_header = cfg_concat(c,
                                 pr->type == SL_PROVIDER_ANTHROPIC
                                     ? "x-api-key: "
                                 : pr->type == SL_PROVIDER_AZURE
                                     ? "api-key: "
                                 : pr->type == SL_PROVIDER_GEMINI
                                     ? "x-goog-api-key: "
                                     : "Authorization: Bearer ",
                                 key);
}

static void
load_provider(ctx_t *c, sl_provider_t *pr, const cJSON *obj, const char *path) {
    static const char *const keys[] = {"type",
                                       "base_url",
                                       "api_key_env",
                                       "connect_timeout_ms",
                                       "first_byte_timeout_ms",
                                       "timeout_ms",
                                       "mock_delay_ms",
                                       "anthropic_version",
                                       "default_max_tokens",
                                       "api_version",
                                       NULL};
    const char *type;
    char p[256];

    pr->connect_timeout_ms = 5000;
    pr->first_byte_timeout_ms = 60000;
    pr->timeout_ms = 600000;
    pr->mock_delay_ms = 0;
    if (!want_object(c, obj, path))
        return;
    check_keys(c, obj, path, keys);
    if (get_string(c, obj, path, "type", 1, &type) == 1) {
        if (strcmp(type, "openai") == 0)
            pr->type = SL_PROVIDER_OPENAI;
        else if (strcmp(type, "mock") == 0)
            pr->type = SL_PROVIDER_MOCK;
        else if (strcmp(type, "anthropic") == 0)
            pr->type = SL_PROVIDER_ANTHROPIC;
        else if (strcmp(type, "azure") == 0)
            pr->type = SL_PROVIDER_AZURE;
        else if (strcmp(type, "gemini") == 0)
            pr->type = SL_PROVIDER_GEMINI;
        else {
            path_key(p, sizeof(p), path, "type");
            cfg_err(c, p,
                    "must be \"openai\", \"anthropic\", \"azure\", "
                    "\"gemini\" or \"mock\"");
        }
    }
    load_base_url(c, pr, obj, path);
    load_api_key(c, pr, obj, path);
    get_int(c, obj, path, "connect_timeout_ms", 1, POS_MAX,
            &pr->connect_timeout_ms);
    get_int(c, obj, path, "first_byte_timeout_ms", 1, POS_MAX,
            &pr->first_byte_timeout_ms);
    get_int(c, obj, path, "timeout_ms", 1, POS_MAX, &pr->timeout_ms);
    pr->default_max_tokens = 4096;
    if (pr->type == SL_PROVIDER_ANTHROPIC) {
        if (dup_string(c, obj, path, "anthropic_version", 0,
                       &pr->anthropic_version) == 1 &&
            pr->anthropic_version != NULL &&
            strpbrk(pr->anthropic_version, "\r\n") != NULL) {
            path_key(p, sizeof(p), path, "anthropic_version");
            cfg_err(c, p, "must not contain a line break");
        }
        if (pr->anthropic_version == NULL)
            pr->anthropic_version = cfg_strdup(c, "2023-06-01");
        get_int(c, obj, path, "default_max_tokens", 1, POS_MAX,
                &pr->default_max_tokens);
    } else {
        static const char *const anthropic_only[] = {"anthropic_version",
                                                     "default_max_tokens"};
        for (size_t i = 0; i < 2; i++)
            if (member(obj, anthropic_only[i]) != NULL) {
                path_key(p, sizeof(p), path, anthropic_only[i]);
                cfg_err(c, p, "only for type \"anthropic\"");
            }
    }
    if (pr->type == SL_PROVIDER_AZURE) {
        if (dup_string(c, obj, path, "api_version", 0, &pr->api_version) ==
                1 &&
            pr->api_version != NULL && !url_safe(pr->api_version)) {
            path_key(p, sizeof(p), path, "api_version");
            cfg_err(c, p, "may hold only letters, digits, '.', '-', '_'");
        }
        if (pr->api_version == NULL)
            pr->api_version = cfg_strdup(c, "2024-10-21");
    } else if (member(obj, "api_version") != NULL) {
        path_key(p, sizeof(p), path, "api_version");
        cfg_err(c, p, "only for type \"azure\"");
    }
    if (member(obj, "mock_delay_ms") != NULL &&
        pr->type != SL_PROVIDER_MOCK) {
        path_key(p, sizeof(p), path, "mock_delay_ms");
        cfg_err(c, p, "only for type \"mock\"");
    } else {
        get_int(c, obj, path, "mock_delay_ms", 0, POS_MAX, &pr->mock_delay_ms);
    }
}

static void
load_providers(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    const cJSON *it;
    char p[256];

    if (v == NULL)
        return;
    if (!want_object(c, v, "$.providers"))
        return;
    check_keys(c, v, "$.providers", NULL);
    cfg->providers =
        cfg_calloc(c, (size_t)cJSON_GetArraySize(v), sizeof(*cfg->providers));
    if (cfg->providers == NULL)
        return;
    cJSON_ArrayForEach(it, v) {
        sl_provider_t *pr;

        if (is_duplicate(v, it))
            continue;
        path_key(p, sizeof(p), "$.providers", it->string);
        if (it->string[0] == '\0' || strchr(it->string, '/') != NULL) {
            cfg_err(c, p, "provider name must be non-empty and without '/'");
            continue;
        }
        /* Kept even when its body is wrong, so that models naming it do
         * not add a misleading "unknown provider". */
        pr = &cfg->providers[cfg->nproviders++];
        pr->name = cfg_strdup(c, it->string);
        load_provider(c, pr, it, p);
    }
}

/* ---- models ---- */

static void
load_targets(ctx_t *c, sl_config_t *cfg, const cJSON *obj, const char *path,
             const char *key, int required, sl_target_t **out, size_t *nout,
             unsigned *total) {
    static const char *const keys[] = {"provider", "model", "weight",
                                       "max_concurrency", NULL};
    const cJSON *arr = member(obj, key), *el;
    unsigned long long sum = 0;
    char ap[256], p[256];
    size_t i = 0;

    path_key(ap, sizeof(ap), path, key);
    if (arr == NULL) {
        if (required)
            cfg_err(c, ap, "required");
        return;
    }
    if (!cJSON_IsArray(arr)) {
        cfg_err(c, ap, "must be an array");
        return;
    }
    if (cJSON_GetArraySize(arr) == 0) {
        if (required)
            cfg_err(c, ap, "must not be empty");
        return;
    }
    *out = cfg_calloc(c, (size_t)cJSON_GetArraySize(arr), sizeof(**out));
    if (*out == NULL)
        return;
    *nout = (size_t)cJSON_GetArraySize(arr);
    cJSON_ArrayForEach(el, arr) {
        sl_target_t *t = &(*out)[i];
        const char *prov;
        long weight = 1;

        path_idx(p, sizeof(p), ap, i++);
        t->weight = 1;
        if (!want_object(c, el, p))
            continue;
        check_keys(c, el, p, keys);
        if (get_string(c, el, p, "provider", 1, &prov) == 1) {
            t->provider =
                (sl_provider_t *)sl_config_provider(cfg, prov, strlen(prov));
            if (t->provider == NULL) {
                char pp[256];
                path_key(pp, sizeof(pp), p, "provider");
                cfg_err(c, pp, "unknown provider \"%s\"", prov);
            }
        }
        dup_string(c, el, p, "model", 1, &t->model);
        if (t->provider != NULL && t->model != NULL &&
            sl_target_urls(t->provider, t->model, &t->chat_url,
                           &t->stream_url, &t->embeddings_url) != 0) {
            char pp[256];
            path_key(pp, sizeof(pp), p, "model");
            cfg_err(c, pp,
                    "may hold only letters, digits, '.', '-', '_', ':' "
                    "for this provider type");
        }
        if (get_int(c, el, p, "weight", 1, 1000000, &weight) == 1)
            t->weight = (unsigned)weight;
        get_int(c, el, p, "max_concurrency", 0, 1000000, &t->max_concurrency);
        t->state = sl_target_state_new();
        if (t->state == NULL)
            cfg_err(c, p, "out of memory");
        sum += t->weight;
    }
    if (total != NULL) {
        if (sum > 0xffffffffULL)
            cfg_err(c, ap, "weights must add up to at most 4294967295");
        else
            *total = (unsigned)sum;
    }
}

static void
load_models(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    static const char *const keys[] = {"targets",       "fallback",
                                       "balance",       "retries",
                                       "retry_base_ms", "retry_max_ms",
                                       "deadline_ms",   "breaker",
                                       NULL};
    static const char *const breaker_keys[] = {"failures", "window_ms",
                                               "open_ms", NULL};
    const cJSON *it;
    char p[256];

    if (v == NULL)
        return;
    if (!want_object(c, v, "$.models"))
        return;
    check_keys(c, v, "$.models", NULL);
    cfg->models =
        cfg_calloc(c, (size_t)cJSON_GetArraySize(v), sizeof(*cfg->models));
    if (cfg->models == NULL)
        return;
    cJSON_ArrayForEach(it, v) {
        sl_model_t *m;

        if (is_duplicate(v, it))
            continue;
        path_key(p, sizeof(p), "$.models", it->string);
        if (it->string[0] == '\0') {
            cfg_err(c, p, "model name must not be empty");
            continue;
        }
        m = &cfg->models[cfg->nmodels++];
        m->name = cfg_strdup(c, it->string);
        if (!want_object(c, it, p))
            continue;
        check_keys(c, it, p, keys);
        load_targets(c, cfg, it, p, "targets", 1, &m->targets, &m->ntargets,
                     &m->total_weight);
        load_targets(c, cfg, it, p, "fallback", 0, &m->fallback, &m->nfallback,
                     NULL);
        m->retry_base_ms = 200;
        m->retry_max_ms = 5000;
        m->breaker_failures = 0; /* off unless configured */
        m->breaker_window_ms = 30000;
        m->breaker_open_ms = 30000;
        const char *balance;
        if (get_string(c, it, p, "balance", 0, &balance) == 1) {
            if (strcmp(balance, "weighted") == 0)
                m->balance = SL_BALANCE_WEIGHTED;
            else if (strcmp(balance, "least_outstanding") == 0)
                m->balance = SL_BALANCE_LEAST_OUTSTANDING;
            else {
                char bp[256];
                path_key(bp, sizeof(bp), p, "balance");
                cfg_err(c, bp,
                        "must be \"weighted\" or \"least_outstanding\"");
            }
        }
        get_int(c, it, p, "retries", 0, 10, &m->retries);
        get_int(c, it, p, "retry_base_ms", 1, 600000, &m->retry_base_ms);
        get_int(c, it, p, "retry_max_ms", 1, 600000, &m->retry_max_ms);
        get_int(c, it, p, "deadline_ms", 0, POS_MAX, &m->deadline_ms);
        const cJSON *br = member(it, "breaker");
        if (br != NULL) {
            char bp[256];
            path_key(bp, sizeof(bp), p, "breaker");
            if (want_object(c, br, bp)) {
                m->breaker_failures = 5;
                check_keys(c, br, bp, breaker_keys);
                get_int(c, br, bp, "failures", 1, 1000000,
                        &m->breaker_failures);
                get_int(c, br, bp, "window_ms", 1, POS_MAX,
                        &m->breaker_window_ms);
                get_int(c, br, bp, "open_ms", 1, POS_MAX, &m->breaker_open_ms);
            }
        }
    }
}

/* ---- routes ---- */

static const struct {
    const char *path;
    const char *name;
    sl_route_kind_t kind;
} std_routes[] = {
    {"/v1/chat/completions", "chat", SL_ROUTE_CHAT},
    {"/v1/embeddings", "embeddings", SL_ROUTE_EMBEDDINGS},
    {"/v1/models", "models", SL_ROUTE_MODELS},
    {"/healthz", "health", SL_ROUTE_HEALTH},
    {"/v1/messages", "messages", SL_ROUTE_MESSAGES},
};
#define NSTD (sizeof(std_routes) / sizeof(std_routes[0]))

static void
default_routes(ctx_t *c, sl_config_t *cfg) {
    cfg->routes = cfg_calloc(c, NSTD, sizeof(*cfg->routes));
    if (cfg->routes == NULL)
        return;
    cfg->nroutes = NSTD;
    for (size_t i = 0; i < NSTD; i++) {
        cfg->routes[i].path = cfg_strdup(c, std_routes[i].path);
        cfg->routes[i].kind = std_routes[i].kind;
    }
}

static void
load_route_plugins(ctx_t *c, sl_route_t *r, const cJSON *obj,
                   const char *path) {
    const cJSON *arr = member(obj, "plugins"), *el;
    char ap[256], p[256];
    size_t i = 0;

    if (arr == NULL)
        return;
    path_key(ap, sizeof(ap), path, "plugins");
    if (!cJSON_IsArray(arr)) {
        cfg_err(c, ap, "must be an array of plugin names");
        return;
    }
    r->plugins =
        cfg_calloc(c, (size_t)cJSON_GetArraySize(arr), sizeof(*r->plugins));
    if (r->plugins == NULL)
        return;
    r->nplugins = (size_t)cJSON_GetArraySize(arr);
    cJSON_ArrayForEach(el, arr) {
        path_idx(p, sizeof(p), ap, i);
        if (!cJSON_IsString(el))
            cfg_err(c, p, "must be a string");
        else if (el->valuestring[0] == '\0')
            cfg_err(c, p, "must not be empty");
        else
            r->plugins[i] = cfg_strdup(c, el->valuestring);
        i++;
    }
}

static char *resolve_plugin_dir(ctx_t *c, const sl_config_t *cfg,
                                const char *dir);

/* The route's script, its limits and its config; lua/ checks the script
 * itself when the snapshot is built. */
static void
load_route_lua(ctx_t *c, const sl_config_t *cfg, sl_route_t *r,
               const cJSON *obj, const char *path) {
    static const char *const keys[] = {"instructions", "timeout_ms",
                                       "memory_mb", NULL};
    const cJSON *v;
    char p[256];

    r->lua_instructions = 10000000;
    r->lua_timeout_ms = 30000;
    r->lua_memory_mb = 64;
    if (dup_string(c, obj, path, "lua", 0, &r->lua) == 1)
        r->lua_file = resolve_plugin_dir(c, cfg, r->lua);
    path_key(p, sizeof(p), path, "lua_limits");
    if ((v = member(obj, "lua_limits")) != NULL && want_object(c, v, p)) {
        check_keys(c, v, p, keys);
        get_int(c, v, p, "instructions", 1000, 100000000000L,
                &r->lua_instructions);
        get_int(c, v, p, "timeout_ms", 1, 3600000, &r->lua_timeout_ms);
        get_int(c, v, p, "memory_mb", 1, 65536, &r->lua_memory_mb);
    }
    path_key(p, sizeof(p), path, "lua_config");
    if ((v = member(obj, "lua_config")) != NULL && want_object(c, v, p) &&
        (r->lua_config = cJSON_PrintUnformatted(v)) == NULL)
        cfg_oom(c);
    if (r->lua == NULL && (member(obj, "lua_limits") != NULL ||
                           member(obj, "lua_config") != NULL))
        cfg_err(c, path, "lua_limits and lua_config need a \"lua\" script");
}

static void
load_route(ctx_t *c, sl_config_t *cfg, sl_route_t *r, const cJSON *obj,
           const char *path) {
    static const char *const keys[] = {"path",       "kind",       "plugins",
                                       "lua",        "lua_limits", "lua_config",
                                       NULL};
    const char *rpath = NULL, *kind = NULL;
    char p[256];
    int have_kind;

    if (!want_object(c, obj, path))
        return;
    check_keys(c, obj, path, keys);
    path_key(p, sizeof(p), path, "path");
    if (get_string(c, obj, path, "path", 1, &rpath) == 1) {
        if (rpath[0] != '/') {
            cfg_err(c, p, "must start with '/'");
            rpath = NULL;
        } else if (strpbrk(rpath, " ?#\t\r\n") != NULL) {
            cfg_err(c, p, "must not contain spaces, '?' or '#'");
            rpath = NULL;
        }
    }
    if (rpath != NULL) {
        for (const sl_route_t *o = cfg->routes; o < r; o++) {
            if (o->path != NULL && strcmp(o->path, rpath) == 0) {
                cfg_err(c, p, "duplicate route \"%s\"", rpath);
                break;
            }
        }
        r->path = cfg_strdup(c, rpath);
    }
    path_key(p, sizeof(p), path, "kind");
    have_kind = get_string(c, obj, path, "kind", 0, &kind);
    if (have_kind == 1) {
        for (size_t i = 0; i < NSTD; i++)
            if (strcmp(kind, std_routes[i].name) == 0)
                r->kind = std_routes[i].kind;
        if (r->kind == 0)
            cfg_err(c, p,
                    "must be \"chat\", \"embeddings\", \"models\", "
                    "\"health\" or \"messages\"");
    } else if (have_kind == 0 && rpath != NULL) {
        for (size_t i = 0; i < NSTD; i++)
            if (strcmp(rpath, std_routes[i].path) == 0)
                r->kind = std_routes[i].kind;
        if (r->kind == 0)
            cfg_err(c, p, "required (\"%s\" is not a standard path)", rpath);
    }
    load_route_plugins(c, r, obj, path);
    load_route_lua(c, cfg, r, obj, path);
}

static void
load_routes(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    const cJSON *el;
    char p[256];

    if (v == NULL) {
        default_routes(c, cfg);
        return;
    }
    if (!cJSON_IsArray(v)) {
        cfg_err(c, "$.routes", "must be an array");
        return;
    }
    cfg->routes =
        cfg_calloc(c, (size_t)cJSON_GetArraySize(v), sizeof(*cfg->routes));
    if (cfg->routes == NULL)
        return;
    cJSON_ArrayForEach(el, v) {
        path_idx(p, sizeof(p), "$.routes", cfg->nroutes);
        load_route(c, cfg, &cfg->routes[cfg->nroutes++], el, p);
    }
}

/* ---- plugins ---- */

static int
plugin_name_ok(const char *s) {
    size_t n = strlen(s);

    if (n == 0 || n > 64)
        return 0;
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* plugin_dir resolved: absolute as written, else against the directory of
 * the config file, so a config and its plugins move together. */
static char *
resolve_plugin_dir(ctx_t *c, const sl_config_t *cfg, const char *dir) {
    const char *slash = cfg->path ? strrchr(cfg->path, '/') : NULL;
    const char *base = cfg->path;
    int blen = slash ? (int)(slash - cfg->path) : 0;
    char *out;

    if (dir != NULL && dir[0] == '/')
        return cfg_strdup(c, dir);
    if (slash == NULL)
        base = ".", blen = 1;
    else if (blen == 0) /* the config is at the root: "/x.json" */
        base = "/", blen = 1;
    if (dir == NULL)
        return cfg_strndup(c, base, (size_t)blen);
    out = malloc((size_t)blen + strlen(dir) + 2);
    if (out == NULL)
        cfg_oom(c);
    else
        sprintf(out, "%.*s/%s", blen, base, dir);
    return out;
}

static void
load_plugin(ctx_t *c, const sl_config_t *cfg, sl_plugin_conf_t *pl,
            const cJSON *obj, const char *path) {
    static const char *const keys[] = {"path", "config", "fail_open", NULL};
    const cJSON *v;
    const char *file = NULL;
    char p[256];

    pl->fail_open = -1;
    if (!plugin_name_ok(obj->string))
        cfg_err(c, path,
                "a plugin name is 1 to 64 letters, digits, '_' or '-'");
    pl->name = cfg_strdup(c, obj->string);
    if (!want_object(c, obj, path))
        return;
    check_keys(c, obj, path, keys);
    if (get_string(c, obj, path, "path", 1, &file) == 1) {
        pl->path = cfg_strdup(c, file);
        if (file[0] == '/' || cfg->plugin_dir == NULL)
            pl->file = cfg_strdup(c, file);
        else if ((pl->file = malloc(strlen(cfg->plugin_dir) + strlen(file) +
                                    2)) == NULL)
            cfg_oom(c);
        else
            sprintf(pl->file, "%s/%s", cfg->plugin_dir, file);
    }
    path_key(p, sizeof(p), path, "config");
    if ((v = member(obj, "config")) == NULL)
        pl->config = cfg_strdup(c, "{}");
    else if (want_object(c, v, p) &&
             (pl->config = cJSON_PrintUnformatted(v)) == NULL)
        cfg_oom(c);
    path_key(p, sizeof(p), path, "fail_open");
    if ((v = member(obj, "fail_open")) != NULL) {
        if (cJSON_IsBool(v))
            pl->fail_open = cJSON_IsTrue(v);
        else
            cfg_err(c, p, "must be true or false");
    }
}

static void
load_plugins(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    const cJSON *el;
    char p[256];

    if (v == NULL || !want_object(c, v, "$.plugins"))
        return;
    check_keys(c, v, "$.plugins", NULL); /* duplicates */
    cfg->plugins =
        cfg_calloc(c, (size_t)cJSON_GetArraySize(v), sizeof(*cfg->plugins));
    if (cfg->plugins == NULL)
        return;
    cJSON_ArrayForEach(el, v) {
        path_key(p, sizeof(p), "$.plugins", el->string);
        load_plugin(c, cfg, &cfg->plugins[cfg->nplugins++], el, p);
    }
}

/* Every name a route lists is in $.plugins, once; plugins run around
 * model calls only (chat, embeddings, messages), so a models or health
 * route cannot promise them. */
static void
check_route_plugins(ctx_t *c, const sl_config_t *cfg) {
    char ap[256], p[256];

    for (size_t i = 0; i < cfg->nroutes; i++) {
        const sl_route_t *r = &cfg->routes[i];
        path_idx(p, sizeof(p), "$.routes", i);
        path_key(ap, sizeof(ap), p, "plugins");
        if (r->nplugins > 0 && (r->kind == SL_ROUTE_MODELS ||
                                r->kind == SL_ROUTE_HEALTH))
            cfg_err(c, ap,
                    "plugins run around model calls: not on a %s route",
                    r->kind == SL_ROUTE_MODELS ? "models" : "health");
        for (size_t k = 0; k < r->nplugins; k++) {
            const char *name = r->plugins[k];
            size_t j;
            if (name == NULL)
                continue;
            path_idx(p, sizeof(p), ap, k);
            for (j = 0; j < cfg->nplugins; j++)
                if (cfg->plugins[j].name != NULL &&
                    strcmp(cfg->plugins[j].name, name) == 0)
                    break;
            if (j == cfg->nplugins)
                cfg_err(c, p, "no plugin named \"%s\" in $.plugins", name);
            for (j = 0; j < k; j++)
                if (r->plugins[j] != NULL && strcmp(r->plugins[j], name) == 0)
                    cfg_err(c, p, "\"%s\" is listed twice", name);
        }
    }
}

/* ---- limits and the rest ---- */

static void
load_limits(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    static const char *const keys[] = {
        "max_header_bytes", "max_body_bytes",     "header_timeout_ms",
        "body_timeout_ms",  "idle_timeout_ms",    "max_connections",
        "drain_timeout_ms", "max_response_bytes", NULL};
    sl_limits_t *l = &cfg->limits;
    long hdr = 16384, body = 4194304, resp = 67108864;
    const char *p = "$.limits";

    l->header_timeout_ms = 10000;
    l->body_timeout_ms = 30000;
    l->idle_timeout_ms = 60000;
    l->max_connections = 10000;
    l->drain_timeout_ms = 30000;
    if (v != NULL && want_object(c, v, p)) {
        check_keys(c, v, p, keys);
        get_int(c, v, p, "max_header_bytes", 1024, 1048576, &hdr);
        get_int(c, v, p, "max_body_bytes", 1, 1073741824, &body);
        get_int(c, v, p, "header_timeout_ms", 1, POS_MAX,
                &l->header_timeout_ms);
        get_int(c, v, p, "body_timeout_ms", 1, POS_MAX, &l->body_timeout_ms);
        get_int(c, v, p, "idle_timeout_ms", 1, POS_MAX, &l->idle_timeout_ms);
        get_int(c, v, p, "max_connections", 1, POS_MAX, &l->max_connections);
        get_int(c, v, p, "drain_timeout_ms", 1, POS_MAX, &l->drain_timeout_ms);
        get_int(c, v, p, "max_response_bytes", 1, POS_MAX, &resp);
    }
    l->max_header_bytes = (size_t)hdr;
    l->max_body_bytes = (size_t)body;
    l->max_response_bytes = (size_t)resp;
}

static void
load_store(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    static const char *const keys[] = {"map_size_mb", "map_size_max_mb",
                                       "flush_interval_ms", NULL};
    cfg->store_map_size_mb = 1024;
    cfg->store_map_size_max_mb = 0;
    cfg->store_flush_ms = 1000;
    if (v == NULL || !want_object(c, v, "$.store"))
        return;
    check_keys(c, v, "$.store", keys);
    get_int(c, v, "$.store", "map_size_mb", 1, 16L * 1024 * 1024,
            &cfg->store_map_size_mb);
    get_int(c, v, "$.store", "map_size_max_mb", 0, 16L * 1024 * 1024,
            &cfg->store_map_size_max_mb);
    get_int(c, v, "$.store", "flush_interval_ms", 1, 3600000,
            &cfg->store_flush_ms);
}

static int
get_bool(ctx_t *c, const cJSON *obj, const char *path, const char *key,
         int *out) {
    const cJSON *v = member(obj, key);
    char p[256];

    if (v == NULL)
        return 0;
    if (!cJSON_IsBool(v)) {
        path_key(p, sizeof(p), path, key);
        cfg_err(c, p, "must be true or false");
        return -1;
    }
    *out = cJSON_IsTrue(v);
    return 1;
}

static void
load_request_log(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    static const char *const keys[] = {
        "enabled",        "max_age_hours",     "max_entries",
        "capture_bodies", "max_body_bytes", "sweep_interval_ms", NULL};
    const char *p = "$.request_log";
    cfg->reqlog_enabled = 1;
    cfg->reqlog_max_age_hours = 168;
    cfg->reqlog_max_entries = 1000000;
    cfg->reqlog_capture_bodies = 0;
    cfg->reqlog_max_body_bytes = 16384;
    cfg->reqlog_sweep_interval_ms = 10000;
    if (v == NULL || !want_object(c, v, p))
        return;
    check_keys(c, v, p, keys);
    get_bool(c, v, p, "enabled", &cfg->reqlog_enabled);
    get_int(c, v, p, "max_age_hours", 1, 24L * 365 * 10,
            &cfg->reqlog_max_age_hours);
    get_int(c, v, p, "max_entries", 1, 1000000000L, &cfg->reqlog_max_entries);
    get_bool(c, v, p, "capture_bodies", &cfg->reqlog_capture_bodies);
    get_int(c, v, p, "max_body_bytes", 16, 1L << 20,
            &cfg->reqlog_max_body_bytes);
    get_int(c, v, p, "sweep_interval_ms", 10, 3600000,
            &cfg->reqlog_sweep_interval_ms);
}

static void
load_admin(ctx_t *c, sl_config_t *cfg, const cJSON *v) {
    static const char *const keys[] = {"addr", "token_env", NULL};
    const char *addr = "127.0.0.1:9090";
    char p[256];

    if (v != NULL && want_object(c, v, "$.admin")) {
        check_keys(c, v, "$.admin", keys);
        get_string(c, v, "$.admin", "addr", 0, &addr);
        dup_string(c, v, "$.admin", "token_env", 0, &cfg->admin_token_env);
    }
    path_key(p, sizeof(p), "$.admin", "addr");
    parse_listen_addr(c, p, addr, &cfg->admin);
    if (cfg->admin_token_env == NULL)
        cfg->admin_token_env = cfg_strdup(c, "SLUICE_ADMIN_TOKEN");
    const char *tok =
        cfg->admin_token_env ? getenv(cfg->admin_token_env) : NULL;
    if (tok != NULL && tok[0] != '\0')
        cfg->admin_token = cfg_strdup(c, tok);
}

/* $.pricing, $.budgets and $.ledger: pricing.c validates them; its
 * errors are ours. */
static void
load_usage(ctx_t *c, sl_config_t *cfg, const cJSON *root) {
    sl_config_errors_t e = {0};
    int rc = sl_usage_conf_load(member(root, "pricing"),
                                member(root, "budgets"), member(root, "ledger"),
                                &cfg->usage, &e);
    size_t n = e.count;
    for (size_t i = 0; i < n; i++)
        cfg_err(c, e.items[i].path, "%s", e.items[i].message);
    sl_config_errors_free(&e);
    if (rc == SL_ENOMEM)
        cfg_oom(c);
    else if (rc != 0 && n == 0)
        cfg_err(c, "$.pricing", "invalid");
}

static void
load_root(ctx_t *c, sl_config_t *cfg, const cJSON *root) {
    static const char *const keys[] = {
        "listen",  "workers",   "data_dir",   "admin",
        "plugins", "providers", "models",     "allow_direct_models",
        "routes",  "limits",    "access_log", "plugin_dir", "store",
        "request_log", "pricing", "budgets", "metrics", "ledger", "prompts", NULL};
    const cJSON *v;
    long workers = sysconf(_SC_NPROCESSORS_ONLN);

    if (!cJSON_IsObject(root)) {
        cfg_err(c, "$", "must be an object");
        return;
    }
    check_keys(c, root, "$", keys);
    load_listen(c, cfg, member(root, "listen"));

    workers = workers < 1 ? 1 : workers > 256 ? 256 : workers;
    get_int(c, root, "$", "workers", 1, 256, &workers);
    cfg->workers = (int)workers;

    if (dup_string(c, root, "$", "data_dir", 0, &cfg->data_dir) == 0)
        cfg->data_dir = cfg_strdup(c, "./data");

    load_admin(c, cfg, member(root, "admin"));
    cfg->metrics = 1;
    if ((v = member(root, "metrics")) != NULL) {
        if (cJSON_IsBool(v))
            cfg->metrics = cJSON_IsTrue(v);
        else
            cfg_err(c, "$.metrics", "must be true or false");
    }
    load_store(c, cfg, member(root, "store"));
    load_request_log(c, cfg, member(root, "request_log"));
    {
        const char *dir = NULL;
        get_string(c, root, "$", "plugin_dir", 0, &dir);
        cfg->plugin_dir = resolve_plugin_dir(c, cfg, dir);
    }
    load_plugins(c, cfg, member(root, "plugins"));

    load_providers(c, cfg, member(root, "providers"));
    load_models(c, cfg, member(root, "models"));

    cfg->allow_direct_models = 1;
    if ((v = member(root, "allow_direct_models")) != NULL) {
        if (cJSON_IsBool(v))
            cfg->allow_direct_models = cJSON_IsTrue(v);
        else
            cfg_err(c, "$.allow_direct_models", "must be true or false");
    }

    load_routes(c, cfg, member(root, "routes"));
    check_route_plugins(c, cfg);
    if ((v = member(root, "prompts")) != NULL && want_object(c, v, "$.prompts") &&
        (cfg->prompts = cJSON_PrintUnformatted(v)) == NULL)
        cfg_oom(c);
    load_limits(c, cfg, member(root, "limits"));

    if (dup_string(c, root, "$", "access_log", 0, &cfg->access_log) == 0)
        cfg->access_log = cfg_strdup(c, "stderr");
    load_usage(c, cfg, root);
}

/* ---- entry points ---- */

static int
finish(ctx_t *c, sl_config_t *cfg, sl_config_t **out) {
    free(c->local.items);
    if (c->nerr > 0) {
        sl_config_free(cfg);
        return SL_ECONFIG;
    }
    *out = cfg;
    return 0;
}

static int
load_string(ctx_t *c, const char *path, const char *json, size_t len,
            sl_config_t **out) {
    const char *end = NULL;
    cJSON *root;
    sl_config_t *cfg;

    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root != NULL && end != NULL) {
        /* cJSON stops after the first value; anything but space after it
         * is as much an error as a missing brace. */
        while (end < json + len &&
               (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
            end++;
        if (end < json + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (root == NULL) {
        size_t off =
            end && end >= json && end <= json + len ? (size_t)(end - json) : 0;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < off; i++, col++)
            if (json[i] == '\n')
                line++, col = 0;
        cfg_err(c, "$",
                "not valid JSON: error at line %zu, column %zu "
                "(byte %zu)",
                line, col, off);
        return finish(c, NULL, out);
    }
    cfg = cfg_calloc(c, 1, sizeof(*cfg));
    if (cfg != NULL) {
        if (path != NULL)
            cfg->path = cfg_strdup(c, path);
        cfg->source = cfg_strndup(c, json, len);
        load_root(c, cfg, root);
    }
    cJSON_Delete(root);
    return finish(c, cfg, out);
}

int
sl_config_load_string(const char *json, size_t len, sl_config_t **out,
                      sl_config_errors_t *errs) {
    ctx_t c = {.errs = errs};

    *out = NULL;
    return load_string(&c, NULL, json, len, out);
}

int
sl_config_load_string_as(const char *json, size_t len, const char *path,
                         sl_config_t **out, sl_config_errors_t *errs) {
    ctx_t c = {.errs = errs};

    *out = NULL;
    return load_string(&c, path, json, len, out);
}

int
sl_config_load_file(const char *path, sl_config_t **out,
                    sl_config_errors_t *errs) {
    ctx_t c = {.errs = errs};
    FILE *f;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc;

    *out = NULL;
    f = fopen(path, "rb");
    if (f == NULL) {
        cfg_err(&c, "$", "cannot read %s: %s", path, strerror(errno));
        return finish(&c, NULL, out);
    }
    for (;;) {
        if (len == cap) {
            char *nbuf;
            cap = cap ? cap * 2 : 8192;
            nbuf = realloc(buf, cap);
            if (nbuf == NULL) {
                cfg_err(&c, "$", "cannot read %s: out of memory", path);
                break;
            }
            buf = nbuf;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                cfg_err(&c, "$", "cannot read %s: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (c.nerr > 0) {
        free(buf);
        return finish(&c, NULL, out);
    }
    rc = load_string(&c, path, buf ? buf : "", len, out);
    free(buf);
    return rc;
}

static void
free_targets(sl_target_t *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(t[i].model);
        free(t[i].state);
        free(t[i].chat_url);
        free(t[i].stream_url);
        free(t[i].embeddings_url);
    }
    free(t);
}

void
sl_config_free(sl_config_t *cfg) {
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        free(cfg->listen[i].addr);
        free(cfg->listen[i].host);
        free(cfg->listen[i].tls_cert);
        free(cfg->listen[i].tls_key);
        free(cfg->listen[i].tls_client_ca);
    }
    free(cfg->listen);
    for (size_t i = 0; i < cfg->nproviders; i++) {
        sl_provider_t *p = &cfg->providers[i];
        free(p->name);
        free(p->base_url);
        free(p->api_key_env);
        free(p->api_key);
        free(p->chat_url);
        free(p->embeddings_url);
        free(p->auth_header);
        free(p->messages_url);
        free(p->anthropic_version);
        free(p->api_version);
    }
    free(cfg->providers);
    for (size_t i = 0; i < cfg->nmodels; i++) {
        free(cfg->models[i].name);
        free_targets(cfg->models[i].targets, cfg->models[i].ntargets);
        free_targets(cfg->models[i].fallback, cfg->models[i].nfallback);
    }
    free(cfg->models);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        sl_route_t *r = &cfg->routes[i];
        free(r->path);
        for (size_t k = 0; k < r->nplugins; k++)
            free(r->plugins[k]);
        free(r->plugins);
        free(r->lua);
        free(r->lua_file);
        free(r->lua_config);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->nplugins; i++) {
        free(cfg->plugins[i].name);
        free(cfg->plugins[i].path);
        free(cfg->plugins[i].file);
        free(cfg->plugins[i].config);
    }
    free(cfg->plugins);
    free(cfg->plugin_dir);
    free(cfg->path);
    free(cfg->data_dir);
    free(cfg->access_log);
    free(cfg->admin.addr);
    free(cfg->admin.host);
    free(cfg->admin_token_env);
    free(cfg->admin_token);
    free(cfg->source);
    sl_usage_conf_free(cfg->usage);
    free(cfg->prompts);
    free(cfg);
}

void
sl_config_errors_free(sl_config_errors_t *errs) {
    free(errs->items);
    memset(errs, 0, sizeof(*errs));
}

const sl_model_t *
sl_config_model(const sl_config_t *cfg, const char *name, size_t len) {
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const char *m = cfg->models[i].name;
        if (m != NULL && strlen(m) == len && memcmp(m, name, len) == 0)
            return &cfg->models[i];
    }
    return NULL;
}

const sl_provider_t *
sl_config_provider(const sl_config_t *cfg, const char *name, size_t len) {
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const char *p = cfg->providers[i].name;
        if (p != NULL && strlen(p) == len && memcmp(p, name, len) == 0)
            return &cfg->providers[i];
    }
    return NULL;
}
