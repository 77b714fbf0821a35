/* A model call the gateway makes on its own, without a client connection:
 * what a Lua script's sluice.llm.chat runs. It is a request like a
 * client's -- the same routing, providers, retries, fallback and breakers,
 * its own access log line and metrics (route "lua:" + the parent's route)
 * -- built on its own arena, always non-stream, whose answer is captured by
 * a front (request.h) instead of being written to a socket. It runs no
 * plugins and no script of its own. */
#ifndef SL_SUBCALL_H
#define SL_SUBCALL_H

#include "request.h"

#include <cjson/cJSON.h>

typedef struct sl_subcall sl_subcall_t;

typedef struct {
    int status;       /* the answer's HTTP status */
    const char *body; /* a chat completion, or an OpenAI-shaped error */
    size_t len;
    cJSON *json; /* body parsed, NULL when it is not JSON; the callee
                    takes it (cJSON_Delete) */
    const char *provider, *model; /* what served it; NULL when nothing did */
    long prompt_tokens, completion_tokens, total_tokens; /* -1 unknown */
} sl_subcall_result_t;

/* The answer; res and its strings are valid during the call only. The
 * subcall is freed after it returns. */
typedef void (*sl_subcall_done_fn)(void *ud, sl_subcall_result_t *res);

/* Starts a chat call for parent's worker: body is an OpenAI chat request
 * (the caller keeps it; "stream" is forced off). *slot, which must live in
 * parent's arena, holds the call while it runs and is set to NULL when it
 * ends: before done runs, or when it is cancelled. done runs exactly once,
 * always from the event loop and never inside this call, unless the call
 * is cancelled first; when parent ends with the call still running, it is
 * cancelled then. 0 or SL_ENOMEM. */
int sl_subcall_start(sl_request_t *parent, const cJSON *body,
                     sl_subcall_done_fn done, void *ud, sl_subcall_t **slot);
/* Stops a call whose done has not run: the upstream is cancelled, the call
 * is logged as 499, nothing is called back. */
void sl_subcall_cancel(sl_subcall_t *s);

#endif
