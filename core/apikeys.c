/* API keys in the KEYS database (see apikeys.h for the layout). */
#include "apikeys.h"
#include "error.h"
#include "store.h"

#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ID_LEN 20 /* "key_" and 16 hex digits */

void
sl_apikey_hash(const char *key, size_t len, unsigned char out[32]) {
    SHA256((const unsigned char *)key, len, out);
}

static void
b64url(const unsigned char *in, size_t n, char *out) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"
                              "wxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tab[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = '\0';
}

static int
name_ok(const char *s, size_t max) {
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

static int
check_spec(const sl_apikey_spec_t *spec, char *err, size_t errlen) {
    if (spec->name == NULL || !name_ok(spec->name, 128)) {
        snprintf(err, errlen, "name must be 1 to 128 printable characters");
        return SL_EINVAL;
    }
    for (size_t i = 0; i < spec->nmodels; i++)
        if (spec->models[i] == NULL || !name_ok(spec->models[i], 256)) {
            snprintf(err, errlen, "models must be non-empty model names");
            return SL_EINVAL;
        }
    if (spec->models != NULL && spec->nmodels == 0) {
        snprintf(err, errlen, "models must name at least one model");
        return SL_EINVAL;
    }
    return 0;
}

static int
put_record(sl_store_t *st, const unsigned char hash[32], const cJSON *rec) {
    char *text = cJSON_PrintUnformatted(rec);
    if (text == NULL)
        return SL_ENOMEM;
    int rc = sl_store_put_sync(st, SL_STORE_KEYS, SL_APIKEY_NS, hash, 32, text,
                               strlen(text), 0);
    free(text);
    return rc;
}

int
sl_apikey_create(sl_store_t *st, const sl_apikey_spec_t *spec, char *secret,
                 size_t cap, cJSON **record, char *err, size_t errlen) {
    unsigned char rnd[32], idb[8], hash[32];
    char id[ID_LEN + 1];
    int rc = check_spec(spec, err, errlen);
    if (rc != 0)
        return rc;
    if (cap < SL_APIKEY_LEN + 1)
        return SL_EINVAL;
    if (RAND_bytes(rnd, sizeof(rnd)) != 1 ||
        RAND_bytes(idb, sizeof(idb)) != 1) {
        snprintf(err, errlen, "no randomness from OpenSSL");
        return SL_EIO;
    }
    memcpy(secret, SL_APIKEY_PREFIX, sizeof(SL_APIKEY_PREFIX) - 1);
    b64url(rnd, sizeof(rnd), secret + sizeof(SL_APIKEY_PREFIX) - 1);
    memcpy(id, "key_", 4);
    for (size_t i = 0; i < sizeof(idb); i++)
        snprintf(id + 4 + 2 * i, 3, "%02x", idb[i]);
    sl_apikey_hash(secret, strlen(secret), hash);

    cJSON *rec = cJSON_CreateObject();
    if (rec == NULL)
        return SL_ENOMEM;
    cJSON_AddStringToObject(rec, "id", id);
    cJSON_AddStringToObject(rec, "name", spec->name);
    if (spec->models != NULL) {
        cJSON *m = cJSON_AddArrayToObject(rec, "models");
        for (size_t i = 0; i < spec->nmodels; i++)
            cJSON_AddItemToArray(m, cJSON_CreateString(spec->models[i]));
    } else
        cJSON_AddNullToObject(rec, "models");
    if (spec->rpm >= 0)
        cJSON_AddNumberToObject(rec, "rpm", (double)spec->rpm);
    else
        cJSON_AddNullToObject(rec, "rpm");
    if (spec->tpm >= 0)
        cJSON_AddNumberToObject(rec, "tpm", (double)spec->tpm);
    else
        cJSON_AddNullToObject(rec, "tpm");
    cJSON_AddNumberToObject(rec, "created", (double)time(NULL));
    cJSON_AddBoolToObject(rec, "revoked", 0);
    cJSON_AddNullToObject(rec, "revoked_at");
    /* The record first: an id that points nowhere would list a ghost. */
    rc = put_record(st, hash, rec);
    if (rc == 0)
        rc = sl_store_put_sync(st, SL_STORE_KEYS, SL_APIKEY_ID_NS, id,
                               strlen(id), hash, sizeof(hash), 0);
    if (rc != 0) {
        snprintf(err, errlen, "cannot store the key: %s", sl_strerror(rc));
        cJSON_Delete(rec);
        return rc;
    }
    *record = rec;
    return 0;
}

static int
get_by_hash(sl_store_t *st, const unsigned char hash[32], cJSON **record) {
    size_t len = 0;
    int rc = sl_store_get(st, SL_STORE_KEYS, SL_APIKEY_NS, hash, 32, NULL, 0,
                          &len, NULL);
    if (rc != 0 && rc != SL_ETOOBIG)
        return rc;
    char *buf = malloc(len + 1);
    if (buf == NULL)
        return SL_ENOMEM;
    rc = sl_store_get(st, SL_STORE_KEYS, SL_APIKEY_NS, hash, 32, buf, len, &len,
                      NULL);
    if (rc == 0) {
        *record = cJSON_ParseWithLength(buf, len);
        if (*record == NULL)
            rc = SL_EIO;
    }
    free(buf);
    return rc;
}

static int
hash_of(sl_store_t *st, const char *id, unsigned char hash[32]) {
    size_t len = 0;
    if (id == NULL || id[0] == '\0' || strlen(id) > 64)
        return SL_ENOTFOUND;
    int rc = sl_store_get(st, SL_STORE_KEYS, SL_APIKEY_ID_NS, id, strlen(id),
                          hash, 32, &len, NULL);
    if (rc == 0 && len != 32)
        rc = SL_EIO;
    return rc;
}

int
sl_apikey_get(sl_store_t *st, const char *id, cJSON **record) {
    unsigned char hash[32];
    int rc = hash_of(st, id, hash);
    return rc != 0 ? rc : get_by_hash(st, hash, record);
}

int
sl_apikey_revoke(sl_store_t *st, const char *id, cJSON **record) {
    unsigned char hash[32];
    cJSON *rec = NULL;
    int rc = hash_of(st, id, hash);
    if (rc == 0)
        rc = get_by_hash(st, hash, &rec);
    if (rc != 0)
        return rc;
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(rec, "revoked"))) {
        cJSON_ReplaceItemInObjectCaseSensitive(rec, "revoked",
                                               cJSON_CreateTrue());
        cJSON_ReplaceItemInObjectCaseSensitive(
            rec, "revoked_at", cJSON_CreateNumber((double)time(NULL)));
        rc = put_record(st, hash, rec);
    }
    if (rc != 0) {
        cJSON_Delete(rec);
        return rc;
    }
    *record = rec;
    return 0;
}

typedef struct {
    sl_store_t *st;
    cJSON *out;
    int rc;
} list_ctx_t;

static int
list_one(void *ud, const void *key, size_t klen, const void *val, size_t vlen,
         int64_t expires_at) {
    (void)key;
    (void)klen;
    (void)expires_at;
    list_ctx_t *c = ud;
    cJSON *rec = cJSON_ParseWithLength(val, vlen);
    if (rec == NULL) {
        c->rc = SL_EIO;
        return 1;
    }
    cJSON_AddItemToArray(c->out, rec);
    return 0;
}

static int
by_created(const void *a, const void *b) {
    const cJSON *x = *(const cJSON *const *)a, *y = *(const cJSON *const *)b;
    double cx =
        cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(x, "created"));
    double cy =
        cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(y, "created"));
    if (cx != cy)
        return cx < cy ? -1 : 1;
    const char *ix =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(x, "id"));
    const char *iy =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(y, "id"));
    return strcmp(ix ? ix : "", iy ? iy : "");
}

int
sl_apikey_list(sl_store_t *st, cJSON **records) {
    list_ctx_t c = {st, cJSON_CreateArray(), 0};
    if (c.out == NULL)
        return SL_ENOMEM;
    int rc =
        sl_store_scan(st, SL_STORE_KEYS, SL_APIKEY_NS, NULL, 0, list_one, &c);
    if (rc == 0)
        rc = c.rc;
    if (rc != 0) {
        cJSON_Delete(c.out);
        return rc;
    }
    /* Scanned in hash order, which means nothing to a reader. */
    int n = cJSON_GetArraySize(c.out);
    cJSON **items = n > 0 ? calloc((size_t)n, sizeof(*items)) : NULL;
    if (n > 0 && items == NULL) {
        cJSON_Delete(c.out);
        return SL_ENOMEM;
    }
    for (int i = 0; i < n; i++)
        items[i] = cJSON_DetachItemFromArray(c.out, 0);
    qsort(items, (size_t)n, sizeof(*items), by_created);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(c.out, items[i]);
    free(items);
    *records = c.out;
    return 0;
}

int
sl_apikey_spec_from_json(const cJSON *j, sl_apikey_spec_t *spec,
                         const char **models_buf, size_t models_cap, char *err,
                         size_t errlen) {
    memset(spec, 0, sizeof(*spec));
    spec->rpm = spec->tpm = -1;
    if (!cJSON_IsObject(j)) {
        snprintf(err, errlen, "the body must be a JSON object");
        return SL_EINVAL;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        if (strcmp(it->string, "name") != 0 &&
            strcmp(it->string, "models") != 0 &&
            strcmp(it->string, "rpm") != 0 && strcmp(it->string, "tpm") != 0) {
            snprintf(err, errlen, "unknown field '%.64s'", it->string);
            return SL_EINVAL;
        }
    }
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    if (!cJSON_IsString(name)) {
        snprintf(err, errlen, "name is required and must be a string");
        return SL_EINVAL;
    }
    spec->name = name->valuestring;
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    if (models != NULL && !cJSON_IsNull(models)) {
        if (!cJSON_IsArray(models) ||
            (size_t)cJSON_GetArraySize(models) > models_cap) {
            snprintf(err, errlen,
                     "models must be an array of at most %zu "
                     "model names",
                     models_cap);
            return SL_EINVAL;
        }
        cJSON_ArrayForEach(it, models) {
            if (!cJSON_IsString(it)) {
                snprintf(err, errlen, "models must be an array of strings");
                return SL_EINVAL;
            }
            models_buf[spec->nmodels++] = it->valuestring;
        }
        spec->models = models_buf;
    }
    static const char *const lims[] = {"rpm", "tpm"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, lims[i]);
        if (v == NULL || cJSON_IsNull(v))
            continue;
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e15 ||
            v->valuedouble != (double)(long long)v->valuedouble) {
            snprintf(err, errlen, "%s must be a whole number >= 0", lims[i]);
            return SL_EINVAL;
        }
        *(i == 0 ? &spec->rpm : &spec->tpm) = (long long)v->valuedouble;
    }
    return check_spec(spec, err, errlen);
}
