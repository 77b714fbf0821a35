/* The test suite's well-behaved plugin: every behaviour is switched on by
 * its config, so one library serves many instances in a test config. */
#include <sluice/plugin.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sluice_config_field_t schema[] = {
    {"header", SLUICE_CFG_STRING, "x-tgood", 0,
     "response header set on every answer; its value is the instance name"},
    {"deny_header", SLUICE_CFG_STRING, NULL, 0,
     "answer 403 at once when the request has this header"},
    {"prompt_prefix", SLUICE_CFG_STRING, NULL, 0,
     "put in front of the last user message"},
    {"response_suffix", SLUICE_CFG_STRING, NULL, 0,
     "appended to a non-stream answer's text"},
    {"delta_upper", SLUICE_CFG_BOOL, "false", 0,
     "upper-case every stream delta"},
    {"fail_in", SLUICE_CFG_STRING, "", 0,
     "return ERROR in this hook: request, response, chunk or log"},
    {"consumer_header", SLUICE_CFG_STRING, NULL, 0,
     "take the consumer id from this request header"},
    {"kv_count", SLUICE_CFG_BOOL, "false", 0,
     "count requests in kv; header x-tgood-count"},
    {"limit", SLUICE_CFG_INT, "10", 0, "an int, for schema tests"},
    {"ratio", SLUICE_CFG_NUMBER, "0.5", 0, "a number, for schema tests"},
    {"tags", SLUICE_CFG_STRING_LIST, "[\"a\", \"b\"]", 0,
     "a list, for schema tests"},
    {"extra", SLUICE_CFG_OBJECT, "{}", 0, "an object, for schema tests"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct {
    const sluice_host_t *host;
    const char *header, *deny, *prefix, *suffix, *fail_in, *consumer_hdr;
    int upper, kv_count;
} tgood_t;

typedef struct {
    long chunks;
} req_state_t;

static const char *
opt(const sluice_host_t *h, const sluice_config_t *c, const char *key) {
    const char *v = NULL;
    return h->config_string(c, key, &v) == SLUICE_OK ? v : NULL;
}

static int
create(const sluice_host_t *host, sluice_req_t *ctx,
       const sluice_config_t *config, void **instance, char *err,
       size_t errlen) {
    if (host->abi_major != SLUICE_ABI_MAJOR ||
        !SLUICE_HOST_HAS(host, instance_name)) {
        snprintf(err, errlen, "host table too old");
        return SLUICE_EINVAL;
    }
    tgood_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    t->host = host;
    t->header = opt(host, config, "header");
    t->deny = opt(host, config, "deny_header");
    t->prefix = opt(host, config, "prompt_prefix");
    t->suffix = opt(host, config, "response_suffix");
    t->fail_in = opt(host, config, "fail_in");
    t->consumer_hdr = opt(host, config, "consumer_header");
    host->config_bool(config, "delta_upper", &t->upper);
    host->config_bool(config, "kv_count", &t->kv_count);
    host->log(ctx, SLUICE_LOG_INFO, "created (%s)", host->instance_name(ctx));
    *instance = t;
    return SLUICE_OK;
}

static void
destroy(void *instance) {
    free(instance);
}

static int
fails_in(const tgood_t *t, const char *phase) {
    return t->fail_in != NULL && strcmp(t->fail_in, phase) == 0;
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req) {
    tgood_t *t = instance;
    const sluice_host_t *h = t->host;
    const char *v;
    size_t n;

    req_state_t *st = h->alloc(req, sizeof(*st));
    if (st == NULL)
        return SLUICE_ERROR;
    st->chunks = 0;
    h->state_set(req, st);
    h->metric_add(req, "requests_total", "hook=\"on_request\"", 1);
    if (t->header != NULL)
        h->response_header_set(req, t->header, h->instance_name(req));
    if (t->consumer_hdr != NULL &&
        h->request_header(req, t->consumer_hdr, &v, &n) == SLUICE_OK) {
        char *id = h->alloc(req, n + 1);
        if (id == NULL)
            return SLUICE_ERROR;
        memcpy(id, v, n);
        id[n] = '\0';
        h->consumer_set(req, id);
    }
    if (t->deny != NULL &&
        h->request_header(req, t->deny, &v, &n) == SLUICE_OK) {
        static const char body[] =
            "{\"error\":{\"message\":\"denied by tgood\","
            "\"type\":\"permission_error\",\"code\":\"denied\"}}";
        h->respond(req, 403, body, sizeof(body) - 1);
        return SLUICE_RESPOND;
    }
    if (t->kv_count) {
        int64_t count = 0;
        int rc = h->kv_incr(req, "count", 5, 1, 0, &count);
        char buf[32];
        if (rc == SLUICE_OK)
            snprintf(buf, sizeof(buf), "%lld", (long long)count);
        else
            snprintf(buf, sizeof(buf), "error %d", rc);
        h->response_header_set(req, "x-tgood-count", buf);
    }
    if (t->prefix != NULL) {
        size_t count = 0, last = (size_t)-1;
        h->message_count(req, &count);
        for (size_t i = 0; i < count; i++) {
            const char *role;
            if (h->message_role(req, i, &role) == SLUICE_OK &&
                strcmp(role, "user") == 0)
                last = i;
        }
        const char *text;
        size_t len;
        if (last != (size_t)-1 &&
            h->message_text(req, last, &text, &len) == SLUICE_OK) {
            size_t pl = strlen(t->prefix);
            char *out = h->alloc(req, pl + len + 1);
            if (out == NULL)
                return SLUICE_ERROR;
            memcpy(out, t->prefix, pl);
            memcpy(out + pl, text, len);
            if (h->message_set_text(req, last, out, pl + len) != SLUICE_OK)
                return SLUICE_ERROR;
        }
    }
    return fails_in(t, "request") ? SLUICE_ERROR : SLUICE_CONTINUE;
}

static sluice_verdict_t
on_response(void *instance, sluice_req_t *req) {
    tgood_t *t = instance;
    const sluice_host_t *h = t->host;
    const char *id;
    if (h->consumer(req, &id) == SLUICE_OK)
        h->response_header_set(req, "x-tgood-consumer", id);
    if (t->suffix != NULL) {
        const char *text;
        size_t len;
        if (h->response_text(req, 0, &text, &len) == SLUICE_OK) {
            size_t sl = strlen(t->suffix);
            char *out = h->alloc(req, len + sl + 1);
            if (out == NULL)
                return SLUICE_ERROR;
            memcpy(out, text, len);
            memcpy(out + len, t->suffix, sl);
            h->response_set_text(req, 0, out, len + sl);
        }
    }
    return fails_in(t, "response") ? SLUICE_ERROR : SLUICE_CONTINUE;
}

static sluice_verdict_t
on_chunk(void *instance, sluice_req_t *req) {
    tgood_t *t = instance;
    const sluice_host_t *h = t->host;
    req_state_t *st = h->state_get(req);
    const char *text;
    size_t len;
    if (st != NULL)
        st->chunks++;
    if (t->upper && h->delta_text(req, &text, &len) == SLUICE_OK) {
        char *out = h->alloc(req, len + 1);
        if (out == NULL)
            return SLUICE_ERROR;
        for (size_t i = 0; i < len; i++)
            out[i] = (char)toupper((unsigned char)text[i]);
        h->delta_set_text(req, out, len);
    }
    return fails_in(t, "chunk") ? SLUICE_ERROR : SLUICE_CONTINUE;
}

static sluice_verdict_t
on_log(void *instance, sluice_req_t *req) {
    tgood_t *t = instance;
    const sluice_host_t *h = t->host;
    req_state_t *st = h->state_get(req);
    const char *id = "-", *path = "";
    size_t plen = 0;
    int status = 0;
    h->consumer(req, &id);
    h->request_path(req, &path, &plen);
    h->response_status(req, &status);
    /* Misuse is refused in this phase. */
    int misuse = h->respond(req, 200, "{}", 2);
    h->metric_add(req, "logs_total", NULL, 1);
    h->log(req, SLUICE_LOG_INFO,
           "on_log status=%d consumer=%s path=%.*s chunks=%ld misuse=%d",
           status, id, (int)plen, path, st ? st->chunks : -1L, misuse);
    return fails_in(t, "log") ? SLUICE_ERROR : SLUICE_CONTINUE;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,     .name = "tgood",
    .version = "1.0.0",       .description = "configurable test plugin",
    .config_schema = schema,  .fail_open = 0,
    .create = create,         .destroy = destroy,
    .on_request = on_request, .on_response = on_response,
    .on_chunk = on_chunk,     .on_log = on_log,
};
