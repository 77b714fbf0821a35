/* The admin API's /admin/keys: create (the key is in that answer only),
 * list, show and revoke API keys. Runs on the main thread, which may wait
 * for the store's synced writes. */
#include "admin_keys.h"
#include "apikeys.h"
#include "budget.h"
#include "error.h"
#include "store.h"
#include "worker.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 64

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

static void
store_error(sl_request_t *r, int rc) {
    if (rc == SL_ENOTFOUND)
        sl_response_error(r, 404, "no API key with this id", "key_not_found");
    else
        sl_response_error(r, 503, sl_strerror(rc), "store_unavailable");
}

static void
create(sl_request_t *r, sl_store_t *st) {
    cJSON *body = cJSON_ParseWithLength(r->body ? r->body : "", r->body_len);
    const char *models[MAX_MODELS];
    sl_apikey_spec_t spec;
    char err[256] = "", secret[SL_APIKEY_LEN + 1];
    int rc = sl_apikey_spec_from_json(body, &spec, models, MAX_MODELS, err,
                                      sizeof(err));
    cJSON *rec = NULL;
    if (rc == 0)
        rc = sl_apikey_create(st, &spec, secret, sizeof(secret), &rec, err,
                              sizeof(err));
    cJSON_Delete(body);
    if (rc == SL_EINVAL) {
        sl_response_error(r, 400, err, "invalid_request");
        return;
    }
    if (rc != 0) {
        store_error(r, rc);
        return;
    }
    cJSON_AddStringToObject(rec, "key", secret);
    OPENSSL_cleanse(secret, sizeof(secret));
    send_json(r, 201, rec);
}

static void
list(sl_request_t *r, sl_store_t *st) {
    cJSON *recs = NULL;
    int rc = sl_apikey_list(st, &recs);
    if (rc != 0) {
        store_error(r, rc);
        return;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, recs)
        sl_budget_describe_key(r->cfg, st, it);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddItemToObject(j, "keys", recs);
    send_json(r, 200, j);
}

int
sl_admin_keys(sl_request_t *r) {
    const char *p = r->http.path;
    size_t n = r->http.path_len;
    static const char base[] = "/admin/keys";
    const size_t bl = sizeof(base) - 1;
    if (n < bl || memcmp(p, base, bl) != 0 || (n > bl && p[bl] != '/'))
        return 0;
    sl_store_t *st = r->w->srv->store;
    int m = r->http.method;
    if (n <= bl + 1) { /* /admin/keys or /admin/keys/ */
        if (st == NULL)
            sl_response_error(r, 503, "the store is not open",
                              "store_unavailable");
        else if (m == SL_METHOD_POST)
            create(r, st);
        else if (m == SL_METHOD_GET)
            list(r, st);
        else
            sl_response_error(r, 405, "method not allowed for this path",
                              "method_not_allowed");
        return 1;
    }
    char id[65];
    size_t il = n - bl - 1;
    if (il >= sizeof(id) || memchr(p + bl + 1, '/', il) != NULL) {
        sl_response_error(r, 404, "no API key with this id", "key_not_found");
        return 1;
    }
    memcpy(id, p + bl + 1, il);
    id[il] = '\0';
    if (m != SL_METHOD_GET && m != SL_METHOD_DELETE) {
        sl_response_error(r, 405, "method not allowed for this path",
                          "method_not_allowed");
        return 1;
    }
    if (st == NULL) {
        sl_response_error(r, 503, "the store is not open", "store_unavailable");
        return 1;
    }
    cJSON *rec = NULL;
    int rc = m == SL_METHOD_GET ? sl_apikey_get(st, id, &rec)
                                : sl_apikey_revoke(st, id, &rec);
    if (rc != 0) {
        store_error(r, rc);
        return 1;
    }
    sl_budget_describe_key(r->cfg, st, rec);
    send_json(r, 200, rec);
    return 1;
}
