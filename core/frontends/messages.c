/* POST /v1/messages: the glue that puts the Anthropic front on a request
 * and sends it down the normal proxy path (translations: messages_request.c
 * and messages_response.c). */
#include "messages.h"
#include "../error.h"
#include "../proxy.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model; /* the client's model string */
    sl_messages_stream_t *stream;
} front_t;

static void
free_stream(void *p) {
    sl_messages_stream_free(p);
}

/* A whole answer: a chat completion or an error. conn.c has cleared
 * r->front, so what this sends goes out as it is. */
static void
front_respond(sl_request_t *r, int status, const char *content_type,
              const char *extra, const char *body, size_t len) {
    front_t *f = r->front_state;
    cJSON *out = NULL;
    (void)content_type;
    if (status >= 200 && status <= 299) {
        cJSON *chat = cJSON_ParseWithLength(body, len);
        int rc = chat ? sl_messages_response(chat, f->model, &out) : SL_EINVAL;
        cJSON_Delete(chat);
        if (rc == SL_EINVAL) {
            static const char bad[] = "{\"error\":{\"message\":\"the "
                                      "provider's answer is not a chat "
                                      "completion\"}}";
            status = 502;
            r->error_code = "upstream_bad_response";
            out = sl_messages_error_body(status, bad, sizeof(bad) - 1);
        }
    } else {
        out = sl_messages_error_body(status, body, len);
    }
    char *s = out ? cJSON_PrintUnformatted(out) : NULL;
    cJSON_Delete(out);
    if (s == NULL) {
        static const char oom[] = "{\"type\":\"error\",\"error\":{\"type\":"
                                  "\"overloaded_error\",\"message\":\"out "
                                  "of memory\"}}";
        sl_response_send(r, 503, "application/json", NULL, oom,
                         sizeof(oom) - 1);
        return;
    }
    sl_response_send(r, status, "application/json", extra, s, strlen(s));
    cJSON_free(s);
}

static int
emit_event(void *ud, const char *event, const char *json, size_t len) {
    return sl_response_stream_event(ud, event, strlen(event), json, len);
}

/* One OpenAI stream payload; the Anthropic events it makes are written
 * with r->front cleared so they go out as they are. */
static int
front_stream_event(sl_request_t *r, const char *event, size_t event_len,
                   const char *data, size_t len) {
    front_t *f = r->front_state;
    const sl_front_t *front = r->front;
    (void)event;
    (void)event_len;
    if (f->stream == NULL) {
        f->stream = sl_messages_stream_new(f->model, emit_event, r);
        if (f->stream == NULL ||
            sl_arena_cleanup_add(r->arena, free_stream, f->stream) != 0) {
            sl_messages_stream_free(f->stream);
            f->stream = NULL;
            return 0;
        }
    }
    r->front = NULL;
    int rc = sl_messages_stream_feed(f->stream, data, len);
    r->front = front;
    return rc;
}

static const sl_front_t messages_front = {front_respond, front_stream_event};

static void
free_json(void *p) {
    cJSON_Delete(p);
}

void
sl_messages_handle(sl_request_t *r) {
    front_t *f = sl_arena_calloc(r->arena, sizeof(*f));
    if (f == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    /* From here on every answer, errors included, is Anthropic-shaped. */
    r->front = &messages_front;
    r->front_state = f;
    if (r->http.method != SL_METHOD_POST) {
        sl_response_error_with(r, 405, "method not allowed for this path",
                               "method_not_allowed", "Allow: POST\r\n");
        return;
    }
    if (r->body_len == 0) {
        sl_response_error(r, 400, "the request body is empty; send JSON",
                          "invalid_json");
        return;
    }
    cJSON *msg = cJSON_ParseWithLength(r->body, r->body_len);
    if (msg == NULL) {
        sl_response_error(r, 400, "the request body is not valid JSON",
                          "invalid_json");
        return;
    }
    if (sl_arena_cleanup_add(r->arena, free_json, msg) != 0) {
        cJSON_Delete(msg);
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(msg, "model");
    if (cJSON_IsString(model)) /* for the access log, even when refused */
        r->model = f->model = sl_arena_strndup(r->arena, model->valuestring,
                                               strlen(model->valuestring));
    char err[512];
    cJSON *chat = NULL;
    int rc = sl_messages_request(msg, &chat, err, sizeof(err));
    if (rc == SL_EINVAL) {
        sl_response_error(r, 400, err, "invalid_request");
        return;
    }
    char *printed = rc == 0 ? cJSON_PrintUnformatted(chat) : NULL;
    cJSON_Delete(chat);
    r->body_len = printed ? strlen(printed) : 0;
    r->body = printed ? sl_arena_strndup(r->arena, printed, r->body_len) : NULL;
    cJSON_free(printed);
    if (r->body == NULL || f->model == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_proxy_chat(r);
}
