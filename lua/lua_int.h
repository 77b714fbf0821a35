/* What the files of lua/ share: the per-snapshot set, the per-worker VM,
 * one phase call (an invocation, a coroutine) and the per-request state.
 * Nothing here is seen by the core (that is host.h). */
#ifndef SL_LUA_INT_H
#define SL_LUA_INT_H

#include "host.h"
#include "prompt.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

struct sl_call;

/* Idle coroutines a VM keeps for the next phase calls. */
#define SL_LUA_POOL_MAX 64

/* The count hook runs every SL_LUA_HOOK_STEP VM instructions. */
#define SL_LUA_HOOK_STEP 1000

typedef enum {
    SL_LUA_PHASE_LOAD = 0, /* the module's top level */
    SL_LUA_PHASE_REQUEST,
    SL_LUA_PHASE_RESPONSE,
    SL_LUA_PHASE_CHUNK,
} sl_lua_phase_t;

/* "load", "on_request", "on_response", "on_chunk". */
const char *sl_lua_phase_name(sl_lua_phase_t p);

/* One route's script as read when the snapshot was built. */
typedef struct {
    const sl_route_t *route; /* NULL: the route runs no script */
    char *source;
    size_t len;
    char *chunkname; /* "@" + the path as written: errors say path:line */
    char *kv_ns;     /* "lua:" + the route's path */
} sl_lua_script_t;

struct sl_lua_vm;

struct sl_lua_set {
    const sl_config_t *cfg;
    sl_lua_script_t *scripts; /* parallel to cfg->routes */
    size_t nroutes;
    sl_prompts_t *prompts; /* NULL when $.prompts is absent */
    int nslots;
    struct sl_lua_vm **vms; /* per slot, built by that slot's thread */
};

/* One route's module in a VM: registry refs, LUA_NOREF when absent. */
typedef struct {
    int loaded; /* 1 ok, -1 failed to load (error says why) */
    int on_request, on_response, on_chunk;
    int route; /* the ctx.route table */
    char error[600];
} sl_lua_mod_t;

typedef struct sl_lua_vm {
    lua_State *L;
    const sl_lua_set_t *set;    /* NULL for a scratch VM */
    size_t mem;                 /* bytes the allocator has handed out */
    size_t mem_limit;           /* growth past it is refused */
    struct sl_lua_inv *current; /* the invocation running now */
    sl_lua_mod_t *mods;         /* per route */
    int ctx_mt;                 /* registry ref: the metatable of ctx */
    int array_mt; /* registry ref: marks tables that are JSON arrays */
    /* Idle coroutines, reused: each keeps its registry ref while pooled,
     * so taking and giving one back costs no Lua call. */
    lua_State *pool[SL_LUA_POOL_MAX];
    int pool_ref[SL_LUA_POOL_MAX];
    int npool;
    struct sl_lua_req *live; /* requests with a ctx in this VM */
} sl_lua_vm_t;

typedef enum {
    SL_LUA_OK = 0,  /* the function returned; its values are on co */
    SL_LUA_WAIT,    /* it waits on an op; inv->done follows */
    SL_LUA_RESPOND, /* it called sluice.respond */
    SL_LUA_ERROR,   /* an error or a limit; inv->error says which */
} sl_lua_result_t;

typedef enum {
    SL_LUA_KILL_NONE = 0,
    SL_LUA_KILL_INSTRUCTIONS,
    SL_LUA_KILL_TIME,
    SL_LUA_KILL_MEMORY,
} sl_lua_kill_t;

/* The one call a waiting coroutine waits on. cancel stops it without a
 * resume (the request went away, or the deadline passed). */
typedef struct sl_lua_op {
    void (*cancel)(struct sl_lua_op *op);
    const char *what; /* "sluice.llm.chat": named by a timeout */
} sl_lua_op_t;

struct sl_lua_req;

/* One phase call: a coroutine and its limits. */
typedef struct sl_lua_inv {
    sl_lua_vm_t *vm;
    struct sl_lua_req *lr; /* NULL in the load phase */
    sl_lua_phase_t phase;
    const sl_lua_script_t *script;
    lua_State *co; /* NULL when no call is under way */
    int co_ref;
    long long instructions, max_instructions;
    size_t mem_used; /* growth in earlier slices of this call */
    size_t mem_cap;
    size_t mem_base;   /* vm->mem when the current slice started */
    size_t gc_mark;    /* vm->mem after the last emergency collection */
    int gc_soon;       /* the hook runs at the next instruction to collect */
    uint64_t deadline; /* monotonic us */
    long timeout_ms;
    struct event *timer; /* the deadline while it waits */
    sl_lua_kill_t killed;
    sl_lua_op_t *op;
    int responded;
    /* Called when a call that waited is over (not for a result that
     * sl_lua_inv_run returns itself). */
    void (*done)(struct sl_lua_inv *inv, sl_lua_result_t res);
    char where[128]; /* file:line last seen near the memory cap */
    char error[512];
} sl_lua_inv_t;

enum {
    SL_LUA_STAGE_REQUEST = 0, /* on_request runs or has not run yet */
    SL_LUA_STAGE_UPSTREAM,    /* on its way to and from the model */
    SL_LUA_STAGE_RESPONSE,    /* on_response runs */
    SL_LUA_STAGE_DONE,        /* answered */
};

enum {
    SL_LUA_TOUCHED_REQUEST = 1, /* ctx.request was read or set */
    SL_LUA_TOUCHED_RESPONSE = 2,
    SL_LUA_TOUCHED_VARS = 4,
};

/* The script's state for one request (request arena). */
typedef struct sl_lua_req {
    sl_request_t *r;
    struct sl_call *k;
    sl_lua_vm_t *vm;
    const sl_lua_script_t *script;
    const sl_lua_mod_t *mod;
    int ctx;             /* registry ref of ctx */
    const void *ctx_ptr; /* ctx itself: how a ctx finds its request */
    struct sl_lua_req *live_prev, *live_next; /* the VM's requests */
    int touched; /* SL_LUA_TOUCHED_*: fields the script made in ctx */
    int stage;   /* SL_LUA_STAGE_* */
    sl_lua_inv_t inv;
    /* sluice.respond */
    int resp_status;
    char *resp_body;
    size_t resp_len;
    const char *resp_type;
    char *resp_headers; /* "Name: value\r\n" lines or NULL */
    /* the answer on_response sees */
    int ans_status;
    const char *ans_type, *ans_extra;
    const char *ans_body;
    int ans_owned; /* 1: ans_body is a copy in the arena */
    size_t ans_len;
    int ans_span; /* 1: [ans_v, ans_e) is the message content, -1: none,
                     0: not looked for yet */
    size_t ans_v, ans_e;
    /* where ctx.prompt is in the request's text pr_body (r->body) */
    const char *pr_body;
    size_t pr_len, pr_v, pr_e;
    int pr_span;      /* 1: [pr_v, pr_e) is the content, 0: the tree says */
    int passing;      /* the answer goes out: do not take it again */
    int prompt_dirty; /* ctx.prompt was set in the tree, not the text */
    /* on_chunk */
    int stream_failed;
    int forwarding;     /* an event the script added: let it through */
    char *chunk_out;    /* malloc, the last rewritten event */
    char *last_chunk;   /* malloc, the last event seen (for its id...) */
    struct event *kill; /* ends a stream whose on_chunk failed */
} sl_lua_req_t;

/* ---- vm.c ---- */

/* A VM for set (NULL: a scratch VM for checks and tests). NULL on OOM. */
sl_lua_vm_t *sl_lua_vm_new(const sl_lua_set_t *set);
void sl_lua_vm_free(sl_lua_vm_t *vm);
/* The VM of L (the allocator's user data). */
static inline sl_lua_vm_t *
sl_lua_vm_of(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}
/* Compiles and runs a route's module in vm; fills mod. 0, or -1 with
 * mod->error set. */
int sl_lua_vm_load(sl_lua_vm_t *vm, const sl_lua_script_t *s,
                   sl_lua_mod_t *mod);

/* Prepares inv for a call of route script s in phase, with the route's
 * limits; returns the coroutine onto which the caller pushes the function
 * and its arguments, or NULL on out of memory. */
lua_State *sl_lua_inv_begin(sl_lua_inv_t *inv, sl_lua_vm_t *vm,
                            struct sl_lua_req *lr, sl_lua_phase_t phase,
                            const sl_lua_script_t *s);
/* Runs (the first slice of) the call with nargs arguments on the
 * coroutine. On SL_LUA_OK the results are on inv->co until sl_lua_inv_end. */
sl_lua_result_t sl_lua_inv_run(sl_lua_inv_t *inv, int nargs);
/* Resumes a waiting call with the nres values its op pushed onto inv->co;
 * when that ends the wait, calls inv->done. From an event callback. */
void sl_lua_inv_resume(sl_lua_inv_t *inv, int nres);
/* Gives the coroutine back (to the pool when it finished cleanly). */
void sl_lua_inv_end(sl_lua_inv_t *inv);
/* Stops a call (waiting or not) without resuming it. */
void sl_lua_inv_cancel(sl_lua_inv_t *inv);

/* For C functions that yield: the invocation of L when it may wait now,
 * else raises an error naming fname and the phase. */
sl_lua_inv_t *sl_lua_yieldable(lua_State *L, const char *fname);
/* The invocation running now; raises an error naming fname when there is
 * no request (the load phase) and need_request. */
sl_lua_inv_t *sl_lua_running(lua_State *L, const char *fname, int need_request);
/* Makes inv wait on op and yields; return its value from the C function. */
int sl_lua_wait(lua_State *L, sl_lua_inv_t *inv, sl_lua_op_t *op);
/* The op of a waiting inv is over: forget it before resuming. */
void sl_lua_op_over(sl_lua_inv_t *inv);
/* "file:line" of the Lua code calling the C function at level 1. */
void sl_lua_where(lua_State *L, char *buf, size_t cap);

/* ---- sandbox.c ---- */

/* Opens the safe libraries in L's globals and removes the rest. */
void sl_lua_sandbox_open(lua_State *L);
/* Replaces the table at the top with a read-only proxy of it. */
void sl_lua_freeze(lua_State *L);
/* Pushes a new environment for one script: reads fall through to the
 * (frozen) globals, writes stay in it. */
void sl_lua_env_new(lua_State *L);

/* ---- json.c ---- */

/* Pushes j as Lua values: objects are tables, arrays tables marked with
 * the array metatable, null is sluice.json.null. */
void sl_lua_push_json(lua_State *L, const cJSON *j);
/* Converts the value at idx; NULL with a message in err when it cannot be
 * said in JSON (a function, a cycle, mixed keys...). */
cJSON *sl_lua_to_json(lua_State *L, int idx, char *err, size_t errcap);
/* Registers sluice.json into the table at the top. */
void sl_lua_api_json(lua_State *L);

/* ---- codec.c: JSON text <-> Lua directly ---- */

/* Pushes the value of the JSON text s; -1 (nothing pushed) with a message
 * naming the byte in err when s is not JSON. */
int sl_lua_json_decode(lua_State *L, const char *s, size_t len, char *err,
                       size_t errcap);
/* The JSON text of the value at idx (malloc, NUL-terminated, *len set);
 * NULL with a message in err when it cannot be said in JSON. */
char *sl_lua_json_encode(lua_State *L, int idx, size_t *len, char *err,
                         size_t errcap);

/* The length of s as a quoted JSON string, and writes it at o (the length
 * it wrote): what the encoder does for a string, for callers that splice
 * one into text they own. */
size_t sl_lua_json_quoted_len(const char *s, size_t n);
/* How many bytes from the start of s a JSON string holds as they are
 * (before the first quote, backslash or control byte). */
size_t sl_lua_json_plain(const char *s, size_t n);
size_t sl_lua_json_quote(char *o, const char *s, size_t n);

/* ---- jtext.c: one value in JSON text, without decoding the rest ---- */

/* p past any JSON whitespace. */
const char *sl_lua_jtext_ws(const char *p, const char *end);
/* The end of the JSON value at p, or NULL when it is not one. */
const char *sl_lua_jtext_skip(const char *p, const char *end);

/* The value of key (klen bytes, plain ASCII) in the object at p, or NULL;
 * ORs the walk's escaped into *escaped when not NULL. */
const char *sl_lua_jtext_member(const char *p, const char *end, const char *key,
                                size_t klen, int *escaped);
/* The span [*v, *e) of the last user message's "content" value in a
 * chat request's text. -1 when there is none, or when the text says it in
 * a way a byte walk cannot match exactly (escaped keys or role, a message
 * without content): a decoder must answer then. */
int sl_lua_jtext_prompt(const char *s, size_t len, const char **v,
                        const char **e);
/* The span of choices[0].message.content in an answer's text; -1 when
 * there is none. */
int sl_lua_jtext_answer(const char *s, size_t len, const char **v,
                        const char **e);

/* ---- api_*.c: each registers its part of `sluice` into the table at the
 * top of the stack ---- */
void sl_lua_api_llm(lua_State *L);
void sl_lua_api_http(lua_State *L);
void sl_lua_api_kv(lua_State *L);
void sl_lua_api_log(lua_State *L);
void sl_lua_api_prompt(lua_State *L);
void sl_lua_api_respond(lua_State *L);

/* ---- ctx.c ---- */

/* Builds the ctx metatable into vm (at VM creation). */
void sl_lua_ctx_init(lua_State *L, sl_lua_vm_t *vm);
/* Creates lr's ctx table and refs it in lr->ctx. 0 or SL_ENOMEM. */
int sl_lua_ctx_new(sl_lua_req_t *lr);
/* Pushes lr's ctx onto co. */
void sl_lua_ctx_push(sl_lua_req_t *lr, lua_State *co);
/* What the script left in ctx.FIELD ("request", "response"): a table as
 * JSON text, a string as it is (*is_text), malloc'd; NULL when the script
 * never read or set it, or (*failed, a message in err) when it holds
 * something that cannot be sent. With tree, a table is also given as a
 * cJSON tree (the caller deletes it). */
char *sl_lua_ctx_take(sl_lua_req_t *lr, const char *field, size_t *len,
                      int *is_text, char *err, size_t errcap, int *failed,
                      cJSON **tree);
/* Copies ctx.vars into r->vars (JSON text) for the log phase. */
void sl_lua_ctx_save_vars(sl_lua_req_t *lr);
/* ---- ctx_text.c: ctx.prompt and ctx.answer (ctx at index 1) ---- */
int sl_lua_prompt_get(lua_State *L, sl_lua_req_t *lr);
int sl_lua_prompt_set(lua_State *L, sl_lua_req_t *lr, int idx);
int sl_lua_answer_get(lua_State *L, sl_lua_req_t *lr);
int sl_lua_answer_set(lua_State *L, sl_lua_req_t *lr, int idx);

/* The request as the proxy's cJSON tree, decoded now if nobody has yet
 * (a pass-through call reads the body in place); NULL when out of memory.
 * Only what needs a tree asks: ctx.request, a prompt of parts. */
cJSON *sl_lua_request_tree(sl_lua_req_t *lr);

/* Unlinks ctx from lr (a ctx kept past its request raises errors) and
 * drops the ref. */
void sl_lua_ctx_release(sl_lua_req_t *lr);

/* ---- log ---- */

/* One stderr line: "sluice: lua ROUTE: LEVEL: MESSAGE". */
void sl_lua_log(const sl_lua_script_t *s, const char *level, const char *fmt,
                ...) __attribute__((format(printf, 3, 4)));

#endif
