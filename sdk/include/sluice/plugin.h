/* sluice/plugin.h -- the Sluice gateway's C plugin ABI.
 *
 * A plugin is a shared object that exports one symbol, `sluice_plugin`, a
 * const descriptor (sluice_plugin_t). It links against nothing of the
 * gateway: everything it may ask of the gateway comes through the host
 * function table (sluice_host_t) handed to create(). Build it with
 *
 *     cc -fPIC -shared -Wl,--no-undefined \
 *        $(pkg-config --cflags sluice-plugin) -o my.so my.c
 *
 * and load it by naming it in the config's "plugins" object. The author's
 * guide is sdk/README.md; this header is the reference.
 *
 * Versioning. The ABI has a major and a minor number. The gateway loads a
 * plugin only when the majors are equal; a minor adds things at the ends
 * of structs and never moves or removes anything:
 *   - the descriptor starts with abi_major, abi_minor and struct_size; the
 *     gateway reads only the fields that fit in struct_size, so a plugin
 *     built against an older minor (a smaller descriptor) still loads, and
 *     the hooks it does not know about count as NULL;
 *   - the host table starts with its own size; each entry says in which
 *     minor it arrived. A plugin built against a newer minor than the
 *     gateway it runs in tests an entry with SLUICE_HOST_HAS() first.
 * Everything marked "since 1.0" is in every 1.x gateway; "since 1.1" in
 * 1.1 and later.
 *
 * Return codes. Host functions that can fail return int: SLUICE_OK (0) or
 * a negative SLUICE_E* code. Hooks return a verdict (sluice_verdict_t).
 *
 * Threads. One instance serves every worker thread: hooks of the same
 * instance run concurrently on several threads, each with its own request.
 * Keep per-request state in request memory (alloc, state_set), make what
 * the instance shares read-only after create() or use atomics, and keep no
 * global mutable state (a reload runs old and new instances side by side).
 * A hook must not block: no network or disk I/O, no sleeping, no lock that
 * another thread may hold for long. Everything the host table offers
 * (including kv) is safe to call from a hook.
 *
 * Memory. Nothing crosses the boundary to be freed by the other side.
 * A pointer the host returns is either "borrowed" (valid until the hook
 * returns; copy what you want to keep) or "request-owned" (valid until the
 * request ends, freed by the gateway). A pointer the plugin passes in is
 * only read during the call; the host copies what it keeps. */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLUICE_ABI_MAJOR 1
#define SLUICE_ABI_MINOR 1

/* ---- return codes ------------------------------------------------------ */

enum {
    SLUICE_OK = 0,
    SLUICE_ENOTFOUND = -1, /* no such item (header, message, key...) */
    SLUICE_EINVAL = -2,    /* a bad argument (index, name, JSON, status) */
    SLUICE_EPHASE = -3,    /* not callable in the current phase */
    SLUICE_ENOMEM = -4,    /* out of memory */
    SLUICE_ETOOBIG = -5,   /* a buffer or a limit is too small */
    SLUICE_EUNAVAIL = -6,  /* the service is not there (the store is not
                              open in this gateway) */
    SLUICE_EAGAIN = -7,    /* busy now, try later (the store's write queue
                              is full) */
    SLUICE_EIO = -8,       /* any other failure of the service */
};

/* ---- verdicts ---------------------------------------------------------- */

typedef enum {
    /* Go on: the next plugin, then the upstream (or the client). */
    SLUICE_CONTINUE = 0,
    /* Answer now with what respond() set; later plugins and later phases
     * are skipped, on_log still runs. */
    SLUICE_RESPOND = 1,
    /* The plugin failed. If its instance fails closed (the default unless
     * the descriptor or the config says fail_open) the client gets a 500
     * error naming the plugin; if it fails open the request goes on as if
     * the hook had returned CONTINUE. Either way the gateway logs it. */
    SLUICE_ERROR = 2,
} sluice_verdict_t;

/* ---- phases ------------------------------------------------------------ */

/* Where a call comes from; each host function lists the phases it may be
 * called in and returns SLUICE_EPHASE in the others. */
typedef enum {
    SLUICE_PHASE_LOAD = 0,     /* create(): no request */
    SLUICE_PHASE_REQUEST = 1,  /* on_request */
    SLUICE_PHASE_RESPONSE = 2, /* on_response */
    SLUICE_PHASE_CHUNK = 3,    /* on_chunk */
    SLUICE_PHASE_LOG = 4,      /* on_log */
} sluice_phase_t;

enum {
    SLUICE_LOG_ERROR = 0,
    SLUICE_LOG_WARN = 1,
    SLUICE_LOG_INFO = 2,
    SLUICE_LOG_DEBUG = 3,
};

/* ---- opaque handles ---------------------------------------------------- */

/* The call context a hook gets: one request (or, in create(), the load of
 * one instance) as seen by one plugin instance. Borrowed: valid until the
 * hook returns; never keep it. */
typedef struct sluice_req sluice_req_t;

/* An instance's validated config with every default filled in. Valid from
 * create() until destroy() returns. */
typedef struct sluice_config sluice_config_t;

typedef struct sluice_host sluice_host_t;

/* An instance's key-value namespace, for writes made outside a hook
 * (kv_handle). */
typedef struct sluice_kv sluice_kv_t;

/* A response header name checked once, at load, by the host's
 * response_header_prepare: a plugin that sets the same headers on every
 * request saves checking the names each time. Fill it only through
 * prepare; it points at the name it was given. */
typedef struct {
    const char *name;
    size_t len;
    uint32_t checked; /* set by prepare; a zeroed one is refused */
} sluice_header_name_t;

/* ---- the config schema ------------------------------------------------- */

typedef enum {
    SLUICE_CFG_STRING = 1,      /* a JSON string */
    SLUICE_CFG_INT = 2,         /* an integral JSON number (int64 range) */
    SLUICE_CFG_BOOL = 3,        /* true or false */
    SLUICE_CFG_NUMBER = 4,      /* any finite JSON number */
    SLUICE_CFG_STRING_LIST = 5, /* an array of strings */
    SLUICE_CFG_OBJECT = 6,      /* a JSON object, checked by the plugin */
} sluice_cfg_type_t;

/* One config key. The gateway checks an instance's "config" object against
 * the schema before create(): every key must be declared, of its type, and
 * present when required; a missing key takes its default. Each problem is
 * reported with its JSON path ($.plugins.NAME.config.KEY) by `sluice check`
 * and by a reload, which then keeps the running config.
 *
 * This struct is frozen for ABI major 1 (arrays of it have a fixed
 * stride): new schema features will come as new descriptor fields. */
typedef struct {
    const char *name; /* the key; NULL ends the schema array */
    sluice_cfg_type_t type;
    /* The default as text, or NULL for none: STRING the string itself;
     * INT and NUMBER a decimal number; BOOL "true" or "false";
     * STRING_LIST and OBJECT JSON text ("[\"a\", \"b\"]", "{}"). An
     * invalid default is a load error that names the plugin. */
    const char *default_value;
    int required; /* non-zero: the config must set it (no default used) */
    const char *description; /* one line, for `sluice plugins describe` */
} sluice_config_field_t;

/* ---- the descriptor ---------------------------------------------------- */

/* Every hook gets the instance create() made and the call context; it
 * returns a verdict. A NULL hook is skipped. Hooks run on worker threads,
 * concurrently (see "Threads" above) and must not block.
 *
 * Order: on a route with plugins [a, b, c], on_request runs a, b, c (the
 * way in); on_response, on_chunk and on_log run c, b, a (the way out). */
typedef sluice_verdict_t (*sluice_hook_fn)(void *instance, sluice_req_t *req);

typedef struct sluice_plugin {
    /* since 1.0 -- these three are first in every version, forever */
    uint32_t abi_major; /* SLUICE_ABI_MAJOR as the plugin was built */
    uint32_t abi_minor; /* SLUICE_ABI_MINOR as the plugin was built */
    size_t struct_size; /* sizeof(sluice_plugin_t) as the plugin was built */

    /* since 1.0 */
    const char *name;        /* [a-z0-9_-]+; unique among loaded libraries */
    const char *version;     /* the plugin's own version, free text */
    const char *description; /* one line; may be NULL */
    /* Terminated by an entry whose name is NULL; NULL for no config. */
    const sluice_config_field_t *config_schema;
    /* ERROR fails open (the request goes on) when non-zero. The config's
     * "fail_open" overrides it per instance. */
    int fail_open;

    /* Makes an instance. Runs on the thread that loads the config (the
     * main thread at start, the reload path later), never on a worker, so
     * it may block briefly (read a file). `host` outlives every instance:
     * keep the pointer. `ctx` is a SLUICE_PHASE_LOAD context for log, kv
     * and metric_add; it is borrowed for the call. `config` is valid until
     * destroy() returns. On success set *instance (may be NULL) and return
     * SLUICE_OK; on failure write a one-line reason into err (errlen
     * bytes, NUL-terminated) and return a negative SLUICE_E*: the load
     * fails and names the plugin. May be NULL (the instance is NULL). */
    int (*create)(const sluice_host_t *host, sluice_req_t *ctx,
                  const sluice_config_t *config, void **instance, char *err,
                  size_t errlen);
    /* Frees an instance once no request uses it any more (the config it
     * belongs to was replaced or the gateway stops). It may run on any
     * thread, a worker's included, so it must not block. May be NULL. */
    void (*destroy)(void *instance);

    /* After the body is decoded and the model resolved, before the
     * upstream call. May read and rewrite the messages, set the consumer,
     * answer early (RESPOND). Runs on chat, embeddings and messages (the
     * Anthropic front door, seen here in OpenAI's shape) routes. */
    sluice_hook_fn on_request;
    /* Before a non-stream answer goes to the client (the upstream's answer,
     * or the gateway's error about the upstream). May read and rewrite the
     * response text, or replace the whole answer (respond + RESPOND). Not
     * called for streams, nor after a plugin answered in on_request. */
    sluice_hook_fn on_response;
    /* For each event of a stream, before it goes to the client. May read
     * and rewrite the delta text. RESPOND is not possible once a stream
     * runs and counts as ERROR; ERROR (fail closed) ends the stream with
     * an error event. */
    sluice_hook_fn on_chunk;
    /* Once when the request is over (answered, failed, or the client went
     * away), also after a RESPOND. Read-only; the verdict is ignored (an
     * ERROR is logged). */
    sluice_hook_fn on_log;
} sluice_plugin_t;

/* The first fields of a descriptor:
 *     SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
 *         SLUICE_PLUGIN_HEADER,
 *         .name = "example", .version = "1.0.0", ...
 *     }; */
#define SLUICE_PLUGIN_HEADER                                                   \
    .abi_major = SLUICE_ABI_MAJOR, .abi_minor = SLUICE_ABI_MINOR,              \
    .struct_size = sizeof(sluice_plugin_t)

#if defined(__GNUC__)
#define SLUICE_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define SLUICE_PLUGIN_EXPORT
#endif

/* ---- the host table ---------------------------------------------------- */

/* Non-zero when the gateway's table has entry `fn` (and it is set): use it
 * before calling anything newer than 1.0. */
#define SLUICE_HOST_HAS(host, fn)                                              \
    ((host) != NULL &&                                                         \
     (host)->size >= offsetof(sluice_host_t, fn) + sizeof((host)->fn) &&       \
     (host)->fn != NULL)

#if defined(__GNUC__)
#define SLUICE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SLUICE_PRINTF(f, a)
#endif

/* Phases, in each entry's comment: load = create(), req = on_request,
 * resp = on_response, chunk = on_chunk, log = on_log, "all" = all five.
 * Called in another phase, a function returns SLUICE_EPHASE (NULL for the
 * ones that return a pointer) and changes nothing. */
struct sluice_host {
    /* since 1.0: sizeof(sluice_host_t) as the gateway was built; entries
     * past it do not exist. */
    size_t size;
    /* since 1.0: the gateway's ABI version and its release ("0.1.0"). */
    uint32_t abi_major;
    uint32_t abi_minor;
    const char *gateway_version;

    /* -- config (since 1.0) -------------------------------------------
     * Read the instance's config: the value given, else the schema's
     * default. Strings are owned by the config (valid until destroy()).
     * SLUICE_ENOTFOUND when the key is not in the schema or has neither a
     * value nor a default; SLUICE_EINVAL when the key is of another type.
     * Any thread, any time between create() and destroy(). */
    int (*config_string)(const sluice_config_t *cfg, const char *key,
                         const char **value);
    int (*config_int)(const sluice_config_t *cfg, const char *key,
                      int64_t *value);
    int (*config_number)(const sluice_config_t *cfg, const char *key,
                         double *value);
    /* *value is 1 or 0. */
    int (*config_bool)(const sluice_config_t *cfg, const char *key, int *value);
    /* A STRING_LIST: its length, and item i (SLUICE_ENOTFOUND past the
     * end). */
    int (*config_list_count)(const sluice_config_t *cfg, const char *key,
                             size_t *count);
    int (*config_list_item)(const sluice_config_t *cfg, const char *key,
                            size_t i, const char **value);
    /* The value as compact JSON text, any type (an OBJECT is read this
     * way); key NULL gives the whole config. */
    int (*config_json)(const sluice_config_t *cfg, const char *key,
                       const char **json);

    /* -- the request line and headers (since 1.0) ---------------------
     * Borrowed, not NUL-terminated: use *len. Phases: req, resp, chunk,
     * log. */
    int (*request_method)(sluice_req_t *req, const char **method, size_t *len);
    /* The path without the query string. */
    int (*request_path)(sluice_req_t *req, const char **path, size_t *len);
    /* The first header named `name` (case-insensitive); SLUICE_ENOTFOUND
     * when there is none. */
    int (*request_header)(sluice_req_t *req, const char *name,
                          const char **value, size_t *len);

    /* -- response headers (since 1.0) ---------------------------------
     * Adds a header to whatever answer this request gets (the model's,
     * an error, a RESPOND), replacing one of the same name that a plugin
     * set before. Both strings are copied. SLUICE_EINVAL for a name that
     * is not an HTTP token, a value with control characters, or a header
     * the gateway owns (Content-Length, Content-Type, Transfer-Encoding,
     * Connection, and the x-sluice-* ones but x-sluice-cache and
     * x-sluice-guardrail, which the bundled plugins set); SLUICE_ETOOBIG past 16
     * headers or 1 KiB in all. Phases: req, resp (and chunk before the
     * stream's first event has been sent: SLUICE_EPHASE after). */
    int (*response_header_set)(sluice_req_t *req, const char *name,
                               const char *value);

    /* -- the chat request (since 1.0) ---------------------------------
     * The request body in OpenAI's chat shape whatever provider serves it,
     * so a plugin never parses a provider's format. Embeddings requests
     * have no messages (count 0). */
    /* The model as the client named it; borrowed, NUL-terminated. Phases:
     * req, resp, chunk, log. */
    int (*model)(sluice_req_t *req, const char **name);
    /* 1 for a stream, 0 otherwise (or a negative SLUICE_E*). Phases: req,
     * resp, chunk, log. */
    int (*stream)(sluice_req_t *req);
    /* Number of messages. Phases: req, resp, chunk, log. */
    int (*message_count)(sluice_req_t *req, size_t *count);
    /* Message i's role ("system", "user", "assistant", "tool"...);
     * borrowed, NUL-terminated. SLUICE_ENOTFOUND past the end. Phases:
     * req, resp, chunk, log. */
    int (*message_role)(sluice_req_t *req, size_t i, const char **role);
    /* Message i's text: its string content, or its text parts joined with
     * "\n". Borrowed, NUL-terminated (*len may be NULL). SLUICE_ENOTFOUND
     * past the end or when the message has no text (content null).
     * Phases: req, resp, chunk, log. Text read in on_request before a
     * rewrite stays valid until the hook returns. */
    int (*message_text)(sluice_req_t *req, size_t i, const char **text,
                        size_t *len);
    /* Replaces message i's text (copied): a string content becomes
     * `text`; with content parts, the first text part gets `text`, the
     * other text parts go and non-text parts (images) stay. The upstream
     * gets the new text. Phase: req only. */
    int (*message_set_text)(sluice_req_t *req, size_t i, const char *text,
                            size_t len);

    /* -- the answer (since 1.0) ---------------------------------------- */
    /* The status of the answer being sent (resp), or that was sent (log;
     * 499 when the client went away first). Phases: resp, chunk, log. */
    int (*response_status)(sluice_req_t *req, int *status);
    /* A non-stream chat answer's choices[choice].message.content.
     * Borrowed, NUL-terminated (*len may be NULL). SLUICE_ENOTFOUND when
     * the answer has no such text (an error, embeddings). Phase: resp. */
    int (*response_text)(sluice_req_t *req, size_t choice, const char **text,
                         size_t *len);
    /* Replaces that text (copied); the client gets the new answer.
     * Phase: resp. */
    int (*response_set_text)(sluice_req_t *req, size_t choice, const char *text,
                             size_t len);
    /* The current stream event's choices[0].delta.content. Borrowed,
     * NUL-terminated (*len may be NULL). SLUICE_ENOTFOUND when the event
     * carries no text (the role-only first event, the finish event, the
     * usage event). Phase: chunk. */
    int (*delta_text)(sluice_req_t *req, const char **text, size_t *len);
    /* Replaces it (copied; "" is allowed). Phase: chunk. */
    int (*delta_set_text)(sluice_req_t *req, const char *text, size_t len);

    /* -- answering (since 1.0) ----------------------------------------
     * Sets the answer that a SLUICE_RESPOND verdict sends: `status`
     * (200..599) and `json`, a JSON document of len bytes (copied; send
     * errors in OpenAI's shape: {"error":{"message","type","code"}}).
     * SLUICE_EINVAL when json does not parse or the status is out of
     * range. The hook must then return SLUICE_RESPOND (RESPOND without a
     * respond() call is an ERROR). Phases: req, resp; since 1.1 also
     * chunk, where a RESPOND ends the stream: `json` goes out as its last
     * event (the status is ignored: the head is gone), nothing after it,
     * no [DONE]. */
    int (*respond)(sluice_req_t *req, int status, const char *json, size_t len);

    /* -- the consumer (since 1.0) -------------------------------------
     * Who is calling, as an auth plugin established it; read by rate
     * limits, the usage ledger and the access log. */
    /* Borrowed (request-owned), NUL-terminated; SLUICE_ENOTFOUND when no
     * plugin set one. Phases: req, resp, chunk, log. */
    int (*consumer)(sluice_req_t *req, const char **id);
    /* Sets it (copied; 1..256 bytes, no control characters). Phase:
     * req. */
    int (*consumer_set)(sluice_req_t *req, const char *id);

    /* -- request memory (since 1.0) -----------------------------------
     * n bytes, 16-byte aligned, owned by the request: freed when the
     * request ends, never by the plugin. NULL on OOM or in the load
     * phase. In on_chunk prefer small amounts: it all lives until the
     * stream ends. Phases: req, resp, chunk, log. */
    void *(*alloc)(sluice_req_t *req, size_t n);
    /* One pointer per (request, instance) that hooks pass to the later
     * hooks of the same request; NULL until set. Point it at request
     * memory. Phases: req, resp, chunk, log. */
    void *(*state_get)(sluice_req_t *req);
    int (*state_set)(sluice_req_t *req, void *state);

    /* -- key-value store (since 1.0) ----------------------------------
     * Persistent (LMDB, survives restarts), namespaced per instance: two
     * instances never see each other's keys. Keys are 1..400 bytes,
     * values up to the store's limit (4 MiB by default). Reads are
     * immediate; writes are queued to the store's writer thread and
     * return once queued (a read right after a write may not see it yet;
     * it is normally visible within a millisecond). SLUICE_EUNAVAIL when
     * this gateway runs without a store; SLUICE_EAGAIN when the write
     * queue is full. Phases: all. */
    /* Copies the value into buf (cap bytes); *len (may be NULL) gets its
     * length. SLUICE_ETOOBIG when cap < *len (pass cap 0 to learn the
     * length), SLUICE_ENOTFOUND when absent or expired. */
    int (*kv_get)(sluice_req_t *req, const void *key, size_t klen, void *buf,
                  size_t cap, size_t *len);
    /* ttl_ms 0: never expires. */
    int (*kv_set)(sluice_req_t *req, const void *key, size_t klen,
                  const void *val, size_t vlen, int64_t ttl_ms);
    int (*kv_delete)(sluice_req_t *req, const void *key, size_t klen);
    /* Adds delta to a 64-bit counter atomically (every increment counts).
     * A counter that is absent or expired starts at delta and expires
     * ttl_ms later (0 = never); a live one keeps its expiry, so keying
     * by window with the window's length makes fixed windows. *value (may
     * be NULL) gets the counter as this gateway sees it plus delta: exact
     * unless other increments of the same key are still queued (a
     * concurrent request, another worker). SLUICE_EINVAL when the key
     * holds a non-counter value. */
    int (*kv_incr)(sluice_req_t *req, const void *key, size_t klen,
                   int64_t delta, int64_t ttl_ms, int64_t *value);

    /* -- logging and metrics (since 1.0) ------------------------------ */
    /* printf-style; one line on the gateway's log prefixed with the
     * instance name. level is a SLUICE_LOG_*. Phases: all. */
    void (*log)(sluice_req_t *req, int level, const char *fmt, ...)
        SLUICE_PRINTF(3, 4);
    /* Adds value (>= 0) to the counter `name` ([a-zA-Z_:][a-zA-Z0-9_:]*,
     * at most 64 bytes) with `labels` (NULL or Prometheus label pairs
     * without braces, 'k="v",k2="v2"', at most 192 bytes); the gateway
     * adds plugin="<instance>". Counted per worker thread without locks.
     * SLUICE_EINVAL for a bad name, labels or value; SLUICE_ETOOBIG past
     * 512 series per worker. Phases: all. */
    int (*metric_add)(sluice_req_t *req, const char *name, const char *labels,
                      double value);

    /* -- the call context (since 1.0) ---------------------------------- */
    /* The phase this context is in (a sluice_phase_t). Phases: all. */
    int (*phase)(sluice_req_t *req);
    /* The instance's name in the config (not the descriptor's name).
     * Borrowed; valid until destroy(). Phases: all. */
    const char *(*instance_name)(sluice_req_t *req);

    /* -- the client (since 1.1) -----------------------------------------
     * The client's IP address as text ("127.0.0.1", "::1"), the peer of
     * the connection the request came on: what a rate limit falls back to
     * when no auth plugin set a consumer. Borrowed (request-owned),
     * NUL-terminated (*len may be NULL). SLUICE_ENOTFOUND when the
     * connection has no IP peer. Phases: req, resp, chunk, log. */
    int (*client_addr)(sluice_req_t *req, const char **addr, size_t *len);

    /* -- request attributes (since 1.1) ---------------------------------
     * Named string values that the plugins of one request share: one
     * plugin sets what a later one reads (an auth plugin sets a key's
     * limits, "ratelimit.rpm", for the rate limit). Names are 1..64 bytes
     * of [a-z0-9_.-], by convention "<reader plugin>.<what>"; values are
     * up to 1 KiB without control characters. Both are copied. At most 32
     * attributes per request (SLUICE_ETOOBIG past it); setting a name
     * again replaces its value. attr_set phase: req. attr_get: borrowed
     * (request-owned), NUL-terminated; SLUICE_ENOTFOUND when unset;
     * phases req, resp, chunk, log. attr_get also reads "lua.NAME": the
     * value the route's Lua script left in ctx.vars.NAME (a string, a
     * number or a boolean, as text), set once a script phase has run. */
    int (*attr_set)(sluice_req_t *req, const char *name, const char *value);
    int (*attr_get)(sluice_req_t *req, const char *name, const char **value);

    /* -- token accounting (since 1.1) -----------------------------------
     * The request's max_tokens (or max_completion_tokens) as the client
     * sent it; SLUICE_ENOTFOUND when it set neither. Phases: req, resp,
     * chunk, log. */
    int (*request_max_tokens)(sluice_req_t *req, int64_t *value);
    /* The provider's usage for this answer: prompt and completion tokens
     * (either pointer may be NULL). Known once the answer is complete
     * (on_response; on_log after a stream, when the provider reported
     * usage); SLUICE_ENOTFOUND while unknown (an error, an aborted
     * request, a provider that reported none). Phases: resp, chunk,
     * log. */
    int (*usage)(sluice_req_t *req, int64_t *prompt_tokens,
                 int64_t *completion_tokens);

    /* -- the whole request and answer (since 1.1) -----------------------
     * The canonical chat request (OpenAI's shape, whatever the provider)
     * as compact JSON, with the messages as rewritten so far: what a cache
     * keys on. Request-owned, NUL-terminated (*len may be NULL). Phases:
     * req, resp, chunk, log. */
    int (*request_json)(sluice_req_t *req, const char **json, size_t *len);
    /* In on_response the whole answer body as it stands (JSON; an error
     * body too); in on_chunk the current stream event's data (the JSON
     * after "data: "). Borrowed, NUL-terminated (*len may be NULL).
     * SLUICE_ENOTFOUND when there is none. Phases: resp, chunk. */
    int (*response_body)(sluice_req_t *req, const char **body, size_t *len);
    /* Answers in the upstream's place (a cache hit) with a stream: `sse`
     * is a text/event-stream body ("data: {...}\n\n" events, normally
     * ending with "data: [DONE]\n\n"), copied. Unlike respond(), the
     * answer goes out as an upstream stream would: each event through
     * the on_chunk hooks of the plugins before this one in the route
     * (reverse order), so they restore or check it as usual; then to the
     * client (a /v1/messages client gets it translated). SLUICE_EINVAL
     * for a status out of 200..599 or a body with no data event. The
     * hook then returns SLUICE_RESPOND. Phase: req. */
    int (*respond_stream)(sluice_req_t *req, int status, const char *sse,
                          size_t len);
    /* 1 when the whole answer reached the client's connection (a
     * non-stream answer was sent; a stream ended cleanly, with [DONE]),
     * 0 when it did not (a stream cut by an error or a client that left).
     * Phase: log. */
    int (*response_complete)(sluice_req_t *req);
    /* Adds "key":"value" to the request's access-log line (both copied;
     * setting a key again replaces it). key is 1..32 bytes of [a-z0-9_]
     * and not one of the gateway's own fields; value up to 256 bytes. At
     * most 8 fields and 1 KiB per request (SLUICE_ETOOBIG). The line is
     * written when the answer ends, before on_log: phases req, resp,
     * chunk. */
    int (*log_field_set)(sluice_req_t *req, const char *key,
                         const char *value);

    /* -- the shared key database (since 1.1) ---------------------------
     * Reads the gateway's KEYS database: the API-key records that `sluice
     * keys` and the admin API write (plugins/auth/README.md has their
     * layout), synced to disk on every commit. Read-only for plugins, and
     * not namespaced per instance: an auth plugin sees the keys an
     * operator manages without owning them. `ns` names the record kind
     * ("apikey", "apikey-id"). Otherwise like kv_get: copies the value
     * into buf (cap bytes), *len (may be NULL) gets its length;
     * SLUICE_ETOOBIG when cap < *len, SLUICE_ENOTFOUND when absent,
     * SLUICE_EUNAVAIL without a store. Phases: all. Test it with
     * SLUICE_HOST_HAS(host, keys_get). */
    int (*keys_get)(sluice_req_t *req, const char *ns, const void *key,
                    size_t klen, void *buf, size_t cap, size_t *len);

    /* Answers in the upstream's place (a cache hit) with a whole answer:
     * like respond(), but the answer goes through the on_response hooks
     * of the plugins before this one in the route (reverse order), as an
     * upstream answer would. The hook then returns SLUICE_RESPOND. Phase:
     * req. */
    int (*respond_answer)(sluice_req_t *req, int status, const char *json,
                          size_t len);

    /* -- since 1.1: writes outside a hook, the key database's version -
     * The instance's key-value namespace as a handle, for kv writes made
     * when no hook runs: from destroy() or from a thread of the plugin's
     * own (a rate limit that keeps its counts in memory writes them back
     * every second, and once more when it stops). Call it in create()
     * with the load context; the handle stays valid until destroy()
     * returns. NULL in any other phase. */
    sluice_kv_t *(*kv_handle)(sluice_req_t *req);
    /* kv_set through a handle, from any thread: queued like kv_set. */
    int (*kv_handle_set)(sluice_kv_t *kv, const void *key, size_t klen,
                         const void *val, size_t vlen, int64_t ttl_ms);
    /* *version gets a number that changes whenever the KEYS database (see
     * keys_get) may have changed, written by this gateway or by another
     * process (`sluice keys revoke`): while it stays the same, a record
     * read earlier is still what keys_get would return, so a plugin may
     * keep verified records in memory. Read it before keys_get when
     * caching. A few loads, no store transaction. SLUICE_EUNAVAIL without
     * a store. Phases: all. */
    int (*keys_version)(sluice_req_t *req, uint64_t *version);

    /* -- response headers by a name checked once (since 1.1) ----------
     * Checks `name` as response_header_set would (an HTTP token, not a
     * header the gateway owns: SLUICE_EINVAL) and fills *h with it. *h
     * keeps pointing at name: keep the string alive as long as *h is used
     * (a string literal, or memory of the instance). Call it in create();
     * no request needed, any thread. */
    int (*response_header_prepare)(sluice_header_name_t *h, const char *name);
    /* response_header_set with a prepared name and a value of len bytes
     * (no NUL needed; copied). Same rules, errors and phases; SLUICE_EINVAL
     * for an *h that prepare did not fill. */
    int (*response_header_set_prepared)(sluice_req_t *req,
                                        const sluice_header_name_t *h,
                                        const char *value, size_t len);

    /* Answers in the upstream's place with an answer the plugin kept
     * from an earlier upstream answer that passed its checks (a cache
     * hit): like respond_answer() when stream is 0 (`body` is the JSON
     * answer) and respond_stream() when it is 1 (a text/event-stream
     * body), except that a JSON body is not parsed again to check it:
     * the plugin vouches for it, and a hit costs no JSON work. Copied.
     * SLUICE_EINVAL for a status out of 200..599, an empty body, or a
     * stream body with no data event. The hook then returns
     * SLUICE_RESPOND. Phase: req. Since 1.1; test it with
     * SLUICE_HOST_HAS(host, respond_kept). */
    int (*respond_kept)(sluice_req_t *req, int status, const char *body,
                        size_t len, int stream);

    /* New entries go here, each with "since 1.N". */
};

/* ---- the exported symbol ----------------------------------------------- */

/* The gateway looks this name up with dlsym(). */
#define SLUICE_PLUGIN_SYMBOL "sluice_plugin"

#ifdef __cplusplus
}
#endif

#endif
