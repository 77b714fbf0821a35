/* An example Sluice plugin, built out of tree: it counts the requests of
 * every route it is on in the gateway's key-value store and tells the
 * client the count in a response header.
 *
 *     make                      # uses `pkg-config --cflags sluice-plugin`
 *     "plugins": {"counter": {"path": "/path/to/example.so",
 *                             "config": {"header": "x-example-count"}}}
 *
 * See README.md beside it, and sdk/README.md for the author's guide. */
#include <sluice/plugin.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The config: checked by the gateway against this schema before create(),
 * so create() only reads values it knows are there and well typed. */
static const sluice_config_field_t schema[] = {
    {"header", SLUICE_CFG_STRING, "x-example-count", 0,
     "the response header that carries the count"},
    {"key", SLUICE_CFG_STRING, "requests", 0,
     "the key the count is kept under (per instance)"},
    {"window_s", SLUICE_CFG_INT, "0", 0,
     "count per fixed window of this many seconds; 0 counts forever"},
    {NULL, 0, NULL, 0, NULL},
};

/* One instance per config snapshot, shared by every worker thread: what
 * it holds is read-only after create(), except the atomics. */
typedef struct {
    const sluice_host_t *host;
    const char *header; /* owned by the config, valid until destroy() */
    const char *key;
    int64_t window_ms;
    atomic_long local; /* the count when the gateway has no store */
    atomic_int warned;
} counter_t;

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    /* Everything used below is in ABI 1.0; a plugin that needs a later
     * entry checks it here with SLUICE_HOST_HAS and refuses to start. */
    if (!SLUICE_HOST_HAS(host, metric_add)) {
        snprintf(err, errlen, "this gateway's host table is too old");
        return SLUICE_EINVAL;
    }
    counter_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    int64_t window_s = 0;
    c->host = host;
    host->config_string(config, "header", &c->header);
    host->config_string(config, "key", &c->key);
    host->config_int(config, "window_s", &window_s);
    if (window_s < 0) {
        snprintf(err, errlen, "window_s must not be negative");
        free(c);
        return SLUICE_EINVAL;
    }
    c->window_ms = window_s * 1000;
    host->log(ctx, SLUICE_LOG_INFO, "counting under '%s' into header %s",
              c->key, c->header);
    *instance = c;
    return SLUICE_OK;
}

static void
destroy(void *instance) {
    free(instance);
}

/* Runs on a worker thread, concurrently with other requests: it must not
 * block. kv_incr only queues the write, so it does not. */
static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    counter_t *c = instance;
    const sluice_host_t *h = c->host;
    int64_t count = 0;
    int rc = h->kv_incr(req, c->key, strlen(c->key), 1, c->window_ms, &count);
    if (rc == SLUICE_EUNAVAIL) {
        /* No store in this gateway: count in memory, per instance. */
        count = atomic_fetch_add(&c->local, 1) + 1;
        if (atomic_exchange(&c->warned, 1) == 0)
            h->log(req, SLUICE_LOG_WARN, "no store: counting in memory");
    } else if (rc != SLUICE_OK) {
        /* A full write queue is no reason to fail the request: this
         * plugin's job is optional, so it goes on without the header. */
        h->log(req, SLUICE_LOG_WARN, "kv_incr failed: %d", rc);
        return SLUICE_CONTINUE;
    }
    char value[32];
    snprintf(value, sizeof(value), "%lld", (long long)count);
    h->response_header_set(req, c->header, value);
    h->metric_add(req, "requests_total", NULL, 1);
    return SLUICE_CONTINUE;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "example-counter",
    .version = "1.0.0",
    .description = "counts requests in kv and returns the count in a header",
    .config_schema = schema,
    .fail_open = 1, /* counting is optional: an error lets requests pass */
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
};
