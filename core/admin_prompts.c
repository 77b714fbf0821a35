/* /admin/prompts: stored prompt templates (store db "prompts", namespace
 * "prompt", key NAME or NAME@VERSION, value the template text). Runs on
 * the main thread, which may wait for the store's synced writes. */
#include "admin_prompts.h"
#include "../lua/prompt.h"
#include "error.h"
#include "store.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/admin/prompts"

static void
send_json(sl_request_t *r, int status, cJSON *j) {
    char *out = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char *body = out ? sl_arena_strndup(r->arena, out, strlen(out)) : NULL;
    free(out);
    if (body == NULL) {
        sl_response_error(r, 503, "out of memory", "server_busy");
        return;
    }
    sl_response_send(r, status, "application/json", NULL, body, strlen(body));
}

/* NAME or NAME@VERSION, each part 1..64 of [A-Za-z0-9_.-]. */
static int
key_ok(const char *s, size_t n) {
    size_t part = 0, ats = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '@') {
            if (part == 0 || ++ats > 1)
                return 0;
            part = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-') ||
            ++part > 64)
            return 0;
    }
    return n > 0 && part > 0;
}

static int
add_entry(void *ud, const void *key, size_t klen, const void *val, size_t vlen,
          int64_t expires_at) {
    cJSON *list = ud;
    cJSON *e = cJSON_CreateObject();
    char *k = strndup(key, klen), *v = strndup(val, vlen);
    char *at = k ? strchr(k, '@') : NULL;
    if (e == NULL || k == NULL || v == NULL) {
        cJSON_Delete(e);
        free(k);
        free(v);
        return 1;
    }
    if (at != NULL)
        *at = '\0';
    cJSON_AddStringToObject(e, "name", k);
    if (at != NULL)
        cJSON_AddStringToObject(e, "version", at + 1);
    else
        cJSON_AddNullToObject(e, "version");
    cJSON_AddStringToObject(e, "template", v);
    cJSON_AddItemToArray(list, e);
    free(k);
    free(v);
    return cJSON_GetArraySize(list) >= 10000;
}

static void
list(sl_request_t *r, sl_store_t *st) {
    cJSON *j = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(j, "prompts");
    int rc =
        sl_store_scan(st, SL_STORE_PROMPTS, "prompt", "", 0, add_entry, arr);
    if (rc != 0) {
        cJSON_Delete(j);
        sl_response_error(r, 503, sl_strerror(rc), "store_unavailable");
        return;
    }
    send_json(r, 200, j);
}

static void
put(sl_request_t *r, sl_store_t *st, const char *key, size_t klen) {
    char err[200];
    cJSON *body = cJSON_ParseWithLength(r->body ? r->body : "", r->body_len);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "template");
    if (!cJSON_IsString(t)) {
        cJSON_Delete(body);
        sl_response_error(r, 400, "the body must be {\"template\": \"...\"}",
                          "invalid_request");
        return;
    }
    size_t n = strlen(t->valuestring);
    sl_template_t *tpl =
        sl_template_compile(t->valuestring, n, err, sizeof(err));
    if (tpl == NULL) {
        cJSON_Delete(body);
        sl_response_error(r, 400, err, "invalid_template");
        return;
    }
    sl_template_free(tpl);
    int rc = sl_store_put_sync(st, SL_STORE_PROMPTS, "prompt", key, klen,
                               t->valuestring, n, 0);
    cJSON_Delete(body);
    if (rc != 0) {
        sl_response_error(r, 503, sl_strerror(rc), "store_unavailable");
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", "stored");
    send_json(r, 200, j);
}

int
sl_admin_prompts(sl_request_t *r) {
    const char *p = r->http.path;
    size_t n = r->http.path_len, pl = sizeof(PREFIX) - 1;
    if (n < pl || memcmp(p, PREFIX, pl) != 0 || (n > pl && p[pl] != '/'))
        return 0;
    sl_store_t *st = r->w->srv->store;
    sl_method_t m = r->http.method;
    if (st == NULL) {
        sl_response_error(r, 503, "the store is not open", "store_unavailable");
        return 1;
    }
    if (n <= pl + 1) {
        if (m == SL_METHOD_GET)
            list(r, st);
        else
            sl_response_error_with(r, 405, "method not allowed for this path",
                                   "method_not_allowed", "Allow: GET\r\n");
        return 1;
    }
    const char *key = p + pl + 1;
    size_t klen = n - pl - 1;
    if (!key_ok(key, klen)) {
        sl_response_error(r, 400,
                          "a prompt is NAME or NAME@VERSION, each 1 to 64 "
                          "letters, digits, '_', '.' or '-'",
                          "invalid_request");
        return 1;
    }
    if (m == SL_METHOD_PUT) {
        put(r, st, key, klen);
    } else if (m == SL_METHOD_DELETE) {
        int rc = sl_store_del_sync(st, SL_STORE_PROMPTS, "prompt", key, klen);
        if (rc == SL_ENOTFOUND)
            sl_response_error(r, 404, "no such stored prompt", "not_found");
        else if (rc != 0)
            sl_response_error(r, 503, sl_strerror(rc), "store_unavailable");
        else {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "status", "deleted");
            send_json(r, 200, j);
        }
    } else {
        sl_response_error_with(r, 405, "method not allowed for this path",
                               "method_not_allowed", "Allow: PUT, DELETE\r\n");
    }
    return 1;
}
