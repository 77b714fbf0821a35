/* JSON access log lines, buffered per worker: one write() per 64 KiB or
 * per 200 ms instead of one per request. */
#include "accesslog.h"
#include "clock.h"
#include "error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define SL_LOG_BUF (64 * 1024)
#define SL_LOG_LINE 4096

struct sl_accesslog {
    int fd;
    struct event *timer;
    size_t len;
    time_t stamp_sec; /* the second `stamp` was formatted for */
    char stamp[32];
    char buf[SL_LOG_BUF];
};

void
sl_accesslog_flush(sl_accesslog_t *l)
{
    size_t off = 0;
    while (off < l->len) {
        ssize_t n = write(l->fd, l->buf + off, l->len - off);
        if (n <= 0)
            break; /* a log that cannot be written must not stop serving */
        off += (size_t)n;
    }
    l->len = 0;
}

static void
on_flush_timer(evutil_socket_t fd, short what, void *arg)
{
    sl_accesslog_t *l = arg;
    if (l->len > 0)
        sl_accesslog_flush(l);
}

sl_accesslog_t *
sl_accesslog_create(struct event_base *base, int fd)
{
    sl_accesslog_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->fd = fd;
    if (fd >= 0) {
        l->timer = event_new(base, -1, EV_PERSIST, on_flush_timer, l);
        struct timeval tv = {0, 200000};
        if (l->timer == NULL || event_add(l->timer, &tv) != 0) {
            free(l);
            return NULL;
        }
    }
    return l;
}

void
sl_accesslog_destroy(sl_accesslog_t *l)
{
    if (l->fd >= 0 && l->len > 0)
        sl_accesslog_flush(l);
    if (l->timer != NULL)
        event_free(l->timer);
    free(l);
}

/* Appends "key":"escaped value" (or null). */
static size_t
put_str(char *b, size_t cap, size_t n, const char *key, const char *v)
{
    n += (size_t)snprintf(n < cap ? b + n : NULL, n < cap ? cap - n : 0,
                          ",\"%s\":", key);
    if (v == NULL) {
        n += (size_t)snprintf(n < cap ? b + n : NULL, n < cap ? cap - n : 0,
                              "null");
        return n;
    }
    if (n + 1 < cap)
        b[n] = '"';
    n++;
    n = sl_json_escape(b, cap, n, v, strlen(v));
    if (n + 1 < cap)
        b[n] = '"';
    return n + 1;
}

static size_t
put_num(char *b, size_t cap, size_t n, const char *key, long v)
{
    if (v < 0)
        return n + (size_t)snprintf(n < cap ? b + n : NULL,
                                    n < cap ? cap - n : 0, ",\"%s\":null",
                                    key);
    return n + (size_t)snprintf(n < cap ? b + n : NULL, n < cap ? cap - n : 0,
                                ",\"%s\":%ld", key, v);
}

void
sl_accesslog_write(sl_accesslog_t *l, const sl_request_t *r)
{
    if (l == NULL || l->fd < 0)
        return;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != l->stamp_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(l->stamp, sizeof(l->stamp), "%Y-%m-%dT%H:%M:%S", &tm);
        l->stamp_sec = tv.tv_sec;
    }
    char line[SL_LOG_LINE];
    size_t cap = sizeof(line) - 1, n;
    uint64_t now = sl_now_us();
    double latency = r->t_start ? (double)(now - r->t_start) / 1000.0 : 0;
    n = (size_t)snprintf(line, cap, "{\"time\":\"%s.%03ldZ\"", l->stamp,
                         (long)(tv.tv_usec / 1000));
    char path[256];
    size_t plen = r->http.path_len < sizeof(path) - 1 ? r->http.path_len
                                                     : sizeof(path) - 1;
    if (r->http.path != NULL)
        memcpy(path, r->http.path, plen);
    else
        plen = 0;
    path[plen] = '\0';
    char method[16];
    size_t mlen = r->http.method_len < sizeof(method) - 1 ? r->http.method_len
                                                         : sizeof(method) - 1;
    if (r->http.method_str != NULL)
        memcpy(method, r->http.method_str, mlen);
    else
        mlen = 0;
    method[mlen] = '\0';
    n = put_str(line, cap, n, "method", mlen ? method : NULL);
    n = put_str(line, cap, n, "path", plen ? path : NULL);
    n = put_str(line, cap, n, "route", r->route ? r->route->path : NULL);
    n = put_str(line, cap, n, "consumer", r->consumer);
    n = put_str(line, cap, n, "model", r->model);
    n = put_str(line, cap, n, "provider", r->provider);
    n = put_str(line, cap, n, "target_model", r->target_model);
    n = put_num(line, cap, n, "status", r->status);
    n += (size_t)snprintf(n < cap ? line + n : NULL, n < cap ? cap - n : 0,
                          ",\"stream\":%s,\"latency_ms\":%.3f,"
                          "\"upstream_ms\":%.3f",
                          r->streaming ? "true" : "false",
                          latency, (double)r->upstream_us / 1000.0);
    n = put_num(line, cap, n, "prompt_tokens", r->prompt_tokens);
    n = put_num(line, cap, n, "completion_tokens", r->completion_tokens);
    n = put_num(line, cap, n, "cached_tokens", r->cached_tokens);
    n = put_num(line, cap, n, "reasoning_tokens", r->reasoning_tokens);
    if (r->cost_micros >= 0)
        n += (size_t)snprintf(n < cap ? line + n : NULL,
                              n < cap ? cap - n : 0,
                              ",\"cost\":%lld.%06lld",
                              (long long)(r->cost_micros / 1000000),
                              (long long)(r->cost_micros % 1000000));
    else
        n += (size_t)snprintf(n < cap ? line + n : NULL,
                              n < cap ? cap - n : 0, ",\"cost\":null");
    n = put_num(line, cap, n, "bytes_in", (long)r->bytes_in);
    n = put_num(line, cap, n, "bytes_out", (long)r->bytes_out);
    n = put_str(line, cap, n, "error", r->error_code);
    if (r->plugin_log != NULL)
        n += (size_t)snprintf(n < cap ? line + n : NULL, n < cap ? cap - n : 0,
                              "%s", r->plugin_log);
    n = put_str(line, cap, n, "trace_id", r->trace_id[0] ? r->trace_id : NULL);
    /* A Lua script's ctx.vars, already JSON; whole or not at all. */
    if (r->vars != NULL && n + strlen(r->vars) + 8 < cap)
        n += (size_t)snprintf(line + n, cap - n, ",\"vars\":%s", r->vars);
    if (n >= cap)
        n = cap - 1; /* a line never splits: cut, still one line */
    line[n++] = '}';
    if (n < sizeof(line))
        line[n++] = '\n';
    if (l->len + n > sizeof(l->buf))
        sl_accesslog_flush(l);
    memcpy(l->buf + l->len, line, n);
    l->len += n;
}
