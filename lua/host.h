/* Per-route LuaJIT scripts: what the core calls.
 *
 * A route's script ($.routes[i].lua) is a module returning a table of phase
 * functions: on_request(ctx), on_response(ctx), on_chunk(ctx, chunk, text).
 * Scripts are read and checked once per config snapshot (sl_lua_load); each
 * worker builds its own Lua state for a snapshot the first time one of its
 * requests needs it, and the states die with the snapshot. Every phase call
 * runs in a coroutine bounded in instructions, wall-clock time and memory;
 * sluice.llm.chat, sluice.http.request, sluice.sleep and the kv writes
 * yield to the worker's event loop instead of blocking it. The Lua API is
 * documented in sdk/lua-api.md. */
#ifndef SL_LUA_HOST_H
#define SL_LUA_HOST_H

#include "config.h"
#include "request.h"

struct sl_call;
typedef struct sl_lua_set sl_lua_set_t;

/* Reads, compiles and test-loads every route's script of cfg (its top level
 * runs in a scratch state and must return a table of phase functions), and
 * checks $.prompts. Every problem goes to errs with its JSON path; a syntax
 * error names file:line. Returns 0 and *out (NULL when cfg has no script
 * and no prompt), SL_ECONFIG or SL_ENOMEM. nslots: the threads that serve
 * requests on the snapshot. Not for the hot path. */
int sl_lua_load(const sl_config_t *cfg, int nslots, sl_lua_set_t **out,
                sl_config_errors_t *errs);
/* Frees a set and the Lua states the workers built for it. Any thread,
 * once no request uses the snapshot. NULL is fine. */
void sl_lua_free(void *set);

/* The request phase, after the plugins' on_request and before the
 * upstream. Returns 0 when the proxy goes on to the upstream now, 1 when
 * the script has the request: it goes on (sl_call_attempt) or answers
 * itself later. */
int sl_lua_request(sl_request_t *r, struct sl_call *k);
/* A whole answer on its way to the client (conn.c), before the plugins'
 * on_response: returns 1 when the script's on_response takes it (the
 * answer is sent by the script's side, changed or not), 0 to send it now. */
int sl_lua_response(sl_request_t *r, int status, const char *content_type,
                    const char *extra, const char *body, size_t len);
/* One stream event's data on its way out (proxy.c), before the plugins'
 * on_chunk: may replace *data and *len (valid until the next call).
 * Returns 1 when the event must be dropped. */
int sl_lua_chunk(sl_request_t *r, const char **data, size_t *len);

#endif
