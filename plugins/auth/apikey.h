/* API keys in the auth plugin: the hash a key is stored under and the
 * check of its record (the layout is in README.md; `sluice keys` and the
 * admin API write the records). */
#ifndef AUTH_APIKEY_H
#define AUTH_APIKEY_H

#include <openssl/evp.h>
#include <stddef.h>

#define AUTH_KEY_PREFIX "sk-sl-"
#define AUTH_KEY_NS "apikey" /* SHA-256 of the key -> its record */

typedef enum {
    AUTH_KEY_OK = 0,
    AUTH_KEY_REVOKED,
    AUTH_KEY_MODEL_DENIED, /* the key is restricted to other models */
    AUTH_KEY_BAD_RECORD,   /* the store holds something unreadable */
} auth_key_status_t;

typedef struct {
    char id[72];
    char name[260];
    long long rpm; /* -1: unset */
    long long tpm;
    int restricted; /* the key names the models it may use */
    /* Their names, each NUL-terminated, one after the other (nmodels);
     * models_fit is 0 when they do not all fit (auth_key_allows then
     * cannot answer: read the record again). */
    size_t nmodels;
    int models_fit;
    char models[256];
} auth_key_info_t;

/* The SHA-256 of key[0..len): the lookup key in AUTH_KEY_NS. sha256 is a
 * fetched EVP_MD (OpenSSL 3 looks EVP_sha256() up on every call), or NULL
 * for EVP_sha256(). */
void auth_key_hash(const EVP_MD *sha256, const char *key, size_t len,
                   unsigned char out[32]);

/* Checks record rec[0..len) for a request of `model` (NULL: no model
 * named); fills info on AUTH_KEY_OK and AUTH_KEY_MODEL_DENIED. */
auth_key_status_t auth_key_check(const char *rec, size_t len, const char *model,
                                 auth_key_info_t *info);

/* Whether a key with info (from auth_key_check, models_fit set) may ask
 * for `model` (NULL: no model named). */
int auth_key_allows(const auth_key_info_t *info, const char *model);

#endif
