/* API keys in the store's KEYS database: create, list, look up, revoke.
 * Used by `sluice keys` (its own process) and the admin API (the main
 * thread); the auth plugin reads the same records through the host's
 * keys_get. A key is shown once, when created, and stored only as its
 * SHA-256.
 *
 * Layout (plugins/auth/README.md documents it for plugin authors):
 *   ns "apikey",    key = SHA-256 of the key (32 bytes) -> record (JSON)
 *   ns "apikey-id", key = the record's id               -> the 32 bytes
 * A record: {"id","name","models":[..]|null,"rpm":N|null,"tpm":N|null,
 * "created":unix seconds,"revoked":bool,"revoked_at":unix seconds|null}.
 * Every write is a _sync call: it blocks until synced, so never call these
 * from a worker's loop. */
#ifndef SL_APIKEYS_H
#define SL_APIKEYS_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct sl_store;

#define SL_APIKEY_NS "apikey"
#define SL_APIKEY_ID_NS "apikey-id"
#define SL_APIKEY_PREFIX "sk-sl-"
/* "sk-sl-" and 43 base64url characters (32 random bytes). */
#define SL_APIKEY_LEN 49

/* What a new key may do. models NULL: every model; rpm, tpm < 0: unset. */
typedef struct {
    const char *name;
    const char *const *models;
    size_t nmodels;
    long long rpm;
    long long tpm;
} sl_apikey_spec_t;

/* The SHA-256 of key[0..len). */
void sl_apikey_hash(const char *key, size_t len, unsigned char out[32]);

/* Makes a key: writes it (NUL-terminated) into secret (cap >=
 * SL_APIKEY_LEN + 1) and its record (a new cJSON the caller deletes) into
 * *record. 0 or SL_EINVAL (a bad spec; err says what) or another SL_E*. */
int sl_apikey_create(struct sl_store *st, const sl_apikey_spec_t *spec,
                     char *secret, size_t cap, cJSON **record, char *err,
                     size_t errlen);
/* Every record, oldest first, as a new cJSON array. */
int sl_apikey_list(struct sl_store *st, cJSON **records);
/* The record of key `id`; SL_ENOTFOUND when there is none. */
int sl_apikey_get(struct sl_store *st, const char *id, cJSON **record);
/* Marks key `id` revoked (again is fine) and returns its record. */
int sl_apikey_revoke(struct sl_store *st, const char *id, cJSON **record);

/* Checks a spec given as JSON ({"name","models","rpm","tpm"}, the admin
 * API's body); fills spec with pointers into j. 0 or SL_EINVAL with err. */
int sl_apikey_spec_from_json(const cJSON *j, sl_apikey_spec_t *spec,
                             const char **models_buf, size_t models_cap,
                             char *err, size_t errlen);

#endif
