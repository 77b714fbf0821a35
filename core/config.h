/* The configuration: one JSON file, validated whole at load into an
 * immutable snapshot that workers only read. */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SL_PROVIDER_OPENAI = 1, /* any OpenAI-compatible base_url */
    SL_PROVIDER_MOCK,       /* built in: answers in-process, no network */
    SL_PROVIDER_ANTHROPIC,  /* the Messages API */
    SL_PROVIDER_AZURE,      /* Azure OpenAI: deployment URLs, api-key */
    SL_PROVIDER_GEMINI,     /* Google's generateContent API */
} sl_provider_type_t;

typedef struct sl_provider {
    char *name;
    sl_provider_type_t type;
    char *base_url;    /* without trailing '/'; NULL for mock; anthropic
                          defaults to https://api.anthropic.com */
    char *api_key_env; /* NULL when none */
    char *api_key;     /* getenv(api_key_env) at load; NULL when unset */
    /* Prebuilt at load so the hot path only copies pointers. */
    char *chat_url;       /* base_url + "/chat/completions" */
    char *embeddings_url; /* base_url + "/embeddings" */
    char *auth_header;    /* "Authorization: Bearer KEY" (anthropic:
                             "x-api-key: KEY") or NULL */
    long connect_timeout_ms;     /* default 5000 */
    long first_byte_timeout_ms;  /* default 60000 */
    long timeout_ms;             /* total, default 600000 */
    long mock_delay_ms; /* mock only: gap between stream chunks, default 0 */
    /* anthropic only */
    char *messages_url;         /* base_url + "/v1/messages" */
    char *anthropic_version;    /* anthropic-version header, "2023-06-01" */
    long default_max_tokens;    /* when the client sets none; 4096 */
    char *api_version; /* azure only: the api-version query, "2024-10-21" */
} sl_provider_t;

struct sl_target_state; /* live counters and breaker (core/balancer.h) */

typedef struct {
    sl_provider_t *provider; /* points into sl_config_t.providers */
    char *model;             /* the provider's model name */
    unsigned weight;         /* >= 1, default 1 */
    long max_concurrency;    /* calls in flight at once; 0 = unlimited */
    /* Built at load where the URL depends on the model (azure deployments,
     * gemini models); NULL means the provider's URL. */
    char *chat_url;
    char *stream_url;
    char *embeddings_url;
    /* Shared by workers through atomics; NULL for a direct provider/model
     * target, which has no breaker. Lives as long as the config. */
    struct sl_target_state *state;
} sl_target_t;

typedef enum {
    SL_BALANCE_WEIGHTED = 0,          /* weighted random */
    SL_BALANCE_LEAST_OUTSTANDING = 1, /* fewest calls in flight, then weight */
} sl_balance_t;

typedef struct {
    char *name; /* the alias clients send */
    sl_target_t *targets;
    size_t ntargets;
    unsigned total_weight;
    sl_target_t *fallback; /* tried in order after targets */
    size_t nfallback;
    sl_balance_t balance;    /* "weighted" (default) or "least_outstanding" */
    long retries;            /* extra tries of the same target; default 0 */
    long retry_base_ms;      /* backoff base, doubled each try; 200 */
    long retry_max_ms;       /* backoff cap; 5000 */
    long deadline_ms;        /* every attempt must start by then; 0 = none */
    long breaker_failures;   /* failures in the window that open it;
                                0 (no "breaker" key) = no breaker */
    long breaker_window_ms;  /* 30000 */
    long breaker_open_ms;    /* open time before a half-open probe; 30000 */
} sl_model_t;

typedef enum {
    SL_ROUTE_CHAT = 1,   /* POST, OpenAI chat completions */
    SL_ROUTE_EMBEDDINGS, /* POST */
    SL_ROUTE_MODELS,     /* GET, the models this config serves */
    SL_ROUTE_HEALTH,     /* GET */
    SL_ROUTE_MESSAGES,   /* POST, Anthropic Messages (frontends/) */
} sl_route_kind_t;

typedef struct {
    char *path; /* exact match on the request path */
    sl_route_kind_t kind;
    char **plugins; /* names in $.plugins, in the order they run */
    size_t nplugins;
    char *lua; /* the script's path as written, or NULL */
    char *lua_file; /* ...resolved against the config file's directory */
    /* Bounds of each call into the script ($.routes[i].lua_limits). */
    long lua_instructions; /* VM instructions; default 10000000 */
    long lua_timeout_ms;   /* wall clock, waits included; default 30000 */
    long lua_memory_mb;    /* memory it may add; default 64 */
    char *lua_config; /* $.routes[i].lua_config as JSON text, or NULL */
} sl_route_t;

/* A C plugin instance, $.plugins.NAME; plugin.c loads it. */
typedef struct {
    char *name;   /* the key: letters, digits, '_', '-'; 1..64 bytes */
    char *path;   /* as written */
    char *file;   /* path resolved against plugin_dir unless absolute */
    char *config; /* the "config" object as JSON text; "{}" when absent */
    int fail_open; /* 1 or 0 as configured; -1: the plugin's default */
} sl_plugin_conf_t;

typedef struct {
    char *addr; /* as written, "host:port" or "[v6]:port" */
    char *host;
    int port;
    /* "tls": {"cert", "key", "client_ca", "require_client_cert"}; cert and
     * key are PEM file paths, NULL for a plain listener. */
    char *tls_cert, *tls_key, *tls_client_ca;
    int tls_require_client_cert;
} sl_listen_t;

typedef struct {
    size_t max_header_bytes;    /* 431 past it; default 16384 */
    size_t max_body_bytes;      /* 413 past it; default 4 MiB */
    long header_timeout_ms;     /* 408 then close; default 10000 */
    long body_timeout_ms;       /* 408 then close; default 30000 */
    long idle_timeout_ms;       /* keep-alive idle close; default 60000 */
    long max_connections;       /* per process; default 10000 */
    long drain_timeout_ms;      /* SIGTERM grace; default 30000 */
    size_t max_response_bytes;  /* non-stream upstream body cap; 64 MiB */
} sl_limits_t;

typedef struct sl_config {
    char *path; /* the file it was loaded from */
    sl_listen_t *listen;
    size_t nlisten;
    int workers; /* default: number of online CPUs */
    char *data_dir; /* default "./data" */
    /* Where relative plugin paths are found: plugin_dir as written if
     * absolute, else relative to the config file's directory (which is
     * the default). */
    char *plugin_dir;
    sl_plugin_conf_t *plugins;
    size_t nplugins;
    sl_provider_t *providers;
    size_t nproviders;
    sl_model_t *models;
    size_t nmodels;
    int allow_direct_models; /* "provider/model" accepted; default true */
    sl_route_t *routes;
    size_t nroutes;
    sl_limits_t limits;
    char *access_log; /* "stderr" (default), "off", or a file path */
    /* The admin listener: off (admin_token NULL) unless the variable named
     * by admin.token_env is set; an admin without a token is never open. */
    sl_listen_t admin;    /* admin.addr, default 127.0.0.1:9090 */
    char *admin_token_env; /* default "SLUICE_ADMIN_TOKEN" */
    char *admin_token;
    char *source; /* the file's JSON text, for GET /admin/config */
    int metrics; /* per-request Prometheus metrics; default true */
    /* The LMDB store under data_dir ("store" key). */
    long store_map_size_mb;     /* default 1024 */
    long store_map_size_max_mb; /* grow a full map up to this; 0 = never */
    long store_flush_ms;        /* buffered databases reach disk; 1000 */
    /* "request_log" (core/requestlog.c): on unless enabled is false. */
    int reqlog_enabled;
    long reqlog_max_age_hours;     /* 168 */
    long reqlog_max_entries;       /* 1000000 */
    int reqlog_capture_bodies;     /* false */
    long reqlog_max_body_bytes;    /* per captured body; 16384 */
    long reqlog_sweep_interval_ms; /* retention sweep period; 10000 */
    /* "pricing" and "budgets" (core/pricing.h); never NULL once loaded. */
    struct sl_usage_conf *usage;
    /* $.prompts as JSON text, or NULL: prompt templates for Lua scripts,
     * checked and compiled by lua/prompt.c. */
    char *prompts;
} sl_config_t;

/* One validation error: the JSON path ("$.providers.openai.base_url") and
 * what is wrong with it. */
typedef struct {
    char path[256];
    char message[256];
    /* Added: 1 for a warning (message starts "warning: "), which does not
     * fail the load -- e.g. an api_key_env variable that is not set. */
    int warning;
} sl_config_error_t;

typedef struct {
    sl_config_error_t *items;
    size_t count, cap;
} sl_config_errors_t;

/* Parses and validates the whole document; every problem is appended to errs
 * (unknown keys too, each with its JSON path), not just the first; errs may
 * also receive warnings (see sl_config_error_t.warning) on success. On
 * success returns 0 and *out; on failure SL_ECONFIG and *out = NULL. A file
 * that cannot be read or is not JSON is one error with path "$". When the
 * `routes` key is absent, the default routes are used: /v1/chat/completions,
 * /v1/embeddings, /v1/models, /healthz. */
int sl_config_load_file(const char *path, sl_config_t **out,
                        sl_config_errors_t *errs);
int sl_config_load_string(const char *json, size_t len, sl_config_t **out,
                          sl_config_errors_t *errs);
/* Loads json as if it had been read from the file at path: relative paths
 * (plugin_dir...) resolve against that file's directory. */
int sl_config_load_string_as(const char *json, size_t len, const char *path,
                             sl_config_t **out, sl_config_errors_t *errs);
void sl_config_free(sl_config_t *cfg);
void sl_config_errors_free(sl_config_errors_t *errs);
/* Appends an error (warning: a warning) to errs the way the loader does,
 * for checks that run after it (plugin configs against their schemas). */
void sl_config_error_add(sl_config_errors_t *errs, int warning,
                         const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* base + ".key", or base + "[\"key\"]" when key is not a plain name. */
void sl_config_path_key(char *out, size_t cap, const char *base,
                        const char *key);

/* Look-ups used by the request path: linear scans over small arrays built at
 * load. NULL when absent. */
const sl_model_t *sl_config_model(const sl_config_t *cfg, const char *name,
                                  size_t len);
const sl_provider_t *sl_config_provider(const sl_config_t *cfg,
                                        const char *name, size_t len);

/* Non-zero when s[0..n) may stand in a URL path as it is: letters, digits,
 * '.', '-', '_', ':'. */
int sl_url_safe(const char *s, size_t n);
/* The per-target URLs of azure and gemini targets (malloc'd; all NULL for
 * other types). SL_EINVAL when the model name is not URL-safe. */
int sl_target_urls(const sl_provider_t *pr, const char *model, char **chat,
                   char **stream, char **embeddings);

#endif
