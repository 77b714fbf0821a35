/* Prometheus metrics. Each worker counts into its own tables, written only
 * by that worker (relaxed atomics so a scrape can read them while they
 * change); a scrape on the admin thread sums every worker's tables. No
 * lock and no shared write in the request path. */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct sl_request;
struct sl_server;

typedef enum {
    SL_M_REQUESTS = 0,       /* counter {route,model,provider,status} */
    SL_M_TOKENS,             /* counter {model,provider,kind} */
    SL_M_ATTEMPTS,           /* counter {model,outcome=retry|fallback} */
    SL_M_CLIENT_ABORTS,      /* counter {route} */
    SL_M_REQUEST_SECONDS,    /* histogram {route} */
    SL_M_UPSTREAM_SECONDS,   /* histogram {provider} */
    SL_M_TTFT_SECONDS,       /* histogram {provider}: streams */
    SL_M_OVERHEAD_SECONDS,   /* histogram {route} */
    SL_M_COST,               /* counter {model,provider}: micro-dollars,
                                shown in dollars */
    SL_M_NFAMILIES
} sl_metric_family_t;

typedef struct sl_metrics sl_metrics_t;

sl_metrics_t *sl_metrics_new(void);
void sl_metrics_free(sl_metrics_t *m);

/* Adds v to the series `labels` (a Prometheus label set without braces,
 * e.g. `route="/v1/chat/completions",status="200"`) of a counter family. */
void sl_metrics_add(sl_metrics_t *m, sl_metric_family_t f, const char *labels,
                    uint64_t v);
/* Records one observation (seconds) in a histogram family. */
void sl_metrics_observe(sl_metrics_t *m, sl_metric_family_t f,
                        const char *labels, double seconds);

/* Everything one finished request contributes; now_us is the monotonic
 * time it ended. Label sets are resolved once per route, model, provider
 * and status on a snapshot, then a request only adds. */
void sl_metrics_request_done(sl_metrics_t *m, const struct sl_request *r,
                             uint64_t now_us);

/* The text exposition of every worker's metrics plus the server's gauges;
 * malloc'd. Admin thread only. */
char *sl_metrics_render(struct sl_server *srv);

#endif
