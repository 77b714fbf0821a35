/* GET /admin/logs and /admin/logs/export over the store's request log. The
 * admin API runs on the main thread, off the workers, so a listing may read
 * for a while; each read is bounded (SCAN_MAX records looked at per
 * listing, per export step) and no read transaction outlives one step. */
#include "admin_logs.h"
#include "conn.h"
#include "error.h"
#include "reqlog_record.h"
#include "requestlog.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LIMIT_DEFAULT 100
#define LIMIT_MAX 1000
#define SCAN_MAX 200000   /* records one listing looks at, at most */
#define STEP_SCAN 2000    /* records one export step looks at */
#define STEP_BYTES 262144 /* output one export step produces */

typedef struct {
    const char *consumer, *model, *trace_id;
    int status;                 /* exact, or 0 */
    int status_class;           /* 2 for "2xx"..., or 0 */
    int64_t since_us, until_us; /* 0 = open */
    size_t limit;               /* 0 = no limit (export) */
} filter_t;

/* ---- query string ---- */

static int
unhex(char c) {
    return isdigit((unsigned char)c) ? c - '0'
           : c >= 'a' && c <= 'f'    ? c - 'a' + 10
           : c >= 'A' && c <= 'F'    ? c - 'A' + 10
                                     : -1;
}

/* The percent-decoded value of name in the query, or NULL. Arena. */
static const char *
query_get(sl_request_t *r, const char *name) {
    const char *q = memchr(r->http.target, '?', r->http.target_len);
    if (q == NULL)
        return NULL;
    const char *end = r->http.target + r->http.target_len;
    size_t nl = strlen(name);
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        if ((size_t)(e - p) >= nl && memcmp(p, name, nl) == 0 &&
            (p + nl == e || p[nl] == '=')) {
            const char *v = p + nl + (p + nl < e);
            char *out = sl_arena_alloc(r->arena, (size_t)(e - v) + 1), *o = out;
            if (out == NULL)
                return NULL;
            for (; v < e; v++) {
                if (*v == '%' && e - v >= 3 && unhex(v[1]) >= 0 &&
                    unhex(v[2]) >= 0) {
                    *o++ = (char)(unhex(v[1]) * 16 + unhex(v[2]));
                    v += 2;
                } else
                    *o++ = *v == '+' ? ' ' : *v;
            }
            *o = '\0';
            return out;
        }
        p = e + 1;
    }
    return NULL;
}

/* Unix seconds (fractions allowed) or RFC 3339 UTC
 * ("2026-11-22T00:00:00Z", optional fraction); microseconds. */
static int
parse_time(const char *s, int64_t *out) {
    char *end;
    if (*s == '\0')
        return SL_EINVAL;
    double d = strtod(s, &end);
    if (*end == '\0' && d >= 0 && d < 1e11) {
        *out = (int64_t)(d * 1e6);
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return SL_EINVAL;
    double frac = 0;
    if (*p == '.') {
        frac = strtod(p, &end);
        p = end;
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return SL_EINVAL;
    *out = (int64_t)timegm(&tm) * 1000000 + (int64_t)(frac * 1e6);
    return 0;
}

/* Reads the filters; answers 400 and returns -1 on a bad one. */
static int
read_filter(sl_request_t *r, filter_t *f, int listing) {
    const char *v;
    memset(f, 0, sizeof(*f));
    f->limit = listing ? LIMIT_DEFAULT : 0;
    f->consumer = query_get(r, "consumer");
    f->model = query_get(r, "model");
    f->trace_id = query_get(r, "trace_id");
    if ((v = query_get(r, "status")) != NULL) {
        if (strlen(v) == 3 && v[0] >= '1' && v[0] <= '5' &&
            strcmp(v + 1, "xx") == 0)
            f->status_class = v[0] - '0';
        else if (strlen(v) == 3 && isdigit((unsigned char)v[0]) &&
                 isdigit((unsigned char)v[1]) && isdigit((unsigned char)v[2]))
            f->status = atoi(v);
        else {
            sl_response_error(r, 400,
                              "status must be a status code (429) or a "
                              "class (5xx)",
                              "invalid_request");
            return -1;
        }
    }
    static const char *const tnames[] = {"since", "until"};
    int64_t *tvals[] = {&f->since_us, &f->until_us};
    for (int i = 0; i < 2; i++) {
        if ((v = query_get(r, tnames[i])) != NULL &&
            parse_time(v, tvals[i]) != 0) {
            char *msg = sl_arena_printf(
                r->arena,
                "%s must be unix seconds or an RFC 3339 UTC time "
                "(2026-01-31T12:00:00Z)",
                tnames[i]);
            sl_response_error(r, 400, msg ? msg : "bad time",
                              "invalid_request");
            return -1;
        }
    }
    if ((v = query_get(r, "limit")) != NULL) {
        char *end;
        long n = strtol(v, &end, 10);
        long max = listing ? LIMIT_MAX : 1000000000L;
        if (*v == '\0' || *end != '\0' || n < 1 || n > max) {
            char *msg = sl_arena_printf(
                r->arena, "limit must be an integer from 1 to %ld", max);
            sl_response_error(r, 400, msg ? msg : "bad limit",
                              "invalid_request");
            return -1;
        }
        f->limit = (size_t)n;
    }
    return 0;
}

static int
str_is(const cJSON *j, const char *key, const char *want) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) && strcmp(v->valuestring, want) == 0;
}

static int
rstr_is(sl_rstr_t s, const char *want) {
    return s.p != NULL && strlen(want) == s.len &&
           memcmp(s.p, want, s.len) == 0;
}

/* A record of an older version, stored as JSON. */
static int
matches_json(const filter_t *f, const char *val, size_t vlen) {
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    if (j == NULL)
        return 0;
    int ok = 1;
    if (f->consumer != NULL && !str_is(j, "consumer", f->consumer))
        ok = 0;
    if (ok && f->model != NULL && !str_is(j, "model", f->model))
        ok = 0;
    if (ok && f->trace_id != NULL && !str_is(j, "trace_id", f->trace_id))
        ok = 0;
    if (ok && (f->status != 0 || f->status_class != 0)) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "status");
        int st = cJSON_IsNumber(s) ? s->valueint : 0;
        ok = f->status != 0 ? st == f->status : st / 100 == f->status_class;
    }
    cJSON_Delete(j);
    return ok;
}

/* Whether a record passes the filters other than time. */
static int
matches(const filter_t *f, const char *val, size_t vlen) {
    if (f->consumer == NULL && f->model == NULL && f->trace_id == NULL &&
        f->status == 0 && f->status_class == 0)
        return 1;
    sl_reqlog_rec_t rec;
    if (vlen > 0 && val[0] == '{')
        return matches_json(f, val, vlen);
    if (sl_reqlog_decode(val, vlen, &rec) != 0)
        return 0;
    if (f->consumer != NULL && !rstr_is(rec.consumer, f->consumer))
        return 0;
    if (f->model != NULL && !rstr_is(rec.model, f->model))
        return 0;
    if (f->trace_id != NULL && !rstr_is(rec.trace_id, f->trace_id))
        return 0;
    if (f->status != 0)
        return rec.status == f->status;
    return f->status_class == 0 || rec.status / 100 == f->status_class;
}

/* Appends the record with its id in front: {"id":"HEX",...}. */
static void
add_record(struct evbuffer *out, const unsigned char *key, size_t klen,
           const char *stored, size_t slen) {
    static const char hex[] = "0123456789abcdef";
    char id[2 * 64 + 1];
    size_t n = klen < 64 ? klen : 64;
    for (size_t i = 0; i < n; i++) {
        id[2 * i] = hex[key[i] >> 4];
        id[2 * i + 1] = hex[key[i] & 15];
    }
    id[2 * n] = '\0';
    evbuffer_add_printf(out, "{\"id\":\"%s\"", id);
    size_t vlen = 0;
    char *val = sl_reqlog_render(stored, slen, &vlen);
    if (val != NULL && vlen > 2 && val[0] == '{') {
        evbuffer_add(out, ",", 1);
        evbuffer_add(out, val + 1, vlen - 1);
    } else {
        evbuffer_add(out, "}", 1);
    }
    free(val);
}

/* ---- GET /admin/logs ---- */

struct list_scan {
    const filter_t *f;
    struct evbuffer *out;
    size_t n, scanned;
};

static int
list_visit(void *ud, const void *key, size_t klen, const void *val, size_t vlen,
           int64_t expires_at) {
    struct list_scan *s = ud;
    (void)expires_at;
    if (++s->scanned > SCAN_MAX)
        return 1;
    int64_t t = sl_reqlog_key_time(key, klen);
    if (s->f->since_us != 0 && t < s->f->since_us)
        return 1; /* newest first: everything after is older still */
    if (!matches(s->f, val, vlen))
        return 0;
    if (s->n > 0)
        evbuffer_add(s->out, ",", 1);
    add_record(s->out, key, klen, val, vlen);
    return ++s->n >= s->f->limit;
}

static void
get_logs(sl_request_t *r) {
    filter_t f;
    if (read_filter(r, &f, 1) != 0)
        return;
    struct evbuffer *out = evbuffer_new();
    if (out == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    struct list_scan s = {&f, out, 0, 0};
    evbuffer_add_printf(out, "{\"object\":\"list\",\"data\":[");
    unsigned char end[SL_REQLOG_KEY_LEN];
    size_t elen = 0;
    if (f.until_us != 0) {
        sl_reqlog_key(end, f.until_us, 0xffff, 0xffffffffu);
        elen = sizeof(end);
    }
    int rc = sl_store_scan_rev(r->w->srv->store, SL_STORE_REQUESTLOG, NULL,
                               elen ? end : NULL, elen, list_visit, &s);
    if (rc != 0) {
        evbuffer_free(out);
        sl_response_error(r, 500, sl_strerror(rc), "store_error");
        return;
    }
    evbuffer_add_printf(out, "],\"count\":%zu,\"scan_truncated\":%s}", s.n,
                        s.scanned > SCAN_MAX ? "true" : "false");
    sl_response_send_buffer(r, 200, "application/json", NULL, out);
    evbuffer_free(out);
}

/* ---- GET /admin/logs/export ---- */

typedef struct {
    sl_request_t *r;
    filter_t f;
    unsigned char next[SL_REQLOG_KEY_LEN + 1]; /* resume at or after */
    size_t nextlen;
    size_t sent;
    struct event *ev;
} export_t;

struct export_scan {
    export_t *x;
    struct evbuffer *out;
    size_t scanned;
    int more; /* stopped early: there may be more */
    int done; /* the limit or the end of the range was reached */
};

static int
export_visit(void *ud, const void *key, size_t klen, const void *val,
             size_t vlen, int64_t expires_at) {
    struct export_scan *s = ud;
    export_t *x = s->x;
    (void)expires_at;
    int64_t t = sl_reqlog_key_time(key, klen);
    if (x->f.until_us != 0 && t > x->f.until_us) {
        s->done = 1;
        return 1;
    }
    /* Resume just after this key: key + "\0" sorts before the next. */
    size_t n = klen < SL_REQLOG_KEY_LEN ? klen : SL_REQLOG_KEY_LEN;
    memcpy(x->next, key, n);
    x->next[n] = 0;
    x->nextlen = n + 1;
    if (matches(&x->f, val, vlen)) {
        add_record(s->out, key, klen, val, vlen);
        evbuffer_add(s->out, "\n", 1);
        if (x->f.limit != 0 && ++x->sent >= x->f.limit) {
            s->done = 1;
            return 1;
        }
    }
    if (++s->scanned >= STEP_SCAN ||
        evbuffer_get_length(s->out) >= STEP_BYTES) {
        s->more = 1;
        return 1;
    }
    return 0;
}

static void export_step(export_t *x);

static void
on_export_event(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    export_step(arg);
}

static void
export_resume(sl_request_t *r) {
    export_t *x = r->op;
    event_active(x->ev, EV_TIMEOUT, 1);
}

static void
export_cancel(sl_request_t *r) {
    export_t *x = r->op;
    event_del(x->ev);
}

static void
export_step(export_t *x) {
    sl_request_t *r = x->r;
    struct evbuffer *out = evbuffer_new();
    struct export_scan s = {x, out, 0, 0, 0};
    int rc = out == NULL
                 ? SL_ENOMEM
                 : sl_store_scan(r->w->srv->store, SL_STORE_REQUESTLOG, NULL,
                                 x->next, x->nextlen, export_visit, &s);
    if (out != NULL && evbuffer_get_length(out) > 0)
        sl_response_chunk(r, (const char *)evbuffer_pullup(out, -1),
                          evbuffer_get_length(out));
    if (out != NULL)
        evbuffer_free(out);
    if (rc != 0 || !s.more || s.done) {
        /* A failure midway cuts the stream: the client sees no last
         * chunk, so it cannot take a partial export for a whole one. */
        r->cancel = NULL;
        r->resume = NULL;
        sl_response_stream_end(r, rc == 0);
        return; /* r and x are gone */
    }
    if (evbuffer_get_length(r->conn->out) > (1u << 20)) {
        r->paused = 1; /* resumed from the connection's write event */
        return;
    }
    event_active(x->ev, EV_TIMEOUT, 1); /* later: let others run too */
}

static void
free_event(void *p) {
    event_free(p);
}

static void
get_export(sl_request_t *r) {
    export_t *x = sl_arena_calloc(r->arena, sizeof(*x));
    if (x == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    if (read_filter(r, &x->f, 0) != 0)
        return;
    x->r = r;
    x->ev = event_new(r->w->base, -1, 0, on_export_event, x);
    if (x->ev == NULL || sl_arena_cleanup_add(r->arena, free_event, x->ev)) {
        if (x->ev != NULL)
            event_free(x->ev);
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    if (x->f.since_us != 0) {
        sl_reqlog_key(x->next, x->f.since_us, 0, 0);
        x->nextlen = SL_REQLOG_KEY_LEN;
    }
    r->op = x;
    r->cancel = export_cancel;
    r->resume = export_resume;
    sl_response_chunked_start(r, 200, "application/x-ndjson", NULL);
    export_step(x);
}

int
sl_admin_logs(sl_request_t *r) {
    const char *p = r->http.path;
    size_t n = r->http.path_len;
    int get = r->http.method == SL_METHOD_GET;
#define IS(s) (n == sizeof(s) - 1 && memcmp(p, s, n) == 0)
    if (!IS("/admin/logs") && !IS("/admin/logs/export"))
        return 0;
    if (r->w->srv->store == NULL)
        sl_response_error(r, 503, "the store is not open", "store_error");
    else if (!get)
        sl_response_error_with(r, 405, "method not allowed for this path",
                               "method_not_allowed", "Allow: GET\r\n");
    else if (IS("/admin/logs"))
        get_logs(r);
    else
        get_export(r);
#undef IS
    return 1;
}
