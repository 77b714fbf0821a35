/* API-key records (see apikey.h). */
#include "apikey.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

void
auth_key_hash(const EVP_MD *sha256, const char *key, size_t len,
              unsigned char out[32]) {
    unsigned int n = 32;
    if (EVP_Digest(key, len, out, &n, sha256 ? sha256 : EVP_sha256(), NULL) !=
        1)
        memset(out, 0, 32); /* no key hashes to zeros: not found */
}

int
auth_key_allows(const auth_key_info_t *info, const char *model) {
    if (!info->restricted)
        return 1;
    const char *m = info->models;
    for (size_t i = 0; model != NULL && i < info->nmodels; i++) {
        size_t n = strlen(m);
        if (strcmp(m, model) == 0)
            return 1;
        m += n + 1;
    }
    return 0;
}

/* The names of models, packed into info->models. */
static void
pack_models(const cJSON *models, auth_key_info_t *info) {
    size_t off = 0;
    const cJSON *m;
    info->nmodels = 0;
    info->models_fit = 1;
    cJSON_ArrayForEach(m, models) {
        if (!cJSON_IsString(m))
            continue; /* matches no model */
        size_t n = strlen(m->valuestring) + 1;
        if (off + n > sizeof(info->models)) {
            info->models_fit = 0;
            return;
        }
        memcpy(info->models + off, m->valuestring, n);
        off += n;
        info->nmodels++;
    }
}

static long long
limit(const cJSON *rec, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, name);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 ? (long long)v->valuedouble
                                                    : -1;
}

auth_key_status_t
auth_key_check(const char *rec, size_t len, const char *model,
               auth_key_info_t *info) {
    cJSON *j = cJSON_ParseWithLength(rec, len);
    const char *id =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "id"));
    const char *name =
        cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "name"));
    const cJSON *revoked = cJSON_GetObjectItemCaseSensitive(j, "revoked");
    const cJSON *models = cJSON_GetObjectItemCaseSensitive(j, "models");
    auth_key_status_t st = AUTH_KEY_OK;
    if (id == NULL || name == NULL || !cJSON_IsBool(revoked) ||
        (models != NULL && !cJSON_IsNull(models) && !cJSON_IsArray(models)))
        st = AUTH_KEY_BAD_RECORD;
    else if (cJSON_IsTrue(revoked))
        st = AUTH_KEY_REVOKED;
    else {
        snprintf(info->id, sizeof(info->id), "%s", id);
        snprintf(info->name, sizeof(info->name), "%s", name);
        info->rpm = limit(j, "rpm");
        info->tpm = limit(j, "tpm");
        info->restricted = cJSON_IsArray(models);
        info->nmodels = 0;
        info->models_fit = 1;
        if (info->restricted)
            pack_models(models, info);
        if (cJSON_IsArray(models)) {
            /* A restricted key must name the model it asks for. */
            int found = 0;
            const cJSON *m;
            cJSON_ArrayForEach(m, models) {
                if (model != NULL && cJSON_IsString(m) &&
                    strcmp(m->valuestring, model) == 0)
                    found = 1;
            }
            if (!found)
                st = AUTH_KEY_MODEL_DENIED;
        }
    }
    cJSON_Delete(j);
    return st;
}
