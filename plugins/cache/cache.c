/* The cache plugin: exact-match cache of successful chat answers in the
 * gateway's store (host kv, with a TTL). The key is a SHA-256 of the
 * canonical request (replay.h) and the scope (the consumer, or shared);
 * the entry's kv key starts with "e:" MODEL "\0" so the admin API can
 * purge one model's entries with a prefix scan. A hit answers in
 * on_request, in the upstream's place (respond_answer, respond_stream:
 * the plugins before the cache in the route see it on the way out as
 * they would see the provider's, so pii restores its placeholders and
 * guardrails checks it): as JSON, or as an SSE replay for a streaming
 * request. What is stored is what the provider said, before those
 * plugins changed it. A
 * miss stores the answer once it is known to be whole: a plain 200
 * answer in on_response, a stream in on_log once it ended cleanly.
 *
 * The size cap is a ring of max_entries slots: each store takes the next
 * slot (a kv counter, handed out in order by the instance) and evicts the
 * entry that held it, so the
 * oldest entries go first (FIFO) and the cache never holds more than
 * max_entries live entries, plus the few a race between two stores in
 * the same slot may leave to their TTL. */
#define _POSIX_C_SOURCE 200809L
#include "replay.h"

#include <sluice/plugin.h>

/* SHA256() with a context on the stack: EVP's init, update and final
 * allocate and look the provider up, several times the hash itself on
 * a key this size. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const sluice_config_field_t schema[] = {
    {"ttl_seconds", SLUICE_CFG_INT, "300", 0,
     "how long an answer stays (0: until evicted or purged)"},
    {"max_entries", SLUICE_CFG_INT, "10000", 0,
     "entries kept; storing past it evicts the oldest"},
    {"max_entry_bytes", SLUICE_CFG_INT, "262144", 0,
     "answers bigger than this are not stored"},
    {"scope", SLUICE_CFG_STRING, "consumer", 0,
     "\"consumer\": one cache per consumer (set by auth); \"shared\": one "
     "for all"},
    {"cache_temperature", SLUICE_CFG_BOOL, "false", 0,
     "also cache requests that set temperature > 0"},
    {NULL, 0, NULL, 0, NULL},
};

#define CACHE_RECENT 64

typedef struct {
    const sluice_host_t *h;
    int64_t ttl_ms, max_entries, max_bytes;
    int shared, cache_temperature;
    int kept; /* the host has respond_kept */
    int prepared; /* hname is ready (the host has prepared headers) */
    sluice_header_name_t hname; /* x-sluice-cache */
    /* What a lookup first reads into: the last hit's size, rounded up
     * to a KiB (answers to one route are alike); a bigger entry takes a
     * second read. Shared by the workers, a hint only. */
    _Atomic size_t guess;
    _Atomic int64_t seq; /* the last ring position handed out */
    /* Keys stored in the last moment, by tag: misses of one request that
     * come before its store is committed store it once, not once each
     * (each copy would take a ring slot and evict another entry early,
     * and evicting one copy's slot deletes the entry the other still
     * names). A hint: two keys may share a cell. */
    struct {
        _Atomic uint64_t tag;
        _Atomic int64_t at_ms;
    } recent[CACHE_RECENT];
} cache_t;

typedef enum { C_BYPASS = 0, C_MISS, C_HIT } cmode_t;

/* The window in which a store is taken to be still on its way to the
 * disk (the store's writer commits within milliseconds). */
#define CACHE_PENDING_MS 1000

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Per request. */
typedef struct {
    cmode_t mode;
    int stream;
    char key[400];
    size_t klen;
    uint64_t tag; /* the key's first 64 bits, never 0 */
    cr_asm_t *asm_; /* a streamed miss being assembled (malloc'd; freed in
                       on_log, which always runs) */
} creq_t;

static int
create(const sluice_host_t *h, sluice_req_t *ctx, const sluice_config_t *cfg,
       void **instance, char *err, size_t errlen)
{
    /* respond_answer is the last of the 1.1 entries it uses. */
    if (!SLUICE_HOST_HAS(h, respond_answer)) {
        snprintf(err, errlen, "needs a gateway with plugin ABI 1.1 "
                              "(respond_answer, respond_stream...)");
        return SLUICE_EINVAL;
    }
    cache_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return SLUICE_ENOMEM;
    }
    int64_t ttl = 300;
    const char *scope = "consumer";
    c->h = h;
    h->config_int(cfg, "ttl_seconds", &ttl);
    h->config_int(cfg, "max_entries", &c->max_entries);
    h->config_int(cfg, "max_entry_bytes", &c->max_bytes);
    h->config_string(cfg, "scope", &scope);
    h->config_bool(cfg, "cache_temperature", &c->cache_temperature);
    const char *name = h->instance_name(ctx);
    if (ttl < 0 || c->max_entries < 1 || c->max_bytes < 1 ||
        (strcmp(scope, "consumer") != 0 && strcmp(scope, "shared") != 0)) {
        snprintf(err, errlen,
                 "$.plugins.%s.config: %s", name,
                 ttl < 0 ? "ttl_seconds: must be >= 0"
                 : c->max_entries < 1 ? "max_entries: must be >= 1"
                 : c->max_bytes < 1   ? "max_entry_bytes: must be >= 1"
                                      : "scope: \"consumer\" or \"shared\"");
        free(c);
        return SLUICE_EINVAL;
    }
    c->kept = SLUICE_HOST_HAS(h, respond_kept);
    c->prepared = SLUICE_HOST_HAS(h, response_header_set_prepared) &&
                  h->response_header_prepare(&c->hname, "x-sluice-cache") ==
                      SLUICE_OK;
    atomic_init(&c->guess, 1024);
    atomic_init(&c->seq, 0);
    c->ttl_ms = ttl * 1000;
    c->shared = strcmp(scope, "shared") == 0;
    *instance = c;
    return SLUICE_OK;
}

static void
destroy(void *instance)
{
    free(instance);
}

static void
mark(cache_t *c, sluice_req_t *req, const char *what)
{
    if (c->prepared)
        c->h->response_header_set_prepared(req, &c->hname, what,
                                           strlen(what));
    else
        c->h->response_header_set(req, "x-sluice-cache", what);
    c->h->log_field_set(req, "cache", what);
    c->h->metric_add(req, "cache_requests_total",
                     what[0] == 'h'   ? "result=\"hit\""
                     : what[0] == 'm' ? "result=\"miss\""
                                      : "result=\"bypass\"",
                     1);
}

/* Cache-Control: no-cache (or no-store) on the request skips the cache. */
static int
no_cache(cache_t *c, sluice_req_t *req)
{
    const char *v;
    size_t n;
    if (c->h->request_header(req, "cache-control", &v, &n) != SLUICE_OK)
        return 0;
    char buf[256];
    size_t k = n < sizeof(buf) - 1 ? n : sizeof(buf) - 1;
    for (size_t i = 0; i < k; i++)
        buf[i] = (char)(v[i] >= 'A' && v[i] <= 'Z' ? v[i] + 32 : v[i]);
    buf[k] = '\0';
    return strstr(buf, "no-cache") != NULL || strstr(buf, "no-store") != NULL;
}

/* "e:" model "\0" hex(sha256(scope "\n" canonical)). */
static int
make_key(creq_t *st, const char *model, const char *scope,
         const cr_request_t *rq)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256_CTX x;
    size_t ml = strlen(model);
    if (2 + ml + 1 + 64 > sizeof(st->key))
        return -1;
    SHA256_Init(&x);
    SHA256_Update(&x, scope, strlen(scope));
    SHA256_Update(&x, "\n", 1);
    SHA256_Update(&x, rq->canonical, rq->len);
    SHA256_Final(md, &x);
    memcpy(st->key, "e:", 2);
    memcpy(st->key + 2, model, ml + 1); /* with its NUL */
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        st->key[3 + ml + 2 * i] = hex[md[i] >> 4];
        st->key[3 + ml + 2 * i + 1] = hex[md[i] & 15];
    }
    st->klen = 3 + ml + 64;
    st->tag = 1;
    for (unsigned i = 0; i < 8; i++)
        st->tag = st->tag << 8 | md[i];
    st->tag |= 1;
    return 0;
}

/* Answers with a stored answer: checked when it was stored, so sent as
 * it is (respond_kept) where the host can. */
static sluice_verdict_t
serve(cache_t *c, sluice_req_t *req, creq_t *st, const char *body,
      size_t len, int include_usage)
{
    int rc;
    if (!st->stream) {
        rc = c->kept ? c->h->respond_kept(req, 200, body, len, 0)
                     : c->h->respond_answer(req, 200, body, len);
        return rc == SLUICE_OK ? SLUICE_RESPOND : SLUICE_CONTINUE;
    }
    size_t sl;
    char *sse = cr_sse_from_completion(body, len, include_usage, &sl);
    if (sse == NULL)
        return SLUICE_CONTINUE;
    rc = c->kept ? c->h->respond_kept(req, 200, sse, sl, 1)
                 : c->h->respond_stream(req, 200, sse, sl);
    free(sse);
    return rc == SLUICE_OK ? SLUICE_RESPOND : SLUICE_CONTINUE;
}

/* The stored answer for st->key, in request memory: SLUICE_OK, or what
 * kv_get said (SLUICE_ENOTFOUND, SLUICE_EUNAVAIL...); an answer over
 * max_entry_bytes reads as SLUICE_ETOOBIG. */
static int
lookup(cache_t *c, sluice_req_t *req, creq_t *st, char **val, size_t *vlen)
{
    const sluice_host_t *h = c->h;
    size_t cap = atomic_load_explicit(&c->guess, memory_order_relaxed);
    if (cap > (size_t)c->max_bytes)
        cap = (size_t)c->max_bytes;
    char *buf = h->alloc(req, cap + 1);
    if (buf == NULL)
        return SLUICE_ENOMEM;
    int rc = h->kv_get(req, st->key, st->klen, buf, cap, vlen);
    if (rc == SLUICE_ETOOBIG && *vlen > cap && *vlen <= (size_t)c->max_bytes) {
        /* Bigger than the first guess: read it again, whole. */
        if ((buf = h->alloc(req, *vlen + 1)) == NULL)
            return SLUICE_ENOMEM;
        rc = h->kv_get(req, st->key, st->klen, buf, *vlen, vlen);
    }
    if (rc != SLUICE_OK)
        return rc;
    if (*vlen == 0)
        return SLUICE_ENOTFOUND;
    size_t want = (*vlen + 1023) & ~(size_t)1023;
    if (want != cap)
        atomic_store_explicit(&c->guess, want, memory_order_relaxed);
    buf[*vlen] = '\0';
    *val = buf;
    return SLUICE_OK;
}

static sluice_verdict_t
on_request(void *instance, sluice_req_t *req)
{
    cache_t *c = instance;
    const sluice_host_t *h = c->h;
    creq_t *st = h->alloc(req, sizeof(*st));
    if (st == NULL)
        return SLUICE_ERROR;
    memset(st, 0, sizeof(*st));
    h->state_set(req, st);
    st->stream = h->stream(req) == 1;

    const char *json, *model = NULL, *consumer = "";
    size_t jlen, count = 0;
    h->message_count(req, &count);
    if (count == 0 || no_cache(c, req) || h->model(req, &model) != SLUICE_OK ||
        h->request_json(req, &json, &jlen) != SLUICE_OK) {
        mark(c, req, "bypass");
        return SLUICE_CONTINUE;
    }
    cr_request_t rq;
    if (cr_request_parse(json, jlen, model, &rq) != 0) {
        mark(c, req, "bypass");
        return SLUICE_CONTINUE;
    }
    if (!c->shared)
        h->consumer(req, &consumer);
    int keyed = make_key(st, model, c->shared ? "*" : consumer, &rq) == 0;
    int include_usage = rq.include_usage;
    int hot = rq.temperature_set && !c->cache_temperature;
    cr_request_free(&rq);
    if (!keyed || hot) {
        mark(c, req, "bypass");
        return SLUICE_CONTINUE;
    }

    char *val;
    size_t vlen = 0;
    int rc = lookup(c, req, st, &val, &vlen);
    if (rc == SLUICE_OK) {
        /* Marked first: the headers must be set before the answer. */
        mark(c, req, "hit");
        h->log_field_set(req, "cache_key", st->key + st->klen - 64);
        st->mode = C_HIT;
        sluice_verdict_t v = serve(c, req, st, val, vlen, include_usage);
        if (v == SLUICE_RESPOND)
            return v;
    }
    /* Absent, unreadable, or a store that is not there: a miss. */
    h->log_field_set(req, "cache_key", st->key + st->klen - 64);
    st->mode = rc == SLUICE_EUNAVAIL ? C_BYPASS : C_MISS;
    mark(c, req, st->mode == C_MISS ? "miss" : "bypass");
    if (st->mode == C_MISS && st->stream)
        st->asm_ = cr_asm_new((size_t)c->max_bytes);
    return SLUICE_CONTINUE;
}

/* Stores an answer under the request's key, evicting the ring slot's old
 * entry. */
static void
store(cache_t *c, sluice_req_t *req, creq_t *st, const char *body, size_t len)
{
    const sluice_host_t *h = c->h;
    if (len > (size_t)c->max_bytes)
        return;
    int64_t now = now_ms();
    size_t cell = st->tag % CACHE_RECENT;
    int64_t at = atomic_load(&c->recent[cell].at_ms);
    if (atomic_exchange(&c->recent[cell].tag, st->tag) == st->tag &&
        now - at < CACHE_PENDING_MS)
        return; /* stored a moment ago, by another miss */
    atomic_store(&c->recent[cell].at_ms, now);
    int64_t seq = 0;
    if (h->kv_incr(req, "ring:seq", 8, 1, 0, &seq) != SLUICE_OK)
        return;
    /* kv_incr answers what is committed plus ours: two stores before a
     * commit would share a slot, and the ring would evict out of order.
     * Slots are handed out here, from the stored counter after a
     * restart. */
    int64_t last = atomic_load(&c->seq);
    while (!atomic_compare_exchange_weak(&c->seq, &last,
                                         last + 1 > seq ? last + 1 : seq))
        ;
    seq = last + 1 > seq ? last + 1 : seq;
    char slot[48], old[400];
    size_t oldlen = 0;
    int sl = snprintf(slot, sizeof(slot), "ring:%lld",
                      (long long)((seq - 1) % c->max_entries));
    if (h->kv_get(req, slot, (size_t)sl, old, sizeof(old), &oldlen) ==
            SLUICE_OK &&
        (oldlen != st->klen || memcmp(old, st->key, oldlen) != 0))
        h->kv_delete(req, old, oldlen);
    if (h->kv_set(req, st->key, st->klen, body, len, c->ttl_ms) != SLUICE_OK)
        return;
    h->kv_set(req, slot, (size_t)sl, st->key, st->klen, c->ttl_ms);
    h->metric_add(req, "cache_stores_total", NULL, 1);
}

static sluice_verdict_t
on_response(void *instance, sluice_req_t *req)
{
    cache_t *c = instance;
    creq_t *st = c->h->state_get(req);
    int status = 0;
    const char *body;
    size_t len;
    if (st == NULL || st->mode != C_MISS ||
        c->h->response_status(req, &status) != SLUICE_OK || status != 200 ||
        c->h->response_body(req, &body, &len) != SLUICE_OK ||
        len > (size_t)c->max_bytes || !cr_answer_ok(body, len))
        return SLUICE_CONTINUE; /* errors are never stored */
    store(c, req, st, body, len);
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
on_chunk(void *instance, sluice_req_t *req)
{
    cache_t *c = instance;
    creq_t *st = c->h->state_get(req);
    const char *data;
    size_t len;
    if (st == NULL || st->asm_ == NULL ||
        c->h->response_body(req, &data, &len) != SLUICE_OK)
        return SLUICE_CONTINUE;
    if (cr_asm_event(st->asm_, data, len) != 0) {
        cr_asm_free(st->asm_); /* this stream will not be stored */
        st->asm_ = NULL;
    }
    return SLUICE_CONTINUE;
}

static sluice_verdict_t
on_log(void *instance, sluice_req_t *req)
{
    cache_t *c = instance;
    creq_t *st = c->h->state_get(req);
    int status = 0;
    if (st == NULL || st->asm_ == NULL)
        return SLUICE_CONTINUE;
    /* Only a stream that reached its [DONE]: never a partial one. */
    if (c->h->response_complete(req) == 1 &&
        c->h->response_status(req, &status) == SLUICE_OK && status == 200) {
        size_t len;
        char *body = cr_asm_finish(st->asm_, &len);
        if (body != NULL)
            store(c, req, st, body, len);
        free(body);
    }
    cr_asm_free(st->asm_);
    st->asm_ = NULL;
    return SLUICE_CONTINUE;
}

SLUICE_PLUGIN_EXPORT const sluice_plugin_t sluice_plugin = {
    SLUICE_PLUGIN_HEADER,
    .name = "cache",
    .version = "1.0.0",
    .description = "exact-match cache of successful answers, replayed to "
                   "plain and streaming requests",
    .config_schema = schema,
    .fail_open = 1, /* a cache that fails must not fail the request */
    .create = create,
    .destroy = destroy,
    .on_request = on_request,
    .on_response = on_response,
    .on_chunk = on_chunk,
    .on_log = on_log,
};
