/* Gateway-made model calls: a synthetic request whose front captures the
 * answer, handed back from the event loop. */
#include "subcall.h"
#include "clock.h"
#include "error.h"
#include "proxy.h"
#include "snapshot.h"
#include "worker.h"

#include <stdlib.h>
#include <string.h>

struct sl_subcall {
    sl_arena_t *arena; /* everything of the call, the call included */
    sl_request_t *r;
    sl_worker_t *w;
    sl_subcall_t **slot; /* the owner's handle, in the parent's arena */
    struct event *ev;    /* delivers the answer from the loop */
    sl_subcall_done_fn done;
    void *ud;
    int answered;
    int status;
    char *body;
    size_t len;
};

static void
release_snapshot(void *arg) {
    sl_request_t *r = arg;
    sl_snapshot_release(r->snap, r->w->id);
}

static void
destroy(sl_subcall_t *s) {
    if (s->slot != NULL)
        *s->slot = NULL;
    if (s->ev != NULL)
        event_free(s->ev);
    sl_arena_destroy(s->arena); /* s is in it */
}

static void
log_call(sl_subcall_t *s) {
    sl_request_log(s->r);
}

/* The front: every whole answer, error or not, ends up here. */
static void
capture_respond(sl_request_t *r, int status, const char *content_type,
                const char *extra, const char *body, size_t len) {
    sl_subcall_t *s = r->front_state;
    (void)content_type;
    (void)extra;
    if (s->answered)
        return;
    s->answered = 1;
    s->status = r->status = status;
    r->responded = 1;
    r->bytes_out = len;
    r->t_first_byte = sl_now_us();
    s->body = sl_arena_alloc(s->arena, len + 1);
    if (s->body != NULL) {
        memcpy(s->body, body, len);
        s->body[len] = '\0';
        s->len = len;
    } else {
        s->status = r->status = 503;
    }
    /* Never from inside the provider's own call stack: the caller may
     * still be in the middle of starting this call. */
    event_active(s->ev, EV_TIMEOUT, 1);
}

/* Streams are never asked for; an event here would be a bug upstream. */
static int
capture_stream_event(sl_request_t *r, const char *event, size_t event_len,
                     const char *data, size_t len) {
    return 0;
}

static const sl_front_t capture_front = {capture_respond, capture_stream_event};

static void
on_deliver(evutil_socket_t fd, short what, void *arg) {
    sl_subcall_t *s = arg;
    sl_request_t *r = s->r;
    log_call(s);
    sl_subcall_result_t res = {
        .status = s->status,
        .body = s->body ? s->body : "",
        .len = s->len,
        .json = s->body ? cJSON_ParseWithLength(s->body, s->len) : NULL,
        .provider = r->provider,
        .model = r->target_model,
        .prompt_tokens = r->prompt_tokens,
        .completion_tokens = r->completion_tokens,
        .total_tokens = r->total_tokens,
    };
    /* done may end the parent, and its arena with the slot: let go first. */
    if (s->slot != NULL)
        *s->slot = NULL;
    s->slot = NULL;
    sl_subcall_done_fn done = s->done;
    void *ud = s->ud;
    /* The answer's strings stay valid during done; the call goes after. */
    done(ud, &res);
    destroy(s);
}

static void
on_parent_end(void *arg) {
    sl_subcall_t **slot = arg;
    if (*slot != NULL)
        sl_subcall_cancel(*slot);
}

void
sl_subcall_cancel(sl_subcall_t *s) {
    sl_request_t *r = s->r;
    if (!s->answered) {
        if (r->cancel != NULL) {
            r->cancel(r);
            r->cancel = NULL;
        }
        r->status = 499;
        r->client_gone = 1;
        r->error_code = "client_closed";
    }
    log_call(s);
    destroy(s);
}

int
sl_subcall_start(sl_request_t *parent, const cJSON *body,
                 sl_subcall_done_fn done, void *ud, sl_subcall_t **slot) {
    sl_arena_t *a = sl_arena_create(8192);
    *slot = NULL;
    if (a == NULL)
        return SL_ENOMEM;
    sl_subcall_t *s = sl_arena_calloc(a, sizeof(*s));
    sl_request_t *r = sl_arena_calloc(a, sizeof(*r));
    sl_route_t *route = sl_arena_calloc(a, sizeof(*route));
    if (s == NULL || r == NULL || route == NULL) {
        sl_arena_destroy(a);
        return SL_ENOMEM;
    }
    s->arena = a;
    s->r = r;
    s->w = parent->w;
    s->done = done;
    s->ud = ud;
    r->w = parent->w;
    r->snap = parent->snap;
    r->cfg = parent->cfg;
    r->arena = a;
    if (sl_arena_cleanup_add(a, release_snapshot, r) != 0) {
        sl_arena_destroy(a);
        return SL_ENOMEM;
    }
    sl_snapshot_hold(r->snap, r->w->id);
    route->kind = SL_ROUTE_CHAT;
    route->path =
        sl_arena_printf(a, "lua:%s", parent->route ? parent->route->path : "");
    r->route = route;
    r->http.method = SL_METHOD_POST;
    r->http.method_str = "POST";
    r->http.method_len = 4;
    r->http.path = r->http.target = parent->http.path;
    r->http.path_len = r->http.target_len = parent->http.path_len;
    r->http.version_minor = 1;
    r->http.content_length = -1;
    r->t_start = sl_now_us();
    r->prompt_tokens = r->completion_tokens = r->total_tokens = -1;
    r->consumer = parent->consumer;
    r->front = &capture_front;
    r->front_state = s;
    cJSON *copy = cJSON_Duplicate(body, 1);
    if (copy != NULL) {
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "stream");
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "stream_options");
    }
    char *printed = copy ? cJSON_PrintUnformatted(copy) : NULL;
    cJSON_Delete(copy);
    if (printed != NULL) {
        r->body_len = strlen(printed);
        r->body = sl_arena_strndup(a, printed, r->body_len);
        r->bytes_in = r->body_len;
        cJSON_free(printed);
    }
    s->ev = event_new(r->w->base, -1, 0, on_deliver, s);
    if (r->body == NULL || route->path == NULL || s->ev == NULL ||
        sl_arena_cleanup_add(parent->arena, on_parent_end, slot) != 0) {
        if (s->ev != NULL)
            event_free(s->ev);
        sl_arena_destroy(a);
        return SL_ENOMEM;
    }
    *slot = s;
    s->slot = slot;
    sl_proxy_subcall(r);
    return 0;
}
