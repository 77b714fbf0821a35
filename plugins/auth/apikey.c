/* API-key records (see apikey.h). */
#include "apikey.h"

#include <cjson/cJSON.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

void
auth_key_hash(const char *key, size_t len, unsigned char out[32]) {
    SHA256((const unsigned char *)key, len, out);
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
